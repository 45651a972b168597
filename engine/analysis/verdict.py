"""The frame's polyp verdict: one documented rule over the classifier and the segmenter.

DESIGN.md, "The frame's verdict". The screen (label panel, mask), the timeline, the findings, the
second pass's hold trigger and the per-frame log (``"polyp"``) all follow this one answer:

- **classifier and segmenter** (the default): the classifier decides, the segmenter must have
  something to show. A frame is a polyp when the classifier gives the polyp classes
  (:data:`engine.types.POLYP_CLASSES`) together at least its operating point **and** the
  segmenter's mask is not empty (a pixel at or over the segmenter's own mask threshold inside the
  field); that mask is drawn on a positive frame only, so a polyp verdict always shows where. The
  segmenter's stricter image-level presence rule is not asked. Measured on held-out fold 1 with
  the classifier's cross-validation run trained on fold 0 (500 Kvasir-SEG polyps, 499 polyp-free
  HyperKvasir frames, at that run's own operating point): the empty-mask veto raised specificity
  from 0.872 to 0.902 for a sensitivity of 0.922 instead of 0.938; on the training fold, where the
  rule was chosen, it cost no polyp (0.968) and raised specificity from 0.931 to 0.937. Requiring
  the presence rule instead (the first rule) lost a fifth of the polyps (sensitivity 0.794),
  because that rule misses 17 % of them.
  With the 150-epoch segmenter and the classifier's fold-0 run at 0.35 (held-out fold 1): classifier
  alone 0.914 / 0.938, the verdict 0.892 / 0.970 (README, "The frame's verdict").
  **Or the segmenter is sure**: where the segmenter's bundle has a ``"sure"`` rule (a near-certain
  peak over a large share of the model input: ``{"min_peak": 0.999, "min_area": 0.02}`` in the
  shipped one), a frame it meets is a polyp whatever the classifier says: the classifier takes
  some clearly visible polyps for normal cecum. Chosen by cross-fitting (``python -m
  train.sure``): the grid of peaks and areas was searched on fold 0 with the cross-validation
  pair trained on fold 1 (largest sensitivity + specificity), then measured once on held-out fold
  1 with the pair trained on fold 0: there the verdict went from 0.892 / 0.972 to 0.938 / 0.958
  (README, "The frame's verdict").
- **classifier and segmenter with a score rule** (the shipped pair): where the segmenter's bundle
  has a ``"score"`` (:class:`ScoreRule`, fitted by ``python -m train.score``), both models' evidence
  is weighed together instead of the two ways above: the frame is a polyp when
  ``bias + classifier * logit(P(polyp)) + segmenter * logit(peak) >= 0`` (each probability clipped
  to [1e-6, 1 - 1e-6]; the score is the sigmoid of that sum, 0.5 the decision point) **and** the
  mask is not empty. A logistic regression on the two cross-validation pairs' scores of the
  fold they did not train on; cross-fitted (weights and decision point chosen on one fold, measured
  on the other): held-out fold 1 0.954 / 0.970, held-out fold 0 0.966 / 0.963 with the shipped
  classifier's recipe (the operating point and sure rule: 0.940 / 0.958 and 0.970 / 0.949; README,
  "The frame's verdict"). The operating point and the sure rule are then not asked.
- **classifier alone**: the polyp classes' probability reaches the operating point.
- **segmenter alone**: the segmenter's image-level presence rule
  (:class:`engine.analysis.segmenter.PresenceRule`).

The classifier's operating point is its manifest's ``"operating_point": {"polyp": P}`` (chosen on
the training fold by ``train/``); without it, 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import BundleError
from ..types import POLYP_CLASSES, Prediction, SegmentationResult

DEFAULT_OPERATING_POINT = 0.5


def polyp_probability(prediction: Prediction) -> float:
    """The classifier's probability of the polyp classes together (0 when it knows none of them)."""
    labels = prediction.labels
    return float(sum(prediction.probabilities[labels.index(c)] for c in POLYP_CLASSES if c in labels))


def operating_point(manifest: dict, where: object = "bundle") -> float:
    """A classify bundle's polyp operating point (``operating_point.polyp``), default 0.5."""
    spec = manifest.get("operating_point")
    if spec is None:
        return DEFAULT_OPERATING_POINT
    value = spec.get("polyp") if isinstance(spec, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < float(value) < 1.0:
        raise BundleError(f"{where}: 'operating_point' must be {{\"polyp\": a number in (0, 1)}}, not {spec!r}")
    return float(value)


#: probabilities are clipped to [EPS, 1 - EPS] before their logit (train.score fits on the same)
EPS = 1e-6


def logit(p: float) -> float:
    """log(p / (1 - p)) of ``p`` clipped to [EPS, 1 - EPS]."""
    p = min(max(float(p), EPS), 1.0 - EPS)
    return math.log(p / (1.0 - p))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


@dataclass(frozen=True)
class ScoreRule:
    """The two models weighed together: polyp where ``bias + classifier * logit(P(polyp)) +
    segmenter * logit(peak) >= 0``; :meth:`score` is the sigmoid of that sum (0.5 decides)."""

    classifier: float
    segmenter: float
    bias: float

    def linear(self, p_polyp: float, peak: float) -> float:
        return self.bias + self.classifier * logit(p_polyp) + self.segmenter * logit(peak)

    def score(self, p_polyp: float, peak: float) -> float:
        return sigmoid(self.linear(p_polyp, peak))

    def decide(self, p_polyp: float, peak: float) -> bool:
        return self.linear(p_polyp, peak) >= 0.0

    def to_dict(self) -> dict[str, float]:
        return {"classifier": self.classifier, "segmenter": self.segmenter, "bias": self.bias}


def score_rule(spec: object, where: object = "bundle") -> ScoreRule | None:
    """A segment bundle's ``"score"`` (``{"classifier": a, "segmenter": b, "bias": c}``) -> ScoreRule;
    None where the manifest has none."""
    if spec is None:
        return None
    keys = ("classifier", "segmenter", "bias")
    if not isinstance(spec, dict) or not all(
            isinstance(spec.get(k), (int, float)) and not isinstance(spec.get(k), bool)
            and math.isfinite(spec[k]) for k in keys):
        raise BundleError(f"{where}: 'score' must be {{\"classifier\": a, \"segmenter\": b, \"bias\": c}} "
                          f"(finite numbers), not {spec!r}")
    if spec["classifier"] <= 0 or spec["segmenter"] < 0:
        raise BundleError(f"{where}: 'score' must weigh the classifier's P(polyp) up (classifier > 0) and "
                          f"the segmenter's peak not down (segmenter >= 0), not {spec!r}")
    return ScoreRule(*(float(spec[k]) for k in keys))


@dataclass(frozen=True)
class Verdict:
    """The rule above with the classifier's operating point, and the segmenter's score rule (None:
    the operating point and the sure rule decide)."""

    operating_point: float = DEFAULT_OPERATING_POINT
    score: ScoreRule | None = None

    def __call__(self, prediction: Prediction | None, segmentation: SegmentationResult | None) -> bool | None:
        """True / False, or None without a model."""
        return self.judge(prediction, segmentation)[0]

    def judge(self, prediction: Prediction | None,
              segmentation: SegmentationResult | None) -> tuple[bool | None, float | None]:
        """(the verdict, the score rule's score where one weighs the two models, else None): the
        pipeline's one call per frame."""
        if prediction is not None:  # the classifier decides; a segmenter beside it must show where
            p = polyp_probability(prediction)
            if segmentation is None:
                return bool(p >= self.operating_point), None
            if self.score is not None:
                z = self.score.linear(p, segmentation.peak)
                return bool(z >= 0.0 and segmentation.area > 0), sigmoid(z)
            return bool((p >= self.operating_point or segmentation.sure) and segmentation.area > 0), None
        if segmentation is not None:
            return bool(segmentation.present), None
        return None, None
