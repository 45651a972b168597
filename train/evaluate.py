"""Evaluation of a run folder (torch) or a model bundle (through engine/'s backends).

Both read the images exactly as the viewer does (``engine.analysis.crop.model_input``); a bundle
is run by the same backend the viewer uses, so its figures are the deployed model's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .augment import ImageDataset, worker_init
from .data import Sample
from .errors import TrainError
from .labels import RAW_CLASSES, TRIMMED_HEAD
from .losses import HybridLoss
from .metrics import classification_metrics, confusion_matrix
from .models import normalize

log = logging.getLogger(__name__)


def make_loader(samples: Sequence[Sample], size: tuple[int, int], batch_size: int, workers: int,
                *, augment: bool = False, sampler=None, shuffle: bool = False, drop_last: bool = False,
                seed: int = 0, pin_memory: bool = False,
                inset: tuple[float, float, float, float] | None = None) -> torch.utils.data.DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        ImageDataset(samples, size, augment=augment, inset=inset), batch_size=batch_size, sampler=sampler,
        shuffle=shuffle if sampler is None else False, num_workers=workers, drop_last=drop_last,
        worker_init_fn=worker_init, generator=g, pin_memory=pin_memory,
        persistent_workers=False,
    )


@torch.no_grad()
def predict_torch(model: torch.nn.Module, loader, device: torch.device, *, amp: bool = False,
                  loss_fn: HybridLoss | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Raw-head probabilities (N x 23), targets (N,), and mean loss per head when ``loss_fn``."""
    model.eval()
    probs, targets = [], []
    loss_sums: dict[str, float] = {}
    n = 0
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            out = model(normalize(x))
        if loss_fn is not None:
            _, per = loss_fn(out, y)
            for k, v in per.items():
                loss_sums[k] = loss_sums.get(k, 0.0) + float(v) * len(y)
        probs.append(torch.softmax(out[TRIMMED_HEAD].float(), dim=1).cpu().numpy())
        targets.append(y.cpu().numpy())
        n += len(y)
    if not n:
        raise TrainError("nothing to evaluate: the evaluation set is empty")
    return np.concatenate(probs), np.concatenate(targets), {k: v / n for k, v in loss_sums.items()}


def metrics_from_probs(probs: np.ndarray, targets: np.ndarray, labels: Sequence[str] = RAW_CLASSES) -> dict:
    cm = confusion_matrix(targets, probs.argmax(axis=1), len(labels))
    return classification_metrics(cm, labels)


def evaluate_run(run_dir: Path, samples: Sequence[Sample], *, batch_size: int = 32, workers: int = 0,
                 device: str = "cpu") -> tuple[dict, dict]:
    """Metrics of a run folder's last checkpoint (raw head) on ``samples``; returns (metrics, info)."""
    from .checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(run_dir)
    model = model_from_checkpoint(ckpt)
    dev = torch.device(device)
    model.to(dev)
    size = (ckpt["image_size"], ckpt["image_size"])
    inset = tuple(ckpt["inset"]) if ckpt.get("inset") else None
    loader = make_loader(samples, size, batch_size, workers, inset=inset)
    probs, targets, _ = predict_torch(model, loader, dev)
    info = {"model": f"run {run_dir} (epoch {ckpt['epoch']}, {ckpt['arch']}, heads {','.join(ckpt['heads'])})",
            "arch": ckpt["arch"], "heads": list(ckpt["heads"])}
    return metrics_from_probs(probs, targets), info


def evaluate_bundle(bundle_dir: Path, samples: Sequence[Sample], *, batch_size: int = 32, workers: int = 0,
                    backend: str = "onnxruntime") -> tuple[dict, dict]:
    """Metrics of a classify bundle on ``samples``, run by engine/'s ``backend``."""
    from engine.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    if bundle.task != "classify":
        raise TrainError(f"{bundle_dir} is a {bundle.task} bundle; eval takes a classify bundle")
    unknown = sorted({s.label for s in samples} - set(bundle.labels))
    if unknown:
        raise TrainError(f"bundle {bundle.name} has no label for {', '.join(unknown)}")
    p, t, desc = bundle_probabilities(bundle, samples, batch_size=batch_size, workers=workers, backend=backend)
    labels = list(bundle.labels)
    # targets are RAW_CLASSES indices; the bundle's own label order may differ
    t_b = np.array([labels.index(RAW_CLASSES[i]) for i in t])
    info = {"model": f"bundle {bundle.name} ({desc})", "bundle": str(bundle.path)}
    return metrics_from_probs(p, t_b, labels), info


def bundle_probabilities(bundle, samples: Sequence[Sample], *, batch_size: int = 32, workers: int = 0,
                         backend: str = "onnxruntime") -> tuple[np.ndarray, np.ndarray, str]:
    """(probabilities N x labels, RAW_CLASSES targets N, backend description) of a loaded classify
    bundle on ``samples``, each image as the viewer feeds it (its inset included)."""
    from engine.backends import open_backend

    loader = make_loader(samples, bundle.input_size, batch_size, workers, inset=bundle.inset)
    out_name = bundle.outputs["probabilities"]
    probs, targets = [], []
    with open_backend(bundle, backend) as be:
        for x, y in loader:
            nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
            probs.append(np.asarray(be.run({bundle.input_name: nhwc})[out_name], np.float32))
            targets.append(y.numpy())
        desc = be.description
    return np.concatenate(probs), np.concatenate(targets), desc


def is_bundle(path: Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def write_report(metrics: dict, info: dict, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**info, **metrics}, indent=2) + "\n", encoding="utf-8")
    return out
