"""The classifier's ship step on tiny synthetic runs: run A (held-out fold 1) shipped with the
2-fold figures, or with ``--final`` the run trained on every fold (``train classify --fold all``)
shipped with the same cross-validation figures; and the note an evaluation prints when a model
trained on the fold it is evaluated on."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import pytest

from chain_args import train_args
from engine.bundle import load_bundle
from train.cli import build_parser, main, train_config_from_args
from train.errors import TrainError
from train.manifest import fold_note, machine_paths, trained_on
from train.ship import cv_operating_point, ship

#: one step an epoch, one thread (two spin against each other on a busy 2-core machine): the ship
#: step needs finished runs, not good ones
SHORT = ("--steps-per-epoch", "1", "--no-recalibrate-bn", "--threads", "1")


@pytest.fixture(scope="module")
def runs(synthetic, tmp_path_factory):
    """Run folders side by side (as in runs/): the hybrid runs holding out fold 1 and fold 0, the
    raw-only baseline holding out fold 1, and the final run trained on every fold."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, extra in (("h1", ("--fold", "1")), ("h0", ("--fold", "0")),
                        ("raw1", ("--fold", "1", "--heads", "raw")), ("all", ("--fold", "all"))):
        assert main([*train_args(*synthetic, root / name, *extra), *SHORT]) == 0
        made[name] = root / name
    return made


@pytest.fixture(scope="module")
def shipped(runs, tmp_path_factory):
    """(report, manifest) of the default ship step (run A) and of the one with --final, each written
    as into a checkout (here ``out``, as the real step writes engine/assets/models/...): a machine
    path left in the manifest is then an error, not a warning."""
    out = tmp_path_factory.mktemp("ship")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("train.ship.REPO", out)
        mp.setattr("train.manifest.REPO", out)
        a = ship([runs["h1"], runs["h0"]], [runs["raw1"]], out / "a", threads=1)
        final = ship([runs["h0"], runs["h1"]], [runs["raw1"]], out / "final", final=runs["all"], threads=1,
                     figures=out / "figures")
    return {k: (r, load_bundle(r["bundle"]).manifest) for k, r in (("a", a), ("final", final))}


def test_the_final_operating_point_is_the_cross_validation_runs_on_the_grid():
    assert cv_operating_point([0.35, 0.35]) == 0.35
    assert cv_operating_point([0.3, 0.4]) == 0.35
    assert cv_operating_point([0.3, 0.35]) == 0.35  # half-way: the higher of the two grid points
    assert cv_operating_point([0.05, 0.95]) == 0.5


def test_fold_all_trains_on_every_image_and_holds_nothing_out(runs, synthetic, tmp_path, capsys):
    from train.data import load_dataset

    run = runs["all"]
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    n = len(load_dataset(*synthetic).samples)
    assert n == 92  # 23 classes x 4 images, both folds
    assert cfg["fold"] is None and summary["fold"] is None and summary["metrics"] == {}
    assert cfg["resolved"]["train_images"] == n and cfg["resolved"]["heldout_images"] == 0
    assert not any(k.startswith("val_") for k in next(csv.DictReader(open(run / "log.csv"))))
    assert not (run / "per_class.txt").exists()  # no held-out per-class table
    assert "every fold trains (nothing held out)" in (run / "train.log").read_text()
    capsys.readouterr()
    assert main(["eval", str(run), "--workers", "0"]) == 1
    assert "trained on every fold (--fold all) and held none out: give --fold" in capsys.readouterr().err
    assert main(["eval", str(run), "--fold", "1", "--workers", "0", "--json", "--out", str(tmp_path / "e")]) == 0
    assert capsys.readouterr().err.splitlines().count(
        "note: all was trained on fold 1's images: these are not held-out figures (it held no fold out; the "
        "cross-validation runs of its recipe give the figures)") == 1
    assert main([*train_args(*synthetic, tmp_path / "cv", "--fold", "all", "--cv", "2"), *SHORT]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["endoview: error: --cv trains each fold in turn; leave out --fold all"]
    assert not (tmp_path / "cv").exists()


def test_ship_without_final_ships_run_a(shipped, runs, tmp_path_factory):
    report, m = shipped["a"]
    bundle = load_bundle(report["bundle"])
    assert bundle.task == "classify" and bundle.name == "hyperkvasir-mnv3-lowergi" and bundle.has("onnx")
    t, mt = m["training"], m["metrics"]
    assert (t["heldout_fold"], t["trained_on_fold"]) == (1, 0) and "trained_on_folds" not in t
    assert "figures_from" not in t and "operating_point" not in mt
    assert [(r["role"], r["run"], r["heldout_fold"]) for r in t["runs"]] == [
        ("shipped (this bundle)", "runs/h1", 1), ("cross-validation run", "runs/h0", 0),
        ("cross-validation run", "runs/raw1", 1)]
    folds = mt["table1_2fold"]["hybrid"]["folds"]
    assert [f["heldout_fold"] for f in folds] == [1, 0]
    assert folds[0]["onnx_sha256"] == bundle.sha256("onnx")  # the shipped model is run A's
    assert mt["table1_2fold"]["raw_only_baseline"]["mean"] is None  # one baseline fold
    assert isinstance(mt["table1_2fold"]["hybrid_loss_helps"], bool)  # same recipe, heads aside: judged
    assert 0 < m["operating_point"]["polyp"] < 1
    assert m["operating_point"]["polyp"] == mt["polyp_vs_rest"]["operating_point"]
    assert mt["polyp_vs_rest"]["chosen_on"] == "training fold"
    assert all("--fold all" not in c for c in t["reproduce"]["train"]) and "--final" not in t["reproduce"]["ship"]
    assert t["reproduce"]["ship"] == "python -m train.ship runs/h1 runs/h0 --baseline runs/raw1 -o ./a --force"
    assert "Held-out fold 1: MCC" in m["notes"]
    text = (bundle.path / "manifest.json").read_text()
    assert str(tmp_path_factory.getbasetemp()) not in text and machine_paths(m) == []


def test_ship_with_final_ships_the_run_trained_on_every_fold(shipped, runs, tmp_path_factory):
    report, m = shipped["final"]
    _, m_a = shipped["a"]
    bundle = load_bundle(report["bundle"])
    t, mt = m["training"], m["metrics"]
    # the shipped model is the final run's export (parity-checked), not run A's
    run_a = mt["table1_2fold"]["hybrid"]["folds"][0]
    assert bundle.sha256("onnx") == report["final"]["onnx_sha256"] != run_a["onnx_sha256"]
    # --figures: each cross-validation run's confusion matrix (and --final still names the final run)
    figures = Path(report["bundle"]).parent / "figures"
    assert sorted(p.name for p in figures.iterdir()) == [
        "confusion-hybrid-heldout0.png", "confusion-hybrid-heldout1.png", "confusion-raw-heldout1.png"]
    assert t["run"] == "runs/all" and mt["parity"]["max_abs_diff"] <= 1e-4
    assert "every fold" in mt["parity"]["real_source"]
    assert t["heldout_fold"] is None and t["trained_on_folds"] == [0, 1] and "trained_on_fold" not in t
    assert sum(t["classes_with_data"].values()) == 92
    assert [(r["role"], r["run"], r["heldout_fold"]) for r in t["runs"]] == [
        ("shipped (this bundle), trained on every fold", "runs/all", None),
        ("cross-validation run", "runs/h1", 1), ("cross-validation run", "runs/h0", 0),
        ("cross-validation run", "runs/raw1", 1)]
    # every figure is the cross-validation runs', exactly as without --final, and the manifest says so
    for key in ("heldout", "polyp_vs_rest"):
        assert mt[key] == m_a["metrics"][key]
    def no_png(table):  # the figures' paths aside (only the --final step here writes --figures)
        return {k: ({**v, "folds": [{f: x for f, x in r.items() if f != "confusion_png"} for r in v["folds"]]}
                    if isinstance(v, dict) and "folds" in v else v) for k, v in table.items()}

    assert no_png(mt["table1_2fold"]) == no_png(m_a["metrics"]["table1_2fold"])
    assert t["figures_from"] == ("2-fold cross-validation of the same recipe: runs/h1 (held-out fold 1) and "
                                 "runs/h0 (held-out fold 0); the shipped model itself was trained on every fold "
                                 "and has no held-out figures")
    assert "trained on both folds (all 92 images) and has no held-out figures" in m["notes"]
    assert "cross-validation estimates" in m["notes"] and "the cross-validation runs', each chosen" in m["notes"]
    # the operating point: the cross-validation runs' (each chosen on its training fold), at which every
    # figure was measured; the rule on the final run's own training images is recorded, not used
    op = mt["operating_point"]
    cv = [f["polyp_vs_rest"]["operating_point"] for f in mt["table1_2fold"]["hybrid"]["folds"]]
    assert 0 < m["operating_point"]["polyp"] == op["polyp"] == cv_operating_point(cv) < 1
    assert op["chosen_on"].startswith("the cross-validation runs of the same recipe")
    assert op["own_training_images"]["images"] == 92 and 0 < op["own_training_images"]["polyp"] < 1
    assert [(r["run"], r["polyp"], r["chosen_on"]) for r in op["cross_validation_runs"]] == [
        (f["run"], f["polyp_vs_rest"]["operating_point"], f"training fold {f['trained_on_fold']}")
        for f in mt["table1_2fold"]["hybrid"]["folds"]]
    # how to make it again: the final's command trains with --fold all, the ship command names it
    train = t["reproduce"]["train"]
    assert train[0] == t["runs"][0]["command"] and "--fold all" in train[0] and "--out runs/all" in train[0]
    assert train[0].startswith("endoview train classify --data $ENDOVIEW_DATA/labeled-images ")
    assert [c for c in train if "--fold all" in c] == train[:1]
    args = build_parser().parse_args(shlex.split(train[0])[1:])
    assert train_config_from_args(args).fold is None
    assert t["reproduce"]["ship"] == ("python -m train.ship runs/h1 runs/h0 --baseline runs/raw1 --final runs/all "
                                      "-o ./final --figures ./figures --force")
    text = (bundle.path / "manifest.json").read_text()
    assert str(tmp_path_factory.getbasetemp()) not in text and machine_paths(m) == []


def test_ship_refuses_a_final_run_of_another_recipe_before_any_export(runs, synthetic, tmp_path):
    with pytest.raises(TrainError, match=r"--final .*h1 holds out fold 1: .* --fold all"):
        ship([runs["h1"], runs["h0"]], [runs["raw1"]], tmp_path / "x", final=runs["h1"])
    other = tmp_path / "all-lr"
    assert main([*train_args(*synthetic, other, "--fold", "all", "--lr", "0.01"), *SHORT]) == 0
    with pytest.raises(TrainError) as err:
        ship([runs["h1"], runs["h0"]], [runs["raw1"]], tmp_path / "x", final=other)
    msg = str(err.value)
    assert "\n" not in msg and "not trained with the recipe of the cross-validation run" in msg
    assert "lr 0.01 (not 0.003) differ" in msg
    from train.ship import check_final

    with pytest.raises(TrainError, match=r"heads \['raw', 'macro', 'oesophagus', 'ulcer'\] \(not \['raw'\]\)"):
        check_final(runs["all"], [runs["raw1"]])
    assert not (tmp_path / "x").exists()


def test_which_folds_a_model_trained_on():
    assert trained_on({"heldout_fold": 1, "trained_on_fold": 0}, 0) is True  # run A's bundle
    assert trained_on({"heldout_fold": 1, "trained_on_fold": 0}, 1) is False
    assert trained_on({"heldout_fold": None, "trained_on_folds": [0, 1]}, 1) is True  # --final
    assert trained_on({"heldout_fold": None}, 0) is True  # export of a --fold all run
    assert trained_on({"heldout_fold": 1, "trained_on_folds": "0"}, 0) is True  # the segmenter's manifest
    assert trained_on({"heldout_fold": 1, "trained_on_folds": "all but 1"}, 1) is False
    assert trained_on({"trained_on_fold": 0}, 1) is False
    assert trained_on({}, 0) is None
    assert fold_note("m", {"training": {"heldout_fold": 0}}, 0) is None
    assert fold_note("m", {"training": {}}, 0) is None
    assert fold_note("m", {"training": {"heldout_fold": 0}}, None) is None
    assert fold_note("m", {"training": {"heldout_fold": 0}}, 1) == (
        "note: m was trained on fold 1's images: these are not held-out figures (its held-out fold is 0)")


def test_eval_notes_a_fold_the_bundle_trained_on(shipped, synthetic, tmp_path, capsys):
    data, split = synthetic

    def note(report, fold):
        assert main(["eval", report["bundle"], "--data", str(data), "--split-csv", str(split), "--fold", str(fold),
                     "--workers", "0", "--json", "--out", str(tmp_path / f"{fold}")]) == 0
        out = capsys.readouterr()
        assert json.loads(out.out)["n"] == 46
        return [line for line in out.err.splitlines() if line.startswith("note:")]

    a, final = shipped["a"][0], shipped["final"][0]
    assert note(a, 1) == []  # run A's held-out fold
    assert note(a, 0) == ["note: hyperkvasir-mnv3-lowergi was trained on fold 0's images: these are not "
                          "held-out figures (its held-out fold is 1)"]
    for fold in (0, 1):
        assert note(final, fold) == [
            f"note: hyperkvasir-mnv3-lowergi was trained on fold {fold}'s images: these are not held-out figures "
            "(it held no fold out; its manifest holds the cross-validation figures)"]


def test_the_baseline_can_be_carried_from_the_bundle_shipped_before(tmp_path):
    """When the raw-only runs are not on this machine, their recorded rows stand in, marked as carried,
    with the recipe they were trained with (so a recipe that differs is recorded, not judged)."""
    from engine.config import load_config
    from tiny_models import make_tiny_classifier_bundle
    from train.ship import carried_baseline

    shipped = load_config().bundle
    rows = carried_baseline(shipped)
    assert [r["heldout_fold"] for r in rows] == [1] and rows[0]["tag"] == "raw-heldout1"
    # its recipe: the shipped hybrid recipe but for what the manifest records as differing (trained before the flag)
    assert 0.5 < rows[0]["mcc"] < 1 and rows[0]["config"]["white_balance"] == 0.0
    assert rows[0]["config"]["zoom"] == load_bundle(shipped).manifest["training"]["recipe"]["zoom"]
    assert rows[0]["command"].startswith("endoview train classify") and "--heads raw" in rows[0]["command"]
    assert "not measured again" in rows[0]["carried_from"]
    tiny = make_tiny_classifier_bundle(tmp_path / "tiny", torchscript=False)
    with pytest.raises(TrainError, match="records no raw-only baseline"):
        carried_baseline(tiny.path)
