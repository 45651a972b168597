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

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import random
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
from .data import format_counts, load_dataset, mask_known, subset_summary
from .distributed import Dist, barrier, init_distributed, parameter_checksum, pick_device
from .errors import TrainError
from .evaluate import metrics_from_probs
from .folders import RunLog, new_run_dir, write_csv
from .labels import HEAD_NAMES, HEADS, TRIMMED_HEAD
from .losses import HybridLoss, mask_head_loss
from .metrics import format_per_class, plot_confusion, plot_history
from .models import DISPLAY, MASK_KEY, build_model, count_parameters, ema_update, normalize, paper_batch_size

log = logging.getLogger(__name__)

PAPER = {"epochs": 40, "lr": 0.003, "momentum": 0.9, "milestones": (10, 20, 30), "gamma": 0.1}


@dataclass
class TrainConfig:
    data: str | list[str]  # one folder or several (train.data.load_dataset)
    split_csv: str
    out: str
    fold: int | None = 0  # the held-out split-index; None: train on every fold, hold nothing out
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
    # beyond the paper (its recipe fine-tunes ImageNet weights; from random initialisation on a few
    # thousand images these matter): optimiser, schedule, label smoothing, weight averaging, blur
    optimizer: str = "sgd"  # sgd (the paper) | adamw
    schedule: str = "step"  # step (x gamma at the milestones, the paper) | cosine (warm-up, then cosine)
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: none); it is validated and exported
    blur: float = 0.3  # share of each batch blurred
    augment_strength: float = 0.5  # scales the affine and photometric ranges (train.augment.batch_augment)
    # zoom-in against the close-up shortcut (polyp images are close-ups, polyp-free ones wide views):
    # zoom_share of each batch zoomed in by a log-uniform factor in [1, zoom], about a point of the
    # polyp in a polyp image (the masks are loaded for it), of the field in the rest; 1: off
    zoom: float = 1.0
    zoom_share: float = 0.5
    # per-channel gains exp(U(-W, W)) on red, green and blue of every image (another scope's white balance); 0: off
    white_balance: float = 0.0
    # gamma exp(U(-E, E)) on every image (another light source or exposure); 0: exp(±0.3 x augment_strength)
    exposure: float = 0.0
    # weight of a training-only polyp-mask head on the trunk's stride-16 features (train.models.MaskHead),
    # learning Kvasir-SEG's masks (and empty ones on images of polyp-free classes): it teaches the trunk
    # where a polyp is, against the polyp <-> normal-cecum confusions; 0: off. Dropped before export.
    mask_loss: float = 0.0
    # batch-norm running-statistics momentum: torchvision's MobileNetV3 uses 0.01, tuned for long
    # ImageNet runs; over a thousand steps its running statistics lag so far behind the weights that the
    # model in eval mode answers one class. None keeps the architecture's own.
    bn_momentum: float | None = 0.1
    recalibrate_bn: bool = True  # after the last epoch: exact batch-norm statistics over the training images
    inset: bool = True  # black out the scope-guide inset (engine.analysis.crop.SCOPE_GUIDE_INSET) in every image
    cache_dir: str | None = None  # decoded images (default: <out>/data-cache)
    threads: int = 0  # torch CPU threads (0: the CPUs, shared among the processes)

    def resolved(self) -> TrainConfig:
        c = dataclasses.replace(self)
        if c.batch_size is None:
            c.batch_size = paper_batch_size(c.arch)
        c.heads = tuple(c.heads)
        c.data = c.data if isinstance(c.data, str) else [str(d) for d in c.data]
        c.milestones = tuple(int(m) for m in c.milestones)
        return c

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["heads"] = list(self.heads)
        d["data"] = self.data if isinstance(self.data, str) else list(self.data)
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
        if self.optimizer not in ("sgd", "adamw"):
            raise TrainError(f"--optimizer must be sgd or adamw, not {self.optimizer!r}")
        if self.schedule not in ("step", "cosine"):
            raise TrainError(f"--schedule must be step or cosine, not {self.schedule!r}")
        if not 0 <= self.label_smoothing < 1:
            raise TrainError(f"--label-smoothing must be in [0, 1), not {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            raise TrainError(f"--ema must be in [0, 1), not {self.ema}")
        if not 0 <= self.augment_strength <= 1:
            raise TrainError(f"--augment-strength must be in [0, 1], not {self.augment_strength}")
        if not 0 <= self.blur <= 1:
            raise TrainError(f"--blur must be in [0, 1], not {self.blur}")
        if not 1 <= self.zoom <= 4:
            raise TrainError(f"--zoom must be in [1, 4] (1: off), not {self.zoom}")
        if not 0 <= self.zoom_share <= 1:
            raise TrainError(f"--zoom-share must be in [0, 1], not {self.zoom_share}")
        if not 0 <= self.white_balance <= 0.7:
            raise TrainError(f"--white-balance must be in [0, 0.7] (0: off), not {self.white_balance}")
        if not 0 <= self.exposure <= 1:
            raise TrainError(f"--exposure must be in [0, 1] (0: the --augment-strength range), not {self.exposure}")
        if self.warmup_epochs < 0:
            raise TrainError(f"--warmup-epochs must be >= 0, not {self.warmup_epochs}")
        if not 0 <= self.mask_loss <= 10:
            raise TrainError(f"--mask-loss must be in [0, 10] (0: off), not {self.mask_loss}")
        if self.mask_loss and self.arch != "mobilenet_v3_large":
            raise TrainError(f"--mask-loss needs --arch mobilenet_v3_large (its mask head reads that trunk), "
                             f"not {self.arch}")

    @property
    def augment_options(self) -> dict[str, float]:
        """``train.augment.batch_augment``'s settings of this recipe (training and the batch-norm recalibration)."""
        return {"blur": self.blur, "strength": self.augment_strength, "zoom": self.zoom, "zoom_share": self.zoom_share,
                "white_balance": self.white_balance, "exposure": self.exposure}

    @property
    def data_roots(self) -> list[str]:
        """``data`` as a list of folders (one folder, or several combined)."""
        return [self.data] if isinstance(self.data, str) else [str(d) for d in self.data]


# --------------------------------------------------------------------------------------------
# training


def _prepare_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    if resume:
        if not (out / LAST).is_file():
            raise TrainError(f"--resume: {out} holds no {LAST}; start a new run without --resume")
        return
    new_run_dir(out, force=force)


def train_classifier(cfg: TrainConfig, *, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Train one model on one fold; returns the summary (also written to summary.json by rank 0)."""
    cfg.validate()
    cfg = cfg.resolved()
    device_kind = "cuda" if (cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())) else "cpu"
    d = init_distributed(device_kind)
    device = pick_device(cfg.device, d)
    amp = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    if amp and device.type != "cuda":
        raise TrainError("--amp on needs a CUDA device (mixed precision is for GPUs here)")
    if cfg.batch_size % d.world:
        raise TrainError(f"--batch-size {cfg.batch_size} (the global batch) must divide by the "
                         f"{d.world} processes")
    out = Path(cfg.out).expanduser()
    if d.main:
        _prepare_run_dir(out, resume=resume, force=force)
    barrier(d)

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

    with RunLog(out / "train.log") if d.main else contextlib.nullcontext():
        return _train(cfg, d, device, amp, out, ckpt)


def _held_out(fold: int | None) -> str:
    return "every fold trains (nothing held out)" if fold is None else f"held-out fold {fold}"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(cfg: TrainConfig, epoch: int, step: int, steps: int) -> float:
    """The learning rate as a multiple of ``cfg.lr`` at ``step`` of 0-based ``epoch``."""
    t = epoch + step / max(steps, 1)
    if cfg.warmup_epochs and t < cfg.warmup_epochs:
        return (t + 1 / max(steps, 1)) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        u = (t - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, u)))
    return cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, arrays: dict[str, np.ndarray], device: torch.device, cfg: TrainConfig,
                   *, passes: int = 2) -> None:
    """Replace every batch-norm layer's running statistics by their exact averages over ``passes``
    passes of the training images, augmented as in training (the weights learned under the
    statistics of augmented batches: averaged over unaugmented images they lowered held-out MCC from
    0.78 to 0.74 here), the weights unchanged. The moving average of the weights and the running
    statistics both lag the last steps; this makes eval mode match the weights."""
    from engine.analysis.crop import SCOPE_GUIDE_INSET

    from .augment import batch_augment

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    images, fields = torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["fields"])
    masks = torch.from_numpy(arrays["masks"]) if "masks" in arrays else None
    g = torch.Generator().manual_seed(cfg.seed * 1000 + 999_999)
    inset = SCOPE_GUIDE_INSET if cfg.inset else None
    n, b = len(images), int(cfg.batch_size)
    for _ in range(passes):
        order = torch.randperm(n, generator=g)
        for i in range(0, n - b + 1, b):
            idx = order[i:i + b]
            xb, _ = batch_augment(images[idx], None if masks is None else masks[idx], fields[idx], g, inset=inset,
                                  **cfg.augment_options)
            model(normalize(xb.to(device)).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.eval()
    log.info("batch-norm statistics recalibrated over %d augmented passes of %d training images", passes, n)


@torch.no_grad()
def predict_arrays(model: torch.nn.Module, images: np.ndarray, device: torch.device, *, amp: bool = False,
                   batch_size: int = 64) -> dict[str, np.ndarray]:
    """``{head: logits}`` (N x classes float32) for uint8 N x H x W x 3 RGB model inputs."""
    model.eval()
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(images), batch_size):
        x = normalize(torch.from_numpy(images[i:i + batch_size]).to(device).permute(0, 3, 1, 2))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(x)
        for k, v in logits.items():
            out.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _train(cfg: TrainConfig, d: Dist, device: torch.device, amp: bool, out: Path,
           ckpt: dict[str, Any] | None) -> dict[str, Any]:
    from engine.analysis.crop import SCOPE_GUIDE_INSET

    from .augment import batch_augment
    from .data import load_arrays

    _seed_everything(cfg.seed)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // d.world))
    data = load_dataset(cfg.data_roots, cfg.split_csv)
    if cfg.fold is None:  # the final model: every image trains, the figures come from cross-validation runs
        train_samples, val_samples = list(data.samples), []
    elif cfg.fold not in data.folds:
        raise TrainError(f"--fold {cfg.fold}: the split file's folds are {data.folds}")
    else:
        train_samples, val_samples = data.not_fold(cfg.fold), data.fold(cfg.fold)
    per_rank = cfg.batch_size // d.world
    if len(train_samples) < cfg.batch_size:
        raise TrainError(f"only {len(train_samples)} training images for a batch of {cfg.batch_size}; "
                         "lower --batch-size")
    if d.main:
        log.info("data %s, split %s, %s\n%s", ", ".join(cfg.data_roots), cfg.split_csv, _held_out(cfg.fold),
                 format_counts(data))
        log.info("train: %s; held out: %s", subset_summary(train_samples), subset_summary(val_samples))

    size = (cfg.image_size, cfg.image_size)
    inset = SCOPE_GUIDE_INSET if cfg.inset else None
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else out / "data-cache"
    t0 = time.perf_counter()
    # the polyp masks only for the zoom (about a point of the polyp) and the mask head; without
    # them the arrays of before
    train_a = load_arrays(train_samples, size, inset=inset, cache_dir=cache, progress=cfg.progress and d.main,
                          masks=cfg.zoom > 1 or cfg.mask_loss > 0)
    val_a = load_arrays(val_samples, size, inset=inset, cache_dir=cache, progress=cfg.progress and d.main) \
        if val_samples else None
    if d.main:
        log.info("decoded %d + %d images at %dx%d in %.1f s (scope-guide inset %s)", len(train_samples),
                 len(val_samples), *size, time.perf_counter() - t0, "blacked out" if inset else "kept")

    heads = {h: len(HEADS[h]) for h in cfg.heads}
    model, weights_source = build_model(cfg.arch, heads, weights=cfg.weights if ckpt is None else "none",
                                        announce=ckpt is None)
    if cfg.mask_loss:
        model.add_mask_head()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        weights_source = ckpt["weights_source"]
    model.to(device)
    if cfg.bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = cfg.bn_momentum
    # channels-last: faster depthwise convolutions on CUDA and on the CPU alike (2.7x forward here)
    model = model.to(memory_format=torch.channels_last)
    ema = None
    if cfg.ema:
        ema = copy.deepcopy(model)
        for p in ema.parameters():
            p.requires_grad_(False)
        if ckpt is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
    net: torch.nn.Module = model
    if d.active:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = HybridLoss(cfg.heads, label_smoothing=cfg.label_smoothing).to(device)
    if cfg.optimizer == "adamw":
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history: list[dict[str, Any]] = []
    start = 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        history = list(ckpt["history"])
        start = int(ckpt["epoch"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        log.info("resuming %s after epoch %d", out, start)

    n = len(train_samples)
    full_steps = n // cfg.batch_size
    steps = full_steps if cfg.steps_per_epoch is None else min(cfg.steps_per_epoch, full_steps)
    images_t = torch.from_numpy(train_a["images"])
    fields_t = torch.from_numpy(train_a["fields"])
    masks_t = torch.from_numpy(train_a["masks"]) if "masks" in train_a else None
    labels_t = torch.from_numpy(train_a["labels"])
    # where an image's mask is known: Kvasir-SEG's, or empty in a class that holds no polyp
    mask_known_t = torch.tensor([mask_known(s) for s in train_samples], dtype=torch.float32)
    if d.main:
        (out / "config.json").write_text(json.dumps({
            **cfg.to_dict(), "resolved": {
                "device": str(device), "amp": amp, "world_size": d.world, "batch_per_process": per_rank,
                "steps_per_epoch": steps, "weights_source": weights_source, "inset": list(inset) if inset else None,
                "torch": torch.__version__, "train_images": len(train_samples),
                "heldout_images": len(val_samples)}}, indent=2) + "\n", encoding="utf-8")
        log.info("%s, heads %s, %d parameters, weights: %s, device %s%s, batch %d (%d x %d processes), "
                 "%d steps/epoch, %s lr %g (%s), label smoothing %g, EMA %g", cfg.arch, ",".join(cfg.heads),
                 count_parameters(model), weights_source, device, " AMP" if amp else "", cfg.batch_size, per_rank,
                 d.world, steps, cfg.optimizer, cfg.lr, cfg.schedule, cfg.label_smoothing, cfg.ema)

    metrics: dict[str, Any] = {}
    ema_state = list(ema.state_dict().values()) if ema is not None else []
    model_state = list(model.state_dict().values())
    for epoch in range(start + 1, cfg.epochs + 1):
        # shuffling and augmentation depend on (seed, epoch) only: the same after a resume, and the
        # same global order on every rank (each takes its share of each global batch)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(n, generator=g)
        net.train()
        loss_fn.train()
        sums = torch.zeros(len(cfg.heads) + 2, dtype=torch.float64)  # total, each head, the mask head
        seen = 0
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                   disable=not (cfg.progress and d.main), dynamic_ncols=True)
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg, epoch - 1, step, steps)
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size][d.rank * per_rank:(d.rank + 1) * per_rank]
            xb, mb = batch_augment(images_t[idx], None if masks_t is None else masks_t[idx], fields_t[idx], g,
                                   inset=inset, **cfg.augment_options)
            x = normalize(xb.to(device, non_blocking=True))
            y = labels_t[idx].to(device, non_blocking=True)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                outputs = net(x)
            mask_logits = outputs.pop(MASK_KEY, None)
            total, per = loss_fn(outputs, y)
            mask_term = torch.zeros(())
            if mask_logits is not None:
                mask_term = mask_head_loss(mask_logits, mb.to(device), mask_known_t[idx].to(device))
                total = total + cfg.mask_loss * mask_term
            if not torch.isfinite(total):
                raise TrainError(f"the loss became {float(total)} at epoch {epoch} step {step}; "
                                 "lower --lr")
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema_update(ema_state, model_state, cfg.ema, (epoch - 1) * steps + step)
            nb = len(y)
            sums += torch.tensor([float(total.detach())] + [float(per[h].detach()) for h in cfg.heads]
                                 + [float(mask_term.detach())], dtype=torch.float64) * nb
            seen += nb
            bar.update(1)
            bar.set_postfix(loss=f"{float(total.detach()):.3f}", lr=f"{opt.param_groups[0]['lr']:.2g}")
        bar.close()
        train_time = time.perf_counter() - t0
        lr = opt.param_groups[0]["lr"]
        if d.active:
            packed = torch.cat([sums, torch.tensor([float(seen)], dtype=torch.float64)])
            dist.all_reduce(packed)
            sums, seen = packed[:-1], int(packed[-1])
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": float(sums[0]) / max(seen, 1)}
        for i, h in enumerate(cfg.heads):
            row[f"train_loss_{h}"] = float(sums[i + 1]) / max(seen, 1)
        if cfg.mask_loss:
            row["train_loss_mask"] = float(sums[-1]) / max(seen, 1)
        row["train_images"] = seen
        row["train_s"] = train_time
        row["step_s"] = train_time / max(steps, 1)
        row["images_per_s"] = seen / train_time if train_time > 0 else math.nan

        judged = ema if ema is not None else model
        if epoch == cfg.epochs and cfg.recalibrate_bn:
            recalibrate_bn(judged, train_a, device, cfg)
        if d.main:
            if val_a is not None:
                logits = predict_arrays(judged, val_a["images"], device, amp=amp)
                targets = val_a["labels"]
                probs = torch.softmax(torch.from_numpy(logits[TRIMMED_HEAD]), 1).numpy()
                metrics = metrics_from_probs(probs, targets)
                loss_fn.eval()
                _, vper = loss_fn({k: torch.from_numpy(v) for k, v in logits.items()}, torch.from_numpy(targets))
                row["val_loss"] = float(sum(float(v) for v in vper.values()))
                row.update({f"val_loss_{h}": float(v) for h, v in vper.items()})
                for k in ("macro_precision", "macro_recall", "macro_f1", "micro_f1", "mcc"):
                    row[f"val_{k}"] = metrics[k]
            history.append(row)
            write_csv(out / "log.csv", history)
            plot_history(history, out / "plots" / "history.png",
                         title=f"{DISPLAY[cfg.arch]} heads={','.join(cfg.heads)} {_held_out(cfg.fold)}")
            save_checkpoint(out / LAST, {
                "arch": cfg.arch, "heads": {h: list(HEADS[h]) for h in cfg.heads},
                "image_size": cfg.image_size, "inset": list(inset) if inset else None, "epoch": epoch,
                "model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(), "config": cfg.to_dict(), "history": history,
                "weights_source": weights_source, "metrics": _json_safe(metrics, drop=("per_class",)),
                "rng": {"torch": torch.get_rng_state()},
            })
            log.info("epoch %d/%d: loss %.4f (%s), %.1f images/s%s", epoch, cfg.epochs, row["train_loss"],
                     ", ".join(f"{h} {row[f'train_loss_{h}']:.3f}" for h in [*cfg.heads, "mask"]
                               if f"train_loss_{h}" in row), row["images_per_s"],
                     f", held-out macro F1 {row['val_macro_f1']:.3f} MCC {row['val_mcc']:.3f}"
                     if "val_macro_f1" in row else "")
        barrier(d)

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
