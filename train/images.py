"""Image files and the arrays decoded from them: one image read, a progress bar over many, and
decoded arrays cached on disk (the classifier's and the segmenter's data both use them)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import DataError


def read_bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"cannot read image {path} (missing, unreadable or not an image)")
    return image


def progress_range(n: int, desc: str, progress: bool):
    """``range(n)``, with a tqdm bar when ``progress``."""
    if not progress:
        return range(n)
    from tqdm import tqdm

    return tqdm(range(n), desc=desc, unit="img", leave=False)


def cached_arrays(path: Path | None, keys: Sequence[str], build) -> dict[str, np.ndarray]:
    """The arrays saved at ``path`` (``.npz``), or ``build()``'s, saved there atomically for next time."""
    if path is not None and path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in keys}
    out = build()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # one temporary file per process: the ranks of a torchrun job decode together, and a shared
        # name let one rank rename the file away under another
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **out)
        os.replace(tmp, path)
    return out
