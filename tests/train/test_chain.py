"""The whole chain on tiny synthetic data, CPU: train, evaluate, export, load with engine, classify."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from chain_args import SIZE, train_args
from engine.analysis.classifier import Classifier
from engine.analysis.content_area import detect_content_area
from engine.analysis.crop import model_input
from engine.backends import open_backend
from engine.bundle import load_bundle
from train.cli import build_parser, main
from train.errors import TrainError
from train.labels import RAW_CLASSES


def test_run_folder_contents(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.json", "log.csv", "train.log", "checkpoint-last.pt", "summary.json", "plots",
            "per_class.txt"} <= names
    assert (trained_run / "plots" / "history.png").stat().st_size > 1000
    assert (trained_run / "plots" / "confusion.png").stat().st_size > 1000
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["arch"] == "mobilenet_v3_large" and cfg["heads"] == ["raw", "macro", "oesophagus", "ulcer"]
    assert cfg["lr"] == 0.003 and cfg["momentum"] == 0.9 and cfg["milestones"] == [10, 20, 30]
    assert cfg["resolved"]["weights_source"] == "random initialisation"
    rows = list(csv.DictReader(open(trained_run / "log.csv")))
    assert len(rows) == 1
    for head in ("raw", "macro", "oesophagus", "ulcer"):
        assert float(rows[0][f"train_loss_{head}"]) > 0  # each CE is logged
    total = sum(float(rows[0][f"train_loss_{h}"]) for h in ("raw", "macro", "oesophagus", "ulcer"))
    assert float(rows[0]["train_loss"]) == pytest.approx(total, rel=1e-4)
    assert "RANDOM INITIALISATION" in (trained_run / "train.log").read_text()


def test_eval_run_and_bundle(trained_run, exported, synthetic, capsys, tmp_path):
    data, split = synthetic
    assert main(["eval", str(trained_run), "--workers", "0", "--json", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    run_metrics = json.loads(out.out)
    assert "note:" not in out.err  # the run's own held-out fold
    for key in ("macro_precision", "macro_recall", "macro_f1", "micro_precision", "micro_recall",
                "micro_f1", "mcc", "per_class", "confusion_matrix"):
        assert key in run_metrics
    assert run_metrics["n"] == 46 and (tmp_path / "r" / "confusion.png").is_file()
    assert main(["eval", str(exported.bundle.path), "--data", str(data), "--split-csv", str(split), "--fold", "0",
                 "--workers", "0", "--json", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr()
    bundle_metrics = json.loads(out.out)
    assert "note:" not in out.err
    # the deployed ONNX model and the torch checkpoint agree on every image
    assert bundle_metrics["confusion_matrix"] == run_metrics["confusion_matrix"]
    assert main(["eval", str(exported.bundle.path), "--data", str(data), "--split-csv", str(split), "--fold",
                 "1", "--workers", "0", "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr()
    assert "macro P" in out.out and "MCC" in out.out and "ulcerative-colitis-grade-3" in out.out
    # fold 1 trained this model: the figures are not held-out ones, and the command says so
    assert out.err.splitlines().count(f"note: {exported.bundle.name} was trained on fold 1's images: these are "
                                      "not held-out figures (its held-out fold is 0)") == 1
    assert main(["eval", str(trained_run), "--fold", "1", "--workers", "0", "--json",
                 "--out", str(tmp_path / "rt")]) == 0
    assert ("note: mnv3 was trained on fold 1's images: these are not held-out figures (its held-out fold is 0)"
            in capsys.readouterr().err.splitlines())


def test_export_bundle_loads_in_engine_and_classifies_a_frame(exported, synthetic):
    bundle = load_bundle(exported.bundle.path)
    assert bundle.trained and bundle.task == "classify"
    assert bundle.labels == RAW_CLASSES and bundle.input_size == (SIZE, SIZE)
    assert set(bundle.formats) == {"onnx", "torchscript"}
    m = bundle.manifest
    assert m["metrics"]["parity"]["max_abs_diff"] <= 1e-4
    assert m["metrics"]["parity"]["real_images"] > 0 and m["metrics"]["parity"]["random_images"] > 0
    assert m["training"]["heads_trained"] == ["raw", "macro", "oesophagus", "ulcer"]
    assert m["training"]["role"] == "fast" and m["training"]["weights"] == "random initialisation"
    assert m["metrics"]["size"]["parameters_trimmed"] < m["metrics"]["size"]["parameters_untrimmed"]
    assert "RANDOM INITIALISATION" in m["notes"]

    import cv2

    frame = cv2.imread(str(next(synthetic[0].rglob("*.jpg"))))
    area = detect_content_area(frame)
    x = model_input(frame, area, bundle.input_size)
    results = {}
    for backend in ("onnxruntime", "torch"):
        with open_backend(bundle, backend) as be:
            p = Classifier(bundle, be).predict(x)
        assert p.probabilities.shape == (23,) and abs(float(p.probabilities.sum()) - 1) < 1e-4
        results[backend] = p.probabilities
    np.testing.assert_allclose(results["onnxruntime"], results["torch"], atol=1e-4)


def test_export_refuses_to_overwrite(trained_run, exported):
    from train.export import export_run

    with pytest.raises(TrainError, match="exists and is not empty"):
        export_run(trained_run, exported.bundle.path, latency_runs=1)


def test_resume_continues_the_run(trained_run, tmp_path, synthetic):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(train_args(*synthetic, run, "--resume")) == 1  # 1 of 1 epochs already done
    assert main([*train_args(*synthetic, run, "--resume"), "--epochs", "2"]) == 0
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    first = list(csv.DictReader(open(trained_run / "log.csv")))[0]
    assert rows[0] == first  # the first epoch's row is kept as it was
    assert main([*train_args(*synthetic, run, "--resume", "--arch", "resnet152"), "--epochs", "3"]) == 1


def test_user_errors_are_one_line(tmp_path, synthetic, capsys):
    assert main(["train", "classify", "--data", str(synthetic[0])]) == 1
    assert "needs --split-csv, --out" in capsys.readouterr().err
    assert main(train_args(*synthetic, tmp_path / "x", "--heads", "macro")) == 1
    assert "must include 'raw'" in capsys.readouterr().err
    assert main(train_args(tmp_path / "nope", synthetic[1], tmp_path / "y")) == 1
    assert "data folder not found" in capsys.readouterr().err
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "f").write_text("x")
    assert main(train_args(*synthetic, tmp_path / "z")) == 1
    assert "already holds a run" in capsys.readouterr().err


def test_config_file_then_flags(tmp_path, synthetic):
    from train.cli import train_config_from_args

    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"arch": "resnet152", "epochs": 7, "lr": 0.01}))
    args = build_parser().parse_args(["train", "classify", "--data", "d", "--split-csv", "s", "--out", "o",
                                      "--config", str(cfg_file), "--lr", "0.02"])
    cfg = train_config_from_args(args)
    assert (cfg.arch, cfg.epochs, cfg.lr) == ("resnet152", 7, 0.02)
    assert cfg.resolved().batch_size == 32  # the paper's ResNet-152 batch
    args = build_parser().parse_args(["train", "classify", "--data", "d", "--split-csv", "s", "--out", "o"])
    cfg = train_config_from_args(args).resolved()
    assert (cfg.arch, cfg.batch_size, cfg.epochs, cfg.image_size) == ("mobilenet_v3_large", 128, 40, 224)


def test_cross_validation_prints_table1_rows(synthetic, tmp_path, capsys):
    out = tmp_path / "cv"
    assert main([*train_args(*synthetic, out, "--cv", "2"), "--steps-per-epoch", "2"]) == 0
    text = capsys.readouterr().out
    assert "MobileNetV3 w. raw" in text and "MobileNetV3 raw" in text and "2-fold mean" in text
    table = json.loads((out / "cv_summary.json").read_text())
    assert [r["model"] for r in table["rows"]] == ["MobileNetV3 w. raw", "MobileNetV3 raw"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "fold0-hybrid", "fold0-raw", "fold1-hybrid", "fold1-raw"]
    raw_cfg = json.loads((out / "fold1-raw" / "config.json").read_text())
    assert raw_cfg["heads"] == ["raw"] and raw_cfg["fold"] == 1


def test_resnet152_second_pass_bundle(synthetic, tmp_path):
    from train.export import export_run

    run = tmp_path / "r152"
    assert main([*train_args(*synthetic, run, "--arch", "resnet152", "--image-size", "32"),
                 "--steps-per-epoch", "1"]) == 0
    report = export_run(run, tmp_path / "bundle", latency_runs=1, random_images=2, real_limit=2)
    b = load_bundle(report.bundle.path)
    assert b.manifest["training"]["role"] == "second-pass" and b.manifest["training"]["arch"] == "resnet152"
    assert b.name == "resnet152-hyperkvasir-hybrid-fold0" and b.input_size == (32, 32)
    assert report.parity["max_abs_diff"] <= 1e-4


def test_amp_on_needs_cuda(synthetic, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: --amp on is valid here")
    assert main(train_args(*synthetic, tmp_path / "amp", "--amp", "on")) == 1
    assert "--amp on needs a CUDA device" in capsys.readouterr().err
    with pytest.raises(TrainError):
        from train.trainer import TrainConfig

        TrainConfig(data="d", split_csv="s", out="o", amp="maybe").validate()
