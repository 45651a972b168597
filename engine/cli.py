"""The ``endoview`` command: one entry point, one subcommand per module.

Engine subcommands are listed here; ``view`` (app/) and ``train`` (train/) register through the
``endoview.commands`` entry-point group so that the engine never imports them.
Each command module has ``add_parser(subparsers)`` which sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib import metadata

from . import __version__
from .errors import EXTRAS_FOR_MODULE, EndoviewError, install_hint

ENGINE_COMMANDS = ("annotate", "crop", "bench", "info", "build_engine", "record", "soak", "report", "logs")
OWN_PACKAGES = {"engine", "app", "train"}
PLUGIN_GROUP = "endoview.commands"

logger = logging.getLogger(__name__)


def _plugins() -> list:
    try:
        return list(metadata.entry_points(group=PLUGIN_GROUP))
    except Exception as exc:  # noqa: BLE001 - a broken install must not stop the engine commands
        logger.warning("cannot list the %r entry points (view, train, ...): %s: %s; only the engine "
                       "commands are available", PLUGIN_GROUP, type(exc).__name__, exc)
        return []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="endoview",
        description="Real-time computer-aided viewer for GI endoscopy (research use only, "
                    "not a diagnostic device).",
        epilog="Run 'endoview COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"endoview {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an internal error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in ENGINE_COMMANDS:
        importlib.import_module(f"engine.commands.{name}").add_parser(sub)
    for ep in _plugins():
        try:
            ep.load()(sub)
        except ImportError as exc:
            # Only a missing third-party extra (torch, PySide6, mmdet...) makes a command
            # unavailable; a broken import of our own code is a bug and must show.
            if (exc.name or "").split(".")[0] in OWN_PACKAGES:
                raise
            logger.info("command %r (entry point %s) is unavailable: %s", ep.name, ep.value, exc)
            missing = sub.add_parser(ep.name, help=f"(unavailable: {exc})")
            missing.set_defaults(func=lambda args, exc=exc, name=ep.name: _unavailable(name, exc))
    return parser


def _unavailable(name: str, exc: ImportError) -> int:
    print(f"endoview: error: '{name}' is not available in this install: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # reads the packaged configuration for the help texts
    except EndoviewError as exc:
        print(f"endoview: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        if any(ep.name == "view" for ep in _plugins()):
            args = parser.parse_args(["view", *(argv or [])])
        else:
            parser.print_help()
            return 0
    try:
        return int(args.func(args) or 0)
    except EndoviewError as exc:
        print(f"endoview: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("endoview: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if args.debug:
            raise
        missing = _missing_extra(exc)
        if missing:
            print(f"endoview: error: '{args.command}' needs {missing}", file=sys.stderr)
            return 1
        print(f"endoview: internal error: {exc!r} (run with --debug for the traceback and "
              "please report it)", file=sys.stderr)
        return 70


def _missing_extra(exc: BaseException) -> str | None:
    """For a third-party module of an optional extra that is not installed (torch for ``train``,
    mmdet for the Cascade Mask R-CNN, ...): what is missing and the command that installs it."""
    if not isinstance(exc, ModuleNotFoundError):
        return None
    module = (exc.name or "").split(".")[0]
    extras = EXTRAS_FOR_MODULE.get(module)
    if extras is None:
        return None
    return f"{module}, which is not installed here; {install_hint(extras)}"


if __name__ == "__main__":
    sys.exit(main())
