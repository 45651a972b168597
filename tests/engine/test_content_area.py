"""Content-area detection, tracking, model input and de-identification on synthetic frames."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from engine.analysis.content_area import detect_content_area
from engine.analysis.crop import deidentify, model_input
from engine.analysis.tracker import ContentAreaTracker
from engine.errors import ContentAreaError
from engine.types import ContentArea

SIZES = [(640, 480), (720, 576), (1920, 1080)]


# ------------------------------------------------------------------------------------ drawing


def _tissue(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Reddish textured field with two dark shadows (one touching the field's outline)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    noise = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 2] = 150 + 0.35 * noise[..., 0]  # R
    img[..., 1] = 70 + 0.25 * noise[..., 1]  # G
    img[..., 0] = 50 + 0.2 * noise[..., 2]  # B
    img = np.clip(img, 0, 255).astype(np.uint8)
    # shadowed lumen inside (very dark but not black), and a shadow at the right edge
    cv2.ellipse(img, (width // 2, height // 2), (width // 8, height // 7), 20, 0, 360, (12, 14, 30), -1)
    cv2.ellipse(img, (int(width * 0.93), height // 2), (width // 10, height // 10), 0, 0, 360,
                (14, 16, 32), -1)
    return img


def _octagon(width: int, height: int) -> np.ndarray:
    w, h = width, height
    x0, x1, y0, y1 = int(0.12 * w), int(0.88 * w), int(0.04 * h), int(0.96 * h)
    c = int(0.17 * (y1 - y0))
    return np.array([[x0 + c, y0], [x1 - c, y0], [x1, y0 + c], [x1, y1 - c], [x1 - c, y1],
                     [x0 + c, y1], [x0, y1 - c], [x0, y0 + c]], np.int32)


def _circle(width: int, height: int) -> np.ndarray:
    cx, cy, r = width / 2, height / 2, 0.46 * height
    t = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    return np.round(np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t)])).astype(np.int32)


def _rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.int32)


def _frame(width: int, height: int, truth: np.ndarray, *, text: bool = True,
           thumbnail: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic processor frame: tissue inside ``truth`` (polygon), black outside, text."""
    truth_mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(truth_mask, [truth.reshape(-1, 1, 2)], 255)
    img = np.zeros((height, width, 3), np.uint8)
    tissue = _tissue(width, height, seed)
    img[truth_mask > 0] = tissue[truth_mask > 0]
    xs, ys = truth[:, 0], truth[:, 1]
    if text:
        scale = height / 900
        font = cv2.FONT_HERSHEY_SIMPLEX
        for i, line in enumerate(["ID: 0042", "Name: DOE^JANE", "Sex: F  Age: 61", "12/03/2024"]):
            cv2.putText(img, line, (4, int(40 * scale) + i * int(36 * scale)), font, scale,
                        (255, 255, 255), max(1, round(2 * scale)))
        cv2.putText(img, "CVP:3 Eh:A1", (int(width * 0.8), height - int(14 * scale)), font, scale,
                    (60, 255, 60), max(1, round(2 * scale)))
        # text glued to the field's left outline
        cv2.putText(img, "00:12:31", (max(2, int(xs.min()) - int(60 * scale)), height // 3), font,
                    scale, (255, 255, 255), max(1, round(2 * scale)))
    if thumbnail:
        # scope-position thumbnail (teal, with a dark curve) in the bottom-left, overlapping the field
        tw, th = int(0.17 * width), int(0.22 * height)
        x0, y1 = max(0, int(xs.min()) - int(0.02 * width)), min(height - 1, int(ys.max()))
        cv2.rectangle(img, (x0, y1 - th), (x0 + tw, y1), (150, 170, 20), -1)
        cv2.ellipse(img, (x0 + tw // 2, y1 - th // 2), (tw // 4, th // 3), 0, 30, 330, (20, 20, 20), 2)
    return img, truth_mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b)))


# ------------------------------------------------------------------------------------ detection


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("thumbnail", [False, True], ids=["plain", "thumbnail"])
@pytest.mark.parametrize("kind", ["octagon", "circle"])
def test_octagon_and_circle_fields(kind, size, thumbnail):
    width, height = size
    truth = _octagon(width, height) if kind == "octagon" else _circle(width, height)
    img, truth_mask = _frame(width, height, truth, thumbnail=thumbnail)
    area = detect_content_area(img)
    assert area.shape == kind
    assert area.frame_size == (width, height)
    assert _iou(area.mask, truth_mask) >= 0.97
    assert area.confidence >= 0.8
    # nothing of the field is cut off, and the text in the black corners stays outside
    assert np.count_nonzero((truth_mask > 0) & (area.mask == 0)) <= 0.01 * np.count_nonzero(truth_mask)
    assert area.mask[: int(0.2 * height), : int(0.06 * width)].max() == 0
    x, y, w, h = area.bbox
    tx0, ty0 = truth[:, 0].min(), truth[:, 1].min()
    tx1, ty1 = truth[:, 0].max(), truth[:, 1].max()
    tol = 0.012 * max(width, height)
    assert abs(x - tx0) <= tol and abs(y - ty0) <= tol
    assert abs(x + w - 1 - tx1) <= tol and abs(y + h - 1 - ty1) <= tol


def test_thumbnail_is_cut_off():
    width, height = 1280, 720
    truth = _octagon(width, height)
    img, truth_mask = _frame(width, height, truth, thumbnail=True)
    area = detect_content_area(img)
    # the thumbnail reaches left of the field: that part must be outside, the field's bbox unchanged
    assert area.bbox[0] >= truth[:, 0].min() - 0.012 * width
    thumb_left = (slice(height - 20, height - 10), slice(int(truth[:, 0].min()) - 20, int(truth[:, 0].min()) - 8))
    assert area.mask[thumb_left].max() == 0
    assert _iou(area.mask, truth_mask) >= 0.97


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_letterbox_and_pillarbox(size):
    width, height = size
    letter = _rect(0, int(0.12 * height), width - 1, int(0.88 * height))
    pillar = _rect(int(0.15 * width), 0, int(0.85 * width), height - 1)
    for truth in (letter, pillar):
        img, truth_mask = _frame(width, height, truth, text=False)
        # text in the bars
        cv2.putText(img, "12:01:33", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
        area = detect_content_area(img)
        assert area.shape == "rectangle"
        assert _iou(area.mask, truth_mask) >= 0.97
        assert np.count_nonzero((truth_mask > 0) & (area.mask == 0)) <= 0.005 * truth_mask.size


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_border_is_full(size):
    width, height = size
    img = _tissue(width, height, seed=3)
    area = detect_content_area(img)
    assert area.shape == "full"
    assert area.bbox == (0, 0, width, height)
    assert area.confidence >= 0.8


@pytest.mark.parametrize(
    "image",
    [np.zeros((480, 640, 3), np.uint8), np.full((480, 640, 3), 255, np.uint8),
     np.full((480, 640, 3), 90, np.uint8), np.zeros((1, 1, 3), np.uint8),
     np.full((3, 7, 3), 200, np.uint8)],
    ids=["black", "white", "grey", "1x1", "3x7"],
)
def test_degenerate_frames_give_full_frame_low_confidence(image):
    area = detect_content_area(image)
    assert area.shape == "full"
    assert area.bbox == (0, 0, image.shape[1], image.shape[0])
    assert area.confidence <= 0.1


@pytest.mark.parametrize(
    "bad, words",
    [(np.zeros((480, 640), np.uint8), "H x W x 3"),
     (np.zeros((480, 640, 4), np.uint8), "H x W x 3"),
     (np.zeros((480, 640, 3), np.float32), "uint8"),
     (np.zeros((0, 640, 3), np.uint8), "empty"),
     ([[0, 0, 0]], "numpy")],
    ids=["grey-2d", "bgra", "float", "empty", "list"],
)
def test_invalid_input_raises(bad, words):
    with pytest.raises(ContentAreaError, match=words):
        detect_content_area(bad)


# ------------------------------------------------------------------------------------ model input


def test_model_input_rgb_size_and_black_outside():
    width, height = 1280, 720
    truth = _octagon(width, height)
    img, _ = _frame(width, height, truth)
    # a pure blue (BGR) patch in the middle of the field
    cv2.rectangle(img, (600, 320), (680, 400), (255, 0, 0), -1)
    area = detect_content_area(img)
    out = model_input(img, area, (224, 256))
    assert out.shape == (224, 256, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    x, y, w, h = area.bbox
    cy = round((360 - y + 0.5) * 224 / h - 0.5)
    cx = round((640 - x + 0.5) * 256 / w - 0.5)
    assert tuple(out[cy, cx]) == (0, 0, 255)  # RGB: blue is the last channel
    # the cut corners are black, the field is not
    assert out[:4, :4].max() == 0 and out[-4:, -4:].max() == 0
    assert out[112, 20:236].min(axis=0).max() > 0
    # mask=False keeps the corners. (This was `.max() >= 0`, true of any uint8 image; and the frame
    # is black outside the field anyway, so paint the outside pure green first: mask=False must
    # keep that colour in the cut corners, where mask=True blacked it out.)
    green = img.copy()
    green[area.mask == 0] = (0, 255, 0)
    kept = model_input(green, area, (224, 256), mask=False)
    assert (kept[:4, :4] == (0, 255, 0)).all() and (kept[-4:, -4:] == (0, 255, 0)).all()
    assert model_input(green, area, (224, 256))[:4, :4].max() == 0
    # enlarging works too
    assert model_input(img[:100, :100].copy(), ContentArea.full_frame(100, 100), (224, 224)).shape == (224, 224, 3)


def test_model_input_checks_and_caches():
    img, _ = _frame(640, 480, _octagon(640, 480))
    area = detect_content_area(img)
    a = model_input(img, area, (64, 64))
    b = model_input(img, area, (64, 64))
    assert np.array_equal(a, b)
    with pytest.raises(ContentAreaError, match="re-estimate"):
        model_input(np.zeros((240, 320, 3), np.uint8), area, (64, 64))
    with pytest.raises(ContentAreaError, match="height, width"):
        model_input(img, area, 64)


def test_deidentify():
    img, truth_mask = _frame(640, 480, _octagon(640, 480))
    area = detect_content_area(img)
    out = deidentify(img, area)
    assert out is not img
    assert out[area.mask == 0].max() == 0
    assert np.array_equal(out[area.mask > 0], img[area.mask > 0])
    same = deidentify(img, area, inplace=True)
    assert same is img and img[:30, :30].max() == 0


# ------------------------------------------------------------------------------------ tracker


def _noisy(img: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


def test_tracker_is_stable_under_noise():
    img, _ = _frame(640, 480, _octagon(640, 480))
    tracker = ContentAreaTracker(every=5, tolerance=0.02, confirm=2)
    first = tracker.update(img, 0)
    for i in range(1, 60):
        assert tracker.update(_noisy(img, i), i) is first
    assert tracker.estimates == 12  # once at the start, then every 5 frames


def test_tracker_switches_after_confirm_estimates():
    width, height = 640, 480
    wide, _ = _frame(width, height, _octagon(width, height))
    narrow, _ = _frame(width, height, _circle(width, height))
    tracker = ContentAreaTracker(every=10, tolerance=0.02, confirm=2)
    first = tracker.update(wide, 0)
    assert first.shape == "octagon"
    assert tracker.update(narrow, 5) is first  # not yet re-estimated
    assert tracker.update(narrow, 10) is first  # one differing estimate: pending
    switched = tracker.update(narrow, 20)  # second in a row: accepted
    assert switched is not first and switched.shape == "circle"
    assert tracker.update(narrow, 25) is switched


def test_tracker_one_off_change_is_ignored():
    width, height = 640, 480
    wide, _ = _frame(width, height, _octagon(width, height))
    narrow, _ = _frame(width, height, _circle(width, height))
    tracker = ContentAreaTracker(every=1, confirm=3)
    first = tracker.update(wide, 0)
    assert tracker.update(narrow, 1) is first
    assert tracker.update(narrow, 2) is first
    assert tracker.update(wide, 3) is first  # back to the old border: the pending change is dropped
    assert tracker.update(narrow, 4) is first


def test_tracker_reacts_at_once_to_a_size_change_and_resets():
    small, _ = _frame(640, 480, _octagon(640, 480))
    big, _ = _frame(1280, 720, _circle(1280, 720))
    tracker = ContentAreaTracker(every=100)
    a = tracker.update(small, 0)
    b = tracker.update(big, 1)
    assert b is not a and b.frame_size == (1280, 720) and b.shape == "circle"
    tracker.reset()
    assert tracker.current is None
    assert tracker.update(small, 2).frame_size == (640, 480)


def test_tracker_ignores_a_black_frame():
    img, _ = _frame(640, 480, _octagon(640, 480))
    tracker = ContentAreaTracker(every=1, confirm=1)
    first = tracker.update(img, 0)
    assert tracker.update(np.zeros_like(img), 1) is first


def test_tracker_rejects_bad_settings():
    with pytest.raises(ValueError, match="every"):
        ContentAreaTracker(every=0)


def test_tracker_background_mode_estimates_off_the_caller_thread():
    import threading
    import time

    width, height = 640, 480
    small, _ = _frame(width, height, _octagon(width, height))
    tracker = ContentAreaTracker(every=5, confirm=1)
    tracker.set_background(True)
    first = tracker.update(small, 0)
    assert tracker.estimates == 1  # the first estimate is synchronous
    # the scope changes: a smaller octagon; the change arrives a few frames later, from the worker
    poly = _octagon(width, height)
    centre = poly.mean(axis=0)
    shrunk, _ = _frame(width, height, ((poly - centre) * 0.7 + centre).astype(np.int32))
    seen = []
    for i in range(1, 60):
        seen.append(tracker.update(shrunk, i))
        time.sleep(0.002)
    assert seen[0] is first  # never blocks on a detection: the old area until the new one is in
    assert seen[-1] is not first and seen[-1].bbox[2] < first.bbox[2]
    tracker.set_background(False)
    assert not [t for t in threading.enumerate() if t.name.startswith("endoview-content-area")]


def test_the_background_re_estimates_run_at_a_lower_priority():
    """A re-estimate waits for the frame being analysed (Linux: per-thread niceness)."""
    import os
    import threading

    from engine.analysis.tracker import BACKGROUND_NICENESS

    if not hasattr(os, "setpriority"):
        pytest.skip("no setpriority here")
    width, height = 320, 240
    image, _ = _frame(width, height, _octagon(width, height))
    tracker = ContentAreaTracker(every=1, confirm=1)
    tracker.set_background(True)
    tracker.update(image, 0)
    tracker.update(image, 1)  # a periodic re-estimate: starts the worker
    niceness = tracker._executor.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    assert niceness == min(19, os.getpriority(os.PRIO_PROCESS, 0) + BACKGROUND_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < niceness  # the caller is left as it was
    tracker.set_background(False)


# ------------------------------------------------------------------- model inputs of one frame

MODEL_SIZES = [(128, 128), (160, 160)]  # the default classifier's and segmenter's inputs


def _model_inputs_agree(img: np.ndarray, area: ContentArea) -> tuple[int, float, bool]:
    """Largest difference between ModelInputs and model_input over MODEL_SIZES, the share of
    values more than one grey level apart, and whether the shared 2x2 shrink was used."""
    from engine.analysis.crop import ModelInputs

    inputs = ModelInputs(img, area, MODEL_SIZES)
    worst, over, n = 0, 0, 0
    for size in MODEL_SIZES:
        got = inputs.get(size, inset=(0.0, 0.64, 0.36, 1.0))
        want = model_input(img, area, size, inset=(0.0, 0.64, 0.36, 1.0))
        assert got.shape == want.shape and got.dtype == want.dtype and got.flags.c_contiguous
        assert inputs.get(size, inset=(0.0, 0.64, 0.36, 1.0)) is got  # computed once
        diff = np.abs(got.astype(int) - want)
        worst, over, n = max(worst, int(diff.max())), over + int((diff > 1).sum()), n + diff.size
    return worst, over / n, bool(inputs._halves)


@pytest.mark.parametrize("size", SIZES + [(1280, 1024), (1351, 1013), (333, 251)])
def test_model_inputs_within_one_grey_level_of_model_input(size):
    """Both models' inputs from one shared 2x2 shrink stay within one grey level of model_input
    (the sums are rounded twice), whatever the field's size, odd edges included; a rounding tie
    in the last resize can make that two, in about one value in 100,000."""
    w, h = size
    img, _ = _frame(w, h, _octagon(w, h))
    for area in (detect_content_area(img), ContentArea.full_frame(w, h)):
        worst, over, _ = _model_inputs_agree(img, area)
        assert worst <= 2 and over < 1e-4


def test_model_inputs_without_sizes_is_model_input():
    """Without the sizes up front there is nothing to share: exactly model_input (training's)."""
    from engine.analysis.crop import ModelInputs

    img = _tissue(1920, 1080)
    area = ContentArea.full_frame(1920, 1080)
    for size in MODEL_SIZES:
        assert np.array_equal(ModelInputs(img, area).get(size), model_input(img, area, size))


def test_model_inputs_real_frames(data_dir):
    """On real endoscopy images, at their own size and scaled to 1080 and 720 lines: within one
    grey level of model_input, and the shared shrink is used on most of them."""
    files = sorted((data_dir / "kvasir-seg" / "images").glob("*.jpg"))[:12]
    files += sorted((data_dir / "hyperkvasir-lower-gi").rglob("*.jpg"))[:12]
    if not files:
        pytest.skip(f"no images under {data_dir}")
    shared = total = 0
    for path in files:
        img = cv2.imread(str(path))
        for lines in (None, 1080, 720):
            im = img if lines is None else cv2.resize(img, None, fx=lines / img.shape[0], fy=lines / img.shape[0])
            worst, over, used = _model_inputs_agree(im, detect_content_area(im))
            assert worst <= 2 and over < 1e-4, path
            shared += used
            total += 1
    assert shared >= total // 3
