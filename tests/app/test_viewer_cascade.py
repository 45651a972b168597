"""The viewer's second-pass controls with the paper's Cascade Mask R-CNN (an instances bundle).

The bundle is a real MMDetection model exported by ``export-seg`` from a shrunk, untrained run
(random weights, 128 px): it exercises loading, the worker, the A key, the status line and the
overlay, not the model's skill.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

pytest.importorskip("mmdet", reason="Cascade Mask R-CNN needs the seg extra (bash scripts/test.sh installs it)")

from test_viewer import WAIT, on_screen, opened, paused_at  # noqa: E402


@pytest.fixture(scope="module")
def cascade_bundle(data_dir, tmp_path_factory) -> Path:
    import json

    from train.cli import main as train_main
    from train.seg.cli import main as seg_main
    from train.seg.coco import build_coco
    from train.seg.data import load_kvasir_seg

    root = tmp_path_factory.mktemp("cascade")
    samples = load_kvasir_seg(data_dir / "kvasir-seg")
    (root / "coco" / "annotations").mkdir(parents=True)
    for k in (0, 1):
        doc = build_coco([s for s in samples if s.fold == k][:1], image_dir=root / "coco" / "images")
        (root / "coco" / "annotations" / f"fold{k}.json").write_text(json.dumps(doc), encoding="utf-8")
    run = root / "run"
    assert train_main(["train", "segment", "--arch", "cascade", "--data", str(root / "coco"), "--fold", "1",
                       "--out", str(run), "--shrink", "--epochs", "0", "--threads", "2"]) == 0
    assert seg_main(["export-seg", str(run), "-o", str(root / "bundle")]) == 0
    return root / "bundle"


@pytest.mark.slow
def test_the_a_key_runs_the_cascade_on_the_paused_frame(qtbot, make_viewer, clip, cascade_bundle):
    w = make_viewer(second_pass=cascade_bundle)
    opened(qtbot, w, clip)
    paused_at(qtbot, w, 89)
    w.session.seek(30)
    paused_at(qtbot, w, 30)
    qtbot.waitUntil(lambda: w.session.shown is not None and w.session.shown.frame.index == 30, timeout=WAIT)
    before = on_screen(w.session.shown).copy()
    qtbot.keyClick(w.video, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: w.session.shown.result.second_pass is not None, timeout=60_000)
    sp = w.session.shown.result.second_pass
    assert sp.frame_index == 30 and "cascade" in sp.model
    assert sp.masks is not None and sp.boxes is not None and sp.scores is not None
    assert sp.label in ("polyp", "no polyp")
    assert f"second pass: {sp.label}" in w.state.status and "(frame 30)" in w.state.status
    assert "error" not in (w.last_message or "").lower()
    # the picture on screen was redrawn with the second pass's panel
    assert (on_screen(w.session.shown) != before).any()
    w.controls.second.setChecked(True)  # a bundle is configured: the toggle stays on
    assert w.state.second_pass and w.session.triggers_on
