"""The settings of ``endoview train segment`` (torch-free: the CLI builds its parser from them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import TrainError

ARCHS = ("unet", "lraspp")
#: --arch choices: the real-time segmenters above and the Cascade Mask R-CNN second pass (train/seg/cascade.py)
ALL_ARCHS = (*ARCHS, "cascade")


@dataclass
class SegTrainConfig:
    data: str
    out: str
    fold: int | None = 1  # None (--fold all): train on every fold, hold nothing out, validate nothing
    arch: str = "unet"
    width: int = 16
    image_size: int = 160
    epochs: int = 150
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 3
    ema: float = 0.995
    bce_weight: float = 1.0
    seed: int = 0
    threads: int = 0  # 0: all CPUs
    limit: int = 0  # images per fold (0: all); short test runs
    steps_per_epoch: int = 0  # 0: one pass over the training fold
    split_csv: str | None = None
    mapping_csv: str | None = None
    cache_dir: str | None = None
    progress: bool = True
    #: polyp-free image folders (HyperKvasir labeled-images layout or class folders, folds from the
    #: split file) trained as empty masks beside Kvasir-SEG
    negatives: list[str] | None = None
    #: black out the scope-guide inset (engine.analysis.crop.SCOPE_GUIDE_INSET) in every image
    inset: bool = True
    val_every: int = 1  # validate every N epochs (and after the last)

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise TrainError(f"--arch {self.arch!r}: choose one of {', '.join(ARCHS)}")
        for name in ("epochs", "batch_size", "image_size", "width"):
            if getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be at least 1")
        if self.image_size % 32:
            raise TrainError(f"--image-size {self.image_size} must be a multiple of 32 (five 2x levels)")
        if self.arch == "unet" and self.width % 8:
            # torch 2.14's CPU convolution backward crashed (double free) on width 12 here (channels_last):
            # keep every level a multiple of 8
            raise TrainError(f"--width {self.width} must be a multiple of 8")
        if not 0 <= self.ema < 1:
            raise TrainError("--ema must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_fixed_on_resume(old: dict[str, Any], new: Any, keys: tuple[str, ...], run: Any) -> None:
    """--resume: refuse a setting in ``keys`` that differs from the run's (``old``: its saved config)."""
    for key in keys:
        if old.get(key) != getattr(new, key):
            raise TrainError(f"--resume: {run} was trained with {key}={old.get(key)!r}, not {getattr(new, key)!r}")
