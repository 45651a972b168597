"""``endoview eval-seg BUNDLE --images DIR --masks DIR``: the paper's Table 2 columns.

Every image goes through what the viewer does (content area, model input, engine backend, mask
mapped back to frame pixels); the prediction (the union of predicted masks) is compared with the
ground-truth mask at the image's own resolution. Jaccard, F1 (Dice), recall and precision are
computed per image and averaged over images; an empty prediction on a polyp image scores 0 on
all four. Frames per second: model inference alone (``fps``, batch 1, what the paper reports) and
the whole per-frame path (``fps_pipeline``: content area + resize + inference + mask mapping).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.analysis.content_area import detect_content_area
from engine.analysis.crop import model_input
from engine.analysis.instances import InstancePass
from engine.analysis.segmenter import Segmenter
from engine.backends import open_backend, precision_option
from engine.bundle import load_bundle
from engine.errors import BundleError
from engine.types import Frame

from ..errors import DataError, TrainError
from ..images import read_bgr
from .data import read_mask

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
METRICS = ("jaccard", "dice", "recall", "precision")


def image_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The four scores of one image (bool masks of the same shape)."""
    tp = float(np.logical_and(pred, gt).sum())
    fp = float(pred.sum()) - tp
    fn = float(gt.sum()) - tp
    if tp + fp + fn == 0:  # nothing to find, nothing found
        return dict.fromkeys(METRICS, 1.0)
    return {"jaccard": tp / (tp + fp + fn), "dice": 2 * tp / (2 * tp + fp + fn),
            "recall": tp / (tp + fn) if tp + fn else 0.0, "precision": tp / (tp + fp) if tp + fp else 0.0}


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path


def find_pairs(images: str | os.PathLike[str], masks: str | os.PathLike[str],
               names: set[str] | None = None) -> list[Pair]:
    """Image/mask pairs with the same stem; DataError when an image has no mask."""
    idir, mdir = Path(images).expanduser(), Path(masks).expanduser()
    for d, what in ((idir, "--images"), (mdir, "--masks")):
        if not d.is_dir():
            raise DataError(f"{what} folder not found: {d}")
    by_stem = {p.stem: p for p in mdir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs = []
    for p in sorted(idir.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES or (names is not None and p.stem not in names):
            continue
        m = by_stem.get(p.stem)
        if m is None:
            raise DataError(f"{p.name} has no mask in {mdir}")
        pairs.append(Pair(p, m))
    if not pairs:
        raise DataError(f"no images to evaluate in {idir}")
    return pairs


def backend_options(backend: str, threads: int | None, precision: str | None) -> dict[str, Any]:
    """The engine backend's options for an evaluation: ``threads`` where given, and onnxruntime's
    ``precision`` (auto: the bundle's int8 model on the CPU where it has one, as the viewer runs)."""
    return {**({"threads": threads} if threads else {}), **precision_option(backend, precision)}


def evaluate_bundle(bundle_dir: str | os.PathLike[str], pairs: list[Pair], *, backend: str = "onnxruntime",
                    threads: int | None = None, progress: bool = False, device: str | None = None,
                    precision: str | None = None) -> dict[str, Any]:
    """Table 2's columns for a segment bundle (the real-time segmenter, on an engine backend;
    ``precision``: see :func:`backend_options`) or an instances bundle (the Cascade Mask R-CNN
    through MMDetection; ``device`` cpu/cuda)."""
    bundle = load_bundle(bundle_dir)
    if bundle.task not in ("segment", "instances"):
        raise BundleError(f"eval-seg needs a segment or instances bundle; {bundle.path} has task {bundle.task!r}")
    with contextlib.ExitStack() as stack:
        if bundle.task == "segment":
            be = stack.enter_context(open_backend(bundle, backend, **backend_options(backend, threads, precision)))
            predict, info = _segmenter(Segmenter(bundle, be))
            info["model_precision"] = getattr(be, "precision", None) or "fp32"  # "precision" is a metric
        else:
            if threads:
                import torch

                torch.set_num_threads(threads)
            backend = "mmdetection"
            predict, info = _instances(InstancePass.from_bundle(bundle, device))
        it = pairs
        if progress:
            from tqdm import tqdm

            it = tqdm(pairs, desc="eval-seg", unit="img", leave=False)
        scores: list[dict[str, float]] = []
        infer_ms, total_ms = [], []
        for pair in it:
            bgr = read_bgr(pair.image)
            gt = read_mask(pair.mask)
            if gt.shape != bgr.shape[:2]:
                raise DataError(f"{pair.mask} and {pair.image} differ in size")
            t0 = time.perf_counter()
            mask, ms = predict(bgr)
            total_ms.append((time.perf_counter() - t0) * 1000.0)
            infer_ms.append(ms)
            scores.append(image_scores(mask, gt))
    out: dict[str, Any] = {k: float(np.mean([s[k] for s in scores])) for k in METRICS}
    out.update(
        fps=1000.0 / float(np.mean(infer_ms)), images=len(scores),
        fps_pipeline=1000.0 / float(np.mean(total_ms)), inference_ms=float(np.mean(infer_ms)),
        model=bundle.name, backend=backend, **info,
    )
    return out


def _segmenter(seg: Segmenter):
    warm = np.zeros((*seg.input_size, 3), np.uint8)
    for _ in range(3):  # first runs allocate
        seg.probabilities(warm)

    def predict(bgr: np.ndarray) -> tuple[np.ndarray, float]:
        area = detect_content_area(bgr)
        result = seg.segment(model_input(bgr, area, seg.input_size, inset=seg.bundle.inset), area)
        return result.mask, result.latency_ms

    return predict, {"input_size": list(seg.input_size), "threshold": seg.threshold}


def _instances(second_pass: InstancePass):
    """The union of the detector's masks (after its own score and mask thresholds)."""
    def predict(bgr: np.ndarray) -> tuple[np.ndarray, float]:
        area = detect_content_area(bgr)
        r = second_pass(Frame(0, 0.0, bgr, 0.0), area)
        return r.masks.any(axis=0) if len(r.masks) else np.zeros(bgr.shape[:2], bool), r.latency_ms

    return predict, {"input_size": "field crop, resized by the detector",
                     "device": getattr(second_pass.detector, "device", None)}


def fold_names(images_dir: Path, fold: int, split_csv=None, mapping_csv=None) -> set[str]:
    from .data import load_kvasir_seg

    samples = load_kvasir_seg(images_dir.parent, split_csv=split_csv, mapping_csv=mapping_csv)
    names = {s.name for s in samples if s.fold == fold}
    if not names:
        raise TrainError(f"--fold {fold}: no images of that fold")
    return names


def format_table(m: dict[str, Any], title: str) -> str:
    head = f"{'model':<40} {'images':>6} {'Jaccard':>8} {'F1':>8} {'recall':>8} {'precision':>9} {'FPS':>7}"
    row = (f"{title[:40]:<40} {m['images']:>6} {m['jaccard']:>8.3f} {m['dice']:>8.3f} {m['recall']:>8.3f} "
           f"{m['precision']:>9.3f} {m['fps']:>7.1f}")
    size = m["input_size"]
    at = f"{size[0]}x{size[1]}" if isinstance(size, (list, tuple)) else size
    kind = f", {m['model_precision']} model" if m.get("model_precision") == "int8" else ""
    return "\n".join([head, row, f"(whole per-frame path: {m['fps_pipeline']:.1f} FPS; inference "
                                 f"{m['inference_ms']:.2f} ms, {at}{kind})"])


def write_json(m: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(m, indent=2) + "\n", encoding="utf-8")
