"""Image-level polyp detection figures: ``endoview eval-seg BUNDLE ... --negatives DIR``.

Polyp images (``--images``, those with a ground-truth mask) and polyp-free images
(``--negatives``) go one by one through what the viewer runs on a frame: the content area, the
model inputs, the segmenter (with its presence rule), the classifier when ``--classifier`` names
one, and the frame's verdict (:mod:`engine.analysis.verdict`), smoothing off. For each of the three
answers (segmenter, classifier, combined verdict) it reports:

- **sensitivity**: the share of polyp images called "polyp"; **specificity**: the share of
  polyp-free images not called "polyp" (both at the models' own operating points);
- **AUROC** of a continuous score: the segmenter's peak probability, the classifier's probability
  of the polyp classes, for the verdict (the classifier decides, the segmenter must have a mask)
  the smaller of the classifier's probability over its operating point and the segmenter's peak
  over its mask threshold (with the segmenter's score rule: that score over 0.5), and for the
  stricter rule "both must agree" (the segmenter's presence rule instead of any mask; reported
  beside, not what the viewer runs) the smaller of the two scores, each divided by its own
  operating point;
- **false alarms per minute** at 25 frames per second: (1 - specificity) x 25 x 60, what a
  polyp-free stretch of video would show if its frames looked like these images;

and an ROC curve (PNG) with the operating points marked.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.analysis.classifier import Classifier
from engine.analysis.segmenter import Segmenter, presence_scores
from engine.analysis.verdict import polyp_probability
from engine.backends import open_backend
from engine.bundle import load_bundle
from engine.errors import BundleError
from engine.pipeline import Analyzer
from engine.types import Frame

from ..data import IMAGE_SUFFIXES
from ..errors import DataError
from ..images import read_bgr
from .evaluate import backend_options

log = logging.getLogger(__name__)

#: Frames per second and seconds per minute of the false-alarm figure.
FALSE_ALARM_FPS = 25
ANSWERS = ("segmenter", "classifier", "combined", "both_must_agree")


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve (the Mann-Whitney U statistic; ties count half); NaN without both kinds."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(positive, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: Sequence[float], positive: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(positive, bool)
    thresholds = np.unique(s)[::-1]
    fpr = [0.0] + [float((s[~y] >= t).mean()) if (~y).any() else 0.0 for t in thresholds] + [1.0]
    tpr = [0.0] + [float((s[y] >= t).mean()) if y.any() else 0.0 for t in thresholds] + [1.0]
    return np.array(fpr), np.array(tpr)


def image_files(roots: Sequence[str | os.PathLike[str]], names: set[str] | None = None) -> list[Path]:
    """Every image under the folders (recursively), optionally only those whose file name is in ``names``."""
    out: list[Path] = []
    for r in roots:
        root = Path(r).expanduser()
        if root.is_file():
            out.append(root)
            continue
        if not root.is_dir():
            raise DataError(f"--negatives folder not found: {root}")
        out += sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                      and (names is None or p.name in names))
    return out


def rates(decided: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    sens = float(decided[positive].mean()) if positive.any() else float("nan")
    spec = float((~decided[~positive]).mean()) if (~positive).any() else float("nan")
    return {"sensitivity": sens, "specificity": spec,
            "false_alarms_per_minute": (1.0 - spec) * FALSE_ALARM_FPS * 60 if spec == spec else float("nan")}


def fold_images(samples, fold: int) -> tuple[list, list[Path]]:
    """Of ``train.data.load_dataset``'s samples, fold ``fold``'s polyps with their masks (Pairs,
    Kvasir-SEG) and its polyp-free images: what ``eval-seg --fold --negatives`` scores."""
    from engine.types import POLYP_CLASSES

    from .evaluate import Pair

    held = [s for s in samples if s.fold == fold]
    pairs = [Pair(s.path, s.mask) for s in held if s.mask is not None]
    negatives = [s.path for s in held if s.label not in POLYP_CLASSES]
    if not pairs or not negatives:
        raise DataError(f"image-level figures need polyp images with masks and polyp-free images in fold {fold}")
    return pairs, negatives


def image_scores(seg_bundle: str | os.PathLike[str], positives: Sequence[Path], negatives: Sequence[Path], *,
                 classifier: str | os.PathLike[str] | None = None, backend: str = "onnxruntime",
                 threads: int | None = None, progress: bool = False,
                 precision: str | None = None, transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 ) -> tuple[list[dict[str, Any]], np.ndarray, Segmenter, Classifier | None]:
    """Every image through the viewer's analysis (each a new scene): one row per image (the
    segmenter's peak, area share, presence and mask; the classifier's polyp probability; the
    verdict), whether it has a polyp, and the models (their thresholds and points). ``transform``:
    applied to each BGR image as read (train.shift's changes of camera), None: as it is."""
    if not positives or not negatives:
        raise DataError("image-level figures need polyp images and polyp-free images (--negatives)")
    bundle = load_bundle(seg_bundle)
    if bundle.task != "segment":
        raise BundleError(f"--negatives needs a segment bundle; {bundle.path} has task {bundle.task!r}")
    clf_bundle = load_bundle(classifier) if classifier is not None else None
    if clf_bundle is not None and clf_bundle.task != "classify":
        raise BundleError(f"--classifier needs a classify bundle; {clf_bundle.path} has task {clf_bundle.task!r}")
    options = backend_options(backend, threads, precision)
    paths = [(p, True) for p in positives] + [(p, False) for p in negatives]
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        seg = Segmenter(bundle, stack.enter_context(open_backend(bundle, backend, **options)))
        clf = (Classifier(clf_bundle, stack.enter_context(open_backend(clf_bundle, backend, **options)))
               if clf_bundle is not None else None)
        analyzer = Analyzer(clf, segmenter=seg, smooth=False)
        it = paths
        if progress:
            from tqdm import tqdm

            it = tqdm(paths, desc="eval-seg image level", unit="img", leave=False)
        for i, (path, _) in enumerate(it):
            analyzer.reset()  # every image is a new scene: detect its field afresh
            image = read_bgr(path)
            r = analyzer(Frame(i, 0.0, image if transform is None else transform(image), 0.0))
            s = r.segmentation
            row = {"seg_score": s.peak, "seg": s.present, "combined": bool(r.polyp), "mask": s.area > 0,
                   "seg_share": presence_scores(s.probability, seg.threshold)[1] if s.probability is not None else 0.0}
            if r.polyp_score is not None:  # the verdict's score where the score rule weighs both models
                row["verdict_score"] = r.polyp_score
            if r.prediction is not None:
                row["clf_score"] = polyp_probability(r.prediction)
                row["clf"] = row["clf_score"] >= clf.operating_point
            rows.append(row)
    return rows, np.array([p for _, p in paths], bool), seg, clf


def evaluate_detection(seg_bundle: str | os.PathLike[str], positives: Sequence[Path], negatives: Sequence[Path], *,
                       classifier: str | os.PathLike[str] | None = None, backend: str = "onnxruntime",
                       threads: int | None = None, progress: bool = False,
                       precision: str | None = None) -> dict[str, Any]:
    """The figures above; the top-level ``sensitivity``, ``specificity`` and ``auroc`` are the
    combined verdict's (what the viewer shows), or the segmenter's without a classifier."""
    rows, positive, seg, clf = image_scores(seg_bundle, positives, negatives, classifier=classifier,
                                            backend=backend, threads=threads, progress=progress,
                                            precision=precision)
    bundle, clf_bundle = seg.bundle, clf.bundle if clf is not None else None
    op_seg = max(seg.presence.min_peak, seg.threshold)
    answers: dict[str, dict[str, Any]] = {}
    seg_score = np.array([r["seg_score"] for r in rows])
    answers["segmenter"] = {**rates(np.array([r["seg"] for r in rows]), positive),
                            "auroc": auroc(seg_score, positive), "score": "peak probability",
                            "operating_point": {"min_peak": op_seg, "min_area": seg.presence.min_area}}
    curves = {"segmenter": (seg_score, op_seg)}
    if clf is not None:
        clf_score = np.array([r["clf_score"] for r in rows])
        answers["classifier"] = {**rates(np.array([r["clf"] for r in rows]), positive),
                                 "auroc": auroc(clf_score, positive), "score": "probability of the polyp classes",
                                 "operating_point": clf.operating_point}
        clf_rel = clf_score / clf.operating_point
        # engine.analysis.verdict: both weighed by the segmenter's score rule, or the classifier decides
        # (or the segmenter's "sure" rule holds); the segmenter must have a mask to show either way
        mask = np.array([r["mask"] for r in rows], bool)
        if seg.score is not None:  # the verdict's own score / 0.5
            combined = np.where(mask, np.array([r["verdict_score"] for r in rows]) / 0.5, 0.0)
            how = ("the segmenter's score rule (the sigmoid of bias + a logit(P(polyp)) + b logit(peak)) / 0.5 "
                   "where the mask is not empty, else 0")
        else:
            combined = np.minimum(clf_rel, seg_score / seg.threshold)
            if seg.sure is not None:
                large = np.array([r["seg_share"] for r in rows]) >= max(seg.sure.min_area, 1e-12)
                combined = np.maximum(combined, np.where(large, seg_score / max(seg.sure.min_peak, seg.threshold), 0.0))
            how = ("min of the classifier's P(polyp) / its operating point and the segmenter's peak / its mask "
                   "threshold (the verdict's rule: the classifier decides, the segmenter must have a mask); with a "
                   "'sure' rule, at least the peak / its min_peak where the mask's share reaches its min_area")
        both_agree = np.array([r["seg"] and r["clf"] for r in rows])
        answers["combined"] = {**rates(np.array([r["combined"] for r in rows]), positive),
                               "auroc": auroc(combined, positive), "score": how,
                               "rule": "engine.verdict"}
        answers["both_must_agree"] = {**rates(both_agree, positive),
                                      "auroc": auroc(np.minimum(seg_score / op_seg, clf_rel), positive),
                                      "score": "min of the two scores over their operating points",
                                      "rule": "segmenter presence rule AND classifier (not the viewer's rule)"}
        curves["classifier"] = (clf_score, clf.operating_point)
        curves["combined"] = (combined, 1.0)
    main = answers["combined" if clf is not None else "segmenter"]
    return {
        "sensitivity": main["sensitivity"], "specificity": main["specificity"], "auroc": main["auroc"],
        "false_alarms_per_minute": main["false_alarms_per_minute"],
        "answer": "combined" if clf is not None else "segmenter",
        "polyp_images": int(positive.sum()), "negative_images": int((~positive).sum()),
        "by_model": answers, "segmenter": bundle.name, "classifier": clf_bundle.name if clf_bundle else None,
        "false_alarm_fps": FALSE_ALARM_FPS,
        "_curves": {k: (v[0].tolist(), v[1]) for k, v in curves.items()}, "_positive": positive.tolist(),
    }


def plot_roc(result: dict[str, Any], path: Path, title: str = "") -> Path | None:
    """The ROC curves of ``evaluate_detection``'s result, operating points marked; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no ROC plot (pip install matplotlib)")
        return None
    positive = np.array(result["_positive"], bool)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (scores, op) in result["_curves"].items():
        s = np.array(scores)
        fpr, tpr = roc_curve(s, positive)
        m = result["by_model"][name]
        ax.plot(fpr, tpr, label=f"{name} (AUROC {m['auroc']:.3f})")
        ax.plot([1 - m["specificity"]], [m["sensitivity"]], "o", color=ax.lines[-1].get_color())
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("1 - specificity (polyp-free images called polyp)")
    ax.set_ylabel("sensitivity (polyp images called polyp)")
    ax.set_title(title or "image-level polyp detection", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_detection(result: dict[str, Any]) -> str:
    head = f"{'answer':<16} {'sensitivity':>11} {'specificity':>11} {'AUROC':>7} {'false alarms/min @25fps':>24}"
    lines = [f"image level: {result['polyp_images']} polyp images, {result['negative_images']} polyp-free images",
             head]
    for name in ANSWERS:
        m = result["by_model"].get(name)
        if m is None:
            continue
        lines.append(f"{name:<16} {m['sensitivity']:>11.3f} {m['specificity']:>11.3f} {m['auroc']:>7.3f} "
                     f"{m['false_alarms_per_minute']:>24.1f}")
    return "\n".join(lines)


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The result without the curve data (for --json and the metrics file)."""
    return {k: v for k, v in result.items() if not k.startswith("_")}
