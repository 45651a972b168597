"""Kvasir-SEG matched with HyperKvasir's official 2-fold split, as the segmenter sees it.

Kvasir-SEG is HyperKvasir's 1,000 segmented polyp images under other names. The official split
file lists them by HyperKvasir id, so a fold comes from two files::

    kvasir-seg/images/<name>.jpg, kvasir-seg/masks/<name>.jpg     (masks: JPEG, threshold 128)
    kvasirseg_to_hyperkvasir_uuid_by_bbox.csv: kvasir_seg_name -> hyperkvasir_uuid
    2_fold_split.csv: <uuid>.jpg;polyp;<split-index>

which gives the paper's 500 / 500 folds. Every image goes through the engine's content-area
crop and black-border masking (:func:`engine.analysis.crop.model_input`); its ground-truth mask
goes through the same crop and resize and loses whatever lies outside the visible field, so the
network learns exactly what the viewer will ask of it.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.analysis.content_area import detect_content_area
from engine.analysis.crop import blank_inset, model_input
from engine.types import ContentArea

from ..errors import DataError
from ..images import cached_arrays, progress_range, read_bgr
from ..split import read_split

log = logging.getLogger(__name__)

MASK_THRESHOLD = 128
MAPPING_NAME = "kvasirseg_to_hyperkvasir_uuid_by_bbox.csv"
SPLIT_NAME = "2_fold_split.csv"
#: Where the two files lie relative to the kvasir-seg folder in ../shared/data (tried in order).
MAPPING_CANDIDATES = (MAPPING_NAME, f"../hyperkvasir-segmented-bboxes/{MAPPING_NAME}")
SPLIT_CANDIDATES = (SPLIT_NAME, f"../hyperkvasir-official-splits/official_splits/{SPLIT_NAME}")


@dataclass(frozen=True)
class SegSample:
    name: str  # Kvasir-SEG name (file stem), or the image's file stem for a negative
    image: Path
    mask: Path | None  # None: a polyp-free image (an empty mask)
    fold: int
    uuid: str  # HyperKvasir id

    @property
    def negative(self) -> bool:
        return self.mask is None


def _find(root: Path, given: str | os.PathLike[str] | None, candidates: Sequence[str], what: str) -> Path:
    if given is not None:
        p = Path(given).expanduser()
        if not p.is_file():
            raise DataError(f"{what} not found: {p}")
        return p
    for c in candidates:
        p = (root / c).resolve()
        if p.is_file():
            return p
    raise DataError(f"no {what} found beside {root} (looked for {', '.join(candidates)}); pass it explicitly")


def read_mapping(path: Path) -> dict[str, str]:
    """``kvasir_seg_name -> hyperkvasir_uuid`` (one candidate per row, as the shared file has)."""
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"kvasir_seg_name", "hyperkvasir_uuid_candidates"} <= set(reader.fieldnames):
            raise DataError(f"{path} lacks the columns kvasir_seg_name,hyperkvasir_uuid_candidates")
        for line, row in enumerate(reader, start=2):
            cands = [c for c in row["hyperkvasir_uuid_candidates"].replace(";", " ").split() if c]
            if len(cands) != 1:
                raise DataError(f"{path}:{line}: {row['kvasir_seg_name']} maps to {len(cands)} HyperKvasir "
                                "ids; the fold is ambiguous")
            out[row["kvasir_seg_name"].strip()] = cands[0]
    return out


def load_kvasir_seg(root: str | os.PathLike[str], *, split_csv: str | os.PathLike[str] | None = None,
                    mapping_csv: str | os.PathLike[str] | None = None) -> list[SegSample]:
    """Every Kvasir-SEG image with its mask and official fold; DataError on any mismatch."""
    base = Path(root).expanduser()
    if (base / "kvasir-seg" / "images").is_dir():
        base = base / "kvasir-seg"
    images, masks = base / "images", base / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise DataError(f"{base} is not a Kvasir-SEG folder (it needs images/ and masks/)")
    mapping = read_mapping(_find(base, mapping_csv, MAPPING_CANDIDATES, "Kvasir-SEG -> HyperKvasir mapping"))
    split = read_split(_find(base, split_csv, SPLIT_CANDIDATES, "official split file"))
    samples = []
    for image in sorted(images.iterdir()):
        if image.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        name = image.stem
        mask = masks / image.name
        if not mask.is_file():
            raise DataError(f"{image} has no mask {mask}")
        uuid = mapping.get(name)
        if uuid is None:
            raise DataError(f"{image.name} is not in the mapping file; its fold is unknown")
        row = split.get(f"{uuid}.jpg")
        if row is None:
            raise DataError(f"{image.name} maps to {uuid}.jpg, which the split file does not list")
        samples.append(SegSample(name, image, mask, row.fold, uuid))
    if not samples:
        raise DataError(f"no images in {images}")
    return samples


def fold_counts(samples: Sequence[SegSample]) -> dict[int, int]:
    return dict(sorted(Counter(s.fold for s in samples).items()))


def read_mask(path: Path) -> np.ndarray:
    """H x W bool (JPEG masks: threshold at 128)."""
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise DataError(f"cannot read mask {path}")
    return m >= MASK_THRESHOLD


def field_mask(area: ContentArea, size: tuple[int, int]) -> np.ndarray:
    """The visible field at the model's size (H x W bool): the engine's mask, exactly."""
    h, w = size
    if area.shape == "full":
        return np.ones((h, w), bool)
    white = np.full((area.frame_size[1], area.frame_size[0], 3), 255, np.uint8)
    return model_input(white, area, size, mask=True)[..., 0] > 0


def mask_to_model(mask: np.ndarray, area: ContentArea, size: tuple[int, int],
                  inset: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """A frame-sized bool mask through the same crop, resize, border masking (and inset) as the image."""
    grey = mask.astype(np.uint8) * 255
    return model_input(cv2.merge([grey, grey, grey]), area, size, mask=True, inset=inset)[..., 0] >= MASK_THRESHOLD


def load_pair(sample: SegSample, size: tuple[int, int], inset: tuple[float, float, float, float] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB model input H x W x 3 uint8, polyp mask H x W bool, field mask H x W bool).

    With ``inset`` (:data:`engine.analysis.crop.SCOPE_GUIDE_INSET`) that box is black in the image
    and False in both masks: the model never sees it and is never asked about it.
    """
    bgr = read_bgr(sample.image)
    area = detect_content_area(bgr)
    field = blank_inset(field_mask(area, size), inset)
    if sample.mask is None:
        return model_input(bgr, area, size, mask=True, inset=inset), np.zeros(size, bool), field
    mask = read_mask(sample.mask)
    if mask.shape != bgr.shape[:2]:
        raise DataError(f"{sample.mask} is {mask.shape[1]}x{mask.shape[0]} but {sample.image} is "
                        f"{bgr.shape[1]}x{bgr.shape[0]}")
    return (model_input(bgr, area, size, mask=True, inset=inset), mask_to_model(mask, area, size, inset),
            field)


def cache_key(samples: Sequence[SegSample], size: tuple[int, int],
              inset: tuple[float, float, float, float] | None = None) -> str:
    h = hashlib.sha256(f"{size}{'' if inset is None else inset}".encode())
    for s in samples:
        st = s.image.stat()
        h.update(f"{s.name}:{s.fold}:{st.st_size}:{int(st.st_mtime)}{'' if s.mask else ':negative'}".encode())
    return h.hexdigest()[:16]


def load_arrays(samples: Sequence[SegSample], size: tuple[int, int], *, cache_dir: Path | None = None,
                progress: bool = False, inset: tuple[float, float, float, float] | None = None
                ) -> dict[str, np.ndarray]:
    """All samples as arrays: images N x H x W x 3 uint8, masks / fields N x H x W uint8 (0/1).

    1,000 images at 256 px are 200 MB: the trainer keeps them in memory. With ``cache_dir`` the
    arrays are saved there (keyed by the files and the size) and loaded next time.
    """
    key = cache_key(samples, size, inset)
    path = cache_dir / f"kvasir-seg-{size[0]}x{size[1]}-{key}.npz" if cache_dir else None

    def decode() -> dict[str, np.ndarray]:
        n = len(samples)
        out = {"images": np.zeros((n, *size, 3), np.uint8), "masks": np.zeros((n, *size), np.uint8),
               "fields": np.zeros((n, *size), np.uint8)}
        for i in progress_range(n, f"decode {size[0]}x{size[1]}", progress):
            out["images"][i], out["masks"][i], out["fields"][i] = load_pair(samples[i], size, inset)
        return out

    return cached_arrays(path, ("images", "masks", "fields"), decode)
