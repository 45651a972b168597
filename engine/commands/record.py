"""``endoview record SOURCE -o OUT.mp4``: headless crash-safe recording (raw or annotated).

The same code as the window's REC button: an :class:`engine.player.Player` in live mode feeds
:func:`engine.outputs.recorder.recording_sink`, which writes through :class:`engine.outputs.recorder.Recorder`
(fragmented MP4, a keyframe every half second, written in place): killed at any moment, the file
plays and holds everything but the last fraction of a second.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from ..errors import EndoviewError, ExportError
from ..files import check_output
from ..outputs.recorder import Recorder, recording_sink
from ..player import Player
from ..runtime import make_overlay, open_analyzer
from ..sources import open_source
from .common import add_model_options, add_source_options, config_from_args, source_options

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "record",
        help="record a capture device (or a file, or 'demo') to a crash-safe MP4, optionally annotated",
        description="Record SOURCE as it is delivered (files and the demo at their own rate) to an "
                    "H.264 MP4 written as fragmented MP4 with a keyframe every half second, so that "
                    "a killed process or a power cut loses at most the last second. With --annotated "
                    "the model runs and the overlay is recorded. Stops at the end of a file, after "
                    "--seconds, or on Ctrl+C / SIGTERM.",
        epilog="examples:\n  endoview record /dev/video0 -o case.mp4\n"
               "  endoview record 0 -o case-annotated.mp4 --annotated --seconds 600",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="capture device (0, /dev/video0), video file, image folder or 'demo'")
    p.add_argument("-o", "--output", required=True, type=Path, help="output .mp4")
    p.add_argument("--annotated", action="store_true", help="run the model and record the overlay")
    p.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--progress-every", type=float, default=0.5, metavar="S",
                   help="print the frame counts every S seconds (default 0.5)")
    add_model_options(p)
    add_source_options(p)
    p.set_defaults(func=run)


def _output(path: Path, force: bool) -> Path:
    if path.suffix.lower() != ".mp4":
        path = path.with_name(path.name + ".mp4")
    return check_output(path, force=force)  # before the work; the recorder replaces the file


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event):
    """SIGINT and SIGTERM end the recording cleanly (the file is finished and kept)."""
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
        except ValueError:  # not the main thread (tests calling run() from a worker)
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args) -> int:
    if args.seconds is not None and args.seconds <= 0:
        raise EndoviewError(f"--seconds must be positive, not {args.seconds}")
    config = config_from_args(args)
    output = _output(args.output, args.force)
    stop = threading.Event()
    errors: list[BaseException] = []
    delivered = 0

    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_source(args.source, **source_options(args)))
        info = source.info
        model = args.annotated and not args.no_model
        # the model is loaded before the file is created: a bad bundle leaves no empty recording
        analyzer = stack.enter_context(open_analyzer(config, still=info.still, model=model))
        recorder = Recorder(output, info.width, info.height, info.fps, on_error=errors.append,
                            force=args.force)
        sink = recording_sink({"annotated" if args.annotated else "raw": recorder}, make_overlay(config))

        def counted(shown) -> None:
            nonlocal delivered
            delivered += 1
            sink(shown)

        player = Player(lambda: contextlib.nullcontext(source), lambda _info: contextlib.nullcontext(analyzer),
                        live=True, pace=True, on_error=errors.append,
                        on_status=lambda m: m and logger.info("%s", m))
        player.add_sink(counted)
        t0 = time.monotonic()
        next_report = t0
        with _stop_on_signals(stop):
            player.start()
            try:
                while not (stop.is_set() or player.finished.is_set() or errors):
                    now = time.monotonic()
                    if args.seconds is not None and now - t0 >= args.seconds:
                        break
                    if now >= next_report:
                        print(f"recording {output}: {delivered} frames delivered, {recorder.frames} "
                              f"written, {recorder.dropped} dropped", flush=True)
                        next_report = now + args.progress_every
                    stop.wait(0.02)
            finally:
                player.stop()
                try:
                    recorder.stop()
                except EndoviewError as exc:
                    if not errors:
                        errors.append(exc)
    seconds = time.monotonic() - t0
    if errors:
        raise errors[0] if isinstance(errors[0], EndoviewError) else ExportError(
            f"recording {output} stopped: {errors[0]!r}")
    if recorder.frames == 0:
        raise ExportError(f"nothing was recorded from {info.name}: it delivered no frames")
    print(f"recorded {output} ({recorder.frames} frames of {delivered} delivered, "
          f"{recorder.dropped} dropped, {seconds:.1f} s, {info.width}x{info.height} @ {info.fps:.3g} fps)")
    return 0
