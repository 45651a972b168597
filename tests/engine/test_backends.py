"""The backend contract (STYLE.md 3): one tiny model through every installed backend, plus
input validation, lifecycle and selection.

The contract itself (what each backend must compute, and the documented tolerances: float32 on
the CPU, TF32 for "fp32" on a GPU, top-1 agreement and Dice change for FP16) lives in
``tests/backend_contract.py``, shared with ``scripts/gpu_check.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from backend_contract import (
    FP32_ATOL,
    TF32_ATOL,
    check_fp16,
    check_fp32,
    real_images,
    tf32_mask,
    tf32_probs,
)
from engine.backends import BACKENDS, available_backends, backend_class, open_backend
from engine.backends.base import TensorSpec
from engine.bundle import Bundle, load_bundle, write_bundle
from engine.errors import BackendError, BackendUnavailable
from tiny_models import (
    make_tiny_classifier_bundle,
    make_tiny_segmenter_bundle,
    random_images,
    reference_mask,
    reference_probs,
)

ALL = ["onnxruntime", "torch", "tensorrt"]
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in (ROOT / "engine" / "assets" / "models").glob("*/manifest.json"))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_tiny_classifier_bundle(tmp_path_factory.mktemp("b") / "cls", labels=("a", "b", "c", "d"))


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_tiny_segmenter_bundle(tmp_path_factory.mktemp("b") / "seg", size=(24, 40))


def require(name: str) -> None:
    ok, reason = backend_class(name).availability()
    if not ok:
        pytest.skip(f"the {name} backend cannot run here ({reason})")


def opener(name: str, cache_dir: Path, **options):
    """How the contract opens backend ``name``: TensorRT builds its plan when it is missing."""
    if name == "tensorrt":
        return lambda bundle: open_backend(bundle, name, build_missing=True, cache_dir=cache_dir, **options)
    return lambda bundle: open_backend(bundle, name, **options)


@pytest.mark.parametrize("name", ALL)
def test_contract(name: str, classifier: Bundle, segmenter: Bundle, tmp_path: Path) -> None:
    """The same tiny models through each backend agree with numpy: within FP32_ATOL on the CPU,
    TF32_ATOL on a GPU (see tests/backend_contract.py)."""
    require(name)
    if name == "torch" and not classifier.has("torchscript"):
        pytest.fail("torch is installed but the tiny bundle has no TorchScript model")
    outcome = check_fp32(name, opener(name, tmp_path / "engines"), classifier, segmenter)
    assert outcome.ok, outcome.problems
    if name == "tensorrt":
        assert len(list((tmp_path / "engines").glob("*.plan"))) == 2, "one plan built per tiny model"
    assert np.ptp(reference_probs(random_images(4, seed=3), labels=classifier.labels)[:, 0]) > 0.01, \
        "the reference must vary between images to mean anything"


def test_contract_fails_a_wrong_backend(classifier: Bundle, segmenter: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract check can fail: onnxruntime with its probabilities nudged by 1e-4."""
    from engine.backends.onnxruntime import OnnxRuntimeBackend

    real = OnnxRuntimeBackend._infer
    monkeypatch.setattr(OnnxRuntimeBackend, "_infer",
                        lambda self, feeds: {k: v + np.float32(1e-4) for k, v in real(self, feeds).items()})
    outcome = check_fp32("onnxruntime", lambda b: open_backend(b, "onnxruntime"), classifier, segmenter)
    assert [p.split(" by ")[0] for p in outcome.problems] == [
        "classifier probabilities differ from numpy", "segmenter mask differs from numpy"]


def test_tf32_tolerance_is_needed_and_enough() -> None:
    """Emulated TF32 rounding (tests/backend_contract.py) breaks the CPU tolerance but stays well
    inside TF32_ATOL: the contract on a GPU would fail at 1e-5 and passes at TF32_ATOL."""
    images = random_images(64, (32, 32), seed=11)
    labels = ("a", "b", "c", "d")
    probs_err = np.abs(tf32_probs(images, num_classes=4) - reference_probs(images, labels=labels)).max()
    mask_err = np.abs(tf32_mask(images) - reference_mask(images)).max()
    assert FP32_ATOL < probs_err < TF32_ATOL / 3
    assert FP32_ATOL < mask_err < TF32_ATOL / 3


@pytest.mark.parametrize("name", ["tensorrt", "torch"])
def test_contract_fp16(name: str, classifier: Bundle, segmenter: Bundle, data_dir: Path, tmp_path: Path) -> None:
    """FP16 against onnxruntime float32 on real Kvasir-SEG images: the tiny models and every
    shipped bundle the backend can run (tolerances in tests/backend_contract.py)."""
    require(name)
    if name == "torch":
        import torch

        if not torch.cuda.is_available():
            pytest.skip(f"the torch backend runs fp16 only on CUDA and torch {torch.__version__} finds no CUDA device")
    fmt = "onnx" if name == "tensorrt" else "torchscript"
    bundles = [b for b in [classifier, segmenter] + [load_bundle(p) for p in SHIPPED] if b.has(fmt)]
    images, masks = real_images(data_dir, (256, 256), n=32)
    outcome = check_fp16(opener(name, tmp_path / "engines", fp16=True),
                         lambda b: open_backend(b, "onnxruntime", device="cpu"), bundles, images, masks)
    assert outcome.ok, (outcome.problems, outcome.figures)


# -- the TensorRT half of the contract, against the fake (tests/engine/fakes.py) ---------------


@pytest.mark.parametrize("version", ["10.9.0.34", "11.1.0.6"])
def test_contract_tensorrt_path_with_the_fake(version: str, classifier: Bundle, segmenter: Bundle, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """What test_contract[tensorrt] does on a GPU, with the fake TensorRT: no plan, so it is built
    (once per model), then the tiny models are held to the GPU tolerance."""
    from fakes import install_fake_tensorrt

    trt, _ = install_fake_tensorrt(monkeypatch, tmp_path / "cache", version)
    require("tensorrt")
    outcome = check_fp32("tensorrt", opener("tensorrt", tmp_path / "engines"), classifier, segmenter)
    assert outcome.ok, outcome.problems
    assert outcome.figures["atol"] == TF32_ATOL and outcome.figures["runs_on"] == "cuda"
    assert len(trt.builds) == 2 and len(list((tmp_path / "engines").glob("*.plan"))) == 2
    assert check_fp32("tensorrt", opener("tensorrt", tmp_path / "engines"), classifier, segmenter).ok
    assert len(trt.builds) == 2, "the second run loads the plans it built"


def test_fp16_contract_with_the_fake_tensorrt_11(classifier: Bundle, segmenter: Bundle, data_dir: Path,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT 11 builds FP16 from an FP16 ONNX (engine.backends.tensorrt.fp16.to_fp16_onnx); the fake
    runs that ONNX in onnxruntime, so this is real FP16 arithmetic on real images, shipped
    bundles included, judged by the FP16 contract (top-1 agreement, Dice change)."""
    from fakes import install_fake_tensorrt

    install_fake_tensorrt(monkeypatch, tmp_path / "cache", "11.1.0.6")
    bundles = [classifier, segmenter] + [load_bundle(p) for p in SHIPPED]
    images, masks = real_images(data_dir, (256, 256), n=24)
    outcome = check_fp16(opener("tensorrt", tmp_path / "engines", fp16=True),
                         lambda b: open_backend(b, "onnxruntime", device="cpu"), bundles, images, masks)
    assert outcome.ok, (outcome.problems, outcome.figures)
    figures = outcome.figures
    assert figures[classifier.name]["judged"] > 0 and 0 < figures[classifier.name]["max_abs_diff"] < 0.05
    for path in SHIPPED:
        shipped = figures[load_bundle(path).name]
        if "dice_change" in shipped:
            assert shipped["max_abs_diff"] > 0, "FP16 must differ from FP32 somewhere, or nothing was tested"


def test_fp16_contract_fails_a_wrong_segmenter(segmenter: Bundle, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The FP16 check can fail: a "fp16" backend whose mask probabilities are halved."""
    from engine.backends.onnxruntime import OnnxRuntimeBackend

    class Shrunk(OnnxRuntimeBackend):
        def _infer(self, feeds):
            return {k: v * np.float32(0.5) for k, v in super()._infer(feeds).items()}

    images, masks = real_images(data_dir, (64, 64), n=8)
    outcome = check_fp16(lambda b: Shrunk(b, device="cpu"), lambda b: open_backend(b, "onnxruntime", device="cpu"),
                         [segmenter], images, masks)
    assert outcome.problems and "FP16 changes the mean Dice" in outcome.problems[0]


# -- the torch backend's options (CPU here; the CUDA paths run in scripts/gpu_check.py) ---------


def test_torch_cpu_path_is_unchanged(classifier: Bundle) -> None:
    require("torch")
    backend = open_backend(classifier, "torch", device="cpu")
    with backend:
        assert backend.runs_on == "cpu" and backend.warmup_ms is None, "no warm-up on the CPU by default"
        assert backend.description.endswith("(cpu)"), "no fp16, channels-last or CUDA graphs on the CPU"
        images = random_images(3, seed=8)
        np.testing.assert_allclose(backend.run({"image": images})["probs"],
                                   reference_probs(images, labels=classifier.labels), atol=FP32_ATOL)


def test_torch_channels_last_and_warmup_on_request(classifier: Bundle, segmenter: Bundle) -> None:
    require("torch")
    with open_backend(classifier, "torch", device="cpu", channels_last=True, warmup=2) as backend:
        assert backend.description.endswith("(cpu, channels-last)") and backend.warmup_ms > 0
        images = random_images(3, seed=8)
        np.testing.assert_allclose(backend.run({"image": images})["probs"],
                                   reference_probs(images, labels=classifier.labels), atol=FP32_ATOL)
    with open_backend(segmenter, "torch", device="cpu", channels_last=True) as backend:
        images = random_images(2, (24, 40), seed=8)
        np.testing.assert_allclose(backend.run({"image": images})["mask"], reference_mask(images), atol=FP32_ATOL)


def test_torch_channels_last_choice() -> None:
    from engine.backends.torch import choose_channels_last

    assert choose_channels_last("auto", "cuda", True) is True
    assert choose_channels_last("auto", "cpu", True) is False
    assert choose_channels_last("auto", "cuda", False) is False  # nothing to convert
    assert choose_channels_last(True, "cpu", True) is True
    assert choose_channels_last(True, "cuda", False) is False
    assert choose_channels_last(False, "cuda", True) is False
    with pytest.raises(BackendError, match="channels_last must be 'auto', True or False, not 'yes'"):
        choose_channels_last("yes", "cuda", True)


def test_torch_fp16_and_cuda_graphs_need_cuda(classifier: Bundle) -> None:
    require("torch")
    for option, what in (("fp16", "half precision \\(fp16\\)"), ("cuda_graphs", "CUDA graphs")):
        with pytest.raises(BackendError, match=rf"the torch backend runs {what} only on a CUDA device, and this "
                           rf"is cpu; drop {option} or use device cuda"):
            open_backend(classifier, "torch", device="cpu", **{option: True})
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch finds a CUDA device here: fp16 would run")
    backend = open_backend(classifier, "torch", fp16=True)  # device chosen when entered
    with pytest.raises(BackendUnavailable, match=r"runs half precision \(fp16\) only on a CUDA device, and this is "
                       r"cpu \(torch .* finds no CUDA device\); drop fp16 or use device cuda"):
        backend.__enter__()
    assert not backend.is_active


@pytest.mark.parametrize(("options", "message"), [
    ({"warmup": -1}, "warmup must be a non-negative integer, not -1"),
    ({"warmup": True}, "warmup must be a non-negative integer, not True"),
    ({"channels_last": "on"}, "channels_last must be 'auto', True or False, not 'on'"),
])
def test_torch_option_values_are_checked(classifier: Bundle, options: dict, message: str) -> None:
    require("torch")
    with pytest.raises(BackendError, match=message):
        open_backend(classifier, "torch", **options)


def test_outputs_do_not_alias_between_runs(classifier: Bundle) -> None:
    images = random_images(2, seed=5)
    with open_backend(classifier, "onnxruntime") as backend:
        first = backend.run({"image": images[:1]})["probs"]
        kept = first.copy()
        backend.run({"image": images[1:]})
        np.testing.assert_array_equal(first, kept)


def test_non_contiguous_input_is_accepted(classifier: Bundle) -> None:
    images = random_images(2, seed=6)
    flipped = images[:, :, ::-1]
    assert not flipped.flags.c_contiguous
    with open_backend(classifier, "onnxruntime") as backend:
        out = backend.run({"image": flipped})["probs"]
    np.testing.assert_allclose(out, reference_probs(np.ascontiguousarray(flipped), labels=classifier.labels), atol=1e-5)


# -- validation messages ----------------------------------------------------------------------


@pytest.fixture()
def ort_backend(classifier: Bundle):
    with open_backend(classifier, "onnxruntime") as backend:
        yield backend


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"image": np.zeros((1, 32, 32, 3), np.float32)},
         "input 'image' of tiny-classifier-4c-32x32-s0 must be uint8, got float32"),
        ({"image": np.zeros((32, 32, 3), np.uint8)},
         r"input 'image' of .* must have 4 dimensions \(image: uint8 Nx32x32x3\), got shape \(32, 32, 3\)"),
        ({"image": np.zeros((1, 64, 32, 3), np.uint8)},
         r"has shape \(1, 64, 32, 3\) but the model takes image: uint8 Nx32x32x3; resize"),
        ({"image": np.zeros((1, 32, 32, 4), np.uint8)}, r"has shape \(1, 32, 32, 4\)"),
        ({"image": np.zeros((0, 32, 32, 3), np.uint8)}, r"has shape \(0, 32, 32, 3\)"),
        ({}, r"missing input\(s\) 'image' \(the model takes image: uint8 Nx32x32x3\)"),
        ({"image": np.zeros((1, 32, 32, 3), np.uint8), "extra": np.zeros(1)}, r"unexpected input\(s\) 'extra'"),
        ({"img": np.zeros((1, 32, 32, 3), np.uint8)}, r"missing input\(s\) 'image' and unexpected input\(s\) 'img'"),
        ({"image": [[1, 2, 3]]}, "input 'image' of .* must be a numpy array, not list"),
    ],
)
def test_run_validates_feeds(ort_backend, feeds: dict, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        ort_backend.run(feeds)


def test_run_rejects_non_mapping(ort_backend) -> None:
    with pytest.raises(BackendError, match=r"run\(\) takes a dict of input name -> array"):
        ort_backend.run(np.zeros((1, 32, 32, 3), np.uint8))


# -- lifecycle --------------------------------------------------------------------------------


def test_run_before_enter_fails_clearly(classifier: Bundle) -> None:
    backend = open_backend(classifier, "onnxruntime")
    assert not backend.is_active
    assert backend.inputs == {"image": TensorSpec("image", (None, 32, 32, 3), np.dtype(np.uint8))}
    with pytest.raises(BackendError, match=r"is not open: use it as a context manager"):
        backend.run({"image": random_images(1)})


def test_context_manager_lifecycle(classifier: Bundle) -> None:
    backend = open_backend(classifier, "onnxruntime")
    with backend as entered:
        assert entered is backend and backend.is_active
        with backend:  # re-entrant: the inner exit must not free
            pass
        assert backend.is_active
        backend.run({"image": random_images(1)})
    assert not backend.is_active
    backend.__exit__(None, None, None)  # idempotent
    with pytest.raises(BackendError, match="is not open"):
        backend.run({"image": random_images(1)})
    with backend:  # can be entered again
        backend.run({"image": random_images(1)})
    backend.close()
    assert not backend.is_active


def test_failed_enter_leaves_backend_closed(tmp_path: Path) -> None:
    """A model ONNX can parse but onnxruntime cannot load -> BackendError naming the file."""
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("NoSuchOp", ["f"], ["probs"], domain="com.example.nothing"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.nothing", 1)])
    bundle = write_bundle(tmp_path / "bad", name="bad", task="classify", labels=["x", "y"], input_size=(8, 8),
                          files={"model.onnx": model.SerializeToString()}, formats={"onnx": "model.onnx"},
                          outputs={"probabilities": "probs"}, trained=False)
    backend = open_backend(bundle, "onnxruntime")
    with pytest.raises(BackendError, match=f"onnxruntime cannot load {bundle.path / 'model.onnx'}: .*re-export the bundle"):
        backend.__enter__()
    assert not backend.is_active


# -- selection --------------------------------------------------------------------------------


def test_auto_picks_onnxruntime_without_tensorrt(classifier: Bundle) -> None:
    if available_backends()["tensorrt"][0]:
        pytest.skip("TensorRT is usable here; auto may pick it")
    backend = open_backend(classifier, "auto", threads=1, fp16=True)
    assert backend.name == "onnxruntime"
    assert backend.options == {"threads": 1}
    with backend:
        assert backend.description.startswith("onnxruntime ")
        assert "ExecutionProvider" in backend.description


def test_unknown_backend_lists_names(classifier: Bundle) -> None:
    with pytest.raises(BackendError, match="unknown backend 'tflite'; choose one of: auto, onnxruntime, tensorrt, torch"):
        open_backend(classifier, "tflite")


def test_unknown_option(classifier: Bundle) -> None:
    with pytest.raises(BackendError, match=r"the onnxruntime backend has no option\(s\) fp16 \(it takes: precision, providers, spin, threads\)"):
        open_backend(classifier, "onnxruntime", fp16=True)


def test_missing_tensorrt_is_reported_with_the_install_hint(classifier: Bundle) -> None:
    ok, reason = available_backends()["tensorrt"]
    if ok:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(BackendUnavailable) as info:
        open_backend(classifier, "tensorrt")
    msg = str(info.value)
    if "not installed" in reason:
        assert msg.startswith("TensorRT is not installed (pip install 'endoview[gpu]' on a machine with an NVIDIA GPU)")
    else:
        assert msg.startswith("the tensorrt backend cannot run here")


def test_availability_reports_every_backend() -> None:
    report = available_backends()
    assert set(report) == set(BACKENDS) == set(ALL)
    assert report["onnxruntime"][0] is True
    assert report["onnxruntime"][1].startswith("onnxruntime ")
    for ok, why in report.values():
        assert isinstance(ok, bool) and why


def test_torch_backend_needs_a_torchscript_file(tmp_path: Path) -> None:
    require("torch")
    bundle = make_tiny_classifier_bundle(tmp_path / "onnx-only", torchscript=False)
    with pytest.raises(BackendUnavailable, match="has no torch model .* the torch backend is for development and the second pass"):
        open_backend(bundle, "torch")


def test_onnxruntime_cuda_without_provider(classifier: Bundle) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    backend = open_backend(classifier, "onnxruntime", device="cuda")
    with pytest.raises(BackendUnavailable, match="onnxruntime here has no CUDA provider .*install onnxruntime-gpu"):
        backend.__enter__()


def test_bad_device_string(classifier: Bundle) -> None:
    with pytest.raises(BackendError, match="unknown device 'tpu' for the onnxruntime backend"):
        open_backend(classifier, "onnxruntime", device="tpu")


def test_onnxruntime_threads_option(classifier: Bundle) -> None:
    with open_backend(classifier, "onnxruntime", threads=1, device="cpu") as backend:
        assert backend.description.endswith("(CPUExecutionProvider)")
        backend.run({"image": random_images(1)})
    with pytest.raises(BackendError, match="threads must be a non-negative integer"):
        open_backend(classifier, "onnxruntime", threads="many")
