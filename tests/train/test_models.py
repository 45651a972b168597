"""Trunk + named heads, trimming, weights from a file, and the fail-fast download."""

from __future__ import annotations

import socket

import pytest
import torch
import torchvision

from train.errors import TrainError
from train.labels import HEADS
from train.models import WithPreprocessing, build_model, count_parameters, normalize


@pytest.mark.parametrize("arch", ["mobilenet_v3_large", "resnet152"])
def test_forward_returns_one_tensor_per_named_head(arch):
    torch.manual_seed(0)
    model, source = build_model(arch, weights="none")
    assert source == "random initialisation"
    model.eval()
    with torch.no_grad():
        out = model(normalize(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)))
    assert isinstance(out, dict) and list(out) == ["raw", "macro", "oesophagus", "ulcer"]
    for name, labels in HEADS.items():
        assert out[name].shape == (2, len(labels))
    trimmed = model.trimmed("raw").eval()
    assert list(trimmed.heads) == ["raw"]
    extra = sum(model.feature_dim * len(HEADS[h]) + len(HEADS[h]) for h in ("macro", "oesophagus", "ulcer"))
    assert count_parameters(model) - count_parameters(trimmed) == extra
    x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        full = WithPreprocessing(model, "raw")(x)
        small = WithPreprocessing(trimmed, "raw")(x)
    torch.testing.assert_close(full, small)
    torch.testing.assert_close(full.sum(1), torch.ones(2))


def test_weights_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    ref = torchvision.models.mobilenet_v3_large(weights=None)
    path = tmp_path / "mnv3.pth"
    torch.save(ref.state_dict(), path)
    model, source = build_model("mobilenet_v3_large", weights=str(path))
    assert source == f"file {path}"
    torch.testing.assert_close(model.trunk.features[0][0].weight, ref.features[0][0].weight)
    torch.save({"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, path)
    build_model("mobilenet_v3_large", weights=str(path))  # wrapped and DDP-prefixed also load
    with pytest.raises(TrainError, match="does not fit torchvision's resnet152"):
        build_model("resnet152", weights=str(path))
    with pytest.raises(TrainError, match="weights file not found"):
        build_model("mobilenet_v3_large", weights=str(tmp_path / "missing.pth"))


def test_imagenet_download_fails_fast_without_a_network(monkeypatch, tmp_path, caplog):
    def refuse(*a, **k):
        raise OSError("no route to host (test)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(TrainError, match=r"cannot download the ImageNet weights .* --weights PATH"):
        build_model("mobilenet_v3_large", weights="imagenet")
    model, source = build_model("mobilenet_v3_large", weights="auto")
    assert source == "random initialisation"
    assert "RANDOM INITIALISATION" in caplog.text


def test_unknown_arch():
    with pytest.raises(TrainError, match="unknown architecture 'vgg'"):
        build_model("vgg")
