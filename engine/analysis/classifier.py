"""The fast classifier: model input -> backend -> Prediction, with temporal smoothing.

Labels, input size and output names come from the bundle's manifest only.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol

import numpy as np

from ..bundle import Bundle
from ..errors import BackendError, BundleError
from ..types import Prediction
from .verdict import operating_point


class Smoother(Protocol):
    """Turns a stream of per-frame probability vectors into a steadier one."""

    def update(self, probs: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


class NoSmoothing:
    def update(self, probs: np.ndarray) -> np.ndarray:
        return probs

    def reset(self) -> None:
        pass


class WindowSmoother:
    """Mean of the last ``size`` probability vectors."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"smoothing window must be at least 1 frame, not {size}")
        self.size = size
        self._window: deque[np.ndarray] = deque(maxlen=size)
        self._sum: np.ndarray | None = None

    def update(self, probs: np.ndarray) -> np.ndarray:
        if self._sum is None or self._sum.shape != probs.shape:
            self.reset()
            self._sum = np.zeros_like(probs, dtype=np.float64)
        if len(self._window) == self.size:
            self._sum -= self._window[0]
        self._window.append(probs)
        self._sum += probs
        return (self._sum / len(self._window)).astype(np.float32)

    def reset(self) -> None:
        self._window.clear()
        self._sum = None


class EmaSmoother:
    """Exponential moving average: ``s = alpha * p + (1 - alpha) * s``."""

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"EMA alpha must be in (0, 1], not {alpha}")
        self.alpha = alpha
        self._state: np.ndarray | None = None

    def update(self, probs: np.ndarray) -> np.ndarray:
        if self._state is None or self._state.shape != probs.shape:
            self._state = probs.astype(np.float32).copy()
        else:
            self._state += self.alpha * (probs - self._state)
        return self._state.copy()

    def reset(self) -> None:
        self._state = None


def make_smoother(spec: str | None) -> Smoother:
    """``"off"``/None, ``"window:N"`` or ``"ema:ALPHA"`` (e.g. ``window:5``, ``ema:0.3``)."""
    if spec is None or spec in ("", "off", "none"):
        return NoSmoothing()
    kind, _, value = spec.partition(":")
    try:
        if kind == "window":
            return WindowSmoother(int(value or 5))
        if kind == "ema":
            return EmaSmoother(float(value or 0.3))
    except ValueError as exc:
        raise ValueError(f"bad smoothing {spec!r}: {exc}") from None
    raise ValueError(f"bad smoothing {spec!r}: use off, window:N or ema:ALPHA")


class Classifier:
    """Runs a classify bundle on model inputs (H x W x 3 uint8 RGB at the bundle's size).

    ``backend`` must be entered by the caller (it owns the backend's lifetime).
    """

    def __init__(self, bundle: Bundle, backend, smoother: Smoother | None = None) -> None:
        if bundle.task not in ("classify", "segment"):
            raise BundleError(f"bundle {bundle.path} has task {bundle.task!r}, not 'classify'")
        if "probabilities" not in bundle.outputs:
            raise BundleError(
                f"bundle {bundle.path} names no 'probabilities' output: it cannot classify frames"
            )
        self.bundle = bundle
        self.backend = backend
        self.smoother = smoother or NoSmoothing()
        self.labels = tuple(bundle.labels)
        self.input_name = bundle.input_name
        self.output_name = bundle.outputs["probabilities"]
        self.name = bundle.name
        #: P(polyp classes) at which this classifier calls a frame "polyp" (engine.analysis.verdict)
        self.operating_point = operating_point(bundle.manifest, bundle.path)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model takes."""
        return self.bundle.input_size

    def predict(self, model_input: np.ndarray, *, smooth: bool = True) -> Prediction:
        t0 = time.perf_counter()
        out = self.backend.run({self.input_name: model_input[None]})
        latency = (time.perf_counter() - t0) * 1000.0
        probs = np.asarray(out[self.output_name], dtype=np.float32).reshape(-1)
        if probs.shape[0] != len(self.labels):
            raise BackendError(
                f"model {self.name} returned {probs.shape[0]} probabilities for "
                f"{len(self.labels)} labels"
            )
        smoothed = smooth and not isinstance(self.smoother, NoSmoothing)
        if smoothed:
            probs = self.smoother.update(probs)
        return Prediction(self.labels, probs, self.name, latency, smoothed=smoothed)

    def reset(self) -> None:
        """Forget the smoothing history (after a seek or a source change)."""
        self.smoother.reset()
