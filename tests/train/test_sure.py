"""train.sure: the verdict's "sure" rule, chosen on a fold the pair did not train on."""

import numpy as np
import pytest

from train.sure import choose, decide, main, rates


def scores(**kw):
    n = len(kw["positive"])
    base = {"clf_rel": np.zeros(n), "peak": np.zeros(n), "share": np.zeros(n), "mask": np.ones(n, bool)}
    return {**base, **{k: np.asarray(v) for k, v in kw.items()}}


def test_a_rule_that_finds_the_classifiers_misses_wins():
    # polyps: two the classifier finds, two it misses that the segmenter is sure of (big, certain)
    # polyp-free: one the segmenter is fairly sure of, but small
    s = scores(positive=[True, True, True, True, False, False],
               clf_rel=[2.0, 1.5, 0.2, 0.1, 0.3, 0.1],
               peak=[0.9999, 0.99, 0.9995, 0.9999, 0.9999, 0.2],
               share=[0.3, 0.1, 0.25, 0.1, 0.015, 0.0])
    assert rates(s, None) == {"sensitivity": 0.5, "specificity": 1.0}
    rule, table = choose(s)
    assert rule == {"min_peak": 0.9995, "min_area": 0.08}  # all four polyps, no false alarm; the strictest such
    assert rates(s, rule) == {"sensitivity": 1.0, "specificity": 1.0} and table[0]["rule"] == rule
    no_mask = dict(s, mask=np.zeros(6, bool))
    assert not decide(no_mask, rule).any()  # nothing to show: never a polyp


def test_no_rule_wins_when_nothing_helps():
    s = scores(positive=[True, False], clf_rel=[2.0, 0.1], peak=[0.5, 0.9999], share=[0.0, 0.5])
    rule, _ = choose(s)
    assert rule is None


def test_the_command_says_what_is_wrong_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--test", "a", "b", "1"])  # --fit is required
    capsys.readouterr()
    assert main(["--fit", str(tmp_path / "missing"), str(tmp_path / "missing"), "0", "--data", str(tmp_path),
                 "--split-csv", str(tmp_path / "2_fold_split.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
