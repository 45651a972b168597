"""``endoview export-seg RUN_DIR -o BUNDLE_DIR`` for a Cascade Mask R-CNN run: an "instances" bundle.

The bundle carries MMDetection's own files, run by :mod:`engine.analysis.instances` through
``init_detector`` / ``inference_detector``:

* ``model.pth``: ``{"meta": {"dataset_meta": {"classes": ["polyp"], ...}, ...}, "state_dict": ...}``
  from the run's last checkpoint (optimizer, schedulers and message hub stripped), saved with
  ``torch.save``; it loads under ``torch.load(weights_only=True)``;
* ``config.py``: the run's model and test pipeline only (no data paths, no training settings), as
  dumped by mmengine; the paper's thresholds are its ``model.test_cfg`` (RPN NMS 0.7, score 0.5,
  NMS 0.3, mask 0.45).

Manifest: task "instances", labels ["polyp"], input (H, W) = the test resize scale, outputs
masks/boxes/scores, formats ``mmdet`` and ``mmdet-config``, ``trained`` false when the run did no
iteration, ``training`` = run.json (weights "coco:<sha256>" or "random"), ``metrics.val`` = the
last validation bbox/segm mAP. There is no ONNX model: exporting Cascade Mask R-CNN to ONNX needs
mmdeploy, which does not install here.

The export checks itself: it loads the written bundle with ``init_detector`` and runs
``inference_detector`` on one real held-out image (masks N x H x W, boxes N x 4, scores N).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.bundle import Bundle, load_bundle, write_bundle

from ..errors import TrainError
from ..folders import check_bundle_target
from .cascade_config import CLASSES, MASK_THR, NMS_IOU, PALETTE, RPN_NMS_IOU, SCORE_THR, test_pipeline
from .cascade_train import CONFIG_PY, last_checkpoint, read_run

log = logging.getLogger(__name__)

MODEL_FILE, CONFIG_FILE = "model.pth", "config.py"
OUTPUTS = {"masks": "masks", "boxes": "boxes", "scores": "scores"}
NO_ONNX = ("no ONNX model: exporting Cascade Mask R-CNN to ONNX needs mmdeploy, which is not part of the seg "
           "extra (its last release, 1.3.1, would downgrade protobuf and onnx and pull the GUI opencv-python; "
           "not tried); the bundle runs through MMDetection")


@dataclass
class CascadeExportReport:
    bundle: Bundle
    checkpoint: Path
    checkpoint_bytes: int
    parameters: int
    check: dict[str, Any]
    #: export-seg's --json keys (the real-time segmenter's parity and latency): the self-check here
    parity: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        b, c = self.bundle, self.check
        val = b.manifest.get("metrics", {}).get("val") or {}
        score = (f"validation bbox mAP {val['bbox_mAP']:.3f}, segm mAP {val['segm_mAP']:.3f}"
                 if "bbox_mAP" in val and "segm_mAP" in val else "no validation mAP")
        return [
            f"wrote {b.path} ({b.name}, Cascade Mask R-CNN, {self.parameters:,} parameters, "
            f"{'trained' if b.trained else 'NOT trained (0 iterations)'}, {score})",
            f"{MODEL_FILE}: {self.checkpoint_bytes / 1e6:.1f} MB (state_dict of {self.checkpoint.name}; "
            f"{'under' if self.checkpoint_bytes < 100e6 else 'over'} the 100 MB shipping limit)",
            f"self-check: init_detector + inference_detector on {c['image']} ({c['width']}x{c['height']}): "
            f"{c['instances']} instances, {c['seconds']:.2f} s on {c['device']}",
            NO_ONNX,
        ]


def export_config(run_cfg, size: int):
    """The inference part of a run's config: model (with its test_cfg) and test pipeline, no data paths."""
    from mmengine.config import Config

    pipeline = test_pipeline(size, annotations=False)
    return Config(dict(
        default_scope="mmdet",
        model=run_cfg.model.to_dict(),
        backend_args=None,
        test_pipeline=pipeline,
        test_dataloader=dict(batch_size=1, num_workers=0, dataset=dict(
            type="CocoDataset", test_mode=True, metainfo=dict(classes=CLASSES, palette=PALETTE), pipeline=pipeline)),
    ))


def _check_image(info: dict[str, Any]) -> Path | None:
    """The first held-out image of the run (its val annotation file), if it is still there."""
    import json

    try:
        coco = info["coco"]
        images = json.loads(Path(coco["val"]).read_text(encoding="utf-8"))["images"]
        path = Path(coco["images"]) / images[0]["file_name"]
    except (KeyError, IndexError, OSError, ValueError):
        return None
    return path if path.is_file() else None


def self_check(bundle: Bundle, image: Path | None, device: str = "cpu") -> dict[str, Any]:
    """Run ``bundle`` on ``image`` (BGR, as read) the way the viewer's second pass does
    (:class:`engine.backends.mmdet.MMDetDetector`: init_detector, inference_detector)."""
    import cv2

    from engine.backends.mmdet import MMDetDetector
    from engine.errors import BundleError

    if image is not None:
        bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise TrainError(f"self-check: cannot read {image}")
        name = str(image)
    else:
        log.warning("self-check: the run's held-out images are gone; using a random image")
        bgr = np.random.default_rng(0).integers(0, 256, (bundle.input_size[0], bundle.input_size[1], 3), np.uint8)
        name = "a random image"
    try:
        detector = MMDetDetector(bundle, device)
    except BundleError as err:
        raise TrainError(f"self-check: {err}") from err
    classes = detector.model.dataset_meta.get("classes", ())
    if tuple(classes) != CLASSES:
        raise TrainError(f"self-check: {bundle.path} loads with classes {classes}, not {CLASSES}")
    t0 = time.perf_counter()
    masks, boxes, scores = detector(bgr)
    seconds = time.perf_counter() - t0
    n = len(scores)
    if masks.shape != (n, *bgr.shape[:2]) or boxes.shape != (n, 4):
        raise TrainError(f"self-check: {bundle.path} returned masks {masks.shape}, boxes {boxes.shape}, scores "
                         f"{scores.shape} for a {bgr.shape[1]}x{bgr.shape[0]} image")
    return {"image": name, "width": int(bgr.shape[1]), "height": int(bgr.shape[0]), "instances": n,
            "seconds": round(seconds, 3), "device": device,
            "max_score": float(scores.max()) if n else None}


def export_cascade(run_dir: str | Path, out: str | Path, *, name: str | None = None, threads: int | None = None,
                   force: bool = False) -> CascadeExportReport:
    from engine.backends.mmdet_compat import import_mmdet

    versions = import_mmdet()
    import torch
    from mmengine.config import Config

    target = check_bundle_target(out, force=force)
    run = Path(run_dir).expanduser().resolve()
    info = read_run(run)
    ckpt_path = last_checkpoint(run)
    if ckpt_path is None:
        raise TrainError(f"{run} has no checkpoint (epoch_N.pth) yet; train it first")
    if threads:
        torch.set_num_threads(threads)
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise TrainError(f"cannot read the checkpoint {ckpt_path}: {type(err).__name__}: {err}") from err
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise TrainError(f"{ckpt_path} has no state_dict; is it an MMDetection checkpoint?")
    meta = ckpt.get("meta") or {}
    run_cfg = Config.fromfile(str(run / CONFIG_PY))
    size = int(info["config"]["image_size"])
    iterations = int(info.get("iterations", meta.get("iter", 0)) or 0)
    trained = iterations > 0
    parameters = int(sum(v.numel() for k, v in state.items() if "num_batches_tracked" not in k))
    if not trained:
        log.warning("%s did no training iteration: the bundle says trained: false", run)

    with tempfile.TemporaryDirectory(prefix="cascade-export-") as tmp:
        model_file, config_file = Path(tmp) / MODEL_FILE, Path(tmp) / CONFIG_FILE
        torch.save({"meta": {"dataset_meta": {"classes": list(CLASSES), "palette": [list(p) for p in PALETTE]},
                             "epoch": int(meta.get("epoch", 0)), "iter": int(meta.get("iter", 0)),
                             "mmdet_version": versions["mmdet"], "source": str(ckpt_path)},
                    "state_dict": state}, model_file)
        export_config(run_cfg, size).dump(str(config_file))
        training = dict(info)
        training["test_cfg"] = {"rpn_nms_iou": RPN_NMS_IOU, "score_thr": SCORE_THR, "nms_iou": NMS_IOU,
                                "mask_thr_binary": MASK_THR, "where": "config.py model.test_cfg"}
        training["checkpoint"] = {"file": str(ckpt_path), "epoch": int(meta.get("epoch", 0)),
                                  "iter": int(meta.get("iter", 0))}
        metrics = {"val": info.get("val") or {}}
        fold = info.get("fold")
        bundle = write_bundle(
            target, name=name or f"polyp-cascade-mask-rcnn-{size}-kvasir-seg-heldout{fold}", task="instances",
            labels=list(CLASSES), input_size=(size, size), input_name="image",
            files={MODEL_FILE: model_file, CONFIG_FILE: config_file},
            formats={"mmdet": MODEL_FILE, "mmdet-config": CONFIG_FILE}, outputs=OUTPUTS, trained=trained,
            training=training, metrics=metrics, force=force,
            notes=f"Cascade Mask R-CNN R50-FPN (MMDetection {versions['mmdet']}), run by engine.analysis.instances; "
                  f"thresholds in config.py model.test_cfg. {NO_ONNX}.")
    bundle = load_bundle(bundle.path)
    check = self_check(bundle, _check_image(info))
    size_bytes = bundle.file("mmdet").stat().st_size
    report = CascadeExportReport(bundle=bundle, checkpoint=ckpt_path, checkpoint_bytes=size_bytes,
                                 parameters=parameters, check=check,
                                 parity={"self_check": check, "onnx": NO_ONNX},
                                 latency_ms={"mmdet_cpu_inference": check["seconds"] * 1000.0, "runs": 1,
                                             "image": check["image"]})
    for line in report.lines():
        log.info("%s", line)
    return report
