"""The segmenter's image-level "polyp present" rule, fitted on the training fold only.

The viewer decides per frame with :class:`engine.analysis.segmenter.PresenceRule`: the largest probability
must reach ``min_peak`` and the share of model-input pixels over the mask threshold must reach
``min_area`` (:func:`engine.analysis.segmenter.presence_scores` computes both, here and in the viewer). The
pair is chosen on the images the model was trained on (polyp images and polyp-free images of the
training fold, without augmentation): the pair with the largest sensitivity + specificity, ties
going to the stricter pair (fewer false alarms on video the model has never seen). The held-out
fold is never looked at.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.analysis.segmenter import DEFAULT_THRESHOLD, PresenceRule, presence_scores

#: Candidate thresholds: peak probability and area share (of the model input's pixels).
PEAKS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)
AREAS: tuple[float, ...] = (0.0, 0.001, 0.002, 0.004, 0.006, 0.01, 0.015, 0.02, 0.03)


def scores(probs: Sequence[np.ndarray], threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """N x 2 (peak, area share) of model-size probability maps."""
    return np.array([presence_scores(p, threshold) for p in probs], np.float64).reshape(-1, 2)


def rates(rule: PresenceRule, s: np.ndarray, positive: np.ndarray,
          threshold: float = DEFAULT_THRESHOLD) -> tuple[float, float]:
    """(sensitivity, specificity) of ``rule`` on scores ``s`` with truth ``positive``."""
    said = np.array([rule.decide(p, a, threshold) for p, a in s], bool)
    sens = float(said[positive].mean()) if positive.any() else float("nan")
    spec = float((~said[~positive]).mean()) if (~positive).any() else float("nan")
    return sens, spec


def fit(s: np.ndarray, positive: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """The rule with the largest sensitivity + specificity on (``s``, ``positive``); ties: the
    stricter. Returns ``{"min_peak", "min_area", "sensitivity", "specificity"}`` (fit figures)."""
    positive = np.asarray(positive, bool)
    if not positive.any() or positive.all():
        raise ValueError("fitting the presence rule needs polyp images and polyp-free images")
    best: tuple | None = None
    for peak in PEAKS:
        for area in AREAS:
            rule = PresenceRule(peak, area)
            sens, spec = rates(rule, s, positive, threshold)
            key = (round(sens + spec, 9), peak + area)
            if best is None or key > best[0]:
                best = (key, rule, sens, spec)
    _, rule, sens, spec = best
    return {"min_peak": rule.min_peak, "min_area": rule.min_area, "sensitivity": sens, "specificity": spec}
