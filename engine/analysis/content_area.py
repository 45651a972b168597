"""The visible endoscopic field inside the processor's black frame (DESIGN.md, "Black borders").

source -> Frame -> **content area** -> model input -> backend -> ...

``detect_content_area`` finds the field on one frame: luminance threshold on a ~256 px copy,
dark regions connected to the frame's edge are "outside" (so a shadowed lumen inside the field
never shrinks it), an opening scaled to the field removes burned-in text, the largest component
is kept, a scope-position thumbnail stuck to a corner of the field is cut off, and a shape
(circle, octagon, rectangle, full) is fitted to the outer contour.

:class:`~engine.analysis.tracker.ContentAreaTracker` re-estimates it over a video;
:mod:`engine.analysis.crop` cuts the model input and blacks out what lies outside it.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from engine.errors import ContentAreaError
from engine.types import ContentArea

__all__ = ["check_image", "detect_content_area"]

logger = logging.getLogger(__name__)

#: Longest side of the working copy used for detection.
WORK_SIZE = 256
#: Frames smaller than this (either side) are not analysed: full frame, confidence 0.
MIN_SIDE = 16
#: A black border is "absent" when less than this fraction of the frame is dark and outside.
FULL_MARGIN = 0.015
#: Grey level (max of B, G, R) a processor's black border never exceeds, whatever the JPEG noise.
BORDER_CEILING = 40
#: Threshold above the darkest level of the frame.
BORDER_MARGIN = 18


# --------------------------------------------------------------------------------------------
# validation


def check_image(image_bgr: object) -> np.ndarray:
    """``image_bgr`` itself when it is an H x W x 3 uint8 array, else ContentAreaError."""
    if not isinstance(image_bgr, np.ndarray):
        raise ContentAreaError(
            f"content area: expected a numpy image (H x W x 3 uint8 BGR), got {type(image_bgr).__name__}"
        )
    if image_bgr.dtype != np.uint8:
        raise ContentAreaError(
            f"content area: expected a uint8 image, got dtype {image_bgr.dtype}; convert it first"
        )
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ContentAreaError(
            f"content area: expected an H x W x 3 BGR image, got shape {image_bgr.shape}; "
            "convert grey or BGRA images with cv2.cvtColor first"
        )
    if image_bgr.shape[0] < 1 or image_bgr.shape[1] < 1:
        raise ContentAreaError(f"content area: empty image of shape {image_bgr.shape}")
    return image_bgr


# --------------------------------------------------------------------------------------------
# detection


def _luminance(small_bgr: np.ndarray) -> np.ndarray:
    """Max of B, G, R: a dark but red lumen stays well above a black border."""
    b, g, r = cv2.split(small_bgr)
    return cv2.max(cv2.max(b, g), r)


def _threshold(lum: np.ndarray) -> int:
    """Dark/bright threshold from the histogram's low end (the border's level plus a margin)."""
    hist = np.bincount(lum.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    darkest = int(np.searchsorted(cdf, 0.005 * cdf[-1]))
    return int(min(darkest + BORDER_MARGIN, BORDER_CEILING))


def _outside(dark: np.ndarray) -> np.ndarray:
    """Dark pixels 8-connected to the frame's edge (the black frame); bool."""
    h, w = dark.shape
    n, labels = cv2.connectedComponents(dark.view(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(dark, dtype=bool)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    keep = np.zeros(n, bool)
    keep[np.unique(edge)] = True
    keep[0] = False
    return keep[labels]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return np.zeros_like(mask)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return np.where(labels == best, np.uint8(255), np.uint8(0))


def _ellipse(size: int) -> np.ndarray:
    size = max(3, size | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _corner_views(a: np.ndarray, box: tuple[int, int, int, int]) -> list[np.ndarray]:
    """Four flipped views of ``a[box]`` so that each corner in turn is the top-left one.

    Index bit 0: flipped left-right, bit 1: flipped top-bottom; so ``i ^ 1`` is the corner on the
    same side (top or bottom) and ``i ^ 2`` the one on the same left or right side. The views
    share memory with ``a``: writing into one writes into ``a``.
    """
    x0, y0, x1, y1 = box
    sub = a[y0 : y1 + 1, x0 : x1 + 1]
    return [sub, sub[:, ::-1], sub[::-1, :], sub[::-1, ::-1]]


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _cut_thumbnails(field: np.ndarray, small_bgr: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Remove scope-position thumbnails glued to the field (in place).

    A thumbnail is a solid, axis-aligned block of green/blue-dominant pixels (tissue is red) in a
    corner of the field's bounding box. Blue dye inside the field is irregular and rarely fills a
    corner rectangle. Returns the removed rectangles (x0, y0, x1, y1), inclusive.
    """
    box = _box(field)
    if box is None:
        return []
    b, g, r = (c.astype(np.int16) for c in cv2.split(small_bgr))
    greenish = (((np.maximum(g, b) - r) > 25) & (field > 0)).astype(np.uint8)
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    cw, ch = int(0.45 * bw), int(0.45 * bh)
    cut: list[tuple[int, int, int, int]] = []
    for flip_x in (False, True):
        for flip_y in (False, True):
            # the corner region in absolute coordinates
            cx0 = x1 - cw + 1 if flip_x else x0
            cy0 = y1 - ch + 1 if flip_y else y0
            corner = greenish[cy0 : cy0 + ch, cx0 : cx0 + cw]
            if corner.size == 0:
                continue
            n, _, stats, _ = cv2.connectedComponentsWithStats(corner, connectivity=8)
            for lab in range(1, n):
                x, y, w, h, area = (int(v) for v in stats[lab])
                # distance of the block's outer sides from the bbox corner
                dx = (cw - (x + w)) if flip_x else x
                dy = (ch - (y + h)) if flip_y else y
                if dx <= 0.05 * bw and dy <= 0.05 * bh and area >= 0.6 * w * h \
                        and w >= 0.08 * bw and h >= 0.08 * bh:
                    # the whole corner up to the block's inner sides
                    ax0 = cx0 + x if flip_x else x0
                    ax1 = x1 if flip_x else cx0 + x + w - 1
                    ay0 = cy0 + y if flip_y else y0
                    ay1 = y1 if flip_y else cy0 + y + h - 1
                    field[ay0 : ay1 + 1, ax0 : ax1 + 1] = 0
                    cut.append((ax0, ay0, ax1, ay1))
                    logger.debug("content area: cut a %dx%d px thumbnail from a corner", w, h)
    return cut


def _mirror_fill(field: np.ndarray, rects: list[tuple[int, int, int, int]]) -> None:
    """Fill the rectangles with the field's mirror image across its vertical centre line."""
    box = _box(field)
    if box is None:
        return
    x0, _, x1, _ = box
    for rx0, ry0, rx1, ry1 in rects:
        rx0, rx1 = max(rx0, x0), min(rx1, x1)
        if rx1 < rx0:
            continue
        mirrored = field[ry0 : ry1 + 1, x0 + x1 - rx1 : x0 + x1 - rx0 + 1][:, ::-1]
        region = field[ry0 : ry1 + 1, rx0 : rx1 + 1]
        np.bitwise_or(region, mirrored, out=region)


def _fill_corner_notches(field: np.ndarray) -> None:
    """Give back a corner of the field hidden by a (blacked-out or cut) thumbnail, in place.

    A notch is an empty axis-aligned rectangle in a corner of the field's bounding box with field
    on both of its inner sides. It is filled with the mirror image of the neighbouring corner
    (scopes' fields are symmetric), which only ever adds to the field.
    """
    box = _box(field)
    if box is None:
        return
    views = _corner_views(field, box)
    notches = [_corner_notch(v) for v in views]
    for i, notch in enumerate(notches):
        if notch is None:
            continue
        nx, ny = notch
        for partner in (i ^ 1, i ^ 2):
            if notches[partner] is None:
                views[i][:ny, :nx] |= views[partner][:ny, :nx]
                logger.debug("content area: filled a %dx%d px notch in corner %d", nx, ny, i)
                break


def _corner_notch(view: np.ndarray) -> tuple[int, int] | None:
    """(width, height) of an empty rectangle in the top-left corner of ``view``, or None.

    Row by row, the field starts at the notch's width ``nx`` down to the notch's height ``ny``,
    then (a step, not a diagonal cut) far further left.
    """
    h, w = view.shape
    filled = view[: h // 2 + 1, : w // 2 + 1] > 0
    has = filled.any(axis=1)
    start = np.where(has, np.argmax(filled, axis=1), filled.shape[1])
    nx = int(start[0])
    if not (0.05 * w <= nx <= 0.5 * w):
        return None
    left = np.nonzero(start < 0.4 * nx)[0]
    if len(left) == 0:
        return None
    ny = int(left[0])
    if not 0.05 * h <= ny <= 0.5 * h:
        return None
    if np.median(start[:ny]) < 0.9 * nx:
        return None
    rect = view[:ny, : int(0.95 * nx)]
    if np.count_nonzero(rect) > 0.03 * rect.size:
        return None
    below = view[ny : ny + max(2, ny // 8), int(0.4 * nx) : nx]
    if below.size == 0 or np.count_nonzero(below) < 0.8 * below.size:
        return None
    return nx, ny


def _fit_circle(points: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares circle (cx, cy, r) and relative rms residual for N x 2 float points."""
    x, y = points[:, 0], points[:, 1]
    a = np.column_stack([x, y, np.ones_like(x)])
    b = x * x + y * y
    (c0, c1, c2), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = c0 / 2.0, c1 / 2.0
    r = float(np.sqrt(max(c2 + cx * cx + cy * cy, 1e-9)))
    resid = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r
    return float(cx), float(cy), r, float(np.sqrt(np.mean(resid * resid)) / r)


def _to_frame(points: np.ndarray, sx: float, sy: float, width: int, height: int) -> np.ndarray:
    """Working-image pixel coordinates -> frame pixels, int32 N x 2, clipped to the frame.

    A working pixel covers ``sx`` x ``sy`` frame pixels; each vertex goes to the outer edge of
    its pixel (away from the polygon's centre) so that the outline never cuts into the field.
    """
    centre = points.mean(axis=0)
    d = np.sign(points - centre)
    out = np.empty_like(points, dtype=np.float64)
    out[:, 0] = (points[:, 0] + 0.5) * sx - 0.5 + d[:, 0] * (0.5 * sx - 0.5)
    out[:, 1] = (points[:, 1] + 0.5) * sy - 0.5 + d[:, 1] * (0.5 * sy - 0.5)
    out[:, 0] = np.clip(out[:, 0], 0, width - 1)
    out[:, 1] = np.clip(out[:, 1], 0, height - 1)
    return np.round(out).astype(np.int32)


def _bbox(polygon: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = np.clip(polygon.min(axis=0), 0, [width - 1, height - 1])
    x1, y1 = np.clip(polygon.max(axis=0), 0, [width - 1, height - 1])
    return int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)


def detect_content_area(image_bgr: np.ndarray) -> ContentArea:
    """Find the visible endoscopic field of one H x W x 3 uint8 BGR frame.

    Never raises on a valid image: a black, uniform or tiny frame gives the full frame with a low
    confidence. Raises ContentAreaError for anything that is not an H x W x 3 uint8 array.
    """
    image = check_image(image_bgr)
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        return ContentArea.full_frame(width, height, confidence=0.0)

    scale = min(1.0, WORK_SIZE / max(height, width))
    if scale < 1.0:
        sw, sh = max(1, round(width * scale)), max(1, round(height * scale))
        factor = int(1.0 / scale)
        pre = image
        if factor >= 2:  # whole-factor averaging is OpenCV's fast INTER_AREA path
            pre = cv2.resize(image, None, fx=1.0 / factor, fy=1.0 / factor, interpolation=cv2.INTER_AREA)
        small = cv2.resize(pre, (sw, sh), interpolation=cv2.INTER_AREA)
    else:
        small = image
    sh, sw = small.shape[:2]
    sx, sy = width / sw, height / sh
    lum = _luminance(small)

    spread = float(lum.std())
    if spread < 3.0:
        logger.debug("content area: uniform frame (std %.2f), using the full frame", spread)
        return ContentArea.full_frame(width, height, confidence=0.05)

    threshold = _threshold(lum)
    dark = (lum <= threshold).astype(np.uint8)
    outside = _outside(dark)
    outside_fraction = float(outside.mean())
    if outside_fraction < FULL_MARGIN:
        inside_mean = float(lum[~outside].mean()) if outside_fraction < 1 else 0.0
        confidence = 0.9 if inside_mean > 2 * BORDER_CEILING else 0.3
        return ContentArea.full_frame(width, height, confidence=confidence)

    field = np.where(outside, np.uint8(0), np.uint8(255))
    # opening scaled to the frame removes text strokes and the progress bars glued to the field
    k = max(3, round(0.04 * min(sh, sw)))
    opened = cv2.morphologyEx(field, cv2.MORPH_OPEN, _ellipse(k))
    component = _largest_component(opened)
    area_px = int(np.count_nonzero(component))
    if area_px < 0.05 * sh * sw:
        logger.debug("content area: no field found (largest bright part %d px), full frame", area_px)
        return ContentArea.full_frame(width, height, confidence=0.05)
    thumbnails = _cut_thumbnails(component, small)
    if thumbnails:
        component = _largest_component(component)
        _mirror_fill(component, thumbnails)
    _fill_corner_notches(component)

    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    hull = cv2.convexHull(contour)
    hull_mask = np.zeros((sh, sw), np.uint8)
    cv2.fillConvexPoly(hull_mask, hull, 255)
    hull_area = int(np.count_nonzero(hull_mask))

    # confidence: agreement of the fitted shape with the thresholded field, and the contrast
    # between the field and the black frame
    inter = np.count_nonzero(cv2.bitwise_and(hull_mask, field))
    union = np.count_nonzero(cv2.bitwise_or(hull_mask, component))
    iou = inter / max(union, 1)
    out_level = float(lum[hull_mask == 0].mean()) if hull_area < sh * sw else 0.0
    in_level = float(np.median(lum[component > 0]))
    contrast = float(np.clip((in_level - out_level - 10.0) / 50.0, 0.0, 1.0))
    confidence = float(np.clip(iou * (0.5 + 0.5 * contrast), 0.0, 1.0))

    if hull_area >= (1.0 - FULL_MARGIN) * sh * sw:
        return ContentArea.full_frame(width, height, confidence=confidence)

    x, y, bw, bh = cv2.boundingRect(hull)
    if hull_area >= 0.97 * bw * bh:
        shape = "rectangle"
        rect = np.array([[x, y], [x + bw - 1, y], [x + bw - 1, y + bh - 1], [x, y + bh - 1]], np.float64)
        polygon = _to_frame(rect, sx, sy, width, height)
    else:
        shape, polygon = _fit_round_or_octagon(contour, hull, sx, sy, width, height, (sw, sh))

    area = ContentArea(_bbox(polygon, width, height), shape, polygon, confidence, (width, height))
    logger.debug(
        "content area: %s bbox %s confidence %.3f (threshold %d, iou %.3f, contrast %.2f)",
        shape, area.bbox, confidence, threshold, iou, contrast,
    )
    return area


def _fit_round_or_octagon(
    contour: np.ndarray,
    hull: np.ndarray,
    sx: float,
    sy: float,
    width: int,
    height: int,
    small_size: tuple[int, int],
) -> tuple[str, np.ndarray]:
    sw, sh = small_size
    pts = contour.reshape(-1, 2).astype(np.float64)
    # only the field's own outline, not where the frame's edge clips it
    free = (pts[:, 0] > 0) & (pts[:, 0] < sw - 1) & (pts[:, 1] > 0) & (pts[:, 1] < sh - 1)
    free_pts = pts[free]
    if len(free_pts) >= 20:
        cx, cy, r, rel = _fit_circle(free_pts)
        angles = np.arctan2(free_pts[:, 1] - cy, free_pts[:, 0] - cx)
        coverage = len(np.unique(np.floor((angles + np.pi) / (2 * np.pi) * 36))) / 36.0
        if rel < 0.012 and coverage > 0.3:
            t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
            # contour points are pixel centres: the outline lies half a working pixel further out
            s = 0.5 * (sx + sy)
            fcx, fcy, fr = (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5, (r + 0.5) * s
            circle = np.column_stack([fcx + fr * np.cos(t), fcy + fr * np.sin(t)])
            circle[:, 0] = np.clip(circle[:, 0], 0, width - 1)
            circle[:, 1] = np.clip(circle[:, 1], 0, height - 1)
            return "circle", np.round(circle).astype(np.int32)
    approx = cv2.approxPolyDP(hull, 0.6, True).reshape(-1, 2).astype(np.float64)
    return "octagon", _to_frame(approx, sx, sy, width, height)
