"""The TensorRT library: importing it (10 or newer) with a message that says why it does not load,
its version without importing it, and a TensorRT logger that forwards to :mod:`logging`."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from typing import Any

from engine.errors import BackendUnavailable

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'endoview[gpu]' on a machine with an NVIDIA GPU"


def installed(package: str) -> bool:
    """Whether ``package`` is installed, without importing it (an import may still fail)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def import_tensorrt() -> Any:
    """``tensorrt`` (10 or newer), or BackendUnavailable saying why not."""
    try:
        import tensorrt as trt
    except ImportError as err:
        if installed("tensorrt"):
            raise BackendUnavailable(
                f"TensorRT is installed but does not load ({err}); its CUDA libraries must match "
                f"this machine's driver: reinstall it ({INSTALL_HINT})"
            ) from err
        raise BackendUnavailable(f"TensorRT is not installed ({INSTALL_HINT}): {err}") from err
    major = trt_major(trt)
    if major < 10:
        raise BackendUnavailable(
            f"TensorRT {trt.__version__} is too old: endoview needs TensorRT 10 or 11 ({INSTALL_HINT})"
        )
    return trt


def trt_major(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that forwards to :mod:`logging`."""

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            S = trt.ILogger.Severity
            if severity in (S.INTERNAL_ERROR, S.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == S.WARNING:
                log.warning("TensorRT: %s", msg)
            elif severity == S.INFO:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def tensorrt_version() -> str | None:
    """The installed TensorRT version without importing it (None when absent)."""
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
