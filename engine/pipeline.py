"""The per-frame pipeline and its three modes (DESIGN.md, "Threads and pacing").

source -> crop -> resize -> classify -> (second pass) -> overlay -> sink

- ``Analyzer``: the analysis of one frame (content area, model input, classifier) with timings;
  it asks the second-pass worker (engine.analysis.second_pass) for a look when its triggers fire and
  attaches the worker's newest result.
- ``run_stages``: a short chain of threads joined by bounded queues, order kept, errors carried to
  the caller, stopped cooperatively; used by export (every frame, as fast as possible).
- ``replay``: every frame in order, paced to the source rate times a speed.
- ``LiveRunner``: a capture thread that keeps only the newest frame (stale frames are counted as
  dropped), an analysis thread that always takes the newest one, callbacks for the painter.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .analysis.classifier import Classifier
from .analysis.crop import model_input
from .analysis.segmenter import Segmenter
from .analysis.tracker import ContentAreaTracker
from .analysis.verdict import DEFAULT_OPERATING_POINT, Verdict
from .errors import DeviceLostError, EndoviewError, PipelineError, SourceError
from .overlay import Overlay
from .types import Frame, FrameResult

logger = logging.getLogger(__name__)

#: How long a stopping pipeline waits for each of its threads.
JOIN_TIMEOUT_S = 2.0


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class RateMeter:
    """Frames per second over a sliding window of completion times."""

    def __init__(self, window: int = 30) -> None:
        self._times: deque[float] = deque(maxlen=window)

    def tick(self, now: float | None = None) -> float | None:
        self._times.append(time.perf_counter() if now is None else now)
        return self.rate

    @property
    def rate(self) -> float | None:
        if len(self._times) < 2:
            return None
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else None


class Analyzer:
    """Content area -> model input -> classifier and/or segmenter for one frame, with timings.

    ``classifier`` and ``segmenter`` may be None (both None: passthrough, content area only).
    With both, each gets its own model input (their sizes may differ), "inference" is the sum and
    "classifier" / "segmenter" time each model.
    Not thread-safe: one Analyzer per analysis thread.
    """

    def __init__(self, classifier: Classifier | None, *, tracker: ContentAreaTracker | None = None,
                 smooth: bool = True, second_pass=None, triggers: Callable | None = None,
                 segmenter: Segmenter | None = None) -> None:
        self.classifier = classifier
        self.segmenter = segmenter
        self.tracker = tracker or ContentAreaTracker()
        self.smooth = smooth
        self.second_pass = second_pass  # a started SecondPassWorker, or None
        self.triggers = triggers  # FrameResult -> bool: ask the second pass to look at this frame
        self.untrained = any(m is not None and not m.bundle.trained for m in (classifier, segmenter))
        self.verdict = Verdict(classifier.operating_point if classifier is not None else DEFAULT_OPERATING_POINT)
        self._meter = RateMeter()

    @property
    def model(self) -> Classifier | Segmenter | None:
        """The frame-by-frame model (the classifier, else the segmenter), for names and backends."""
        return self.classifier if self.classifier is not None else self.segmenter

    def __call__(self, frame: Frame, timings: dict[str, float] | None = None) -> FrameResult:
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        area = self.tracker.update(frame.image, frame.index)
        timings["crop"] = _ms(t0)
        prediction = segmentation = None
        inputs: dict[tuple, np.ndarray] = {}  # (size, inset) -> model input, shared by both models
        if self.classifier is not None:
            t0 = time.perf_counter()
            key = (self.classifier.input_size, self.classifier.bundle.inset)
            x = inputs[key] = model_input(frame.image, area, key[0], inset=key[1])
            timings["resize"] = _ms(t0)
            prediction = self.classifier.predict(x, smooth=self.smooth)
            timings["inference"] = timings["classifier"] = prediction.latency_ms
        if self.segmenter is not None:
            t0 = time.perf_counter()
            key = (self.segmenter.input_size, self.segmenter.bundle.inset)
            x = inputs.get(key)
            if x is None:
                x = model_input(frame.image, area, key[0], inset=key[1])
                timings["resize"] = timings.get("resize", 0.0) + _ms(t0)
            t0 = time.perf_counter()
            segmentation = self.segmenter.segment(x, area, smooth=self.smooth)
            timings["inference"] = timings.get("inference", 0.0) + segmentation.latency_ms
            timings["segmenter"] = segmentation.latency_ms
            timings["mask"] = _ms(t0) - segmentation.latency_ms
        result = FrameResult(frame, area, prediction, segmentation=segmentation, timings=timings,
                             untrained=self.untrained, fps=self._meter.tick(),
                             polyp=self.verdict(prediction, segmentation))
        if self.second_pass is not None:
            if self.triggers is not None and self.triggers(result):
                self.second_pass.request(frame, area)
            result.second_pass = self.second_pass.latest
        return result

    def reset(self) -> None:
        """After a seek or a source change: forget smoothing history and the tracked field."""
        if self.classifier is not None:
            self.classifier.reset()
        if self.segmenter is not None:
            self.segmenter.reset()
        self.tracker.reset()


# --------------------------------------------------------------------------- stage chain

class _End:
    """End-of-stream marker."""


class _Failure:
    def __init__(self, exc: BaseException, stage: str) -> None:
        self.exc = exc
        self.stage = stage


_END = _End()


class _AnyEvent:
    """Set when either the caller's event or the chain's own is set (the caller's is never set
    by the chain, so after the loop it still says whether the caller cancelled)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def _put(q: queue.Queue, item, stop) -> bool:
    """Put with a stop check, so a full queue never blocks a stopping pipeline."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop):
    while True:
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            if stop.is_set():
                return _END


def run_stages(items: Iterable, stages: Sequence[tuple[str, Callable]], *, maxsize: int = 4,
               stop: threading.Event | None = None) -> Iterator:
    """Run ``items`` through ``stages`` (each ``(name, fn)``) in threads, yielding the outputs in order.

    The producer (iterating ``items``) and each stage run in their own thread, joined by bounded
    queues of ``maxsize``. An exception in any thread stops the chain and is re-raised here (a
    PipelineError naming the stage, unless it is already an EndoviewError). Leaving the loop early
    (break, exception, ``stop.set()``) stops every thread; they are joined with a bounded wait.
    The chain never sets the caller's ``stop``.
    """
    halt = threading.Event()
    stop = _AnyEvent(halt, stop) if stop is not None else halt
    queues = [queue.Queue(maxsize) for _ in range(len(stages) + 1)]
    threads: list[threading.Thread] = []

    def produce() -> None:
        out = queues[0]
        try:
            for item in items:
                if not _put(out, item, stop):
                    return
            _put(out, _END, stop)
        except BaseException as exc:  # noqa: BLE001 - carried to the caller
            _put(out, _Failure(exc, "source"), stop)

    def work(name: str, fn: Callable, q_in: queue.Queue, q_out: queue.Queue) -> None:
        while True:
            item = _get(q_in, stop)
            if isinstance(item, (_End, _Failure)):
                _put(q_out, item, stop)
                return
            try:
                result = fn(item)
            except BaseException as exc:  # noqa: BLE001 - carried to the caller
                _put(q_out, _Failure(exc, name), stop)
                return
            if not _put(q_out, result, stop):
                return

    threads.append(threading.Thread(target=produce, name="endoview-source", daemon=True))
    for i, (name, fn) in enumerate(stages):
        threads.append(threading.Thread(target=work, args=(name, fn, queues[i], queues[i + 1]),
                                        name=f"endoview-{name}", daemon=True))
    for t in threads:
        t.start()
    try:
        while True:
            item = _get(queues[-1], stop)
            if isinstance(item, _End):
                return
            if isinstance(item, _Failure):
                if isinstance(item.exc, EndoviewError):
                    raise item.exc
                raise PipelineError(f"{item.stage} stage failed: {item.exc!r}") from item.exc
            yield item
    finally:
        halt.set()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            logger.warning("pipeline threads still running after stop: %s", ", ".join(alive))


def timed_frames(source, *, start: int = 0, end: int | None = None) -> Iterator[tuple[Frame, dict]]:
    """Frames ``start`` .. ``end`` (exclusive) from ``source``, each with its decode time."""
    if start:
        source.seek(start)
    while True:
        t0 = time.perf_counter()
        frame = source.read()
        if frame is None or (end is not None and frame.index >= end):
            return
        yield frame, {"decode": _ms(t0)}


# --------------------------------------------------------------------------- replay

class Pacer:
    """Sleeps so that frame timestamps are shown at ``speed`` times real time."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self._t0: float | None = None
        self._ts0 = 0.0

    def reset(self) -> None:
        self._t0 = None

    def wait(self, timestamp: float, stop: threading.Event | None = None) -> None:
        now = time.perf_counter()
        if self._t0 is None or self.speed <= 0:
            self._t0, self._ts0 = now, timestamp
            return
        due = self._t0 + (timestamp - self._ts0) / self.speed
        delay = due - now
        if delay < -0.25:  # far behind (slow machine, seek): restart the clock, do not race
            self._t0, self._ts0 = now, timestamp
        elif delay > 0:
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)


def replay(source, analyzer: Analyzer, *, speed: float = 1.0, start: int = 0,
           stop: threading.Event | None = None) -> Iterator[FrameResult]:
    """Every frame in order, analysed, paced to the source's timestamps at ``speed``."""
    stop = stop or threading.Event()
    pacer = Pacer(speed)

    def analyse(item):
        frame, timings = item
        return analyzer(frame, timings)

    for result in run_stages(timed_frames(source, start=start), [("analyse", analyse)], stop=stop):
        pacer.wait(result.frame.timestamp, stop)
        if stop.is_set():
            return
        yield result


# --------------------------------------------------------------------------- live

class LatestSlot:
    """A one-item mailbox: ``put`` replaces an unread item (counted as dropped)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def get(self, timeout: float) -> object | None:
        """The newest item, or None after ``timeout`` or once closed and empty."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def wait_empty(self, timeout: float) -> bool:
        """Wait until the item was taken (or the slot closed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._item is None or self._closed, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


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
    ``on_frame(frame)`` at once (the painter) and to a one-slot mailbox; the analysis thread
    always takes the newest frame, so stale frames are dropped (counted), never queued. Each
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
        self._threads: list[threading.Thread] = []
        self._meter = RateMeter(60)
        self.finished = threading.Event()

    # lifecycle
    def start(self) -> LiveRunner:
        self.analyzer.tracker.background = True  # periodic border re-estimates off the live path
        self._threads = [
            threading.Thread(target=self._capture, name="endoview-capture", daemon=True),
            threading.Thread(target=self._analyse, name="endoview-analyse", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Ask both threads to stop and wait at most ``timeout``; True when both ended."""
        self._stop.set()
        self._slot.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            logger.warning("live threads did not stop within %.1f s: %s", timeout, alive)
        else:
            self.analyzer.tracker.background = False
        return not alive

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the source ends (files), max_frames is reached, or an error stops it."""
        return self.finished.wait(timeout)

    def __enter__(self) -> LiveRunner:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

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

    def _analyse(self) -> None:
        try:
            while True:
                frame = self._slot.get(timeout=0.1)
                if frame is None:
                    if self._slot.closed:
                        break
                    continue
                result = self.analyzer(frame)
                image = None
                if self.overlay is not None:
                    t0 = time.perf_counter()
                    # a painter may be showing this very frame: draw on a copy then
                    canvas = frame.image.copy() if self.on_frame is not None else frame.image
                    image = self.overlay.draw(canvas, result)
                    result.timings["overlay"] = _ms(t0)
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
        self.stats.dropped = self._slot.dropped
        self.finished.set()
