"""One renderer for the screen and the exported clip: layers drawn onto a BGR numpy image.

Each layer is a small class with ``draw(image, result, shown_index)`` that draws in place;
``shown_index`` is the index of the frame under the overlay (in live mode the newest result may
belong to an earlier frame, and layers show how old it is). ``Overlay.draw`` returns the image;
:func:`render` is how every path (screen, live, export, recording, snapshot, bench) draws one.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import ClassVar, Sequence

import cv2
import numpy as np

from .types import Frame, FrameResult, absent_label

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
RED = (40, 40, 230)
GREEN = (80, 220, 80)
YELLOW = (40, 220, 240)
GREY = (200, 200, 200)
SEG_COLOR = (60, 230, 255)  # the real-time segmenter's mask and label


def class_color(index: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour for class ``index`` (golden-ratio hue steps)."""
    h = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def _scale(image: np.ndarray) -> float:
    return max(0.55, min(image.shape[0], image.shape[1] * 0.75) / 720.0)


def _geometry(image: np.ndarray, result: FrameResult) -> tuple[float, float]:
    """Factors from the result's frame coordinates (field, boxes, tracks) to ``image``'s pixels:
    (1, 1) when the overlay is drawn on the frame itself, less on a picture scaled for the screen
    (the player draws the overlay after scaling, at the screen's size)."""
    w, h = result.frame.size
    return image.shape[1] / w, image.shape[0] / h


def _points(xy, fx: float, fy: float) -> np.ndarray:
    """Frame pixels (..., 2: x, y) -> the image's (pixel centres map to pixel centres, so the
    frame's last column is the image's last)."""
    return (np.asarray(xy, float) + 0.5) * (fx, fy) - 0.5


def _scaled_boxes(boxes, fx: float, fy: float) -> list:
    """(x, y, w, h) boxes in frame coordinates -> the image's."""
    return [(*_points((x, y), fx, fy), w * fx, h * fy) for x, y, w, h in boxes]


def _panel(image: np.ndarray, x: int, y: int, w: int, h: int, alpha: float = 0.55) -> None:
    """Darken a rectangle in place (only that region is touched: cheap on 1080p)."""
    H, W = image.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    roi = image[y0:y1, x0:x1]
    cv2.convertScaleAbs(roi, dst=roi, alpha=1.0 - alpha, beta=0)


def _text(image, text, org, scale, color=WHITE, thickness=1) -> None:
    """Text with a drop shadow (same stroke: in OpenCV a thicker stroke also widens the advance,
    so a thick black outline would drift away from the text)."""
    d = max(1, thickness)
    cv2.putText(image, text, (org[0] + d, org[1] + d), FONT, scale, BLACK, thickness, cv2.LINE_AA)
    cv2.putText(image, text, org, FONT, scale, color, thickness, cv2.LINE_AA)


class Layer:
    """Base class; subclasses draw in place and return nothing."""

    name: ClassVar[str] = "layer"
    in_place: ClassVar[bool] = True

    def draw(self, image: np.ndarray, result: FrameResult, shown_index: int) -> None:
        raise NotImplementedError


class ContentAreaOutline(Layer):
    name = "content_area"

    def draw(self, image, result, shown_index):
        fx, fy = _geometry(image, result)
        poly = _points(result.area.polygon.reshape(-1, 1, 2), fx, fy).round().astype(np.int32)
        cv2.polylines(image, [poly], True, GREEN, max(1, round(2 * _scale(image))), cv2.LINE_AA)


class ClassLabel(Layer):
    """The frame's answer in a panel at the top left, on every frame.

    A classifier: the frame's class as the verdict has it (``FrameResult.top``: "polyp" on a
    positive verdict, else the classifier's best other class) and the classifier's top-k bars.
    A segmenter alone: "polyp NN%" (the
    mean probability inside the mask) and its bar when the mask is not empty, else "no polyp"
    with the largest probability anywhere, small. Only the panel's pixels are touched.
    """

    name = "label"

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def draw(self, image, result, shown_index):
        if result.prediction is not None:
            self._classifier(image, result, shown_index)
        elif result.segmentation is not None:
            self._segmenter(image, result, shown_index)

    def _classifier(self, image, result, shown_index):
        p = result.prediction
        s = _scale(image)
        pad, line = round(10 * s), round(30 * s)
        bar_w = round(190 * s)
        w, h = round(330 * s), pad * 2 + line + self.k * round(22 * s)
        x, y = pad, pad
        _panel(image, x, y, w, h, 0.8)  # dark enough to hide burned-in text underneath
        label, conf = result.top  # the verdict's class: "polyp", or the best other class
        color = (SEG_COLOR if result.polyp else class_color(p.labels.index(label)) if label in p.labels else GREY)
        _text(image, f"{label} {conf:.0%}", (x + pad, y + pad + round(22 * s)),
              0.8 * s, color, max(1, round(2 * s)))
        self._age(image, result, shown_index, x + w, y + pad, s)
        by = y + pad + line + round(4 * s)
        for name, prob in p.top(self.k):
            self._bar(image, x + pad, by, bar_w, prob, class_color(p.labels.index(name)), f"{name[:18]}  {prob:.2f}", s)
            by += round(22 * s)

    def _segmenter(self, image, result, shown_index):
        seg = result.segmentation
        s = _scale(image)
        pad, line = round(10 * s), round(30 * s)
        w, h = round(330 * s), pad * 2 + line + round(22 * s)
        x, y = pad, pad
        _panel(image, x, y, w, h, 0.8)
        title, detail = segmentation_label(seg)
        color = SEG_COLOR if seg.present else GREY
        _text(image, title, (x + pad, y + pad + round(22 * s)), 0.8 * s, color, max(1, round(2 * s)))
        self._age(image, result, shown_index, x + w, y + pad, s)
        self._bar(image, x + pad, y + pad + line + round(4 * s), round(190 * s), seg.confidence, color, detail, s)

    @staticmethod
    def _bar(image, x, y, width, prob, color, text, s) -> None:
        bh = round(14 * s)
        cv2.rectangle(image, (x, y), (x + width, y + bh), (90, 90, 90), 1)
        cv2.rectangle(image, (x, y), (x + round(width * min(1.0, max(0.0, prob))), y + bh), color, -1)
        _text(image, text, (x + width + round(10 * s), y + bh - 2), 0.38 * s)

    @staticmethod
    def _age(image, result, shown_index, right, top, s) -> None:
        if result.frame.index != shown_index:
            _text(image, f"{shown_index - result.frame.index}f", (right - round(45 * s), top + round(22 * s)), 0.45 * s)


def segmentation_label(seg) -> tuple[str, str]:
    """The label panel's words for a segmenter's answer: (title, small text beside its bar)."""
    if seg.present:
        return f"{seg.label} {seg.confidence:.0%}", f"mask mean p {seg.confidence:.2f}"
    return absent_label(seg.label), f"max p {seg.confidence:.2f}"


class SecondPass(Layer):
    """Second-pass masks (filled, outlined), boxes and label, with the age of the frame used."""

    name = "second_pass"

    def __init__(self, color=(255, 160, 40), alpha: float = 0.35) -> None:
        self.color = color
        self.alpha = alpha

    def draw(self, image, result, shown_index):
        sp = result.second_pass
        if sp is None:
            return
        s = _scale(image)
        age = max(0, shown_index - sp.frame_index)
        if sp.masks is not None:
            for m in sp.masks:
                self._mask(image, m)
        if sp.boxes is not None:
            fx, fy = _geometry(image, result)
            scores = sp.scores if sp.scores is not None else [None] * len(sp.boxes)
            for box, score in zip(sp.boxes, scores):
                x1, y1, x2, y2 = _points(np.reshape(box, (2, 2)), fx, fy).round().astype(int).ravel().tolist()
                cv2.rectangle(image, (x1, y1), (x2, y2), self.color, max(1, round(2 * s)))
                if score is not None:
                    _text(image, f"{score:.2f}", (x1, max(12, y1 - 4)), 0.5 * s, self.color)
        if sp.label is not None:
            conf = "" if sp.confidence is None else f" {sp.confidence:.0%}"
            text = f"2nd: {sp.label}{conf} ({age} frames ago)"
            x, y = round(10 * s), round(150 * s)
            _panel(image, x, y, round(330 * s), round(30 * s))
            _text(image, text, (x + round(8 * s), y + round(21 * s)), 0.5 * s, self.color)

    def _mask(self, image, mask) -> None:
        draw_mask(image, mask, self.color, self.alpha)


#: How the segmentation layer shows a polyp: the mask filled and outlined, its outline only, or boxes.
STYLES = ("mask", "outline", "box")


class Segmentation(Layer):
    """The real-time segmenter's polyp and "polyp NN%" beside it, in one of :data:`STYLES`:
    ``mask`` (filled and outlined), ``outline`` (the mask's outline only) or ``box`` (a rectangle
    per polyp: the tracks on the frame, else the frame's detections, else the mask's box). A track
    on the frame puts its number before the label ("#2 polyp 87%")."""

    name = "segmentation"

    def __init__(self, color=SEG_COLOR, alpha: float = 0.3, style: str = "mask") -> None:
        if style not in STYLES:
            raise ValueError(f"unknown display style {style!r} (known: {', '.join(STYLES)})")
        self.color = color
        self.alpha = alpha
        self.style = style

    def draw(self, image, result, shown_index):
        seg = result.segmentation
        # the mask where the frame's verdict says polyp (engine.analysis.verdict); without a verdict, the
        # segmenter's own answer
        if seg is None or result.polyp is False or (result.polyp is None and not seg.present):
            return
        s = _scale(image)
        tracks = result.tracks.tracks if result.tracks is not None else ()
        if self.style == "mask":
            box = draw_mask(image, seg.mask, self.color, self.alpha)
        elif self.style == "outline":
            box = draw_mask(image, seg.mask, self.color, 0.0)
        else:
            boxes = [t.bbox for t in tracks] or [d.bbox for d in result.detections or ()] or \
                ([seg.bbox] if seg.bbox is not None else [])
            box = draw_boxes(image, _scaled_boxes(boxes, *_geometry(image, result)), self.color,
                             max(1, round(2 * s)))
        if box is None:
            return
        x0, y0, x1, y1 = box
        text = f"{seg.label} {seg.confidence:.0%}"
        if tracks:
            text = " ".join(f"#{t.id}" for t in tracks) + " " + text
        if result.frame.index != shown_index:
            text += f" ({shown_index - result.frame.index}f)"
        scale, thick = 0.6 * s, max(1, round(2 * s))
        (tw, th), _ = cv2.getTextSize(text, FONT, scale, thick)
        H, W = image.shape[:2]
        tx = int(min(max(0, x0), max(0, W - tw - 8)))
        ty = int(y0 - 8 if y0 - th - 12 >= 0 else min(H - 6, y1 + th + 8))
        _panel(image, tx - 4, ty - th - 6, tw + 8, th + 12, 0.6)
        _text(image, text, (tx, ty), scale, self.color, thick)


def draw_boxes(image: np.ndarray, boxes, color, thickness: int) -> tuple[int, int, int, int] | None:
    """Rectangles (x, y, w, h each) in ``color``; returns their union (x0, y0, x1, y1), None without any."""
    if not boxes:
        return None
    for x, y, w, h in boxes:
        cv2.rectangle(image, (int(x) + 1, int(y) + 1), (int(x + w) + 1, int(y + h) + 1), BLACK, thickness,
                      cv2.LINE_AA)
        cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), color, thickness, cv2.LINE_AA)
    return (int(min(b[0] for b in boxes)), int(min(b[1] for b in boxes)),
            int(max(b[0] + b[2] for b in boxes)), int(max(b[1] + b[3] for b in boxes)))


def draw_mask(image: np.ndarray, mask: np.ndarray, color, alpha: float) -> tuple[int, int, int, int] | None:
    """Blend ``color`` over ``mask`` (H x W, any dtype; resized when its size differs) and outline it
    (``alpha`` 0: the outline only).

    Only the mask's bounding box is touched. Returns that box (x0, y0, x1, y1), None when empty.
    """
    m = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).view(np.uint8)  # no copy for bool
    if m.shape != image.shape[:2]:
        m = cv2.resize(m, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    x0, y0, w, h = cv2.boundingRect(m)  # of the non-zero pixels
    if w == 0 or h == 0:
        return None
    x1, y1 = x0 + w, y0 + h
    roi, mroi = image[y0:y1, x0:x1], np.ascontiguousarray(m[y0:y1, x0:x1])
    if alpha > 0:
        blended = cv2.addWeighted(roi, 1 - alpha, solid(roi.shape, color), alpha, 0)
        cv2.copyTo(blended, mroi, roi)
    contours, _ = cv2.findContours(mroi, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(roi, contours, -1, color, max(1, round(2 * _scale(image))))
    return x0, y0, x1, y1


def solid(shape: tuple[int, int, int], color) -> np.ndarray:
    """An H x W x C uint8 image of one ``color``: one row repeated (numpy's ``image[:] = color``
    broadcasts pixel by pixel, 40 times slower: 0.76 ms for a 380 x 290 mask's box)."""
    row = np.array(color, np.uint8)[None, :].repeat(shape[1], axis=0)
    return np.ascontiguousarray(np.broadcast_to(row, shape))


class Stats(Layer):
    """FPS and per-stage latency, small, at the bottom right."""

    name = "stats"
    stages = ("decode", "crop", "resize", "inference", "mask", "overlay", "encode")

    def draw(self, image, result, shown_index):
        s = _scale(image)
        parts = [f"{k} {result.timings[k]:.1f}" for k in self.stages if k in result.timings]
        fps = f"{result.fps:.0f} FPS  " if result.fps else ""
        text = fps + " ".join(parts) + (" ms" if parts else "")
        if not text:
            return
        (tw, th), _ = cv2.getTextSize(text, FONT, 0.42 * s, 1)
        H, W = image.shape[:2]
        x, y = W - tw - round(14 * s), H - round(12 * s)
        _panel(image, x - 6, y - th - 6, tw + 12, th + 12)
        _text(image, text, (x, y), 0.42 * s)


class PolypCount(Layer):
    """The number of polyps counted so far (confirmed tracks, engine.procedure.tracking), at the top
    right: "polyps 2"."""

    name = "polyp_count"

    def draw(self, image, result, shown_index):
        if result.polyps is None:
            return
        s = _scale(image)
        text = f"polyps {result.polyps}"
        scale, thick = 0.7 * s, max(1, round(2 * s))
        (tw, th), _ = cv2.getTextSize(text, FONT, scale, thick)
        x = image.shape[1] - tw - round(18 * s)
        y = round(40 * s) + (round(50 * s) if result.untrained else 0)  # under the untrained banner
        _panel(image, x - 8, y - th - 8, tw + 16, th + 16, 0.7)
        _text(image, text, (x, y), scale, SEG_COLOR if result.polyps else GREY, thick)


EDGE_HINT_SEEN = SEG_COLOR  # a polyp touching the field's edge
EDGE_HINT_GONE = (0, 140, 255)  # BGR orange: a polyp last seen at the edge, now out of view


class EdgeHint(Layer):
    """Where a polyp touches the edge of the field, or left it: a triangle on that edge pointing out.

    For every confirmed track on the frame whose box touches an edge of the field's box
    (:func:`engine.procedure.hints.touching_edges`), a triangle in the mask's colour; for every
    track missing from the frame that was last seen touching an edge, a larger orange one with its
    number: the polyp most likely slid out of view that way. Drawn only with ``[alerts] edge_hint``
    (or ``Overlay.default(edge_hint=True)``)."""

    name = "edge_hint"

    def draw(self, image, result, shown_index):
        tracks = result.tracks
        if tracks is None or not (tracks.tracks or tracks.missing):
            return
        from .procedure.hints import touching_edges

        field = result.area.bbox
        s = _scale(image)
        fx, fy = _geometry(image, result)
        shown_field = tuple(round(v) for v in _scaled_boxes([field], fx, fy)[0])
        for gone, group in ((False, tracks.tracks), (True, tracks.missing)):
            for t in group:
                for edge in touching_edges(t.bbox, field):
                    self._marker(image, shown_field, _scaled_boxes([t.bbox], fx, fy)[0], edge,
                                 s * (1.4 if gone else 1.0), EDGE_HINT_GONE if gone else EDGE_HINT_SEEN,
                                 f"{t.id}" if gone else "")

    @staticmethod
    def _marker(image, field, bbox, edge, s, color, text) -> None:
        fx, fy, fw, fh = field
        bx, by, bw, bh = bbox
        size, depth = round(26 * s), round(18 * s)
        cx = int(min(max(bx + bw / 2, fx + size), fx + fw - size))  # along the edge, kept on it
        cy = int(min(max(by + bh / 2, fy + size), fy + fh - size))
        if edge == "left":
            tip, base = (fx, cy), [(fx + depth, cy - size), (fx + depth, cy + size)]
        elif edge == "right":
            tip, base = (fx + fw - 1, cy), [(fx + fw - 1 - depth, cy - size), (fx + fw - 1 - depth, cy + size)]
        elif edge == "top":
            tip, base = (cx, fy), [(cx - size, fy + depth), (cx + size, fy + depth)]
        else:
            tip, base = (cx, fy + fh - 1), [(cx - size, fy + fh - 1 - depth), (cx + size, fy + fh - 1 - depth)]
        pts = np.array([tip, *base], np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(image, [pts], color, cv2.LINE_AA)
        cv2.polylines(image, [pts], True, BLACK, max(1, round(1.5 * s)), cv2.LINE_AA)
        if text:
            mx = int(sum(p[0] for p in base) / 2)
            my = int(sum(p[1] for p in base) / 2)
            ox = {"left": depth // 2, "right": -depth // 2 - round(14 * s)}.get(edge, -round(6 * s))
            oy = {"top": depth, "bottom": -depth // 2}.get(edge, round(6 * s))
            _text(image, text, (mx + ox, my + oy), 0.55 * s, color, max(1, round(2 * s)))


class UntrainedBanner(Layer):
    name = "untrained"

    def draw(self, image, result, shown_index):
        if not result.untrained:
            return
        s = _scale(image)
        text = "UNTRAINED MODEL - labels are meaningless"
        (tw, th), _ = cv2.getTextSize(text, FONT, 0.7 * s, max(1, round(2 * s)))
        # top right, clear of the label panel (top left); on very narrow frames, under the panels
        x, y = image.shape[1] - tw - round(18 * s), round(40 * s)
        if x < round(350 * s):
            x, y = round(18 * s), round(200 * s) + th
        _panel(image, x - 8, y - th - 8, tw + 16, th + 16, 0.7)
        _text(image, text, (x, y), 0.7 * s, RED, max(1, round(2 * s)))


class ResearchMark(Layer):
    name = "research_mark"

    def draw(self, image, result, shown_index):
        s = _scale(image)
        _text(image, "endoview - research use only, not for diagnosis",
              (round(10 * s), image.shape[0] - round(12 * s)), 0.4 * s, (200, 200, 200))


#: The layers the configuration's ``[overlay] layers`` choose among (the edge hint is an alert:
#: ``[alerts] edge_hint`` turns it on).
LAYER_TYPES: dict[str, type[Layer]] = {
    cls.name: cls
    for cls in (ContentAreaOutline, ClassLabel, Segmentation, SecondPass, Stats, PolypCount, UntrainedBanner,
                ResearchMark)
}


@dataclass
class Overlay:
    """The ordered layers to draw. ``Overlay.default(outline=True)`` adds the field outline."""

    layers: Sequence[Layer]

    @classmethod
    def default(cls, *, outline: bool = False, names: Sequence[str] | None = None, style: str = "mask",
                edge_hint: bool = False) -> Overlay:
        """``names``: the layers in order (None: every layer); ``outline``: the field's outline too;
        ``style``: the segmentation layer's (:data:`STYLES`); ``edge_hint``: the edge markers too."""
        # no names: every layer (the configuration's [overlay] layers choose among them)
        names = list(names or (n for n in LAYER_TYPES if n != "content_area"))
        if outline and "content_area" not in names:
            names.insert(0, "content_area")
        unknown = [n for n in names if n not in LAYER_TYPES]
        if unknown:
            raise ValueError(f"unknown overlay layer(s) {unknown}; known: {sorted(LAYER_TYPES)}")
        layers = [Segmentation(style=style) if n == "segmentation" else LAYER_TYPES[n]() for n in names]
        if edge_hint:
            where = names.index("segmentation") + 1 if "segmentation" in names else 0
            layers.insert(where, EdgeHint())
        return cls(layers)

    def draw(self, image: np.ndarray, result: FrameResult, shown_index: int | None = None,
             *, copy: bool = False) -> np.ndarray:
        """Draw every layer onto ``image`` (in place unless ``copy``) and return it."""
        if copy:
            image = image.copy()
        shown = result.frame.index if shown_index is None else shown_index
        for layer in self.layers:
            layer.draw(image, result, shown)
        return image


def render(frame: Frame, result: FrameResult | None, overlay: Overlay | None, *,
           copy: bool = True) -> np.ndarray:
    """The picture of ``frame`` with ``overlay`` drawing ``result``: the one place every path
    draws the overlay. ``result`` may belong to an earlier frame (live mode): ages are counted from
    ``frame``. Without an overlay or a result: the frame's own image, untouched. ``copy=False``
    draws on the frame's image itself, for a frame nobody else shows (export)."""
    if overlay is None or result is None:
        return frame.image
    return overlay.draw(frame.image, result, frame.index, copy=copy)
