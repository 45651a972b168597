import numpy as np
import pytest

from engine.overlay import Overlay, class_color
from engine.types import ContentArea, Frame, FrameResult, Prediction, SecondPassResult


def make_result(index=5, untrained=False, second_pass=None, size=(640, 480)):
    w, h = size
    img = np.full((h, w, 3), 90, np.uint8)
    pred = Prediction(("normal", "polyp", "other"), np.array([0.2, 0.7, 0.1], np.float32), "tiny", 3.0)
    return FrameResult(Frame(index, index / 30, img, 0.0), ContentArea.full_frame(w, h), pred,
                       second_pass=second_pass, timings={"decode": 1.0, "inference": 3.0},
                       untrained=untrained, fps=29.5)


def test_default_overlay_draws_the_label_panel_in_place():
    r = make_result()
    before = r.frame.image.copy()
    out = Overlay.default().draw(r.frame.image, r)
    assert out is r.frame.image
    changed = np.any(out != before, axis=2)
    assert changed[:100, :200].mean() > 0.2  # the panel at the top left
    assert changed[200:300, 250:400].mean() == 0  # the middle of the picture is untouched


def test_copy_leaves_the_frame_alone():
    r = make_result()
    before = r.frame.image.copy()
    out = Overlay.default().draw(r.frame.image, r, copy=True)
    assert out is not r.frame.image and np.array_equal(r.frame.image, before)


def test_untrained_banner_only_for_untrained_models():
    a = Overlay.default().draw(make_result().frame.image, make_result())
    r = make_result(untrained=True)
    b = Overlay.default().draw(r.frame.image, r)
    # the banner is red text at the top centre
    top = slice(0, 60), slice(200, 440)
    red = lambda im: ((im[top][..., 2] > 180) & (im[top][..., 1] < 90)).sum()
    assert red(b) > 50 and red(a) == 0


def test_second_pass_mask_and_box_are_drawn():
    mask = np.zeros((480, 640), bool)
    mask[200:300, 300:400] = True
    sp = SecondPassResult(frame_index=2, model="seg", latency_ms=100.0, label="polyp", confidence=0.9,
                          masks=mask[None], boxes=np.array([[300, 200, 400, 300]], float),
                          scores=np.array([0.9]))
    r = make_result(second_pass=sp)
    before = r.frame.image.copy()
    out = Overlay.default(names=["second_pass"]).draw(r.frame.image, r)
    inside = out[240:260, 340:360].astype(int) - before[240:260, 340:360]
    assert np.abs(inside).mean() > 10  # tinted
    assert np.array_equal(out[400:, :250], before[400:, :250])


def test_outline_layer_and_unknown_layers():
    r = make_result()
    o = Overlay.default(outline=True)
    assert [layer.name for layer in o.layers][0] == "content_area"
    with pytest.raises(ValueError, match="unknown overlay layer"):
        Overlay.default(names=["label", "sparkles"])


def test_overlay_works_on_tiny_and_large_frames():
    for size in [(64, 48), (1920, 1080)]:
        r = make_result(size=size)
        Overlay.default(outline=True).draw(r.frame.image, r, shown_index=9)


def test_class_colours_are_stable_and_distinct():
    colours = [class_color(i) for i in range(23)]
    assert colours == [class_color(i) for i in range(23)]
    assert len(set(colours)) == 23
