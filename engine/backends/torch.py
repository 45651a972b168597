"""torch backend: runs the bundle's TorchScript model on the CPU or a CUDA device.

For development, for the second pass, and the GPU path that can be measured where TensorRT is
absent. On CUDA it stages inputs and outputs through pinned host memory, converts the weights to
channels-last (the input is NHWC already), warms up when entered, and on request runs in half
precision (autocast) and replays CUDA graphs; see :class:`TorchBackend`. On the CPU it does what
it always did. ``torch`` is imported only when the backend is entered (``availability`` looks for
the package without importing it).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
import time
import warnings
from typing import Any, ClassVar

import numpy as np

from engine.backends.base import Backend, parse_device
from engine.bundle import Bundle
from engine.errors import BackendError, BackendUnavailable, install_hint

log = logging.getLogger(__name__)


#: Warm-up runs when the backend is entered on a CUDA device (cuDNN picks its kernels, the
#: caching allocator and the pinned buffers fill), so the first frames are not slow.
CUDA_WARMUP_RUNS = 3


def choose_channels_last(option: bool | str, device_type: str, has_conv2d: bool) -> bool:
    """Whether to convert the model's weights to channels-last memory format.

    ``option`` "auto" (the default): on CUDA, when the model has 2-D convolution weights (the
    input is NHWC already, so cuDNN then needs no layout change); never on the CPU, whose path is
    left as it was. ``True`` asks for it on any device, ``False`` never; a model without 4-D
    weights has nothing to convert, whatever is asked.
    """
    if option not in ("auto", True, False):
        raise BackendError(f"the torch backend's channels_last must be 'auto', True or False, not {option!r}")
    if not has_conv2d:
        return False
    if option == "auto":
        return device_type == "cuda"
    return bool(option)


class TorchBackend(Backend):
    """Options:

    - ``threads``: torch.set_num_threads (process-wide; default: torch's own choice).
    - ``pin_memory``: on CUDA, stage inputs and outputs through pinned (page-locked) host buffers,
      so copies are asynchronous DMA (default True).
    - ``fp16``: on CUDA, run under ``torch.autocast(float16)``: convolutions and matrix products
      in half precision; the in-graph cast and normalisation, which come before the first
      convolution, stay float32, and autocast keeps softmax in float32; outputs are float32 as
      for every backend. Default False. Refused on the CPU (BackendError when the device is
      ``cpu``, BackendUnavailable when no CUDA device is found), never silently run in float32.
    - ``channels_last``: "auto" (default), True or False; see :func:`choose_channels_last`.
    - ``warmup``: runs at batch 1 when entered (default :data:`CUDA_WARMUP_RUNS` on CUDA, 0 on
      the CPU).
    - ``cuda_graphs``: on CUDA, capture the model once per batch size as a CUDA graph and replay
      it (one launch per frame instead of one per kernel). Default False; refused on the CPU.
    """

    name: ClassVar[str] = "torch"
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"threads", "pin_memory", "fp16", "channels_last", "warmup", "cuda_graphs"}
    )

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
        choose_channels_last(options.get("channels_last", "auto"), "cpu", True)  # validates the value
        warmup = options.get("warmup")
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
            raise BackendError(f"the torch backend's warmup must be a non-negative integer, not {warmup!r}")
        if self._device_spec is not None and self._device_spec[0] == "cpu":
            for option in ("fp16", "cuda_graphs"):
                if options.get(option):
                    raise BackendError(_cuda_only(option, "cpu"))
        self._torch: Any = None
        self._module: Any = None
        self._device: Any = None
        self._fp16 = False
        self._channels_last = False
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, dict[str, Any]]] = {}
        self._staging: dict[tuple[str, tuple[int, ...]], Any] = {}
        self.warmup_ms: float | None = None

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
        extras = [name for name, on in (("fp16", self._fp16), ("channels-last", self._channels_last),
                                        ("CUDA graphs", self._use_graphs)) if on]
        return f"torch {self._torch.__version__} ({', '.join([dev] + extras)})"

    @property
    def runs_on(self) -> str | None:
        return None if self._device is None else self._device.type

    @property
    def _use_graphs(self) -> bool:
        return bool(self.options.get("cuda_graphs")) and self._device is not None and self._device.type == "cuda"

    def _activate(self) -> None:
        try:
            import torch
        except ImportError as err:
            raise BackendUnavailable(
                f"torch is not installed ({err}); for the torch backend, {install_hint('train')}"
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
        if device.type != "cuda":
            for option in ("fp16", "cuda_graphs"):
                if self.options.get(option):
                    where = f"{device} (torch {torch.__version__} finds no CUDA device)"
                    raise BackendUnavailable(_cuda_only(option, where))
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
        has_conv2d = any(p.dim() == 4 for p in module.parameters())
        channels_last = choose_channels_last(self.options.get("channels_last", "auto"), device.type, has_conv2d)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        self._torch, self._module, self._device = torch, module, device
        self._fp16 = bool(self.options.get("fp16"))
        self._channels_last = channels_last
        try:
            self._warm_up()
        except BaseException:
            self._deactivate()
            raise
        log.info("torch backend for %s on %s", self.bundle.name, self.description)

    def _warm_up(self) -> None:
        runs = self.options.get("warmup")
        if runs is None:
            runs = CUDA_WARMUP_RUNS if self._device.type == "cuda" else 0
        if not runs:
            return
        h, w = self.bundle.input_size
        zeros = {self.bundle.input_name: np.zeros((1, h, w, 3), np.uint8)}
        t0 = time.perf_counter()
        for _ in range(runs):
            self._infer(zeros)
        self.warmup_ms = (time.perf_counter() - t0) * 1000.0
        log.info("torch backend for %s warmed up in %.0f ms (%d runs)", self.bundle.name, self.warmup_ms, runs)

    def _deactivate(self) -> None:
        torch = self._torch
        self._module = None
        self._graphs.clear()
        self._staging.clear()
        if torch is not None and self._device is not None and self._device.type == "cuda":
            torch.cuda.empty_cache()
        self._torch = None
        self._device = None
        self._fp16 = self._channels_last = False

    def _stage(self, key: str, shape: tuple[int, ...], dtype: Any) -> Any:
        buf = self._staging.get((key, shape))
        if buf is None:
            buf = self._torch.empty(shape, dtype=dtype, pin_memory=True)
            self._staging[(key, shape)] = buf
        return buf

    def _forward(self, x: Any) -> dict[str, Any]:
        """The model on device tensor ``x``: named float32 outputs, on the model's device."""
        torch = self._torch
        with torch.inference_mode():
            if self._fp16:
                # cache_enabled=False: autocast's weight cache must not outlive a CUDA graph capture
                with torch.autocast("cuda", dtype=torch.float16, cache_enabled=not self._use_graphs):
                    raw = self._module(x)
            else:
                raw = self._module(x)
            tensors = self._name_outputs(raw)
            if self._fp16:
                tensors = {n: t.float() for n, t in tensors.items()}
        return tensors

    def _graph_for(self, shape: tuple[int, ...]) -> tuple[Any, Any, dict[str, Any]]:
        """The CUDA graph for input ``shape`` (captured on first use): (graph, input, outputs)."""
        found = self._graphs.get(shape)
        if found is not None:
            return found
        torch = self._torch
        static_in = torch.zeros(shape, dtype=torch.uint8, device=self._device)
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side):  # warm-up on a side stream before capture, as torch requires
            for _ in range(2):
                self._forward(static_in)
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        self._graphs[shape] = (graph, static_in, static_out)
        log.info("torch backend for %s: captured a CUDA graph for input %s", self.bundle.name, shape)
        return self._graphs[shape]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        name = self.bundle.input_name
        host = torch.from_numpy(feeds[name])
        if self._device.type != "cuda":
            try:
                tensors = self._forward(host)
            except RuntimeError as err:
                raise BackendError(
                    f"torch failed running {self.bundle.name}: {str(err).strip().splitlines()[0]}"
                ) from err
            return {n: t.numpy() for n, t in tensors.items()}
        pin = bool(self.options.get("pin_memory", True))
        if pin:
            staged = self._stage("in:" + name, tuple(host.shape), host.dtype)
            staged.copy_(host)
            host = staged
        try:
            if self._use_graphs:
                graph, static_in, tensors = self._graph_for(tuple(host.shape))
                static_in.copy_(host, non_blocking=pin)
                graph.replay()
            else:
                tensors = self._forward(host.to(self._device, non_blocking=pin))
            if not pin:
                return {n: t.cpu().numpy() for n, t in tensors.items()}
            staged_out = {}
            for n, t in tensors.items():
                buf = self._stage("out:" + n, tuple(t.shape), t.dtype)
                buf.copy_(t, non_blocking=True)
                staged_out[n] = buf
            torch.cuda.current_stream(self._device).synchronize()
        except RuntimeError as err:
            what = " (CUDA graphs: run without cuda_graphs)" if self._use_graphs else ""
            raise BackendError(
                f"torch failed running {self.bundle.name} on {self._device}{what}: "
                f"{str(err).strip().splitlines()[0]}"
            ) from err
        return {n: buf.numpy().copy() for n, buf in staged_out.items()}

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


def _cuda_only(option: str, where: str) -> str:
    what = {"fp16": "half precision (fp16)", "cuda_graphs": "CUDA graphs"}[option]
    return (f"the torch backend runs {what} only on a CUDA device, and this is {where}; "
            f"drop {option} or use device cuda")
