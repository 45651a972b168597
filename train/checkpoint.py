"""Training checkpoints: one file per run folder (two for the segmenter), written atomically, read
with ``weights_only``.

Each trainer has its own payload, told apart by a format string: :data:`CLASSIFY` (``endoview
train classify``, train/trainer.py) and :data:`SEGMENT` (``endoview train segment``,
train/seg/trainer.py). :func:`load_checkpoint` refuses a file of the other kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import TrainError
from .labels import HEADS
from .models import HybridClassifier, build_model, without_mask_head

LAST = "checkpoint-last.pt"
#: the segmenter's best validation Dice so far
BEST = "checkpoint-best.pt"


@dataclass(frozen=True)
class Kind:
    """One trainer's checkpoints: the format string they carry, and how messages name them."""

    format: str
    noun: str  # "no <noun> checkpoint at ..."
    command: str  # the command whose run folders hold them


CLASSIFY = Kind("endoview-train-checkpoint/1", "training", "endoview train classify")
SEGMENT = Kind("endoview-seg-checkpoint/1", "segmentation", "endoview train segment")


def save_checkpoint(path: Path, payload: dict[str, Any], kind: Kind = CLASSIFY) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": kind.format, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(run_or_file: str | os.PathLike[str], kind: Kind = CLASSIFY, name: str = LAST) -> dict[str, Any]:
    """The checkpoint ``name`` of a run folder (or the file given), with ``"path"`` added; TrainError
    when it is missing, unreadable or of another kind."""
    path = Path(run_or_file).expanduser()
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise TrainError(f"no {kind.noun} checkpoint at {path}: pass a run folder written by "
                         f"'{kind.command}' (it holds {LAST})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip/pickle errors of many kinds: one message
        raise TrainError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != kind.format:
        raise TrainError(f"{path} is not an endoview {kind.noun} checkpoint ({kind.format})")
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
    # (without the training-only mask head, where the run had one)
    model.load_state_dict(without_mask_head(ckpt.get("ema") or ckpt["model"]))
    return model.eval()
