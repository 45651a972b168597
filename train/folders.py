"""The folders train/ writes: a run folder (and its log.csv and train.log), and a bundle folder an
export or ship step fills.

Both refuse to replace something that is there unless ``--force``, before any work is done.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from collections.abc import Sequence
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


def write_csv(path: Path, history: Sequence[dict]) -> None:
    """``log.csv``: one row per epoch (every key any row has), written atomically."""
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)


class RunLog:
    """The run folder's log file: everything the ``train`` logger says while training (a file
    handler on the ``train`` logger for the duration of a run)."""

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.setLevel(logging.INFO)
        self.logger = logging.getLogger("train")

    def __enter__(self):
        self.logger.addHandler(self.handler)
        self._level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self._level)
        self.handler.close()


def check_bundle_target(out: str | os.PathLike[str], *, force: bool) -> Path:
    """The bundle folder ``out`` (expanded); TrainError when it is a file, or holds something and not ``force``."""
    target = Path(out).expanduser()
    if target.exists() and not target.is_dir():
        raise TrainError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise TrainError(f"{target} exists and is not empty; choose another folder or pass --force")
    return target
