"""The ship step: two tiny segment runs (one per held-out fold) -> run A's bundle with the 2-fold figures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.bundle import load_bundle
from train.errors import TrainError
from train.seg.ship import INITIALISATION, main, read_run, ship, train_command
from train.seg.trainer import SegTrainConfig, train_segmenter

ROOT = Path(__file__).resolve().parents[2]


def tiny(data_dir, out, fold) -> Path:
    train_segmenter(SegTrainConfig(data=str(data_dir / "kvasir-seg"), out=str(out), fold=fold, image_size=64,
                                   width=8, epochs=1, batch_size=4, limit=6, steps_per_epoch=1, warmup_epochs=1,
                                   progress=False, threads=2))
    return out


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """(run A: trained on fold 0, held-out fold 1; run B: the other way round)."""
    root = tmp_path_factory.mktemp("shipruns")
    return tiny(data_dir, root / "a", fold=1), tiny(data_dir, root / "b", fold=0)


@pytest.fixture(scope="module")
def shipped(runs, tmp_path_factory):
    a, b = runs
    return ship(a, b, tmp_path_factory.mktemp("ship") / "polyp-unet", limit=3, threads=2, latency_runs=2)


def test_ship_writes_run_a_with_both_folds_and_the_mean(shipped, runs, data_dir):
    a, b = runs
    bundle = load_bundle(shipped.bundle.path)
    assert bundle.task == "segment" and bundle.labels == ("polyp",) and bundle.trained
    assert bundle.has("onnx") and not bundle.has("torchscript")  # ONNX only unless --torchscript
    t, m = bundle.manifest["training"], bundle.manifest["metrics"]
    assert t["initialisation"] == INITIALISATION == "trained from random initialisation (no pretrained weights)"
    assert (t["trained_on_fold"], t["heldout_fold"]) == (0, 1) and t["seed"] == 0
    d = t["dataset"]
    assert d["name"] == "Kvasir-SEG" and d["folder"] == "kvasir-seg" and d["images"] == 1000
    assert d["images_per_fold"] == {"0": 500, "1": 500} and "official HyperKvasir 2-fold split" in d["split"]
    by_role = {r["heldout_fold"]: r for r in t["runs"]}
    for fold, run in ((1, a), (0, b)):
        r = by_role[fold]
        rows = [line.split(",") for line in (run / "log.csv").read_text().splitlines()]
        head = rows[0]
        wall = sum(float(x[head.index("train_s")]) + float(x[head.index("val_s")]) for x in rows[1:])
        assert r["trained_on_fold"] == 1 - fold and r["seed"] == 0 and r["epochs"] == 1
        assert r["wall_time_s"] == pytest.approx(wall, abs=0.06) and r["initialisation"] == INITIALISATION
        assert r["command"].startswith("endoview train segment") and f"--fold {fold}" in r["command"]
        assert "--width 8" in r["command"] and "--limit 6" in r["command"] and "--steps-per-epoch 1" in r["command"]
    assert t["wall_time_s"] == by_role[1]["wall_time_s"] and t["epochs_trained"] == 1
    # what the export wrote is kept, the ship step only adds
    assert t["weights"] == "random initialisation" and "parity" in m and "cpu_latency_ms" in m

    cv = m["kvasir_seg_2fold"]
    folds = {f["heldout_fold"]: f for f in cv["folds"]}
    assert set(folds) == {0, 1} and folds[1]["shipped"] and not folds[0]["shipped"]
    assert folds[1]["onnx_sha256"] == bundle.sha256("onnx")  # the evaluated model is the shipped one
    for f in folds.values():
        assert f["images"] == 3 and all(0.0 <= f[k] <= 1.0 for k in ("jaccard", "dice", "recall", "precision"))
        assert f["fps"] > 0
    for k in ("jaccard", "dice", "recall", "precision", "fps"):
        assert cv["mean"][k] == pytest.approx((folds[0][k] + folds[1][k]) / 2)
    assert cv["limited_to_images_per_fold"] == 3
    cmd = t["reproduce"]["ship"]
    # no machine paths in a manifest: run folders as runs/<name>, the data under $ENDOVIEW_DATA
    assert cmd.startswith("python -m train.seg.ship runs/a runs/b ") and "--limit 3" in cmd
    assert "--latency-runs 2" in cmd and cmd.endswith("--force")
    assert str(a.resolve()) not in json.dumps(bundle.manifest) and str(data_dir) not in json.dumps(bundle.manifest)
    expected = [train_command(read_run(r)).replace(str(r.resolve()), f"runs/{r.name}") for r in (a, b)]
    assert t["reproduce"]["train"] == [c.replace(str(data_dir.resolve()), "$ENDOVIEW_DATA") for c in expected]
    json.loads((bundle.path / "manifest.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in manifest"))
    assert "2-fold mean Dice" in bundle.manifest["notes"] and "research use only" in bundle.manifest["notes"].lower()


def test_ship_refuses_bad_pairs_before_any_export(runs, tmp_path):
    a, b = runs
    with pytest.raises(TrainError, match="both runs hold out fold 1"):
        ship(a, a, tmp_path / "x")
    copies = {}
    for tag, run in (("a", a), ("b", b)):
        copies[tag] = tmp_path / f"{tag}-unfinished"
        shutil.copytree(run, copies[tag], ignore=shutil.ignore_patterns("*.pt", "data-cache"))
        cfg = json.loads((run / "config.json").read_text())
        (copies[tag] / "config.json").write_text(json.dumps({**cfg, "epochs": 5}))
    with pytest.raises(TrainError, match="run A .* has trained 1 of 5 epochs.*--allow-unfinished"):
        ship(copies["a"], copies["b"], tmp_path / "x")
    with pytest.raises(TrainError, match="run B .* has trained 1 of 5 epochs"):
        ship(a, copies["b"], tmp_path / "x")  # (a different length alone is a warning in the manifest)
    with pytest.raises(TrainError, match="not a 'train segment' run folder"):
        ship(a, tmp_path, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_help_and_existing_output(shipped, runs, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "RUN_A" in capsys.readouterr().out
    a, b = runs
    assert main([str(a), str(b), "-o", str(shipped.bundle.path)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("endoview: error:") and "--force" in err


def test_module_runs_as_a_script():
    r = subprocess.run([sys.executable, "-m", "train.seg.ship", "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "2-fold" in r.stdout


def test_the_default_bundle_finds_polyps(data_dir):
    """the default segmenter (what the ship step writes) on 30 images of its held-out fold, or of
    fold 1 where it trained on every fold (then its training images; its cross-validation runs'
    held-out figures are in its manifest)."""
    from engine.config import load_config
    from train.seg.evaluate import evaluate_bundle, find_pairs, fold_names

    bundle = load_bundle(load_config().segmenter)
    fold = bundle.manifest["training"]["heldout_fold"]
    fold = 1 if fold is None else fold
    images = data_dir / "kvasir-seg" / "images"
    pairs = find_pairs(images, images.parent / "masks", fold_names(images, fold))[:30]
    m = evaluate_bundle(bundle.path, pairs, threads=2)
    # a floor that says "it finds polyps" (a blank or random mask scores near 0); the held-out Dice
    # of its recipe is in its manifest (kvasir_seg_2fold)
    assert m["images"] == 30 and m["dice"] > 0.5 and m["recall"] > 0.5, m


def test_ship_final_ships_the_run_trained_on_every_fold_with_the_two_runs_figures(runs, data_dir, tmp_path):
    a, b = runs
    final = tmp_path / "all"
    train_segmenter(SegTrainConfig(data=str(data_dir / "kvasir-seg"), out=str(final), fold=None, image_size=64,
                                   width=8, epochs=1, batch_size=4, limit=6, steps_per_epoch=1, warmup_epochs=1,
                                   progress=False, threads=2))
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["fold"] is None and not (final / "checkpoint-best.pt").exists()  # nothing held out to judge
    assert "val_dice" in (final / "log.csv").read_text().splitlines()[0]
    report = ship(a, b, tmp_path / "bundle", final=final, limit=3, threads=2, latency_runs=2)
    bundle = load_bundle(report.bundle.path)
    t, m = bundle.manifest["training"], bundle.manifest["metrics"]
    assert bundle.name.endswith("-allfolds")
    assert (t["heldout_fold"], t["trained_on_folds"], t["trained_on_fold"]) == (None, [0, 1], None)
    assert "no held-out figures" in t["figures_from"] and "cross-validation" in bundle.manifest["notes"]
    assert [r["role"] for r in t["runs"]] == ["shipped (this bundle), trained on every fold",
                                              "cross-validation run (not shipped)", "cross-validation run (not shipped)"]
    assert "--fold all" in t["reproduce"]["train"][0] and "--final runs/all" in t["reproduce"]["ship"]
    cv = m["kvasir_seg_2fold"]
    assert not any(f["shipped"] for f in cv["folds"]) and [f["heldout_fold"] for f in cv["folds"]] == [1, 0]
    assert m["heldout_model_size"] is None and "the run held none out" in m["parity"]["real_source"]
    assert str(final.resolve()) not in json.dumps(bundle.manifest)
    lines = report.lines()
    assert " run A " in lines[2] and " run B " in lines[3] and "shipped" not in lines[2]
    # refused: a run that holds a fold out, or another model
    with pytest.raises(TrainError, match="holds out fold 1"):
        ship(a, b, tmp_path / "x", final=a)
    other = tmp_path / "other"
    shutil.copytree(final, other, ignore=shutil.ignore_patterns("data-cache"))
    (other / "config.json").write_text(json.dumps({**cfg, "width": 16}))
    with pytest.raises(TrainError, match="differs from run A in width"):
        ship(a, b, tmp_path / "x", final=other)
    with pytest.raises(TrainError, match="needs both cross-validation runs"):
        ship(a, None, tmp_path / "x", final=final)
    assert not (tmp_path / "x").exists()
