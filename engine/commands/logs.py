"""``endoview logs merge``: the per-frame logs of many videos into one Parquet file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ExportError
from ..outputs.logtable import merge_logs, video_name


def add_parser(sub) -> None:
    p = sub.add_parser("logs", help="per-frame logs: merge many into one Parquet file",
                       description="Work with the per-frame logs that 'annotate' writes.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    m = actions.add_parser(
        "merge", help="merge JSONL logs into one Parquet file",
        description="Merge the JSONL per-frame logs of many videos into one Parquet file: one row "
                    "per frame, a 'video' column naming the source (the log's name without "
                    "'_annotated.jsonl'), the nested fields as flat columns (top1/p1..top3/p3, "
                    "bbox_*, area_*, mask_*, seg_*, second_pass_*, <stage>_ms). Needs pyarrow "
                    "(the batch extra).",
        epilog="example:\n  endoview logs merge annotated/ -o all.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("logs", nargs="+", type=Path, metavar="LOG",
                   help="a .jsonl log, or a folder of them")
    m.add_argument("-o", "--output", required=True, type=Path, help="the .parquet file")
    m.add_argument("--force", action="store_true", help="overwrite an existing output")
    m.set_defaults(func=run_merge)


def run_merge(args) -> int:
    logs: list[Path] = []
    for item in args.logs:
        if item.is_dir():
            found = sorted(item.glob("*.jsonl"))
            if not found:
                raise ExportError(f"no .jsonl logs in folder {item}")
            logs.extend(found)
        else:
            logs.append(item)
    rows = merge_logs([(video_name(p), p) for p in logs], args.output, force=args.force)
    print(f"wrote {args.output} ({rows} rows from {len(logs)} logs)")
    return 0
