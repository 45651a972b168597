"""Kvasir-SEG folds and COCO instances, on the real data in ../shared/data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train.errors import DataError
from train.seg.coco import box_iou, build_coco, kvasir_boxes, regions, rle_decode, rle_encode, sample_annotations
from train.seg.data import load_kvasir_seg, load_pair


@pytest.fixture(scope="module")
def samples(data_dir):
    return load_kvasir_seg(data_dir / "kvasir-seg")


def test_official_folds_500_500_disjoint(samples):
    assert len(samples) == 1000
    folds = {k: {s.name for s in samples if s.fold == k} for k in (0, 1)}
    assert {k: len(v) for k, v in folds.items()} == {0: 500, 1: 500}
    assert not folds[0] & folds[1]
    assert len({s.uuid for s in samples}) == 1000


def test_data_root_may_be_the_shared_folder(data_dir):
    assert len(load_kvasir_seg(data_dir)) == 1000


def test_missing_mapping_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="mapping"):
        load_kvasir_seg(tmp_path)


def test_rle_roundtrip():
    rng = np.random.default_rng(0)
    for shape in ((5, 7), (1, 1), (30, 20)):
        m = rng.random(shape) > 0.6
        assert np.array_equal(rle_decode(rle_encode(m)), m)
    full = np.ones((4, 3), bool)
    assert rle_encode(full)["counts"][0] == 0
    assert np.array_equal(rle_decode(rle_encode(full)), full)


def test_regions_split_connected_components():
    m = np.zeros((20, 20), bool)
    m[2:6, 2:6] = True
    m[10:18, 12:19] = True
    r = regions(m)
    assert [a for _, _, a in r] == [56, 16]
    assert r[1][1] == [2, 2, 4, 4]


def test_kvasir_box_convention(data_dir, samples):
    bboxes = json.loads((data_dir / "kvasir-seg" / "kavsir_bboxes.json").read_text())
    s = samples[0]
    _, _, anns = sample_annotations(s, masking=False)
    big = [a for a in anns if a["area"] > 400]
    assert max(box_iou(big[0]["bbox"], r) for r in kvasir_boxes(bboxes[s.name])) > 0.97


def check_coco(coco, subset):
    assert len(coco["images"]) == len(subset)
    assert coco["categories"] == [{"id": 1, "name": "polyp", "supercategory": "polyp"}]
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for img, s in zip(coco["images"], subset):
        _, mask, _ = sample_annotations(s)
        anns = by_image.get(img["id"], [])
        assert anns, f"{s.name}: no instance"
        union = np.zeros(mask.shape, bool)
        for a in anns:
            m = rle_decode(a["segmentation"])
            assert int(m.sum()) == a["area"]
            assert not (union & m).any(), "instances overlap"
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            union |= m
        assert np.array_equal(union, mask), f"{s.name}: mask pixels not covered by an instance"
    c = coco["info"]["bbox_check"]
    assert c["checked"] >= len(subset) and c["matched"] >= 0.95 * c["checked"], c


def test_coco_instances_cover_every_mask_pixel(data_dir, samples, tmp_path):
    bboxes = json.loads((data_dir / "kvasir-seg" / "kavsir_bboxes.json").read_text())
    subset = [s for s in samples if s.fold == 0][:12] + [s for s in samples if s.fold == 1][:12]
    coco = build_coco(subset, bboxes=bboxes, image_dir=tmp_path / "images")
    check_coco(coco, subset)
    assert len(list((tmp_path / "images").glob("*.jpg"))) == 24


@pytest.mark.slow
def test_coco_full_folds(data_dir, samples):
    bboxes = json.loads((data_dir / "kvasir-seg" / "kavsir_bboxes.json").read_text())
    names = {}
    for k in (0, 1):
        coco = build_coco([s for s in samples if s.fold == k], bboxes=bboxes)
        assert len(coco["images"]) == 500
        assert len(coco["annotations"]) >= 500
        names[k] = {i["kvasir_seg_name"] for i in coco["images"]}
        c = coco["info"]["bbox_check"]
        assert c["matched"] >= 0.95 * c["checked"], c
    assert not names[0] & names[1]


def test_model_input_pair_is_masked_like_the_engine(samples):
    img, mask, field = load_pair(samples[0], (96, 96))
    assert img.shape == (96, 96, 3) and mask.shape == field.shape == (96, 96)
    assert not img[~field].any(), "pixels outside the field must be black"
    assert not (mask & ~field).any()
    assert 0.02 < mask.mean() < 0.9


def test_write_coco_and_cli(data_dir, tmp_path, monkeypatch, capsys):
    import train.seg.coco as coco_mod
    from train.cli import main

    real = coco_mod.load_kvasir_seg
    monkeypatch.setattr(coco_mod, "load_kvasir_seg", lambda *a, **k: real(*a, **k)[::100])  # 10 images
    assert main(["data", "kvasir-coco", str(data_dir / "kvasir-seg"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fold 0:" in out and "fold 1:" in out
    for k in (0, 1):
        coco = json.loads((tmp_path / "annotations" / f"fold{k}.json").read_text())
        assert all(i["fold"] == k for i in coco["images"])
        assert all((tmp_path / "images" / i["file_name"]).is_file() for i in coco["images"])
