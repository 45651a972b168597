"""Recording live video to H.264 MP4 that survives the program being killed (Qt-free).

The file is a *fragmented* MP4 (``movflags=frag_keyframe+empty_moov+default_base_moof``)
written under its final name: every fragment is complete on disk once written, and a new one
starts at each keyframe. Keyframes come every half second and the encoder has no lookahead
(``tune=zerolatency``), so a SIGKILL or a power cut loses at most the last half second or so.

:class:`Recorder` encodes in its own thread behind a bounded queue: ``write`` never blocks the
capture (a full queue drops the frame and counts it). The viewer's REC button and the headless
``endoview record`` command both use it, through :func:`recording_sink`.
"""

from __future__ import annotations

import datetime as _dt
import errno
import logging
import os
import queue
import shutil
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np

from ..errors import ExportError, OutputExistsError
from ..types import to_fraction
from .writer import encoder_available

logger = logging.getLogger(__name__)

FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
KEYFRAME_INTERVAL_S = 0.5


class FragmentedWriter:
    """BGR frames -> fragmented H.264 MP4 at ``path``, in place (no temporary name)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, rate: Fraction | float) -> None:
        self.path = Path(path)
        self.size = (int(width) // 2 * 2, int(height) // 2 * 2)  # 4:2:0 needs even sizes
        self.rate = to_fraction(rate)
        self.frames = 0
        if self.path.exists():
            raise OutputExistsError(f"recording exists: {self.path}")
        if not self.path.parent.is_dir():
            raise ExportError(f"recording folder does not exist: {self.path.parent} (create it first)")
        codec = "libx264" if encoder_available("libx264") else "mpeg4"
        try:
            self._container = av.open(str(self.path), "w", format="mp4", options=FRAGMENTED)
            self._stream = self._container.add_stream(codec, rate=self.rate)
            self._stream.width, self._stream.height = self.size
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.gop_size = max(1, round(float(self.rate) * KEYFRAME_INTERVAL_S))
            self._stream.options = ({"preset": "veryfast", "crf": "23", "tune": "zerolatency"}
                                    if codec == "libx264" else {"qscale": "4"})
        except (OSError, av.FFmpegError) as err:
            raise _error(self.path, err) from err

    def write(self, image: np.ndarray) -> None:
        w, h = self.size
        if image.shape[:2] != (h, w):  # odd size, or a device that changed its format
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        frame.pts = self.frames
        frame.time_base = 1 / self.rate
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (OSError, av.FFmpegError) as err:
            raise _error(self.path, err) from err
        self.frames += 1

    def close(self) -> None:
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()


def _error(path: Path, err: BaseException) -> ExportError:
    if getattr(err, "errno", None) == errno.ENOSPC:
        return ExportError(f"disk full while recording {path}; what was written so far is kept")
    return ExportError(f"cannot record to {path}: {getattr(err, 'strerror', None) or err}")


def recording_path(folder: str | os.PathLike, kind: str, now: _dt.datetime | None = None) -> Path:
    """``folder/rec-YYYYmmdd-HHMMSS-KIND.mp4`` (a free name)."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    path = Path(folder) / f"rec-{stamp}-{kind}.mp4"
    n = 1
    while path.exists():
        n += 1
        path = Path(folder) / f"rec-{stamp}-{kind}-{n}.mp4"
    return path


_STOP = object()


class Recorder:
    """Encodes frames given to :meth:`write` in a worker thread; see the module docstring.

    ``on_error(exc)`` is called from the worker when writing fails (disk full...); the recording
    stops and keeps what was written.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, rate: Fraction | float, *,
                 queue_size: int = 32, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.path = Path(path)
        self.rate = to_fraction(rate)
        self.on_error = on_error
        self.dropped = 0
        self.error: BaseException | None = None
        self._writer = FragmentedWriter(self.path, width, height, self.rate)
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, name="endoview-recorder", daemon=True)
        self._thread.start()
        logger.info("recording to %s", self.path)

    @property
    def frames(self) -> int:
        return self._writer.frames

    @property
    def duration_s(self) -> float:
        return self._writer.frames / float(self.rate)

    @property
    def recording(self) -> bool:
        return self._thread.is_alive()

    def free_bytes(self) -> int:
        """Free space on the recording's disk."""
        return shutil.disk_usage(self.path.parent).free

    def write(self, image: np.ndarray) -> bool:
        """Queue one BGR frame; False when it was dropped (encoder behind, or stopped)."""
        if self.error is not None or not self._thread.is_alive():
            return False
        try:
            self._queue.put_nowait(image)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def stop(self, timeout: float = 10.0) -> Path:
        """Finish the queued frames and close the file (bounded wait); returns the path."""
        end = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < end:
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(max(0.0, end - time.monotonic()))
        if self._thread.is_alive():
            logger.warning("recorder %s did not finish within %.1f s", self.path, timeout)
        if self.error is not None:
            raise self.error
        return self.path

    def _run(self) -> None:
        try:
            while (image := self._queue.get()) is not _STOP:
                self._writer.write(image)
        except BaseException as exc:  # noqa: BLE001 - reported, never lost
            self.error = exc if isinstance(exc, ExportError) else _error(self.path, exc)
            logger.warning("%s", self.error)
            if self.on_error is not None:
                self.on_error(self.error)
        finally:
            try:
                self._writer.close()
            except (OSError, av.FFmpegError) as err:
                logger.warning("closing the recording %s: %s", self.path, err)
            logger.info("recorded %s (%d frames, %d dropped)", self.path, self.frames, self.dropped)


def recording_sink(recorders: dict[str, Recorder], overlay) -> Callable:
    """A player sink (``engine.player.Player.add_sink``) feeding ``recorders``: ``"raw"`` gets
    each frame as captured, ``"annotated"`` the frame with ``overlay`` and the newest result drawn.
    The window's REC button and ``endoview record`` both record through this."""
    raw, annotated = recorders.get("raw"), recorders.get("annotated")

    def sink(shown) -> None:
        if raw is not None:
            raw.write(shown.frame.image)
        if annotated is not None:
            annotated.write(shown.annotated(overlay))

    return sink


__all__ = ["FragmentedWriter", "Recorder", "recording_path", "recording_sink"]
