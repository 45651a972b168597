"""``endoview report``: the procedure report (HTML, JSON, DICOM page) of an annotated video's log."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..config import load_config
from ..errors import EndoviewError, SourceError
from ..files import check_output
from ..procedure.log import LogError, read_log
from ..procedure.summary import SummaryConfig, summarize
from ..procedure.tracking import TrackerConfig
from .common import add_model_options

logger = logging.getLogger(__name__)

LOG_SUFFIXES = (".jsonl",)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="procedure report of an annotated video: polyps, cecum, withdrawal, bowel prep, quality",
        description="Summarise the per-frame log of 'endoview annotate' (or a video, analysed first without "
                    "writing a video) into a procedure report: polyp "
                    "count (confirmed tracks) with the best frame of each, the time the cecum was reached, "
                    "the withdrawal time, bowel-prep and image-quality shares and a timeline. Research use "
                    "only, not a diagnostic device.",
        epilog="examples:\n  endoview annotate case.mp4 -o case_annotated.mp4\n"
               "  endoview report case_annotated.jsonl -o case_report.html --video case.mp4\n"
               "  endoview report case_annotated.jsonl --json > summary.json\n"
               "  endoview report case.mp4 -o case_report.html   # analyses the video first",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path,
                   help="the JSONL log written by 'endoview annotate', or a video (any INPUT of 'annotate': a "
                        "file, an image folder, 'demo'), analysed here with the models of the configuration")
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
    p.add_argument("--log", type=Path, metavar="OUT.jsonl",
                   help="with a video INPUT: keep the per-frame log it was analysed into")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_model_options(p)
    p.set_defaults(func=run)


def is_log(path: Path) -> bool:
    return path.suffix.lower() in LOG_SUFFIXES


def rows_from_input(path: Path, args=None) -> list[dict]:
    """The per-frame rows of INPUT: a JSONL log as it is, a video analysed into one (:func:`analyse`)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raise LogError(f"{path}: a CSV log cannot be summarised; give the .jsonl log that 'endoview annotate' "
                       "writes beside it")
    if is_log(path):
        return read_log(path)
    if not str(path).startswith("demo") and not path.exists():
        raise LogError(f"{path}: no such file")
    return analyse(path, args)


def analyse(video: Path, args=None) -> list[dict]:
    """Every frame of ``video`` through the models (the configuration's, or the model flags') into
    per-frame rows: the annotate path with no video written, only its JSONL log (``args.log``, or a
    temporary file), read back."""
    import tempfile

    from tqdm import tqdm

    from ..outputs.export import annotate
    from ..runtime import open_analyzer
    from ..sources import open_source
    from .common import config_from_args

    config = config_from_args(args) if args is not None else load_config()
    keep = getattr(args, "log", None)
    if keep is not None and not is_log(keep):
        raise EndoviewError(f"--log must end in .jsonl: {keep}")
    with tempfile.TemporaryDirectory(prefix="endoview-report-") as tmp:
        log = keep if keep is not None else Path(tmp) / "rows.jsonl"
        with open_source(str(video)) as source:
            info = source.info
            if not info.seekable and info.frame_count is None:
                raise EndoviewError(f"{video}: a live source has no end; record it first "
                                    "('endoview record'), then report on the recording")
            with open_analyzer(config, still=info.still, model=not getattr(args, "no_model", False)) as analyzer, \
                    tqdm(total=info.frame_count, unit="frame", desc="analyse", file=sys.stderr, disable=None,
                         dynamic_ncols=True) as bar:
                annotate(source, None, analyzer, overlay=None, logs=[log],
                         force=bool(getattr(args, "force", False)), progress=lambda n: bar.update(1))
        logger.info("analysed %s into %s", video, log)
        return read_log(log)


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
    versions = summary.get("model_versions") or {}
    models += [{"name": n, "version": versions.get(n, "as named in the log")}
               for n in summary.get("models", []) if n not in named]
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
    rows = rows_from_input(args.input, args)
    if args.video is None and not is_log(args.input):
        args.video = args.input  # the analysed video gives the thumbnails
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
            from ..sources import open_source

            thumbnails = track_thumbnails(args.video, summary, rows, open_source=open_source)
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
