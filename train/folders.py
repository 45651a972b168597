"""The folders train/ writes: a new run folder, and a bundle folder an export or ship step fills.

Both refuse to replace something that is there unless ``--force``, before any work is done.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import TrainError


def check_new_run(out: Path, *, force: bool) -> None:
    """Refuse ``out`` for a new run: a file, or a folder that already holds something (unless ``force``)."""
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise TrainError(f"{out} already holds a run; pass --resume to continue it, --force to start over, "
                         "or choose another --out")


def start_run_dir(out: Path) -> None:
    """``out`` as an empty folder, whatever it held removed (call :func:`check_new_run` first)."""
    if out.is_dir():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def new_run_dir(out: Path, *, force: bool) -> None:
    """:func:`check_new_run`, then :func:`start_run_dir`."""
    check_new_run(out, force=force)
    start_run_dir(out)


def check_bundle_target(out: str | os.PathLike[str], *, force: bool) -> Path:
    """The bundle folder ``out`` (expanded); TrainError when it is a file, or holds something and not ``force``."""
    target = Path(out).expanduser()
    if target.exists() and not target.is_dir():
        raise TrainError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise TrainError(f"{target} exists and is not empty; choose another folder or pass --force")
    return target
