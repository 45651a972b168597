"""The training-only polyp-mask head (``train classify --mask-loss W``): what it outputs, what its
loss counts, and that no evaluated or exported model keeps it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from chain_args import train_args

from train.data import Sample, mask_known
from train.errors import TrainError
from train.losses import mask_head_loss
from train.models import MASK_KEY, WithPreprocessing, build_model, normalize


def _images(n=2, size=160):
    return normalize(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8))


def test_the_mask_head_answers_in_training_only_and_changes_no_head():
    torch.manual_seed(0)
    model, _ = build_model("mobilenet_v3_large", weights="none", announce=False)
    bare, _ = build_model("mobilenet_v3_large", weights="none", announce=False)
    bare.load_state_dict(model.state_dict())
    model.add_mask_head()
    x = _images()
    model.train()
    bare.train()
    torch.manual_seed(1)  # the same dropout draws
    out = model(x)
    assert out[MASK_KEY].shape == (2, 1, 10, 10)  # stride 16 at 160 px
    assert set(out) == {"raw", "macro", "oesophagus", "ulcer", MASK_KEY}
    # the heads' path through the trunk is the plain model's: same weights, same answers
    torch.manual_seed(1)
    torch.testing.assert_close(bare(x)["raw"], out["raw"])
    model.eval()
    with torch.no_grad():
        assert MASK_KEY not in model(x)
    trimmed = model.trimmed("raw")
    assert trimmed.mask_head is None
    assert not any(k.startswith("mask_head.") for k in trimmed.state_dict())
    with torch.no_grad():
        assert WithPreprocessing(trimmed.eval(), "raw")(torch.zeros(1, 160, 160, 3, dtype=torch.uint8)).shape == (1, 23)


def test_the_mask_head_needs_mobilenet():
    model, _ = build_model("resnet152", weights="none", announce=False)
    with pytest.raises(TrainError, match="MobileNetV3"):
        model.add_mask_head()


def test_mask_loss_counts_only_images_whose_mask_is_known():
    masks = torch.zeros(3, 1, 160, 160)
    masks[0, :, 48:112, 48:112] = 1  # cells 3..6 of the 10 x 10 map, whole
    right = torch.full((3, 1, 10, 10), -8.0)
    right[0, :, 3:7, 3:7] = 8.0
    wrong = -right
    known = torch.tensor([1.0, 1.0, 0.0])
    assert float(mask_head_loss(right, masks, known)) < 0.01
    assert float(mask_head_loss(wrong, masks, known)) > 5
    # the third image's answer does not count: its mask is unknown
    mixed = right.clone()
    mixed[2] = 8.0
    torch.testing.assert_close(mask_head_loss(mixed, masks, known), mask_head_loss(right, masks, known))
    assert float(mask_head_loss(wrong, masks, torch.zeros(3))) == 0.0


def test_which_masks_are_known():
    jpg = Path("x.jpg")
    assert mask_known(Sample(jpg, "polyp", 0, mask=Path("m.jpg")))
    assert not mask_known(Sample(jpg, "polyp", 0))  # a polyp image without Kvasir-SEG's mask
    assert not mask_known(Sample(jpg, "dyed-lifted-polyps", 0))
    assert mask_known(Sample(jpg, "normal-cecum", 0))  # polyp-free: an empty mask
    assert mask_known(Sample(jpg, "ileum", 1))


def test_a_run_with_the_mask_head_logs_its_loss_and_exports_without_it(synthetic, tmp_path):
    from train.checkpoint import LAST, load_checkpoint, model_from_checkpoint
    from train.cli import main
    from train.export import export_run

    out = tmp_path / "run"
    assert main(train_args(*synthetic, out, "--mask-loss", "1")) == 0
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert float(rows[0]["train_loss_mask"]) > 0
    ckpt = load_checkpoint(out / LAST)
    assert any(k.startswith("mask_head.") for k in ckpt["model"])
    assert ckpt["config"]["mask_loss"] == 1.0
    assert model_from_checkpoint(ckpt).mask_head is None
    bundle = export_run(out, tmp_path / "bundle", latency_runs=1)
    assert bundle.bundle.manifest["training"]["heads_trained"] == ["raw", "macro", "oesophagus", "ulcer"]
    assert main(train_args(*synthetic, tmp_path / "r2", "--mask-loss", "1", "--arch", "resnet152")) == 1


def test_the_mask_loss_reaches_the_config_and_the_reproduce_command(tmp_path):
    import shlex

    from train.cli import build_parser, train_config_from_args
    from train.ship import run_config, train_command

    parser = build_parser()
    cfg = train_config_from_args(parser.parse_args(train_args(tmp_path, tmp_path / "s.csv", tmp_path / "o",
                                                              "--mask-loss", "1")))
    assert cfg.mask_loss == 1.0
    row = {"config": {**cfg.resolved().to_dict(), "fold": 1}, "heads": list(cfg.heads), "run": "runs/m"}
    command = train_command(row)
    assert "--mask-loss 1.0" in command
    assert train_config_from_args(parser.parse_args(shlex.split(command)[1:])).mask_loss == 1.0
    # a run from before the flag trained without the head, and its command has no flag
    old = {k: v for k, v in row["config"].items() if k != "mask_loss"}
    assert run_config({"config": old})["mask_loss"] == 0.0
    assert "--mask-loss" not in train_command({**row, "config": old})
    with pytest.raises(TrainError, match="--mask-loss"):
        train_config_from_args(parser.parse_args(train_args(tmp_path, tmp_path / "s.csv", tmp_path / "o",
                                                            "--mask-loss", "-1"))).validate()
