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
