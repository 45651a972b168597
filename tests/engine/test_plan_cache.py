"""TensorRT plan cache keys and sidecars (pure), the FP16 ONNX pass, and the build/load logic of
the tensorrt backend against a fake ``tensorrt`` + ``pycuda`` injected through ``sys.modules``.

The fake implements only the TensorRT 10/11 and pycuda calls the backend makes; its "engine"
runs the parsed ONNX file with onnxruntime and moves bytes through fake device memory, so the
test checks the real data path (shapes, profiles, addresses, copies) and the cache logic, not
TensorRT itself. The real TensorRT path is covered by the contract test in test_backends.py on
a machine that has TensorRT.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from engine import plan_cache
from engine.backends import open_backend
from engine.backends.tensorrt import build_plan, to_fp16_onnx
from engine.bundle import Bundle
from engine.errors import BackendError, BackendUnavailable
from engine.plan_cache import PlanKey
from tiny_models import make_tiny_classifier_bundle, make_tiny_segmenter_bundle, random_images, reference_probs

KEY = PlanKey("ab" * 32, "NVIDIA H100 80GB HBM3", "9.0", "10.9.0.34", "fp32")


# -- keys and sidecars ------------------------------------------------------------------------


def test_key_digest_is_stable_and_covers_every_field() -> None:
    assert KEY.digest == PlanKey(**KEY.fields()).digest
    assert len(KEY.digest) == 64
    variants = [
        PlanKey("cd" * 32, KEY.gpu_name, KEY.compute_capability, KEY.tensorrt_version, KEY.precision),
        PlanKey(KEY.onnx_sha256, "NVIDIA A100", KEY.compute_capability, KEY.tensorrt_version, KEY.precision),
        PlanKey(KEY.onnx_sha256, KEY.gpu_name, "8.0", KEY.tensorrt_version, KEY.precision),
        PlanKey(KEY.onnx_sha256, KEY.gpu_name, KEY.compute_capability, "11.1.0", KEY.precision),
        PlanKey(KEY.onnx_sha256, KEY.gpu_name, KEY.compute_capability, KEY.tensorrt_version, "fp16"),
    ]
    digests = {KEY.digest} | {v.digest for v in variants}
    assert len(digests) == 6


def test_key_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        PlanKey("ab" * 32, "g", "9.0", "10", "int8")
    with pytest.raises(ValueError, match="64 hex digits"):
        PlanKey("abc", "g", "9.0", "10", "fp32")


def test_cache_folder_env_override(tmp_path: Path) -> None:
    assert plan_cache.engines_dir({"ENDOVIEW_CACHE": str(tmp_path)}) == tmp_path / "engines"
    assert plan_cache.engines_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "endoview" / "engines"
    assert plan_cache.engines_dir({}) == Path.home() / ".cache" / "endoview" / "engines"


def test_write_then_check(tmp_path: Path) -> None:
    path = plan_cache.write_plan(KEY, b"PLAN" * 100, tmp_path, bundle="tiny", max_batch=4)
    assert path.parent == tmp_path and path.read_bytes() == b"PLAN" * 100
    found, why = plan_cache.check_plan(KEY, tmp_path)
    assert found == path and why == ""
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["key"] == KEY.fields() and side["digest"] == KEY.digest
    assert side["bundle"] == "tiny" and side["max_batch"] == 4 and side["plan_bytes"] == 400
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temp files left"


def test_missing_plan(tmp_path: Path) -> None:
    found, why = plan_cache.check_plan(KEY, tmp_path)
    assert found is None and why.startswith(f"no plan in {tmp_path}")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("gpu_name", "NVIDIA A100", "it was built for GPU 'NVIDIA A100', this is 'NVIDIA H100 80GB HBM3'"),
        ("compute_capability", "8.0", "it was built for compute capability '8.0', this is '9.0'"),
        ("tensorrt_version", "10.3.0", "it was built for TensorRT version '10.3.0', this is '10.9.0.34'"),
        ("onnx_sha256", "cd" * 32, "it was built for ONNX model"),
        ("precision", "fp16", "it was built for precision 'fp16', this is 'fp32'"),
    ],
)
def test_foreign_sidecar_is_not_trusted(tmp_path: Path, field: str, value: str, reason: str) -> None:
    path = plan_cache.write_plan(KEY, b"plan", tmp_path)
    side = path.with_suffix(".json")
    data = json.loads(side.read_text())
    data["key"][field] = value
    side.write_text(json.dumps(data))
    assert plan_cache.sidecar_mismatches(data, KEY)
    found, why = plan_cache.check_plan(KEY, tmp_path)
    assert found is None
    assert why.startswith(f"{path} is stale or foreign: ") and reason in why


def test_sidecar_problems(tmp_path: Path) -> None:
    path = plan_cache.write_plan(KEY, b"plan", tmp_path)
    side = path.with_suffix(".json")
    side.write_text("{broken")
    assert "is unreadable" in plan_cache.check_plan(KEY, tmp_path)[1]
    side.unlink()
    assert plan_cache.check_plan(KEY, tmp_path)[1] == f"{path} has no sidecar {side.name}, so it cannot be trusted"
    assert plan_cache.sidecar_mismatches([], KEY) == ["the sidecar is not a JSON object"]
    assert "schema" in plan_cache.sidecar_mismatches({"schema": "x"}, KEY)[0]
    digest_lie = {"schema": plan_cache.SCHEMA, "key": KEY.fields(), "digest": "0" * 64}
    assert plan_cache.sidecar_mismatches(digest_lie, KEY) == ["its key digest does not match its key fields"]


def test_modified_plan_is_not_trusted(tmp_path: Path) -> None:
    path = plan_cache.write_plan(KEY, b"plan-bytes", tmp_path)
    path.write_bytes(b"plan-bytez")
    found, why = plan_cache.check_plan(KEY, tmp_path)
    assert found is None and "does not match the sha256 in its sidecar" in why


def test_unwritable_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BackendError, match="cannot write the TensorRT plan to .*set ENDOVIEW_CACHE to a writable folder"):
        plan_cache.write_plan(KEY, b"plan", blocker / "engines")


# -- FP16 ONNX (TensorRT 11) --------------------------------------------------------------------


def test_fp16_onnx_keeps_io_and_preprocessing(tmp_path: Path) -> None:
    bundle = make_tiny_classifier_bundle(tmp_path / "b", torchscript=False)
    half = to_fp16_onnx(onnx.load(str(bundle.file("onnx"))))
    g = half.graph
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert g.output[0].name == "probs" and g.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    types = {t.name: t.data_type for t in g.initializer}
    assert types["mean255"] == types["std255"] == onnx.TensorProto.FLOAT  # preprocessing stays fp32
    assert types["conv_w__fp16"] == types["fc_w__fp16"] == onnx.TensorProto.FLOAT16
    ops = [n.op_type for n in g.node]
    assert ops[:4] == ["Cast", "Sub", "Div", "Transpose"] and ops[4] == "Cast" and ops[-1] == "Cast"
    images = random_images(3, seed=9)
    out = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference_probs(images), atol=5e-3)


def test_fp16_onnx_segmenter(tmp_path: Path) -> None:
    bundle = make_tiny_segmenter_bundle(tmp_path / "s", torchscript=False)
    half = to_fp16_onnx(onnx.load(str(bundle.file("onnx"))))
    images = random_images(2, seed=1)
    ref = ort.InferenceSession(str(bundle.file("onnx")), providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]
    out = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]
    np.testing.assert_allclose(out, ref, atol=5e-3)


# -- fake TensorRT + pycuda -----------------------------------------------------------------


class FakeCuda(types.ModuleType):
    """The slice of pycuda.driver the backend uses; device memory is numpy bytes by address."""

    def __init__(self) -> None:
        super().__init__("pycuda.driver")
        self.memory: dict[int, np.ndarray] = {}
        self.next_ptr = 0x1000
        self.contexts: list[str] = []
        self.freed = 0
        cuda = self

        class Error(RuntimeError):
            pass

        class Context:
            @staticmethod
            def pop() -> None:
                cuda.contexts.pop()

        class PrimaryContext:
            detached = 0

            def push(self) -> None:
                cuda.contexts.append("ctx")

            def detach(self) -> None:
                PrimaryContext.detached += 1

        class Device:
            @staticmethod
            def count() -> int:
                return 1

            def __init__(self, index: int) -> None:
                self.index = index

            def name(self) -> str:
                return "Fake GPU 9000"

            def compute_capability(self) -> tuple[int, int]:
                return (8, 9)

            def retain_primary_context(self) -> PrimaryContext:
                return PrimaryContext()

        class Allocation:
            def __init__(self, ptr: int) -> None:
                self.ptr = ptr

            def __int__(self) -> int:
                return self.ptr

            def free(self) -> None:
                del cuda.memory[self.ptr]
                cuda.freed += 1

        class Stream:
            handle = 42

            def synchronize(self) -> None:
                pass

        self.Error, self.Context, self.PrimaryContext, self.Device = Error, Context, PrimaryContext, Device
        self.Allocation, self.Stream = Allocation, Stream

    def init(self) -> None:
        pass

    def mem_alloc(self, nbytes: int):
        assert self.contexts, "CUDA call without a current context"
        ptr = self.next_ptr
        self.next_ptr += nbytes + 256
        self.memory[ptr] = np.zeros(nbytes, np.uint8)
        return self.Allocation(ptr)

    def pagelocked_empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def memcpy_htod_async(self, dest, src: np.ndarray, stream) -> None:
        assert self.contexts and src.flags.c_contiguous
        raw = src.reshape(-1).view(np.uint8)
        self.memory[int(dest)][: raw.size] = raw

    def memcpy_dtoh_async(self, dest: np.ndarray, src, stream) -> None:
        assert self.contexts and dest.flags.c_contiguous
        raw = dest.reshape(-1).view(np.uint8)
        raw[:] = self.memory[int(src)][: raw.size]


def make_fake_trt(version: str, cuda: FakeCuda) -> types.ModuleType:
    """The slice of the TensorRT 10/11 Python API the backend uses. Plans are JSON."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = []
    major = int(version.split(".")[0])

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.BuilderFlag = types.SimpleNamespace(**({"FP16": 0} if major < 11 else {}))  # FP16 is gone in 11
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: dtype

    class Tensor:
        def __init__(self, name: str, shape: tuple) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags, self.inputs, self.onnx = flags, [], None

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger) -> None:
            self.network, self.errors = network, []

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            self.network.onnx = model.SerializeToString().hex()
            for vi in model.graph.input:
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
                self.network.inputs.append(Tensor(vi.name, dims))
            return True

        @property
        def num_errors(self) -> int:
            return 0

    class Profile:
        def __init__(self) -> None:
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi) -> None:
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return b"timing:" + self.data[:0] + b"v1"

    class Config:
        def __init__(self) -> None:
            self.flags, self.pool, self.profiles, self.cache = set(), None, [], None

        def set_memory_pool_limit(self, pool, size) -> None:
            self.pool = size

        def set_flag(self, flag) -> None:
            self.flags.add(flag)

        def add_optimization_profile(self, p: Profile) -> int:
            self.profiles.append(p)
            return 0

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.cache

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            assert cuda.contexts, "build without a current CUDA context"
            record = {"flags": network.flags, "builder_flags": sorted(config.flags), "workspace": config.pool,
                      "profile": config.profiles[0].shapes, "onnx": network.onnx,
                      "timing_cache_in": config.cache.data.decode()}
            trt.builds.append(record)
            return json.dumps(record).encode()

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape) -> bool:
            lo, _, hi = self.engine.plan["profile"][name]
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            batch = next(iter(self.shapes.values()))[0]
            return (batch,) + tuple(self.engine.out_shapes[name][1:])

        def set_tensor_address(self, name, ptr: int) -> bool:
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert cuda.contexts and stream_handle == 42
            feeds = {}
            for name, shape in self.shapes.items():
                dtype = self.engine.dtypes[name]
                n = int(np.prod(shape)) * np.dtype(dtype).itemsize
                feeds[name] = cuda.memory[self.addresses[name]][:n].view(dtype).reshape(shape)
            for name, value in zip(self.engine.out_names, self.engine.session.run(self.engine.out_names, feeds)):
                raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
                cuda.memory[self.addresses[name]][: raw.size] = raw
            return True

    class Engine:
        def __init__(self, plan: dict) -> None:
            self.plan = plan
            self.session = ort.InferenceSession(bytes.fromhex(plan["onnx"]), providers=["CPUExecutionProvider"])
            ins, outs = self.session.get_inputs(), self.session.get_outputs()
            conv = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}
            self.names = [i.name for i in ins] + [o.name for o in outs]
            self.in_names, self.out_names = [i.name for i in ins], [o.name for o in outs]
            self.dtypes = {t.name: conv[t.type] for t in ins + outs}
            self.shapes = {t.name: tuple(d if isinstance(d, int) else -1 for d in t.shape) for t in ins + outs}
            self.out_shapes = {o.name: self.shapes[o.name] for o in outs}

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> str:
            return "in" if name in self.in_names else "out"

        def get_tensor_dtype(self, name: str):
            return self.dtypes[name]

        def get_tensor_shape(self, name: str):
            return self.shapes[name]

        def get_tensor_profile_shape(self, name: str, profile: int):
            return self.plan["profile"][name]

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            try:
                return Engine(json.loads(data))
            except (ValueError, KeyError):
                return None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


@pytest.fixture(params=["10.9.0.34", "11.1.0.6"])
def fake_trt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    cuda = FakeCuda()
    trt = make_fake_trt(request.param, cuda)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setenv("ENDOVIEW_CACHE", str(tmp_path / "cache"))
    return trt, cuda


@pytest.fixture()
def tiny(tmp_path: Path) -> Bundle:
    return make_tiny_classifier_bundle(tmp_path / "tiny", torchscript=False)


@pytest.mark.parametrize("fp16", [False, True])
def test_fake_build_then_run(fake_trt, tiny: Bundle, tmp_path: Path, fp16: bool) -> None:
    trt, cuda = fake_trt
    major = int(trt.__version__.split(".")[0])
    path = build_plan(tiny, fp16=fp16, max_batch=4, workspace_mb=64)
    assert path.parent == tmp_path / "cache" / "engines"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["key"] == {"onnx_sha256": tiny.sha256("onnx"), "gpu_name": "Fake GPU 9000",
                           "compute_capability": "8.9", "tensorrt_version": trt.__version__,
                           "precision": "fp16" if fp16 else "fp32"}
    rec = trt.builds[-1]
    assert rec["profile"] == {"image": [[1, 32, 32, 3], [1, 32, 32, 3], [4, 32, 32, 3]]}
    assert rec["workspace"] == 64 << 20
    built_onnx = onnx.load_from_string(bytes.fromhex(rec["onnx"]))
    has_fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in built_onnx.graph.initializer)
    if major >= 11 and fp16:  # no FP16 flag: FP16 ONNX, strongly typed network
        assert rec["flags"] == 1 << 5 and rec["builder_flags"] == [] and has_fp16
    elif fp16:
        assert rec["flags"] == 0 and rec["builder_flags"] == [0] and not has_fp16
    else:
        assert rec["flags"] == 0 and rec["builder_flags"] == [] and not has_fp16
    assert (tmp_path / "cache" / "engines" / "timing.cache").read_bytes() == b"timing:v1"

    # up to date: no rebuild without force
    assert build_plan(tiny, fp16=fp16, max_batch=4) == path and len(trt.builds) == 1

    images = random_images(3, seed=2)
    backend = open_backend(tiny, "tensorrt", fp16=fp16)
    with backend:
        assert backend.description == f"tensorrt {trt.__version__} (Fake GPU 9000, {'fp16' if fp16 else 'fp32'})"
        for batch in (images[:1], images, images[1:2]):
            out = backend.run({"image": batch})["probs"]
            np.testing.assert_allclose(out, reference_probs(batch), atol=5e-3 if fp16 else 1e-5)
        with pytest.raises(BackendError, match="has batch 5 but this tensorrt engine takes at most 4"):
            backend.run({"image": random_images(5)})
    assert cuda.memory == {} and cuda.contexts == [], "device memory freed and contexts popped on exit"


def test_fake_missing_plan_is_not_built_silently(fake_trt, tiny: Bundle) -> None:
    backend = open_backend(tiny, "tensorrt")
    with pytest.raises(BackendError, match=rf"no TensorRT plan for {tiny.path} on this GPU .*run `endoview build-engine {tiny.path}` first"):
        backend.__enter__()
    assert not backend.is_active


def test_fake_stale_plan_is_rebuilt_when_asked(fake_trt, tiny: Bundle, tmp_path: Path) -> None:
    trt, _ = fake_trt
    path = build_plan(tiny, max_batch=2)
    side = path.with_suffix(".json")
    data = json.loads(side.read_text())
    data["key"]["gpu_name"] = "Some Other GPU"
    side.write_text(json.dumps(data))
    with pytest.raises(BackendError, match="stale or foreign: it was built for GPU 'Some Other GPU', this is 'Fake GPU 9000'"):
        open_backend(tiny, "tensorrt").__enter__()
    with open_backend(tiny, "tensorrt", build_missing=True, max_batch=2) as backend:
        backend.run({"image": random_images(2)})
    assert len(trt.builds) == 2
    assert plan_cache.check_plan(plan_cache.PlanKey(**data["key"] | {"gpu_name": "Fake GPU 9000"}), path.parent)[0] == path


def test_fake_auto_uses_tensorrt_only_with_a_plan(fake_trt, tiny: Bundle) -> None:
    assert open_backend(tiny, "auto").name == "onnxruntime"
    build_plan(tiny)
    assert open_backend(tiny, "auto").name == "tensorrt"
    assert open_backend(tiny, "auto", device="cpu").name == "onnxruntime"


def test_fake_segmenter(fake_trt, tmp_path: Path) -> None:
    seg = make_tiny_segmenter_bundle(tmp_path / "seg", torchscript=False)
    with open_backend(seg, "tensorrt", build_missing=True) as backend:
        out = backend.run({"image": random_images(2)})
    assert out["mask"].shape == (2, 1, 32, 32)


def test_build_engine_command_without_tensorrt(tiny: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from engine.commands import build_engine

    if "tensorrt" in sys.modules or _installed("tensorrt"):
        pytest.skip("TensorRT is installed here")
    parser = argparse.ArgumentParser(prog="endoview")
    build_engine.add_parser(parser.add_subparsers())
    args = parser.parse_args(["build-engine", str(tiny.path), "--fp16"])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("endoview: error: TensorRT is not installed here: No module named 'tensorrt'")
    assert err.endswith("; build-engine needs an NVIDIA GPU with TensorRT 10 or 11 (pip install 'endoview[gpu]')")
    assert "\n" not in err


def test_tensorrt_on_cpu_device_is_refused(tiny: Bundle) -> None:
    from engine.backends.tensorrt import TensorRTBackend

    with pytest.raises(BackendError, match="runs only on CUDA devices"):
        TensorRTBackend(tiny, device="cpu")


def test_tensorrt_missing_is_unavailable_not_a_crash(tiny: Bundle) -> None:
    from engine.backends.tensorrt import TensorRTBackend

    if _installed("tensorrt"):
        pytest.skip("TensorRT is installed here")
    backend = TensorRTBackend(tiny)  # constructing never imports tensorrt
    with pytest.raises(BackendUnavailable, match=r"TensorRT is not installed \(pip install 'endoview\[gpu\]'"):
        backend.__enter__()


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
