"""Model input and de-identification over a content area.

``model_input`` crops, resizes and masks a frame for a model (uint8 RGB), the same function in
training and at inference; ``ModelInputs`` gives one frame's inputs for several models, sharing
the costly first shrink of the full-resolution field between them; ``blank_inset`` blacks out the scope-guide inset a model's manifest
names; ``deidentify`` blacks out everything outside the field (burned-in patient text lies there).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import cv2
import numpy as np

from engine.analysis.content_area import check_image
from engine.errors import ContentAreaError
from engine.types import ContentArea

__all__ = ["SCOPE_GUIDE_INSET", "ModelInputs", "blank_inset", "deidentify", "inset_pixels", "model_input"]

#: The scope-guide inset: a box in the bottom-left corner of the field's bounding box, as fractions
#: (x0, y0, x1, y1) of the model input. Olympus processors draw the ScopeGuide there (a green box
#: with the scope's shape); some archives paint it black. Measured on the model inputs of the shared
#: data: Kvasir-SEG's green insets end at x 0.325 and start at y 0.67, HyperKvasir's painted boxes
#: end at x 0.32 and start at y 0.69; the box keeps a margin around both. Models whose manifest
#: names it (``input.inset``) see this box black in every image, in training and at inference, so
#: neither a green inset nor a black one can tell them anything.
SCOPE_GUIDE_INSET = (0.0, 0.64, 0.36, 1.0)


def _check_area(image: np.ndarray, area: ContentArea) -> None:
    if not isinstance(area, ContentArea):
        raise ContentAreaError(f"content area: expected a ContentArea, got {type(area).__name__}")
    size = (image.shape[1], image.shape[0])
    if size != tuple(area.frame_size):
        raise ContentAreaError(
            f"content area was estimated on a {area.frame_size[0]}x{area.frame_size[1]} frame but the "
            f"image is {size[0]}x{size[1]}; re-estimate it (ContentAreaTracker does so on a size change)"
        )


_MASK_CACHE: OrderedDict[tuple[ContentArea, tuple[int, int]], np.ndarray] = OrderedDict()
_MASK_CACHE_SIZE = 16


def _model_mask(area: ContentArea, size: tuple[int, int]) -> np.ndarray:
    """The field mask for the model: (h, w, 3) uint8 0/255 over the bbox, cached per (area, size)."""
    key = (area, size)  # ContentArea hashes by identity (eq=False)
    mask = _MASK_CACHE.get(key)
    if mask is not None:
        _MASK_CACHE.move_to_end(key)
        return mask
    h, w = size
    x, y, bw, bh = area.bbox
    # draw the polygon straight at the model's resolution (exact, no resampling blur)
    poly = area.polygon.astype(np.float64)
    poly[:, 0] = (poly[:, 0] - x + 0.5) * (w / bw) - 0.5
    poly[:, 1] = (poly[:, 1] - y + 0.5) * (h / bh) - 0.5
    mask = np.zeros((h, w), np.uint8)
    shift = 4
    cv2.fillPoly(mask, [np.round(poly * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)], 255,
                 lineType=cv2.LINE_8, shift=shift)
    mask = cv2.merge([mask, mask, mask])
    mask.setflags(write=False)
    _MASK_CACHE[key] = mask
    if len(_MASK_CACHE) > _MASK_CACHE_SIZE:
        _MASK_CACHE.popitem(last=False)
    return mask


def inset_pixels(inset: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The inset box in pixels (x0, y0, x1, y1; end exclusive) of an image of ``size`` = (height, width)."""
    h, w = size
    x0, y0, x1, y1 = inset
    return int(round(x0 * w)), int(round(y0 * h)), int(round(x1 * w)), int(round(y1 * h))


def blank_inset(image: np.ndarray, inset: tuple[float, float, float, float] | None) -> np.ndarray:
    """Black out the ``inset`` box of a model-sized image (H x W or H x W x C), in place; returns it."""
    if inset is not None:
        x0, y0, x1, y1 = inset_pixels(inset, image.shape[:2])
        image[y0:y1, x0:x1] = 0
    return image


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError) as err:
        raise ContentAreaError(f"model input size must be (height, width), got {size!r}") from err
    if h < 1 or w < 1:
        raise ContentAreaError(f"model input size must be positive, got {size!r}")
    return h, w


def _whole_factor(size: tuple[int, int], bw: int, bh: int) -> int:
    """The whole factor a (bw x bh) crop is first averaged by on its way to ``size`` (1: none)."""
    h, w = size
    if w * h >= bw * bh:
        return 1
    factor = min(bw // w, bh // h)
    return factor if factor >= 2 else 1


def _shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks (INTER_AREA by a whole factor: OpenCV's fast path)."""
    return cv2.resize(image, None, fx=1.0 / factor, fy=1.0 / factor, interpolation=cv2.INTER_AREA)


class ModelInputs:
    """The model inputs of one frame: ``get(size, inset=...)`` is ``model_input`` of the frame,
    computed once per (size, mask, inset).

    Shrinking the full-resolution field is most of the cost: ``model_input`` first averages it by
    a whole factor (8 for 128 px, 6 for 160 px on a 1080p field) with OpenCV's fast path, whose
    2x2 average is several times faster than its other factors. For the ``sizes`` given (those the
    frame will be asked for), an even factor is done as a 2x2 average of the field, computed once
    for every such size, then the rest of the factor: the same pixels averaged with equal weights,
    rounded twice instead of once, so within one grey level of ``model_input``. A size with an odd
    factor, or whose blocks would split a 2x2 pair at the field's edge, goes the plain way.
    """

    def __init__(self, image_bgr: np.ndarray, area: ContentArea, sizes=()) -> None:
        image = check_image(image_bgr)
        _check_area(image, area)
        self.area = area
        x, y, bw, bh = area.bbox
        self._crop = image[y : y + bh, x : x + bw]
        self._inputs: dict[tuple, np.ndarray] = {}
        self._halves: dict[tuple[int, int], tuple[int, int, int]] = {}  # size -> (factor, rows, cols)
        for size in dict.fromkeys(_check_size(s) for s in sizes):
            f = _whole_factor(size, bw, bh)
            # the blocks cv2.resize averages: ``cols`` x ``rows`` of f x f pixels, the last
            # ones cut short by the field's edge; they split no 2x2 pair when what they read is even
            cols, rows = round(bw * (1.0 / f)), round(bh * (1.0 / f))
            if f >= 4 and f % 2 == 0 and min(cols * f, bw) % 2 == 0 and min(rows * f, bh) % 2 == 0:
                self._halves[size] = (f, rows, cols)
        self._half: np.ndarray | None = None

    def _prepared(self, size: tuple[int, int]) -> np.ndarray:
        """The crop after its whole-factor shrink for ``size``."""
        plan = self._halves.get(size)
        if plan is None:  # the plain way, as model_input does it
            bh, bw = self._crop.shape[:2]
            f = _whole_factor(size, bw, bh)
            return _shrink(self._crop, f) if f >= 2 else self._crop
        half = self.half
        f, rows, cols = plan
        h, w = half.shape[:2]
        # exactly the pixels the plain way averages, then the rest of the factor
        return _shrink(half[: min(rows * f // 2, h), : min(cols * f // 2, w)], f // 2)

    @property
    def half(self) -> np.ndarray:
        """The field (BGR) averaged over 2 x 2 blocks, ``cv2.resize`` by a half (an odd last row or
        column is averaged alone or dropped, as OpenCV rounds the size): computed once per frame,
        the start of the even-factor model inputs (which never read that last row or column) and of
        the image-quality check (engine.procedure.quality), so the full-resolution field is shrunk
        once."""
        if self._half is None:
            self._half = _shrink(self._crop, 2)
        return self._half

    def get(self, size, *, mask: bool = True,
            inset: tuple[float, float, float, float] | None = None) -> np.ndarray:
        h, w = _check_size(size)
        key = ((h, w), mask, inset)
        x = self._inputs.get(key)
        if x is None:
            x = self._inputs[key] = self._finish(self._prepared((h, w)), (h, w), mask, inset)
        return x

    def _finish(self, crop: np.ndarray, size: tuple[int, int], mask: bool, inset) -> np.ndarray:
        h, w = size
        x, y, bw, bh = self.area.bbox
        interpolation = cv2.INTER_AREA if w * h < bw * bh else cv2.INTER_LINEAR
        resized = cv2.resize(crop, (w, h), interpolation=interpolation)
        rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        if mask and self.area.shape != "full":
            cv2.bitwise_and(rgb, _model_mask(self.area, (h, w)), dst=rgb)
        return blank_inset(rgb, inset)


def model_input(
    image_bgr: np.ndarray, area: ContentArea, size: tuple[int, int], *, mask: bool = True,
    inset: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Crop ``image_bgr`` to ``area.bbox``, resize to ``size`` = (height, width), black outside.

    Returns H x W x 3 uint8 **RGB**, C-contiguous: the bytes every backend receives (the ONNX
    graph does the rest of the preprocessing). INTER_AREA when shrinking (INTER_AREA is slow for
    large non-integer factors, so first an average by a whole factor, OpenCV's fast path, then
    INTER_AREA the rest of the way, < 2x), INTER_LINEAR when enlarging. The resized mask is
    cached per (area, size). ``inset``: a box of fractions of the model input blacked out as well
    (the model's manifest says which: ``SCOPE_GUIDE_INSET``), the same in training and at inference.
    """
    return ModelInputs(image_bgr, area).get(size, mask=mask, inset=inset)


def deidentify(image_bgr: np.ndarray, area: ContentArea, *, inplace: bool = False) -> np.ndarray:
    """Everything outside the field set to black (burned-in patient text lies there)."""
    image = check_image(image_bgr)
    _check_area(image, area)
    out = image if inplace else image.copy()
    if area.shape != "full":
        outside = area.mask == 0
        out[outside] = 0
    return out
