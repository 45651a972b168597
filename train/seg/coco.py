"""Kvasir-SEG as COCO instance annotations, one file per official fold (for MMDetection).

One instance per connected region (8-connectivity) of the thresholded mask, stored as
uncompressed COCO RLE (``{"size": [h, w], "counts": [...]}``, column-major, starting with a run
of zeros; pycocotools and MMDetection read it), with its box and area. Images keep their size but
get the engine's black-border masking (:func:`engine.analysis.crop.deidentify`: black outside the
visible field), and mask pixels outside the field are dropped, so the detector sees what the
viewer gives it. Every instance box is checked against Kvasir-SEG's ``kavsir_bboxes.json``
(its ``xmin``/``ymin`` lie one pixel outside the region): the IoU with the best-matching box is
stored in the annotation as ``kvasir_bbox_iou`` and summarised in the file's ``info``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.analysis.content_area import detect_content_area
from engine.analysis.crop import deidentify

from ..errors import DataError
from ..images import read_bgr
from .data import SegSample, load_kvasir_seg, read_mask

log = logging.getLogger(__name__)

CATEGORIES = [{"id": 1, "name": "polyp", "supercategory": "polyp"}]
#: Regions at least this large (pixels) must match a box of kavsir_bboxes.json.
CHECK_MIN_AREA = 400
CHECK_MIN_IOU = 0.8


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE of an H x W bool mask."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    if flat.size != h * w:
        raise DataError(f"RLE counts sum to {flat.size}, not {h}x{w}")
    return flat.reshape((h, w), order="F")


def regions(mask: np.ndarray) -> list[tuple[np.ndarray, list[int], int]]:
    """Connected regions of a bool mask: (region mask, [x, y, w, h], area), largest first."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = [(labels == i, [int(v) for v in stats[i, :4]], int(stats[i, 4])) for i in range(1, n)]
    return sorted(out, key=lambda r: -r[2])


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x, y, w, h] boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def kvasir_boxes(entry: dict[str, Any]) -> list[list[int]]:
    """kavsir_bboxes.json boxes as [x, y, w, h] in our pixel convention (its xmin/ymin are x-1, y-1)."""
    return [[b["xmin"] + 1, b["ymin"] + 1, b["xmax"] - b["xmin"] - 1, b["ymax"] - b["ymin"] - 1]
            for b in entry.get("bbox", [])]


def sample_annotations(sample: SegSample, *, masking: bool = True) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(image as the detector sees it, the field-masked polyp mask, [instance dicts without ids])."""
    bgr = read_bgr(sample.image)
    mask = read_mask(sample.mask)
    if mask.shape != bgr.shape[:2]:
        raise DataError(f"{sample.mask} and {sample.image} differ in size")
    if masking:
        area = detect_content_area(bgr)
        if area.shape != "full":
            bgr = deidentify(bgr, area)
            mask = mask & (area.mask > 0)
    anns = [{"segmentation": rle_encode(m), "bbox": box, "area": a, "iscrowd": 0, "category_id": 1}
            for m, box, a in regions(mask)]
    return bgr, mask, anns


def build_coco(samples: Sequence[SegSample], *, bboxes: dict[str, Any] | None = None,
               image_dir: Path | None = None, masking: bool = True) -> dict[str, Any]:
    """A COCO dict for ``samples``; with ``image_dir`` the masked images are written there."""
    images, annotations = [], []
    checked = matched = 0
    for i, s in enumerate(samples, start=1):
        bgr, _, anns = sample_annotations(s, masking=masking)
        file_name = f"{s.name}.jpg"
        if image_dir is not None:
            image_dir.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(image_dir / file_name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 98]):
                raise DataError(f"cannot write {image_dir / file_name}")
        images.append({"id": i, "file_name": file_name, "height": int(bgr.shape[0]), "width": int(bgr.shape[1]),
                       "kvasir_seg_name": s.name, "hyperkvasir_uuid": s.uuid, "fold": s.fold})
        ref = kvasir_boxes(bboxes[s.name]) if bboxes is not None and s.name in bboxes else None
        for ann in anns:
            ann.update(id=len(annotations) + 1, image_id=i)
            if ref is not None:
                ann["kvasir_bbox_iou"] = round(max((box_iou(ann["bbox"], r) for r in ref), default=0.0), 4)
                if ann["area"] >= CHECK_MIN_AREA:
                    checked += 1
                    matched += ann["kvasir_bbox_iou"] >= CHECK_MIN_IOU
            annotations.append(ann)
    info = {"description": "Kvasir-SEG polyps, one instance per connected region, black border masked",
            "images": len(images), "instances": len(annotations),
            "bbox_check": {"min_area": CHECK_MIN_AREA, "min_iou": CHECK_MIN_IOU, "checked": checked,
                           "matched": matched}}
    return {"info": info, "images": images, "annotations": annotations, "categories": CATEGORIES}


def write_coco(data: str | os.PathLike[str], out: str | os.PathLike[str], *, split_csv=None, mapping_csv=None,
               masking: bool = True) -> dict[int, Path]:
    """``out/images/*.jpg`` (masked) and ``out/annotations/fold<K>.json`` per fold; returns the files."""
    samples = load_kvasir_seg(data, split_csv=split_csv, mapping_csv=mapping_csv)
    root = samples[0].image.parent.parent
    bboxes_path = root / "kavsir_bboxes.json"
    bboxes = json.loads(bboxes_path.read_text(encoding="utf-8")) if bboxes_path.is_file() else None
    if bboxes is None:
        log.warning("%s not found: boxes are not checked", bboxes_path)
    out = Path(out).expanduser()
    written = {}
    for k in sorted({s.fold for s in samples}):
        coco = build_coco([s for s in samples if s.fold == k], bboxes=bboxes, image_dir=out / "images",
                          masking=masking)
        path = out / "annotations" / f"fold{k}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(coco), encoding="utf-8")
        os.replace(tmp, path)
        c = coco["info"]["bbox_check"]
        log.info("fold %d: %d images, %d instances; %d of %d regions >= %d px match a kavsir box (IoU >= %.2f)",
                 k, len(coco["images"]), len(coco["annotations"]), c["matched"], c["checked"], c["min_area"],
                 c["min_iou"])
        written[k] = path
    return written
