"""The one backend interface (STYLE.md 3, in the manner of Polygraphy's runners).

A backend is a context manager: constructing it is cheap (no GPU, no model loading), entering it
loads the model and allocates, leaving it frees. It declares its inputs; :meth:`Backend.run`
validates names, dtypes, ranks and static dimensions, then calls the implementation, and every
backend returns ``dict[name -> numpy array]`` in host memory::

    with open_backend(bundle, "auto") as backend:
        out = backend.run({bundle.input_name: batch})   # uint8 N x H x W x 3 RGB
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import numpy as np

from engine.bundle import Bundle
from engine.errors import BackendError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: ``shape`` uses ``None`` for dynamic dimensions (the batch)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def describe(self) -> str:
        dims = "x".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name} {dims}"


class Backend(abc.ABC):
    """Base class of the inference backends. Subclasses implement ``_activate``, ``_deactivate``,
    ``_infer`` and ``availability``; they may refine ``inputs`` after activation."""

    name: ClassVar[str]
    #: Keyword options the backend accepts besides ``device``.
    option_names: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, bundle: Bundle, *, device: str | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - self.option_names)
        if unknown:
            known = ", ".join(sorted(self.option_names)) or "none"
            raise BackendError(
                f"the {self.name} backend has no option(s) {', '.join(unknown)} (it takes: {known})"
            )
        self.bundle = bundle
        self.device = device
        self.options: dict[str, Any] = dict(options)
        self._depth = 0
        self._lock = threading.RLock()
        h, w = bundle.input_size
        self._inputs: dict[str, TensorSpec] = {
            bundle.input_name: TensorSpec(bundle.input_name, (None, h, w, 3), np.dtype(np.uint8))
        }
        self._max_batch: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        with self._lock:
            if self._depth == 0:
                log.debug("activating %s backend for %s", self.name, self.bundle.name)
                self._activate()
            self._depth += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            if self._depth == 0:
                return
            self._depth -= 1
            if self._depth == 0:
                log.debug("deactivating %s backend for %s", self.name, self.bundle.name)
                self._deactivate()

    def close(self) -> None:
        """Free everything now, however many times the backend was entered."""
        with self._lock:
            if self._depth:
                self._depth = 0
                self._deactivate()

    @property
    def is_active(self) -> bool:
        return self._depth > 0

    # -- description -----------------------------------------------------------------------

    @property
    def inputs(self) -> dict[str, TensorSpec]:
        """Input name -> spec. Known before activation (from the manifest, checked against the
        model when the bundle was loaded)."""
        return dict(self._inputs)

    def outputs(self) -> list[str]:
        """Names of the tensors :meth:`run` returns (the manifest's outputs, in order)."""
        return self.bundle.output_names

    @property
    def description(self) -> str:
        """One line for status bars, e.g. ``onnxruntime 1.32.0 (CPUExecutionProvider)``."""
        return self.name

    @property
    def runs_on(self) -> str | None:
        """Where the model runs once entered: "cpu" or "cuda" (None before :meth:`__enter__`)."""
        return None

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> tuple[bool, str]:
        """(installed and usable here?, version or the reason why not)."""

    def __repr__(self) -> str:
        state = "active" if self.is_active else "inactive"
        return f"<{type(self).__name__} {self.bundle.name!r} {state}>"

    # -- running ---------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against :attr:`inputs`, infer, return name -> host numpy array."""
        if not self.is_active:
            raise BackendError(
                f"the {self.name} backend for {self.bundle.name} is not open: use it as a context "
                "manager (with open_backend(bundle) as backend: ...) before calling run()"
            )
        checked = self._check_feeds(feeds)
        return self._infer(checked)

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(feeds, Mapping):
            raise BackendError(f"{self.name}.run() takes a dict of input name -> array, not {type(feeds).__name__}")
        specs = self._inputs
        missing = [n for n in specs if n not in feeds]
        extra = [n for n in feeds if n not in specs]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
            if extra:
                parts.append(f"unexpected input(s) {', '.join(map(repr, extra))}")
            expected = "; ".join(s.describe() for s in specs.values())
            raise BackendError(f"{self.bundle.name}: {' and '.join(parts)} (the model takes {expected})")
        out: dict[str, np.ndarray] = {}
        for name, spec in specs.items():
            arr = feeds[name]
            if not isinstance(arr, np.ndarray):
                raise BackendError(
                    f"input {name!r} of {self.bundle.name} must be a numpy array, not {type(arr).__name__}"
                )
            if arr.dtype != spec.dtype:
                raise BackendError(
                    f"input {name!r} of {self.bundle.name} must be {spec.dtype.name}, got {arr.dtype.name} "
                    f"(expected {spec.describe()}; the model does its own normalisation)"
                )
            if arr.ndim != len(spec.shape):
                raise BackendError(
                    f"input {name!r} of {self.bundle.name} must have {len(spec.shape)} dimensions "
                    f"({spec.describe()}), got shape {tuple(arr.shape)}"
                )
            bad = [
                i for i, (want, got) in enumerate(zip(spec.shape, arr.shape)) if want is not None and want != got
            ]
            if bad or 0 in arr.shape:
                raise BackendError(
                    f"input {name!r} of {self.bundle.name} has shape {tuple(arr.shape)} but the model "
                    f"takes {spec.describe()}; resize to the model's input size first"
                )
            if self._max_batch is not None and spec.shape and spec.shape[0] is None and arr.shape[0] > self._max_batch:
                raise BackendError(
                    f"input {name!r} of {self.bundle.name} has batch {arr.shape[0]} but this {self.name} "
                    f"engine takes at most {self._max_batch}; split the batch or rebuild with a larger max batch"
                )
            out[name] = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
        return out

    # -- implementation --------------------------------------------------------------------

    @abc.abstractmethod
    def _activate(self) -> None:
        """Load the model and allocate (called on the first ``__enter__``)."""

    @abc.abstractmethod
    def _deactivate(self) -> None:
        """Free what ``_activate`` took (called on the last ``__exit__``); must not raise."""

    @abc.abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated, C-contiguous ``feeds``; return the outputs named by :meth:`outputs`."""


def parse_device(device: str | None, backend: str) -> tuple[str, int] | None:
    """``None`` -> None (backend default); "cpu" -> ("cpu", 0); "cuda" / "cuda:N" -> ("cuda", N)."""
    if device is None or device == "auto":
        return None
    text = device.strip().lower()
    if text == "cpu":
        return ("cpu", 0)
    if text == "cuda" or text == "gpu":
        return ("cuda", 0)
    if text.startswith("cuda:") and text[5:].isdigit():
        return ("cuda", int(text[5:]))
    raise BackendError(f"unknown device {device!r} for the {backend} backend (use cpu, cuda or cuda:N)")
