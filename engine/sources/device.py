"""Live capture devices (V4L2/UVC grabbers, webcams) through ``cv2.VideoCapture``."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from engine.errors import DeviceLostError, SourceError
from engine.sources.base import Source, SourceInfo, to_bgr8
from engine.sources.v4l2 import list_devices
from engine.types import Frame, to_fraction

logger = logging.getLogger(__name__)

CaptureFactory = Callable[[int | str], Any]


def _fourcc_str(value: float) -> str | None:
    code = int(value)
    if code <= 0:
        return None
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() else None


def _default_capture(target: int | str) -> Any:
    backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    return cv2.VideoCapture(target, backend)


class DeviceSource(Source):
    """A live capture device (V4L2/UVC grabbers, webcams) through ``cv2.VideoCapture``.

    ``read()`` blocks until a frame arrives. After ``max_failures`` failed reads in a row that
    span at least ``lost_after_s`` seconds it raises :class:`DeviceLostError`; the caller may
    then call :meth:`reopen` (with backoff) until the device is back. Index counts delivered
    frames (across reopens); timestamp is monotonic seconds since the source was opened.
    """

    def __init__(
        self,
        device: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        pixel_format: str | None = None,
        capture_factory: CaptureFactory | None = None,
        max_failures: int = 5,
        lost_after_s: float = 1.0,
    ) -> None:
        self.target, self.name = _device_target(device)
        self.requested = {
            k: v for k, v in
            {"width": width, "height": height, "fps": fps, "pixel_format": pixel_format}.items()
            if v is not None
        }
        if pixel_format is not None and len(pixel_format) != 4:
            raise SourceError(f"pixel format for {self.name} must be a FOURCC like MJPG or YUYV, not {pixel_format!r}")
        self._factory = capture_factory or _default_capture
        self.max_failures = max_failures
        self.lost_after_s = lost_after_s
        self.stopped_early = None
        self._cap: Any = None
        self._count = 0
        self._t0 = time.monotonic()
        self._pending: np.ndarray | None = None
        self._open()

    def _open(self) -> None:
        try:
            cap = self._factory(self.target)
        except cv2.error as err:
            raise SourceError(f"capture device {self.name} could not be opened: {err}") from err
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceError(self._missing_message())
        self._cap = cap
        req = self.requested
        if "pixel_format" in req:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*req["pixel_format"]))
        if "width" in req:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(req["width"]))
        if "height" in req:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(req["height"]))
        if "fps" in req:
            cap.set(cv2.CAP_PROP_FPS, float(req["fps"]))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        fourcc = _fourcc_str(cap.get(cv2.CAP_PROP_FOURCC) or 0)
        if width <= 0 or height <= 0:  # some backends report the size only once streaming
            image = self._read_once()
            if image is None:
                self.close()
                raise SourceError(f"capture device {self.name} opened but delivers no frames")
            self._pending = image
            height, width = image.shape[:2]
        if fps <= 0 or not np.isfinite(fps):
            fps = float(req.get("fps") or 30.0)
            logger.info("%s does not report its frame rate; assuming %.3g fps", self.name, fps)
        actual = {"width": width, "height": height, "fps": fps, "pixel_format": fourcc}
        for key, want in req.items():
            got = actual[key]
            differs = abs(got - want) > 0.01 if key == "fps" else str(got).upper() != str(want).upper() if key == "pixel_format" else got != want
            if differs:
                logger.warning("%s: asked for %s=%s, the device gives %s", self.name, key, want, got)
        self.current_size = (width, height)
        self.info = SourceInfo(
            kind="device", name=self.name, width=width, height=height, fps=fps, rate=to_fraction(fps),
            frame_count=None, seekable=False, still=False, codec=None, pixel_format=fourcc,
            requested=dict(req),
        )
        self._failures = 0
        self._last_good = time.monotonic()
        logger.info("opened %s: %dx%d @ %.3g fps %s", self.name, width, height, fps, fourcc or "")

    def _missing_message(self) -> str:
        exists = not isinstance(self.target, str) or os.path.exists(self.target)
        if sys.platform.startswith("linux") and isinstance(self.target, int):
            exists = os.path.exists(self.name)
        found = list_devices()
        listing = ("devices found: " + ", ".join(str(d) for d in found)) if found else "no capture devices were found"
        if not exists:
            return f"capture device {self.name} not found; {listing}"
        return (
            f"capture device {self.name} could not be opened (in use by another program, "
            f"or not a video capture device); {listing}"
        )

    def _read_once(self) -> np.ndarray | None:
        try:
            ok, image = self._cap.read()
        except cv2.error as err:
            logger.debug("%s: read failed: %s", self.name, err)
            return None
        if not ok or image is None or image.size == 0:
            return None
        return image

    def read(self) -> Frame | None:
        if self._cap is None:
            return None  # closed
        while True:
            if self._pending is not None:
                image, self._pending = self._pending, None
            else:
                image = self._read_once()
            if image is not None:
                break
            self._failures += 1
            if self._failures >= self.max_failures and time.monotonic() - self._last_good >= self.lost_after_s:
                raise DeviceLostError(f"capture device {self.name} stopped delivering frames")
            time.sleep(min(0.1, 0.01 * self._failures))
        self._failures = 0
        self._last_good = time.monotonic()
        image = to_bgr8(image)
        size = (image.shape[1], image.shape[0])
        if size != self.current_size:
            logger.info("%s: frame size changed from %dx%d to %dx%d", self.name, *self.current_size, *size)
            self.current_size = size
        frame = Frame(self._count, time.monotonic() - self._t0, image, time.perf_counter())
        self._count += 1
        return frame

    def reopen(self) -> None:
        """Release the device and open it again (SourceError while it is still missing)."""
        self.close()
        self._pending = None
        self._open()

    def close(self) -> None:
        if self._cap is not None:
            cap, self._cap = self._cap, None
            try:
                cap.release()
            except cv2.error as err:
                logger.debug("releasing %s: %s", self.name, err)


def _device_target(device: int | str) -> tuple[int | str, str]:
    """(what to pass to VideoCapture, the name for messages)."""
    linux = sys.platform.startswith("linux")
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        index = int(device)
        return index, (f"/dev/video{index}" if linux else f"camera {index}")
    path = os.path.realpath(device) if linux else device
    match = re.fullmatch(r"/dev/video(\d+)", path)
    if match:
        return int(match.group(1)), str(device)
    return str(device), str(device)
