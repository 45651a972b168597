"""The backend contract (STYLE.md 3): one tiny model through every installed backend, plus
input validation, lifecycle and selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from engine.backends import BACKENDS, available_backends, backend_class, open_backend
from engine.backends.base import TensorSpec
from engine.bundle import Bundle, write_bundle
from engine.errors import BackendError, BackendUnavailable
from tiny_models import (
    make_tiny_classifier_bundle,
    make_tiny_segmenter_bundle,
    random_images,
    reference_mask,
    reference_probs,
)

ALL = ["onnxruntime", "torch", "tensorrt"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_tiny_classifier_bundle(tmp_path_factory.mktemp("b") / "cls", labels=("a", "b", "c", "d"))


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_tiny_segmenter_bundle(tmp_path_factory.mktemp("b") / "seg", size=(24, 40))


def require(name: str) -> None:
    ok, reason = backend_class(name).availability()
    if not ok:
        pytest.skip(reason)


@pytest.mark.parametrize("name", ALL)
def test_contract(name: str, classifier: Bundle, segmenter: Bundle) -> None:
    """The same tiny models through each backend agree with numpy (fp32, atol 1e-5)."""
    require(name)
    if name == "torch" and not classifier.has("torchscript"):
        pytest.fail("torch is installed but the tiny bundle has no TorchScript model")
    images = random_images(4, (32, 32), seed=3)
    with open_backend(classifier, name) as backend:
        assert backend.outputs() == ["probs"]
        spec = backend.inputs["image"]
        assert spec.dtype == np.uint8 and spec.shape[1:] == (32, 32, 3)
        assert backend.description.startswith(name)
        for batch in (images[:1], images):
            out = backend.run({"image": batch})
            assert set(out) == {"probs"}
            probs = out["probs"]
            assert isinstance(probs, np.ndarray) and probs.dtype == np.float32
            assert probs.shape == (len(batch), 4)
            ref = reference_probs(batch, seed=0, labels=classifier.labels, size=(32, 32))
            np.testing.assert_allclose(probs, ref, atol=1e-5, rtol=0)
        assert np.ptp(ref[:, 0]) > 0.01, "the reference must vary between images to mean anything"
    seg_images = random_images(2, (24, 40), seed=4)
    with open_backend(segmenter, name) as backend:
        mask = backend.run({"image": seg_images})["mask"]
        assert mask.shape == (2, 1, 24, 40) and mask.dtype == np.float32
        np.testing.assert_allclose(mask, reference_mask(seg_images), atol=1e-5, rtol=0)


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
    with pytest.raises(BackendError, match=r"the onnxruntime backend has no option\(s\) fp16 \(it takes: providers, spin, threads\)"):
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
