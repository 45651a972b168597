"""Snapshots: the current frame as PNG, with and without the overlay (Qt-free)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from ..errors import ExportError


def _free(path: Path) -> Path:
    n = 1
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def save_snapshot(folder: str | os.PathLike, name: str, index: int, raw: np.ndarray,
                  annotated: np.ndarray | None) -> list[Path]:
    """Write ``NAME-fINDEX.png`` (raw) and ``NAME-fINDEX-overlay.png``; returns the paths."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"snapshot folder does not exist: {folder} (choose one in the settings)")
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem or "frame")[:60] + f"-f{index:06d}"
    written = []
    for suffix, image in (("", raw), ("-overlay", annotated)):
        if image is None:
            continue
        path = _free(folder / f"{stem}{suffix}.png")
        try:
            ok = cv2.imwrite(str(path), image)
        except cv2.error as err:
            raise ExportError(f"cannot write snapshot {path}: {err}") from err
        if not ok:
            raise ExportError(f"cannot write snapshot {path} (folder not writable or disk full)")
        written.append(path)
    return written


__all__ = ["save_snapshot"]
