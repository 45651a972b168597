"""A generated clip that looks like endoscope-processor output, for demos, benchmarks and tests.

A textured pinkish-red mucosa (smooth noise, folds, vessels, specular highlights), panned,
zoomed and turned slowly, inside a black octagon like the visible field of an Olympus-style
processor, with white text (patient, date/time, settings, frame number) and a scope-position
thumbnail in the black border. Frames ``polyp_frames`` of every ``period`` show a polyp-like
bump. Everything is a pure function of ``(index, seed, size)``: frame i is always the same.

Cost per frame: one ``warpAffine`` of the precomputed texture, one vignette multiply, a template
copy and a few ``putText`` calls.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.errors import SourceError
from engine.sources.base import Source, SourceInfo
from engine.types import Frame, to_fraction

logger = logging.getLogger(__name__)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_START = _dt.datetime(2024, 1, 15, 9, 30, 0)
POLYP_PERIOD = 300  # frames
POLYP_FRAMES = range(120, 210)  # within each period


@dataclass(frozen=True)
class DemoLayout:
    """Where things are in a demo frame of a given size (ground truth for detector tests)."""

    width: int
    height: int
    octagon: np.ndarray  # N x 2 int32
    bbox: tuple[int, int, int, int]  # x, y, w, h of the octagon
    text_boxes: tuple[tuple[int, int, int, int], ...]  # x, y, w, h of each overlay text line
    thumbnail: tuple[int, int, int, int] | None
    font_scale: float
    thickness: int
    line: int  # text line height in pixels


def demo_octagon(width: int, height: int) -> np.ndarray:
    """The visible field of a ``width`` x ``height`` demo frame: 8 x 2 int32 polygon."""
    return demo_layout(width, height).octagon.copy()


@functools.lru_cache(maxsize=8)
def demo_layout(width: int, height: int) -> DemoLayout:
    """Octagon ~88% of the height, a little right of centre; text in the left strip."""
    h = max(8, round(0.88 * height))
    w = max(8, min(round(1.1 * h), round(0.8 * width)))
    cx = min(0.56 * width, width - w / 2 - 0.02 * width)
    x0 = max(0, round(cx - w / 2))
    y0 = (height - h) // 2
    x1, y1 = x0 + w - 1, y0 + h - 1
    c = round(0.2 * min(w, h))
    octagon = np.array(
        [[x0 + c, y0], [x1 - c, y0], [x1, y0 + c], [x1, y1 - c],
         [x1 - c, y1], [x0 + c, y1], [x0, y1 - c], [x0, y0 + c]],
        np.int32,
    )
    margin = max(2, round(0.02 * height))
    scale, thick, line = _font(height, x0 - 2 * margin)
    texts = _static_lines() + [_clock(0, 1.0)]
    boxes = [_text_box(t, margin, margin + row * line, scale, thick, line) for row, t in enumerate(texts)]
    bottom = _settings_lines() + ["Fr 000000"]
    for row, text in enumerate(bottom):
        y = height - margin - (len(bottom) - row) * line
        boxes.append(_text_box(text, margin, y, scale, thick, line))
    thumb = None
    side = min(x0 - 2 * margin, round(0.14 * height))
    if side >= 16:
        top = boxes[-len(_settings_lines()) - 1][1] - margin - side
        if top > boxes[len(_static_lines())][1] + line:
            thumb = (margin, top, side, side)
    return DemoLayout(
        width, height, octagon, (x0, y0, w, h), tuple(boxes), thumb,
        scale, thick, line,
    )


def _font(height: int, room: int) -> tuple[float, int, int]:
    """Font scale, thickness, line height: ~0.75 at 1080 lines, shrunk so lines fit ``room``."""
    scale = max(0.3, 0.75 * height / 1080)
    thick = max(1, round(1.6 * height / 1080))
    widest = max(_static_lines() + _settings_lines() + [_clock(0, 1.0)], key=len)
    width = cv2.getTextSize(widest, _FONT, scale, thick)[0][0]
    if room > 0 and width > room:
        scale = max(0.3, scale * room / width)
    line = max(8, round(34 * scale))
    return scale, thick, line


def _text_box(text: str, x: int, y: int, scale: float, thick: int, line: int) -> tuple[int, int, int, int]:
    """x, y, w, h of the cell a text line is drawn in (its full extent plus a small pad)."""
    (tw, _), _ = cv2.getTextSize(text, _FONT, scale, thick)
    return (x, y, tw + 2 * thick + 2, line + line // 3)


def _static_lines() -> list[str]:
    return ["Patient: DEMO", "ID: 0000-DEMO", "Sex: -  Age: --"]


def _settings_lines() -> list[str]:
    return ["CV-190 (simulated)", "Eh:A5 Ce:3 Cm:1", "IRIS: Auto"]


def _clock(index: int, fps: float) -> str:
    t = _START + _dt.timedelta(seconds=index / fps)
    return t.strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------------------------
# precomputed pieces


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    small = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


@functools.lru_cache(maxsize=2)
def _texture(size: int, seed: int) -> np.ndarray:
    """A size x size x 3 uint8 BGR mucosa texture."""
    rng = np.random.default_rng(seed)
    n = (
        0.5 * _smooth_noise(rng, size, 6)
        + 0.3 * _smooth_noise(rng, size, 24)
        + 0.2 * _smooth_noise(rng, size, 96)
    )
    warp = _smooth_noise(rng, size, 8) * (size / 12)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    folds = np.sin((xx * 0.6 + yy * 0.8 + warp) * (2 * np.pi / (size / 9)))
    folds = np.abs(folds) ** 0.6  # sharp dark creases
    lum = 0.45 + 0.35 * n + 0.25 * folds
    base = np.array([78, 92, 205], np.float32)  # BGR pink-red
    tint = np.stack([0.9 + 0.2 * n, 0.85 + 0.3 * n, np.ones_like(n)], axis=2)
    tex = base * tint * lum[..., None]

    vessels = np.zeros((size, size), np.uint8)
    for _ in range(max(20, size // 40)):
        p = rng.random(2) * size
        angle = rng.random() * 2 * np.pi
        pts = []
        for _ in range(40):
            angle += rng.normal(0, 0.35)
            p = p + 12 * np.array([np.cos(angle), np.sin(angle)])
            pts.append(p.copy())
        cv2.polylines(vessels, [np.array(pts, np.int32)], False, 255, int(rng.integers(1, 4)), cv2.LINE_AA)
    v = cv2.GaussianBlur(vessels, (0, 0), 1.2).astype(np.float32)[..., None] / 255
    tex = tex * (1 - 0.45 * v) + np.array([70, 30, 120], np.float32) * 0.45 * v

    spots = (_smooth_noise(rng, size, size // 10) > 0.975).astype(np.float32)
    spots = cv2.GaussianBlur(spots, (0, 0), 1.5)[..., None]
    tex = tex + (np.array([250, 250, 255], np.float32) - tex) * np.clip(spots * 1.5, 0, 1)
    return np.clip(tex, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _vignette(width: int, height: int) -> np.ndarray:
    """Octagon mask times a radial light falloff: bbox-sized H x W x 3 uint8 (255 = full)."""
    lay = demo_layout(width, height)
    x0, y0, w, h = lay.bbox
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    light = np.clip(1.05 - 0.5 * r**2, 0.45, 1.0)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [lay.octagon - np.array([x0, y0], np.int32)], 1)
    v = (light * mask * 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(v[..., None], 3, axis=2))


@functools.lru_cache(maxsize=4)
def _polyp_sprite(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(BGR float32 image, alpha, shadow) of a lit, slightly lobulated, paler bump."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    c = (side - 1) / 2
    dx, dy = (xx - c) / (0.8 * c), (yy - c) / (0.68 * c)  # margin left for the shadow
    angle = np.arctan2(dy, dx)
    r = np.hypot(dx, dy) / (1 + 0.08 * np.sin(3 * angle))
    alpha = np.clip((1.0 - r) * 6, 0, 1)
    height = np.sqrt(np.clip(1 - r**2, 0, 1))
    shade = 0.5 + 0.55 * np.clip(height - 0.4 * dx - 0.5 * dy, 0, 1.2)
    img = np.array([125, 145, 230], np.float32) * shade[..., None]
    spec = np.exp(-(((dx + 0.3) ** 2 + (dy + 0.35) ** 2) / 0.01))
    img = img + (255 - img) * spec[..., None]
    shift = max(1, side // 12)
    shadow = np.zeros_like(alpha)
    shadow[shift:, shift:] = alpha[:-shift, :-shift]
    shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, side / 30))
    return np.clip(img, 0, 255), alpha[..., None], shadow[..., None]


# --------------------------------------------------------------------------------------------


class DemoSource(Source):
    """Deterministic synthetic endoscopy video (seekable). ``frames=None``: endless."""

    def __init__(
        self,
        width: int = 1280,
        height: int = 1024,
        fps: float = 30.0,
        frames: int | None = 300,
        seed: int = 0,
        *,
        loop: bool = False,
    ) -> None:
        if width < 32 or height < 32:
            raise SourceError(f"demo size must be at least 32x32, not {width}x{height}")
        if fps <= 0:
            raise SourceError(f"demo frame rate must be positive, not {fps}")

        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.frames = frames
        self.seed = seed
        self.loop = loop
        self.stopped_early = None
        self.layout = demo_layout(self.width, self.height)
        x0, y0, w, h = self.layout.bbox
        self._tex_size = int(2.2 * max(w, h))
        self._texture = _texture(self._tex_size, seed)
        self._vig = _vignette(self.width, self.height)
        self._field = np.empty((h, w, 3), np.uint8)
        self._template = self._make_template()
        self._next = 0
        self._closed = False
        self.info = SourceInfo(
            kind="demo", name=f"demo:{self.width}x{self.height}@{self.fps:g}",
            width=self.width, height=self.height, fps=self.fps, rate=to_fraction(self.fps),
            frame_count=None if (frames is None or loop) else int(frames), seekable=True,
            still=False, codec=None, pixel_format="bgr24",
        )

    def _make_template(self) -> np.ndarray:
        img = np.zeros((self.height, self.width, 3), np.uint8)
        scale, thick, line = self.layout.font_scale, self.layout.thickness, self.layout.line
        boxes = self.layout.text_boxes
        static = _static_lines()
        for (x, y, _w, _h), text in zip(boxes, static):
            cv2.putText(img, text, (x, y + line - max(2, line // 5)), _FONT, scale, (235, 235, 235), thick, cv2.LINE_AA)
        settings = _settings_lines()
        for (x, y, _w, _h), text in zip(boxes[len(static) + 1:], settings):
            cv2.putText(img, text, (x, y + line - max(2, line // 5)), _FONT, scale, (235, 235, 235), thick, cv2.LINE_AA)
        if self.layout.thumbnail:
            x, y, s, _ = self.layout.thumbnail
            cv2.rectangle(img, (x, y), (x + s - 1, y + s - 1), (150, 150, 150), 1)
            pts = np.array([[0.2, 0.85], [0.25, 0.3], [0.5, 0.15], [0.78, 0.3], [0.8, 0.8]]) * s
            cv2.polylines(img, [(pts + [x, y]).astype(np.int32)], False, (200, 200, 200), max(1, s // 24), cv2.LINE_AA)
        # keep the border clean: nothing of the template inside the octagon's box
        x0, y0, w, h = self.layout.bbox
        img[y0:y0 + h, x0:x0 + w] = 0
        return img

    def has_polyp(self, index: int) -> bool:
        """Whether frame ``index`` shows the polyp-like bump."""
        return (index % POLYP_PERIOD) in POLYP_FRAMES

    def _motion(self, index: int) -> np.ndarray:
        """2 x 3 affine from texture to field pixels for frame ``index``."""
        x0, y0, w, h = self.layout.bbox
        t = index / self.fps
        tex = self._tex_size
        zoom = 1.0 + 0.12 * math.sin(2 * math.pi * t / 17.0)
        angle = 8.0 * math.sin(2 * math.pi * t / 23.0)
        reach = max(0.0, tex / 2 - math.hypot(w, h) / 2 / 0.88 - 2)
        cx = tex / 2 + reach * math.sin(2 * math.pi * t / 29.0 + self.seed)
        cy = tex / 2 + reach * math.sin(2 * math.pi * t / 37.0 + 1.3 * self.seed)
        m = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
        m[0, 2] += w / 2 - cx
        m[1, 2] += h / 2 - cy
        return m

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` as H x W x 3 uint8 BGR (deterministic)."""
        x0, y0, w, h = self.layout.bbox
        out = self._template.copy()
        scale, thick, line = self.layout.font_scale, self.layout.thickness, self.layout.line
        boxes = self.layout.text_boxes
        n_static = len(_static_lines())
        for box, text in ((boxes[n_static], _clock(index, self.fps)), (boxes[-1], f"Fr {index:06d}")):
            x, y = box[0], box[1]
            cv2.putText(out, text, (x, y + line - max(2, line // 5)), _FONT, scale, (235, 235, 235), thick, cv2.LINE_AA)
        m = self._motion(index)
        cv2.warpAffine(self._texture, m, (w, h), dst=self._field, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
        if self.has_polyp(index):
            self._draw_polyp(index, m)
        roi = out[y0:y0 + h, x0:x0 + w]
        cv2.multiply(self._field, self._vig, dst=roi, scale=1 / 255)
        return out

    def _draw_polyp(self, index: int, m: np.ndarray) -> None:
        x0, y0, w, h = self.layout.bbox
        side = max(8, round(0.22 * h))
        img, alpha, shadow = _polyp_sprite(side)
        # anchored to the tissue: a fixed texture point seen through this frame's motion
        anchor = np.array([self._tex_size / 2 + 0.05 * w, self._tex_size / 2 - 0.04 * h, 1.0])
        px, py = m @ anchor
        # keep it inside the field
        px = int(np.clip(px - side / 2, 0.2 * w, 0.8 * w - side))
        py = int(np.clip(py - side / 2, 0.2 * h, 0.8 * h - side))
        patch = self._field[py:py + side, px:px + side].astype(np.float32)
        blended = patch * (1 - 0.5 * shadow) * (1 - alpha) + img * alpha
        self._field[py:py + side, px:px + side] = blended.astype(np.uint8)

    def read(self) -> Frame | None:
        if self._closed:
            return None
        if self.frames is not None and not self.loop and self._next >= self.frames:
            return None
        index = self._next
        self._next += 1
        return Frame(index, index / self.fps, self.render(index), time.perf_counter())

    def seek(self, index: int) -> None:
        self._next = self._check_seek(index)

    def close(self) -> None:
        self._closed = True


def write_demo_clip(
    path: str | os.PathLike,
    *,
    width: int = 1280,
    height: int = 1024,
    fps: float = 30.0,
    frames: int = 300,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write ``frames`` demo frames to an H.264 MP4 at ``path``; returns the final path."""
    from engine.outputs.writer import VideoWriter

    source = DemoSource(width, height, fps, frames, seed)
    with VideoWriter(path, width, height, to_fraction(fps), force=force) as writer:
        for frame in source:
            writer.write(frame.image)
    logger.info("wrote demo clip %s (%dx%d, %d frames)", path, width, height, frames)
    return Path(path)


__all__ = ["DemoLayout", "DemoSource", "demo_layout", "demo_octagon", "write_demo_clip"]
