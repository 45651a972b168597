"""The real-time segmenter: augmentation, loss, exact resume, export to a segment bundle, eval-seg."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.bundle import load_bundle
from train.errors import TrainError
from train.seg.evaluate import image_scores
from train.checkpoint import SEGMENT, load_checkpoint
from train.seg.trainer import SegTrainConfig, augment, dice_bce_loss, dice_iou, train_segmenter


def cfg(data_dir, out, **kw) -> SegTrainConfig:
    base = dict(data=str(data_dir / "kvasir-seg"), out=str(out), fold=1, image_size=64, width=8, epochs=2,
                batch_size=4, limit=8, warmup_epochs=1, progress=False, threads=2)
    return SegTrainConfig(**{**base, **kw})


def test_augment_is_deterministic_and_keeps_the_border_black():
    rng = np.random.default_rng(0)
    imgs = torch.from_numpy(rng.integers(1, 256, (4, 32, 32, 3), dtype=np.uint8))
    masks = torch.from_numpy((rng.random((4, 32, 32)) > 0.5).astype(np.uint8))
    fields = torch.zeros(4, 32, 32, dtype=torch.uint8)
    fields[:, 4:28, 4:28] = 1
    a = augment(imgs, masks, fields, torch.Generator().manual_seed(3))
    b = augment(imgs, masks, fields, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    x, y = a
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 1, 32, 32)
    assert x.min() >= 0 and x.max() <= 255
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    assert (x[:, :, 0, 0] == 0).all(), "outside the field must stay black"


def test_loss_and_scores():
    t = torch.zeros(2, 1, 8, 8)
    t[:, :, 2:6, 2:6] = 1
    good = dice_bce_loss((t * 2 - 1) * 20, t)
    bad = dice_bce_loss(-(t * 2 - 1) * 20, t)
    assert good < 0.05 < bad
    gt = np.zeros((8, 8), bool)
    gt[2:6, 2:6] = True
    assert dice_iou(gt, gt) == (1.0, 1.0)
    assert dice_iou(np.zeros_like(gt), gt) == (0.0, 0.0)
    s = image_scores(np.zeros_like(gt), gt)
    assert s == {"jaccard": 0.0, "dice": 0.0, "recall": 0.0, "precision": 0.0}
    half = gt.copy()
    half[2:4] = False
    s = image_scores(half, gt)
    assert s["precision"] == 1.0 and s["recall"] == 0.5 and s["jaccard"] == 0.5


def test_config_is_validated(data_dir, tmp_path):
    with pytest.raises(TrainError, match="multiple of 32"):
        train_segmenter(cfg(data_dir, tmp_path / "a", image_size=50))
    with pytest.raises(TrainError, match="multiple of 8"):
        train_segmenter(cfg(data_dir, tmp_path / "a", width=12))


@pytest.fixture(scope="module")
def seg_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("segrun") / "run"
    summary = train_segmenter(cfg(data_dir, out))
    return out, summary


def test_training_writes_a_run(seg_run):
    out, summary = seg_run
    assert summary["epochs"] == 2 and summary["weights_source"] == "random initialisation"
    for f in ("config.json", "log.csv", "train.log", "checkpoint-last.pt", "checkpoint-best.pt", "summary.json"):
        assert (out / f).is_file(), f
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss,val_dice,val_iou") and len(rows) == 3
    assert "RANDOM INITIALISATION" in (out / "train.log").read_text()


def test_resume_is_exact(seg_run, data_dir, tmp_path):
    out, _ = seg_run
    part = tmp_path / "part"
    train_segmenter(cfg(data_dir, part), stop_after=1)
    assert load_checkpoint(part, SEGMENT)["epoch"] == 1
    train_segmenter(cfg(data_dir, part), resume=True)
    a, b = load_checkpoint(out, SEGMENT), load_checkpoint(part, SEGMENT)
    assert b["epoch"] == 2
    for key in ("model", "ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"
    assert [r["val_dice"] for r in a["history"]] == [r["val_dice"] for r in b["history"]]


def test_resume_refuses_other_settings(seg_run, data_dir):
    out, _ = seg_run
    with pytest.raises(TrainError, match="image_size"):
        train_segmenter(cfg(data_dir, out, image_size=96, epochs=3), resume=True)
    with pytest.raises(TrainError, match="already trained 2 of 2"):
        train_segmenter(cfg(data_dir, out), resume=True)
    with pytest.raises(TrainError, match="--resume"):
        train_segmenter(cfg(data_dir, out))


@pytest.fixture(scope="module")
def seg_bundle(seg_run, tmp_path_factory):
    from train.seg.export import export_segmenter

    out, _ = seg_run
    return export_segmenter(out, tmp_path_factory.mktemp("segb") / "b", latency_runs=3, threads=2)


def test_export_writes_a_checked_segment_bundle(seg_bundle):
    b = load_bundle(seg_bundle.bundle.path)
    assert b.task == "segment" and b.labels == ("polyp",) and b.outputs == {"mask": "mask"}
    assert b.input_size == (64, 64) and b.has("onnx") and b.has("torchscript")
    m = b.manifest
    assert m["training"]["weights"] == "random initialisation" and m["training"]["heldout_fold"] == 1
    assert m["metrics"]["parity"]["max_abs_diff"] <= 1e-4 and m["metrics"]["parity"]["real_images"] > 0
    assert m["metrics"]["cpu_latency_ms"]["onnxruntime"] > 0
    assert m["metrics"]["heldout_model_size"]["dice"] is not None


def test_eval_seg_cli_json(seg_bundle, data_dir, capsys):
    from train.seg.cli import main

    kv = data_dir / "kvasir-seg"
    assert main(["eval-seg", str(seg_bundle.bundle.path), "--images", str(kv / "images"), "--masks",
                 str(kv / "masks"), "--fold", "1", "--limit", "3", "--json"]) == 0
    out = capsys.readouterr()
    m = json.loads(out.out)
    assert {"jaccard", "dice", "recall", "precision", "fps", "images"} <= set(m)
    assert m["images"] == 3 and 0 <= m["dice"] <= 1 and m["fps"] > 0
    assert "note:" not in out.err  # fold 1 is the bundle's held-out fold
    assert main(["eval-seg", str(seg_bundle.bundle.path), "--images", str(kv / "images"), "--masks",
                 str(kv / "masks"), "--fold", "0", "--limit", "1", "--json"]) == 0
    name = load_bundle(seg_bundle.bundle.path).name
    assert capsys.readouterr().err.splitlines().count(
        f"note: {name} was trained on fold 0's images: these are not held-out figures (its held-out fold is 1)") == 1


def test_train_segment_is_a_train_subcommand(data_dir, tmp_path, capsys):
    from train.cli import main

    out = tmp_path / "cli"
    assert main(["train", "segment", "--data", str(data_dir / "kvasir-seg"), "--out", str(out), "--limit", "4",
                 "--epochs", "1", "--image-size", "64", "--width", "8", "--batch-size", "4", "--no-progress"]) == 0
    assert "held-out fold 1" in capsys.readouterr().out
    assert main(["train", "segment", "--data", str(data_dir / "kvasir-seg"), "--out", str(out)]) != 0
    assert "already holds a run" in capsys.readouterr().err
    every = tmp_path / "every"
    assert main(["train", "segment", "--data", str(data_dir / "kvasir-seg"), "--out", str(every), "--fold", "all",
                 "--limit", "3", "--epochs", "1", "--image-size", "64", "--width", "8", "--batch-size", "4",
                 "--no-progress"]) == 0
    assert "every fold, nothing held out" in capsys.readouterr().out
    ckpt = load_checkpoint(every, SEGMENT)
    assert ckpt["config"]["fold"] is None and len(ckpt["train_images"]) == 6 and ckpt["val_images"] == []
    assert main(["train", "segment", "--arch", "cascade", "--data", str(data_dir / "kvasir-seg"), "--out",
                 str(tmp_path / "c"), "--fold", "all"]) != 0
    assert "--fold all trains the real-time segmenters" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["unet", "lraspp"])
def test_models_return_full_size_mask_logits(arch):
    from train.seg.models import SegWithPreprocessing, build_segmenter

    model = build_segmenter(arch, 8).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
        prob = SegWithPreprocessing(model)(torch.zeros(1, 64, 96, 3, dtype=torch.uint8))
    assert set(out) == {"mask"} and out["mask"].shape == (2, 1, 64, 96)
    assert prob.shape == (1, 1, 64, 96) and 0 <= float(prob.min()) <= float(prob.max()) <= 1
    with pytest.raises(TrainError, match="unknown segmentation architecture"):
        build_segmenter("segformer")


def test_building_the_parsers_does_not_import_torch():
    """engine.cli builds every entry point's parser: the viewer must start without torch."""
    import subprocess
    import sys

    code = ("import sys, argparse\n"
            "from train.cli import build_parser\n"
            "from train.seg.cli import add_eval_parser, add_export_parser\n"
            "build_parser(); s = argparse.ArgumentParser().add_subparsers()\n"
            "add_export_parser(s); add_eval_parser(s)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
