"""``endoview train segment --arch cascade``: the paper's Cascade Mask R-CNN, trained by MMDetection 3.3.

The model and training recipe are MMDetection's own: the config is the bundled
``cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py`` (read with mmengine's ``Config.fromfile``
from the installed package) with the paper's settings put over it by :func:`build_config`:

* one class, "polyp", in the three cascade box heads and the mask head;
* images resized to fit 1024 x 1024 (aspect ratio kept), batch 2 per GPU, 20 epochs;
* SGD lr 0.004, momentum 0.9, weight decay 1e-4, linear warm-up over the first 500 iterations,
  then x0.1 after epochs 10 and 18;
* augmentation: horizontal and vertical flips, an affine (rotation, scale, shear, shift; masks
  warped with the image), JPEG compression at quality 60-95, colour shift (brightness, contrast,
  saturation, hue), cutout; no blur (it hurt in the paper). ``RandomJPEG`` and
  ``RandomAffineMasks`` are ours (:mod:`train.seg.cascade_transforms`); mmdet has no JPEG
  transform and its ``RandomAffine`` refuses masks;
* test: RPN NMS IoU 0.7, score threshold 0.5, NMS IoU 0.3, mask threshold 0.45.

Data are COCO instance files per official fold (``endoview data kvasir-coco``); ``--data`` may
also be the kvasir-seg folder, converted into ``RUN_DIR/coco`` once. ``--fold K`` holds out fold K
(validated every epoch with CocoMetric, bbox and segm mAP) and trains on the other fold(s).

``--weights FILE`` starts from a local COCO-pretrained checkpoint (``load_from``: the one-class
heads do not match COCO's 80 classes, and mmengine logs and skips those tensors); without it the
whole model is randomly initialised (``backbone.init_cfg=None``: nothing is downloaded).

Run folder: ``config.py`` (the resolved MMDetection config), ``run.json`` (arch, fold, data,
weights "coco:<sha256>" or "random", seed, epochs, times, iterations, the last validation mAP),
mmengine's ``epoch_N.pth`` checkpoints (the newest two) with ``last_checkpoint``, and one
``<timestamp>/`` folder of mmengine logs per session. ``--resume`` continues from the last
checkpoint (optimizer, schedule and message hub included). ``--gpus N`` (N > 1) runs
MMDetection's distributed launcher: ``python -m torch.distributed.run --nproc_per_node N -m
train.seg.cascade RUN_DIR --launcher pytorch``. ``--shrink`` is for tests and CPUs: 128-px images
(unless ``--image-size``), far fewer proposals and samples, logging every iteration.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.bundle import sha256_file

from ..errors import DataError, TrainError
from ..options import apply_flags, read_config_file
from .config import check_fixed_on_resume

log = logging.getLogger(__name__)

ARCH = "cascade"
BASE_CONFIG = "cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py"
CONFIG_PY = "config.py"
RUN_JSON = "run.json"
CLASSES = ("polyp",)
PALETTE = [(220, 20, 60)]
#: The paper's test-time thresholds.
RPN_NMS_IOU, SCORE_THR, NMS_IOU, MASK_THR = 0.7, 0.5, 0.3, 0.45
#: Linear warm-up: from lr x WARMUP_FACTOR over the first WARMUP_ITERS iterations (MMDetection's usual).
WARMUP_ITERS, WARMUP_FACTOR = 500, 0.001
JPEG_QUALITY, JPEG_PROB = (60, 95), 0.5
#: Settings that must not change when a run is resumed.
FIXED_ON_RESUME = ("fold", "data", "image_size", "seed", "limit", "shrink", "weights")
#: ``train segment`` flags of the real-time segmenters that mean nothing here.
UNET_ONLY = ("width", "warmup_epochs", "ema", "steps_per_epoch", "cache_dir", "stop_after")
#: --shrink: what changes besides the image size (proposals and RoI samples per image).
SHRINK = {"image_size": 128, "rpn_pre": 200, "rpn_max": 50, "rcnn_samples": 32, "test_rpn": 50,
          "test_max": 20, "warmup_iters": 10}


@dataclass
class CascadeConfig:
    data: str
    out: str
    fold: int = 1
    image_size: int = 1024
    epochs: int = 20
    batch_size: int = 2
    lr: float = 0.004
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (10, 18)
    weights: str | None = None
    seed: int = 0
    gpus: int = 1
    workers: int = 2
    threads: int = 0  # 0: torch's default
    limit: int = 0  # the first N images of each fold (0: all)
    shrink: bool = False
    split_csv: str | None = None
    mapping_csv: str | None = None

    def validate(self) -> None:
        for name in ("image_size", "batch_size", "gpus"):
            if getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("epochs", "limit", "workers", "threads"):
            if getattr(self, name) < 0:
                raise TrainError(f"--{name.replace('_', '-')} must not be negative")
        if self.image_size % 32:
            raise TrainError(f"--image-size {self.image_size} must be a multiple of 32 (the FPN's coarsest stride)")
        if not self.lr > 0:
            raise TrainError("--lr must be positive")
        if self.fold < 0:
            raise TrainError("--fold must be a fold index (0 or 1 for Kvasir-SEG)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CascadeConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TrainError(f"unknown cascade settings: {', '.join(unknown)}")
        v = dict(values)
        if "milestones" in v:
            v["milestones"] = tuple(int(m) for m in v["milestones"])
        return cls(**v)


# --------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class CocoSplit:
    """Where the images and the per-fold annotation files of one run are."""

    images: Path
    train: tuple[Path, ...]
    val: Path


def _fold_files(root: Path) -> dict[int, Path]:
    out = {}
    for p in sorted((root / "annotations").glob("fold*.json")):
        stem = p.stem[4:]
        if stem.isdigit():
            out[int(stem)] = p
    return out


def read_coco(path: Path, images: Path) -> dict[str, Any]:
    """A COCO instances file whose images are all in ``images``; DataError otherwise."""
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not a readable COCO file ({err}); write it again with 'endoview data "
                        "kvasir-coco'") from err
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations")):
        raise DataError(f"{path} is not a COCO instances file (it needs 'images' and 'annotations' lists)")
    missing = [im.get("file_name") for im in coco["images"] if not (images / str(im.get("file_name"))).is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) named in {path} are not in {images} (first: {missing[0]})")
    return coco


def _subset(coco: dict[str, Any], dst: Path, limit: int) -> Path:
    coco = dict(coco)
    images = coco["images"][:limit]
    ids = {im["id"] for im in images}
    coco.update(images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(coco), encoding="utf-8")
    return dst


def resolve_data(cc: CascadeConfig, run: Path) -> CocoSplit:
    """The COCO files of ``cc.data`` (a COCO folder, or kvasir-seg converted into RUN/coco once)."""
    data = Path(cc.data).expanduser()
    if not data.is_dir():
        raise DataError(f"--data {data} is not a folder; give the COCO folder written by 'endoview data "
                        "kvasir-coco' (images/, annotations/fold<K>.json) or the kvasir-seg folder")
    root = data
    if not _fold_files(data):
        if not ((data / "masks").is_dir() or (data / "kvasir-seg" / "masks").is_dir()):
            raise DataError(f"--data {data} holds neither annotations/fold<K>.json (COCO, from 'endoview data "
                            "kvasir-coco') nor Kvasir-SEG's images/ and masks/")
        root = run / "coco"
        if not _fold_files(root):
            from .coco import write_coco

            log.info("converting %s to COCO instances per fold in %s (once)", data, root)
            write_coco(data, root, split_csv=cc.split_csv, mapping_csv=cc.mapping_csv)
    folds = _fold_files(root)
    if cc.fold not in folds:
        raise DataError(f"--fold {cc.fold}: {root / 'annotations'} has folds {sorted(folds)} only")
    train = [folds[k] for k in sorted(folds) if k != cc.fold]
    if not train:
        raise DataError(f"{root / 'annotations'} has only fold {cc.fold}: nothing left to train on")
    images = root / "images"
    if not images.is_dir():
        raise DataError(f"{images} is missing (the COCO folder needs images/ beside annotations/)")
    val = folds[cc.fold]
    docs = {p: read_coco(p, images) for p in (*train, val)}
    if cc.limit:
        sub = run / "annotations"
        train = [_subset(docs[p], sub / f"{p.stem}-first{cc.limit}.json", cc.limit) for p in train]
        val = _subset(docs[val], sub / f"{val.stem}-first{cc.limit}.json", cc.limit)
    return CocoSplit(images=images.resolve(), train=tuple(p.resolve() for p in train), val=val.resolve())


# --------------------------------------------------------------------------------------------
# the MMDetection config


def base_config_path() -> Path:
    from engine.mmdet_compat import import_mmdet

    import_mmdet()
    import mmdet

    path = Path(mmdet.__file__).parent / ".mim" / "configs" / BASE_CONFIG
    if not path.is_file():
        raise TrainError(f"{path} is missing: this mmdet install has no bundled configs; reinstall mmdet==3.3.0")
    return path


def _dataset(ann: Path, images: Path, pipeline: list[dict], *, test: bool) -> dict:
    d = dict(type="CocoDataset", data_root="", ann_file=str(ann), data_prefix=dict(img=str(images) + "/"),
             metainfo=dict(classes=CLASSES, palette=PALETTE), pipeline=pipeline, backend_args=None)
    if test:
        d["test_mode"] = True
    else:
        d["filter_cfg"] = dict(filter_empty_gt=True, min_size=32)
    return d


def train_pipeline(size: int) -> list[dict]:
    """Load, resize to fit size x size, flips, affine, JPEG, colour shift, cutout (no blur)."""
    return [
        dict(type="LoadImageFromFile", backend_args=None),
        dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
        dict(type="Resize", scale=(size, size), keep_ratio=True),
        dict(type="RandomFlip", prob=0.5, direction="horizontal"),
        dict(type="RandomFlip", prob=0.5, direction="vertical"),
        dict(type="RandomAffineMasks", prob=0.5, max_rotate_degree=15.0, max_translate_ratio=0.1,
             scaling_ratio_range=(0.9, 1.1), max_shear_degree=5.0, border_val=(0, 0, 0)),
        dict(type="RandomJPEG", prob=JPEG_PROB, quality=JPEG_QUALITY),
        dict(type="PhotoMetricDistortion", brightness_delta=32, contrast_range=(0.75, 1.25),
             saturation_range=(0.75, 1.25), hue_delta=10),
        dict(type="CutOut", n_holes=(1, 3), cutout_ratio=[(0.05, 0.05), (0.1, 0.1), (0.15, 0.1), (0.1, 0.15)],
             fill_in=(0, 0, 0)),
        dict(type="FilterAnnotations", min_gt_bbox_wh=(1, 1), keep_empty=True),
        dict(type="PackDetInputs"),
    ]


def test_pipeline(size: int, *, annotations: bool = True) -> list[dict]:
    steps = [dict(type="LoadImageFromFile", backend_args=None),
             dict(type="Resize", scale=(size, size), keep_ratio=True)]
    if annotations:
        steps.append(dict(type="LoadAnnotations", with_bbox=True, with_mask=True))
    steps.append(dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                       "scale_factor")))
    return steps


def build_config(cc: CascadeConfig, data: CocoSplit, work_dir: Path):
    """The MMDetection config of a run (an ``mmengine.Config``)."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(base_config_path()))
    s = cc.image_size
    shrink = SHRINK if cc.shrink else None

    m = cfg.model
    m.backbone.init_cfg = None  # no torchvision download: random init, or --weights via load_from
    num_classes = len(CLASSES)
    for head in m.roi_head.bbox_head:  # the three cascade stages
        head.num_classes = num_classes
    m.roi_head.mask_head.num_classes = num_classes
    m.test_cfg.rpn.nms.iou_threshold = RPN_NMS_IOU
    m.test_cfg.rcnn.score_thr = SCORE_THR
    m.test_cfg.rcnn.nms.iou_threshold = NMS_IOU
    m.test_cfg.rcnn.mask_thr_binary = MASK_THR
    if shrink:
        m.train_cfg.rpn_proposal.nms_pre = shrink["rpn_pre"]
        m.train_cfg.rpn_proposal.max_per_img = shrink["rpn_max"]
        for stage in m.train_cfg.rcnn:
            stage.sampler.num = shrink["rcnn_samples"]
        m.test_cfg.rpn.nms_pre = m.test_cfg.rpn.max_per_img = shrink["test_rpn"]
        m.test_cfg.rcnn.max_per_img = shrink["test_max"]

    workers = 0 if shrink else cc.workers
    train_sets = [_dataset(p, data.images, train_pipeline(s), test=False) for p in data.train]
    cfg.train_dataloader = dict(
        batch_size=cc.batch_size, num_workers=workers, persistent_workers=workers > 0,
        sampler=dict(type="DefaultSampler", shuffle=True), batch_sampler=dict(type="AspectRatioBatchSampler"),
        dataset=train_sets[0] if len(train_sets) == 1 else dict(type="ConcatDataset", datasets=train_sets))
    cfg.val_dataloader = dict(
        batch_size=1, num_workers=workers, persistent_workers=workers > 0, drop_last=False,
        sampler=dict(type="DefaultSampler", shuffle=False),
        dataset=_dataset(data.val, data.images, test_pipeline(s), test=True))
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = dict(type="CocoMetric", ann_file=str(data.val), metric=["bbox", "segm"],
                             format_only=False, backend_args=None)
    cfg.test_evaluator = cfg.val_evaluator

    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=cc.epochs, val_interval=1)
    warmup = shrink["warmup_iters"] if shrink else WARMUP_ITERS
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=WARMUP_FACTOR, by_epoch=False, begin=0, end=warmup),
        dict(type="MultiStepLR", begin=0, end=max(cc.epochs, 1), by_epoch=True, milestones=list(cc.milestones),
             gamma=0.1),
    ]
    cfg.optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=cc.lr, momentum=cc.momentum,
                                                                 weight_decay=cc.weight_decay))
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=2 * max(cc.gpus, 1))

    cfg.default_hooks.logger.interval = 1 if shrink else 50
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1, max_keep_ckpts=2)
    cfg.randomness = dict(seed=cc.seed, deterministic=False)
    cfg.custom_imports = dict(imports=["train.seg.cascade_transforms"], allow_failed_imports=False)
    cfg.work_dir = str(work_dir)
    cfg.load_from = str(Path(cc.weights).expanduser().resolve()) if cc.weights else None
    cfg.resume = False
    return cfg


# --------------------------------------------------------------------------------------------
# weights


def _short_error(err: BaseException) -> str:
    """The informative line of a torch.load error (its weights-only explanation is pages long)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def weights_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state dict of a checkpoint file (``{"state_dict": ...}`` or a bare one); TrainError if it
    is not a torch file of tensors. Loaded with ``weights_only=True`` (plus mmengine's safe globals)."""
    from engine.mmdet_compat import import_mmdet

    import_mmdet()
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise TrainError(f"--weights {p} does not exist; give a local COCO-pretrained Cascade Mask R-CNN "
                         "checkpoint (.pth) or leave --weights out for random initialisation")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises anything on a foreign file
        raise TrainError(f"--weights {p} cannot be loaded as a torch checkpoint of weights "
                         f"({_short_error(err)}); give an MMDetection .pth file") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise TrainError(f"--weights {p} holds no model weights (expected a dict of tensors or "
                         "{'state_dict': ...}, as MMDetection's checkpoints are)")
    return state


def check_weights_match(state: dict[str, Any], model, path: str) -> dict[str, int]:
    """How many tensors of ``state`` fit the model; TrainError when none do (not this architecture)."""
    own = model.state_dict()
    keys = [k[7:] if k.startswith("module.") else k for k in state]
    fits = [k in own and tuple(own[k].shape) == tuple(v.shape) for k, v in zip(keys, state.values())]
    if not any(fits):
        raise TrainError(f"--weights {path}: none of its {len(state)} tensors fits Cascade Mask R-CNN R50-FPN "
                         "(names or shapes differ); give an MMDetection cascade-mask-rcnn_r50_fpn checkpoint")
    return {"loaded": sum(fits), "skipped": len(fits) - sum(fits), "model_tensors": len(own),
            "skipped_names": [k for k, ok in zip(keys, fits) if not ok][:20]}


# --------------------------------------------------------------------------------------------
# training


def read_run(run: Path) -> dict[str, Any]:
    p = run / RUN_JSON
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TrainError(f"{p} cannot be read ({err}); is {run} a 'train segment --arch cascade' run?") from err


def write_run(run: Path, info: dict[str, Any]) -> None:
    tmp = run / (RUN_JSON + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, run / RUN_JSON)


def is_cascade_run(run: str | os.PathLike[str]) -> bool:
    p = Path(run).expanduser() / RUN_JSON
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("arch") == ARCH
    except (OSError, json.JSONDecodeError):
        return False


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def last_checkpoint(run: Path) -> Path | None:
    marker = run / "last_checkpoint"
    if marker.is_file():
        p = Path(marker.read_text(encoding="utf-8").strip())
        p = p if p.is_absolute() else run / p
        if p.is_file():
            return p
    found = sorted(run.glob("epoch_*.pth"), key=lambda q: int(q.stem.split("_")[1]))
    return found[-1] if found else None


def train_cascade(cc: CascadeConfig, *, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Train (or continue) one Cascade Mask R-CNN run; returns run.json's contents."""
    cc.validate()
    from engine.mmdet_compat import import_mmdet

    versions = import_mmdet()
    if cc.gpus > 1:
        import torch

        if torch.cuda.device_count() < cc.gpus:
            raise TrainError(f"--gpus {cc.gpus}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                             "MMDetection's distributed launcher needs one per process")
    run = Path(cc.out).expanduser().resolve()
    if resume:
        info = read_run(run)
        old = info["config"]
        check_fixed_on_resume(old, cc, FIXED_ON_RESUME, run)
        if last_checkpoint(run) is None or not info.get("iterations"):
            raise TrainError(f"--resume: {run} has not trained an epoch yet (no epoch_N.pth with an optimizer "
                             "state); start it again with --force")
        if info.get("epochs_done", 0) >= cc.epochs:
            raise TrainError(f"--resume: {run} has already trained {info['epochs_done']} of {cc.epochs} epochs; "
                             "raise --epochs to train on")
    else:
        if run.is_dir() and any(run.iterdir()) and not force:
            raise TrainError(f"{run} already holds a run; pass --resume to continue it, --force to start over, "
                             "or choose another --out")
        weights = "random"
        if cc.weights:
            weights_state(cc.weights)  # before anything in --out is touched
            weights = f"coco:{sha256_file(Path(cc.weights).expanduser())}"
        if run.is_dir():
            shutil.rmtree(run)
        run.mkdir(parents=True)
        info = {"arch": ARCH, "fold": cc.fold, "data": str(Path(cc.data).expanduser().resolve()), "weights": weights,
                "weights_file": str(Path(cc.weights).expanduser().resolve()) if cc.weights else None,
                "seed": cc.seed, "epochs": cc.epochs, "created": _now(), "sessions": []}
    data = resolve_data(cc, run)
    cfg = build_config(cc, data, run)
    cfg.dump(str(run / CONFIG_PY))
    info.update(config=cc.to_dict(), epochs=cc.epochs, versions=versions,
                coco={"images": str(data.images), "train": [str(p) for p in data.train], "val": str(data.val)})
    write_run(run, info)
    log.info("Cascade Mask R-CNN run %s: fold %d held out, %s, %d epochs at %d px, batch %d x %d GPU(s), lr %g%s",
             run, cc.fold, "COCO-pretrained weights " + info["weights"] if cc.weights else "random initialisation",
             cc.epochs, cc.image_size, cc.batch_size, cc.gpus, cc.lr, " (shrunk for a quick run)" if cc.shrink else "")
    if cc.gpus > 1:
        _launch_distributed(run, cc.gpus, resume=resume)
    else:
        run_runner(run, resume=resume, threads=cc.threads)
    return read_run(run)


def _launch_distributed(run: Path, gpus: int, *, resume: bool) -> None:
    """MMDetection's own distributed launcher: one process per GPU, launcher='pytorch'."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}",
           f"--master_port={os.environ.get('MASTER_PORT', '29500')}", "-m", "train.seg.cascade", str(run),
           "--launcher", "pytorch"] + (["--resume"] if resume else [])
    log.info("launching %d processes: %s", gpus, " ".join(cmd))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise TrainError(f"distributed training of {run} failed (exit code {proc.returncode}); its log is in "
                         f"{run}/<timestamp>/<timestamp>.log")


def _val_metrics(message_hub) -> dict[str, float]:
    out = {}
    for key, buf in message_hub.log_scalars.items():
        if key.startswith("val/coco/"):
            out[key[len("val/coco/"):]] = float(buf.current())
    return out


def run_runner(run: Path, *, resume: bool = False, launcher: str = "none", threads: int = 0) -> None:
    """Build mmengine's Runner from RUN/config.py and train; rank 0 records the outcome in run.json."""
    from engine.mmdet_compat import import_mmdet

    import_mmdet()
    import torch
    from mmengine.config import Config
    from mmengine.logging import print_log
    from mmengine.runner import Runner

    if threads:
        torch.set_num_threads(threads)
    info = read_run(run)
    cfg = Config.fromfile(str(run / CONFIG_PY))
    cfg.launcher = launcher
    if resume:
        cfg.resume, cfg.load_from = True, None  # mmengine finds RUN/last_checkpoint
    started, t0 = _now(), time.perf_counter()
    runner = Runner.from_cfg(cfg)
    rank0 = runner.rank == 0
    weights_note = "random initialisation (no pretrained weights)"
    match = None
    if not resume and cfg.load_from:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        match = check_weights_match(weights_state(cfg.load_from), model, cfg.load_from)
        weights_note = (f"COCO-pretrained weights {cfg.load_from} ({info['weights']}): {match['loaded']} of the "
                        f"model's {match['model_tensors']} tensors load; {match['skipped']} do not fit (the one-class "
                        f"heads) and are skipped: {', '.join(match['skipped_names'])}")
    elif resume:
        weights_note = f"resumed from {last_checkpoint(run)} (started from {info['weights']})"
    print_log(f"endoview: {weights_note}", logger="current", level=logging.INFO)
    start_iter = int(info.get("iterations", 0)) if resume else 0
    runner.train()
    # after train(): runner.iter counts iterations over all sessions
    iters, epochs_done = int(runner.iter), int(runner.epoch)
    if not rank0:
        return
    if last_checkpoint(run) is None:  # 0 epochs: keep the initial weights so the run can be exported
        runner.save_checkpoint(str(run), "epoch_0.pth", save_optimizer=False, save_param_scheduler=False)
        (run / "last_checkpoint").write_text(str(run / "epoch_0.pth"), encoding="utf-8")
    info = read_run(run)
    session = {"started": started, "finished": _now(), "seconds": round(time.perf_counter() - t0, 1),
               "resumed": resume, "start_iter": start_iter, "iterations": iters, "epochs": epochs_done,
               "launcher": launcher, "world_size": runner.world_size}
    if match:
        session["weights_match"] = match
    info["sessions"].append(session)
    info.update(iterations=iters, epochs_done=epochs_done, last_checkpoint=str(last_checkpoint(run)),
                finished=session["finished"])
    metrics = _val_metrics(runner.message_hub)
    if metrics:
        info["val"] = metrics
    write_run(run, info)


# --------------------------------------------------------------------------------------------
# command line


def config_from_args(args: argparse.Namespace) -> CascadeConfig:
    """``train segment --arch cascade`` flags (over --config, or the run's own settings on --resume)."""
    unet_only = [f"--{n.replace('_', '-')}" for n in UNET_ONLY if getattr(args, n, None) is not None]
    if unet_only:
        raise TrainError(f"{', '.join(unet_only)}: not for --arch cascade (the real-time segmenters' settings)")
    fields = {f.name for f in dataclasses.fields(CascadeConfig)}
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(read_config_file(args.config, fields))
    if args.resume and args.out is not None and args.config is None and (Path(args.out) / RUN_JSON).is_file():
        values.update(read_run(Path(args.out).expanduser()).get("config", {}))
    apply_flags(values, args, fields - {"shrink"})
    if getattr(args, "shrink", False):
        values["shrink"] = True
        if getattr(args, "image_size", None) is None and not args.resume:
            values["image_size"] = SHRINK["image_size"]
    values.pop("progress", None)
    missing = [f"--{k}" for k in ("data", "out") if not values.get(k)]
    if missing:
        raise TrainError(f"train segment --arch cascade needs {', '.join(missing)}")
    return CascadeConfig.from_dict(values)


def run_cli(args: argparse.Namespace) -> int:
    cc = config_from_args(args)
    info = train_cascade(cc, resume=args.resume, force=args.force)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        val = info.get("val") or {}
        scores = (f"validation bbox mAP {val['bbox_mAP']:.3f}, segm mAP {val['segm_mAP']:.3f}"
                  if "bbox_mAP" in val and "segm_mAP" in val else "no validation mAP (no detection above the "
                  f"score threshold {SCORE_THR})")
        print(f"run folder: {cc.out} (Cascade Mask R-CNN, {cc.image_size} px, held-out fold {cc.fold}, "
              f"{'weights ' + info['weights'] if info['weights'] != 'random' else 'random initialisation'}): "
              f"{info.get('epochs_done', 0)} epochs, {info.get('iterations', 0)} iterations, {scores}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m train.seg.cascade RUN_DIR --launcher pytorch``: one rank of a distributed run."""
    from engine.errors import EndoviewError

    p = argparse.ArgumentParser(prog="python -m train.seg.cascade",
                                description="Train a prepared Cascade Mask R-CNN run folder (one process per GPU; "
                                "started by 'endoview train segment --arch cascade --gpus N').")
    p.add_argument("run", type=Path)
    p.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"), default="none")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_runner(args.run.expanduser().resolve(), resume=args.resume, launcher=args.launcher)
    except EndoviewError as exc:
        print(f"endoview: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
