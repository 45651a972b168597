"""The embedded default model: the real-time polyp segmenter, drawn and logged on every frame."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.bundle import load_bundle
from engine.config import DEFAULT_BUNDLE, load_config


def test_the_default_bundle_is_a_trained_polyp_segmenter():
    config = load_config()
    assert config.bundle.name == "polyp-unet" and config.bundle.as_posix().endswith(DEFAULT_BUNDLE)
    b = load_bundle(config.bundle)
    assert b.task == "segment" and b.labels == ("polyp",) and b.outputs == {"mask": "mask"}
    assert b.trained and b.has("onnx")
    t = b.manifest["training"]
    assert t["data"] == "Kvasir-SEG" and t["heldout_fold"] in (0, 1) and "random initialisation" in t["weights"]


def test_annotate_with_the_default_model_logs_the_mask_on_every_frame(tmp_path):
    out = tmp_path / "d.mp4"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "annotate", "demo:320x256@30", "-o", str(out),
                        "--end", "0.5", "--backend", "onnxruntime"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert len(rows) == 15
    for row in rows:
        seg = row["segmentation"]
        assert row["topk"] == [] and seg["model"] == load_bundle(load_config().bundle).name
        assert row["label"] == ("polyp" if seg["area"] else None) and 0 <= seg["confidence"] <= 1


def test_the_csv_log_carries_the_mask(tmp_path):
    import csv

    out = tmp_path / "c.mp4"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "annotate", "demo:320x256@30", "-o", str(out),
                        "--start", "4.5", "--end", "5", "--backend", "onnxruntime"],  # the demo's polyp-like bump
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    jsonl = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(rows) == len(jsonl) == 15
    for row, j in zip(rows, jsonl):
        seg = j["segmentation"]
        assert int(row["mask_area"]) == seg["area"] and row["top1"] == ""
        if seg["bbox"]:
            assert [int(row[k]) for k in ("mask_x", "mask_y", "mask_w", "mask_h")] == seg["bbox"]
        else:
            assert row["mask_x"] == "" and row["label"] == ""
