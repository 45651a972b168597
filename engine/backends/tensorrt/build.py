"""Building a TensorRT plan (``endoview build-engine``), a separate step from running it (STYLE.md 4).

:func:`build_plan` parses the bundle's ONNX, builds a plan for this GPU and stores it in the plan
cache (:mod:`engine.backends.plan_cache`) with a sidecar of its key. FP16: on TensorRT 10 the
builder's ``FP16`` flag lets TensorRT pick FP16 kernels; on TensorRT 11 the model is rewritten to
FP16 first (:mod:`engine.backends.tensorrt.fp16`) and the network is built ``STRONGLY_TYPED``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from engine.backends import plan_cache
from engine.backends.tensorrt.cuda import CudaContext, cuda_index, gpu_identity, import_cuda
from engine.backends.tensorrt.fp16 import to_fp16_onnx
from engine.backends.tensorrt.library import import_tensorrt, make_logger, trt_major
from engine.bundle import Bundle
from engine.errors import BackendError

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MB = plan_cache.DEFAULT_WORKSPACE_MB
DEFAULT_MAX_BATCH = plan_cache.DEFAULT_MAX_BATCH


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
    :func:`engine.backends.plan_cache.timing_cache_path`) is loaded and saved.
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise BackendError(f"max batch must be an integer of at least 1, not {max_batch!r}")
    if isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int) or workspace_mb < 16:
        raise BackendError(f"the TensorRT workspace must be an integer of at least 16 MB, not {workspace_mb!r}")
    onnx_path = bundle.file("onnx")
    trt = import_tensorrt()
    cuda = import_cuda()
    index = cuda_index(device)
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

    ctx = CudaContext(cuda, index)
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
        return "FP16 ONNX (engine.backends.tensorrt.fp16.to_fp16_onnx) + strongly typed network"
    return "BuilderFlag.FP16"


def _build_serialized(trt: Any, bundle: Bundle, onnx_path: Path, *, fp16: bool, workspace_mb: int,
                      timing_cache: Path, max_batch: int) -> bytes:
    logger = make_logger(trt)
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
