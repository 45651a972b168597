"""TensorRT backend (TensorRT 10 and 11 Python API, pycuda for memory and streams).

Building is a separate step from running (STYLE.md 4): :func:`build_plan` (``endoview
build-engine BUNDLE``) parses the bundle's ONNX, builds a plan for this GPU and stores it in the
plan cache (:mod:`engine.plan_cache`) with a sidecar of its key. :class:`TensorRTBackend` only
loads a plan whose sidecar matches this GPU, TensorRT version, ONNX model, precision, max batch
and workspace exactly;
with ``build_missing=True`` it builds one first, otherwise it tells the user to run
``endoview build-engine``.

FP16: on TensorRT 10 the builder's ``FP16`` flag lets TensorRT pick FP16 kernels. TensorRT 11 has
no such flag (networks are strongly typed), so :func:`to_fp16_onnx` first rewrites the ONNX model
to FP16 (our own pass with the onnx package: the uint8 input, the in-graph preprocessing and the
outputs stay in their types) and the network is built with ``STRONGLY_TYPED``.

``tensorrt`` and ``pycuda`` are imported only when a function here needs them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engine import plan_cache
from engine.backends.base import Backend, TensorSpec, parse_device
from engine.bundle import Bundle
from engine.errors import BackendError, BackendUnavailable

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'endoview[gpu]' on a machine with an NVIDIA GPU"
DEFAULT_WORKSPACE_MB = plan_cache.DEFAULT_WORKSPACE_MB
DEFAULT_MAX_BATCH = plan_cache.DEFAULT_MAX_BATCH


# ---------------------------------------------------------------------------------------------
# imports and device identity


def _installed(package: str) -> bool:
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
        if _installed("tensorrt"):
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


def import_cuda() -> Any:
    """``pycuda.driver``, initialised, or BackendUnavailable saying why not. The messages differ
    by cause: "pycuda is not installed", "no CUDA driver" (pycuda is there but cannot load the
    driver library), "the CUDA driver does not start" (cuInit failed), "no CUDA GPU found"."""
    try:
        import pycuda.driver as cuda
    except ImportError as err:
        if not _installed("pycuda"):
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


def plan_key_for(bundle: Bundle, *, gpu_name: str, compute_capability: str, tensorrt_version: str,
                 fp16: bool, max_batch: int = DEFAULT_MAX_BATCH,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB) -> plan_cache.PlanKey:
    try:
        return plan_cache.PlanKey(
            onnx_sha256=bundle.sha256("onnx"),
            gpu_name=gpu_name,
            compute_capability=compute_capability,
            tensorrt_version=tensorrt_version,
            precision="fp16" if fp16 else "fp32",
            max_batch=max_batch,
            workspace_mb=workspace_mb,
        )
    except ValueError as err:
        raise BackendError(f"cannot key a TensorRT plan for {bundle.name}: {err}") from err


def _make_logger(trt: Any) -> Any:
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


class _CudaContext:
    """The device's primary CUDA context, pushed around every block of CUDA work (so that the
    backend may be entered on one thread and run on another)."""

    def __init__(self, cuda: Any, index: int) -> None:
        self.cuda = cuda
        self.ctx = cuda.Device(index).retain_primary_context()

    def __enter__(self) -> _CudaContext:
        self.ctx.push()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cuda.Context.pop()

    def release(self) -> None:
        self.ctx.detach()


# ---------------------------------------------------------------------------------------------
# FP16 ONNX (TensorRT 11)

#: Ops that may belong to the in-graph preprocessing (kept in their own types by to_fp16_onnx).
_PREPROCESS_OPS = frozenset({
    "Cast", "Sub", "Div", "Mul", "Add", "Transpose", "Reshape", "Unsqueeze", "Squeeze",
    "Identity", "Slice", "Concat", "Split", "Gather", "Clip",
})
#: (op, input index) that ONNX requires to be float32 whatever the data type.
_FP32_ONLY_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("Upsample", 1)})
_FP16_MAX = float(np.finfo(np.float16).max)


def to_fp16_onnx(model: Any) -> Any:
    """Return a copy of ``model`` (onnx.ModelProto) computing in FP16.

    Kept as they are: the graph inputs and the preprocessing that follows them (the chain of
    Cast/Sub/Div/Transpose... fed only by the inputs and constants), and the graph outputs (an
    FP16 -> FP32 Cast is appended to each float output). Everything else: FP32 initializers and
    Constant values become FP16 (clipped to the FP16 range), Cast-to-FP32 becomes Cast-to-FP16, and
    a Cast-to-FP16 is inserted where an FP32 tensor enters the FP16 part. Local functions are
    inlined first; control-flow subgraphs (If/Loop/Scan) are refused.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    if len(m.functions):
        from onnx import inliner

        m = inliner.inline_local_functions(m)
    g = m.graph
    for n in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            raise BackendError(
                f"cannot convert the ONNX model to FP16: node {n.name or n.op_type} ({n.op_type}) has a "
                "subgraph; export without control flow or build in FP32"
            )
    inferred = onnx.shape_inference.infer_shapes(m)
    types: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name: t for t in g.initializer}
    for t in g.initializer:
        types[t.name] = t.data_type
    graph_inputs = {vi.name for vi in g.input if vi.name not in inits}
    float_ = TensorProto.FLOAT

    # 1. the preprocessing region, kept in its own types
    pre_tensors = set(graph_inputs)
    keep: set[int] = set()
    for i, n in enumerate(g.node):
        feeds = [x for x in n.input if x]
        if (
            n.op_type in _PREPROCESS_OPS
            and any(x in pre_tensors for x in feeds)
            and all(x in pre_tensors or x in inits for x in feeds)
        ):
            keep.add(i)
            pre_tensors.update(n.output)

    # 2. rewrite the rest
    fp16_inits: dict[str, str] = {}  # fp32 initializer name -> its fp16 copy
    cast_in: dict[str, str] = {}  # fp32 tensor -> fp16 cast of it
    new_nodes: list[Any] = []
    new_inits: list[Any] = []
    clipped = 0

    def fp16_init(name: str) -> str:
        nonlocal clipped
        if name not in fp16_inits:
            arr = numpy_helper.to_array(inits[name])
            clipped += int(np.count_nonzero(np.abs(arr) > _FP16_MAX))
            half = np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16)
            new = name + "__fp16"
            new_inits.append(numpy_helper.from_array(half, new))
            fp16_inits[name] = new
        return fp16_inits[name]

    def half_tensor(t: Any) -> Any:
        nonlocal clipped
        arr = numpy_helper.to_array(t)
        clipped += int(np.count_nonzero(np.abs(arr) > _FP16_MAX))
        out = numpy_helper.from_array(np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16), t.name)
        return out

    for i, n in enumerate(g.node):
        if i in keep:
            new_nodes.append(n)
            continue
        for j, x in enumerate(n.input):
            if not x or types.get(x) != float_ or (n.op_type, j) in _FP32_ONLY_INPUTS:
                continue
            if x in inits:
                n.input[j] = fp16_init(x)
            elif x in pre_tensors:  # an fp32 tensor from the kept region or a graph input
                if x not in cast_in:
                    cast_in[x] = x + "__fp16"
                    new_nodes.append(helper.make_node(
                        "Cast", [x], [cast_in[x]], to=TensorProto.FLOAT16, name=f"{x}__to_fp16"))
                n.input[j] = cast_in[x]
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == float_:
                    a.i = TensorProto.FLOAT16
        elif n.op_type in ("Constant", "ConstantOfShape"):
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == float_:
                    a.t.CopyFrom(half_tensor(a.t))
                elif a.name == "value_float" and n.op_type == "Constant":
                    a.CopyFrom(helper.make_attribute("value", np.array(a.f, np.float16)))
                elif a.name == "value_floats" and n.op_type == "Constant":
                    a.CopyFrom(helper.make_attribute("value", np.array(list(a.floats), np.float16)))
        new_nodes.append(n)

    # 3. float outputs computed in fp16 go back to fp32 under their own names
    produced_in_fp16 = {o for i, n in enumerate(g.node) if i not in keep for o in n.output}
    tail: list[Any] = []
    for out in g.output:
        if out.type.tensor_type.elem_type != float_ or out.name not in produced_in_fp16:
            continue
        inner = out.name + "__fp16_out"
        for n in new_nodes:
            for j, x in enumerate(n.input):
                if x == out.name:
                    n.input[j] = inner
            for j, x in enumerate(n.output):
                if x == out.name:
                    n.output[j] = inner
        tail.append(helper.make_node("Cast", [inner], [out.name], to=float_, name=f"{out.name}__to_fp32"))

    del g.node[:]
    g.node.extend(new_nodes + tail)
    used = {x for n in g.node for x in n.input}
    kept_inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept_inits + new_inits)
    del g.value_info[:]
    if clipped:
        log.warning("FP16 conversion clipped %d weights to the FP16 range (+-%g)", clipped, _FP16_MAX)
    onnx.checker.check_model(m)
    return onnx.shape_inference.infer_shapes(m)


# ---------------------------------------------------------------------------------------------
# building


def build_plan(
    bundle: Bundle,
    *,
    fp16: bool = False,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    timing_cache: Path | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    device: str | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
) -> Path:
    """Build a TensorRT plan for ``bundle``'s ONNX on this GPU and store it in the plan cache.

    Returns the plan's path. Without ``force``, an existing plan whose sidecar matches exactly is
    reused. ``timing_cache`` (default: this GPU's and TensorRT version's file beside the plans,
    :func:`engine.plan_cache.timing_cache_path`) is loaded and saved.
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise BackendError(f"max batch must be an integer of at least 1, not {max_batch!r}")
    if isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int) or workspace_mb < 16:
        raise BackendError(f"the TensorRT workspace must be an integer of at least 16 MB, not {workspace_mb!r}")
    onnx_path = bundle.file("onnx")
    trt = import_tensorrt()
    cuda = import_cuda()
    index = _cuda_index(device)
    gpu_name, cc = gpu_identity(cuda, index)
    key = plan_key_for(bundle, gpu_name=gpu_name, compute_capability=cc, tensorrt_version=trt.__version__,
                       fp16=fp16, max_batch=max_batch, workspace_mb=workspace_mb)
    folder = plan_cache.engines_dir() if cache_dir is None else Path(cache_dir)
    if not force:
        found, why = plan_cache.check_plan(key, folder)
        if found is not None:
            log.info("TensorRT plan for %s is up to date: %s", bundle.name, found)
            return found
        log.info("building a TensorRT plan for %s: %s", bundle.name, why)
    if timing_cache is None:
        timing_cache = plan_cache.timing_cache_path(gpu_name, cc, trt.__version__, folder)
    timing_cache = Path(timing_cache)

    ctx = _CudaContext(cuda, index)
    try:
        with ctx:
            plan = _build_serialized(trt, bundle, onnx_path, fp16=fp16, workspace_mb=workspace_mb,
                                     timing_cache=timing_cache, max_batch=max_batch)
    finally:
        ctx.release()
    return plan_cache.write_plan(
        key, plan, folder,
        bundle=bundle.name, onnx_file=bundle.formats["onnx"], timing_cache=str(timing_cache),
        fp16_method=_fp16_method(trt) if fp16 else None,
    )


def _fp16_method(trt: Any) -> str:
    if trt_major(trt) >= 11:
        return "FP16 ONNX (engine.backends.tensorrt.to_fp16_onnx) + strongly typed network"
    return "BuilderFlag.FP16"


def _build_serialized(trt: Any, bundle: Bundle, onnx_path: Path, *, fp16: bool, workspace_mb: int,
                      timing_cache: Path, max_batch: int) -> bytes:
    logger = _make_logger(trt)
    major = trt_major(trt)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = fp16 and major >= 11
    if strongly_typed:
        st = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if st is not None:  # accepted (and implied) on 11
            flags |= 1 << int(st)
    # EXPLICIT_BATCH is the only mode (and the flag deprecated) since TensorRT 10: not set.
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)

    with tempfile.TemporaryDirectory(prefix="endoview-trt-") as tmp:
        source = onnx_path
        if strongly_typed:
            import onnx

            log.info("converting %s to FP16 for a strongly typed TensorRT %s build", onnx_path, trt.__version__)
            half = to_fp16_onnx(onnx.load(str(onnx_path)))
            source = Path(tmp) / "model.fp16.onnx"
            onnx.save(half, str(source))
        if not parser.parse_from_file(str(source)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BackendError(
                f"TensorRT {trt.__version__} cannot parse {onnx_path}: " + "; ".join(errors or ["unknown error"])
            )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)

    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise BackendError(
                f"input {tensor.name!r} of {onnx_path} has dynamic dimensions besides the batch {shape}; "
                "export it with a fixed height, width and channels"
            )
        if shape[0] < 0:
            profile.set_shape(tensor.name, (1, *shape[1:]), (1, *shape[1:]), (max_batch, *shape[1:]))
        else:
            profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)

    have_cache = _use_timing_cache(config, timing_cache)

    log.info("building TensorRT %s plan for %s (%s, workspace %d MB, max batch %d)", trt.__version__,
             bundle.name, "fp16" if fp16 else "fp32", workspace_mb, max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(logger.errors[-3:]) or "see the log"
        raise BackendError(f"TensorRT could not build a plan for {onnx_path}: {detail}")
    if have_cache:
        try:
            timing_cache.parent.mkdir(parents=True, exist_ok=True)
            plan_cache.atomic_write(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
        except OSError as err:
            log.warning("cannot save the TensorRT timing cache to %s: %s", timing_cache, err)
    return bytes(memoryview(serialized))


def _use_timing_cache(config: Any, path: Path) -> bool:
    """Give the builder the timing cache in ``path`` (a new one when there is none, or when
    TensorRT rejects it: a bad cache only makes the build slower). False: no timing cache."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, True):  # ignore_mismatch
        return True
    log.warning("TensorRT rejected the timing cache %s (%d bytes); starting a new one", path, len(data))
    cache = config.create_timing_cache(b"")
    if cache is not None and config.set_timing_cache(cache, True):
        return True
    log.warning("TensorRT gave no timing cache; building without one")
    return False


def _cuda_index(device: str | None) -> int:
    spec = parse_device(device, "tensorrt")
    if spec is None:
        return 0
    if spec[0] != "cuda":
        raise BackendError("the tensorrt backend runs only on CUDA devices (use device cuda or cuda:N)")
    return spec[1]


# ---------------------------------------------------------------------------------------------
# running


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
        self._index = _cuda_index(device)
        self._build_max_batch = options.get("max_batch", DEFAULT_MAX_BATCH)
        self._build_workspace_mb = options.get("workspace_mb", DEFAULT_WORKSPACE_MB)
        for what, value, least in (("max_batch", self._build_max_batch, 1),
                                   ("workspace_mb", self._build_workspace_mb, 16)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise BackendError(f"the tensorrt backend's {what} must be an integer of at least {least}, "
                                   f"not {value!r}")
        self._trt: Any = None
        self._cuda: Any = None
        self._ctx: _CudaContext | None = None
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
        ctx = _CudaContext(self._cuda, self._index)
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
        self._logger = _make_logger(trt)
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


def tensorrt_version() -> str | None:
    """The installed TensorRT version without importing it (None when absent)."""
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
