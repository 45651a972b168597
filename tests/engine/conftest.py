"""Shared fixtures for the engine's source/writer/demo tests: tiny clips with the frame index
drawn in, so exact-seek checks are real."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

BITS = 7  # frame index encoded as 7 black/white blocks along the top row
BLOCK = 16


def index_image(i: int, width: int = 160, height: int = 120) -> np.ndarray:
    """A BGR frame whose index can be read back after lossy coding (see read_index)."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = ((i * 37) % 200 + 30, (i * 91) % 200 + 30, (i * 53) % 200 + 30)
    img[: BLOCK + 4] = 0
    for b in range(BITS):
        if (i >> b) & 1:
            img[2 : 2 + BLOCK, 2 + b * (BLOCK + 4) : 2 + b * (BLOCK + 4) + BLOCK] = 255
    return img


def read_index(img: np.ndarray) -> int:
    """Inverse of index_image."""
    value = 0
    for b in range(BITS):
        block = img[6 : BLOCK - 2, 6 + b * (BLOCK + 4) : b * (BLOCK + 4) + BLOCK - 2]
        if block.mean() > 128:
            value |= 1 << b
    return value


# container -> (format, codec, rate)
CLIPS = {
    "mp4": ("mp4", "libx264", Fraction(30)),
    "avi": ("avi", "mpeg4", Fraction(25)),
    "mkv": ("matroska", "libx264", Fraction(30000, 1001)),
    "mov": ("mov", "libx264", Fraction(24)),
    "mpg": ("mpeg", "mpeg2video", Fraction(25)),
}


def make_clip(
    path: Path, n: int = 40, *, ext: str | None = None, width: int = 160, height: int = 120,
    gop: int = 10, options: dict | None = None,
) -> Path:
    """Write ``n`` index frames to ``path`` with the container/codec for its extension."""
    fmt, codec, rate = CLIPS[ext or path.suffix.lstrip(".")]
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "18", "bf": "3"}
        else:
            stream.options = {"qscale": "2", "bf": "2"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(index_image(i, width, height), format="bgr24")
            frame.pts = i
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 40-frame 160x120 clip per container, shared by the whole session (read-only)."""
    folder = tmp_path_factory.mktemp("clips")
    return {ext: make_clip(folder / f"clip.{ext}", 40) for ext in CLIPS}


@pytest.fixture(scope="session")
def media() -> SimpleNamespace:
    """The clip helpers above, for tests (test modules do not import conftest)."""
    return SimpleNamespace(
        CLIPS=CLIPS, make_clip=make_clip, index_image=index_image, read_index=read_index
    )
