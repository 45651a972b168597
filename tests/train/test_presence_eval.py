"""The segmenter's presence rule fit (training fold only) and the image-level figures of eval-seg."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train.seg import presence
from train.seg.detect_eval import auroc, image_files, rates, roc_curve


def test_fit_separates_what_can_be_separated_and_prefers_the_stricter_rule():
    # polyp images: high peak, large area; polyp-free ones: high peak but tiny specks, or low peaks
    pos = np.array([[0.99, 0.05], [0.97, 0.02], [0.995, 0.1]])
    neg = np.array([[0.99, 0.0015], [0.6, 0.01], [0.3, 0.0]])
    fitted = presence.fit(np.vstack([pos, neg]), np.array([1, 1, 1, 0, 0, 0], bool))
    assert fitted["sensitivity"] == 1.0 and fitted["specificity"] == 1.0
    # every rule with area >= 0.002 and peak in (0.6, 0.97] separates; the stricter is kept
    assert fitted["min_area"] > 0.0015 and fitted["min_peak"] > 0.6
    assert fitted["min_area"] <= 0.02 and fitted["min_peak"] <= 0.97
    with pytest.raises(ValueError):
        presence.fit(pos, np.ones(3, bool))


def test_auroc_and_roc_against_hand_counts():
    # 2 positives, 3 negatives: pairs (p > n) = 5 of 6, one tie counts half -> 5.5 / 6
    s = [0.9, 0.5, 0.5, 0.2, 0.1]
    y = [True, True, False, False, False]
    assert auroc(s, y) == pytest.approx((3 + 2.5) / 6)
    assert auroc([1, 2], [True, True]) != auroc([1, 2], [True, True])  # NaN without negatives
    fpr, tpr = roc_curve(s, y)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    r = rates(np.array([True, False, True, False]), np.array([True, True, False, False]))
    assert r["sensitivity"] == 0.5 and r["specificity"] == 0.5 and r["false_alarms_per_minute"] == 750


def test_image_files_filters_by_name(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("x.jpg", "a/y.png", "a/b/z.jpg", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(p.name for p in image_files([tmp_path])) == ["x.jpg", "y.png", "z.jpg"]  # not notes.txt
    assert [p.name for p in image_files([tmp_path], {"z.jpg"})] == ["z.jpg"]


def test_eval_seg_with_negatives_reports_three_answers(data_dir, tmp_path, capsys):
    """The shipped default models through eval-seg on a few real held-out images of each kind."""
    from engine.config import DEFAULT_CONFIG, load_config
    from train.seg.cli import main

    cfg = load_config(DEFAULT_CONFIG)
    negatives = data_dir / "hyperkvasir-lower-gi" / "labeled-images" / "lower-gi-tract" / "anatomical-landmarks"
    if not negatives.is_dir() or cfg.segmenter is None:
        pytest.skip("needs the polyp-free HyperKvasir images and the default segmenter")
    kv = data_dir / "kvasir-seg"
    out = tmp_path / "m.json"
    rc = main(["eval-seg", str(cfg.segmenter), "--images", str(kv / "images"), "--masks", str(kv / "masks"),
               "--fold", "1", "--limit", "6", "--negatives", str(negatives), "--classifier", str(cfg.bundle),
               "--out", str(out), "--json", "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    m = json.loads(captured.out)
    # a model trained on fold 1 (the final classifier, trained on every fold) is named in a note
    from engine.bundle import load_bundle
    from train.manifest import trained_on

    for path in (cfg.segmenter, cfg.bundle):
        b = load_bundle(path)
        note = f"note: {b.name} was trained on fold 1's images"
        noted = any(line.startswith(note) for line in captured.err.splitlines())
        assert noted == bool(trained_on(b.manifest["training"], 1)), (b.name, captured.err)
    assert set(m["by_model"]) == {"segmenter", "classifier", "combined", "both_must_agree"}
    assert m["by_model"]["combined"]["sensitivity"] == m["by_model"]["classifier"]["sensitivity"]  # it decides
    for k in ("sensitivity", "specificity", "auroc"):
        assert 0.0 <= m[k] <= 1.0 and m[k] == m["by_model"]["combined"][k]
    assert m["polyp_images"] == 6 and m["negative_images"] == 202  # fold 1 of the cecum folder
    assert json.loads(out.read_text())["specificity"] == m["specificity"]
    assert (tmp_path / "roc.png").stat().st_size > 1000
