"""Frame sources: video files, capture devices, image folders, single images and the demo clip.

``open_source(spec)`` is the one factory the pipeline and the GUI call. The sources live in
their own modules: :mod:`~engine.sources.base` (the :class:`~engine.sources.base.Source` class and
:class:`~engine.sources.base.SourceInfo`), :mod:`~engine.sources.file` (PyAV), :mod:`~engine.sources.images`
(folders and single images), :mod:`~engine.sources.device` (``cv2.VideoCapture``),
:mod:`~engine.sources.v4l2` (listing capture devices) and :mod:`~engine.sources.demo` (the
generated clip). Each yields :class:`engine.types.Frame` objects (H x W x 3 uint8 BGR,
C-contiguous); every failure a user can cause is raised as :class:`engine.errors.SourceError`
(or :class:`DeviceLostError`); no ``av.error`` escapes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from engine.errors import SourceError
from engine.sources.base import Source
from engine.sources.demo import DemoSource
from engine.sources.device import CaptureFactory, DeviceSource
from engine.sources.file import FileSource
from engine.sources.images import IMAGE_EXTENSIONS, FolderSource, ImageSource

_DEMO_SPEC = re.compile(r"demo(?::(\d+)x(\d+)(?:@([\d.]+))?)?", re.IGNORECASE)


def open_source(
    spec: str | os.PathLike | int,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    pixel_format: str | None = None,
    loop: bool = False,
    capture_factory: CaptureFactory | None = None,
) -> Source:
    """Open a video file, capture device, image folder, image or the demo clip.

    ``spec``: "demo" or "demo:WIDTHxHEIGHT@FPS"; a device index (int or digits) or
    "/dev/videoN"; a folder of images; an image file; anything else is a video file.
    ``width``/``height``/``fps``/``pixel_format`` are requests for devices (and demo);
    ``fps`` is the frame rate of folders. ``loop`` restarts files, folders and demo at the end.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return DeviceSource(spec, width=width, height=height, fps=fps, pixel_format=pixel_format,
                            capture_factory=capture_factory)
    text = os.fspath(spec)
    match = _DEMO_SPEC.fullmatch(text) if isinstance(text, str) else None
    if match:
        w = width or (int(match.group(1)) if match.group(1) else 1280)
        h = height or (int(match.group(2)) if match.group(2) else 1024)
        rate = fps or (float(match.group(3)) if match.group(3) else 30.0)
        return DemoSource(width=w, height=h, fps=rate, loop=loop)
    if re.fullmatch(r"/dev/video\d+", text) or text.startswith("/dev/v4l/"):
        return DeviceSource(text, width=width, height=height, fps=fps, pixel_format=pixel_format,
                            capture_factory=capture_factory)
    path = Path(text)
    if not path.exists():
        raise SourceError(f"video not found: {path}")
    if path.is_dir():
        return FolderSource(path, fps=fps, loop=loop)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSource([path], name=str(path), kind="image", fps=fps, loop=loop)
    return FileSource(path, loop=loop)


__all__ = ["open_source"]
