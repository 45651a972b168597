"""Table-1 metrics against hand-computed values; the hybrid loss is the sum of four CEs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from train.labels import HEADS, RAW_CLASSES, head_targets
from train.losses import HybridLoss
from train.metrics import classification_metrics, confusion_matrix, mcc


def test_metrics_by_hand():
    # 3 classes; truth and predictions chosen so every figure is easy to verify
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = classification_metrics(cm, ["a", "b", "c"])
    p = [1.0, 0.5, 0.5]
    r = [2 / 3, 0.5, 1.0]
    f = [2 * a * b / (a + b) for a, b in zip(p, r)]
    assert m["macro_precision"] == pytest.approx(np.mean(p))
    assert m["macro_recall"] == pytest.approx(np.mean(r))
    assert m["macro_f1"] == pytest.approx(np.mean(f))
    assert m["micro_f1"] == m["micro_precision"] == m["micro_recall"] == pytest.approx(4 / 6)
    # Gorodkin's multi-class MCC
    t, q, c, s = np.array([3, 2, 1]), np.array([2, 2, 2]), 4, 6
    expected = (c * s - t @ q) / math.sqrt((s * s - q @ q) * (s * s - t @ t))
    assert m["mcc"] == pytest.approx(expected)
    assert [row["support"] for row in m["per_class"]] == [3, 2, 1]


def test_binary_mcc_matches_the_textbook_formula():
    cm = np.array([[50, 10], [5, 35]])  # rows true (neg, pos)
    tn, fp, fn, tp = 50, 10, 5, 35
    textbook = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert mcc(cm) == pytest.approx(textbook)


def test_absent_classes_do_not_count_in_macro_averages():
    cm = confusion_matrix([0, 1], [0, 1], 23)
    m = classification_metrics(cm, RAW_CLASSES)
    assert m["classes_evaluated"] == 2
    assert m["macro_f1"] == 1.0 and m["mcc"] == 1.0


def test_hybrid_loss_is_the_sum_of_four_cross_entropies():
    torch.manual_seed(0)
    y = torch.arange(23)
    outputs = {h: torch.randn(23, len(labels)) for h, labels in HEADS.items()}
    total, per = HybridLoss(list(HEADS))(outputs, y)
    expected = {h: F.cross_entropy(outputs[h], torch.tensor(head_targets(h))[y]) for h in HEADS}
    assert set(per) == set(HEADS)
    for h in HEADS:
        assert per[h].item() == pytest.approx(expected[h].item())
    assert total.item() == pytest.approx(sum(v.item() for v in expected.values()))


def test_raw_only_loss_is_the_baseline():
    y = torch.tensor([0, 5, 22])
    out = {"raw": torch.randn(3, 23)}
    total, per = HybridLoss(["raw"])(out, y)
    assert list(per) == ["raw"]
    assert total.item() == pytest.approx(F.cross_entropy(out["raw"], y).item())
