"""The TensorRT backend: loads a plan whose sidecar matches this GPU, TensorRT version, ONNX model,
precision, max batch and workspace exactly, and runs it with pycuda memory and streams. With
``build_missing=True`` it builds one first (:func:`engine.backends.tensorrt.build.build_plan`);
otherwise it tells the user to run ``endoview build-engine``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engine.backends import plan_cache
from engine.backends.base import Backend, TensorSpec
from engine.backends.tensorrt.build import DEFAULT_MAX_BATCH, DEFAULT_WORKSPACE_MB, build_plan, plan_key_for
from engine.backends.tensorrt.cuda import CudaContext, cuda_index, gpu_identity, import_cuda
from engine.backends.tensorrt.library import import_tensorrt, make_logger
from engine.bundle import Bundle
from engine.errors import BackendError, BackendUnavailable

log = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    """Options: ``fp16`` (load the FP16 plan), ``build_missing`` (build a plan when none
    matches, default False), ``max_batch`` and ``workspace_mb`` (the plan's; both are part of its
    key, so a plan built with other values is not loaded), ``cache_dir``."""

    name: ClassVar[str] = "tensorrt"
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"fp16", "build_missing", "max_batch", "workspace_mb", "cache_dir"}
    )

    def __init__(self, bundle: Bundle, *, device: str | None = None, **options: Any) -> None:
        super().__init__(bundle, device=device, **options)
        bundle.file("onnx")  # TensorRT plans are built from the ONNX model
        self._index = cuda_index(device)
        self._build_max_batch = options.get("max_batch", DEFAULT_MAX_BATCH)
        self._build_workspace_mb = options.get("workspace_mb", DEFAULT_WORKSPACE_MB)
        for what, value, least in (("max_batch", self._build_max_batch, 1),
                                   ("workspace_mb", self._build_workspace_mb, 16)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise BackendError(f"the tensorrt backend's {what} must be an integer of at least {least}, "
                                   f"not {value!r}")
        self._trt: Any = None
        self._cuda: Any = None
        self._ctx: CudaContext | None = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._device_bufs: dict[str, Any] = {}
        self._host_bufs: dict[str, np.ndarray] = {}
        self._input_names: list[str] = []
        self._current_shapes: dict[str, tuple[int, ...]] = {}
        self._plan_path: Path | None = None
        self._gpu_name = ""

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            trt = import_tensorrt()
        except BackendUnavailable as err:
            if str(err).startswith("TensorRT is not installed") and err.__cause__ is not None:
                return False, f"tensorrt not installed: {err.__cause__}"
            return False, str(err)
        try:
            import_cuda()
        except BackendUnavailable as err:
            return False, f"tensorrt {trt.__version__} installed, but {err}"
        return True, f"tensorrt {trt.__version__}"

    @property
    def description(self) -> str:
        if self._trt is None:
            return "tensorrt (not loaded)"
        prec = "fp16" if self.options.get("fp16") else "fp32"
        return f"tensorrt {self._trt.__version__} ({self._gpu_name}, {prec})"

    @property
    def runs_on(self) -> str | None:
        return "cuda" if self._ctx is not None else None

    def plan_key(self) -> plan_cache.PlanKey:
        """The cache key for this bundle on this machine with this backend's ``fp16``,
        ``max_batch`` and ``workspace_mb`` (imports TensorRT and pycuda)."""
        trt = self._trt or import_tensorrt()
        cuda = self._cuda or import_cuda()
        name, cc = gpu_identity(cuda, self._index)
        return plan_key_for(self.bundle, gpu_name=name, compute_capability=cc,
                            tensorrt_version=trt.__version__, fp16=bool(self.options.get("fp16")),
                            max_batch=self._build_max_batch, workspace_mb=self._build_workspace_mb)

    def _find_or_build_plan(self) -> Path:
        key = self.plan_key()
        folder = self.options.get("cache_dir")
        folder = plan_cache.engines_dir() if folder is None else Path(folder)
        found, why = plan_cache.check_plan(key, folder)
        if found is not None:
            return found
        if not self.options.get("build_missing", False):
            log.warning("no usable TensorRT plan for %s: %s", self.bundle.name, why)
            raise BackendError(
                f"no TensorRT plan for {self.bundle.path} on this GPU ({why}); run "
                f"`endoview build-engine {self.bundle.path}{' --fp16' if key.precision == 'fp16' else ''}` first"
            )
        log.warning("building a TensorRT plan for %s (%s); this takes a while", self.bundle.name, why)
        return build_plan(
            self.bundle, fp16=key.precision == "fp16", device=f"cuda:{self._index}", cache_dir=folder,
            max_batch=key.max_batch, workspace_mb=key.workspace_mb, force=True,
        )

    def _activate(self) -> None:
        self._trt = import_tensorrt()
        try:
            self._cuda = import_cuda()
            self._gpu_name = gpu_identity(self._cuda, self._index)[0]
            plan_path = self._find_or_build_plan()
        except BaseException:
            self._trt = None
            raise
        ctx = CudaContext(self._cuda, self._index)
        try:
            with ctx:
                self._load(plan_path)
        except BaseException:
            with ctx:
                self._free()
            ctx.release()
            self._trt = None
            raise
        self._ctx = ctx
        self._plan_path = plan_path
        log.info("TensorRT %s engine for %s loaded from %s", self._trt.__version__, self.bundle.name, plan_path)

    def _load(self, plan_path: Path) -> None:
        trt, cuda = self._trt, self._cuda
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self._engine is None:
            raise BackendError(
                f"TensorRT could not load the plan {plan_path}; delete it and run "
                f"`endoview build-engine {self.bundle.path} --force`"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"TensorRT could not create an execution context for {plan_path} (out of GPU memory?)")
        engine, context = self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if sorted(inputs) != [self.bundle.input_name]:
            raise BackendError(
                f"the TensorRT plan {plan_path} takes inputs {inputs}, not [{self.bundle.input_name!r}]; "
                f"rebuild it with `endoview build-engine {self.bundle.path} --force`"
            )
        missing = [n for n in self.outputs() if n not in outputs]
        if missing:
            raise BackendError(f"the TensorRT plan {plan_path} has no output(s) {missing}; rebuild it")

        specs: dict[str, TensorSpec] = {}
        max_batch = None
        for name in inputs:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            max_shape = tuple(int(d) for d in engine.get_tensor_profile_shape(name, 0)[2])
            specs[name] = TensorSpec(name, tuple(None if d < 0 else d for d in shape), dtype)
            max_batch = max_shape[0]
            if not context.set_input_shape(name, max_shape):
                raise BackendError(f"TensorRT rejected input shape {max_shape} for {name!r} in {plan_path}")
            self._current_shapes[name] = max_shape
            self._alloc(name, max_shape, dtype)
        for name in outputs:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"output {name!r} of {plan_path} has a data-dependent shape {shape}")
            self._alloc(name, shape, dtype)
        for name, buf in self._device_bufs.items():
            if not context.set_tensor_address(name, int(buf)):
                raise BackendError(f"TensorRT rejected the buffer for {name!r} in {plan_path}")
        self._inputs = specs
        self._input_names = inputs
        self._output_names = outputs
        self._max_batch = max_batch
        self._stream = cuda.Stream()

    def _alloc(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        cuda = self._cuda
        host = cuda.pagelocked_empty(shape, dtype)
        self._host_bufs[name] = host
        self._device_bufs[name] = cuda.mem_alloc(max(host.nbytes, 1))

    def _free(self) -> None:
        """Release TensorRT objects and CUDA memory (the CUDA context must be current)."""
        if self._stream is not None:
            try:
                self._stream.synchronize()
            except self._cuda.Error as err:
                log.warning("CUDA error while stopping the TensorRT stream: %s", err)
        self._context = None
        self._engine = None
        self._runtime = None
        for buf in self._device_bufs.values():
            buf.free()
        self._device_bufs.clear()
        self._host_bufs.clear()
        self._current_shapes.clear()
        self._stream = None

    def _deactivate(self) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        try:
            with ctx:
                self._free()
        finally:
            ctx.release()
            self._ctx = None
            self._trt = None
            self._max_batch = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self._cuda
        assert self._ctx is not None  # run() checked is_active
        with self._ctx:
            try:
                for name in self._input_names:
                    arr = feeds[name]
                    if self._current_shapes.get(name) != arr.shape:
                        if not self._context.set_input_shape(name, arr.shape):
                            raise BackendError(f"TensorRT rejected input shape {arr.shape} for {name!r}")
                        self._current_shapes[name] = arr.shape
                    host = self._host_bufs[name][: arr.shape[0]]
                    np.copyto(host, arr)
                    cuda.memcpy_htod_async(self._device_bufs[name], host, self._stream)
                if not self._context.execute_async_v3(self._stream.handle):
                    raise BackendError(f"TensorRT failed running {self.bundle.name} (see the log)")
                views = {}
                for name in self.outputs():
                    shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
                    view = self._host_bufs[name].reshape(-1)[: int(np.prod(shape))].reshape(shape)
                    cuda.memcpy_dtoh_async(view, self._device_bufs[name], self._stream)
                    views[name] = view
                self._stream.synchronize()
            except cuda.Error as err:
                raise BackendError(f"CUDA error while running {self.bundle.name} with TensorRT: {err}") from err
        return {name: view.copy() for name, view in views.items()}
