"""``endoview annotate`` of many videos: the options, and the run from jobs to summary table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..tools import batch
from ..bundle import load_bundle
from ..errors import ExportError
from ..files import check_folder
from .common import config_from_args, source_options

HELP = """\
many videos: give several INPUTs, or a folder of videos, and -o a folder. Each video
becomes OUTDIR/<stem>_annotated.mp4 with <stem>_annotated.jsonl and .csv beside it;
inputs that share a stem get -<8 hex digits of their path> added (OUTDIR/.endoview-batch.json
remembers which input owns which name). Videos whose final files all exist are skipped
(export renames each file into place only when it is complete, so a killed run leaves
none); --force redoes them. A video that fails does not stop the others: the summary table
lists each one (done, partial, skipped, or failed with its reason) with frames, seconds and
frames/s, then the totals; the exit status is 1 when a video failed, 3 when one was written
only as far as it decoded."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def add_options(p) -> None:
    g = p.add_argument_group("many videos")
    g.add_argument("-j", "--jobs", type=_positive, metavar="N",
                   help="videos at once, each in its own process with its own model and "
                        "cores/N inference threads (default 1; with --ray local: the instance's CPUs)")
    g.add_argument("--ray", metavar="ADDRESS",
                   help="spread the videos over a Ray cluster (ray://host:10001, host:6379, auto), one "
                        "task per video; 'local' starts a local instance. Needs the batch extra, and "
                        "the videos, outputs and model at the same paths on every node")
    g.add_argument("--parquet", type=Path, metavar="FILE",
                   help="also merge every video's per-frame log into this Parquet file (a 'video' "
                        "column names the source; rebuilt on every run). Needs the batch extra")


def check_single(args) -> None:
    """The many-video options make no sense with one output file: say so."""
    used = [flag for flag, value in (("--jobs", (args.jobs or 1) > 1), ("--ray", args.ray),
                                     ("--parquet", args.parquet)) if value]
    if used:
        raise ExportError(f"{', '.join(used)} {'works' if len(used) == 1 else 'work'} only with an "
                          f"output folder (-o FOLDER/), not the single file {args.output}")


def run(args, folder: Path) -> int:
    if args.log:
        raise ExportError("--log names one file; with several videos each log goes beside its video "
                          "(NAME_annotated.jsonl and .csv); use --no-log for none")
    if args.parquet and args.no_log:
        raise ExportError("--parquet merges the per-frame logs, so it cannot go with --no-log")
    if args.parquet:
        from ..outputs.logtable import import_pyarrow

        import_pyarrow()  # fail before hours of work, not after
    if args.ray:
        batch.import_ray()
    config = config_from_args(args)
    if not args.no_model:  # a bad model fails once here, not once per video
        load_bundle(Path(config.bundle))
        if config.segmenter is not None:
            load_bundle(Path(config.segmenter))
    check_folder(folder, create=True)

    claims = batch.load_claims(folder)
    jobs = batch.plan(batch.expand_inputs(args.input, skip_outputs_in=folder), folder,
                      logs=not args.no_log, claims=claims)
    batch.save_claims(folder, claims)  # before any work: a killed run keeps its names
    todo, skipped = batch.pending(jobs, force=args.force)
    settings = batch.Settings(
        config=config, model=not args.no_model, overlay=not args.no_overlay,
        deidentify=args.deidentify, start_s=args.start, end_s=args.end, lossless=args.lossless,
        preset=args.preset, force=args.force, source_options=source_options(args))
    done = 0

    def report(o: batch.Outcome) -> None:
        nonlocal done
        done += 1
        if o.status == "skipped":
            what = f"{o.output} exists"
        elif o.status == "failed":
            what = o.reason
        else:
            what = f"{o.frames} frames in {o.seconds:.1f} s ({o.fps:.1f} frames/s)"
        print(f"[{done}/{len(jobs)}] {o.status} {o.input}: {what}", file=sys.stderr, flush=True)

    for o in skipped:
        report(o)
    t0 = time.perf_counter()
    if args.ray:
        ran = batch.run_ray(todo, settings, args.ray, cpus=args.jobs, on_done=report) if todo else []
    else:
        ran = batch.run_local(todo, settings, workers=args.jobs or 1, on_done=report)
    wall = time.perf_counter() - t0
    by_input = {o.input: o for o in [*ran, *skipped]}
    outcomes = [by_input[j.input] for j in jobs]
    print(batch.summary(outcomes, wall))
    if args.parquet:
        from ..outputs.logtable import merge_logs

        logged = [(j.input, j.logs[0]) for j, o in zip(jobs, outcomes) if o.status != "failed"]
        if logged:
            rows = merge_logs(logged, args.parquet, force=True)
            print(f"wrote {args.parquet} ({rows} rows from {len(logged)} logs)")
        else:
            print(f"no log to merge into {args.parquet}", file=sys.stderr)
    return batch.exit_status(outcomes)
