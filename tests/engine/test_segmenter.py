"""The real-time segmenter in the engine: mask back to frame pixels, Analyzer, overlay, log rows."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analysis.crop import model_input
from engine.analysis.segmenter import Segmenter, to_frame
from engine.backends import open_backend
from engine.errors import BundleError
from engine.overlay import Overlay, Segmentation, draw_mask
from engine.pipeline import Analyzer
from engine.types import ContentArea, Frame, FrameResult, SegmentationResult

from tiny_models import make_tiny_segmenter_bundle, reference_mask


@pytest.fixture(scope="module")
def seg_bundle(tmp_path_factory):
    return make_tiny_segmenter_bundle(tmp_path_factory.mktemp("seg") / "tiny-seg", size=(32, 32),
                                      torchscript=False)


def rect_area(x, y, w, h, fw, fh) -> ContentArea:
    poly = np.array([[x, y], [x + w - 1, y], [x + w - 1, y + h - 1], [x, y + h - 1]], np.int32)
    return ContentArea((x, y, w, h), "rectangle", poly, 1.0, (fw, fh))


def test_to_frame_inverts_the_crop_and_resize():
    area = rect_area(100, 50, 200, 100, 400, 300)
    prob = np.zeros((32, 32), np.float32)
    prob[8:24, 8:24] = 1.0  # the middle half of the model input
    m = to_frame(prob, area)
    assert m.shape == (300, 400) and m.dtype == bool
    ys, xs = np.nonzero(m)
    # the middle half of the bounding box, to within a model pixel (200 / 32 = 6.25 px)
    assert abs(xs.min() - 150) <= 7 and abs(xs.max() - 249) <= 7
    assert abs(ys.min() - 75) <= 4 and abs(ys.max() - 124) <= 4
    assert not m[:50].any() and not m[:, :100].any()


def test_to_frame_cuts_the_mask_to_the_field():
    w = 200
    poly = np.array([[100, 0], [199, 100], [100, 199], [0, 100]], np.int32)  # a diamond field
    area = ContentArea((0, 0, w, w), "octagon", poly, 1.0, (w, w))
    m = to_frame(np.ones((16, 16), np.float32), area)
    assert m[100, 100] and not m[2, 2] and not m[197, 197]
    assert not to_frame(np.zeros((16, 16), np.float32), area).any()


def _bilinear(prob: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resampling written out with numpy: output pixel centres mapped onto the input's
    (src = (dst + 0.5) * in / out - 0.5), clamped at the edges; what an inverse resize must do."""
    def taps(n_out: int, n_in: int):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, fy = taps(height, prob.shape[0])
    x0, x1, fx = taps(width, prob.shape[1])
    p = prob.astype(np.float64)
    top = p[y0][:, x0] * (1 - fx) + p[y0][:, x1] * fx
    bottom = p[y1][:, x0] * (1 - fx) + p[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def test_segmenter_runs_the_bundle_and_maps_back(seg_bundle):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    area = rect_area(20, 10, 120, 100, 160, 120)
    x = model_input(frame, area, (32, 32))
    ref = reference_mask(x[None])[0, 0].astype(np.float64)  # the tiny model's answer, in numpy
    with open_backend(seg_bundle, "onnxruntime") as be:
        seg = Segmenter(seg_bundle, be)
        assert seg.input_size == (32, 32) and seg.label == "polyp"
        prob, _ = seg.probabilities(x)
        np.testing.assert_allclose(prob, ref, atol=1e-5)
        r = seg.segment(x, area)
    assert isinstance(r, SegmentationResult) and r.mask.shape == (120, 160)
    # The expected mask used to come from engine.segmenter.to_frame itself. Built here instead: the
    # reference probabilities resampled to the 120 x 100 box with numpy, thresholded at 0.5 and
    # placed at (20, 10) in an empty 160 x 120 frame (a rectangle field covers its whole box).
    up = _bilinear(ref, 120, 100)
    expected = np.zeros((120, 160), bool)
    expected[10:110, 20:140] = up >= 0.5
    assert up.min() < 0.5 <= up.max()  # the mask is neither empty nor full: the test sees the edge
    near = np.zeros_like(expected)
    near[10:110, 20:140] = np.abs(up - 0.5) < 1e-4  # float32 rounding may tip these either way
    assert np.array_equal(r.mask[~near], expected[~near]) and near.sum() <= 2
    inside = ref[ref >= 0.5]
    assert r.confidence == pytest.approx(inside.mean() if inside.size else ref.max(), abs=1e-5)
    assert r.model == seg_bundle.name and r.latency_ms > 0


def test_segmenter_refuses_a_classify_bundle(tiny_bundle):
    with pytest.raises(BundleError, match="not 'segment'"):
        Segmenter(tiny_bundle, backend=None)


def test_analyzer_puts_the_mask_on_the_frame_result(seg_bundle):
    rng = np.random.default_rng(1)
    frame = Frame(0, 0.0, rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), 0.0)
    with open_backend(seg_bundle, "onnxruntime") as be:
        analyzer = Analyzer(None, segmenter=Segmenter(seg_bundle, be))
        result = analyzer(frame)
    assert analyzer.model is analyzer.segmenter
    assert result.prediction is None and result.segmentation is not None
    assert result.segmentation.mask.shape == (96, 128)
    assert {"crop", "resize", "inference", "mask"} <= set(result.timings)
    row = result.to_log_row()
    assert row["segmentation"]["area"] == result.segmentation.area
    assert row["confidence"] == pytest.approx(result.segmentation.confidence, abs=1e-6)


def test_open_analyzer_runs_a_segment_bundle(seg_bundle):
    from engine.config import load_config
    from engine.runtime import open_analyzer

    config = load_config().override(bundle=seg_bundle.path, backend="onnxruntime", second_pass=None)
    with open_analyzer(config) as analyzer:
        assert analyzer.classifier is None and isinstance(analyzer.segmenter, Segmenter)
        r = analyzer(Frame(0, 0.0, np.full((64, 80, 3), 120, np.uint8), 0.0))
    assert r.segmentation is not None


def _result(mask: np.ndarray, conf: float = 0.87) -> FrameResult:
    h, w = mask.shape
    frame = Frame(3, 0.1, np.full((h, w, 3), 60, np.uint8), 0.0)
    return FrameResult(frame, ContentArea.full_frame(w, h), segmentation=SegmentationResult(mask, conf))


def test_segmentation_layer_fills_outlines_and_labels():
    mask = np.zeros((240, 320), bool)
    mask[80:160, 120:220] = True
    r = _result(mask)
    img = r.frame.image.copy()
    Segmentation().draw(img, r, 3)
    assert (img[120, 170] != 60).any(), "mask not filled"
    assert (img[5:20, 5:40] == 60).all(), "drew far from the mask"
    labelled = img[40:78, 120:260]
    assert (labelled != 60).any(), "no 'polyp NN%' label above the mask"
    assert "segmentation" in {layer.name for layer in Overlay.default().layers}


def test_segmentation_layer_draws_nothing_for_an_empty_mask():
    r = _result(np.zeros((60, 80), bool), 0.2)
    img = r.frame.image.copy()
    Segmentation().draw(img, r, 3)
    assert (img == 60).all()
    assert draw_mask(img, np.zeros((60, 80), bool), (0, 0, 255), 0.5) is None


def test_segmentation_result_validates_and_summarises():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    r = SegmentationResult(m, 0.9)
    assert r.present and r.area == 18 and r.bbox == (3, 2, 6, 3)
    assert r.to_dict()["bbox"] == [3, 2, 6, 3]
    with pytest.raises(ValueError, match="bool"):
        SegmentationResult(m.astype(np.uint8), 0.9)


def test_segmenter_smooths_probability_maps_and_restarts_on_a_new_field(seg_bundle):
    from engine.analysis.classifier import EmaSmoother

    area = rect_area(0, 0, 64, 64, 64, 64)
    moved = rect_area(4, 4, 56, 56, 64, 64)
    a = np.zeros((32, 32, 3), np.uint8)
    b = np.full((32, 32, 3), 255, np.uint8)
    with open_backend(seg_bundle, "onnxruntime") as be:
        plain = Segmenter(seg_bundle, be)
        pa, pb = plain.probabilities(a)[0], plain.probabilities(b)[0]
        seg = Segmenter(seg_bundle, be, EmaSmoother(0.5))
        seg.segment(a, area)
        r = seg.segment(b, area)
        assert r.confidence == pytest.approx(float(plain_conf(0.5 * (pa + pb))), abs=1e-5)
        r = seg.segment(b, moved)  # a new field: no history
        assert r.confidence == pytest.approx(float(plain_conf(pb)), abs=1e-5)
        seg.segment(a, moved, smooth=False)
        seg.reset()
        assert seg._area is None


def plain_conf(prob):
    from engine.analysis.segmenter import confidence

    return confidence(prob.astype(np.float32), 0.5)
