"""The second pass: a slower model run in its own worker on some frames (DESIGN.md).

The worker has a one-slot mailbox (the newest request wins; a request made while the model is
busy replaces the waiting one). Its results name the frame they were computed on, so the overlay
shows how old they are. Triggers decide when the fast model's result asks for a second look: on
demand, when a polyp-related class has held for a while, or every N frames.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from ..slots import JOIN_TIMEOUT_S, LatestSlot
from ..types import POLYP_CLASSES, ContentArea, Frame, FrameResult, SecondPassResult
from .classifier import Classifier
from .crop import model_input

logger = logging.getLogger(__name__)

_EPS = 1e-6  # timestamps are i / fps: compare durations with a little slack


class SecondPassModel(Protocol):
    name: str

    def __call__(self, frame: Frame, area: ContentArea) -> SecondPassResult: ...


class ClassifierPass:
    """A classifier bundle (e.g. the trimmed ResNet-152) as a second pass: label and confidence."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.name = classifier.name

    def __call__(self, frame: Frame, area: ContentArea) -> SecondPassResult:
        t0 = time.perf_counter()
        p = self.classifier.predict(model_input(frame.image, area, self.classifier.input_size,
                                                    inset=self.classifier.bundle.inset),
                                    smooth=False)
        return SecondPassResult(frame.index, self.name, (time.perf_counter() - t0) * 1000.0,
                                label=p.label, confidence=p.confidence)


@dataclass
class Triggers:
    """When the fast model's result asks for a second pass (besides explicit requests).

    every_n: every N frames (None: off). hold_seconds: when one of ``labels`` has been the fast
    model's label (a classifier's top-1, or "polyp" while the real-time segmenter finds one) with at least ``min_confidence`` for this long (None: off); it fires once per
    stretch, and again after ``repeat_seconds`` while the stretch lasts.
    """

    every_n: int | None = None
    hold_seconds: float | None = 1.0
    labels: tuple[str, ...] = POLYP_CLASSES
    min_confidence: float = 0.5
    repeat_seconds: float = 2.0

    def __post_init__(self) -> None:
        self._since: float | None = None
        self._last_fired: float | None = None

    def __call__(self, result: FrameResult) -> bool:
        index, t = result.frame.index, result.frame.timestamp
        if self.every_n and index % self.every_n == 0:
            return True
        top = result.top  # the classifier's top-1, or the segmenter's "polyp" / "no polyp"
        if self.hold_seconds is None or top is None:
            return False
        label, conf = top
        if label not in self.labels or conf < self.min_confidence:
            self._since = self._last_fired = None
            return False
        if self._since is None or t < self._since:  # a new stretch (or a seek backwards)
            self._since, self._last_fired = t, None
        if t - self._since < self.hold_seconds - _EPS:
            return False
        if self._last_fired is None or t - self._last_fired >= self.repeat_seconds - _EPS:
            self._last_fired = t
            return True
        return False


class SecondPassWorker:
    """Runs ``model`` on requested frames in its own thread; the newest request wins.

    ``latest`` is the newest finished result; ``on_result`` / ``on_error`` are called from the
    worker thread. An error does not stop the worker: it is reported and the next request runs.
    """

    def __init__(self, model: SecondPassModel, *,
                 on_result: Callable[[SecondPassResult], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.model = model
        self.on_result, self.on_error = on_result, on_error
        self.latest: SecondPassResult | None = None
        self.error: BaseException | None = None
        self.completed = 0
        self._slot = LatestSlot()
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def replaced(self) -> int:
        """Requests replaced by a newer one before the model got to them."""
        return self._slot.dropped

    @property
    def busy(self) -> bool:
        return self._busy.is_set()

    def start(self) -> SecondPassWorker:
        self._thread = threading.Thread(target=self._run, name="endoview-second-pass", daemon=True)
        self._thread.start()
        return self

    def request(self, frame: Frame, area: ContentArea) -> None:
        """Ask for a look at ``frame``. The image is copied: the pipeline may draw on its own."""
        self._slot.put((Frame(frame.index, frame.timestamp, frame.image.copy(), frame.arrival), area))

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        self._slot.close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("second-pass worker still running after %.1f s", timeout)
                return False
        return True

    def __enter__(self) -> SecondPassWorker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        for frame, area in self._slot:
            self._busy.set()
            try:
                result = self.model(frame, area)
            except Exception as exc:  # noqa: BLE001 - reported, and the worker goes on
                logger.error("second pass %s failed on frame %d: %s", self.model.name, frame.index, exc)
                self.error = exc
                if self.on_error is not None:
                    self.on_error(exc)
                continue
            finally:
                self._busy.clear()
            self.latest = result
            self.completed += 1
            if self.on_result is not None:
                self.on_result(result)
