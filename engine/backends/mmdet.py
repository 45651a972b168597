"""MMDetection's detector over an "instances" bundle (the Cascade Mask R-CNN second pass).

:class:`MMDetDetector` is the :data:`engine.analysis.instances.Detector` that
:class:`~engine.analysis.instances.InstancePass` runs; torch and MMDetection (through
:mod:`engine.backends.mmdet_compat`) are imported when one is constructed, never at import time.
"""

from __future__ import annotations

import logging

import numpy as np

from engine.bundle import Bundle
from engine.errors import BundleError

logger = logging.getLogger(__name__)


class MMDetDetector:
    """MMDetection's ``init_detector`` / ``inference_detector`` over an instances bundle.

    ``score_threshold`` replaces the config's ``test_cfg.rcnn.score_thr`` (the paper's 0.5).
    """

    def __init__(self, bundle: Bundle, device: str | None = None, *,
                 score_threshold: float | None = None) -> None:
        from engine.backends.mmdet_compat import import_mmdet

        import_mmdet()
        import torch
        from mmdet.apis import inference_detector, init_detector

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self._infer = inference_detector
        try:
            options = {} if score_threshold is None else {"model.test_cfg.rcnn.score_thr": float(score_threshold)}
            self.model = init_detector(str(bundle.file("mmdet-config")), str(bundle.file("mmdet")),
                                       device=device, cfg_options=options or None)
        except Exception as err:  # noqa: BLE001 - MMDetection raises anything on a foreign file
            raise BundleError(f"cannot load the MMDetection model in {bundle.path}: "
                              f"{type(err).__name__}: {err}") from err
        logger.info("second pass %s: MMDetection on %s", bundle.name, device)

    def __call__(self, crop_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            sample = self._infer(self.model, crop_bgr)
        inst = sample.pred_instances
        scores = inst.scores.detach().cpu().numpy()
        boxes = inst.bboxes.detach().cpu().numpy()
        if "masks" in inst:
            masks = inst.masks.detach().cpu().numpy().astype(bool, copy=False)
        else:
            masks = np.zeros((len(scores), *crop_bgr.shape[:2]), bool)
        return masks, boxes, scores
