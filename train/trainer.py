"""``endoview train classify``: the paper's recipe (DESIGN.md, "The paper's recipe").

SGD (lr 0.003, momentum 0.9), x0.1 after epochs 10, 20, 30, 40 epochs, batch 128 (MobileNetV3) /
32 (ResNet-152), hybrid loss over the four heads (or ``--heads raw``: the baseline), the paper's
augmentations on the viewer's masked model input, mixed precision on CUDA.

Run folder: ``config.json`` (the resolved configuration), ``log.csv`` (one row per epoch),
``train.log``, ``plots/history.png`` (loss per head and held-out metrics, redrawn each epoch),
``plots/confusion.png`` (held-out fold, last epoch), ``checkpoint-last.pt`` (``--resume`` reads
it), ``summary.json`` (the final figures).

Several GPUs or machines: ``torchrun --nproc-per-node N -m train train classify ...``: one
process per GPU, DistributedDataParallel (NCCL on CUDA, gloo on the CPU); ``--batch-size`` is the
global batch, split across the processes; rank 0 evaluates, logs and writes the run folder; at
the end all ranks compare a checksum of their parameters.

The held-out fold is evaluated each epoch for the curves; the reported model is the last epoch's
(as in the paper; no checkpoint is picked on the held-out fold, which is also the test fold).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import LAST, load_checkpoint, save_checkpoint
from .data import format_counts, load_dataset, subset_summary
from .errors import TrainError
from .evaluate import make_loader, metrics_from_probs, predict_torch
from .labels import HEAD_NAMES, HEADS, TRIMMED_HEAD
from .losses import HybridLoss
from .metrics import (format_per_class, mean_metrics, plot_confusion, plot_history, table1_header,
                      table1_row)
from .models import DISPLAY, build_model, count_parameters, normalize, paper_batch_size

log = logging.getLogger(__name__)

PAPER = {"epochs": 40, "lr": 0.003, "momentum": 0.9, "milestones": (10, 20, 30), "gamma": 0.1}


@dataclass
class TrainConfig:
    data: str
    split_csv: str
    out: str
    fold: int = 0
    arch: str = "mobilenet_v3_large"
    heads: tuple[str, ...] = HEAD_NAMES
    epochs: int = PAPER["epochs"]
    batch_size: int | None = None  # None: the paper's batch for the arch
    lr: float = PAPER["lr"]
    momentum: float = PAPER["momentum"]
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = PAPER["milestones"]
    gamma: float = PAPER["gamma"]
    weights: str = "auto"
    image_size: int = 224
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))
    seed: int = 0
    amp: str = "auto"  # auto (on with CUDA) | on | off
    device: str = "auto"  # auto | cpu | cuda
    steps_per_epoch: int | None = None  # cap (short runs, benchmarks); None: the whole fold
    progress: bool = True

    def resolved(self) -> TrainConfig:
        c = dataclasses.replace(self)
        if c.batch_size is None:
            c.batch_size = paper_batch_size(c.arch)
        c.heads = tuple(c.heads)
        c.milestones = tuple(int(m) for m in c.milestones)
        return c

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["heads"] = list(self.heads)
        d["milestones"] = list(self.milestones)
        return d

    def validate(self) -> None:
        if self.epochs < 1:
            raise TrainError(f"--epochs must be at least 1, not {self.epochs}")
        if self.batch_size is not None and self.batch_size < 2:
            raise TrainError(f"--batch-size must be at least 2 (batch norm), not {self.batch_size}")
        if not self.lr > 0:
            raise TrainError(f"--lr must be positive, not {self.lr}")
        if list(self.milestones) != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            raise TrainError(f"--milestones must be increasing epochs >= 1, not {self.milestones}")
        if self.image_size < 32:
            raise TrainError(f"--image-size must be at least 32, not {self.image_size}")
        if self.workers < 0:
            raise TrainError(f"--workers must be >= 0, not {self.workers}")
        if self.amp not in ("auto", "on", "off"):
            raise TrainError(f"--amp must be auto, on or off, not {self.amp!r}")


# --------------------------------------------------------------------------------------------
# distributed


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group", rank, world, backend)
    return Dist(rank, world, local)


def _barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def _pick_device(spec: str, d: Dist) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise TrainError("--device cuda: torch here has no CUDA device; use --device cpu")
        return torch.device("cuda", d.local_rank)
    if spec != "cpu":
        raise TrainError(f"--device must be auto, cpu or cuda, not {spec!r}")
    return torch.device("cpu")


def parameter_checksum(model: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of the trainable parameters. Buffers (batch-norm statistics) are not
    included: each rank updates them on its own batch and DDP broadcasts rank 0's at each forward."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# run folder


def write_csv(path: Path, history: Sequence[dict]) -> None:
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)


def _prepare_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    if resume:
        if not (out / LAST).is_file():
            raise TrainError(f"--resume: {out} holds no {LAST}; start a new run without --resume")
        return
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise TrainError(f"{out} already holds a run; pass --resume to continue it, --force to "
                             "start over, or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


class RunLog:
    """The run folder's log file: everything the ``train`` logger says while training."""

    """Adds a train.log file handler to the ``train`` logger for the duration of a run."""

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.setLevel(logging.INFO)
        self.logger = logging.getLogger("train")

    def __enter__(self):
        self.logger.addHandler(self.handler)
        self._level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self._level)
        self.handler.close()


# --------------------------------------------------------------------------------------------
# training


def train_classifier(cfg: TrainConfig, *, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Train one model on one fold; returns the summary (also written to summary.json by rank 0)."""
    cfg.validate()
    cfg = cfg.resolved()
    device_kind = "cuda" if (cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())) else "cpu"
    d = init_distributed(device_kind)
    device = _pick_device(cfg.device, d)
    amp = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    if amp and device.type != "cuda":
        raise TrainError("--amp on needs a CUDA device (mixed precision is for GPUs here)")
    if cfg.batch_size % d.world:
        raise TrainError(f"--batch-size {cfg.batch_size} (the global batch) must divide by the "
                         f"{d.world} processes")
    out = Path(cfg.out).expanduser()
    if d.main:
        _prepare_run_dir(out, resume=resume, force=force)
    _barrier(d)

    ckpt = None
    if resume:
        ckpt = load_checkpoint(out)
        old = ckpt["config"]
        for key in ("arch", "heads", "image_size", "fold", "data", "split_csv"):
            now = list(getattr(cfg, key)) if key == "heads" else getattr(cfg, key)
            if old.get(key) != now:
                raise TrainError(f"--resume: {out} was trained with {key}={old.get(key)!r}, not {now!r}")
        if ckpt["epoch"] >= cfg.epochs:
            raise TrainError(f"--resume: {out} has already trained {ckpt['epoch']} of {cfg.epochs} "
                             "epochs; raise --epochs to train on")

    with RunLog(out / "train.log") if d.main else _nullcontext():
        return _train(cfg, d, device, amp, out, ckpt)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _train(cfg: TrainConfig, d: Dist, device: torch.device, amp: bool, out: Path,
           ckpt: dict[str, Any] | None) -> dict[str, Any]:
    _seed_everything(cfg.seed)
    data = load_dataset(cfg.data, cfg.split_csv)
    if cfg.fold not in data.folds:
        raise TrainError(f"--fold {cfg.fold}: the split file's folds are {data.folds}")
    train_samples, val_samples = data.not_fold(cfg.fold), data.fold(cfg.fold)
    per_rank = cfg.batch_size // d.world
    if len(train_samples) < cfg.batch_size:
        raise TrainError(f"only {len(train_samples)} training images for a batch of {cfg.batch_size}; "
                         "lower --batch-size")
    if d.main:
        log.info("data %s, split %s, held-out fold %d\n%s", cfg.data, cfg.split_csv, cfg.fold, format_counts(data))
        log.info("train: %s; held out: %s", subset_summary(train_samples), subset_summary(val_samples))

    heads = {h: len(HEADS[h]) for h in cfg.heads}
    model, weights_source = build_model(cfg.arch, heads, weights=cfg.weights if ckpt is None else "none",
                                        announce=ckpt is None)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        weights_source = ckpt["weights_source"]
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    if d.active:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = HybridLoss(cfg.heads).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history: list[dict[str, Any]] = []
    start = 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        history = list(ckpt["history"])
        start = int(ckpt["epoch"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        log.info("resuming %s after epoch %d", out, start)

    size = (cfg.image_size, cfg.image_size)
    sampler = (torch.utils.data.distributed.DistributedSampler(
        range(len(train_samples)), num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed,
        drop_last=True) if d.active else None)
    pin = device.type == "cuda"
    train_loader = make_loader(train_samples, size, per_rank, cfg.workers, augment=True, sampler=sampler,
                               shuffle=True, drop_last=True, seed=cfg.seed, pin_memory=pin)
    val_loader = make_loader(val_samples, size, per_rank, cfg.workers, pin_memory=pin) if val_samples else None
    steps = len(train_loader) if cfg.steps_per_epoch is None else min(cfg.steps_per_epoch, len(train_loader))
    if d.main:
        (out / "config.json").write_text(json.dumps({
            **cfg.to_dict(), "resolved": {
                "device": str(device), "amp": amp, "world_size": d.world, "batch_per_process": per_rank,
                "steps_per_epoch": steps, "weights_source": weights_source,
                "torch": torch.__version__, "train_images": len(train_samples),
                "heldout_images": len(val_samples)}}, indent=2) + "\n", encoding="utf-8")
        log.info("%s, heads %s, %d parameters, weights: %s, device %s%s, batch %d (%d x %d processes), "
                 "%d steps/epoch", cfg.arch, ",".join(cfg.heads), count_parameters(model), weights_source,
                 device, " AMP" if amp else "", cfg.batch_size, per_rank, d.world, steps)

    metrics: dict[str, Any] = {}
    for epoch in range(start + 1, cfg.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        # shuffling and augmentation streams depend on (seed, epoch) only: the same after a resume
        train_loader.generator.manual_seed(cfg.seed * 1000 + epoch)
        torch.manual_seed(cfg.seed * 1000 + epoch)
        net.train()
        sums = torch.zeros(len(cfg.heads) + 1, dtype=torch.float64)
        seen = 0
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                   disable=not (cfg.progress and d.main), dynamic_ncols=True)
        for step, (x, y) in enumerate(train_loader):
            if step >= steps:
                break
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            x = normalize(x)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                outputs = net(x)
            total, per = loss_fn(outputs, y)
            if not torch.isfinite(total):
                raise TrainError(f"the loss became {float(total)} at epoch {epoch} step {step}; "
                                 "lower --lr")
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
            n = len(y)
            sums += torch.tensor([float(total.detach())] + [float(per[h].detach()) for h in cfg.heads],
                                 dtype=torch.float64) * n
            seen += n
            bar.update(1)
            bar.set_postfix(loss=f"{float(total.detach()):.3f}", lr=f"{opt.param_groups[0]['lr']:.2g}")
        bar.close()
        train_time = time.perf_counter() - t0
        lr = opt.param_groups[0]["lr"]
        sched.step()
        if d.active:
            packed = torch.cat([sums, torch.tensor([float(seen)], dtype=torch.float64)])
            dist.all_reduce(packed)
            sums, seen = packed[:-1], int(packed[-1])
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": float(sums[0]) / max(seen, 1)}
        for i, h in enumerate(cfg.heads):
            row[f"train_loss_{h}"] = float(sums[i + 1]) / max(seen, 1)
        row["train_images"] = seen
        row["train_s"] = train_time
        row["step_s"] = train_time / max(steps, 1)
        row["images_per_s"] = seen / train_time if train_time > 0 else math.nan

        if d.main:
            if val_loader is not None:
                probs, targets, vloss = predict_torch(model, val_loader, device, amp=amp, loss_fn=loss_fn)
                metrics = metrics_from_probs(probs, targets)
                row["val_loss"] = sum(vloss.values())
                row.update({f"val_loss_{h}": v for h, v in vloss.items()})
                for k in ("macro_precision", "macro_recall", "macro_f1", "micro_f1", "mcc"):
                    row[f"val_{k}"] = metrics[k]
            history.append(row)
            write_csv(out / "log.csv", history)
            plot_history(history, out / "plots" / "history.png",
                         title=f"{DISPLAY[cfg.arch]} heads={','.join(cfg.heads)} held-out fold {cfg.fold}")
            save_checkpoint(out / LAST, {
                "arch": cfg.arch, "heads": {h: list(HEADS[h]) for h in cfg.heads},
                "image_size": cfg.image_size, "epoch": epoch, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "config": cfg.to_dict(), "history": history,
                "weights_source": weights_source, "metrics": _json_safe(metrics, drop=("per_class",)),
                "rng": {"torch": torch.get_rng_state()},
            })
            log.info("epoch %d/%d: loss %.4f (%s), %.1f images/s%s", epoch, cfg.epochs, row["train_loss"],
                     ", ".join(f"{h} {row[f'train_loss_{h}']:.3f}" for h in cfg.heads), row["images_per_s"],
                     f", held-out macro F1 {row['val_macro_f1']:.3f} MCC {row['val_mcc']:.3f}"
                     if "val_macro_f1" in row else "")
        _barrier(d)

    checksum = parameter_checksum(model)
    checksums = [checksum]
    if d.active:
        checksums = [None] * d.world
        dist.all_gather_object(checksums, checksum)
        if len(set(checksums)) != 1:
            raise TrainError(f"the {d.world} processes ended with different parameters ({checksums}); "
                             "DistributedDataParallel did not keep them in step")
    summary: dict[str, Any] = {
        "run": str(out), "arch": cfg.arch, "heads": list(cfg.heads), "fold": cfg.fold,
        "epochs": cfg.epochs, "weights_source": weights_source,
        "parameters": count_parameters(model),
        "parameters_trimmed": count_parameters(model.trimmed(TRIMMED_HEAD)),
        "ddp": {"world_size": d.world, "parameter_checksums": checksums, "agree": len(set(checksums)) == 1},
        "metrics": _json_safe(metrics, drop=("per_class", "confusion_matrix")) if metrics else {},
    }
    if d.main:
        if metrics:
            plot_confusion(np.array(metrics["confusion_matrix"]), metrics["labels"], out / "plots" / "confusion.png",
                           title=f"{DISPLAY[cfg.arch]} heads={','.join(cfg.heads)} held-out fold {cfg.fold}, "
                                 f"epoch {cfg.epochs}")
            (out / "per_class.txt").write_text(format_per_class(metrics) + "\n", encoding="utf-8")
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if d.main and metrics:
        summary["metrics_full"] = metrics
    return summary


def _json_safe(m: dict, drop: Sequence[str] = ()) -> dict:
    return {k: v for k, v in m.items() if k not in drop}


# --------------------------------------------------------------------------------------------
# cross-validation (Table 1)


def run_cross_validation(cfg: TrainConfig, folds: int, *, baseline: bool = True, resume: bool = False,
                         force: bool = False) -> dict[str, Any]:
    """Train each fold with the hybrid loss (and the raw-only baseline); mean rows as in Table 1."""
    variants = [("hybrid", HEAD_NAMES)] + ([("raw", (TRIMMED_HEAD,))] if baseline else [])
    root = Path(cfg.out).expanduser()
    results: dict[str, list[dict]] = {name: [] for name, _ in variants}
    for name, heads in variants:
        for k in range(folds):
            sub = dataclasses.replace(cfg, out=str(root / f"fold{k}-{name}"), fold=k, heads=heads)
            s = train_classifier(sub, resume=resume and (Path(sub.out) / LAST).is_file(), force=force)
            results[name].append(s)
    rank = int(os.environ.get("RANK", "0"))
    table = {"arch": cfg.arch, "folds": folds, "rows": []}
    model = DISPLAY[cfg.arch]
    for name, _ in variants:
        ms = [r["metrics"] for r in results[name] if r["metrics"]]
        if len(ms) != folds:
            continue
        row_name = f"{model} w. raw" if name == "hybrid" else f"{model} raw"
        table["rows"].append({"model": row_name, "heads": name, "runs": [r["run"] for r in results[name]],
                              **mean_metrics(ms)})
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        (root / "cv_summary.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
        (root / "table1.txt").write_text(format_table1(table) + "\n", encoding="utf-8")
    return table


def format_table1(table: dict) -> str:
    data = f"{table['folds']}-fold mean"
    lines = [table1_header()]
    for r in table["rows"]:
        lines.append(table1_row(r["model"], data, r))
    return "\n".join(lines)
