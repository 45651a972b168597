"""Per-frame image quality of the endoscopic field: blurred, dark, overexposed.

Three plain measures on the cropped field, downscaled to at most 256 pixels on its longest side
(so the numbers mean the same for a 576p and a 1080p source), inside the field's mask eroded by 3
pixels, the crop's own border counting as outside (the rim between field and black border is the
sharpest edge in any frame and says nothing about focus):

- **sharpness**: the variance of the Laplacian (3 x 3) of the luminance. Motion blur, a smeared
  lens or a scope pressed on the wall wipe out fine detail and the variance collapses.
- **brightness**: the mean luminance (0..255).
- **clipped**: the share of field pixels with at least one channel at 250 or above.

A frame is *blurred* when sharpness < 30, *dark* when brightness < 40, *overexposed* when
clipped >= 0.35 or brightness >= 170. The thresholds were set on the real images of
``../shared/data`` (2,009 frames: all of Kvasir-SEG, the 1,000 polyp-free HyperKvasir lower-GI
frames, the 9 ileum frames), each as it is and degraded three ways, measured through
:class:`QualityChecker` with each image's detected content area:

| measure | originals (2,009) | degraded copies (2,009 each) | flagged |
|---|---|---|---|
| sharpness | 25.7 .. 1374 (next lowest 45.6) | Gaussian blur, sigma 1 % of the longest side: 2.2 .. 6.2 | 1 original, 2,009 blurred |
| brightness | 47.6 .. 164 | darkened to 20 %: 9.2 .. 32.4 | 0 originals, 2,009 dark |
| clipped / brightness | 0 .. 0.327 / up to 164 | gain x3: 0.26 .. 1.0 / 125 .. 251 | 0 originals, 2,007 overexposed |

Brightness splits cleanly (the threshold sits near the geometric middle of its gap). Sharpness
nearly does: the one original under 30 is a soft capsule-camera ileum frame (PillCam, 25.7); the
threshold stays at 30 rather than the gap's middle (12.6) to keep catching moderate blur. (Until
the crop's border counted as outside the field, the field's straight edges lying on it were not
eroded: the rim added to every frame's sharpness, originals 50 .. 1379 and blurred copies up to
18.9, and a detected box a few pixels larger than the field kept a blurred frame "sharp".)
Overexposure does not quite split: red mucosa clips its red channel in normal frames (up to a
third of the field), and tripling the darkest originals (brightness 47) leaves them merely
bright; 2 of the 2,009 tripled frames are missed. A blur a quarter that strong (sigma 0.4 %)
gives 5.1 .. 124 and two thirds of those frames are flagged (332 of every fourth frame's 503). A
darkened frame is usually blurred by this measure too (its detail shrinks with its brightness:
1,847 of 2,009); :attr:`Quality.issue` names the first of dark, overexposed, blurred.

**The shrink.** The field is averaged by a whole factor with OpenCV's fast path, then anti-aliased
(INTER_AREA) the rest of the way to 256 pixels. In the Analyzer an even whole factor starts from the
model inputs' 2 x 2 average of the field (``ModelInputs.half``, shared with the model inputs), so
such a frame's full-resolution field is shrunk once: a factor of 2 is that half itself, 4 is the
half by 2 (the same blocks averaged, rounded twice). An odd factor (3 for a 720p field or the
1280 x 1024 demo clip, 5 for Kvasir-SEG's 1348 x 1070 fields) shrinks from the field itself: from
the half, its blocks would straddle the 2 x 2 pairs and read sharpness 15 to 40 % higher, which the
thresholds above were not set for (measured with ``scripts/quality_thresholds.py``, which runs both
ways on the same frames; the table above is its "direct" way). With the even-only rule, at the
images' own size the 1,974 fields of factor 2 give the same measures and the 11 of factor 4 a
sharpness within 0.4 %; every flag is the same. Scaled to 1080 lines first (every fourth image,
503 fields, as a 1080p source has them): no frame's flags differ in any of the five sets (originals, the three
degradations, the weaker blur), sharpness within 2.8 % (median 0.05 % on the originals),
brightness within 0.3 grey levels.

Speed (one OpenCV thread, on a 2-core machine shared with training jobs; the minimum is what an
idle core gives): the measures on a 256-pixel crop take 0.25 ms (median 0.27 ms; a test holds
them under 3 ms). :meth:`QualityChecker.check` on a whole frame adds the crop's downscale: from
the full field of a Kvasir-SEG image scaled to 1080 lines (1270 x 1080), 2.9 ms in all (2.5 ms at
best on a 1348 x 1070 frame when it was first measured, median 9 ms under a training job's load);
from the shared half, 1.1 ms (plus 0.45 ms for the half itself, which the model inputs need
anyway); at 720 lines (847 x 720, an odd factor) 1.9 ms, from the field itself. Feed
:func:`measure` a 256-pixel crop: at other sizes the sharpness threshold does not hold.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from ..types import ContentArea

WORK_SIZE = 256  # longest side the measures are taken at
RIM = 3  # pixels of the field's edge left out (at WORK_SIZE)


@dataclass(frozen=True)
class QualityThresholds:
    """Where each flag starts (see the module's docstring for how they were set)."""

    min_sharpness: float = 30.0
    min_brightness: float = 40.0
    max_brightness: float = 170.0
    max_clipped: float = 0.35
    clip_level: int = 250

    def __post_init__(self) -> None:
        if not 0 <= self.min_brightness < self.max_brightness <= 255:
            raise ValueError("brightness thresholds must satisfy 0 <= min < max <= 255")
        if not 0 < self.max_clipped <= 1:
            raise ValueError(f"max_clipped is a share in (0, 1], not {self.max_clipped}")
        if not 1 <= self.clip_level <= 255 or self.min_sharpness < 0:
            raise ValueError("clip_level must be in 1..255 and min_sharpness >= 0")


DEFAULT_THRESHOLDS = QualityThresholds()


@dataclass(frozen=True)
class Quality:
    """The measures of one frame and the flags they raise."""

    sharpness: float
    brightness: float
    clipped: float
    blurred: bool
    dark: bool
    overexposed: bool

    @property
    def ok(self) -> bool:
        """Usable: none of the flags."""
        return not (self.blurred or self.dark or self.overexposed)

    @property
    def issue(self) -> str | None:
        """The main problem, for a one-word label: "dark", "overexposed", "blurred" or None."""
        for name in ("dark", "overexposed", "blurred"):
            if getattr(self, name):
                return name
        return None

    def to_dict(self) -> dict:
        """JSON-ready: ``{"ok", "issue", "blurred", "dark", "overexposed", "sharpness", "brightness", "clipped"}``."""
        return {"ok": self.ok, "issue": self.issue, "blurred": self.blurred, "dark": self.dark,
                "overexposed": self.overexposed, "sharpness": round(self.sharpness, 1),
                "brightness": round(self.brightness, 1), "clipped": round(self.clipped, 4)}

    @classmethod
    def from_dict(cls, d: dict) -> Quality:
        return cls(float(d["sharpness"]), float(d["brightness"]), float(d["clipped"]),
                   bool(d["blurred"]), bool(d["dark"]), bool(d["overexposed"]))


def _shrink(image: np.ndarray, size: int, interpolation: int, half=None) -> np.ndarray:
    """``image`` at most ``size`` on its longest side. ``half``: a callable giving ``image``
    averaged over 2 x 2 blocks (engine.analysis.crop.ModelInputs.half), the start instead of
    ``image`` when the whole factor is even."""
    h, w = image.shape[:2]
    if max(h, w) <= size:
        return image
    s = size / max(h, w)
    target = (max(1, round(w * s)), max(1, round(h * s)))
    if interpolation == cv2.INTER_AREA:
        factor = min(w // target[0], h // target[1])
        # an even factor from the frame's shared 2 x 2 average: the same blocks averaged (rounded
        # twice); an odd one from the field itself, whose blocks would straddle the 2 x 2 pairs
        if half is not None and factor >= 2 and factor % 2 == 0:
            image = half()
            factor = min(image.shape[1] // target[0], image.shape[0] // target[1])
        if factor >= 2:  # OpenCV's fast whole-factor path first, as engine.analysis.crop does
            image = cv2.resize(image, None, fx=1.0 / factor, fy=1.0 / factor, interpolation=cv2.INTER_AREA)
    return cv2.resize(image, target, interpolation=interpolation)


def work_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """A field mask (any size, non-zero inside) at the working ``shape`` (h, w), rim eroded, uint8."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be H x W, not shape {m.shape}")
    m = (m > 0).astype(np.uint8) * 255
    if m.shape != shape:
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    # outside the crop counts as outside the field: the field's straight edges lie on the crop's
    # border (OpenCV's default border would leave them uneroded, and a box a few pixels larger than
    # the field would bring the sharp rim back in)
    eroded = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RIM + 1, 2 * RIM + 1)),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return eroded if cv2.countNonZero(eroded) else (m if cv2.countNonZero(m) else None)


def measure(small_bgr: np.ndarray, mask: np.ndarray | None, thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
            *, rgb: bool = False) -> Quality:
    """The measures on an image already at the working size, with a mask from :func:`work_mask`."""
    gray = cv2.cvtColor(small_bgr, cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY)
    lap = cv2.Laplacian(gray, cv2.CV_16S)
    _, std = cv2.meanStdDev(lap, mask=mask)
    brightness = cv2.mean(gray, mask=mask)[0]
    level = thresholds.clip_level - 1
    unclipped = cv2.inRange(small_bgr, (0, 0, 0), (level, level, level))
    if mask is not None:
        total = cv2.countNonZero(mask)
        unclipped = cv2.bitwise_and(unclipped, mask)
    else:
        total = gray.size
    clipped = 1.0 - cv2.countNonZero(unclipped) / max(total, 1)
    sharpness = float(std[0, 0]) ** 2
    t = thresholds
    return Quality(sharpness, float(brightness), float(clipped),
                   blurred=sharpness < t.min_sharpness, dark=brightness < t.min_brightness,
                   overexposed=clipped >= t.max_clipped or brightness >= t.max_brightness)


def assess(field_bgr: np.ndarray, mask: np.ndarray | None = None,
           thresholds: QualityThresholds = DEFAULT_THRESHOLDS, *, rgb: bool = False) -> Quality:
    """The quality of a cropped field (H x W x 3 uint8, BGR; ``rgb=True`` for a model input).

    mask: H x W, non-zero inside the field (a round or octagonal field's corners are black and
    must not count); None: the whole image is field. Larger images are downscaled to 256 pixels
    on the longest side first. For a stream of frames with a stable field use
    :class:`QualityChecker`, which keeps the working mask.
    """
    image = np.asarray(field_bgr)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"field must be H x W x 3 uint8, not {image.dtype} {image.shape}")
    if mask is not None and np.shape(mask)[:2] != image.shape[:2]:
        raise ValueError(f"mask {np.shape(mask)} does not match the field {image.shape[:2]}")
    small = _shrink(image, WORK_SIZE, cv2.INTER_AREA)
    return measure(small, work_mask(mask, small.shape[:2]), thresholds, rgb=rgb)


class QualityChecker:
    """Quality of whole frames with their content area: crops, downscales and measures.

    ``check(frame, area)`` keeps the working mask of the last few content areas (the area changes
    rarely), so a frame costs one crop-and-resize and the three measures.
    """

    def __init__(self, thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> None:
        self.thresholds = thresholds
        self._masks: OrderedDict[tuple, np.ndarray | None] = OrderedDict()

    def _mask(self, area: ContentArea, shape: tuple[int, int]) -> np.ndarray | None:
        key = (area, shape)  # a ContentArea hashes by identity; keeping it here keeps its id unique
        if key not in self._masks:
            x, y, w, h = area.bbox
            full = None if area.shape == "full" else area.mask[y:y + h, x:x + w]
            self._masks[key] = work_mask(full, shape)
            while len(self._masks) > 4:
                self._masks.popitem(last=False)
        return self._masks[key]

    def check(self, image_bgr: np.ndarray, area: ContentArea | None = None, inputs=None) -> Quality:
        """The quality of ``image_bgr`` (a whole frame) inside ``area`` (None: the whole frame).

        ``inputs``: the frame's :class:`engine.analysis.crop.ModelInputs` over ``area``; the
        shrink then starts from its 2 x 2 average of the field (shared with the model inputs)
        instead of the full-resolution field, when the whole factor to the working size is even.
        """
        image = np.asarray(image_bgr)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame must be H x W x 3 uint8, not {image.dtype} {image.shape}")
        if area is None:
            return assess(image, None, self.thresholds)
        if inputs is not None and inputs.area is not area:
            raise ValueError("the model inputs were made over another content area than the one given")
        x, y, w, h = area.bbox
        half = None if inputs is None else (lambda: inputs.half)
        small = _shrink(image[y:y + h, x:x + w], WORK_SIZE, cv2.INTER_AREA, half)
        return measure(small, self._mask(area, small.shape[:2]), self.thresholds)
