"""Snapshots: the current frame as PNG, with and without the overlay (Qt-free)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from ..errors import ExportError
from ..files import check_folder, replacing


def _free(path: Path) -> Path:
    n = 1
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def save_snapshot(folder: str | os.PathLike, name: str, index: int, raw: np.ndarray,
                  annotated: np.ndarray | None) -> list[Path]:
    """Write ``NAME-fINDEX.png`` (raw) and ``NAME-fINDEX-overlay.png`` under free names (each
    under a temporary name first, like every output); returns the paths."""
    folder = check_folder(folder, what="snapshot")
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem or "frame")[:60] + f"-f{index:06d}"
    written = []
    for suffix, image in (("", raw), ("-overlay", annotated)):
        if image is None:
            continue
        path = _free(folder / f"{stem}{suffix}.png")
        with replacing(path, what="snapshot") as tmp:
            try:
                ok = cv2.imwrite(str(tmp), image)  # the temporary name keeps .png: OpenCV goes by it
            except cv2.error as err:
                raise ExportError(f"cannot write snapshot {path}: {err}") from err
            if not ok:
                raise ExportError(f"cannot write snapshot {path} (folder not writable or disk full)")
        written.append(path)
    return written


__all__ = ["save_snapshot"]
