"""Training checkpoints: one file per run folder, written atomically, read with ``weights_only``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import TrainError
from .labels import HEADS
from .models import HybridClassifier, build_model

FORMAT = "endoview-train-checkpoint/1"
LAST = "checkpoint-last.pt"


def checkpoint_path(run_or_file: str | os.PathLike[str]) -> Path:
    p = Path(run_or_file).expanduser()
    if p.is_dir():
        p = p / LAST
    if not p.is_file():
        raise TrainError(f"no training checkpoint at {p}: pass a run folder written by "
                         "'endoview train classify' (it holds checkpoint-last.pt)")
    return p


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(run_or_file: str | os.PathLike[str]) -> dict[str, Any]:
    path = checkpoint_path(run_or_file)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip/pickle errors of many kinds: one message
        raise TrainError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TrainError(f"{path} is not an endoview training checkpoint ({FORMAT})")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> HybridClassifier:
    heads = {name: len(labels) for name, labels in ckpt["heads"].items()}
    for name, labels in ckpt["heads"].items():
        if tuple(labels) != HEADS.get(name):
            raise TrainError(f"checkpoint {ckpt['path']}: head {name!r} has labels that differ from "
                             "train.labels; it was written by another version")
    model, _ = build_model(ckpt["arch"], heads, weights="none", announce=False)
    # the exponential moving average of the weights, where the run kept one (it is what was validated)
    model.load_state_dict(ckpt.get("ema") or ckpt["model"])
    return model.eval()
