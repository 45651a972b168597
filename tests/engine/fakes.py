"""Small test doubles: sources (Qt-free, no video files), and a stand-in ``tensorrt`` +
``pycuda.driver`` for the TensorRT backend's build/load logic (:func:`install_fake_tensorrt`)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
import types
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from engine.errors import DeviceLostError, SourceError
from engine.types import Frame


def octagon_image(w: int = 160, h: int = 120, value: int = 150, index: int = 0) -> np.ndarray:
    import cv2

    img = np.zeros((h, w, 3), np.uint8)
    cx, cy, r = w // 2, h // 2, int(h * 0.45)
    c = int(r * 0.4)
    pts = np.array([[cx - r + c, cy - r], [cx + r - c, cy - r], [cx + r, cy - r + c],
                    [cx + r, cy + r - c], [cx + r - c, cy + r], [cx - r + c, cy + r],
                    [cx - r, cy + r - c], [cx - r, cy - r + c]], np.int32)
    cv2.fillPoly(img, [pts], (value // 2, value // 2 + index % 50, value))
    return img


class ListSource:
    """Frames from a list of images; optionally fails, or loses the 'device' for a while."""

    def __init__(self, n: int = 20, *, fps: float = 30.0, fail_at: int | None = None,
                 lose_at: int | None = None, lost_reads: int = 0, missing_reopens: int = 0,
                 delay: float = 0.0, size=(160, 120)) -> None:
        self.n, self.fps, self.fail_at, self.delay = n, fps, fail_at, delay
        self.lose_at, self.lost_reads, self.missing_reopens = lose_at, lost_reads, missing_reopens
        self.pos = 0
        self.lost = False
        self.reopens = 0
        w, h = size
        self.info = SimpleNamespace(kind="file", name="list", width=w, height=h, fps=fps,
                                    rate=Fraction(fps).limit_denominator(1001), frame_count=n,
                                    seekable=True, still=False)
        self.stopped_early = None
        self.closed = False

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        if self.lost:
            raise DeviceLostError("capture device fake stopped delivering frames")
        if self.lose_at is not None and self.pos == self.lose_at:
            self.lose_at = None
            self.lost = True
            raise DeviceLostError("capture device fake stopped delivering frames")
        if self.fail_at is not None and self.pos == self.fail_at:
            raise SourceError("fake decode failure")
        if self.pos >= self.n:
            return None
        w, h = self.info.width, self.info.height
        frame = Frame(self.pos, self.pos / self.fps, octagon_image(w, h, index=self.pos), time.perf_counter())
        self.pos += 1
        return frame

    def reopen(self) -> None:
        self.reopens += 1
        if self.missing_reopens > 0:
            self.missing_reopens -= 1
            raise SourceError("capture device fake not found")
        self.lost = False

    def seek(self, index: int) -> None:
        self.pos = index

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# fake TensorRT 10/11 + pycuda


class FakeCuda(types.ModuleType):
    """The slice of pycuda.driver the backend uses; device memory is numpy bytes by address.

    ``gpu_name`` and ``compute_capability`` are what the one fake device reports; ``init_error``
    makes ``init()`` raise ``Error(init_error)`` (a driver that does not start)."""

    def __init__(self, gpu_name: str = "Fake GPU 9000", compute_capability: tuple[int, int] = (8, 9),
                 init_error: str | None = None) -> None:
        super().__init__("pycuda.driver")
        self.memory: dict[int, np.ndarray] = {}
        self.next_ptr = 0x1000
        self.contexts: list[str] = []
        self.freed = 0
        self.init_error = init_error
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
                return gpu_name

            def compute_capability(self) -> tuple[int, int]:
                return compute_capability

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
        if self.init_error is not None:
            raise self.Error(self.init_error)

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


#: First line of every fake timing cache; anything else handed to create_timing_cache is refused.
TIMING_MAGIC = b"fake-trt-timing-cache/1\n"


def make_fake_trt(version: str, cuda: FakeCuda) -> types.ModuleType:
    """The slice of the TensorRT 10/11 Python API the backend uses. Plans are JSON; the engine
    runs the parsed ONNX with onnxruntime; ``trt.builds`` records every build.

    The timing cache is a real round trip: ``create_timing_cache(data)`` keeps ``data`` (it must
    be empty or start with :data:`TIMING_MAGIC`), each build appends one line naming the ONNX it
    timed, and ``serialize()`` returns the data it was created from plus those lines."""
    import onnx
    import onnxruntime as ort

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
            self.loaded = bytes(data)
            self.added: list[bytes] = []

        def serialize(self) -> bytes:
            return (self.loaded or TIMING_MAGIC) + b"".join(self.added)

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
            if cache.loaded and not cache.loaded.startswith(TIMING_MAGIC):
                return False
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
            onnx_sha = hashlib.sha256(bytes.fromhex(network.onnx)).hexdigest()
            record = {"flags": network.flags, "builder_flags": sorted(config.flags), "workspace": config.pool,
                      "profile": config.profiles[0].shapes, "onnx": network.onnx,
                      "timing_cache_in": None if config.cache is None else config.cache.loaded.hex()}
            if config.cache is not None:
                config.cache.added.append(f"tactics {onnx_sha[:16]} on {cuda.Device(0).name()}\n".encode())
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
            declared = self.engine.out_shapes[name]
            batch = next(iter(self.shapes.values()))[0]
            if all(d >= 0 for d in declared[1:]):
                return (batch,) + tuple(declared[1:])
            # symbolic dimensions: TensorRT resolves them from the input shapes; so does this
            key = tuple(sorted(self.shapes.items()))
            if key not in self.engine.resolved:
                zeros = {n: np.zeros(s, self.engine.dtypes[n]) for n, s in self.shapes.items()}
                outs = self.engine.session.run(self.engine.out_names, zeros)
                self.engine.resolved[key] = {n: tuple(o.shape) for n, o in zip(self.engine.out_names, outs)}
            return self.engine.resolved[key][name]

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
            self.resolved: dict = {}

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


def install_fake_tensorrt(monkeypatch, cache_dir: Path, version: str = "10.9.0.34", *,
                          cuda: FakeCuda | None = None) -> tuple[types.ModuleType, FakeCuda]:
    """Put a fake ``tensorrt`` and ``pycuda.driver`` in ``sys.modules`` (undone by
    ``monkeypatch``) and point ``ENDOVIEW_CACHE`` at ``cache_dir``; return (trt, cuda)."""
    import importlib.machinery

    cuda = FakeCuda() if cuda is None else cuda
    trt = make_fake_trt(version, cuda)
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    pycuda = types.ModuleType("pycuda")
    pycuda.__spec__ = importlib.machinery.ModuleSpec("pycuda", None, is_package=True)
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setenv("ENDOVIEW_CACHE", str(cache_dir))
    return trt, cuda
