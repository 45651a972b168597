"""The procedure stage in the Analyzer: quality, detections at the model's size, tracks and the
polyp count on every result and log row; the alert policy, the findings rows, the timeline's
unusable frames, the overlay's styles, edge markers and count; `endoview report VIDEO`."""

from __future__ import annotations

import csv
import json
import statistics
import time

import cv2
import numpy as np
import pytest

from engine.analysis.tracker import ContentAreaTracker
from engine.overlay import EDGE_HINT_GONE, SEG_COLOR, EdgeHint, Overlay
from engine.pipeline import Analyzer
from engine.procedure.alerts import AlertPolicy
from engine.procedure.findings import AnalysedRows, PolypFindings
from engine.procedure.quality import Quality
from engine.procedure.stage import ProcedureStage
from engine.procedure.summary import summarize
from engine.procedure.tracking import FrameTracks, TrackedBox, TrackEvent
from engine.types import ContentArea, Frame, FrameResult, Prediction, SegmentationResult
from scripted import MODEL, ScriptedAnalyzer

W, H = 320, 256


def textured(index: int = 0, w: int = W, h: int = H) -> np.ndarray:
    """A sharp, mid-grey, full-frame picture (quality ok), the same on every frame."""
    rng = np.random.default_rng(7)
    img = rng.integers(60, 180, (h // 4, w // 4, 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST))


def analyse(blob, n, start=0, analyzer=None):
    analyzer = analyzer or ScriptedAnalyzer(blob)
    out = []
    for i in range(start, start + n):
        out.append(analyzer(Frame(i, i / 25.0, textured(), 0.0), {}))
    return analyzer, out


def moving_blob(i):
    """A polyp in view on frames 5..39, drifting right."""
    return (0.3 + 0.005 * i, 0.5, 0.12) if 5 <= i < 40 else None


def test_every_result_carries_quality_detections_tracks_and_the_count():
    analyzer, results = analyse(moving_blob, 50)
    assert all(r.quality is not None and r.quality.ok for r in results)
    assert all(r.tracks is not None and r.polyps is not None for r in results)
    assert results[4].detections == () and results[4].polyps == 0
    # detections at the model's size, mapped onto the frame: the blob's box in frame pixels
    x, y, w, h = results[20].detections[0].bbox
    cx, cy = (0.3 + 0.1) * W, 0.5 * H
    assert abs(x + w / 2 - cx) < W / 40 + 2 and abs(y + h / 2 - cy) < H / 40 + 2
    assert abs(w - 0.24 * W) < W / 20 and results[20].detections[0].confidence == pytest.approx(0.9)
    # confirmed after 5 frames in a row (5..9), one track, the count follows
    confirmed = [(r.frame.index, e.track_id, e.first_frame) for r in results for e in r.tracks.events]
    assert confirmed == [(9, 1, 5)]
    assert [r.polyps for r in results[8:11]] == [0, 1, 1] and results[-1].polyps == 1
    assert [t.id for t in results[20].tracks.tracks] == [1]
    assert results[45].tracks.tracks == () and analyzer.procedure.count == 1
    assert {"quality", "track"} <= set(results[20].timings)


def test_log_rows_carry_tracks_quality_models_and_give_the_same_count_again(tmp_path):
    from engine.outputs.logs import CSV_FIELDS, FrameLog

    _, results = analyse(moving_blob, 50)
    row = results[20].to_log_row()
    assert row["tracks"] == [{"id": 1, "bbox": list(results[20].detections[0].bbox), "confidence": 0.9}]
    assert row["polyps"] == 1 and row["quality"]["ok"] is True and set(row["quality"]) >= {"sharpness", "issue"}
    assert row["models"] == [{"name": "scripted", "task": "segment", "version": "2026-01-02"}]
    assert results[9].to_log_row()["events"][0] == {"event": "confirmed", "id": 1, "frame": 9, "time": 0.36,
                                                    "first_frame": 5, "first_s": 0.2}
    json.dumps(row)
    # the report re-tracks the rows' detections: the same single polyp, and the model's version
    rows = [r.to_log_row() for r in results]
    summary = summarize(rows)
    assert summary["polyps"] == 1 and summary["tracks"][0]["first_frame"] == 5
    assert summary["model_versions"] == {"scripted": "2026-01-02"}
    # CSV: the count, the tracks on the frame and the quality
    path = tmp_path / "log.csv"
    log = FrameLog(path)
    for r in results:
        log.write(r)
    log.close()
    table = list(csv.DictReader(path.open()))
    assert list(table[0]) == list(CSV_FIELDS)
    assert (table[20]["polyps"], table[20]["tracks"], table[20]["quality"]) == ("1", "1", "ok")
    assert (table[2]["polyps"], table[2]["tracks"]) == ("0", "0")


def test_a_seek_ends_the_tracks_but_the_count_stays():
    analyzer, first = analyse(moving_blob, 30)
    assert first[-1].polyps == 1
    analyzer.reset()  # what the player does on a seek
    _, again = analyse(moving_blob, 25, start=10, analyzer=analyzer)
    events = [(r.frame.index, e.track_id) for r in again for e in r.tracks.events]
    assert events == [(14, 2)]  # a new track (ids go on), confirmed 5 frames after the seek
    assert again[-1].polyps == 2
    # frames that go back without a reset end the tracks too (no error)
    _, back = analyse(moving_blob, 3, start=12, analyzer=analyzer)
    assert back[-1].polyps == 2 and back[-1].tracks.tracks == ()


def test_negative_frames_and_a_segmenter_alone_without_a_mask_have_no_detection():
    stage = ProcedureStage()
    area = ContentArea.full_frame(W, H)
    prob = np.zeros(MODEL, np.float32)
    seg = SegmentationResult(np.zeros((H, W), bool), 0.1, probability=prob)
    r = FrameResult(Frame(0, 0.0, textured(), 0.0), area, segmentation=seg, polyp=True)
    assert stage.detect(r) == []
    r.polyp = False
    prob[10:20, 10:20] = 0.9
    assert stage.detect(r) == []  # the verdict decides


def test_detections_map_from_the_model_size_onto_the_fields_box():
    area = ContentArea((100, 50, 200, 160), "rectangle",
                       np.array([[100, 50], [299, 50], [299, 209], [100, 209]], np.int32), 1.0, (400, 300))
    prob = np.zeros((40, 40), np.float32)
    prob[10:20, 20:30] = 0.8  # rows 10..19, columns 20..29 of the 40 x 40 input
    seg = SegmentationResult(np.zeros((300, 400), bool), 0.8, probability=prob)
    r = FrameResult(Frame(0, 0.0, np.zeros((300, 400, 3), np.uint8), 0.0), area, segmentation=seg, polyp=True)
    (d,) = ProcedureStage().detect(r)
    assert d.bbox == (100 + 100, 50 + 40, 50, 40) and d.confidence == pytest.approx(0.8)


def test_a_classifier_alone_tracks_the_fields_box_with_the_polyp_probability():
    area = ContentArea.full_frame(W, H)
    p = Prediction(("normal", "polyp"), np.array([0.3, 0.7], np.float32), "clf", 1.0)
    r = FrameResult(Frame(0, 0.0, textured(), 0.0), area, prediction=p, polyp=True)
    (d,) = ProcedureStage().detect(r)
    assert d.bbox == (0, 0, W, H) and d.confidence == pytest.approx(0.7)


def test_without_a_model_only_quality_is_measured():
    analyzer = Analyzer(None, tracker=ContentAreaTracker())
    r = analyzer(Frame(0, 0.0, textured(), 0.0), {})
    assert r.quality is not None and r.tracks is None and r.polyps is None
    row = r.to_log_row()
    assert "quality" in row and "tracks" not in row and "polyps" not in row
    assert Analyzer(None, procedure=False)(Frame(0, 0.0, textured(), 0.0), {}).quality is None


def test_a_blurred_frame_is_flagged_unusable():
    analyzer, _ = analyse(moving_blob, 1)
    blurred = cv2.GaussianBlur(textured(), (0, 0), 6)
    r = analyzer(Frame(1, 0.04, blurred, 0.0), {})
    assert not r.quality.ok and r.quality.issue == "blurred"


def test_the_stage_costs_little_per_frame_on_a_large_frame():
    """Quality on a 256-pixel copy of the field plus detections at the model's size and the tracker:
    a few milliseconds on a 1280 x 1024 frame (the README quotes the measured figures)."""
    image = cv2.resize(textured(), (1280, 1024), interpolation=cv2.INTER_NEAREST)
    area = ContentArea.full_frame(1280, 1024)
    stage = ProcedureStage()
    prob = np.zeros((160, 160), np.float32)
    cv2.circle(prob, (80, 80), 20, 0.9, -1)
    seg = SegmentationResult(np.zeros((1024, 1280), bool), 0.9, probability=prob)
    times = []
    for i in range(30):
        r = FrameResult(Frame(i, i / 25, image, 0.0), area, segmentation=seg, polyp=True)
        t0 = time.perf_counter()
        stage(r)
        times.append((time.perf_counter() - t0) * 1000)
    assert r.polyps == 1
    assert min(times) < 15.0, times  # the best case (about 3 ms idle); a loaded 2-core machine is slower
    assert statistics.median(times) < 60.0, times


# --------------------------------------------------------------------------- alerts


def tracks_result(index, seen=(), missing=(), events=(), ok=True):
    area = ContentArea.full_frame(W, H)
    r = FrameResult(Frame(index, index / 25, np.zeros((H, W, 3), np.uint8), 0.0), area, polyp=bool(seen))
    box = lambda i: TrackedBox(i, (10, 10, 30, 30), 0.9)  # noqa: E731
    r.tracks = FrameTracks(index, index / 25, tuple(box(i) for i in seen), tuple(box(i) for i in missing),
                           tuple(TrackEvent("confirmed", i, index, index / 25) for i in events))
    r.quality = Quality(100.0, 90.0, 0.0, blurred=not ok, dark=False, overexposed=False)
    return r


def test_the_alert_fires_on_a_new_polyp_then_waits_out_its_cooldown():
    now = [100.0]
    policy = AlertPolicy(5.0, clock=lambda: now[0])
    assert policy.feed(tracks_result(0)) == []
    assert policy.feed(tracks_result(1, seen=[1], events=[1])) == [1]
    now[0] += 1.0
    assert policy.feed(tracks_result(2, seen=[1, 2], events=[2])) == []  # within the cooldown: held
    now[0] += 1.0
    assert policy.feed(tracks_result(3, seen=[1, 2])) == []
    now[0] += 3.5  # 5.5 s after the first alert: the held one sounds now
    assert policy.feed(tracks_result(4, seen=[1, 2])) == [2]
    now[0] += 10
    assert policy.feed(tracks_result(5, seen=[1, 2])) == []  # nothing new
    assert policy.fired == 2


def test_no_alert_on_an_unusable_frame_and_none_for_a_polyp_gone_unannounced():
    policy = AlertPolicy(0.0)
    assert policy.feed(tracks_result(0, seen=[1], events=[1], ok=False)) == []
    assert policy.feed(tracks_result(1, missing=[1])) == []  # usable, but the polyp is not in view
    assert policy.feed(tracks_result(2, seen=[1], ok=True)) == [1]
    assert policy.held_unusable == 1
    assert policy.feed(tracks_result(3, seen=[2], events=[2], ok=False)) == []
    assert policy.feed(tracks_result(4)) == []  # track 2 ended before a usable frame showed it
    assert policy.feed(tracks_result(5, seen=[3], events=[3])) == [3]
    with pytest.raises(ValueError, match="cooldown"):
        AlertPolicy(-1)


# --------------------------------------------------------------------------- findings


def test_findings_have_one_row_per_polyp_with_a_thumbnail_of_its_best_frame():
    findings, rows = PolypFindings(), AnalysedRows()
    _, results = analyse(moving_blob, 50)
    for r in results:
        findings.record(r)
        rows.record(r)
    (row,) = findings.rows()
    assert (row.id, row.first_frame, row.last_frame) == (1, 5, 39)
    assert row.first_s == pytest.approx(0.2) and row.duration_s == pytest.approx(34 / 25)
    assert row.max_confidence == pytest.approx(0.9) and row.best_frame == 9  # the first confident frame
    assert row.thumbnail.shape[1] == 96 and row.thumbnail.dtype == np.uint8
    assert "polyp 1" in str(row) and "00:00.2" in str(row)
    assert len(rows) == 50 and "timings_ms" not in rows.rows()[0] and summarize(rows.rows())["polyps"] == 1


def test_a_thumbnail_is_cut_again_only_when_the_confidence_improves():
    findings = PolypFindings()
    r = tracks_result(0, seen=[1], events=[1])
    findings.record(r)
    thumb = findings.rows()[0].thumbnail
    findings.record(tracks_result(1, seen=[1]))  # the same confidence: same thumbnail
    assert findings.rows()[0].thumbnail is thumb and findings.rows()[0].last_frame == 1
    better = tracks_result(2, seen=[1])
    better.tracks = FrameTracks(2, 0.08, (TrackedBox(1, (20, 20, 30, 30), 0.97),))
    findings.record(better)
    row = findings.rows()[0]
    assert row.thumbnail is not thumb and row.best_frame == 2 and row.best_bbox == (20, 20, 30, 30)


# --------------------------------------------------------------------------- timeline


def test_the_timeline_keeps_which_frames_were_unusable():
    from engine.timeline import Timeline

    t = Timeline(("no polyp", "polyp"), 25.0, 10)
    for i in range(10):
        r = tracks_result(i, ok=i not in (3, 4, 7))
        r.segmentation = SegmentationResult(np.zeros((H, W), bool), 0.1)
        r.polyp = False
        t.record(r)
    assert t.unusable_runs() == [(3, 4), (7, 7)]


# --------------------------------------------------------------------------- overlay


def polyp_result(bbox=(120, 90, 60, 50), missing=False, polyps=1):
    x, y, w, h = bbox
    mask = np.zeros((H, W), bool)
    cv2.ellipse(mask.view(np.uint8), (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
    r = FrameResult(Frame(5, 0.2, np.full((H, W, 3), 90, np.uint8), 0.0), ContentArea.full_frame(W, H),
                    segmentation=SegmentationResult(mask, 0.9), polyp=True)
    box = TrackedBox(3, bbox, 0.9)
    r.tracks = FrameTracks(5, 0.2, () if missing else (box,), (box,) if missing else ())
    r.polyps = polyps
    return r


def near(image, colour, tol=30):
    return int(np.all(np.abs(image.astype(int) - colour) < tol, axis=2).sum())


def test_the_display_styles_draw_the_mask_its_outline_or_a_box():
    r = polyp_result()
    draw = lambda style: Overlay.default(names=["segmentation"], style=style).draw(r.frame.image, r, copy=True)  # noqa: E731
    mask, outline, box = draw("mask"), draw("outline"), draw("box")
    centre = (115, 150)  # inside the polyp, away from its outline and the label
    assert not np.array_equal(mask[centre], r.frame.image[centre])  # filled
    assert np.array_equal(outline[centre], r.frame.image[centre])  # outline only
    assert np.array_equal(box[centre], r.frame.image[centre])
    assert near(box[88:94, 125:175], SEG_COLOR) >= 40  # the box's top edge, along the track's box
    changed = lambda out: int(np.any(out != r.frame.image, axis=2).sum())  # noqa: E731
    assert near(outline, SEG_COLOR) > 100 and changed(mask) > changed(outline) + 1500
    with pytest.raises(ValueError, match="display style"):
        Overlay.default(style="fill")


def test_the_edge_hint_marks_the_edge_a_polyp_touches_or_left_by():
    inside = polyp_result()
    at_left = polyp_result(bbox=(0, 100, 50, 40))
    gone_right = polyp_result(bbox=(W - 50, 100, 50, 40), missing=True)
    overlay = Overlay.default(names=["label"], edge_hint=True)
    assert [l.name for l in overlay.layers] == ["edge_hint", "label"]
    assert [l.name for l in Overlay.default(names=["segmentation", "label"], edge_hint=True).layers] == \
        ["segmentation", "edge_hint", "label"]
    overlay = Overlay([EdgeHint()])
    blank = inside.frame.image
    assert np.array_equal(overlay.draw(blank, inside, copy=True), blank)  # inside the field: nothing
    left = overlay.draw(blank, at_left, copy=True)
    assert near(left[100:140, 2:12], SEG_COLOR) > 30 and near(left[:, W // 2:], SEG_COLOR) == 0
    right = overlay.draw(blank, gone_right, copy=True)
    assert near(right[95:145, W - 14:W - 2], EDGE_HINT_GONE) > 30 and near(right[:, :W // 2], EDGE_HINT_GONE) == 0


def test_the_polyp_count_is_drawn_at_the_top_right():
    r = polyp_result(polyps=2)
    out = Overlay.default(names=["polyp_count"]).draw(r.frame.image, r, copy=True)
    changed = np.any(out != r.frame.image, axis=2)
    assert changed[:60, W // 2:].sum() > 100 and changed[60:, :].sum() == 0
    assert near(out[:60, W // 2:], SEG_COLOR) > 10
    r.polyps = None
    assert np.array_equal(Overlay.default(names=["polyp_count"]).draw(r.frame.image, r, copy=True), r.frame.image)


# --------------------------------------------------------------------------- report on a video


def test_report_accepts_a_video_and_analyses_it_first(tmp_path, capsys):
    from tiny_models import make_tiny_segmenter_bundle

    from engine.cli import main

    bundle = make_tiny_segmenter_bundle(tmp_path / "seg", size=(32, 32))
    log, html = tmp_path / "rows.jsonl", tmp_path / "report.html"
    code = main(["report", "demo:160x128@25", "--json", "-o", str(html), "--log", str(log),
                 "--model", str(bundle.path), "--backend", "onnxruntime"])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["frames"] == 300 and summary["quality"]["frames"] == 300
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 300 and all({"quality", "tracks", "polyps", "models", "detections"} <= set(r) for r in rows)
    assert summary["polyps"] == rows[-1]["polyps"]  # the log's running count is the report's
    assert html.exists() and "<html" in html.read_text()[:200].lower()


def test_fragments_of_a_polyp_are_not_tracked_as_polyps_of_their_own():
    from engine.procedure.stage import without_fragments
    from engine.procedure.tracking import Detection

    big, piece, other = Detection((0, 0, 100, 100), 0.9), Detection((120, 0, 40, 40), 0.95), Detection((0, 150, 60, 50), 0.8)
    assert without_fragments([piece, big, other]) == [big, other]  # 16 % of the largest: a fragment
    assert without_fragments([piece]) == [piece] and without_fragments([]) == []
    area = ContentArea.full_frame(W, H)
    prob = np.zeros(MODEL, np.float32)
    prob[5:25, 5:25] = 0.9  # 400 pixels
    prob[30:34, 30:34] = 0.95  # 16 pixels: a fragment
    seg = SegmentationResult(np.zeros((H, W), bool), 0.9, probability=prob)
    r = FrameResult(Frame(0, 0.0, textured(), 0.0), area, segmentation=seg, polyp=True)
    assert len(ProcedureStage().detect(r)) == 1


def test_exports_draw_with_the_configured_style_edge_markers_and_count():
    """`annotate` and the window build the overlay from the configuration (engine.runtime.make_overlay)."""
    from engine.config import load_config
    from engine.runtime import make_overlay

    config = load_config()
    assert (config.style, config.alert_sound, config.alert_cooldown, config.edge_hint) == ("mask", False, 5.0, False)
    default = {l.name: l for l in make_overlay(config).layers}
    assert "polyp_count" in default and "edge_hint" not in default and default["segmentation"].style == "mask"
    chosen = {l.name: l for l in make_overlay(config.override(style="box", edge_hint=True)).layers}
    assert chosen["segmentation"].style == "box" and "edge_hint" in chosen
