"""``endoview export RUN_DIR -o BUNDLE_DIR``: trim to the raw head and write an engine bundle.

The bundle (``engine.bundle`` format) holds ``model.onnx`` (uint8 RGB NHWC in, preprocessing as
graph ops, softmax probabilities of the raw head out, dynamic batch) and ``model.torchscript.pt``
(the same module, for the torch backend). The export checks itself: ``onnx.checker``, then ONNX
Runtime against PyTorch on random images and on real images from the run's held-out fold (or
``--images``): the largest probability difference must be at most 1e-4 and is written into the
manifest. Parameter count and CPU latency of the trimmed model are measured next to the untrimmed
(all heads) one and printed.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.bundle import Bundle, write_bundle

from .checkpoint import load_checkpoint, model_from_checkpoint
from .data import IMAGE_SUFFIXES, load_dataset, load_model_input
from .errors import TrainError
from .folders import check_bundle_target
from .labels import HEADS, TRIMMED_HEAD
from .models import DISPLAY, WithPreprocessing, count_parameters
from .onnx_check import export_checked, median_ms, parity_line, torch_run

log = logging.getLogger(__name__)

ROLES = {"mobilenet_v3_large": "fast", "resnet152": "second-pass"}


@dataclass
class ExportReport:
    bundle: Bundle
    parity: dict[str, Any]
    size: dict[str, Any]
    latency_ms: dict[str, Any]

    def lines(self) -> list[str]:
        p, s, lt = self.parity, self.size, self.latency_ms
        return [
            f"wrote {self.bundle.path} ({self.bundle.name})",
            parity_line(p),
            f"parameters: untrimmed {s['parameters_untrimmed']:,} ({s['mb_untrimmed']:.2f} MB, heads "
            f"{', '.join(s['heads_untrimmed'])}) -> trimmed {s['parameters_trimmed']:,} ({s['mb_trimmed']:.2f} MB, head raw)",
            f"CPU latency, batch 1, median of {lt['runs']} ({lt['threads']} threads): torch untrimmed "
            f"{lt['torch_untrimmed']:.2f} ms, torch trimmed {lt['torch_trimmed']:.2f} ms, "
            f"onnxruntime trimmed {lt['onnxruntime_trimmed']:.2f} ms",
        ]


def _real_images(ckpt: dict[str, Any], images: Sequence[Path] | None, size: tuple[int, int],
                 limit: int) -> tuple[np.ndarray, str]:
    """Up to ``limit`` real model inputs (N x H x W x 3 uint8): ``images``, else the run's held-out fold."""
    paths: list[Path] = []
    source = "none"
    if images:
        for p in images:
            p = Path(p).expanduser()
            if p.is_dir():
                paths += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
            elif p.is_file():
                paths.append(p)
            else:
                raise TrainError(f"--images: {p} does not exist")
        if not paths:
            raise TrainError(f"--images: no images in {', '.join(map(str, images))}")
        source = "--images"
    else:
        cfg = ckpt["config"]
        try:
            ds = load_dataset(cfg["data"], cfg["split_csv"])
            held = (ds.fold(cfg["fold"]) if cfg["fold"] is not None else []) or list(ds.samples)
            step = max(1, len(held) // limit)
            paths = [s.path for s in held[::step]]
            source = (f"held-out fold {cfg['fold']} of {cfg['data']}" if cfg["fold"] is not None
                      else f"training images (every fold; the run held none out) of {cfg['data']}")
        except TrainError as err:
            log.warning("no real images for the parity check (%s); pass --images DIR", err)
    inset = tuple(ckpt["inset"]) if ckpt.get("inset") else None
    batch = [load_model_input(p, size, inset=inset) for p in paths[:limit]]
    if not batch:
        return np.zeros((0, *size, 3), np.uint8), source
    return np.stack(batch), source


def export_run(run_dir: str | Path, out: str | Path, *, name: str | None = None, role: str | None = None,
               images: Sequence[Path] | None = None, real_limit: int = 8, random_images: int = 8,
               torchscript: bool = True, latency_runs: int = 10, threads: int | None = None,
               force: bool = False) -> ExportReport:
    check_bundle_target(out, force=force)
    ckpt = load_checkpoint(run_dir)
    if TRIMMED_HEAD not in ckpt["heads"]:
        raise TrainError(f"{run_dir} has no {TRIMMED_HEAD!r} head to keep")
    if threads:
        torch.set_num_threads(threads)
    full = model_from_checkpoint(ckpt)
    trimmed = full.trimmed(TRIMMED_HEAD).eval()
    wrapped = WithPreprocessing(trimmed, head=TRIMMED_HEAD).eval()
    wrapped_full = WithPreprocessing(full, head=TRIMMED_HEAD).eval()
    s = int(ckpt["image_size"])
    size = (s, s)
    labels = list(HEADS[TRIMMED_HEAD])
    out_name = f"{TRIMMED_HEAD}_probs"
    rng = np.random.default_rng(0)
    rand = rng.integers(0, 256, (random_images, s, s, 3), dtype=np.uint8)
    real, real_source = _real_images(ckpt, images, size, real_limit)

    with tempfile.TemporaryDirectory() as tmp:
        checked = export_checked(wrapped, Path(tmp), output=out_name, random=rand, real=real,
                                 real_source=real_source, torchscript=torchscript, threads=threads)
        onnx_path, parity = checked.onnx_path, checked.parity
        one = rand[:1]
        latency = {
            "runs": latency_runs, "threads": torch.get_num_threads(), "batch": 1, "image_size": s,
            "torch_untrimmed": median_ms(lambda: torch_run(wrapped_full, one), latency_runs),
            "torch_trimmed": median_ms(lambda: torch_run(wrapped, one), latency_runs),
            "onnxruntime_trimmed": median_ms(lambda: checked.ort_run(one), latency_runs),
        }
        n_full, n_trim = count_parameters(full), count_parameters(trimmed)
        sizes = {
            "parameters_untrimmed": n_full, "parameters_trimmed": n_trim,
            "mb_untrimmed": n_full * 4 / 2**20, "mb_trimmed": n_trim * 4 / 2**20,
            "heads_untrimmed": list(ckpt["heads"]), "onnx_bytes": onnx_path.stat().st_size,
        }
        cfg = ckpt["config"]
        arch = ckpt["arch"]
        heads_name = "hybrid" if len(ckpt["heads"]) > 1 else "raw-only"
        fold = "allfolds" if cfg["fold"] is None else f"fold{cfg['fold']}"
        bundle_name = name or f"{arch.replace('_', '-')}-hyperkvasir-{heads_name}-{fold}"
        heldout = {k: v for k, v in (ckpt.get("metrics") or {}).items()
                   if k not in ("confusion_matrix", "labels", "per_class")}
        bundle = write_bundle(
            out, name=bundle_name, task="classify", labels=labels, input_size=size, files=checked.files,
            formats=checked.formats, outputs={"probabilities": out_name}, trained=True,
            inset=tuple(ckpt["inset"]) if ckpt.get("inset") else None,
            training={
                "arch": arch, "display": f"{DISPLAY[arch]} {'w. raw' if len(ckpt['heads']) > 1 else 'raw'}",
                "role": role or ROLES.get(arch, "fast"),
                "heads_trained": list(ckpt["heads"]), "head_exported": TRIMMED_HEAD,
                "loss": "hybrid: sum of cross-entropies over " + ", ".join(ckpt["heads"]),
                "data": "HyperKvasir labeled images", "data_dir": cfg["data"], "split_csv": cfg["split_csv"],
                "heldout_fold": cfg["fold"], "epochs": ckpt["epoch"], "weights": ckpt["weights_source"],
                "optimizer": {k: cfg[k] for k in ("lr", "momentum", "weight_decay", "milestones", "gamma",
                                                  "batch_size")},
                "content_area_masking": True, "run": str(Path(run_dir).expanduser().resolve()),
            },
            metrics={
                "heldout": heldout,
                "onnxruntime_vs_torch_max_abs_diff": parity["max_abs_diff"],
                "parity": parity, "size": sizes, "cpu_latency_ms": latency,
            },
            notes="Trimmed to the raw head after training with the hybrid loss (He et al., EndoTect 2020). "
                  "Research use only, not a diagnostic device."
                  + (" Trained from RANDOM INITIALISATION." if ckpt["weights_source"] == "random initialisation" else ""),
            force=force,
        )
    return ExportReport(bundle, parity, sizes, latency)
