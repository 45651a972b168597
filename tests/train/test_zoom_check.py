"""scripts/zoom_check.py: the zoomed view it feeds, and a short run of it on the shipped classifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from engine.analysis.content_area import detect_content_area

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "zoom_check.py"
SHIPPED = ROOT / "engine" / "assets" / "models" / "hyperkvasir-mnv3"


def _script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import zoom_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return zoom_check


def test_the_zoomed_view_is_the_field_centre_scaled_back():
    zoom_check = _script()
    image = np.zeros((200, 300, 3), np.uint8)
    image[20:180, 50:250] = 90  # the visible field: 200 x 160 at (50, 20), black border around it
    image[90:110, 140:160] = 250  # a 20 x 20 square at the field's centre
    assert zoom_check.zoomed(image, 1.0) is image
    view = zoom_check.zoomed(image, 2.0)
    _, _, w, h = detect_content_area(image).bbox  # about the field drawn here
    assert view.shape == (h, w, 3)  # the field's size, the border left behind
    bright = view[..., 0] > 170
    ys, xs = np.nonzero(bright)
    assert abs(int(bright.sum()) - 40 * 40) <= 4 * 40  # the square, twice the side
    assert abs(xs.mean() - (w - 1) / 2) < 1.5 and abs(ys.mean() - (h - 1) / 2) < 1.5

def test_flips_count_both_ways_against_zoom_1():
    zoom_check = _script()
    called = np.array([[True, True], [False, True], [True, False], [False, False]])
    rows = zoom_check.summarise(called, [1.0, 2.0])
    assert rows[0] == {"zoom": 1.0, "images": 4, "called_polyp": 2, "flips": 0, "to_polyp": 0, "to_free": 0}
    assert rows[1] == {"zoom": 2.0, "images": 4, "called_polyp": 2, "flips": 2, "to_polyp": 1, "to_free": 1}


def test_zoom_check_on_the_shipped_classifier(data_dir, tmp_path):
    out = tmp_path / "zoom.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(SHIPPED), "--data", str(data_dir), "--per-class", "2",
                           "--polyps", "2", "--zooms", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    assert proc.returncode == 0, proc.stderr
    # the shipped model trained on both folds: the script says so, as endoview eval does
    assert "was trained on fold 1's images: these are not held-out figures" in proc.stdout
    report = json.loads(out.read_text())
    shipped_point = json.loads((SHIPPED / "manifest.json").read_text())["operating_point"]["polyp"]
    assert report["zooms"] == [1.0, 2.0] and report["operating_point"] == shipped_point  # the bundle's own
    free, polyp = report["groups"]["polyp-free"], report["groups"]["polyp"]
    assert free["classes"] == ["normal-cecum", "bbps-2-3", "bbps-0-1", "impacted-stool"]
    assert polyp["classes"] == ["polyp"]
    assert polyp["by_zoom"][0]["images"] == 2 and free["by_zoom"][1]["images"] == 8
    assert [k[0] for k in report["classes"]["polyp"]["polyp_in_view"]] == [1.0, 1.0]  # zoom 1: the whole polyp
    assert "polyp in view" in proc.stdout
    assert all(len(s) == 2 for c in report["classes"].values() for s in c["scores"])
