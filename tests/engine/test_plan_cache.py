"""TensorRT plan cache keys and sidecars (pure), the FP16 ONNX pass, and the build/load logic of
the tensorrt backend against a fake ``tensorrt`` + ``pycuda`` injected through ``sys.modules``
(``tests/engine/fakes.py``).

The fake implements only the TensorRT 10/11 and pycuda calls the backend makes; its "engine"
runs the parsed ONNX file with onnxruntime and moves bytes through fake device memory, so the
test checks the real data path (shapes, profiles, addresses, copies), the plan and timing caches
and the messages, not TensorRT itself. The real TensorRT path is covered by the contract test in
test_backends.py on a machine that has TensorRT (it builds the plan when missing).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from engine.backends import open_backend, plan_cache
from engine.backends.plan_cache import PlanKey
from engine.backends.tensorrt.build import build_plan
from engine.backends.tensorrt.fp16 import to_fp16_onnx
from engine.bundle import Bundle
from engine.errors import BackendError, BackendUnavailable
from fakes import TIMING_MAGIC, FakeCuda, install_fake_tensorrt
from tiny_models import make_tiny_classifier_bundle, make_tiny_segmenter_bundle, random_images, reference_probs

KEY = PlanKey("ab" * 32, "NVIDIA H100 80GB HBM3", "9.0", "10.9.0.34", "fp32", max_batch=8, workspace_mb=2048)


# -- keys and sidecars ------------------------------------------------------------------------


def test_key_digest_is_stable_and_covers_every_field() -> None:
    assert KEY.digest == PlanKey(**KEY.fields()).digest
    assert len(KEY.digest) == 64
    changed = {"onnx_sha256": "cd" * 32, "gpu_name": "NVIDIA A100", "compute_capability": "8.0",
               "tensorrt_version": "11.1.0", "precision": "fp16", "max_batch": 4, "workspace_mb": 4096}
    assert set(changed) == set(KEY.fields()), "every key field has a variant here"
    digests = {KEY.digest} | {PlanKey(**(KEY.fields() | {f: v})).digest for f, v in changed.items()}
    assert len(digests) == 1 + len(changed)
    stems = {plan_cache.plan_paths(PlanKey(**(KEY.fields() | {f: v})))[0].name for f, v in changed.items()}
    assert len(stems) == len(changed) and plan_cache.plan_paths(KEY)[0].name not in stems


def test_key_defaults_are_the_builders() -> None:
    from engine.backends.tensorrt import build

    key = PlanKey("ab" * 32, "g", "9.0", "10", "fp32")
    assert (key.max_batch, key.workspace_mb) == (build.DEFAULT_MAX_BATCH, build.DEFAULT_WORKSPACE_MB)


def test_key_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        PlanKey("ab" * 32, "g", "9.0", "10", "int8")
    with pytest.raises(ValueError, match="64 hex digits"):
        PlanKey("abc", "g", "9.0", "10", "fp32")
    with pytest.raises(ValueError, match="max_batch must be a positive integer, not 0"):
        PlanKey("ab" * 32, "g", "9.0", "10", "fp32", max_batch=0)
    with pytest.raises(ValueError, match="workspace_mb must be a positive integer, not '2048'"):
        PlanKey("ab" * 32, "g", "9.0", "10", "fp32", workspace_mb="2048")


def test_cache_folder_env_override(tmp_path: Path) -> None:
    assert plan_cache.engines_dir({"ENDOVIEW_CACHE": str(tmp_path)}) == tmp_path / "engines"
    assert plan_cache.engines_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "endoview" / "engines"
    assert plan_cache.engines_dir({}) == Path.home() / ".cache" / "endoview" / "engines"


def test_write_then_check(tmp_path: Path) -> None:
    path = plan_cache.write_plan(KEY, b"PLAN" * 100, tmp_path, bundle="tiny")
    assert path.parent == tmp_path and path.read_bytes() == b"PLAN" * 100
    found, why = plan_cache.check_plan(KEY, tmp_path)
    assert found == path and why == ""
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["key"] == KEY.fields() and side["digest"] == KEY.digest
    assert side["key"]["max_batch"] == 8 and side["key"]["workspace_mb"] == 2048
    assert side["bundle"] == "tiny" and side["plan_bytes"] == 400 and side["schema"] == "endoview-plan/2"
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
        ("max_batch", 4, "it was built for max batch 4, this is 8"),
        ("workspace_mb", 1024, "it was built for workspace (MB) 1024, this is 2048"),
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


def test_old_schema_sidecar_is_not_trusted(tmp_path: Path) -> None:
    """A plan from before max batch and workspace joined the key is rebuilt, never guessed at."""
    path = plan_cache.write_plan(KEY, b"plan", tmp_path)
    side = path.with_suffix(".json")
    data = json.loads(side.read_text())
    data["schema"] = "endoview-plan/1"
    data["key"] = {k: v for k, v in data["key"].items() if k not in ("max_batch", "workspace_mb")}
    side.write_text(json.dumps(data))
    found, why = plan_cache.check_plan(KEY, tmp_path)
    assert found is None and "schema 'endoview-plan/1', not 'endoview-plan/2'" in why


def test_timing_cache_is_per_gpu_and_tensorrt_version(tmp_path: Path) -> None:
    base = plan_cache.timing_cache_path("NVIDIA H100 80GB HBM3", "9.0", "10.9.0.34", tmp_path)
    assert base == tmp_path / "timing-NVIDIA_H100_80GB_HBM3-sm9.0-trt10.9.0.34.cache"
    others = {
        plan_cache.timing_cache_path("NVIDIA A100-SXM4-80GB", "9.0", "10.9.0.34", tmp_path),
        plan_cache.timing_cache_path("NVIDIA H100 80GB HBM3", "8.0", "10.9.0.34", tmp_path),
        plan_cache.timing_cache_path("NVIDIA H100 80GB HBM3", "9.0", "11.1.0", tmp_path),
    }
    assert len(others) == 3 and base not in others
    assert plan_cache.timing_cache_path("../../etc/x y", "9.0", "10", tmp_path).parent == tmp_path
    assert plan_cache.timing_cache_path("g", "9.0", "10").parent == plan_cache.engines_dir()


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
    assert ops[:4] == ["Cast", "Transpose", "Sub", "Div"] and ops[4] == "Cast" and ops[-1] == "Cast"
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


# -- fake TensorRT + pycuda (tests/engine/fakes.py) ---------------------------------------------


@pytest.fixture(params=["10.9.0.34", "11.1.0.6"])
def fake_trt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    return install_fake_tensorrt(monkeypatch, tmp_path / "cache", request.param)


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
                           "precision": "fp16" if fp16 else "fp32", "max_batch": 4, "workspace_mb": 64}
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
    timing = plan_cache.timing_cache_path("Fake GPU 9000", "8.9", trt.__version__, tmp_path / "cache" / "engines")
    assert side["timing_cache"] == str(timing) and timing.read_bytes().startswith(TIMING_MAGIC)

    # up to date: no rebuild without force
    assert build_plan(tiny, fp16=fp16, max_batch=4, workspace_mb=64) == path and len(trt.builds) == 1
    # another max batch or workspace is another plan
    assert build_plan(tiny, fp16=fp16, max_batch=2, workspace_mb=64) != path and len(trt.builds) == 2

    images = random_images(3, seed=2)
    with pytest.raises(BackendError, match=r"no TensorRT plan .*max batch 8, workspace 2048 MB"):
        open_backend(tiny, "tensorrt", fp16=fp16).__enter__()
    backend = open_backend(tiny, "tensorrt", fp16=fp16, max_batch=4, workspace_mb=64)
    with backend:
        assert backend.description == f"tensorrt {trt.__version__} (Fake GPU 9000, {'fp16' if fp16 else 'fp32'})"
        for batch in (images[:1], images, images[1:2]):
            out = backend.run({"image": batch})["probs"]
            np.testing.assert_allclose(out, reference_probs(batch), atol=5e-3 if fp16 else 1e-5)
        with pytest.raises(BackendError, match="has batch 5 but this tensorrt engine takes at most 4"):
            backend.run({"image": random_images(5)})
    assert cuda.memory == {} and cuda.contexts == [], "device memory freed and contexts popped on exit"


def test_fake_timing_cache_round_trip(fake_trt, tiny: Bundle, tmp_path: Path) -> None:
    """What one build writes to the timing cache is exactly what the next build on the same GPU
    and TensorRT reads; another GPU gets its own file."""
    trt, _ = fake_trt
    folder = tmp_path / "cache" / "engines"
    timing = plan_cache.timing_cache_path("Fake GPU 9000", "8.9", trt.__version__, folder)
    build_plan(tiny)
    assert trt.builds[-1]["timing_cache_in"] == "", "the first build starts from an empty cache"
    written = timing.read_bytes()
    assert written.startswith(TIMING_MAGIC) and written.count(b"tactics ") == 1

    seg = make_tiny_segmenter_bundle(tmp_path / "seg", torchscript=False)
    build_plan(seg)
    assert bytes.fromhex(trt.builds[-1]["timing_cache_in"]) == written, "read back exactly what was written"
    grown = timing.read_bytes()
    assert grown.startswith(written) and grown.count(b"tactics ") == 2

    build_plan(tiny, fp16=True, force=True)
    assert bytes.fromhex(trt.builds[-1]["timing_cache_in"]) == grown
    assert timing.read_bytes().count(b"tactics ") == 3
    assert sorted(p.name for p in folder.glob("timing-*")) == [timing.name]


def test_fake_timing_cache_per_gpu(monkeypatch: pytest.MonkeyPatch, tiny: Bundle, tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "engines"
    trt_a, _ = install_fake_tensorrt(monkeypatch, tmp_path / "cache", "10.9.0.34")
    build_plan(tiny)
    first = plan_cache.timing_cache_path("Fake GPU 9000", "8.9", "10.9.0.34", folder)
    before = first.read_bytes()
    trt_b, _ = install_fake_tensorrt(monkeypatch, tmp_path / "cache", "10.9.0.34",
                                     cuda=FakeCuda("NVIDIA L4", (8, 9)))
    build_plan(tiny)
    assert trt_b.builds[-1]["timing_cache_in"] == "", "a new GPU does not start from another GPU's timings"
    second = plan_cache.timing_cache_path("NVIDIA L4", "8.9", "10.9.0.34", folder)
    assert second.is_file() and first.read_bytes() == before
    trt_c, _ = install_fake_tensorrt(monkeypatch, tmp_path / "cache", "11.1.0.6")
    build_plan(tiny)
    assert trt_c.builds[-1]["timing_cache_in"] == ""
    assert len(list(folder.glob("timing-*.cache"))) == 3


def test_fake_rejected_timing_cache_is_only_slower(fake_trt, tiny: Bundle, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    trt, _ = fake_trt
    timing = plan_cache.timing_cache_path("Fake GPU 9000", "8.9", trt.__version__, tmp_path / "cache" / "engines")
    timing.parent.mkdir(parents=True)
    timing.write_bytes(b"garbage")
    path = build_plan(tiny)
    assert path.is_file() and "rejected the timing cache" in caplog.text


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
        open_backend(tiny, "tensorrt", max_batch=2).__enter__()
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


class _RaiseOnImport(importlib.abc.MetaPathFinder):
    """Makes ``import <name>`` raise ``ImportError(message)``, as an extension whose shared
    library is missing does."""

    def __init__(self, name: str, message: str) -> None:
        self.name, self.message = name, message

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            raise ImportError(self.message)
        return None


def _build_engine_error(bundle: Bundle, capsys: pytest.CaptureFixture[str]) -> str:
    import argparse

    from engine.commands import build_engine

    parser = argparse.ArgumentParser(prog="endoview")
    build_engine.add_parser(parser.add_subparsers())
    args = parser.parse_args(["build-engine", str(bundle.path)])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith("(pip install 'endoview[gpu]')")
    return err


def test_pycuda_missing_and_no_cuda_driver_are_different_messages(
        monkeypatch: pytest.MonkeyPatch, tiny: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.backends.tensorrt.backend import TensorRTBackend
    from engine.backends.tensorrt.cuda import import_cuda

    install_fake_tensorrt(monkeypatch, tmp_path / "cache")

    # 1. pycuda is not installed at all
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.delitem(sys.modules, "pycuda.driver")
    with pytest.raises(BackendUnavailable, match=r"^pycuda is not installed \(pip install 'endoview\[gpu\]'"):
        import_cuda()
    ok, why = TensorRTBackend.availability()
    assert not ok and why.startswith("tensorrt 10.9.0.34 installed, but pycuda is not installed (pip install "
                                     "'endoview[gpu]' on a machine with an NVIDIA GPU): ")
    assert _build_engine_error(tiny, capsys).startswith(
        "endoview: error: pycuda (needed by TensorRT) is not installed here: ")

    # 2. pycuda is installed, but the driver library is not there
    pycuda = types.ModuleType("pycuda")
    pycuda.__spec__ = importlib.machinery.ModuleSpec("pycuda", None, is_package=True)
    pycuda.__path__ = []
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    no_lib = "libcuda.so.1: cannot open shared object file: No such file or directory"
    monkeypatch.setattr(sys, "meta_path", [_RaiseOnImport("pycuda.driver", no_lib)] + sys.meta_path)
    with pytest.raises(BackendUnavailable, match=r"^no CUDA driver: pycuda is installed but cannot load the driver "
                       r"library \(libcuda\.so\.1: cannot open .*\); install the NVIDIA driver"):
        import_cuda()
    assert _build_engine_error(tiny, capsys) == (
        f"endoview: error: there is no CUDA driver here: {no_lib}; build-engine needs an NVIDIA GPU with "
        "TensorRT 10 or 11 (pip install 'endoview[gpu]')")
    with pytest.raises(BackendUnavailable, match="^no CUDA driver"):
        TensorRTBackend(tiny).__enter__()


def test_cuda_driver_that_does_not_start(monkeypatch: pytest.MonkeyPatch, tiny: Bundle, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from engine.backends.tensorrt.cuda import import_cuda

    install_fake_tensorrt(monkeypatch, tmp_path / "cache",
                          cuda=FakeCuda(init_error="cuInit failed: no CUDA-capable device is detected"))
    with pytest.raises(BackendUnavailable, match=r"^the CUDA driver does not start \(cuInit: cuInit failed: no "
                       r"CUDA-capable device is detected\); check the NVIDIA driver with nvidia-smi$"):
        import_cuda()
    assert _build_engine_error(tiny, capsys).startswith(
        "endoview: error: the CUDA driver does not start here: cuInit failed: no CUDA-capable device is detected; ")


def test_tensorrt_that_does_not_load(monkeypatch: pytest.MonkeyPatch, tiny: Bundle, tmp_path: Path) -> None:
    from engine.backends.tensorrt.backend import TensorRTBackend
    from engine.backends.tensorrt.library import import_tensorrt

    install_fake_tensorrt(monkeypatch, tmp_path / "cache")
    monkeypatch.delitem(sys.modules, "tensorrt")
    monkeypatch.setattr(sys, "meta_path", [_RaiseOnImport("tensorrt", "libnvinfer.so.10: cannot open shared "
                                                          "object file")] + sys.meta_path)
    monkeypatch.setattr("engine.backends.tensorrt.library.installed", lambda package: True)
    with pytest.raises(BackendUnavailable, match=r"^TensorRT is installed but does not load \(libnvinfer"):
        import_tensorrt()
    ok, why = TensorRTBackend.availability()
    assert not ok and why.startswith("TensorRT is installed but does not load")


def test_tensorrt_option_values_are_checked(tiny: Bundle) -> None:
    from engine.backends.tensorrt.backend import TensorRTBackend

    with pytest.raises(BackendError, match="the tensorrt backend's max_batch must be an integer of at least 1, not 0"):
        TensorRTBackend(tiny, max_batch=0)
    with pytest.raises(BackendError, match="workspace_mb must be an integer of at least 16, not '4096'"):
        TensorRTBackend(tiny, workspace_mb="4096")


def test_tensorrt_on_cpu_device_is_refused(tiny: Bundle) -> None:
    from engine.backends.tensorrt.backend import TensorRTBackend

    with pytest.raises(BackendError, match="runs only on CUDA devices"):
        TensorRTBackend(tiny, device="cpu")


def test_tensorrt_missing_is_unavailable_not_a_crash(tiny: Bundle) -> None:
    from engine.backends.tensorrt.backend import TensorRTBackend

    if _installed("tensorrt"):
        pytest.skip("TensorRT is installed here")
    backend = TensorRTBackend(tiny)  # constructing never imports tensorrt
    with pytest.raises(BackendUnavailable, match=r"TensorRT is not installed \(pip install 'endoview\[gpu\]'"):
        backend.__enter__()


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
