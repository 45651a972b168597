"""The demo source: deterministic, endoscope-like layout, cheap; and the demo clip writer."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.sources.demo import DemoSource, demo_layout, demo_octagon, write_demo_clip
from engine.errors import OutputExistsError, SourceError
from engine.sources import open_source

SIZES = [(160, 120), (640, 480), (1280, 1024), (1920, 1080)]


def _mask(poly: np.ndarray, w: int, h: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [poly], 255)
    return m


def test_frames_are_deterministic_and_seekable() -> None:
    a = DemoSource(320, 240, frames=20)
    b = DemoSource(320, 240, frames=20)
    frames = [f.image for f in a]
    assert len(frames) == 20
    assert [f.index for f in DemoSource(320, 240, frames=3)] == [0, 1, 2]
    b.seek(7)
    assert np.array_equal(b.read().image, frames[7])
    b.seek(3)
    assert np.array_equal(b.read().image, frames[3])
    assert not np.array_equal(frames[0], frames[10])  # it moves
    assert not np.array_equal(DemoSource(320, 240, seed=1).render(5), frames[5])
    with pytest.raises(SourceError, match="frames are 0..19"):
        b.seek(20)


@pytest.mark.parametrize("w,h", SIZES)
def test_black_outside_the_octagon_except_text_and_thumbnail(w: int, h: int) -> None:
    src = DemoSource(w, h)
    layout = src.layout
    inside = _mask(layout.octagon, w, h)
    allowed = inside.copy()
    for x, y, bw, bh in layout.text_boxes + ((layout.thumbnail,) if layout.thumbnail else ()):
        allowed[y : y + bh, x : x + bw] = 255
    for index in (0, 150, 4321):
        gray = src.render(index).max(axis=2)
        assert gray[allowed == 0].max() <= 10
        assert np.percentile(gray[inside > 0], 1) > 25  # the field is lit up to its edge
    # there is text: something bright outside the field
    assert (gray[(inside == 0)] > 200).sum() > 20


@pytest.mark.parametrize("w,h", SIZES)
def test_octagon_geometry(w: int, h: int) -> None:
    poly = demo_octagon(w, h)
    assert poly.shape == (8, 2) and poly.dtype == np.int32
    x, y, bw, bh = cv2.boundingRect(poly)
    assert 0.85 <= bh / h <= 0.9
    assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
    assert x + bw / 2 >= w / 2  # centred or a bit to the right
    assert (x, y, bw, bh) == demo_layout(w, h).bbox
    assert demo_octagon(w, h) is not demo_octagon(w, h)  # callers get their own copy


def test_field_looks_like_mucosa() -> None:
    src = DemoSource(640, 480)
    img = src.render(30).astype(float)
    inside = _mask(src.layout.octagon, 640, 480) > 0
    b, g, r = (img[..., c][inside].mean() for c in range(3))
    assert r > g + 30 and r > b + 30  # pinkish red
    assert img[..., 2][inside].std() > 10  # textured, not flat


def test_polyp_appears_in_a_stretch() -> None:
    src = DemoSource(320, 256)
    flags = [src.has_polyp(i) for i in range(300)]
    assert 30 <= sum(flags) <= 150 and not flags[0]
    first = flags.index(True)
    # same motion, with vs without the bump: the frames differ only there
    with_bump = src.render(first)
    src.has_polyp = lambda i: False  # type: ignore[method-assign]
    without = src.render(first)
    diff = np.abs(with_bump.astype(int) - without).max(axis=2) > 20
    assert 0.005 < diff.mean() < 0.1


def test_open_source_demo_specs() -> None:
    with open_source("demo:320x240@25") as src:
        assert (src.info.kind, src.info.width, src.info.height, src.info.fps) == ("demo", 320, 240, 25.0)
        assert src.info.rate == 25 and src.info.seekable and not src.info.still
        frame = src.read()
        assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
        assert frame.image.flags.c_contiguous
    with open_source("demo", width=200, height=160, fps=29.97) as src:
        assert (src.info.width, src.info.height, src.info.rate) == (200, 160, Fraction(30000, 1001))
        assert src.read().timestamp == 0.0


def test_loop_keeps_counting() -> None:
    src = DemoSource(96, 64, frames=5, loop=True)
    assert [src.read().index for _ in range(12)] == list(range(12))
    assert src.info.frame_count is None


def test_write_demo_clip(tmp_path: Path) -> None:
    path = write_demo_clip(tmp_path / "demo.mp4", width=192, height=144, fps=25, frames=12)
    assert path == tmp_path / "demo.mp4"
    with open_source(path) as src:
        assert (src.info.width, src.info.height, src.info.frame_count, src.info.rate) == (192, 144, 12, 25)
        first = src.read().image
    ref = DemoSource(192, 144, 25).render(0)
    assert np.abs(first.astype(int) - ref).mean() < 6
    with pytest.raises(OutputExistsError):
        write_demo_clip(path, width=192, height=144, fps=25, frames=2)
    write_demo_clip(path, width=192, height=144, fps=25, frames=2, force=True)
