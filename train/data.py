"""HyperKvasir's labeled images as distributed, matched with the official split file.

Layout read (both are found by walking ``root``)::

    labeled-images/lower-gi-tract/pathological-findings/hemorrhoids/*.jpg   (as distributed)
    polyp/*.jpg                                                          (plain class folders)

The split file (``file-name;class-name;split-index``) spells classes as :data:`RAW_CLASSES`;
the archive's folders do not always (``hemorrhoids`` / ``hemorroids``, ``z-line`` /
``normal-z-line``, ``esophagitis-a`` / ``oesophagitis-a``, ...). :data:`FOLDER_TO_CLASS` maps them
explicitly; a folder of images that maps to nothing, an image the split file does not list, or an
image whose folder disagrees with the split file is a :class:`DataError` naming the file.

Several roots combine into one data set (``--data A B C``): each is a labeled-images folder (or
plain class folders), or a Kvasir-SEG folder (``images/`` and ``masks/``), whose images are
HyperKvasir's "polyp" class under other names: ``kvasirseg_to_hyperkvasir_uuid_by_bbox.csv`` maps
them to the ids the split file lists (:func:`train.seg.data.load_kvasir_seg`). The same file in two
roots is a DataError. With ``../shared/data`` that is, for example::

    --data hyperkvasir-lower-gi/labeled-images kvasir-seg hyperkvasir-ileum

(six of the 23 classes under the official split: normal-cecum, bbps-2-3, bbps-0-1, impacted-stool,
polyp, ileum).

``--fold K``: the images with split-index K are the evaluation (held-out) set; all the others are
the training set. With the 2-fold split, fold 0 and fold 1 together are the paper's 2-fold CV.

Every image goes through :func:`engine.analysis.crop.model_input` (crop to the visible field,
resize, black outside the field, and the scope-guide inset blacked out when asked): the same
bytes the viewer feeds its models.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.analysis.content_area import detect_content_area
from engine.analysis.crop import blank_inset, model_input
from engine.types import POLYP_CLASSES

from .errors import DataError
from .images import cached_arrays, progress_range, read_bgr
from .labels import RAW_CLASSES
from .seg.data import SegSample, load_kvasir_seg, load_pair
from .split import read_split

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

#: Folder name (as in the HyperKvasir archive, or as in the split file) -> split-file class.
FOLDER_TO_CLASS: dict[str, str] = {c: c for c in RAW_CLASSES} | {
    "hemorrhoids": "hemorroids",
    "barretts-short-segment": "short-segment-barretts",
    "cecum": "normal-cecum",
    "pylorus": "normal-pylorus",
    "z-line": "normal-z-line",
    "esophagitis-a": "oesophagitis-a",
    "esophagitis-b-d": "oesophagitis-b-d",
    "polyps": "polyp",
    # the spellings of HyperKvasir's README table
    "ulcerative-colitis-0-1": "ulcerative-colitis-grade-0-1",
    "ulcerative-colitis-1-2": "ulcerative-colitis-grade-1-2",
    "ulcerative-colitis-2-3": "ulcerative-colitis-grade-2-3",
}

#: Where each class lies in HyperKvasir's ``labeled-images`` archive (folder spelling of the archive).
ARCHIVE_FOLDERS: dict[str, str] = {
    "cecum": "lower-gi-tract/anatomical-landmarks", "ileum": "lower-gi-tract/anatomical-landmarks",
    "retroflex-rectum": "lower-gi-tract/anatomical-landmarks",
    "hemorrhoids": "lower-gi-tract/pathological-findings", "polyps": "lower-gi-tract/pathological-findings",
    **{f"ulcerative-colitis-grade-{g}": "lower-gi-tract/pathological-findings"
       for g in ("0-1", "1", "1-2", "2", "2-3", "3")},
    "bbps-0-1": "lower-gi-tract/quality-of-mucosal-views", "bbps-2-3": "lower-gi-tract/quality-of-mucosal-views",
    "impacted-stool": "lower-gi-tract/quality-of-mucosal-views",
    "dyed-lifted-polyps": "lower-gi-tract/therapeutic-interventions",
    "dyed-resection-margins": "lower-gi-tract/therapeutic-interventions",
    "pylorus": "upper-gi-tract/anatomical-landmarks", "retroflex-stomach": "upper-gi-tract/anatomical-landmarks",
    "z-line": "upper-gi-tract/anatomical-landmarks",
    "barretts": "upper-gi-tract/pathological-findings",
    "barretts-short-segment": "upper-gi-tract/pathological-findings",
    "esophagitis-a": "upper-gi-tract/pathological-findings",
    "esophagitis-b-d": "upper-gi-tract/pathological-findings",
}
#: split-file class -> its folder path inside labeled-images/ as distributed.
CLASS_TO_ARCHIVE_PATH: dict[str, str] = {FOLDER_TO_CLASS[f]: f"{parent}/{f}" for f, parent in ARCHIVE_FOLDERS.items()}

#: Folders of the full HyperKvasir download that hold images but are not labeled classes.
NOT_LABELED = {"unlabeled-images", "segmented-images", "masks"}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str  # a RAW_CLASSES name
    fold: int
    mask: Path | None = None  # Kvasir-SEG's polyp mask of this image, where there is one

    @property
    def index(self) -> int:
        return RAW_CLASSES.index(self.label)


# --------------------------------------------------------------------------------------------
# folders


def mask_known(sample: Sample) -> bool:
    """Whether ``sample``'s polyp mask is known: Kvasir-SEG's, or empty in a class that holds no
    polyp (an image of one of ``engine.types.POLYP_CLASSES`` has a mask only where Kvasir-SEG gives it)."""
    return sample.mask is not None or sample.label not in POLYP_CLASSES


def folder_class(name: str) -> str | None:
    """The split-file class of an image folder name, or None."""
    return FOLDER_TO_CLASS.get(name.strip().lower())


def scan_images(root: str | os.PathLike[str]) -> dict[str, tuple[Path, str]]:
    """``file-name -> (path, class)`` for every image under ``root`` in a class folder.

    Raises DataError for a folder of images whose name maps to no class, or for a file name
    found in two folders.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"data folder not found: {base} (HyperKvasir's labeled-images folder)")
    found: dict[str, tuple[Path, str]] = {}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames.sort()
        images = sorted(f for f in filenames if f.lower().endswith(IMAGE_SUFFIXES))
        if not images:
            continue
        folder = Path(dirpath)
        if NOT_LABELED.intersection(folder.relative_to(base).parts):
            raise DataError(
                f"{folder} holds images that are not labeled classes; point --data at HyperKvasir's "
                "labeled-images folder"
            )
        label = folder_class(folder.name)
        if label is None:
            raise DataError(
                f"image folder {folder} matches no HyperKvasir class (e.g. {images[0]}); known folder "
                f"names: {', '.join(sorted(FOLDER_TO_CLASS))}"
            )
        for f in images:
            if f in found:
                raise DataError(f"{f} is in two class folders: {found[f][0].parent} and {folder}")
            found[f] = (folder / f, label)
    if not found:
        raise DataError(f"no images found under {base} (expected <class>/*.jpg folders)")
    return found


@dataclass(frozen=True)
class Dataset:
    """All images found, each with its split-file class and fold."""

    roots: tuple[Path, ...]
    split_csv: Path
    samples: tuple[Sample, ...]
    missing: dict[str, int]  # class -> images the split file lists that are not under root

    def fold(self, k: int) -> list[Sample]:
        return [s for s in self.samples if s.fold == k]

    def not_fold(self, k: int) -> list[Sample]:
        return [s for s in self.samples if s.fold != k]

    @property
    def folds(self) -> list[int]:
        return sorted({s.fold for s in self.samples})

    def counts(self) -> dict[str, dict[int, int]]:
        """class -> fold -> number of images found (every class, zero where none)."""
        c = Counter((s.label, s.fold) for s in self.samples)
        folds = self.folds
        return {label: {k: c[(label, k)] for k in folds} for label in RAW_CLASSES}


def is_kvasir_seg(root: str | os.PathLike[str]) -> bool:
    """True for a Kvasir-SEG folder (``images/`` and ``masks/``, or a parent holding ``kvasir-seg/``)."""
    base = Path(root).expanduser()
    return ((base / "images").is_dir() and (base / "masks").is_dir()) or (base / "kvasir-seg" / "images").is_dir()


def _kvasir_seg_images(root: Path, split_csv: str | os.PathLike[str]) -> dict[str, tuple[Path, str, Path | None]]:
    """Kvasir-SEG as HyperKvasir's polyp class: ``<hyperkvasir id>.jpg -> (path, "polyp", mask path)``."""
    return {f"{s.uuid}.jpg": (s.image, "polyp", s.mask) for s in load_kvasir_seg(root, split_csv=split_csv)}


def as_roots(roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> tuple[Path, ...]:
    """One root or several -> a tuple of paths (a string is one root)."""
    if isinstance(roots, (str, os.PathLike)):
        return (Path(roots),)
    out = tuple(Path(r) for r in roots)
    if not out:
        raise DataError("no data folder given")
    return out


def load_dataset(roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 split_csv: str | os.PathLike[str]) -> Dataset:
    """Match the images under one or several roots with ``split_csv``; DataError on any disagreement."""
    split = read_split(split_csv)
    paths = as_roots(roots)
    images: dict[str, tuple[Path, str, Path | None]] = {}
    for root in paths:
        if is_kvasir_seg(root):
            found = _kvasir_seg_images(root, split_csv)
        else:
            found = {name: (path, label, None) for name, (path, label) in scan_images(root).items()}
        for name, (path, label, mask) in found.items():
            if name in images:
                raise DataError(f"{name} is in two data folders: {images[name][0]} and {path}")
            images[name] = (path, label, mask)
    samples = []
    for name, (path, label, mask) in sorted(images.items()):
        row = split.get(name)
        if row is None:
            raise DataError(
                f"{path} is not listed in the split file {split_csv}; remove it or use the split file "
                "that goes with this data"
            )
        if row.label != label:
            raise DataError(
                f"{path} lies in a {path.parent.name!r} folder (class {label}) but the split file "
                f"{split_csv} says {row.label}"
            )
        samples.append(Sample(path, label, row.fold, mask))
    missing = Counter(r.label for n, r in split.items() if n not in images)
    if missing:
        log.info("%d of the %d images listed in %s are not under %s (%s)", sum(missing.values()),
                 len(split), split_csv, ", ".join(str(p) for p in paths),
                 ", ".join(f"{k}: {v}" for k, v in sorted(missing.items())))
    return Dataset(paths, Path(split_csv), tuple(samples), dict(missing))


def load_negatives(roots: Sequence[str | os.PathLike[str]], split_csv: str | os.PathLike[str]) -> list[SegSample]:
    """Polyp-free images (HyperKvasir labeled-images folders or class folders, matched with the
    official split file for their folds) as samples with an empty mask. A polyp image among them
    (class "polyp" or one of the dyed-polyp classes) is a DataError: it has no mask here."""
    ds = load_dataset(list(roots), split_csv)
    bad = [s for s in ds.samples if s.label in ("polyp", "dyed-lifted-polyps")]
    if bad:
        raise DataError(f"--negatives holds {len(bad)} polyp images (e.g. {bad[0].path}); negatives must "
                        "be polyp-free")
    return [SegSample(s.path.stem, s.path, None, s.fold, s.path.stem) for s in ds.samples]


def format_counts(ds: Dataset) -> str:
    """A plain-text table: class, images per fold, total, and how many the split lists but are missing."""
    counts = ds.counts()
    folds = ds.folds
    width = max(len(c) for c in RAW_CLASSES)
    head = f"{'class':<{width}} " + " ".join(f"{'fold ' + str(k):>7}" for k in folds) + f" {'total':>7} {'missing':>7}"
    lines = [head]
    for label in RAW_CLASSES:
        per = counts[label]
        lines.append(f"{label:<{width}} " + " ".join(f"{per[k]:>7}" for k in folds)
                     + f" {sum(per.values()):>7} {ds.missing.get(label, 0):>7}")
    totals = [sum(counts[c][k] for c in RAW_CLASSES) for k in folds]
    lines.append(f"{'all':<{width}} " + " ".join(f"{t:>7}" for t in totals)
                 + f" {sum(totals):>7} {sum(ds.missing.values()):>7}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# images


def load_model_input(path: Path, size: tuple[int, int], *, with_mask: bool = False,
                     inset: tuple[float, float, float, float] | None = None):
    """The model input of one image file: H x W x 3 uint8 RGB, black outside the visible field
    (and in the ``inset`` box, when given: :data:`engine.analysis.crop.SCOPE_GUIDE_INSET`).

    With ``with_mask``, also the field mask at the model's size (H x W bool, False in the inset),
    for augmentations that move pixels (flips, perspective) so the border can be blacked out again
    afterwards.
    """
    bgr = read_bgr(path)
    area = detect_content_area(bgr)
    rgb = model_input(bgr, area, size, mask=True, inset=inset)
    if not with_mask:
        return rgb
    if area.shape == "full":
        return rgb, blank_inset(np.ones(rgb.shape[:2], bool), inset)
    # the engine's own mask at the model's size, exactly: model_input of an all-white frame
    white = np.full_like(bgr, 255)
    field = model_input(white, area, size, mask=True, inset=inset)
    return rgb, field[..., 0] > 0


def load_arrays(samples: Sequence[Sample], size: tuple[int, int], *,
                inset: tuple[float, float, float, float] | None = None, cache_dir: Path | None = None,
                progress: bool = False, masks: bool = False) -> dict[str, np.ndarray]:
    """Every sample's model input and field mask, decoded once: ``images`` N x H x W x 3 uint8,
    ``fields`` N x H x W uint8 (0/1), ``labels`` N int64 (raw class index); with ``masks`` also
    ``masks`` N x H x W uint8 (0/1): the polyp mask through the same crop and resize, empty for an
    image without one (the zoom augmentation keeps a polyp in view with it).

    With ``cache_dir`` the arrays are saved there, keyed by the files, the size and the inset.
    """
    h = hashlib.sha256(f"{tuple(size)}:{inset}{':masks' if masks else ''}".encode())
    for s in samples:
        st = s.path.stat()
        h.update(f"{s.path.name}:{s.label}:{s.fold}:{st.st_size}:{int(st.st_mtime)}".encode())
    path = cache_dir / f"classify-{size[0]}x{size[1]}-{h.hexdigest()[:16]}.npz" if cache_dir else None

    def decode() -> dict[str, np.ndarray]:
        n = len(samples)
        out = {"images": np.zeros((n, *size, 3), np.uint8), "fields": np.zeros((n, *size), np.uint8),
               "labels": np.array([s.index for s in samples], np.int64)}
        if masks:
            out["masks"] = np.zeros((n, *size), np.uint8)
        for i in progress_range(n, f"decode {size[0]}x{size[1]}", progress):
            s = samples[i]
            if masks:
                pair = SegSample(s.path.stem, s.path, s.mask, s.fold, s.path.stem)
                out["images"][i], out["masks"][i], out["fields"][i] = load_pair(pair, size, inset)
            else:
                out["images"][i], out["fields"][i] = load_model_input(s.path, size, with_mask=True, inset=inset)
        return out

    keys = ("images", "fields", "labels", "masks") if masks else ("images", "fields", "labels")
    return cached_arrays(path, keys, decode)


def subset_summary(samples: Sequence[Sample]) -> str:
    c = Counter(s.label for s in samples)
    return f"{len(samples)} images, {len(c)} classes"
