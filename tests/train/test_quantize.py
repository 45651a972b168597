"""int8 models for the CPU: train.quantize writes them into a bundle, onnxruntime runs them where it
runs on the CPU ("auto"), the exported graph with precision fp32 (the config key, the flag)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from tiny_models import make_tiny_classifier_bundle, make_tiny_segmenter_bundle, random_images

from engine.analysis.content_area import detect_content_area
from engine.analysis.crop import model_input
from engine.backends import open_backend
from engine.bundle import load_bundle, write_bundle
from engine.config import load_config
from engine.errors import BackendError
from engine.runtime import open_analyzer
from train.images import read_bgr
from train.manifest import machine_paths
from train.quantize import agreement, output_head, quantize_bundle, quantize_onnx


def _with_int8(tmp_path, bundle, images) -> object:
    """``bundle`` written again with an int8 copy of its ONNX model beside it."""
    int8 = tmp_path / "int8.onnx"
    quantize_onnx(bundle.file("onnx"), int8, list(images), bundle.input_name)
    return write_bundle(tmp_path / "both", name=bundle.name, task=bundle.task, labels=bundle.labels,
                        input_size=bundle.input_size, outputs=bundle.outputs, trained=True,
                        files={"model.onnx": bundle.file("onnx"), "model-int8.onnx": int8},
                        formats={"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"})


def test_the_last_layer_and_what_follows_it_stay_float(tmp_path):
    seg = make_tiny_segmenter_bundle(tmp_path / "s", torchscript=False)
    clf = make_tiny_classifier_bundle(tmp_path / "c", labels=("a", "b", "c"), size=(32, 32), torchscript=False)
    for bundle, last in ((seg, "Conv"), (clf, ("Gemm", "MatMul", "Conv"))):
        model = onnx.load(str(bundle.file("onnx")))
        by_name = {n.name: n for n in model.graph.node}
        head = output_head(model)
        ops = [by_name[n].op_type for n in head]
        assert ops and ops[-1] in last, ops  # walked back from the output to the last weighted layer
        assert all(op not in ("Conv", "Gemm", "MatMul") for op in ops[:-1])


def test_onnxruntime_runs_the_int8_model_on_the_cpu_and_fp32_when_asked(tmp_path):
    tiny = make_tiny_classifier_bundle(tmp_path / "c", labels=("a", "b", "c"), size=(32, 32), torchscript=False)
    images = random_images(16, (32, 32))
    both = _with_int8(tmp_path, tiny, images)
    x = images[:4]
    with open_backend(both, "onnxruntime") as be:
        assert be.precision == "int8" and "int8" in be.description
        q = be.run({both.input_name: x})[both.outputs["probabilities"]]
    with open_backend(both, "onnxruntime", precision="fp32") as be:
        assert be.precision == "fp32" and "int8" not in be.description
        f = be.run({both.input_name: x})[both.outputs["probabilities"]]
    with open_backend(tiny, "onnxruntime") as be:  # no int8 model in the bundle: the exported one
        assert be.precision == "fp32"
        assert np.allclose(be.run({tiny.input_name: x})[tiny.outputs["probabilities"]], f)
    assert q.shape == f.shape and not np.array_equal(q, f)  # another model ran...
    assert np.abs(q - f).max() < 0.1  # ...giving nearly the same answers
    with pytest.raises(BackendError, match="precision must be auto or fp32"):
        open_backend(both, "onnxruntime", precision="int4")


def test_the_config_and_the_flag_choose_the_precision(tmp_path, monkeypatch):
    seg = make_tiny_segmenter_bundle(tmp_path / "s", torchscript=False)
    both = _with_int8(tmp_path, seg, random_images(16, (32, 32)))
    (tmp_path / "c.toml").write_text(f'[model]\nbundle = "{both.path}"\n', encoding="utf-8")
    config = load_config(tmp_path / "c.toml")
    assert config.precision == "auto"
    with open_analyzer(config) as analyzer:
        assert analyzer.segmenter.backend.precision == "int8"
    with open_analyzer(config.override(precision="fp32")) as analyzer:
        assert analyzer.segmenter.backend.precision == "fp32"
    from engine.commands.common import config_from_args
    from engine.cli import build_parser

    args = build_parser().parse_args(["annotate", "demo", "-o", "x.mp4", "--config", str(tmp_path / "c.toml"),
                                      "--precision", "fp32"])
    assert config_from_args(args).precision == "fp32"


def test_quantizing_the_shipped_segmenter_on_its_training_fold(data_dir, tmp_path):
    """A few calibration images, real ones: the manifest says what was done, with no machine path,
    and the int8 model's masks on unseen images are the exported model's, nearly pixel for pixel."""
    shipped = load_bundle(load_config().segmenter)
    folder = tmp_path / "polyp-unet"
    shutil.copytree(shipped.path, folder)
    roots = [str(data_dir / "kvasir-seg"), str(data_dir / "hyperkvasir-lower-gi" / "labeled-images"),
             str(data_dir / "hyperkvasir-ileum")]
    split = data_dir / "hyperkvasir-official-splits" / "official_splits" / "2_fold_split.csv"
    if not split.is_file() or not (data_dir / "hyperkvasir-lower-gi").is_dir():
        pytest.skip("needs the split file and the polyp-free HyperKvasir images")
    q = quantize_bundle(folder, roots, split, images=12)
    bundle = load_bundle(folder)
    assert bundle.formats["onnx-int8"] == "model-int8.onnx" and bundle.formats["onnx"] == shipped.formats["onnx"]
    held = shipped.manifest["training"]["heldout_fold"]  # None: a model trained on every fold
    assert q["calibration"]["fold"] == ([0, 1] if held is None else [1 - held])  # its training folds only
    assert q["calibration"]["images"] == 12 and sum(q["calibration"]["by_class"].values()) == 12
    assert q["agreement_on_calibration_images"]["same_mask_pixels"] > 0.98
    assert not machine_paths(json.loads((folder / "manifest.json").read_text())), "no machine path in a manifest"
    assert q["calibration"]["data"][0] == "$ENDOVIEW_DATA/kvasir-seg"
    # held-out images, as the viewer prepares them
    names = sorted((data_dir / "kvasir-seg" / "images").iterdir())[:40:8]
    inputs = []
    for path in names:
        bgr = read_bgr(path)
        inputs.append(model_input(bgr, detect_content_area(bgr), bundle.input_size, inset=bundle.inset))
    close = agreement(bundle.file("onnx"), bundle.file("onnx-int8"), inputs, bundle.input_name,
                      bundle.outputs["mask"])
    assert close["same_mask_pixels"] > 0.98 and close["mean_abs_difference"] < 0.02


def test_the_command_says_what_is_wrong_in_one_line(tmp_path, capsys):
    from train.quantize import main

    assert main([str(tmp_path / "nothing"), "--data", str(tmp_path), "--split-csv", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model bundle not found") and "Traceback" not in err and err.count("\n") == 1
    seg = make_tiny_segmenter_bundle(tmp_path / "s", torchscript=False)  # no held-out fold in its manifest
    assert main([str(seg.path), "--data", str(tmp_path), "--split-csv", str(tmp_path / "s.csv")]) == 2
    assert "give --fold K" in capsys.readouterr().err



def test_a_model_trained_on_every_fold_calibrates_on_every_fold_and_has_nothing_to_evaluate(data_dir, tmp_path):
    from train.errors import TrainError

    split = data_dir / "hyperkvasir-official-splits" / "official_splits" / "2_fold_split.csv"
    if not split.is_file():
        pytest.skip("needs the split file")
    folder = tmp_path / "polyp-unet"
    shutil.copytree(load_bundle(load_config().segmenter).path, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["training"].update(heldout_fold=None, trained_on_folds=[0, 1])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    roots = [str(data_dir / "kvasir-seg")]
    with pytest.raises(TrainError, match="no held-out fold to --evaluate"):
        quantize_bundle(folder, roots, split, images=4, evaluate=True)
    q = quantize_bundle(folder, roots, split, images=8)
    assert q["calibration"]["fold"] == [0, 1] and q["calibration"]["images"] == 8
    assert "--fold all" in q["command"]
    # a model trained on fold 0 named as trained on every fold: --fold all says so
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["training"].update(heldout_fold=1, trained_on_folds="all but 1")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert quantize_bundle(folder, roots, split, heldout="all", images=4)["calibration"]["fold"] == [0, 1]
