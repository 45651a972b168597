"""Inference backends behind one interface (see :mod:`engine.backends.base`).

    from engine.backends import open_backend
    with open_backend(bundle, "auto") as backend:
        probs = backend.run({bundle.input_name: batch})["probs"]

Importing this package imports none of torch, tensorrt or pycuda; each backend imports its
libraries when it is entered.

Every inference library (onnxruntime, torch, TensorRT and pycuda, MMDetection) is imported only
under this package: the backends (:mod:`~engine.backends.onnxruntime`, :mod:`~engine.backends.torch`,
:mod:`~engine.backends.tensorrt`, with the TensorRT plan cache :mod:`~engine.backends.plan_cache`),
MMDetection's detector for the second pass (:mod:`~engine.backends.mmdet`) and what
``endoview info`` asks of the machine (:mod:`~engine.backends.probe`). An import-linter contract
in pyproject.toml checks it.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from engine.backends.base import Backend, TensorSpec
from engine.bundle import Bundle
from engine.errors import BackendError, BackendUnavailable, install_hint

log = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "TensorSpec",
    "available_backends",
    "backend_class",
    "open_backend",
    "precision_option",
]

#: name -> "module:Class"; modules are imported on demand (they import nothing heavy at the top).
BACKENDS: dict[str, str] = {
    "onnxruntime": "engine.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "engine.backends.tensorrt.backend:TensorRTBackend",
    "torch": "engine.backends.torch:TorchBackend",
}

#: ``precision`` of the onnxruntime backend (and of the config's ``[model] precision``): "auto" runs
#: a bundle's int8 model (``formats["onnx-int8"]``, onnxruntime's static quantization) on the CPU
#: where the bundle has one, the exported graph otherwise; "fp32" always the exported graph.
PRECISIONS = ("auto", "fp32")


def precision_option(backend: str, precision: str | None) -> dict[str, str]:
    """The ``precision`` option for ``backend`` (a name, or auto): only onnxruntime takes it, since
    the int8 models are onnxruntime's on the CPU; {} for the other backends or no precision."""
    return {"precision": precision} if precision is not None and backend in ("auto", "onnxruntime") else {}

_NOT_INSTALLED = {
    "tensorrt": "TensorRT is not installed (pip install 'endoview[gpu]' on a machine with an NVIDIA GPU)",
    "torch": f"torch is not installed ({install_hint('train')})",
    "onnxruntime": "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)",
}


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass registered as ``name``."""
    target = BACKENDS.get(name)
    if target is None:
        raise BackendError(f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def available_backends() -> dict[str, tuple[bool, str]]:
    """name -> (usable here?, version or the reason why not)."""
    return {name: backend_class(name).availability() for name in BACKENDS}


def _filtered(cls: type[Backend], options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in cls.option_names}


def open_backend(bundle: Bundle, name: str = "auto", *, device: str | None = None, **options: Any) -> Backend:
    """Construct (not enter) the backend ``name`` for ``bundle``.

    ``auto`` picks TensorRT when it imports, a CUDA GPU is present, the bundle has an ONNX model,
    and a matching plan is cached (or ``build_missing=True`` is passed); otherwise onnxruntime.
    With ``auto``, options a backend does not take are dropped (so ``threads=`` for onnxruntime
    and ``fp16=`` for TensorRT can be given together); with an explicit name they are an error.
    """
    if name == "auto":
        return _auto(bundle, device=device, options=options)
    cls = backend_class(name)
    ok, reason = cls.availability()
    if not ok:
        raise BackendUnavailable(_unavailable_message(name, reason))
    return cls(bundle, device=device, **options)


def _unavailable_message(name: str, reason: str) -> str:
    prefix = f"{name} not installed: "
    if reason.startswith(prefix):
        return f"{_NOT_INSTALLED.get(name, name + ' is not installed')}: {reason[len(prefix):]}"
    return f"the {name} backend cannot run here: {reason}"


def _auto(bundle: Bundle, *, device: str | None, options: dict[str, Any]) -> Backend:
    wants_gpu = device is None or device.startswith("cuda") or device == "gpu"
    if wants_gpu and bundle.has("onnx"):
        trt_cls = backend_class("tensorrt")
        ok, reason = trt_cls.availability()
        if ok:
            backend = trt_cls(bundle, device=device, **_filtered(trt_cls, options))
            if options.get("build_missing"):
                return backend
            try:
                found, why = _cached_plan(backend, options)
            except BackendError as err:
                found, why = None, str(err)
            if found is not None:
                log.info("auto backend: tensorrt (plan %s)", found)
                return backend
            log.warning(
                "auto backend: using onnxruntime, not TensorRT, for %s: %s; run `endoview build-engine %s` "
                "to use TensorRT", bundle.name, why, bundle.path,
            )
        else:
            log.info("auto backend: TensorRT not usable (%s)", reason)
    ort_cls = backend_class("onnxruntime")
    ok, reason = ort_cls.availability()
    if not ok:
        raise BackendUnavailable(_unavailable_message("onnxruntime", reason))
    return ort_cls(bundle, device=device, **_filtered(ort_cls, options))


def _cached_plan(backend: Backend, options: dict[str, Any]) -> tuple[Any, str]:
    from pathlib import Path

    from engine.backends import plan_cache

    key = backend.plan_key()  # type: ignore[attr-defined]
    folder = options.get("cache_dir")
    return plan_cache.check_plan(key, None if folder is None else Path(folder))
