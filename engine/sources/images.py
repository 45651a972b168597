"""Still images: a folder of images (sorted naturally) or one image file, shown at ``fps``."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from engine.errors import SourceError
from engine.sources.base import Source, SourceInfo, natural_key, to_bgr8
from engine.types import Frame, to_fraction

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2",
     ".pbm", ".pgm", ".ppm", ".pnm"}
)


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file to BGR uint8 (any depth/channels); None when it cannot be read."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as err:
        logger.warning("cannot read image %s: %s", path, err.strerror or err)
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    if image is None:
        return None
    return to_bgr8(image)


class ImageSource(Source):
    """A sorted list of still images (a folder, or one image file), ``fps`` frames per second."""

    def __init__(
        self, paths: list[Path], *, name: str, kind: str, fps: float | None = None, loop: bool = False
    ) -> None:
        self.paths = list(paths)
        self.loop = loop
        self.stopped_early = None
        self._pos = 0
        self._loops = 0
        fps = float(fps) if fps else 1.0
        first = None
        for path in self.paths:
            first = read_image(path)
            if first is not None:
                break
            if len(self.paths) > 1:  # one image: the error below says it
                logger.warning("skipping unreadable image %s", path)
        if first is None:
            what = "image" if kind == "image" else "images in folder"
            raise SourceError(f"cannot read {what} '{name}': not an image file OpenCV can decode")
        self.info = SourceInfo(
            kind=kind, name=name, width=first.shape[1], height=first.shape[0], fps=fps,
            rate=to_fraction(fps), frame_count=len(self.paths), seekable=True, still=True,
        )

    def read(self) -> Frame | None:
        n = len(self.paths)
        while True:
            if self._pos >= n:
                if not self.loop:
                    return None
                self._pos = 0
                self._loops += 1
            index = self._pos + self._loops * n
            path = self.paths[self._pos]
            self._pos += 1
            image = read_image(path)
            if image is None:
                logger.warning("skipping unreadable image %s", path)
                continue
            return Frame(index, index / self.info.fps, image, time.perf_counter())

    def seek(self, index: int) -> None:
        """Next read() returns image ``index`` (or the next readable one after it)."""
        self._pos = self._check_seek(index)
        self._loops = 0

    def close(self) -> None:
        self._pos = len(self.paths)
        self.loop = False


class FolderSource(ImageSource):
    """All images in a folder (not recursive), sorted naturally; other files are skipped."""

    def __init__(self, folder: str | os.PathLike, *, fps: float | None = None, loop: bool = False) -> None:
        folder = Path(folder)
        try:
            entries = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        except OSError as err:
            raise SourceError(f"cannot read folder '{folder}': {err.strerror or err}") from err
        if not entries:
            raise SourceError(
                f"no images in folder '{folder}' (expected {', '.join(sorted(IMAGE_EXTENSIONS)[:6])} ...)"
            )
        entries.sort(key=lambda p: natural_key(p.name))
        super().__init__(entries, name=str(folder), kind="folder", fps=fps, loop=loop)
