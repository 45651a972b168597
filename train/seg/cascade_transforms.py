"""Two MMDetection training transforms the paper's augmentation needs and mmdet 3.3 lacks.

* ``RandomJPEG``: JPEG compression at a random quality (the paper's "JPEG compression"); mmdet has
  no such transform.
* ``RandomAffineMasks``: a random affine (rotation, scale, shear, shift about the image centre)
  applied to the image *and* its instance masks, boxes recomputed from the warped masks. mmdet's
  ``RandomAffine`` raises ``NotImplementedError`` when masks are present and rotates about the
  top-left corner (it is meant for mosaics).

Importing this module registers both in mmdet's ``TRANSFORMS`` registry; the training config names
it in ``custom_imports`` so every process (data loader workers, distributed ranks) has them. The
random draws use ``numpy.random``, which mmengine seeds per worker.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from engine.backends.mmdet_compat import prepare

prepare()

from mmcv.transforms import BaseTransform  # noqa: E402  (after prepare(): mmdet present and patched)
from mmdet.registry import TRANSFORMS  # noqa: E402
from mmdet.structures.mask import BitmapMasks  # noqa: E402


@TRANSFORMS.register_module(force=True)
class RandomJPEG(BaseTransform):
    """With probability ``prob``, re-encode ``results['img']`` as JPEG at a quality drawn uniformly
    from ``quality`` (inclusive) and decode it again. Keeps shape and dtype (float images are
    clipped to 0..255 for the encoder). Required/modified key: ``img``."""

    def __init__(self, prob: float = 0.5, quality: tuple[int, int] = (60, 95)) -> None:
        lo, hi = (int(q) for q in quality)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomJPEG prob must be in [0, 1], not {prob}")
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"RandomJPEG quality must be 1 <= low <= high <= 100, not {quality}")
        self.prob = float(prob)
        self.quality = (lo, hi)

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results["img"]
        quality = int(np.random.randint(self.quality[0], self.quality[1] + 1))
        src = img if img.dtype == np.uint8 else np.clip(np.rint(img), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"cv2.imencode failed on an image of shape {src.shape}")
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if src.ndim == 3 and out.ndim == 2:
            out = out[..., None]
        results["img"] = out.astype(img.dtype, copy=False)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob}, quality={self.quality})"


@TRANSFORMS.register_module(force=True)
class RandomAffineMasks(BaseTransform):
    """A random affine about the image centre applied to ``img`` and ``gt_masks`` (BitmapMasks);
    ``gt_bboxes`` are recomputed from the warped masks and instances that leave the image are
    dropped (with their labels and ignore flags). The output keeps the input size; uncovered pixels
    get ``border_val`` (black: the viewer's black border). Runs with probability ``prob``."""

    def __init__(self, prob: float = 0.5, max_rotate_degree: float = 15.0, max_translate_ratio: float = 0.1,
                 scaling_ratio_range: tuple[float, float] = (0.9, 1.1), max_shear_degree: float = 5.0,
                 border_val: tuple[int, int, int] = (0, 0, 0)) -> None:
        if not 0 < scaling_ratio_range[0] <= scaling_ratio_range[1]:
            raise ValueError(f"RandomAffineMasks scaling_ratio_range {scaling_ratio_range} is not 0 < low <= high")
        self.prob = float(prob)
        self.max_rotate_degree = float(max_rotate_degree)
        self.max_translate_ratio = float(max_translate_ratio)
        self.scaling_ratio_range = (float(scaling_ratio_range[0]), float(scaling_ratio_range[1]))
        self.max_shear_degree = float(max_shear_degree)
        self.border_val = tuple(int(v) for v in border_val)

    def matrix(self, height: int, width: int) -> np.ndarray:
        """A random 3x3 matrix: centre to origin, scale, rotate, shear, back, shift."""
        r = math.radians(np.random.uniform(-self.max_rotate_degree, self.max_rotate_degree))
        s = np.random.uniform(*self.scaling_ratio_range)
        sx, sy = (math.tan(math.radians(np.random.uniform(-self.max_shear_degree, self.max_shear_degree)))
                  for _ in range(2))
        tx = np.random.uniform(-self.max_translate_ratio, self.max_translate_ratio) * width
        ty = np.random.uniform(-self.max_translate_ratio, self.max_translate_ratio) * height
        cx, cy = width / 2.0, height / 2.0
        to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], np.float64)
        back = np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1]], np.float64)
        scale = np.diag([s, s, 1.0])
        rotate = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]], np.float64)
        shear = np.array([[1, sx, 0], [sy, 1, 0], [0, 0, 1]], np.float64)
        return back @ shear @ rotate @ scale @ to_origin

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results["img"]
        h, w = img.shape[:2]
        m = self.matrix(h, w)
        results["img"] = cv2.warpAffine(img, m[:2], (w, h), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=self.border_val)
        if "homography_matrix" in results and results["homography_matrix"] is not None:
            results["homography_matrix"] = (m @ results["homography_matrix"]).astype(np.float32)
        masks = results.get("gt_masks")
        if masks is None or len(masks) == 0:
            return results
        if not isinstance(masks, BitmapMasks):
            raise TypeError("RandomAffineMasks needs bitmap masks (LoadAnnotations with poly2mask=True)")
        warped = np.stack([cv2.warpAffine(mk, m[:2], (w, h), flags=cv2.INTER_NEAREST,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                           for mk in masks.masks.astype(np.uint8)])
        keep = warped.reshape(len(warped), -1).any(axis=1)
        new_masks = BitmapMasks(warped[keep], h, w)
        boxes_type = type(results["gt_bboxes"])
        results["gt_masks"] = new_masks
        results["gt_bboxes"] = boxes_type(new_masks.get_bboxes(dst_type="hbox").tensor)
        for key in ("gt_bboxes_labels", "gt_ignore_flags"):
            if key in results:
                results[key] = results[key][keep]
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(prob={self.prob}, max_rotate_degree={self.max_rotate_degree}, "
                f"max_translate_ratio={self.max_translate_ratio}, scaling_ratio_range={self.scaling_ratio_range}, "
                f"max_shear_degree={self.max_shear_degree}, border_val={self.border_val})")
