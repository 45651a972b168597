"""torch backend: runs the bundle's TorchScript model on the CPU or a CUDA device.

For development and for the second pass. ``torch`` is imported only when the backend is entered
(``availability`` looks for the package without importing it).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
import warnings
from typing import Any, ClassVar

import numpy as np

from engine.backends.base import Backend, parse_device
from engine.bundle import Bundle
from engine.errors import BackendError, BackendUnavailable

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    """Options: ``threads`` (torch.set_num_threads, process-wide; default: torch's own choice),
    ``pin_memory`` (stage CUDA inputs/outputs through pinned host buffers, default True)."""

    name: ClassVar[str] = "torch"
    option_names: ClassVar[frozenset[str]] = frozenset({"threads", "pin_memory"})

    def __init__(self, bundle: Bundle, *, device: str | None = None, **options: Any) -> None:
        super().__init__(bundle, device=device, **options)
        if not bundle.has("torchscript"):
            raise BackendUnavailable(
                f"model bundle {bundle.path} has no torch model (no 'torchscript' in its formats): "
                "the torch backend is for development and the second pass; use --backend onnxruntime "
                "or tensorrt, or re-export the bundle with a TorchScript file"
            )
        self._path = bundle.file("torchscript")
        self._device_spec = parse_device(device, self.name)
        self._torch: Any = None
        self._module: Any = None
        self._device: Any = None
        self._staging: dict[tuple[str, tuple[int, ...]], Any] = {}

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if "torch" not in sys.modules:
            try:
                spec = importlib.util.find_spec("torch")
            except (ImportError, ValueError) as err:
                return False, f"torch not installed: {err}"
            if spec is None:
                return False, "torch not installed: No module named 'torch'"
        try:
            return True, f"torch {importlib.metadata.version('torch')}"
        except importlib.metadata.PackageNotFoundError:
            return True, "torch (version unknown)"

    @property
    def description(self) -> str:
        if self._torch is None:
            return "torch (not loaded)"
        dev = str(self._device)
        if self._device.type == "cuda":
            dev += f" {self._torch.cuda.get_device_name(self._device)}"
        return f"torch {self._torch.__version__} ({dev})"

    def _activate(self) -> None:
        try:
            import torch
        except ImportError as err:
            raise BackendUnavailable(
                f"torch is not installed ({err}): pip install 'endoview[train]' to use the torch backend"
            ) from err
        spec = self._device_spec
        if spec is None:
            device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        elif spec[0] == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailable(
                    f"torch here has no CUDA device (torch {torch.__version__}); use device cpu"
                )
            if spec[1] >= torch.cuda.device_count():
                raise BackendUnavailable(
                    f"there is no CUDA device {spec[1]} (torch sees {torch.cuda.device_count()})"
                )
            device = torch.device("cuda", spec[1])
        else:
            device = torch.device("cpu")
        threads = self.options.get("threads")
        if threads:
            torch.set_num_threads(int(threads))
        try:
            with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(self._path), map_location=device)
        except (RuntimeError, ValueError, OSError) as err:
            raise BackendError(
                f"torch cannot load {self._path}: {str(err).strip().splitlines()[0]}; the file is "
                "damaged or not a TorchScript model: re-export the bundle"
            ) from err
        module.eval()
        self._torch, self._module, self._device = torch, module, device
        log.info("torch backend for %s on %s", self.bundle.name, device)

    def _deactivate(self) -> None:
        torch = self._torch
        self._module = None
        self._staging.clear()
        if torch is not None and self._device is not None and self._device.type == "cuda":
            torch.cuda.empty_cache()
        self._torch = None
        self._device = None

    def _stage(self, key: str, shape: tuple[int, ...], dtype: Any) -> Any:
        buf = self._staging.get((key, shape))
        if buf is None:
            buf = self._torch.empty(shape, dtype=dtype, pin_memory=True)
            self._staging[(key, shape)] = buf
        return buf

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        cuda = self._device.type == "cuda"
        pin = cuda and self.options.get("pin_memory", True)
        args = []
        for name in self._inputs:
            host = torch.from_numpy(feeds[name])
            if pin:
                staged = self._stage("in:" + name, tuple(host.shape), host.dtype)
                staged.copy_(host)
                args.append(staged.to(self._device, non_blocking=True))
            elif cuda:
                args.append(host.to(self._device))
            else:
                args.append(host)
        try:
            with torch.inference_mode():
                raw = self._module(*args)
        except RuntimeError as err:
            raise BackendError(
                f"torch failed running {self.bundle.name}: {str(err).strip().splitlines()[0]}"
            ) from err
        tensors = self._name_outputs(raw)
        if not cuda:
            return {n: t.numpy() for n, t in tensors.items()}
        results: dict[str, np.ndarray] = {}
        if pin:
            staged_out = {}
            for n, t in tensors.items():
                buf = self._stage("out:" + n, tuple(t.shape), t.dtype)
                buf.copy_(t, non_blocking=True)
                staged_out[n] = buf
            torch.cuda.current_stream(self._device).synchronize()
            for n, buf in staged_out.items():
                results[n] = buf.numpy().copy()
            return results
        return {n: t.cpu().numpy() for n, t in tensors.items()}

    def _name_outputs(self, raw: Any) -> dict[str, Any]:
        names = self.outputs()
        torch = self._torch
        if isinstance(raw, dict):
            roles = self.bundle.outputs
            by_name: dict[str, Any] = {}
            for role, tname in roles.items():
                if tname in raw:
                    by_name[tname] = raw[tname]
                elif role in raw:
                    by_name[tname] = raw[role]
            missing = [n for n in names if n not in by_name]
            if missing:
                raise BackendError(
                    f"the torch model of {self.bundle.name} returned {', '.join(map(str, raw))} but the "
                    f"manifest names output(s) {', '.join(missing)}; re-export the bundle"
                )
            out = by_name
        elif isinstance(raw, torch.Tensor):
            if len(names) != 1:
                raise BackendError(
                    f"the torch model of {self.bundle.name} returned one tensor but the manifest names "
                    f"{len(names)} outputs ({', '.join(names)}); return a dict keyed by output name"
                )
            out = {names[0]: raw}
        elif isinstance(raw, (tuple, list)) and len(raw) == len(names):
            out = dict(zip(names, raw))
        else:
            raise BackendError(
                f"the torch model of {self.bundle.name} returned {type(raw).__name__}; it must return a "
                f"tensor or a dict keyed by {', '.join(names)}"
            )
        return {n: out[n].detach() for n in names}
