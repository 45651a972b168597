"""``endoview export-seg RUN_DIR -o BUNDLE_DIR``: the real-time segmenter as a segment bundle.

The bundle holds ``model.onnx`` (uint8 RGB NHWC in, preprocessing as graph ops, ``mask`` out:
N x 1 x H x W polyp probabilities at the model's size, dynamic batch) and, unless
``--no-torchscript``, ``model.torchscript.pt`` (the same module for the torch backend). The
exported weights are the run's EMA weights of its best epoch (``--checkpoint last``: the last).
The export checks itself (``onnx.checker``; ONNX Runtime and TorchScript against PyTorch on random
images and real held-out images, max probability difference <= 1e-4) and measures ONNX Runtime's
CPU latency at batch 1; all of it, with the run's validation Dice, goes into the manifest.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.analysis.crop import SCOPE_GUIDE_INSET
from engine.bundle import Bundle, write_bundle

from ..checkpoint import BEST, LAST, SEGMENT, load_checkpoint
from ..data import load_negatives
from ..errors import TrainError
from ..folders import check_bundle_target
from ..models import count_parameters
from ..onnx_check import export_checked, median_ms, parity_line, torch_run
from .data import load_arrays, load_kvasir_seg, load_pair
from .models import SegWithPreprocessing
from .trainer import model_from_checkpoint

if TYPE_CHECKING:
    from .cascade_export import CascadeExportReport

log = logging.getLogger(__name__)

OUTPUT = "mask"


@dataclass
class SegExportReport:
    bundle: Bundle
    parity: dict[str, Any]
    latency_ms: dict[str, Any]
    parameters: int

    def lines(self) -> list[str]:
        p, lt = self.parity, self.latency_ms
        return [
            f"wrote {self.bundle.path} ({self.bundle.name}, {self.parameters:,} parameters)",
            parity_line(p),
            f"CPU latency, batch 1, median of {lt['runs']} ({lt['threads']} threads): onnxruntime "
            f"{lt['onnxruntime']:.2f} ms ({1000 / lt['onnxruntime']:.0f} FPS), torch {lt['torch']:.2f} ms",
        ]


def _fit_presence(model: torch.nn.Module, ckpt: dict[str, Any], size: tuple[int, int]) -> dict[str, Any] | None:
    """The image-level rule (train/seg/presence.py) on the run's training fold; None without negatives."""
    from engine.analysis.segmenter import DEFAULT_THRESHOLD

    from . import presence
    from .trainer import _split, _split_file_beside, predict

    cfg = ckpt["config"]
    if not cfg.get("negatives"):
        return None
    inset = tuple(ckpt["inset"]) if ckpt.get("inset") else None
    samples = load_kvasir_seg(cfg["data"], split_csv=cfg.get("split_csv"), mapping_csv=cfg.get("mapping_csv"))
    negatives = load_negatives(cfg["negatives"], cfg.get("split_csv") or _split_file_beside(cfg["data"]))
    train = _split(samples, cfg["fold"], cfg.get("limit", 0))[0] + _split(negatives, cfg["fold"], cfg.get("limit", 0))[0]
    cache = Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else Path(ckpt["path"]).parent / "data-cache"
    arrays = load_arrays(train, size, cache_dir=cache, inset=inset)
    s = presence.scores(predict(model, arrays["images"]), DEFAULT_THRESHOLD)
    fitted = presence.fit(s, np.array([not t.negative for t in train]))
    log.info("presence rule fitted on the training fold (%d images): peak >= %.2f and area >= %.3f "
             "(sensitivity %.3f, specificity %.3f there)", len(train), fitted["min_peak"], fitted["min_area"],
             fitted["sensitivity"], fitted["specificity"])
    where = "every fold (nothing held out)" if cfg["fold"] is None else f"training fold (all but split-index {cfg['fold']})"
    return {**fitted, "fitted_on": f"{where}: {len(train)} images"}


def _real_inputs(cfg: dict[str, Any], size: tuple[int, int], limit: int) -> tuple[np.ndarray, str]:
    try:
        samples = [s for s in load_kvasir_seg(cfg["data"], split_csv=cfg.get("split_csv"),
                                              mapping_csv=cfg.get("mapping_csv")) if cfg["fold"] in (None, s.fold)]
    except TrainError as err:
        log.warning("no real images for the parity check (%s)", err)
        return np.zeros((0, *size, 3), np.uint8), "none"
    step = max(1, len(samples) // max(1, limit))
    inset = SCOPE_GUIDE_INSET if cfg.get("inset") else None
    batch = [load_pair(s, size, inset)[0] for s in samples[::step][:limit]]
    where = "training images (every fold; the run held none out)" if cfg["fold"] is None else f"held-out fold {cfg['fold']}"
    return (np.stack(batch) if batch else np.zeros((0, *size, 3), np.uint8)), f"{where} of {cfg['data']}"


def export_segmenter(run_dir: str | Path, out: str | Path, *, name: str | None = None, checkpoint: str = "best",
                     real_limit: int = 8, random_images: int = 4, torchscript: bool = True,
                     latency_runs: int = 50, threads: int | None = None,
                     force: bool = False) -> SegExportReport | CascadeExportReport:
    from .cascade_train import is_cascade_run

    if is_cascade_run(run_dir):
        # Cascade Mask R-CNN: an "instances" bundle of MMDetection files (train/seg/cascade_export.py);
        # it has one checkpoint (the last), no ONNX/TorchScript, and times its one self-check inference
        from .cascade_export import export_cascade

        return export_cascade(run_dir, out, name=name, threads=threads, force=force)
    check_bundle_target(out, force=force)
    if checkpoint not in ("best", "last"):
        raise TrainError(f"--checkpoint must be best or last, not {checkpoint!r}")
    run = Path(run_dir).expanduser()
    ckpt = load_checkpoint(run, SEGMENT, BEST if checkpoint == "best" and (run / BEST).is_file() else LAST)
    if threads:
        torch.set_num_threads(threads)
    cfg = ckpt["config"]
    model = model_from_checkpoint(ckpt)
    wrapped = SegWithPreprocessing(model).eval()
    s = int(cfg["image_size"])
    size = (s, s)
    rand = np.random.default_rng(0).integers(0, 256, (random_images, s, s, 3), dtype=np.uint8)
    real, real_source = _real_inputs(cfg, size, real_limit)

    with tempfile.TemporaryDirectory() as tmp:
        checked = export_checked(wrapped, Path(tmp), output=OUTPUT, random=rand, real=real,
                                 real_source=real_source, torchscript=torchscript, threads=threads)
        parity = checked.parity
        one = rand[:1]
        latency = {"runs": latency_runs, "threads": checked.threads, "batch": 1, "image_size": s,
                   "onnxruntime": median_ms(lambda: checked.ort_run(one), latency_runs),
                   "torch": median_ms(lambda: torch_run(wrapped, one), max(3, latency_runs // 5))}
        history = ckpt.get("history") or []
        best_row = max(history, key=lambda r: r.get("val_dice", -1), default={})
        epoch_row = next((r for r in history if r["epoch"] == ckpt["epoch"]), {})
        n_params = count_parameters(model)
        rule = _fit_presence(model, ckpt, size)
        inset = tuple(ckpt["inset"]) if ckpt.get("inset") else None
        bundle = write_bundle(
            out, name=name or f"polyp-{cfg['arch']}{cfg.get('width', '') if cfg['arch'] == 'unet' else ''}-"
                              f"{s}-kvasir-seg-{'allfolds' if cfg['fold'] is None else 'heldout' + str(cfg['fold'])}",
            task="segment", labels=["polyp"], input_size=size, files=checked.files, formats=checked.formats,
            outputs={"mask": OUTPUT}, trained=True, inset=inset,
            extra={"presence": {"min_peak": rule["min_peak"], "min_area": rule["min_area"]}} if rule else None,
            training={
                "arch": cfg["arch"], "width": cfg.get("width"), "role": "fast",
                "data": "Kvasir-SEG" + (" + polyp-free HyperKvasir images as empty masks" if cfg.get("negatives") else ""),
                "data_dir": cfg["data"], "negatives": cfg.get("negatives"), "split": "HyperKvasir official 2-fold (via kvasirseg_to_hyperkvasir_uuid_by_bbox.csv)",
                "heldout_fold": cfg["fold"],
                "trained_on_folds": "every fold" if cfg["fold"] is None else "all but " + str(cfg["fold"]),
                "epochs": ckpt["epoch"], "epochs_planned": cfg["epochs"], "weights": "random initialisation",
                "weights_exported": f"EMA (decay {cfg['ema']}) of epoch {ckpt['epoch']} ({checkpoint})",
                "optimizer": {k: cfg[k] for k in ("lr", "weight_decay", "batch_size", "warmup_epochs")},
                "loss": "BCE + soft Dice", "seed": cfg["seed"], "content_area_masking": True,
                "train_seconds": round(sum(r.get("train_s", 0) + r.get("val_s", 0) for r in history), 1),
                "run": str(run.resolve()),
            },
            metrics={
                "heldout_model_size": None if cfg["fold"] is None else {
                    "fold": cfg["fold"], "dice": epoch_row.get("val_dice"), "iou": epoch_row.get("val_iou"),
                    "epoch": ckpt["epoch"], "note": "per image at the model's size, threshold 0.5, averaged"},
                "best_heldout_dice": best_row.get("val_dice"),
                **({"presence_fit": rule} if rule else {}),
                "parity": parity, "cpu_latency_ms": latency, "parameters": n_params,
            },
            notes="Real-time polyp segmenter trained from RANDOM INITIALISATION on Kvasir-SEG. "
                  "Research use only, not a diagnostic device.",
            force=force,
        )
    return SegExportReport(bundle, parity, latency, n_params)
