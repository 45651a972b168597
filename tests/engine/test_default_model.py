"""The embedded default models: the MobileNetV3 classifier and the polyp segmenter on every frame,
one verdict, drawn and logged; and the scope-guide inset decides nothing."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.analysis.classifier import Classifier
from engine.analysis.crop import SCOPE_GUIDE_INSET
from engine.analysis.segmenter import Segmenter
from engine.analysis.verdict import polyp_probability
from engine.backends import open_backend
from engine.bundle import load_bundle
from engine.config import load_config
from engine.pipeline import Analyzer
from engine.types import Frame


def test_the_defaults_are_a_trained_classifier_and_a_segmenter_that_know_polyp_free_frames():
    config = load_config()
    assert config.bundle.as_posix().endswith("engine/assets/models/hyperkvasir-mnv3")  # [model] in engine/assets/config.toml
    assert config.segmenter.as_posix().endswith("engine/assets/models/polyp-unet")
    clf, seg = load_bundle(config.bundle), load_bundle(config.segmenter)
    assert clf.task == "classify" and "polyp" in clf.labels and "normal-cecum" in clf.labels and clf.trained
    assert seg.task == "segment" and seg.labels == ("polyp",) and seg.trained
    for b in (clf, seg):
        assert b.inset == SCOPE_GUIDE_INSET  # both models never see the scope-guide corner
        assert "random initialisation" in json.dumps(b.manifest["training"])
        text = json.dumps(b.manifest)
        assert "/work/" not in text and "/root/" not in text, "a manifest must not hold machine paths"
    assert 0 < clf.manifest["operating_point"]["polyp"] < 1
    assert set(seg.manifest["presence"]) == {"min_peak", "min_area"}
    assert seg.manifest["training"]["negatives"], "the segmenter must have been trained with polyp-free images"


def test_annotate_logs_both_models_and_the_verdict_on_every_frame(tmp_path):
    out = tmp_path / "d.mp4"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "annotate", "demo:320x256@30", "-o", str(out),
                        "--end", "0.5", "--backend", "onnxruntime"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert len(rows) == 15
    config = load_config()
    for row in rows:
        seg = row["segmentation"]
        assert isinstance(row["polyp"], bool) and len(row["topk"]) == 3
        assert seg["model"] == load_bundle(config.segmenter).name
        assert row["label"] == row["topk"][0][0]  # the log's label is the classifier's top-1
        assert isinstance(seg["present"], bool)  # the segmenter's own answer, beside the verdict
    csv_rows = list(csv.DictReader((tmp_path / "d.csv").open()))
    assert [r["polyp"] for r in csv_rows] == [str(int(r["polyp"])) for r in rows]


# ------------------------------------------------------------------------------------------
# the scope-guide inset (issue: a model must not learn "green corner = polyp")

N_EACH = 150  # held-out images of each kind; every image runs twice through both models
MAX_FLIPS = 0.02


def _green_inset(data_dir: Path) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A real green ScopeGuide inset cut from a Kvasir-SEG frame, and where it sat (fractions of the frame)."""
    img = cv2.imread(str(data_dir / "kvasir-seg" / "images" / "cjyzjzssvd8pq0838f4nolj5l.jpg"))
    if img is None:
        pytest.skip("the Kvasir-SEG frame with a green inset is not in the data folder")
    h, w = img.shape[:2]
    b, g, r = (c.astype(np.int16) for c in cv2.split(img))
    green = ((g - r) > 25) & ((g - b) > 0)
    green[: h // 2] = False
    green[:, w // 2:] = False
    n, _, stats, _ = cv2.connectedComponentsWithStats(green.astype(np.uint8))
    x, y, bw, bh, _ = stats[1 + int(np.argmax(stats[1:, 4]))]
    assert bw > 0.15 * w and bh > 0.15 * h, "expected the green inset in the bottom-left quarter"
    return img[y:y + bh, x:x + bw].copy(), (x / w, y / h, (x + bw) / w, (y + bh) / h)


def _held_out(data_dir: Path, fold: int):
    from train.data import load_dataset  # reads the split; torch-free

    roots = [data_dir / "hyperkvasir-lower-gi" / "labeled-images", data_dir / "kvasir-seg"]
    if not roots[0].is_dir():
        pytest.skip("the polyp-free HyperKvasir images are not in the data folder")
    split = data_dir / "hyperkvasir-official-splits" / "official_splits" / "2_fold_split.csv"
    held = load_dataset(roots, split).fold(fold)
    pos = [s.path for s in held if s.label == "polyp"]
    neg = [s.path for s in held if s.label != "polyp"]
    step_p, step_n = max(1, len(pos) // N_EACH), max(1, len(neg) // N_EACH)
    return pos[::step_p][:N_EACH], neg[::step_n][:N_EACH]


def test_the_inset_decides_nothing(data_dir):
    """Held-out-fold images: a real green inset pasted onto polyp-free ones, the inset corner
    blacked out on polyp ones. Each model's polyp verdict may flip on at most 2 % of them.

    The fold is the segmenter's held-out one (fold 1 for a model trained on fold 0); a model trained
    on every fold (``--fold all``, both shipped ones) holds none out, and fold 1's images are then its
    training images: a shortcut it had learned would show on them at least as much."""
    config = load_config()
    clf_b, seg_b = load_bundle(config.bundle), load_bundle(config.segmenter)
    folds = {b.manifest["training"]["heldout_fold"] for b in (clf_b, seg_b)} - {None}
    assert folds <= {1}, f"the default models hold out different folds: {folds}"
    pos, neg = _held_out(data_dir, 1)
    inset, (fx0, fy0, fx1, fy1) = _green_inset(data_dir)

    def paste(img):
        out = img.copy()
        h, w = out.shape[:2]
        x0, y0, x1, y1 = int(fx0 * w), int(fy0 * h), int(fx1 * w), int(fy1 * h)
        out[y0:y1, x0:x1] = cv2.resize(inset, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        return out

    def blacken(img):
        out = img.copy()
        h, w = out.shape[:2]
        out[int(fy0 * h):int(fy1 * h) + 1, :int(fx1 * w) + 1] = 0
        return out

    flips = {"classifier": 0, "segmenter": 0}
    with open_backend(clf_b, "onnxruntime") as cb, open_backend(seg_b, "onnxruntime") as sb:
        clf, seg = Classifier(clf_b, cb), Segmenter(seg_b, sb)
        analyzer = Analyzer(clf, segmenter=seg, smooth=False)

        def verdicts(img):
            analyzer.reset()
            r = analyzer(Frame(0, 0.0, img, 0.0))
            return polyp_probability(r.prediction) >= clf.operating_point, r.segmentation.present

        for paths, change in ((neg, paste), (pos, blacken)):
            for p in paths:
                img = cv2.imread(str(p))
                a, b = verdicts(img), verdicts(change(img))
                flips["classifier"] += a[0] != b[0]
                flips["segmenter"] += a[1] != b[1]
    n = len(pos) + len(neg)
    print(f"inset changed: verdict flips {flips} of {n} images")  # pytest -s or -rP shows it
    assert n >= 2 * N_EACH - 2
    for model, k in flips.items():
        assert k / n <= MAX_FLIPS, f"the {model}'s verdict flipped on {k} of {n} images when the inset changed"
