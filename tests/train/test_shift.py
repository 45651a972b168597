"""train.shift: the verdict on held-out images as another camera would show them."""

import json

import numpy as np
import pytest

from train.shift import SHIFTS, main


@pytest.fixture
def picture():
    rng = np.random.default_rng(0)
    return rng.integers(40, 216, (600, 720, 3), dtype=np.uint8)


def test_each_shift_changes_the_picture_as_it_says(picture):
    b, g, r = (picture[..., c].astype(float).mean() for c in range(3))
    warm, cool = SHIFTS["warm"](picture), SHIFTS["cool"](picture)
    assert warm[..., 2].mean() == pytest.approx(r * 1.18, rel=0.02) and warm[..., 0].mean() == pytest.approx(b * 0.85, rel=0.02)
    assert cool[..., 2].mean() == pytest.approx(r * 0.88, rel=0.02) and cool[..., 0].mean() == pytest.approx(b * 1.15, rel=0.02)
    assert SHIFTS["dark"](picture).mean() < picture.mean() < SHIFTS["bright"](picture).mean()
    assert SHIFTS["low-res"](picture).shape == (288, 346, 3)
    assert SHIFTS["low-res"](picture[:200]).shape == (200, 720, 3)  # already small: left as it is
    noisy = SHIFTS["noise"](picture)
    assert np.array_equal(noisy, SHIFTS["noise"](picture)) and 6 < np.std(noisy.astype(float) - picture) < 10
    assert SHIFTS["blur"](picture).std() < picture.std() and SHIFTS["jpeg"](picture).shape == picture.shape
    for name, shift in SHIFTS.items():
        if shift is not None:
            out = shift(picture)
            assert out.dtype == np.uint8 and out.ndim == 3, name


def test_the_shipped_pair_on_a_few_real_images_as_they_are_and_warmer(data_dir, capsys):
    from engine.config import load_config

    split = data_dir / "hyperkvasir-official-splits" / "official_splits" / "2_fold_split.csv"
    if not split.is_file() or not (data_dir / "hyperkvasir-lower-gi").is_dir():
        pytest.skip("needs the split file and the polyp-free HyperKvasir images")
    config = load_config()
    roots = [str(data_dir / "kvasir-seg"), str(data_dir / "hyperkvasir-lower-gi" / "labeled-images"),
             str(data_dir / "hyperkvasir-ileum")]
    assert main([str(config.segmenter), str(config.bundle), "--fold", "1", "--data", *roots, "--split-csv", str(split),
                 "--limit", "6", "--shifts", "none", "warm", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["polyp_images"] == 6 and out["negative_images"] == 6 and list(out["shifts"]) == ["none", "warm"]
    for r in out["shifts"].values():
        assert set(r) == {"verdict", "classifier"}
        assert all(0 <= v <= 1 for k in r.values() for v in k.values())
    # trained on these images (both folds): as they are, the shipped pair gets them right
    assert out["shifts"]["none"]["verdict"] == {"sensitivity": 1.0, "specificity": 1.0}


def test_the_command_says_what_is_wrong_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path), "--fold", "1", "--data", str(tmp_path),
                 "--split-csv", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
