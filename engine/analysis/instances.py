"""The instance-segmenting second pass: the paper's Cascade Mask R-CNN (MMDetection) on one frame.

An "instances" bundle (task ``instances``; see :mod:`engine.bundle`) carries an MMDetection
checkpoint and config (``formats``: ``mmdet``, ``mmdet-config``), written by
``endoview export-seg`` from a ``train segment --arch cascade`` run. MMDetection, mmcv and
mmengine are imported only by :mod:`engine.backends.mmdet`, when such a bundle is opened (the
``seg`` extra).

:class:`InstancePass` crops the frame to the content area's bounding box, blacks out what lies
outside the visible field (as the fast model's input is), hands that crop at its own resolution
to the detector (whose test pipeline resizes it, keeping the aspect ratio, to the bundle's input
size) and maps the instances back into frame pixels: boxes shifted by the crop's origin, masks
placed in a frame-sized array and cut to the field. The detector itself thresholds (score 0.5,
mask 0.45, NMS 0.3 in the paper's config); ``max_instances`` keeps the highest-scoring few.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..backends.mmdet import MMDetDetector
from ..bundle import Bundle
from ..errors import BackendError, BundleError
from ..types import ContentArea, Frame, SecondPassResult

#: crop (H x W x 3 uint8 BGR) -> (masks N x H x W bool, boxes N x 4 float (x1, y1, x2, y2), scores N)
Detector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
MAX_INSTANCES = 10


def field_crop(image_bgr: np.ndarray, area: ContentArea) -> np.ndarray:
    """The frame cut to ``area.bbox`` at full resolution, black outside the visible field (a copy)."""
    x, y, w, h = area.bbox
    crop = image_bgr[y:y + h, x:x + w].copy()
    if area.shape != "full":
        crop[area.mask[y:y + h, x:x + w] == 0] = 0
    return crop


class InstancePass:
    """A second pass that returns instances (masks, boxes, scores) in frame pixels.

    ``detector`` maps a BGR crop to instances in crop pixels (see :data:`Detector`);
    :meth:`from_bundle` builds one over an MMDetection bundle.
    """

    def __init__(self, detector: Detector, name: str, *, label: str = "polyp",
                 max_instances: int = MAX_INSTANCES) -> None:
        self.detector = detector
        self.name = name
        self.label = label
        self.max_instances = max_instances

    @classmethod
    def from_bundle(cls, bundle: Bundle, device: str | None = None, *,
                    score_threshold: float | None = None) -> InstancePass:
        if bundle.task != "instances":
            raise BundleError(f"bundle {bundle.path} has task {bundle.task!r}, not 'instances'")
        if not (bundle.has("mmdet") and bundle.has("mmdet-config")):
            raise BundleError(
                f"bundle {bundle.path} has no MMDetection checkpoint and config; endoview runs "
                "instance segmenters through MMDetection only (ONNX export of Cascade Mask R-CNN "
                "needs mmdeploy); re-export it with 'endoview export-seg RUN_DIR'")
        detector = MMDetDetector(bundle, device, score_threshold=score_threshold)
        return cls(detector, bundle.name, label=bundle.labels[0])

    def __call__(self, frame: Frame, area: ContentArea) -> SecondPassResult:
        t0 = time.perf_counter()
        crop = field_crop(frame.image, area)
        masks, boxes, scores = self.detector(crop)
        masks, boxes, scores = to_frame(masks, boxes, scores, area, self.max_instances)
        ms = (time.perf_counter() - t0) * 1000.0
        if len(scores):
            label, conf = self.label, float(scores[0])
        else:
            label, conf = f"no {self.label}", None
        return SecondPassResult(frame.index, self.name, ms, label=label, confidence=conf,
                                masks=masks, boxes=boxes, scores=scores)


def to_frame(masks: np.ndarray, boxes: np.ndarray, scores: np.ndarray, area: ContentArea,
             max_instances: int = MAX_INSTANCES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances in crop pixels -> frame pixels, best first, at most ``max_instances``.

    Masks become N x H x W bool frame arrays cut to the visible field; boxes are shifted by the
    crop's origin and clipped to the frame.
    """
    x, y, w, h = area.bbox
    fw, fh = area.frame_size
    scores = np.asarray(scores, np.float32).reshape(-1)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    masks = np.asarray(masks)
    n = len(scores)
    if len(boxes) != n or (n and (masks.ndim != 3 or len(masks) != n or masks.shape[1:] != (h, w))):
        raise BackendError(
            f"instance segmenter returned {len(boxes)} boxes, {n} scores and masks of shape "
            f"{masks.shape} for a {w}x{h} crop; expected N boxes, N scores and N x {h} x {w} masks")
    order = np.argsort(-scores, kind="stable")[:max_instances]
    scores, boxes = scores[order], boxes[order] + np.array([x, y, x, y], np.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, fw)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, fh)
    out = np.zeros((len(order), fh, fw), bool)
    for i, k in enumerate(order):
        out[i, y:y + h, x:x + w] = masks[k] != 0
    if area.shape != "full" and len(order):
        out &= area.mask[None] > 0
    return out, boxes, scores
