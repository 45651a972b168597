"""``endoview soak SOURCE --frames N``: the live pipeline on a looping clip, watching memory,
threads and open files (a benchmark command, not a test)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..runtime import make_overlay, open_analyzer
from ..sources import open_source
from ..tools.soak import run_soak
from .common import add_model_options, add_source_options, config_from_args, source_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "soak",
        help="run the live pipeline for many frames on a looping clip and report memory, threads, files",
        description="Run SOURCE (looped) through the live pipeline (capture thread, newest-frame "
                    "analysis, overlay, and the second pass when --second-pass or the config gives "
                    "one) for N frames. Every --every frames it prints resident memory, OS threads, "
                    "open files and the frame rates; at the end, how much each grew after the warm-up.",
        epilog="examples:\n  endoview soak demo:320x256 --frames 20000\n"
               "  endoview soak clip.mp4 --frames 100000 --every 5000 --second-pass bundles/resnet152",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="video file, image folder or 'demo' (looped), or a capture device")
    p.add_argument("--frames", type=int, required=True, metavar="N", help="frames to deliver")
    p.add_argument("--every", type=int, default=5000, metavar="K", help="sample every K frames (default 5000)")
    p.add_argument("--warmup", type=int, metavar="W",
                   help="growth is measured from the first sample at or after frame W "
                        "(default: a tenth of the run, at least --every)")
    p.add_argument("--second-pass-every", type=int, default=30, metavar="N",
                   help="with a second pass: ask it to look every N frames (default 30)")
    p.add_argument("--pace", type=float, metavar="FPS",
                   help="deliver frames at this rate, like a capture card (default: as fast as they decode)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document at the end")
    add_model_options(p)
    add_source_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    config = config_from_args(args)
    if config.second_pass is not None:
        config = dataclasses.replace(config, second_pass_every=args.second_pass_every)
    out = sys.stderr if args.json else sys.stdout

    def show(sample) -> None:
        print(sample.line(), file=out, flush=True)

    with open_source(args.source, loop=True, **source_options(args)) as source, \
            open_analyzer(config, still=False, model=not args.no_model) as analyzer:
        report = run_soak(source, analyzer, frames=args.frames, every=args.every, warmup=args.warmup,
                          overlay=make_overlay(config), pace=args.pace, on_sample=show)
    print(report.summary(), file=out, flush=True)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    return 0
