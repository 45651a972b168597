"""train.score: both models weighed together for the verdict, fitted on folds the models did not see."""

import json

import numpy as np
import pytest

from engine.analysis.verdict import ScoreRule
from train import score as score_mod
from train.score import cross_fit, decide, fit_logistic, fit_rule, join

from tiny_models import make_tiny_classifier_bundle, make_tiny_segmenter_bundle


def pair(seed: int, n: int = 300) -> dict[str, np.ndarray]:
    """Images whose polyp evidence is split between the models: each alone is noisy, together they agree."""
    rng = np.random.default_rng(seed)
    positive = np.arange(n) < n // 2
    evidence = np.where(positive, 1.5, -1.5)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    clf = sig(evidence + rng.normal(0, 1.6, n))
    peak = sig(2.0 + evidence * 1.5 + rng.normal(0, 2.4, n))
    return {"positive": positive, "clf": clf, "clf_rel": clf / 0.5, "peak": peak,
            "share": np.where(peak > 0.5, 0.05, 0.0), "mask": peak > 0.5}


def test_the_logistic_fit_finds_the_weights_that_made_the_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    y = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 + 2.0 * x[:, 0] - 1.0 * x[:, 1])))).astype(float)
    w = fit_logistic(x, y)
    assert w == pytest.approx([0.5, 2.0, -1.0], abs=0.2)


def test_weighing_both_beats_the_classifier_alone_on_a_fold_it_was_not_fitted_on():
    a, b = pair(1), pair(2)
    crossed = cross_fit([a, b])
    for c in crossed:
        with_, without = c["with"], c["without"]
        assert with_["sensitivity"] + with_["specificity"] > without["sensitivity"] + without["specificity"] + 0.03
    rule = fit_rule(join([a, b]))
    assert rule.classifier > 0 and rule.segmenter > 0
    no_mask = dict(a, mask=np.zeros_like(a["mask"]))
    assert not decide(no_mask, rule).any()  # nothing to show: never a polyp
    # the engine's rule gives the same answers as the fit's
    engine = np.array([rule.decide(c, p) for c, p in zip(a["clf"], a["peak"])]) & a["mask"]
    assert (engine == decide(a, rule)).all()


def test_scores_that_say_nothing_about_polyps_make_no_rule():
    s = pair(3)
    s["clf"] = 1.0 - s["clf"]  # a classifier that has polyps backwards
    s["peak"] = np.full_like(s["peak"], 0.6)
    with pytest.raises(ValueError, match="cannot make a score rule"):
        fit_rule(s)


def test_the_command_writes_the_rule_and_its_cross_fit_into_the_bundle(tmp_path, monkeypatch, capsys, synthetic):
    data, split_csv = synthetic
    seg = [make_tiny_segmenter_bundle(tmp_path / f"s{f}", torchscript=False) for f in (0, 1)]
    clf = [make_tiny_classifier_bundle(tmp_path / f"c{f}", labels=("normal-cecum", "polyp"), torchscript=False,
                                       name=f"clf-heldout{f}") for f in (0, 1)]
    target = make_tiny_segmenter_bundle(tmp_path / "ship", torchscript=False)
    made = {0: pair(4), 1: pair(5)}
    calls = []

    def fake_scores(seg_path, clf_path, fold, samples, threads):  # the models' scores of their held-out fold
        calls.append((seg_path.name, clf_path.name, fold, len(samples)))
        return made[fold]

    monkeypatch.setattr("train.sure.scores", fake_scores)
    argv = [a for f in (0, 1) for a in ("--pair", str(seg[f].path), str(clf[f].path), str(f))]
    argv += ["--write", str(target.path), "--data", str(data), "--split-csv", str(split_csv), "--json"]
    assert score_mod.main(argv) == 0
    assert [c[:3] for c in calls] == [("s0", "c0", 0), ("s1", "c1", 1)] and calls[0][3] > 0
    out = json.loads(capsys.readouterr().out)
    manifest = json.loads((target.path / "manifest.json").read_text())
    assert manifest["score"] == out["rule"] == fit_rule(join([made[0], made[1]])).to_dict()
    record = manifest["score_rule"]
    assert [c["held_out"]["fold"] for c in record["cross_fit"]] == [0, 1]
    assert record["cross_fit"][0]["rule"] == fit_rule(made[1]).to_dict()  # fold 0's figures: fitted on fold 1
    assert [p["classifier"] for p in record["fitted_on"]] == ["clf-heldout0", "clf-heldout1"]
    assert str(tmp_path) not in json.dumps(record)  # no machine paths
    assert record["command"].startswith("python -m train.score --pair")
    # the bundle loads, and the viewer's verdict takes the rule
    from engine.bundle import load_bundle
    from engine.analysis.segmenter import Segmenter

    assert Segmenter(load_bundle(target.path), backend=None).score == ScoreRule(**manifest["score"])


def test_the_command_says_what_is_wrong_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main_args = ["--pair", "a", "b", "0", "--data", str(tmp_path), "--split-csv", "x.csv"]
        score_mod.main(main_args)  # one pair cannot cross-fit
    capsys.readouterr()
    missing = str(tmp_path / "missing")
    assert score_mod.main(["--pair", missing, missing, "0", "--pair", missing, missing, "1",
                           "--write", missing, "--data", str(tmp_path),
                           "--split-csv", str(tmp_path / "2_fold_split.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
