"""Live mode (DESIGN.md, "Threads and pacing"): the video is never held back for the model.

:class:`LiveRunner` runs a capture thread that keeps only the newest frame (stale frames are
counted as dropped) and two analysis threads, the first taking the newest frame each time and the
second finishing the frame before it (the two halves of :class:`engine.pipeline.Analyzer`, so two
frames are in analysis at once), with callbacks for the painter; a capture device that disappears
is reopened with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .errors import DeviceLostError, SourceError
from .overlay import Overlay, render
from .pipeline import Analyzer, Pacer, RateMeter, ms_since
from .slots import JOIN_TIMEOUT_S, LatestSlot
from .types import Frame, FrameResult

logger = logging.getLogger(__name__)


@dataclass
class LiveStats:
    frames_in: int = 0
    analysed: int = 0
    dropped: int = 0
    reconnects: int = 0
    fps: float | None = None
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=10_000))

    def latency_percentile(self, q: float) -> float | None:
        return float(np.percentile(np.fromiter(self.latencies_ms, float), q)) if self.latencies_ms else None


class LiveRunner:
    """Live mode: the video is never held back for the model.

    A capture thread reads the source as fast as it delivers and hands each frame to
    ``on_frame(frame)`` at once (the painter) and to a one-slot mailbox; the analysis always takes
    the newest frame, so stale frames are dropped (counted), never queued. The analysis runs in two
    threads: the first half of a frame (content area, model inputs, classifier) in one while the
    other finishes the frame before it (segmenter, verdict, procedure, overlay, ``on_result``). Each
    finished result goes to ``on_result(result, image)`` where ``image`` is the frame with the
    overlay drawn when an overlay is given (added latency = arrival to that point).
    A capture device that disappears is reported through ``on_status`` and reopened with
    backoff; any other error stops the runner and is kept in ``error`` (and sent to ``on_error``).

    ``pace``: deliver a file at this rate (frames/s) instead of as fast as it decodes.
    ``lockstep``: the capture thread hands over the next frame only once the analysis has taken
    the previous one, so frames are offered exactly as fast as they can be analysed (none is
    dropped): the live path's capacity, for benchmarks.
    """

    def __init__(self, source, analyzer: Analyzer, *, overlay: Overlay | None = None,
                 on_frame: Callable[[Frame], None] | None = None,
                 on_result: Callable[[FrameResult, np.ndarray | None], None] | None = None,
                 on_status: Callable[[str], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 pace: float | None = None, max_frames: int | None = None, lockstep: bool = False,
                 backoff: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> None:
        self.source = source
        self.analyzer = analyzer
        self.overlay = overlay
        self.on_frame, self.on_result = on_frame, on_result
        self.on_status, self.on_error = on_status, on_error
        self.pace = pace
        self.lockstep = lockstep
        self.max_frames = max_frames
        self.backoff = tuple(backoff)
        self.stats = LiveStats()
        self.latest: FrameResult | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._slot = LatestSlot()
        self._handoff = LatestSlot()  # one started analysis, from the first half's thread to the second's
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="endoview-segment")
        self._threads: list[threading.Thread] = []
        self._meter = RateMeter(60)
        self.finished = threading.Event()

    # lifecycle
    def start(self) -> LiveRunner:
        self._threads = [
            threading.Thread(target=self._capture, name="endoview-capture", daemon=True),
            threading.Thread(target=self._start_half, name="endoview-analyse", daemon=True),
            threading.Thread(target=self._finish_half, name="endoview-analyse-finish", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Ask the threads to stop and wait at most ``timeout``; True when all ended."""
        self._stop.set()
        self._slot.close()
        self._handoff.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            logger.warning("live threads did not stop within %.1f s: %s", timeout, alive)
        return not alive

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the source ends (files), max_frames is reached, or an error stops it."""
        return self.finished.wait(timeout)

    def __enter__(self) -> LiveRunner:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def dropped(self) -> int:
        """Frames skipped so far: replaced by a newer one before the analysis took them."""
        return self._slot.dropped

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # threads
    def _status(self, message: str) -> None:
        logger.warning("%s", message)
        if self.on_status is not None:
            self.on_status(message)

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        if self.on_error is not None:
            self.on_error(exc)
        self._stop.set()
        self._slot.close()
        self._handoff.close()
        self.finished.set()

    def _read(self):
        """Next frame, reconnecting a lost device with backoff; None at end of stream."""
        attempt = 0
        while not self._stop.is_set():
            try:
                return self.source.read()
            except DeviceLostError as exc:
                reopen = getattr(self.source, "reopen", None)
                if reopen is None:
                    raise
                self._status(f"{exc}; reconnecting")
                while not self._stop.is_set():
                    delay = self.backoff[min(attempt, len(self.backoff) - 1)]
                    attempt += 1
                    if self._stop.wait(delay):
                        return None
                    try:
                        reopen()
                    except SourceError as again:
                        self._status(f"still waiting for the capture device ({again}); "
                                     f"next try in {self.backoff[min(attempt, len(self.backoff) - 1)]:.1f} s")
                        continue
                    self.stats.reconnects += 1
                    self._status("capture device is back; live analysis resumed")
                    break
        return None

    def _capture(self) -> None:
        pacer = Pacer(1.0) if self.pace else None
        n = 0
        try:
            while not self._stop.is_set():
                frame = self._read()
                if frame is None:
                    break
                if pacer is not None:
                    pacer.wait(n / self.pace, self._stop)
                    frame = Frame(frame.index, frame.timestamp, frame.image, time.perf_counter())
                n += 1
                self.stats.frames_in += 1
                if self.on_frame is not None:
                    self.on_frame(frame)
                self._slot.put(frame)
                if self.lockstep:
                    while not self._slot.wait_empty(0.1) and not self._stop.is_set():
                        pass
                if self.max_frames is not None and n >= self.max_frames:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported, never lost
            self._fail(exc)
            return
        self._slot.close()

    def _start_half(self) -> None:
        """The first half of each frame's analysis (content area, model inputs, classifier), handed
        to the second half's thread; the next frame is taken only once that thread took this one,
        so the newest frame is always the one analysed and at most one waits between the halves."""
        try:
            # this thread runs the field tracker, so it sets its mode: border re-estimates off the live path
            self.analyzer.set_background(True)
            self.analyzer.set_pool(self._pool)  # the segmenter beside the classifier: lower latency
            self.analyzer.warm_up()
            for frame in self._slot:
                self._handoff.put(self.analyzer.start(frame))
                while not self._handoff.wait_empty(0.1) and not self._stop.is_set():
                    pass
        except BaseException as exc:  # noqa: BLE001 - reported, never lost
            self._fail(exc)
            return
        finally:
            self.analyzer.set_background(False)
            self.analyzer.set_pool(None)
            self._pool.shutdown(wait=False)  # a run still going ends by itself
            self._handoff.close()

    def _finish_half(self) -> None:
        try:
            for started in self._handoff:
                frame = started.frame
                result = self.analyzer.finish(started)
                image = None
                if self.overlay is not None:
                    t0 = time.perf_counter()
                    # a painter may be showing this very frame: draw on a copy then
                    image = render(frame, result, self.overlay, copy=self.on_frame is not None)
                    result.timings["overlay"] = ms_since(t0)
                now = time.perf_counter()
                result.fps = self._meter.tick(now)
                self.stats.latencies_ms.append((now - frame.arrival) * 1000.0)
                self.stats.analysed += 1
                self.stats.fps = self._meter.rate
                self.stats.dropped = self._slot.dropped
                self.latest = result
                if self.on_result is not None:
                    self.on_result(result, image)
        except BaseException as exc:  # noqa: BLE001 - reported, never lost
            self._fail(exc)
            return
        if self.error is None:
            self.stats.dropped = self._slot.dropped
            self.finished.set()
