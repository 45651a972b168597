"""The paper's Table 1 columns from a confusion matrix: macro and micro P/R/F1, MCC; and plots.

Conventions (those of scikit-learn's ``precision_recall_fscore_support`` with
``zero_division=0``): macro averages run over the classes present in the ground truth or the
predictions of the evaluated set; a class with no prediction has precision 0. Micro P = R = F1 =
accuracy for single-label classification. MCC is the multi-class (Gorodkin) form.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TABLE1_COLUMNS = ("macro_precision", "macro_recall", "macro_f1",
                  "micro_precision", "micro_recall", "micro_f1", "mcc")


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def mcc(cm: np.ndarray) -> float:
    """Matthews correlation coefficient of a K x K confusion matrix (Gorodkin 2004)."""
    cm = cm.astype(np.float64)
    t = cm.sum(axis=1)
    p = cm.sum(axis=0)
    c = np.trace(cm)
    s = cm.sum()
    cov_ytyp = c * s - np.dot(t, p)
    cov_ypyp = s * s - np.dot(p, p)
    cov_ytyt = s * s - np.dot(t, t)
    if cov_ypyp == 0 or cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp))


def classification_metrics(cm: np.ndarray, labels: Sequence[str]) -> dict:
    """Table 1 metrics plus a per-class table from a confusion matrix."""
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    present = (support > 0) | (predicted > 0)
    n = float(cm.sum())
    accuracy = float(tp.sum() / n) if n else 0.0
    macro = {k: float(v[present].mean()) if present.any() else 0.0
             for k, v in (("precision", precision), ("recall", recall), ("f1", f1))}
    return {
        "n": int(n),
        "macro_precision": macro["precision"],
        "macro_recall": macro["recall"],
        "macro_f1": macro["f1"],
        "micro_precision": accuracy,
        "micro_recall": accuracy,
        "micro_f1": accuracy,
        "accuracy": accuracy,
        "mcc": mcc(cm),
        "classes_evaluated": int(present.sum()),
        "per_class": [
            {"label": label, "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i]), "predicted": int(predicted[i])}
            for i, label in enumerate(labels)
        ],
        "confusion_matrix": cm.astype(int).tolist(),
        "labels": list(labels),
    }


def format_per_class(metrics: dict) -> str:
    rows = metrics["per_class"]
    width = max(len(r["label"]) for r in rows)
    lines = [f"{'class':<{width}} {'prec':>6} {'recall':>6} {'f1':>6} {'support':>7} {'pred':>6}"]
    for r in rows:
        lines.append(f"{r['label']:<{width}} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} "
                     f"{r['support']:7d} {r['predicted']:6d}")
    return "\n".join(lines)


def table1_header() -> str:
    return (f"{'model':<28} {'data':<22} {'macro P':>7} {'R':>6} {'F1':>6} "
            f"{'micro P':>7} {'R':>6} {'F1':>6} {'MCC':>6}")


def table1_row(name: str, data: str, m: dict) -> str:
    return (f"{name:<28} {data:<22} {m['macro_precision']:7.3f} {m['macro_recall']:6.3f} "
            f"{m['macro_f1']:6.3f} {m['micro_precision']:7.3f} {m['micro_recall']:6.3f} "
            f"{m['micro_f1']:6.3f} {m['mcc']:6.3f}")


def mean_metrics(runs: Sequence[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in runs])) for k in TABLE1_COLUMNS}


# --------------------------------------------------------------------------------------------
# plots (matplotlib, imported lazily: an optional dependency of the train extra)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as err:
        log.warning("matplotlib is not installed (%s): no plots (pip install 'endoview[train]')", err)
        return None
    return plt


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> Path | None:
    """Row-normalised confusion matrix with counts, as the paper's Fig. 3."""
    plt = _pyplot()
    if plt is None:
        return None
    cm = np.asarray(cm)
    norm = _div(cm.astype(np.float64), cm.sum(axis=1, keepdims=True).astype(np.float64))
    k = len(labels)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * k + 2), max(5, 0.45 * k + 1.5)), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_history(history: Sequence[dict], path: Path, title: str = "") -> Path | None:
    """Loss per head (train) and validation metrics per epoch."""
    plt = _pyplot()
    if plt is None or not history:
        return None
    epochs = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    loss_keys = [k for k in history[0] if k.startswith("train_loss")]
    for k in loss_keys:
        a1.plot(epochs, [r[k] for r in history], marker="o", label=k.replace("train_", ""))
    if "val_loss" in history[0]:
        a1.plot(epochs, [r["val_loss"] for r in history], marker="s", ls="--", label="val loss")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy")
    a1.legend(fontsize=7)
    a1.set_title("loss")
    for k in ("val_macro_f1", "val_micro_f1", "val_mcc"):
        if k in history[0]:
            a2.plot(epochs, [r[k] for r in history], marker="o", label=k.replace("val_", ""))
    a2.set_xlabel("epoch")
    a2.set_ylim(-0.05, 1.05)
    if a2.lines:
        a2.legend(fontsize=7)
    else:  # a run that holds nothing out (--fold all)
        a2.text(0.5, 0.5, "nothing held out", ha="center", va="center", transform=a2.transAxes)
    a2.set_title("held-out fold, raw head")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
