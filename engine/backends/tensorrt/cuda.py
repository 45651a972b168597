"""CUDA through pycuda for TensorRT: the driver (with a message per cause when it cannot start),
the GPU's identity, the device index from a device string, and the primary context pushed
around every block of CUDA work."""

from __future__ import annotations

from typing import Any

from engine.backends.base import parse_device
from engine.backends.tensorrt.library import INSTALL_HINT, installed
from engine.errors import BackendError, BackendUnavailable


def import_cuda() -> Any:
    """``pycuda.driver``, initialised, or BackendUnavailable saying why not. The messages differ
    by cause: "pycuda is not installed", "no CUDA driver" (pycuda is there but cannot load the
    driver library), "the CUDA driver does not start" (cuInit failed), "no CUDA GPU found"."""
    try:
        import pycuda.driver as cuda
    except ImportError as err:
        if not installed("pycuda"):
            raise BackendUnavailable(f"pycuda is not installed ({INSTALL_HINT}): {err}") from err
        if "libcuda" in str(err):
            raise BackendUnavailable(
                f"no CUDA driver: pycuda is installed but cannot load the driver library ({err}); "
                "install the NVIDIA driver (nvidia-smi must list the GPU)"
            ) from err
        raise BackendUnavailable(
            f"pycuda is installed but does not load ({err}); reinstall it against this machine's CUDA"
        ) from err
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as err:
        raise BackendUnavailable(
            f"the CUDA driver does not start (cuInit: {err}); check the NVIDIA driver with nvidia-smi"
        ) from err
    if count < 1:
        raise BackendUnavailable("no CUDA GPU found: the tensorrt backend needs an NVIDIA GPU")
    return cuda


def gpu_identity(cuda: Any, index: int) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of device ``index``."""
    count = cuda.Device.count()
    if index >= count:
        raise BackendUnavailable(f"there is no CUDA device {index} (pycuda sees {count})")
    dev = cuda.Device(index)
    major, minor = dev.compute_capability()
    return str(dev.name()), f"{major}.{minor}"


class CudaContext:
    """The device's primary CUDA context, pushed around every block of CUDA work (so that the
    backend may be entered on one thread and run on another)."""

    def __init__(self, cuda: Any, index: int) -> None:
        self.cuda = cuda
        self.ctx = cuda.Device(index).retain_primary_context()

    def __enter__(self) -> CudaContext:
        self.ctx.push()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cuda.Context.pop()

    def release(self) -> None:
        self.ctx.detach()


def cuda_index(device: str | None) -> int:
    spec = parse_device(device, "tensorrt")
    if spec is None:
        return 0
    if spec[0] != "cuda":
        raise BackendError("the tensorrt backend runs only on CUDA devices (use device cuda or cuda:N)")
    return spec[1]
