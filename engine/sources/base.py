"""What every frame source is: :class:`SourceInfo`, the :class:`Source` base class, and helpers
shared by the sources (:func:`to_bgr8`, :func:`natural_key`).

Each source yields :class:`engine.types.Frame` objects (H x W x 3 uint8 BGR, C-contiguous) and
describes itself with a :class:`SourceInfo`. Every failure a user can cause is raised as
:class:`engine.errors.SourceError` (or :class:`DeviceLostError`); no ``av.error`` escapes.
"""

from __future__ import annotations

import abc
import fractions
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from engine.errors import SourceError
from engine.types import Frame

@dataclass(frozen=True)
class SourceInfo:
    """What a source delivers. For devices, width/height/fps are what the device actually gives
    and ``requested`` is what was asked for."""

    kind: str  # "file" | "device" | "folder" | "image" | "demo"
    name: str
    width: int
    height: int
    fps: float
    rate: fractions.Fraction
    frame_count: int | None
    seekable: bool
    still: bool
    codec: str | None = None
    pixel_format: str | None = None
    requested: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# base class and helpers


class Source(abc.ABC):
    """A stream of frames. A context manager; ``close()`` may be called any number of times."""

    info: SourceInfo
    stopped_early: str | None = None

    @abc.abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end of the stream."""

    def seek(self, index: int) -> None:
        """Make the next :meth:`read` return frame ``index``."""
        raise SourceError(f"{self.info.name} cannot seek (it is a live source)")

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file or device."""

    def _check_seek(self, index: int) -> int:
        if not self.info.seekable:
            raise SourceError(f"{self.info.name} cannot seek (it is a live source)")
        index = int(index)
        count = self.info.frame_count
        if index < 0 or (count is not None and index >= count):
            last = "?" if count is None else count - 1
            raise SourceError(f"cannot seek {self.info.name} to frame {index}: frames are 0..{last}")
        return index

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        i = getattr(self, "info", None)
        return f"<{type(self).__name__} {i.name!r} {i.width}x{i.height}>" if i else super().__repr__()


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Convert gray / BGRA / 16-bit / float images to H x W x 3 uint8 BGR, C-contiguous."""
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        elif np.issubdtype(image.dtype, np.floating):
            image = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        else:
            image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"cannot convert an image of shape {image.shape} to BGR")
    return np.ascontiguousarray(image)


def natural_key(name: str) -> list[Any]:
    """Sort key that puts "img2" before "img10"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
