"""The per-frame pipeline and its three modes (DESIGN.md, "Threads and pacing").

source -> crop -> resize -> classify -> (second pass) -> overlay -> sink

- ``Analyzer``: the analysis of one frame (content area, model input, classifier) with timings;
  it asks the second-pass worker (engine.analysis.second_pass) for a look when its triggers fire and
  attaches the worker's newest result.
- ``run_stages``: a short chain of threads joined by bounded queues, order kept, errors carried to
  the caller, stopped cooperatively.
- ``analysed_frames``: every frame of a source (or a range) analysed, in order, decode and
  analysis overlapping in ``run_stages``; as fast as possible (export, the timeline, the bench) or
  paced to the source rate times a speed (the player's replay).
- ``LiveRunner`` (:mod:`engine.live`): a capture thread that keeps only the newest frame (stale
  frames are counted as dropped), an analysis thread that always takes the newest one, callbacks
  for the painter.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .analysis.classifier import Classifier
from .analysis.crop import ModelInputs
from .analysis.segmenter import Segmenter
from .analysis.tracker import ContentAreaTracker
from .analysis.verdict import DEFAULT_OPERATING_POINT, Verdict
from .errors import EndoviewError, PipelineError
from .procedure.stage import ProcedureStage
from .slots import JOIN_TIMEOUT_S
from .types import ContentArea, Frame, FrameResult, Prediction

logger = logging.getLogger(__name__)


def ms_since(t0: float) -> float:
    """Milliseconds since ``t0`` (a ``time.perf_counter()`` reading)."""
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


@dataclass
class Started:
    """A frame between the two halves of its analysis (:meth:`Analyzer.start`, :meth:`Analyzer.finish`)."""

    frame: Frame
    timings: dict[str, float]
    area: ContentArea
    inputs: ModelInputs
    prediction: Prediction | None
    #: the segmenter's model run, started beside the classifier (:meth:`Analyzer.set_pool`)
    segmenter_run: Future | None = None


class Analyzer:
    """Content area -> model input -> classifier and/or segmenter for one frame, with timings.

    ``classifier`` and ``segmenter`` may be None (both None: passthrough, content area only).
    With both, each gets its own model input (their sizes may differ), "inference" is the sum and
    "classifier" / "segmenter" time each model.
    ``procedure``: the procedure stage (engine.procedure.stage: quality, polyp detections and tracks
    on every result); by default one is made (tracking only with a model), False for none.
    Not thread-safe: one Analyzer per analysis thread, or its two halves (:meth:`start`,
    :meth:`finish`) in two threads, each in frame order.
    """

    def __init__(self, classifier: Classifier | None, *, tracker: ContentAreaTracker | None = None,
                 smooth: bool = True, second_pass=None, triggers: Callable | None = None,
                 segmenter: Segmenter | None = None, procedure: ProcedureStage | bool | None = None) -> None:
        self.classifier = classifier
        self.segmenter = segmenter
        self.tracker = tracker or ContentAreaTracker()
        self.smooth = smooth
        self.second_pass = second_pass  # a started SecondPassWorker, or None
        self.triggers = triggers  # FrameResult -> bool: ask the second pass to look at this frame
        self.untrained = any(m is not None and not m.bundle.trained for m in (classifier, segmenter))
        self._input_sizes = [m.input_size for m in (classifier, segmenter) if m is not None]
        self.verdict = Verdict(classifier.operating_point if classifier is not None else DEFAULT_OPERATING_POINT,
                               getattr(segmenter, "score", None) if classifier is not None else None)
        if procedure is None or procedure is True:
            procedure = ProcedureStage(tracking=classifier is not None or segmenter is not None,
                                       threshold=getattr(segmenter, "threshold", 0.5))
        self.procedure = procedure or None
        #: name, task and version (the manifest's "created") of each model, written into every log row
        self.models = tuple({"name": m.bundle.name, "task": m.bundle.task,
                             "version": (getattr(m.bundle, "manifest", None) or {}).get("created")}
                            for m in (classifier, segmenter) if m is not None)
        self._meter = RateMeter()
        self._pool: Executor | None = None

    @property
    def model(self) -> Classifier | Segmenter | None:
        """The frame-by-frame model (the classifier, else the segmenter), for names and backends."""
        return self.classifier if self.classifier is not None else self.segmenter

    def __call__(self, frame: Frame, timings: dict[str, float] | None = None) -> FrameResult:
        return self.finish(self.start(frame, timings))

    def start(self, frame: Frame, timings: dict[str, float] | None = None) -> Started:
        """The first half of a frame's analysis: its content area, the model inputs and the
        classifier. :meth:`finish` does the rest; the two may run in two threads, each half in
        frame order (live mode overlaps them on consecutive frames), since the state they keep is
        their own: the field tracker and the classifier's smoothing here, the segmenter's
        smoothing, the verdict, the procedure stage and the second pass there."""
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        area = self.tracker.update(frame.image, frame.index)
        timings["crop"] = ms_since(t0)
        prediction = run = None
        inputs = ModelInputs(frame.image, area, self._input_sizes)  # both models' inputs, one shared shrink
        pool = self._pool
        if pool is not None and self.segmenter is not None and self.classifier is not None:
            t0 = time.perf_counter()
            x = inputs.get(self.segmenter.input_size, inset=self.segmenter.bundle.inset)
            timings["resize"] = ms_since(t0)
            run = pool.submit(self.segmenter.probabilities, x)  # beside the classifier
        if self.classifier is not None:
            t0 = time.perf_counter()
            x = inputs.get(self.classifier.input_size, inset=self.classifier.bundle.inset)
            timings["resize"] = timings.get("resize", 0.0) + ms_since(t0)
            prediction = self.classifier.predict(x, smooth=self.smooth)
            timings["inference"] = timings["classifier"] = prediction.latency_ms
        return Started(frame, timings, area, inputs, prediction, run)

    def finish(self, started: Started) -> FrameResult:
        """The second half (see :meth:`start`): the segmenter, the verdict, the procedure stage
        and the second pass's trigger."""
        frame, timings, area, inputs = started.frame, started.timings, started.area, started.inputs
        segmentation = None
        if self.segmenter is not None:
            x = computed = None
            if started.segmenter_run is not None:
                computed = started.segmenter_run.result()
            else:
                t0 = time.perf_counter()
                x = inputs.get(self.segmenter.input_size, inset=self.segmenter.bundle.inset)
                timings["resize"] = timings.get("resize", 0.0) + ms_since(t0)
            t0 = time.perf_counter()
            segmentation = self.segmenter.segment(x, area, smooth=self.smooth, computed=computed)
            timings["inference"] = timings.get("inference", 0.0) + segmentation.latency_ms
            timings["segmenter"] = segmentation.latency_ms
            spent = ms_since(t0)  # with the model run beside the classifier (the pool), only the mask's work
            timings["mask"] = spent if computed is not None else max(0.0, spent - segmentation.latency_ms)
        prediction = started.prediction
        polyp, polyp_score = self.verdict.judge(prediction, segmentation)
        result = FrameResult(frame, area, prediction, segmentation=segmentation, timings=timings,
                             untrained=self.untrained, fps=self._meter.tick(),
                             polyp=polyp, models=self.models, polyp_score=polyp_score)
        if self.procedure is not None:
            self.procedure(result, inputs)  # the quality check starts from the inputs' shrunk field
        if self.second_pass is not None:
            if self.triggers is not None and self.triggers(result):
                self.second_pass.request(frame, area)
            result.second_pass = self.second_pass.latest
        return result

    def warm_up(self) -> None:
        """Run each model once on a black input, outside any frame: a backend's first run
        allocates (ONNX Runtime's arenas), which the first live frame should not wait for."""
        for m in (self.classifier, self.segmenter):
            if m is not None:
                m.backend.run({m.input_name: np.zeros((1, *m.input_size, 3), np.uint8)})

    def set_pool(self, pool: Executor | None) -> None:
        """With a pool (one worker, so the runs keep their order), :meth:`start` runs the
        segmenter's model there beside the classifier and :meth:`finish` takes its answer: a
        frame's analysis then takes about the longer of the two models rather than both (live
        mode's latency). None (the default): both in the calling threads."""
        self._pool = pool

    def set_background(self, on: bool) -> None:
        """Live mode (True): the content area's periodic re-estimates run in a background worker,
        so no frame waits for one; False ends that worker. Call from the thread that runs the
        analyzer (live mode's analysis thread does, when it starts and when it ends)."""
        self.tracker.set_background(on)

    def reset(self) -> None:
        """After a seek or a source change: forget smoothing history and the tracked field, end
        the polyp tracks (the confirmed ones still count)."""
        if self.procedure is not None:
            self.procedure.reset()
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
        yield frame, {"decode": ms_since(t0)}


# --------------------------------------------------------------------------- analysed frames

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


def analysed_frames(source, analyzer: Analyzer, *, start: int = 0, end: int | None = None,
                    speed: float | Callable[[], float] | None = None,
                    stop: threading.Event | None = None,
                    prepare: Callable[[Frame], Frame] | None = None,
                    draw: Callable[[FrameResult], object] | None = None,
                    threads: bool = True, maxsize: int = 4) -> Iterator:
    """Frames ``start`` .. ``end`` (exclusive) of ``source``, each analysed, in order: the one path
    from a source to results that export, replay, the timeline and the bench share.

    Yields each frame's FrameResult (its frame, and its timings: "decode" and the analyzer's).
    ``speed``: pace to the frames' timestamps at this many times real time (a number, or a
    callable read at every frame so a player can change it while playing); None: as fast as
    possible. ``stop``: ends the stream early (set by the caller; the generator never sets it).
    ``prepare``: applied to each decoded frame before its analysis (export keeps one frame size).
    ``draw``: ``result -> picture``, run in a thread of its own after the analysis; then
    ``(result, picture)`` pairs are yielded. ``threads``: decode, analysis and drawing overlap in
    :func:`run_stages` (queues of ``maxsize``); False runs them one after the other in the
    caller's thread (one frame read on demand, or a naive baseline).
    """
    frames = timed_frames(source, start=start, end=end)
    if prepare is not None:
        frames = ((prepare(frame), timings) for frame, timings in frames)

    def analyse(item):
        frame, timings = item
        return analyzer.start(frame, timings)

    def drawn(result):
        return result, draw(result)

    # the analysis's two halves in two threads: one frame's classifier beside the frame before it's segmenter
    stages = [("analyse", analyse), ("finish", analyzer.finish)] + ([("overlay", drawn)] if draw is not None else [])
    items = run_stages(frames, stages, maxsize=maxsize, stop=stop) if threads else _in_turn(frames, stages, stop)
    pacer = Pacer(speed() if callable(speed) else speed) if speed is not None else None
    with contextlib.closing(items):
        for item in items:
            if pacer is not None:
                now = speed() if callable(speed) else speed
                if now != pacer.speed:
                    pacer.speed = now
                    pacer.reset()
                result = item[0] if draw is not None else item
                pacer.wait(result.frame.timestamp, stop)
                if stop is not None and stop.is_set():
                    return
            yield item


def _in_turn(items: Iterable, stages: Sequence[tuple[str, Callable]], stop) -> Iterator:
    """``stages`` applied to each item in the caller's thread, one item after the other."""
    for item in items:
        if stop is not None and stop.is_set():
            return
        for _name, fn in stages:
            item = fn(item)
        yield item
