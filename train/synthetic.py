"""Tiny synthetic data in HyperKvasir's layout, for tests and benchmarks (no real images).

Each class gets its own colour and stripe pattern inside an octagonal field with a black border
and white "patient" text, so a model can learn it in an epoch or two and the content-area
masking has a border to remove.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import numpy as np

from .data import CLASS_TO_ARCHIVE_PATH
from .labels import RAW_CLASSES
from .split import SPLIT_HEADER


def synthetic_frame(class_index: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One BGR frame: class-coloured field with stripes, octagonal black border, burned-in text."""
    hue = int(180 * class_index / len(RAW_CLASSES))
    hsv = np.zeros((size, size, 3), np.uint8)
    hsv[..., 0] = hue
    hsv[..., 1] = 170
    hsv[..., 2] = 190
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.int16)
    period = 4 + class_index % 5
    stripes = ((np.arange(size) // period) % 2 * 40 - 20).astype(np.int16)
    img += stripes[None, :, None] if class_index % 2 else stripes[:, None, None]
    img += rng.normal(0, 8, img.shape).astype(np.int16)
    img = np.clip(img, 0, 255).astype(np.uint8)
    c = size // 5
    octagon = np.array([[c, 0], [size - 1 - c, 0], [size - 1, c], [size - 1, size - 1 - c],
                        [size - 1 - c, size - 1], [c, size - 1], [0, size - 1 - c], [0, c]], np.int32)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [octagon], 255)
    img[mask == 0] = 0
    cv2.putText(img, "ID", (1, max(8, size // 10)), cv2.FONT_HERSHEY_PLAIN, max(0.5, size / 160), (255, 255, 255), 1)
    return img


def make_synthetic_hyperkvasir(root: Path, *, per_class: int = 4, size: int = 64, seed: int = 0,
                               folds: int = 2, layout: str = "archive",
                               classes: tuple[str, ...] = RAW_CLASSES) -> tuple[Path, Path]:
    """Write images and a split CSV under ``root``; returns (data folder, split csv).

    ``layout="archive"``: ``labeled-images/<tract>/<category>/<archive folder>/`` with the
    archive's spellings (hemorrhoids, z-line, polyps, ...); ``"plain"``: ``<class>/``.
    Images alternate between folds.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    data = root / "labeled-images"
    rows = []
    for label in classes:
        ci = RAW_CLASSES.index(label)
        folder = data / (CLASS_TO_ARCHIVE_PATH[label] if layout == "archive" else label)
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            name = f"{uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | ci << 16 | j)}.jpg"
            cv2.imwrite(str(folder / name), synthetic_frame(ci, size, rng), [cv2.IMWRITE_JPEG_QUALITY, 95])
            rows.append(f"{name};{label};{j % folds}")
    split = root / "split.csv"
    split.write_text(";".join(SPLIT_HEADER) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return data, split
