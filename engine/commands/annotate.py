"""``endoview annotate``: a video through the model into an annotated H.264 MP4 and a log."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..tools.batch import batch_folder
from ..config import load_config
from ..outputs.export import annotate
from ..runtime import make_overlay, open_analyzer
from ..sources import open_source
from . import annotate_batch
from .common import add_model_options, add_source_options, config_from_args, source_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "annotate",
        help="annotate a video (or 'demo', or many videos) into an MP4 with the overlay and a per-frame log",
        description="Run every frame of INPUT through the content-area crop and the model, "
                    "and write an H.264 MP4 with exactly the input's frames and rate, plus a "
                    "per-frame log (JSONL and CSV).\n\n" + annotate_batch.HELP,
        epilog="examples:\n  endoview annotate demo -o demo.mp4\n"
               "  endoview annotate case.mp4 -o case_annotated.mp4 --start 10 --end 25 --deidentify\n"
               "  endoview annotate videos/ -o annotated/ --jobs 2 --parquet annotated/all.parquet\n"
               "  endoview annotate a.mp4 b.mkv -o annotated/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", nargs="+",
                   help="video file, image folder, capture device (0, /dev/video0) or 'demo'; "
                        "several of them, or a folder of videos, with -o FOLDER")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output .mp4; with several videos the output folder (created)")
    p.add_argument("--log", type=Path, action="append",
                   help="per-frame log, .jsonl or .csv (repeatable; default: OUTPUT.jsonl and OUTPUT.csv)")
    p.add_argument("--no-log", action="store_true", help="write no per-frame log")
    p.add_argument("--start", type=float, metavar="S", help="first second to export")
    p.add_argument("--end", type=float, metavar="S", help="second to stop at (exclusive)")
    p.add_argument("--deidentify", action="store_true",
                   help="black out everything outside the endoscopic field (burned-in patient text)")
    p.add_argument("--no-overlay", action="store_true", help="write the frames without the overlay")
    p.add_argument("--lossless", action="store_true",
                   help="lossless H.264 (with --no-overlay: exactly the decoded input frames)")
    p.add_argument("--preset", default="ultrafast",
                   choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium"),
                   help="x264 speed preset: ultrafast (default) is fastest, slower ones give smaller files")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing outputs (several videos: redo the finished ones)")
    add_model_options(p)
    add_source_options(p)
    annotate_batch.add_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    folder = batch_folder(args.input, args.output)
    if folder is not None:
        return annotate_batch.run(args, folder)
    annotate_batch.check_single(args)
    (input_,) = args.input
    config = config_from_args(args)
    output = Path(args.output)
    if output.suffix.lower() != ".mp4":
        output = output.with_suffix(output.suffix + ".mp4") if output.suffix else output.with_suffix(".mp4")
    logs = [] if args.no_log else (args.log or [output.with_suffix(".jsonl"), output.with_suffix(".csv")])
    with open_source(input_, **source_options(args)) as source:
        info = source.info
        total = info.frame_count
        with open_analyzer(config, still=info.still, model=not args.no_model) as analyzer, \
                tqdm(total=total, unit="frame", desc="annotate", file=sys.stderr,
                     disable=None, dynamic_ncols=True) as bar:
            report = annotate(source, output, analyzer,
                              overlay=None if args.no_overlay else make_overlay(config),
                              logs=logs, deidentify=args.deidentify, start_s=args.start,
                              end_s=args.end, force=args.force, lossless=args.lossless,
                              preset=args.preset,
                              progress=lambda n: bar.update(1))
    print(f"wrote {report.output} ({report.frames} frames, {info.width}x{info.height} "
          f"@ {info.fps:.3g} fps) in {report.seconds:.1f} s ({report.fps:.1f} frames/s)")
    for log in report.logs:
        print(f"wrote {log}")
    if report.stopped_early:
        print(f"warning: {info.name}: {report.stopped_early}", file=sys.stderr)
        return 3
    return 0
