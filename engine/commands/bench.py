"""``endoview bench``: pipeline figures on a 1080p H.264 clip (generated if none is given)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..tools.bench import format_report, run_bench
from .common import add_model_options, config_from_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="measure per-stage latency, annotate/naive/live FPS and added latency",
        description="Benchmark the pipeline on INPUT (default: a generated 1920x1080 60 fps H.264 "
                    "demo clip). Prints min/mean/p99/max per stage, the model's FPS, the "
                    "pipelined annotate rate next to a naive sequential loop, and live mode's "
                    "rate and added latency (frame arrival to overlay ready).")
    p.add_argument("input", nargs="?", type=Path, help="video file (default: generated clip)")
    p.add_argument("--frames", type=int, default=300, help="length of the generated clip")
    p.add_argument("--live-seconds", type=float, default=5.0,
                   help="length of each live-mode measurement (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    config = config_from_args(args)
    report = run_bench(config, args.input, frames=args.frames, live_seconds=args.live_seconds,
                       progress=lambda m: print(f"bench: {m}", file=sys.stderr))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
