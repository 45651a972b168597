"""``endoview view [SOURCE]``: open the viewer window (and ``python -m app``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.commands.common import add_model_options, add_source_options, config_from_args, source_options
from engine.errors import EndoviewError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "view", help="open the viewer window (live, replay, export)",
        description="Open the endoview window on SOURCE: a video file, an image folder, a capture "
                    "device (index or /dev/videoN) or 'demo'. Default: the last source, else the demo clip.")
    p.add_argument("source", nargs="?", help="what to open (default: the last source, else 'demo')")
    p.add_argument("--live", action="store_true", default=None,
                   help="treat a file like a capture device (newest frame wins, no seeking)")
    p.add_argument("--exit-after-frames", type=int, metavar="N",
                   help="close after N frames were shown (with --screenshot: for tests and docs)")
    p.add_argument("--screenshot", type=Path, metavar="OUT.png",
                   help="with --exit-after-frames: save a picture of the whole window first")
    p.add_argument("--settings", type=Path, metavar="FILE.ini",
                   help="keep the settings in this file instead of the user's settings")
    add_model_options(p)
    add_source_options(p)
    p.set_defaults(func=run)


def build_window(args):
    """The session and its window for ``args`` (a QApplication must exist)."""
    from PySide6.QtCore import QSettings

    from .session import Session
    from .settings import load_settings
    from .state import ViewerState
    from .window import MainWindow

    qs = (QSettings(str(args.settings), QSettings.Format.IniFormat) if args.settings
          else QSettings("endoview", "endoview"))
    settings = load_settings(qs)
    flags = config_from_args(args)  # flags given on the command line win over saved settings
    given = {"bundle": args.model, "backend": args.backend, "smoothing": args.smoothing, "outline": args.outline}

    def make_config(s):
        return s.apply(flags).override(**{k: getattr(flags, k) for k, v in given.items() if v is not None})

    state = ViewerState(speed=settings.speed, loop=settings.loop)
    from engine.sources import open_source

    device = source_options(args)
    session = Session(state, make_config(settings), settings, model=not args.no_model, live=args.live,
                      source_opener=lambda spec: open_source(spec, **device))
    window = MainWindow(session, qs, make_config, exit_after_frames=args.exit_after_frames,
                        screenshot=args.screenshot)
    return window


def run(args) -> int:
    from PySide6.QtWidgets import QApplication

    if args.screenshot is not None and not args.exit_after_frames:
        raise EndoviewError("--screenshot needs --exit-after-frames N")
    app = QApplication.instance() or QApplication([sys.argv[0], "-name", "endoview"])
    app.setApplicationName("endoview")
    window = build_window(args)
    window.show()
    window.open(args.source or window.session.settings.last_source or "demo")
    code = app.exec()
    return window.exit_code or code


def main(argv: list[str] | None = None) -> int:
    """``python -m app [view] [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m app")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        add_parser(parser.add_subparsers(dest="command"))  # reads the packaged configuration
        args = parser.parse_args(argv if argv[:1] == ["view"] else ["view", *argv])
        return int(args.func(args) or 0)
    except EndoviewError as exc:
        print(f"endoview: error: {exc}", file=sys.stderr)
        return exc.exit_code
