"""Reading HyperKvasir's layout with the split file; real split file and real images."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.analysis.content_area import detect_content_area
from engine.analysis.crop import model_input
from train.data import (ARCHIVE_FOLDERS, CLASS_TO_ARCHIVE_PATH, FOLDER_TO_CLASS, format_counts, load_dataset,
                        load_model_input, scan_images)
from train.errors import DataError
from train.labels import RAW_CLASSES
from train.split import read_split
from train.synthetic import make_synthetic_hyperkvasir


def test_every_archive_folder_maps_to_one_class_and_covers_all_23():
    assert sorted(FOLDER_TO_CLASS[f] for f in ARCHIVE_FOLDERS) == sorted(RAW_CLASSES)
    assert CLASS_TO_ARCHIVE_PATH["hemorroids"] == "lower-gi-tract/pathological-findings/hemorrhoids"
    assert CLASS_TO_ARCHIVE_PATH["normal-z-line"] == "upper-gi-tract/anatomical-landmarks/z-line"


@pytest.mark.parametrize("layout", ["archive", "plain"])
def test_both_layouts_read_with_counts_per_fold(tmp_path, layout):
    data, split = make_synthetic_hyperkvasir(tmp_path, per_class=3, size=32, layout=layout)
    ds = load_dataset(data, split)
    assert len(ds.samples) == 69 and ds.folds == [0, 1]
    counts = ds.counts()
    assert counts["hemorroids"] == {0: 2, 1: 1}
    table = format_counts(ds)
    assert "hemorroids" in table and table.splitlines()[-1].split() == ["all", "46", "23", "69", "0"]


def test_folder_that_matches_no_class_fails_naming_it(tmp_path):
    data, split = make_synthetic_hyperkvasir(tmp_path, per_class=1, size=32, classes=("polyp",))
    odd = data / "lower-gi-tract" / "pathological-findings" / "polypz"
    odd.mkdir()
    shutil.copy(next((data / CLASS_TO_ARCHIVE_PATH["polyp"]).glob("*.jpg")), odd / "x.jpg")
    with pytest.raises(DataError, match=r"polypz matches no HyperKvasir class"):
        scan_images(data)


def test_image_missing_from_split_or_in_the_wrong_folder_fails(tmp_path):
    data, split = make_synthetic_hyperkvasir(tmp_path, per_class=2, size=32, classes=("polyp", "ileum"))
    polyp = data / CLASS_TO_ARCHIVE_PATH["polyp"]
    stray = polyp / "not-in-split.jpg"
    shutil.copy(next(polyp.glob("*.jpg")), stray)
    with pytest.raises(DataError, match="not-in-split.jpg is not listed in the split file"):
        load_dataset(data, split)
    stray.unlink()
    moved = next(polyp.glob("*.jpg"))
    moved.rename(data / CLASS_TO_ARCHIVE_PATH["ileum"] / moved.name)
    with pytest.raises(DataError, match="'ileum' folder .* split file .* says polyp"):
        load_dataset(data, split)


def test_malformed_split_files(tmp_path):
    bad = tmp_path / "s.csv"
    bad.write_text("name,class,fold\n")
    with pytest.raises(DataError, match="header"):
        read_split(bad)
    bad.write_text("file-name;class-name;split-index\na.jpg;hemorrhoids;0\n")
    with pytest.raises(DataError, match=r"s.csv:2: class 'hemorrhoids' is not one of"):
        read_split(bad)
    with pytest.raises(DataError, match="split file not found"):
        read_split(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------
# real data


@pytest.fixture(scope="module")
def split_csv(data_dir) -> Path:
    return data_dir / "hyperkvasir-official-splits" / "official_splits" / "2_fold_split.csv"


def test_real_split_file(split_csv):
    rows = read_split(split_csv)
    assert len(rows) == 10662
    assert {r.label for r in rows.values()} == set(RAW_CLASSES)
    per = {}
    for r in rows.values():
        per.setdefault(r.label, [0, 0])[r.fold] += 1
    assert per["ileum"] == [4, 5] and per["polyp"] == [514, 514] and per["hemorroids"] == [3, 3]
    assert [sum(v[k] for v in per.values()) for k in (0, 1)] == [5324, 5338]


def real_layout(data_dir: Path, root: Path) -> Path:
    """The real ileum and Kvasir-SEG polyp images, linked under HyperKvasir's layout and names."""
    labeled = root / "labeled-images"
    ileum = labeled / CLASS_TO_ARCHIVE_PATH["ileum"]
    polyp = labeled / CLASS_TO_ARCHIVE_PATH["polyp"]
    ileum.mkdir(parents=True)
    polyp.mkdir(parents=True)
    for f in sorted((data_dir / "hyperkvasir-ileum" / "ileum").glob("*.jpg")):
        (ileum / f.name).symlink_to(f)
    mapping = data_dir / "hyperkvasir-segmented-bboxes" / "kvasirseg_to_hyperkvasir_uuid_by_bbox.csv"
    with open(mapping, newline="") as fh:
        for row in csv.DictReader(fh):
            src = data_dir / "kvasir-seg" / "images" / f"{row['kvasir_seg_name']}.jpg"
            (polyp / f"{row['hyperkvasir_uuid_candidates']}.jpg").symlink_to(src)
    return labeled


@pytest.fixture(scope="module")
def real_data(data_dir, tmp_path_factory) -> Path:
    return real_layout(data_dir, tmp_path_factory.mktemp("real"))


def test_real_ileum_and_polyp_images_match_the_split(real_data, split_csv):
    ds = load_dataset(real_data, split_csv)
    counts = ds.counts()
    assert counts["ileum"] == {0: 4, 1: 5}
    assert counts["polyp"] == {0: 500, 1: 500}  # Kvasir-SEG: 1,000 of HyperKvasir's 1,028 polyps
    assert ds.missing["polyp"] == 28 and "ileum" not in ds.missing
    assert sum(ds.missing.values()) == 10662 - 1009


def test_training_input_is_the_engines_model_input(real_data, split_csv):
    """No augmentation: the bytes the viewer would feed (black outside the field)."""
    import torch

    from train.augment import ImageDataset

    ds = load_dataset(real_data, split_csv)
    samples = [s for s in ds.samples if s.label == "polyp"][:6]
    train_view = ImageDataset(samples, (224, 224), augment=False)
    aug_view = ImageDataset(samples, (224, 224), augment=True)
    bordered = 0
    for i, s in enumerate(samples):
        import cv2

        bgr = cv2.imread(str(s.path))
        area = detect_content_area(bgr)
        expected = model_input(bgr, area, (224, 224), mask=True)
        x, y = train_view[i]
        assert y == RAW_CLASSES.index("polyp")
        np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), expected)
        rgb, field = load_model_input(s.path, (224, 224), with_mask=True)
        if area.shape != "full":
            bordered += 1
            assert not rgb[~field].any()  # black outside the field
            assert field.mean() < 0.99
        torch.manual_seed(i)
        xa, _ = aug_view[i]
        assert xa.dtype == torch.uint8 and xa.shape == (3, 224, 224)
    assert bordered >= 3  # Kvasir-SEG frames carry the processor's border


# --------------------------------------------------------------------------------------------
# several roots: the shared data's six lower-GI classes


def shared_roots(data_dir: Path) -> list[Path]:
    roots = [data_dir / "hyperkvasir-lower-gi" / "labeled-images", data_dir / "kvasir-seg",
             data_dir / "hyperkvasir-ileum"]
    if not roots[0].is_dir():
        pytest.skip(f"the polyp-free HyperKvasir images are not in {data_dir}")
    return roots


def test_three_roots_combine_into_six_classes_on_the_official_split(data_dir, split_csv):
    ds = load_dataset(shared_roots(data_dir), split_csv)
    counts = {c: v for c, v in ds.counts().items() if sum(v.values())}
    # the per-fold figures hyperkvasir-lower-gi/SOURCE.txt states, Kvasir-SEG's 500/500, the 9 ileum
    assert counts == {"normal-cecum": {0: 198, 1: 202}, "bbps-2-3": {0: 177, 1: 142},
                      "bbps-0-1": {0: 66, 1: 84}, "impacted-stool": {0: 65, 1: 66},
                      "polyp": {0: 500, 1: 500}, "ileum": {0: 4, 1: 5}}
    assert len(ds.samples) == 2009
    polyp = [s for s in ds.samples if s.label == "polyp"]
    assert all(s.path.parent.name == "images" for s in polyp)  # Kvasir-SEG's own files, mapped by id
    assert "hyperkvasir-lower-gi" in format_counts(ds) or "2009" in format_counts(ds)


def test_the_same_root_twice_is_refused(data_dir, split_csv):
    roots = shared_roots(data_dir)
    with pytest.raises(DataError, match="two data folders"):
        load_dataset([roots[2], roots[2]], split_csv)


def test_data_counts_command_takes_several_roots(data_dir, split_csv, capsys):
    from train.cli import main

    assert main(["data", "counts", "--data", *map(str, shared_roots(data_dir)), "--split-csv", str(split_csv)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("all "))
    assert line.split()[1:4] == ["1010", "999", "2009"]


def test_decoded_arrays_blank_the_inset_in_image_and_field(data_dir, split_csv, tmp_path):
    from engine.analysis.crop import SCOPE_GUIDE_INSET, inset_pixels
    from train.data import load_arrays

    ds = load_dataset(shared_roots(data_dir)[1:], split_csv)
    samples = [s for s in ds.samples if s.label == "polyp"][:5]
    a = load_arrays(samples, (64, 64), inset=SCOPE_GUIDE_INSET, cache_dir=tmp_path)
    x0, y0, x1, y1 = inset_pixels(SCOPE_GUIDE_INSET, (64, 64))
    assert not a["images"][:, y0:y1, x0:x1].any() and not a["fields"][:, y0:y1, x0:x1].any()
    assert a["images"][:, :y0].any() and list(a["labels"]) == [RAW_CLASSES.index("polyp")] * 5
    again = load_arrays(samples, (64, 64), inset=SCOPE_GUIDE_INSET, cache_dir=tmp_path)  # from the cache
    assert np.array_equal(again["images"], a["images"]) and len(list(tmp_path.glob("*.npz"))) == 1


def test_decoded_arrays_carry_the_polyp_masks_when_asked(data_dir, split_csv, tmp_path):
    """For the zoom: Kvasir-SEG's masks through the same crop and resize as the images (the seg
    trainer's own pairs), empty for a polyp-free image; without ``masks`` the arrays of before."""
    from engine.analysis.crop import SCOPE_GUIDE_INSET
    from train.data import load_arrays
    from train.seg.data import load_kvasir_seg, load_pair

    ds = load_dataset(shared_roots(data_dir), split_csv)
    polyps = [s for s in ds.samples if s.label == "polyp"][:3]
    clean = [s for s in ds.samples if s.label == "normal-cecum"][:2]
    assert all(s.mask is not None and s.mask.parent.name == "masks" for s in polyps)
    assert all(s.mask is None for s in clean)
    a = load_arrays(polyps + clean, (64, 64), inset=SCOPE_GUIDE_INSET, cache_dir=tmp_path, masks=True)
    plain = load_arrays(polyps + clean, (64, 64), inset=SCOPE_GUIDE_INSET, cache_dir=tmp_path)
    assert "masks" not in plain and len(list(tmp_path.glob("*.npz"))) == 2  # two cache files
    assert np.array_equal(a["images"], plain["images"]) and np.array_equal(a["fields"], plain["fields"])
    assert a["masks"][:3].reshape(3, -1).any(1).all() and not a["masks"][3:].any()
    pair = next(p for p in load_kvasir_seg(shared_roots(data_dir)[1], split_csv=split_csv) if p.image == polyps[0].path)
    _, mask, _ = load_pair(pair, (64, 64), SCOPE_GUIDE_INSET)
    assert np.array_equal(a["masks"][0].astype(bool), mask)
    assert not np.any(a["masks"] & (1 - a["fields"]))  # inside the field only


def test_two_processes_caching_the_same_arrays_do_not_rename_each_others_file(tmp_path, monkeypatch):
    """The ranks of a torchrun job decode the same images into one cache file. Here rank 2 writes
    and renames between rank 1's write and rename: with one shared temporary name, rank 1's rename
    found its file gone (the race test_ddp hit); each process now writes its own."""
    import os

    from train.images import cached_arrays

    path = tmp_path / "cache" / "arrays.npz"
    real_replace = os.replace
    sources = []

    def replace(src, dst):
        sources.append(Path(src).name)
        if len(sources) == 1:  # rank 1 is about to rename: rank 2 writes and renames first
            monkeypatch.setattr(os, "getpid", lambda: 2)
            cached_arrays(path, ["x"], lambda: {"x": np.arange(3)})
        real_replace(src, dst)

    monkeypatch.setattr(os, "getpid", lambda: 1)
    monkeypatch.setattr(os, "replace", replace)
    out = cached_arrays(path, ["x"], lambda: {"x": np.arange(3)})
    assert out["x"].tolist() == [0, 1, 2]
    with np.load(path) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert len(sources) == 2 and sources[0] != sources[1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["arrays.npz"]  # no temporary file left
