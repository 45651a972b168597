"""The paper's Cascade Mask R-CNN as an MMDetection 3.3 config: its settings and :func:`build_config`.

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

``--weights FILE`` starts from a local COCO-pretrained checkpoint (``load_from``: the one-class
heads do not match COCO's 80 classes, and mmengine logs and skips those tensors); without it the
whole model is randomly initialised (``backbone.init_cfg=None``: nothing is downloaded).
``--shrink`` is for tests and CPUs: 128-px images (unless ``--image-size``), far fewer proposals
and samples, logging every iteration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TrainError

ARCH = "cascade"
BASE_CONFIG = "cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py"
CLASSES = ("polyp",)
PALETTE = [(220, 20, 60)]
#: The paper's test-time thresholds.
RPN_NMS_IOU, SCORE_THR, NMS_IOU, MASK_THR = 0.7, 0.5, 0.3, 0.45
#: Linear warm-up: from lr x WARMUP_FACTOR over the first WARMUP_ITERS iterations (MMDetection's usual).
WARMUP_ITERS, WARMUP_FACTOR = 500, 0.001
JPEG_QUALITY, JPEG_PROB = (60, 95), 0.5
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


@dataclass(frozen=True)
class CocoSplit:
    """Where the images and the per-fold annotation files of one run are."""

    images: Path
    train: tuple[Path, ...]
    val: Path


def base_config_path() -> Path:
    from engine.backends.mmdet_compat import import_mmdet

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

