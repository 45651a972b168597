"""Model bundles: loading, validation messages, writing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engine.bundle import FORMAT, Bundle, load_bundle, sha256_file, write_bundle
from engine.errors import BundleError
from tiny_models import make_tiny_classifier_bundle, make_tiny_segmenter_bundle


@pytest.fixture()
def bundle(tmp_path: Path) -> Bundle:
    return make_tiny_classifier_bundle(tmp_path / "tiny", torchscript=False)


def edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            del m[key]
        else:
            m[key] = value
    path.write_text(json.dumps(m, indent=2))


def test_roundtrip(bundle: Bundle) -> None:
    b = load_bundle(bundle.path)
    assert b.name == "tiny-classifier-3c-32x32-s0"
    assert b.task == "classify"
    assert b.labels == ("a", "b", "c")
    assert b.input_name == "image"
    assert b.input_size == (32, 32)
    assert b.outputs == {"probabilities": "probs"}
    assert b.trained is True
    assert b.file("onnx") == b.path / "model.onnx"
    assert b.sha256("onnx") == sha256_file(b.path / "model.onnx")
    assert b.manifest["format"] == FORMAT
    m = json.loads((b.path / "manifest.json").read_text())
    assert m["input"] == {"name": "image", "height": 32, "width": 32, "layout": "NHWC", "dtype": "uint8", "color": "RGB"}
    assert m["created"] and m["notes"]


def test_segmenter_bundle(tmp_path: Path) -> None:
    b = make_tiny_segmenter_bundle(tmp_path / "seg", size=(24, 40), torchscript=False)
    assert b.task == "segment" and b.outputs == {"mask": "mask"} and b.input_size == (24, 40)


def test_missing_format_names_the_bundle(bundle: Bundle) -> None:
    with pytest.raises(BundleError, match=r"has no torchscript model \(it has: onnx\)"):
        bundle.file("torchscript")


def test_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=f"model bundle not found: {tmp_path / 'nope'}"):
        load_bundle(tmp_path / "nope")


def test_manifest_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="has no manifest.json"):
        load_bundle(tmp_path / "empty")


def test_manifest_not_json(bundle: Bundle) -> None:
    (bundle.path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        load_bundle(bundle.path)


def test_unknown_format_version(bundle: Bundle) -> None:
    edit_manifest(bundle.path, format="endoview-bundle/9")
    with pytest.raises(BundleError, match="has format 'endoview-bundle/9', but this endoview reads 'endoview-bundle/1'"):
        load_bundle(bundle.path)


def test_missing_keys(bundle: Bundle) -> None:
    edit_manifest(bundle.path, labels=..., trained=...)
    with pytest.raises(BundleError, match="is missing labels, trained"):
        load_bundle(bundle.path)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "'labels' must be a non-empty list"),
        ("abc", "'labels' must be a non-empty list"),
        (["a", 3, "c"], "'labels' must be a non-empty list of non-empty strings"),
        (["a", "b", "a"], "'labels' must be unique, but a repeat"),
    ],
)
def test_bad_labels(bundle: Bundle, labels: object, message: str) -> None:
    edit_manifest(bundle.path, labels=labels)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle.path)


@pytest.mark.parametrize("height", [0, -3, 32.0, "32", True])
def test_bad_size(bundle: Bundle, height: object) -> None:
    m = json.loads((bundle.path / "manifest.json").read_text())
    m["input"]["height"] = height
    edit_manifest(bundle.path, input=m["input"])
    with pytest.raises(BundleError, match="input 'height' must be a positive integer"):
        load_bundle(bundle.path)


def test_unsupported_layout(bundle: Bundle) -> None:
    m = json.loads((bundle.path / "manifest.json").read_text())
    m["input"]["layout"] = "NCHW"
    edit_manifest(bundle.path, input=m["input"])
    with pytest.raises(BundleError, match="input layout 'NCHW' is not supported"):
        load_bundle(bundle.path)


def test_classify_needs_probabilities(bundle: Bundle) -> None:
    edit_manifest(bundle.path, outputs={"mask": "probs"})
    with pytest.raises(BundleError, match="a classify bundle needs output role"):
        load_bundle(bundle.path)


def test_model_file_missing(bundle: Bundle) -> None:
    (bundle.path / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model file .*model\.onnx named in .*manifest\.json is missing"):
        load_bundle(bundle.path)


def test_sha256_mismatch(bundle: Bundle) -> None:
    path = bundle.path / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle.path)
    msg = str(info.value)
    assert msg.startswith(f"model file {path} does not match its manifest (sha256 ")
    assert msg.endswith("the bundle is damaged or was modified; re-export it")


@pytest.mark.parametrize("rel", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx"])
def test_path_escaping_the_bundle_is_refused(bundle: Bundle, rel: str) -> None:
    m = json.loads((bundle.path / "manifest.json").read_text())
    files = {rel: "0" * 64, **m["files"]}
    edit_manifest(bundle.path, files=files)
    with pytest.raises(BundleError, match="outside the bundle folder"):
        load_bundle(bundle.path)


def test_symlink_pointing_outside_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes((bundle.path / "model.onnx").read_bytes())
    (bundle.path / "model.onnx").unlink()
    os.symlink(outside, bundle.path / "model.onnx")
    with pytest.raises(BundleError, match="points outside the bundle folder"):
        load_bundle(bundle.path)


def test_format_must_name_a_listed_file(bundle: Bundle) -> None:
    edit_manifest(bundle.path, formats={"onnx": "other.onnx"})
    with pytest.raises(BundleError, match="format 'onnx' names 'other.onnx', which is not listed in 'files'"):
        load_bundle(bundle.path)


def _write_with_model(folder: Path, model: onnx.ModelProto, **kw: object) -> Bundle:
    args: dict = dict(name="t", task="classify", labels=["a", "b", "c"], input_size=(32, 32),
                      files={"model.onnx": model.SerializeToString()}, formats={"onnx": "model.onnx"},
                      outputs={"probabilities": "probs"}, trained=False)
    args.update(kw)
    return write_bundle(folder, **args)


def _model(in_shape: list, in_type: int = TensorProto.UINT8, out_shape: list | None = None,
           out_name: str = "probs") -> onnx.ModelProto:
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
        helper.make_node("Expand", ["m", "shape"], [out_name]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("image", in_type, in_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape or ["N", 3])],
        initializer=[onnx.numpy_helper.from_array(np.array([1, 3], np.int64), "shape")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_input_layout_mismatch(tmp_path: Path) -> None:
    with pytest.raises(BundleError) as info:
        _write_with_model(tmp_path / "b", _model([1, 3, 32, 32]))
    assert "input shape of model.onnx is [1,3,32,32] but the manifest says NHWC Nx32x32x3" in str(info.value)
    assert str(tmp_path / "b") in str(info.value)
    assert not (tmp_path / "b").exists(), "a rejected bundle must not be left behind"
    assert not list(tmp_path.iterdir()), "the temporary folder must be cleaned up"


def test_onnx_input_dtype_mismatch(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="input 'image' of model.onnx is float32 but the manifest says uint8"):
        _write_with_model(tmp_path / "b", _model(["N", 32, 32, 3], in_type=TensorProto.FLOAT))


def test_onnx_class_count_mismatch(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"output 'probs' of model.onnx has shape \[N,5\] but the manifest has 3 labels"):
        _write_with_model(tmp_path / "b", _model(["N", 32, 32, 3], out_shape=["N", 5]))


def test_onnx_output_missing(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="model.onnx in .* has no output 'probs' .*it has: logits"):
        _write_with_model(tmp_path / "b", _model(["N", 32, 32, 3], out_name="logits"))


def test_onnx_garbage(tmp_path: Path) -> None:
    args: dict = dict(name="t", task="classify", labels=["a"], input_size=(8, 8),
                      files={"model.onnx": b"\x00\x01garbage" * 10}, formats={"onnx": "model.onnx"},
                      outputs={"probabilities": "probs"}, trained=False)
    with pytest.raises(BundleError, match="model.onnx is not a readable ONNX model"):
        write_bundle(tmp_path / "b", **args)


def test_write_refuses_non_empty_folder(bundle: Bundle) -> None:
    with pytest.raises(BundleError, match="exists and is not empty; choose another folder or pass force=True"):
        make_tiny_classifier_bundle(bundle.path, torchscript=False)


def test_write_force_replaces(bundle: Bundle) -> None:
    (bundle.path / "stale.txt").write_text("x")
    b = make_tiny_classifier_bundle(bundle.path, labels=("x", "y"), torchscript=False, force=True)
    assert b.labels == ("x", "y")
    assert not (bundle.path / "stale.txt").exists()
    assert [p.name for p in bundle.path.parent.iterdir()] == [bundle.path.name]


def test_write_into_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    b = make_tiny_classifier_bundle(tmp_path / "b", torchscript=False)
    assert b.path == (tmp_path / "b").resolve()


def test_write_copies_files_from_paths(tmp_path: Path, bundle: Bundle) -> None:
    b = write_bundle(tmp_path / "copy", name="copy", task="classify", labels=bundle.labels,
                     input_size=bundle.input_size, files={"nested/m.onnx": bundle.file("onnx")},
                     formats={"onnx": "nested/m.onnx"}, outputs=bundle.outputs, trained=False,
                     metrics={"accuracy": 0.5})
    assert b.file("onnx") == b.path / "nested" / "m.onnx"
    assert b.sha256("onnx") == bundle.sha256("onnx")
    assert b.trained is False and b.manifest["metrics"] == {"accuracy": 0.5}


def _instances_kwargs(**over: object) -> dict:
    kw: dict = dict(name="cascade-test", task="instances", labels=["polyp"], input_size=(64, 64),
                    files={"model.pth": b"weights", "config.py": b"model = dict()\n"},
                    formats={"mmdet": "model.pth", "mmdet-config": "config.py"},
                    outputs={"masks": "masks", "boxes": "boxes", "scores": "scores"}, trained=True)
    kw.update(over)
    return kw


def test_instances_bundle_with_mmdet_files(tmp_path: Path) -> None:
    b = write_bundle(tmp_path / "cascade", **_instances_kwargs())
    assert b.task == "instances" and b.has("mmdet") and b.file("mmdet-config").name == "config.py"


def test_instances_bundle_needs_masks_boxes_scores(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"needs output role\(s\) boxes, scores"):
        write_bundle(tmp_path / "c", **_instances_kwargs(outputs={"masks": "masks"}))


def test_instances_bundle_needs_a_model_it_can_run(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="ONNX model or an MMDetection checkpoint and config"):
        write_bundle(tmp_path / "c", **_instances_kwargs(formats={"mmdet": "model.pth"}))
