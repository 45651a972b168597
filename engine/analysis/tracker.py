"""The content area of a video, stable over time: periodic re-estimates with hysteresis, so the
crop does not jitter, optionally computed in a background worker (live mode)."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from engine.analysis.content_area import check_image, detect_content_area
from engine.types import ContentArea

__all__ = ["ContentAreaTracker"]

logger = logging.getLogger(__name__)


#: niceness of the background re-estimates' thread: the analysis of the frames comes first
BACKGROUND_NICENESS = 10


def lower_priority() -> None:
    """Lower the calling thread's scheduling priority (Linux: a thread's id is a process id for
    ``setpriority``), so a periodic re-estimate waits for the frame being analysed instead of
    delaying it; elsewhere, or where it is not allowed, nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except (AttributeError, OSError) as exc:
        logger.debug("content area: background priority not lowered (%s)", exc)


class ContentAreaTracker:
    """Content area of a video, stable over time.

    Re-estimates every ``every`` frames (and at once on a frame-size change or a backwards seek).
    A new estimate replaces the current area only when it differs by more than ``tolerance``
    (bbox change relative to the frame size, or another shape) for ``confirm`` re-estimates in a
    row; otherwise the current ContentArea object is returned unchanged (callers cache by
    identity). Estimates with a low confidence (a black or blurred frame) neither confirm nor
    cancel a pending change.

    ``set_background(True)`` (live mode) moves the periodic re-estimates off the caller's thread:
    a copy of the frame goes to a worker and its estimate is considered on a later frame, so the
    live path never pays for a detection. The first estimate and size changes stay synchronous.
    Call ``close()`` (or ``set_background(False)``) to end the worker. Like ``update``, call it
    from the thread that runs the tracker.
    """

    MIN_CONFIDENCE = 0.3

    def __init__(self, every: int = 30, tolerance: float = 0.02, confirm: int = 2) -> None:
        if every < 1 or confirm < 1 or tolerance < 0:
            raise ValueError(
                f"ContentAreaTracker needs every >= 1, confirm >= 1, tolerance >= 0 "
                f"(got every={every}, confirm={confirm}, tolerance={tolerance})"
            )
        self.every = every
        self.tolerance = tolerance
        self.confirm = confirm
        self.current: ContentArea | None = None
        self._last_index: int | None = None
        self._pending = 0
        self.estimates = 0  # how many times detection ran (for tests and statistics)
        self._background = False
        self._executor: ThreadPoolExecutor | None = None
        self._future: Future | None = None

    @property
    def background(self) -> bool:
        """Whether the periodic re-estimates run in a background worker (see ``set_background``)."""
        return self._background

    def set_background(self, on: bool) -> None:
        """Periodic re-estimates in a background worker (True) or on the caller's thread (False,
        which also ends the worker). Call from the thread that runs ``update``."""
        self._background = bool(on)
        if not on:
            self.close()

    def close(self) -> None:
        """End the background worker (waits for a detection under way: a few milliseconds)."""
        executor, self._executor, self._future = self._executor, None, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def reset(self) -> None:
        self.current = None
        self._last_index = None
        self._pending = 0
        self._future = None

    def _differs(self, new: ContentArea) -> bool:
        cur = self.current
        assert cur is not None
        if new.shape != cur.shape:
            return True
        w, h = cur.frame_size
        scale = (w, h, w, h)
        return any(abs(a - b) / s > self.tolerance for a, b, s in zip(new.bbox, cur.bbox, scale))

    def update(self, image_bgr: np.ndarray, index: int) -> ContentArea:
        image = check_image(image_bgr)
        size = (image.shape[1], image.shape[0])
        cur = self.current
        if cur is None or cur.frame_size != size:
            if cur is not None:
                logger.info("content area: frame size changed to %dx%d, re-estimating", *size)
            self._future = None
            self.current = detect_content_area(image)
            self.estimates += 1
            self._last_index = index
            self._pending = 0
            return self.current
        if self._future is not None and self._future.done():
            future, self._future = self._future, None
            new = future.result()
            if new.frame_size == size:
                self._consider(new)
        last = self._last_index if self._last_index is not None else index
        if index - last < self.every and index >= last:
            return self.current
        self._last_index = index
        if self._background:
            if self._future is None:  # one at a time: a busy worker skips this round
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="endoview-content-area",
                                                        initializer=lower_priority)
                self._future = self._executor.submit(self._estimate, image.copy())
            return self.current
        self._consider(self._estimate(image))
        return self.current

    def _estimate(self, image: np.ndarray) -> ContentArea:
        self.estimates += 1
        return detect_content_area(image)

    def _consider(self, new: ContentArea) -> None:
        """Hysteresis: adopt ``new`` only after ``confirm`` differing estimates in a row."""
        cur = self.current
        if new.confidence < self.MIN_CONFIDENCE and cur.confidence >= self.MIN_CONFIDENCE:
            return
        if not self._differs(new):
            self._pending = 0
            return
        self._pending += 1
        if self._pending >= self.confirm:
            logger.info(
                "content area changed: %s %s -> %s %s", cur.shape, cur.bbox, new.shape, new.bbox
            )
            self.current = new
            self._pending = 0
