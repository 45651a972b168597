"""The real-time segmenter: model input -> backend -> polyp mask in frame pixels.

A segment bundle takes the same model input as a classifier (the field's bounding box, resized,
black outside the field: :func:`engine.analysis.crop.model_input`) and returns its ``mask`` output,
N x 1 x H x W probabilities at the model's size. :meth:`Segmenter.segment` maps it back onto the
frame, the inverse of the crop and resize: the probabilities are resized to the bounding box
(bilinear, the same pixel-centre convention as the forward resize), thresholded, placed at the
box's position and cut to the visible field.

The threshold is the manifest's ``"threshold"`` (default 0.5); the label is the bundle's first
label ("polyp"); the confidence is the mean probability inside the mask, or the largest
probability anywhere when the mask is empty (how close the model came to seeing something).
An image-level "polyp present" rule (the manifest's ``"presence"``: ``{"min_peak": P, "min_area":
A}``, fitted on the training fold by ``train/seg``) decides whether the frame shows a polyp at all:
the largest probability must reach P and the share of model-input pixels at or above the threshold
must reach A. When it says no, the segmenter's answer is "no polyp" (``SegmentationResult.present``)
however many pixels passed the threshold; the mask keeps them, to be drawn where a classifier beside
it says polyp (engine.analysis.verdict). Without the key (older bundles) any pixel over the threshold counts.
Temporal smoothing (the classifier's smoothers, ``ema:A`` / ``window:N``) works on the
probability maps at the model's size, so the mask does not flicker; it starts afresh whenever the
content area changes (the maps would no longer line up) and after :meth:`Segmenter.reset`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from ..bundle import Bundle
from ..errors import BackendError, BundleError
from ..types import ContentArea, SegmentationResult, absent_label
from .classifier import NoSmoothing, Smoother
from .verdict import score_rule

DEFAULT_THRESHOLD = 0.5


class Segmenter:
    """Runs a segment bundle on model inputs. ``backend`` must be entered by the caller."""

    def __init__(self, bundle: Bundle, backend, smoother: Smoother | None = None, *,
                 threshold: float | None = None) -> None:
        if bundle.task != "segment":
            raise BundleError(f"bundle {bundle.path} has task {bundle.task!r}, not 'segment'")
        if "mask" not in bundle.outputs:
            raise BundleError(f"bundle {bundle.path} names no 'mask' output: it cannot segment frames")
        t = bundle.manifest.get("threshold", DEFAULT_THRESHOLD) if threshold is None else threshold
        if not isinstance(t, (int, float)) or not 0.0 < float(t) < 1.0:
            raise BundleError(f"bundle {bundle.path}: threshold must be a number in (0, 1), not {t!r}")
        self.bundle = bundle
        self.backend = backend
        self.threshold = float(t)
        self.presence = presence_rule(bundle.manifest.get("presence"), bundle.path)
        sure = bundle.manifest.get("sure")  # the verdict's second way to "polyp": engine.analysis.verdict
        self.sure = presence_rule(sure, bundle.path, "sure") if sure is not None else None
        #: both models weighed together, which the verdict uses beside a classifier (engine.analysis.verdict)
        self.score = score_rule(bundle.manifest.get("score"), bundle.path)
        self.label = bundle.labels[0] if bundle.labels else "polyp"
        self.input_name = bundle.input_name
        self.output_name = bundle.outputs["mask"]
        self.name = bundle.name
        self.smoother = smoother or NoSmoothing()
        self._area: ContentArea | None = None

    @property
    def labels(self) -> tuple[str, str]:
        """The per-frame classes a segmenter gives (timeline, triggers): ("no polyp", "polyp")."""
        return absent_label(self.label), self.label

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model takes."""
        return self.bundle.input_size

    def probabilities(self, model_input: np.ndarray) -> tuple[np.ndarray, float]:
        """(H x W float32 probabilities at the model's size, latency in ms)."""
        t0 = time.perf_counter()
        out = self.backend.run({self.input_name: model_input[None]})
        latency = (time.perf_counter() - t0) * 1000.0
        prob = np.asarray(out[self.output_name], dtype=np.float32)
        h, w = self.input_size
        if prob.size != h * w:
            raise BackendError(f"model {self.name} returned a mask of shape {prob.shape}, not 1 x 1 x {h} x {w}")
        return prob.reshape(h, w), latency

    def segment(self, model_input: np.ndarray | None, area: ContentArea, *, smooth: bool = True,
                computed: tuple[np.ndarray, float] | None = None) -> SegmentationResult:
        """The frame's segmentation; ``computed``: what :meth:`probabilities` already returned for
        the frame's model input (run in another thread; ``model_input`` may then be None), so only
        the rest is done here."""
        prob, latency = computed if computed is not None else self.probabilities(model_input)
        if smooth and not isinstance(self.smoother, NoSmoothing):
            if not area.same_as(self._area):
                self.smoother.reset()
            self._area = area
            prob = self.smoother.update(prob)
        peak, share = presence_scores(prob, self.threshold)
        return SegmentationResult(to_frame(prob, area, self.threshold), confidence(prob, self.threshold),
                                  self.label, self.name, latency, peak,
                                  self.presence.decide(peak, share, self.threshold), probability=prob,
                                  sure=self.sure.decide(peak, share, self.threshold) if self.sure else None)

    def reset(self) -> None:
        """Forget the smoothing history (after a seek or a source change)."""
        self.smoother.reset()
        self._area = None


def presence_scores(prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> tuple[float, float]:
    """(largest probability, share of pixels at or above ``threshold``) of a model-size map: what
    the image-level rule looks at (training fits it on these, the viewer applies it on these)."""
    return float(prob.max(initial=0.0)), float(np.count_nonzero(prob >= threshold)) / max(prob.size, 1)


@dataclass(frozen=True)
class PresenceRule:
    """Polyp present when the peak probability >= ``min_peak`` and the area share >= ``min_area``."""

    min_peak: float = 0.0
    min_area: float = 0.0

    def decide(self, peak: float, area: float, threshold: float = DEFAULT_THRESHOLD) -> bool:
        return peak >= max(self.min_peak, threshold) and area > 0 and area >= self.min_area

    def present(self, prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> bool:
        return self.decide(*presence_scores(prob, threshold), threshold)


def presence_rule(spec: object, where: object = "bundle", key: str = "presence") -> PresenceRule:
    """The manifest's ``presence`` object (or None: any pixel over the threshold) -> PresenceRule;
    ``key``: which manifest entry it is (also "sure"), for the error."""
    if spec is None:
        return PresenceRule()
    if not isinstance(spec, dict) or not all(
            isinstance(spec.get(k), (int, float)) and 0.0 <= float(spec[k]) <= 1.0 for k in ("min_peak", "min_area")):
        raise BundleError(f"{where}: {key!r} must be {{\"min_peak\": 0..1, \"min_area\": 0..1}}, not {spec!r}")
    return PresenceRule(float(spec["min_peak"]), float(spec["min_area"]))


def confidence(prob: np.ndarray, threshold: float) -> float:
    inside = prob[prob >= threshold]
    return float(inside.mean()) if inside.size else float(prob.max(initial=0.0))


def to_frame(prob: np.ndarray, area: ContentArea, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Model-size probabilities -> H x W bool mask in frame pixels (inverse of ``model_input``)."""
    x, y, bw, bh = area.bbox
    fw, fh = area.frame_size
    out = np.zeros((fh, fw), bool)
    if not (prob >= threshold).any():
        return out
    up = cv2.resize(prob, (bw, bh), interpolation=cv2.INTER_LINEAR)
    box = up >= threshold
    if area.shape != "full":
        box &= area.mask[y : y + bh, x : x + bw] > 0
    out[y : y + bh, x : x + bw] = box
    return out
