"""Small test doubles for sources (Qt-free, no video files)."""

from __future__ import annotations

import time
from fractions import Fraction
from types import SimpleNamespace

import numpy as np

from engine.errors import DeviceLostError, SourceError
from engine.types import Frame


def octagon_image(w: int = 160, h: int = 120, value: int = 150, index: int = 0) -> np.ndarray:
    import cv2

    img = np.zeros((h, w, 3), np.uint8)
    cx, cy, r = w // 2, h // 2, int(h * 0.45)
    c = int(r * 0.4)
    pts = np.array([[cx - r + c, cy - r], [cx + r - c, cy - r], [cx + r, cy - r + c],
                    [cx + r, cy + r - c], [cx + r - c, cy + r], [cx - r + c, cy + r],
                    [cx - r, cy + r - c], [cx - r, cy - r + c]], np.int32)
    cv2.fillPoly(img, [pts], (value // 2, value // 2 + index % 50, value))
    return img


class ListSource:
    """Frames from a list of images; optionally fails, or loses the 'device' for a while."""

    def __init__(self, n: int = 20, *, fps: float = 30.0, fail_at: int | None = None,
                 lose_at: int | None = None, lost_reads: int = 0, missing_reopens: int = 0,
                 delay: float = 0.0, size=(160, 120)) -> None:
        self.n, self.fps, self.fail_at, self.delay = n, fps, fail_at, delay
        self.lose_at, self.lost_reads, self.missing_reopens = lose_at, lost_reads, missing_reopens
        self.pos = 0
        self.lost = False
        self.reopens = 0
        w, h = size
        self.info = SimpleNamespace(kind="file", name="list", width=w, height=h, fps=fps,
                                    rate=Fraction(fps).limit_denominator(1001), frame_count=n,
                                    seekable=True, still=False)
        self.stopped_early = None
        self.closed = False

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        if self.lost:
            raise DeviceLostError("capture device fake stopped delivering frames")
        if self.lose_at is not None and self.pos == self.lose_at:
            self.lose_at = None
            self.lost = True
            raise DeviceLostError("capture device fake stopped delivering frames")
        if self.fail_at is not None and self.pos == self.fail_at:
            raise SourceError("fake decode failure")
        if self.pos >= self.n:
            return None
        w, h = self.info.width, self.info.height
        frame = Frame(self.pos, self.pos / self.fps, octagon_image(w, h, index=self.pos), time.perf_counter())
        self.pos += 1
        return frame

    def reopen(self) -> None:
        self.reopens += 1
        if self.missing_reopens > 0:
            self.missing_reopens -= 1
            raise SourceError("capture device fake not found")
        self.lost = False

    def seek(self, index: int) -> None:
        self.pos = index

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
