"""The instance-segmenting second pass: crop, map back to frame pixels, worker, dispatch.

The geometry is tested with a stand-in detector (the contract MMDetection's output is converted
to); the real Cascade Mask R-CNN path is tested in tests/train/test_cascade.py where mmdet is
installed.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from engine.analysis.content_area import detect_content_area
from engine.analysis.instances import InstancePass, field_crop, to_frame
from engine.analysis.second_pass import SecondPassWorker
from engine.bundle import write_bundle
from engine.config import load_config
from engine.errors import BackendError, BundleError
from engine.overlay import Overlay
from engine.runtime import open_second_pass
from engine.types import ContentArea, Frame, FrameResult


def scope_frame(h=120, w=160) -> tuple[np.ndarray, ContentArea]:
    """A round field on black with a bright 'polyp' at (90..110, 50..70)."""
    import cv2

    img = np.zeros((h, w, 3), np.uint8)
    cv2.circle(img, (w // 2 + 10, h // 2), 50, (90, 110, 160), -1)
    img[50:70, 90:110] = (200, 220, 240)
    return img, detect_content_area(img)


class BoxDetector:
    """Finds the brightest square in the crop, like a detector would, and records its input."""

    def __init__(self, score=0.9, extra=0):
        self.score, self.extra, self.crops = score, extra, []

    def __call__(self, crop):
        self.crops.append(crop)
        ys, xs = np.nonzero(crop[..., 2] > 230)
        masks = np.zeros((1 + self.extra, *crop.shape[:2]), bool)
        masks[0, ys, xs] = True
        boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] + [[0, 0, 5, 5]] * self.extra
        scores = [self.score] + [0.6] * self.extra
        return masks, np.array(boxes, np.float32), np.array(scores, np.float32)


def test_the_crop_is_the_field_box_at_full_resolution_black_outside():
    img, area = scope_frame()
    img[0:5, 0:5] = 255  # burned-in text outside the field
    crop = field_crop(img, area)
    x, y, w, h = area.bbox
    assert crop.shape == (h, w, 3)
    inside = area.mask[y:y + h, x:x + w] > 0
    assert not crop[~inside].any() and (crop[inside] == img[y:y + h, x:x + w][inside]).all()


def test_instances_land_on_the_polyp_in_frame_pixels():
    img, area = scope_frame()
    det = BoxDetector()
    r = InstancePass(det, "cascade")(Frame(7, 0.2, img, 0.0), area)
    assert r.frame_index == 7 and r.label == "polyp" and r.confidence == pytest.approx(0.9)
    assert r.boxes.tolist() == [[90, 50, 110, 70]]
    assert r.masks.shape == (1, 120, 160) and r.masks.dtype == bool
    ys, xs = np.nonzero(r.masks[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (50, 69, 90, 109)
    assert r.latency_ms > 0


def test_best_instances_first_and_at_most_max():
    img, area = scope_frame()
    r = InstancePass(BoxDetector(score=0.7, extra=4), "cascade", max_instances=3)(Frame(0, 0, img, 0.0), area)
    assert r.scores.tolist() == pytest.approx([0.7, 0.6, 0.6]) and len(r.masks) == len(r.boxes) == 3


def test_no_instance_says_no_polyp():
    img, area = scope_frame()
    empty = lambda crop: (np.zeros((0, *crop.shape[:2]), bool), np.zeros((0, 4), np.float32),  # noqa: E731
                          np.zeros(0, np.float32))
    r = InstancePass(empty, "cascade")(Frame(0, 0, img, 0.0), area)
    assert r.label == "no polyp" and r.confidence is None and r.masks.shape == (0, 120, 160)


def test_masks_are_cut_to_the_field_and_boxes_clipped_to_the_frame():
    img, area = scope_frame()
    x, y, w, h = area.bbox
    masks = np.ones((1, h, w), bool)
    boxes = np.array([[-20, -20, w + 50, h + 50]], np.float32)
    m, b, s = to_frame(masks, boxes, np.array([0.8]), area)
    assert (m[0] == (area.mask > 0)).all()
    assert b.tolist() == [[max(0, x - 20), max(0, y - 20), min(160, x + w + 50), min(120, y + h + 50)]]


def test_a_detector_answering_nonsense_is_one_clear_error():
    img, area = scope_frame()
    bad = lambda crop: (np.zeros((1, 3, 3), bool), np.zeros((1, 4)), np.ones(1))  # noqa: E731
    with pytest.raises(BackendError, match="expected N boxes, N scores and N x"):
        InstancePass(bad, "cascade")(Frame(0, 0, img, 0.0), area)


def test_the_worker_runs_it_and_the_overlay_draws_masks_boxes_and_age():
    img, area = scope_frame()
    with SecondPassWorker(InstancePass(BoxDetector(), "cascade")) as worker:
        worker.request(Frame(3, 0.1, img, 0.0), area)
        deadline = time.monotonic() + 5
        while worker.latest is None and time.monotonic() < deadline:
            time.sleep(0.01)
    sp = worker.latest
    assert sp is not None and sp.frame_index == 3
    canvas = img.copy()
    result = FrameResult(Frame(9, 0.3, canvas, 0.0), area, second_pass=sp)
    Overlay.default(names=["second_pass"]).draw(canvas, result, shown_index=9)
    out = canvas
    assert (out[50:70, 90:110] != img[50:70, 90:110]).any()  # the mask is tinted
    row = result.to_log_row()
    assert row["second_pass"]["instances"] == 1 and row["second_pass"]["label"] == "polyp"


def test_a_bundle_that_is_not_a_second_pass_is_refused(tmp_path):
    from tiny_models import make_tiny_segmenter_bundle

    seg = make_tiny_segmenter_bundle(tmp_path / "seg", size=(16, 16), torchscript=False)
    with pytest.raises(BundleError, match="a second pass is a classify bundle"):
        with open_second_pass(load_config().override(bundle=seg.path, second_pass=seg.path)):
            pass


def test_only_mmdetection_instance_bundles_run(tmp_path):
    import dataclasses

    b = write_bundle(tmp_path / "c", name="cascade", task="instances", labels=["polyp"], input_size=(64, 64),
                     files={"model.pth": b"w", "config.py": b"model = dict()\n"},
                     formats={"mmdet": "model.pth", "mmdet-config": "config.py"},
                     outputs={"masks": "masks", "boxes": "boxes", "scores": "scores"}, trained=True)
    onnx_only = dataclasses.replace(b, formats={"onnx": "model.onnx"})  # what mmdeploy would write
    with pytest.raises(BundleError, match="through MMDetection only"):
        InstancePass.from_bundle(onnx_only)
    with pytest.raises(BundleError, match="not 'instances'"):
        InstancePass.from_bundle(dataclasses.replace(b, task="segment"))
