"""ONNX Runtime backend: the default and the CPU path (CUDA provider when onnxruntime-gpu has it)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
from typing import Any, ClassVar

import numpy as np

from engine.backends import PRECISIONS
from engine.backends.base import Backend, TensorSpec, parse_device
from engine.bundle import Bundle
from engine.errors import BackendError, BackendUnavailable

log = logging.getLogger(__name__)

_ONNX_TO_NP = {
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def _ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception types (they do not share a base class beyond Exception)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NoModel",
             "NotImplemented", "RuntimeException", "EPFail", "EngineError")
    found = tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))
    return found + (RuntimeError, ValueError)


class OnnxRuntimeBackend(Backend):
    """Options: ``threads`` (intra-op threads, default all cores), ``providers`` (explicit list),
    ``spin`` (let idle worker threads busy-wait; default off, because in the pipeline the decode
    and encode threads need those cores more than the model needs the last microsecond),
    ``precision`` (:data:`engine.backends.PRECISIONS`: "auto", the default, runs the bundle's int8
    model on the CPU where it has one, the exported graph on a GPU or without one; "fp32" always
    the exported graph)."""

    name: ClassVar[str] = "onnxruntime"
    option_names: ClassVar[frozenset[str]] = frozenset({"threads", "providers", "spin", "precision"})

    def __init__(self, bundle: Bundle, *, device: str | None = None, **options: Any) -> None:
        super().__init__(bundle, device=device, **options)
        self._path = bundle.file("onnx")
        self._device = parse_device(device, self.name)
        threads = options.get("threads")
        if threads is not None and (not isinstance(threads, int) or threads < 0):
            raise BackendError(f"onnxruntime threads must be a non-negative integer (0 = all cores), not {threads!r}")
        precision = options.get("precision") or "auto"
        if precision not in PRECISIONS:
            raise BackendError(f"onnxruntime precision must be {' or '.join(PRECISIONS)}, not {precision!r}")
        self._precision = precision
        #: the model running: "int8" (the bundle's "onnx-int8" file) or "fp32"; set when entered
        self.precision: str | None = None
        self._session: Any = None
        self._providers: list[str] = []
        self._version = ""
        self._output_names = self.outputs()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError as err:
            return False, f"onnxruntime not installed: {err}"
        return True, f"onnxruntime {ort.__version__} ({', '.join(_useful_providers(ort.get_available_providers()))})"

    @property
    def description(self) -> str:
        version = self._version or _version("onnxruntime")
        provs = self._providers or ["not loaded"]
        int8 = ", int8" if self.precision == "int8" else ""
        return f"onnxruntime {version} ({provs[0]}{int8})"

    @property
    def runs_on(self) -> str | None:
        if not self._providers:
            return None
        return "cuda" if self._providers[0] == "CUDAExecutionProvider" else "cpu"

    def _choose_providers(self, available: list[str]) -> list[str]:
        explicit = self.options.get("providers")
        if explicit:
            missing = [p for p in explicit if p not in available]
            if missing:
                raise BackendUnavailable(
                    f"onnxruntime here has no {', '.join(missing)} (it has {', '.join(available)})"
                )
            return list(explicit)
        want_cuda = self._device is None or self._device[0] == "cuda"
        if want_cuda and "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if self._device is not None and self._device[0] == "cuda":
            raise BackendUnavailable(
                "onnxruntime here has no CUDA provider (it has "
                f"{', '.join(available)}): install onnxruntime-gpu, or use device cpu"
            )
        return ["CPUExecutionProvider"]

    def _activate(self) -> None:
        import onnxruntime as ort

        providers = self._choose_providers(ort.get_available_providers())
        # int8 (QDQ, uint8 activations) is a CPU model: on CUDA the exported graph runs
        int8 = self._precision == "auto" and self.bundle.has("onnx-int8") and providers[0] == "CPUExecutionProvider"
        self._path = self.bundle.file("onnx-int8" if int8 else "onnx")
        opts = ort.SessionOptions()
        threads = self.options.get("threads")
        opts.intra_op_num_threads = threads if threads else (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        spin = "1" if self.options.get("spin") else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only; we raise our own message
        provider_options: list[dict[str, Any]] = []
        for p in providers:
            if p == "CUDAExecutionProvider":
                provider_options.append({"device_id": self._device[1] if self._device else 0})
            else:
                provider_options.append({})
        try:
            session = ort.InferenceSession(
                str(self._path), sess_options=opts, providers=providers, provider_options=provider_options
            )
        except _ort_errors() as err:
            raise BackendError(
                f"onnxruntime cannot load {self._path}: {str(err).strip().splitlines()[0]}; "
                "the file is damaged or not an ONNX model: re-export the bundle"
            ) from err
        have = {o.name for o in session.get_outputs()}
        missing = [n for n in self._output_names if n not in have]
        if missing:
            raise BackendError(f"{self._path} has no output(s) {', '.join(missing)}; re-export the bundle")
        inputs: dict[str, TensorSpec] = {}
        for i in session.get_inputs():
            dtype = _ONNX_TO_NP.get(i.type)
            if dtype is None:
                raise BackendError(f"{self._path}: input {i.name!r} has unsupported type {i.type}")
            shape = tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape)
            inputs[i.name] = TensorSpec(i.name, shape, np.dtype(dtype))
        self._inputs = inputs
        self._session = session
        self._providers = session.get_providers()
        self._version = ort.__version__
        self.precision = "int8" if int8 else "fp32"
        log.info("onnxruntime session for %s on %s (%d threads, %s)", self.bundle.name, self._providers[0],
                 opts.intra_op_num_threads, self._path.name)

    def _deactivate(self) -> None:
        self._session = None
        self._providers = []
        self.precision = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self._session.run(self._output_names, feeds)
        except _ort_errors() as err:
            raise BackendError(
                f"onnxruntime failed running {self.bundle.name}: {str(err).strip().splitlines()[0]}"
            ) from err
        return dict(zip(self._output_names, results))


def _useful_providers(providers: list[str]) -> list[str]:
    return [p for p in providers if p != "AzureExecutionProvider"] or providers


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"
