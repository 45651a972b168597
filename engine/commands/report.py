"""``endoview report``: the procedure report (HTML, JSON, DICOM page) of an annotated video's log."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import EndoviewError, SourceError
from ..files import check_output
from ..procedure.log import LogError, read_log
from ..procedure.summary import SummaryConfig, summarize
from ..procedure.tracking import TrackerConfig

logger = logging.getLogger(__name__)

LOG_SUFFIXES = (".jsonl",)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="procedure report of an annotated video: polyps, cecum, withdrawal, bowel prep, quality",
        description="Summarise the per-frame log of 'endoview annotate' into a procedure report: polyp "
                    "count (confirmed tracks) with the best frame of each, the time the cecum was reached, "
                    "the withdrawal time, bowel-prep and image-quality shares and a timeline. Research use "
                    "only, not a diagnostic device.",
        epilog="examples:\n  endoview annotate case.mp4 -o case_annotated.mp4\n"
               "  endoview report case_annotated.jsonl -o case_report.html --video case.mp4\n"
               "  endoview report case_annotated.jsonl --json > summary.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="the JSONL log written by 'endoview annotate'")
    p.add_argument("-o", "--output", type=Path, help="the HTML report to write")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on standard output")
    p.add_argument("--video", type=Path,
                   help="the video the log was made from (or the annotated clip), for the polyps' thumbnails")
    p.add_argument("--dicom", type=Path, metavar="OUT.dcm",
                   help="also write the report as one page image, a DICOM Secondary Capture")
    p.add_argument("--bundle", type=Path, action="append", default=[], metavar="BUNDLE",
                   help="a model bundle the log was made with, named in the report with its version "
                        "(repeatable; the log itself names only the segmenter)")
    p.add_argument("--cecum-hold", type=float, default=SummaryConfig().cecum_hold_s, metavar="S",
                   help="seconds normal-cecum must hold for the cecum to count as reached (default: %(default)s)")
    p.add_argument("--confirm-frames", type=int, default=TrackerConfig().confirm_frames, metavar="N",
                   help="frames a polyp track must hold before it counts (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=run)


def rows_from_input(path: Path) -> list[dict]:
    """The per-frame rows of INPUT. Only a JSONL log today; a video input will produce the same rows
    through the analysis pipeline (FrameResult.to_log_row plus quality and detections)."""
    if not path.exists():
        raise LogError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raise LogError(f"{path}: a CSV log cannot be summarised; give the .jsonl log that 'endoview annotate' "
                       "writes beside it")
    if suffix not in LOG_SUFFIXES:
        raise LogError(f"{path}: not a .jsonl log; a report is made from the per-frame log of 'endoview annotate' "
                       f"(run 'endoview annotate {path} -o OUT.mp4', then 'endoview report OUT.jsonl ...')")
    return read_log(path)


def bundle_info(folder: Path) -> dict:
    """Name and version of a model bundle, from its manifest (the files are not checked here)."""
    manifest = folder / "manifest.json"
    try:
        m = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EndoviewError(f"{folder}: not a model bundle (no manifest.json)") from None
    except (OSError, ValueError) as exc:
        raise EndoviewError(f"{manifest}: cannot be read ({exc})") from None
    if not isinstance(m, dict):
        raise EndoviewError(f"{manifest}: not a bundle manifest")
    info = {"name": m.get("name", folder.name), "task": m.get("task"), "version": m.get("created")}
    files = m.get("files")
    sha = files.get("model.onnx") if isinstance(files, dict) else None
    if isinstance(sha, str):
        info["model.onnx sha256"] = sha[:12]
    return info


def model_list(summary: Mapping, bundles: Iterable[Path]) -> list[dict]:
    models = [bundle_info(b) for b in bundles]
    named = {m["name"] for m in models}
    models += [{"name": n, "version": "as named in the log"} for n in summary.get("models", []) if n not in named]
    return models


def to_json(summary: Mapping) -> str:
    """The summary as indented JSON, the timeline's long per-bin lists one line each."""
    marker = "\u0000timeline\u0000"
    text = json.dumps({**summary, "timeline": marker}, indent=2)
    timeline = summary.get("timeline") or {}
    compact = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in timeline.items()) + "}"
    return text.replace(json.dumps(marker), compact)


def run(args) -> int:
    if args.output is None and not args.json:
        raise EndoviewError("nothing to do: give -o REPORT.html and/or --json")
    if args.output is not None and args.output.suffix.lower() not in (".html", ".htm"):
        raise EndoviewError(f"the report is HTML: {args.output} should end in .html")
    if args.confirm_frames < 1:
        raise EndoviewError(f"--confirm-frames must be at least 1, not {args.confirm_frames}")
    if not args.cecum_hold > 0:
        raise EndoviewError(f"--cecum-hold must be more than 0 seconds, not {args.cecum_hold}")
    for out in (args.output, args.dicom):  # refuse before the work, not after
        if out is not None:
            check_output(out, force=args.force, inputs=[args.input, args.video])
    if args.video is not None and not args.video.is_file():
        raise SourceError(f"video not found: {args.video}")
    rows = rows_from_input(args.input)
    config = SummaryConfig(cecum_hold_s=args.cecum_hold, tracker=TrackerConfig(confirm_frames=args.confirm_frames))
    try:
        summary = summarize(rows, config)
    except ValueError as exc:
        raise LogError(f"{args.input}: {exc}") from None
    summary["source"] = args.input.name

    if args.output is not None or args.dicom is not None:
        from ..procedure.report import render_html, render_page, write_text

        models = model_list(summary, args.bundle)
        thumbnails = note = None
        if args.video is not None:
            from ..procedure.thumbnails import track_thumbnails

            thumbnails = track_thumbnails(args.video, summary, rows)
            if len(thumbnails) < len(summary["tracks"]):
                note = f"some frames could not be read from {args.video.name}"
        else:
            note = "no video was given (--video)"
        if args.output is not None:
            html = render_html(summary, thumbnails=thumbnails, models=models, source=args.input.name,
                               thumbnails_note=note)
            write_text(args.output, html, force=args.force)
        if args.dicom is not None:
            from ..procedure.dicom import save_report_page

            page = render_page(summary, thumbnails=thumbnails, models=models, source=args.input.name)
            # thumbnails may carry the processor's text drawn inside the field: say so in the file
            save_report_page(args.dicom, page, force=args.force, burned_in_text=bool(thumbnails))
    if args.json:
        sys.stdout.write(to_json(summary) + "\n")
    said = sys.stderr if args.json else sys.stdout
    cecum = "not reached" if summary["cecum_s"] is None else f"at {summary['cecum_s']:.1f} s"
    withdrawal = "" if summary["withdrawal_s"] is None else f", withdrawal {summary['withdrawal_s']:.1f} s"
    for out in (args.output, args.dicom):
        if out is not None:
            print(f"wrote {out} ({summary['polyps']} polyps, cecum {cecum}{withdrawal})", file=said)
    return 0
