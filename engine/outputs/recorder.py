"""Recording live video to H.264 MP4 that survives the program being killed (Qt-free).

The file is written by :class:`engine.outputs.writer.VideoWriter` in its fragmented mode: a
fragmented MP4 (``movflags=frag_keyframe+empty_moov+default_base_moof``) under its final name,
every fragment complete on disk once written, a new one at each keyframe. Keyframes come every
half second and the encoder has no lookahead (``tune=zerolatency``), so a SIGKILL or a power cut
loses at most the last half second or so.

:class:`Recorder` encodes in its own thread behind a bounded queue: ``write`` never blocks the
capture (a full queue drops the frame and counts it). The viewer's REC button and the headless
``endoview record`` command both use it, through :func:`recording_sink`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import queue
import shutil
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..errors import ExportError
from ..files import write_error
from ..types import to_fraction
from .writer import VideoWriter

logger = logging.getLogger(__name__)


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
    stops and keeps what was written. A frame of another size than ``width`` x ``height`` (a
    device that changed its format) is scaled to it. ``force``: replace an existing file.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, rate: Fraction | float, *,
                 queue_size: int = 32, on_error: Callable[[BaseException], None] | None = None,
                 force: bool = False) -> None:
        self.path = Path(path)
        self.rate = to_fraction(rate)
        self.on_error = on_error
        self.dropped = 0
        self.error: BaseException | None = None
        self._writer = VideoWriter(self.path, width, height, self.rate, fragmented=True, force=force,
                                   what="recording", force_hint=None)
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, name="endoview-recorder", daemon=True)
        self._thread.start()
        logger.info("recording to %s", self.path)

    @property
    def frames(self) -> int:
        return self._writer.frames_written

    @property
    def duration_s(self) -> float:
        return self._writer.frames_written / float(self.rate)

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
        size = (self._writer.width, self._writer.height)
        try:
            while (image := self._queue.get()) is not _STOP:
                if image.shape[1::-1] != size:  # a device that changed its format
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                self._writer.write(image)
        except BaseException as exc:  # noqa: BLE001 - reported, never lost
            self.error = exc if isinstance(exc, ExportError) else write_error(exc, self.path, in_place=True)
            logger.warning("%s", self.error)
            if self.on_error is not None:
                self.on_error(self.error)
        finally:
            try:
                self._writer.close()
            except ExportError as err:
                logger.warning("closing the recording: %s", err)
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


__all__ = ["Recorder", "recording_path", "recording_sink"]
