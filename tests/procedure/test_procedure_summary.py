"""The procedure summary on synthetic rows: cecum held or not, withdrawal, bowel prep, quality, polyps."""

from __future__ import annotations

import json

import pytest

from engine.procedure.summary import ProcedureSummary, SummaryConfig, find_cecum, summarize

FPS = 25.0


def make_rows(segments, fps=FPS, quality=None, polyp_boxes=None):
    """segments: [(label, seconds), ...] in order. quality: fn(i) -> dict or None.
    polyp_boxes: fn(i) -> bbox or None (a positive verdict with that mask box)."""
    rows, i = [], 0
    for label, seconds in segments:
        for _ in range(round(seconds * fps)):
            box = polyp_boxes(i) if polyp_boxes else None
            row = {"index": i, "timestamp": round(i / fps, 6), "polyp": box is not None, "label": label,
                   "confidence": 0.9, "topk": [[label, 0.9]] if box is None else [["polyp", 0.8], [label, 0.1]],
                   "content_area": {"bbox": [0, 0, 1280, 1024], "shape": "octagon", "confidence": 0.9},
                   "segmentation": {"label": "polyp", "confidence": 0.7, "peak": 0.99, "present": box is not None,
                                    "area": 0, "bbox": box, "model": "polyp-unet"}}
            if quality is not None:
                row["quality"] = quality(i)
            rows.append(row)
            i += 1
    return rows


def q(ok=True, issue=None):
    return {"ok": ok, "issue": issue, "blurred": issue == "blurred", "dark": issue == "dark",
            "overexposed": issue == "overexposed", "sharpness": 100.0, "brightness": 100.0, "clipped": 0.0}


def test_cecum_held_long_enough_gives_cecum_and_withdrawal():
    rows = make_rows([("bbps-2-3", 60), ("normal-cecum", 6), ("bbps-2-3", 100), ("bbps-0-1", 20)])
    s = summarize(rows)
    assert s["cecum_s"] == pytest.approx(60.0)
    assert s["end_s"] == pytest.approx(186.0)
    assert s["withdrawal_s"] == pytest.approx(126.0)
    assert s["withdrawal_end"] == "end of video"
    # withdrawal frames: 6 s cecum + 100 s bbps-2-3 + 20 s bbps-0-1
    assert s["bbps"]["over"] == "withdrawal" and s["bbps"]["frames"] == 126 * 25
    assert s["bbps"]["bbps-2-3"] == pytest.approx(100 / 126, abs=1e-4)
    assert s["bbps"]["bbps-0-1"] == pytest.approx(20 / 126, abs=1e-4)
    assert s["bbps"]["impacted-stool"] == 0.0


def test_cecum_not_held_long_enough_is_not_reached():
    rows = make_rows([("bbps-2-3", 30), ("normal-cecum", 4), ("bbps-2-3", 30), ("normal-cecum", 4.9),
                      ("impacted-stool", 10)])
    s = summarize(rows)
    assert s["cecum_s"] is None and s["withdrawal_s"] is None
    assert s["bbps"]["over"] == "video"
    assert s["bbps"]["impacted-stool"] == pytest.approx(10 / 78.9, abs=1e-3)


def test_exactly_the_hold_time_counts_and_the_hold_is_configurable():
    rows = make_rows([("bbps-2-3", 10), ("normal-cecum", 5), ("bbps-2-3", 10)])
    assert summarize(rows)["cecum_s"] == pytest.approx(10.0)
    assert summarize(rows, SummaryConfig(cecum_hold_s=5.2))["cecum_s"] is None
    assert summarize(rows, SummaryConfig(cecum_hold_s=2))["cecum_s"] == pytest.approx(10.0)


def test_short_breaks_inside_the_cecum_stretch_are_allowed_long_ones_restart():
    flicker = [("normal-cecum", 1.6), ("bbps-2-3", 0.2)] * 3 + [("normal-cecum", 0.4)]  # 5.8 s in all
    rows = make_rows([("bbps-2-3", 20)] + flicker + [("bbps-2-3", 20)])
    assert summarize(rows)["cecum_s"] == pytest.approx(20.0)
    broken = make_rows([("bbps-2-3", 20), ("normal-cecum", 3), ("ileum", 1), ("normal-cecum", 3), ("bbps-2-3", 5)])
    assert summarize(broken)["cecum_s"] is None
    # the second stretch starts the count again: 3 + 1 + 5.5 s -> reached at its start
    later = make_rows([("bbps-2-3", 20), ("normal-cecum", 3), ("ileum", 1), ("normal-cecum", 5.5), ("bbps-2-3", 5)])
    assert summarize(later)["cecum_s"] == pytest.approx(24.0)


def test_find_cecum_on_irregular_times():
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    labels = ["normal-cecum"] * 6
    assert find_cecum(times, labels, 5.0, 0.5) == 0.0  # 6 frames of 1 s each hold 6 s
    assert find_cecum(times, labels, 7.0, 0.5) is None
    assert find_cecum([], [], 5.0, 0.5) is None


def test_bbps_counts_only_usable_frames():
    def quality(i):  # the bbps-0-1 stretch is half blurred
        return q(False, "blurred") if 75 * 25 <= i < 85 * 25 else q()
    rows = make_rows([("bbps-2-3", 10), ("normal-cecum", 5), ("bbps-2-3", 60), ("bbps-0-1", 20)], quality=quality)
    s = summarize(rows)
    assert s["cecum_s"] == pytest.approx(10.0)
    usable = 5 + 60 + 10
    assert s["bbps"]["frames"] == usable * 25
    assert s["bbps"]["bbps-0-1"] == pytest.approx(10 / usable, abs=1e-4)
    assert s["quality"] == {"frames": 95 * 25, "ok": pytest.approx(85 / 95, abs=1e-4),
                            "blurred": pytest.approx(10 / 95, abs=1e-4), "dark": 0.0, "overexposed": 0.0}


def test_quality_is_null_without_quality_rows():
    s = summarize(make_rows([("bbps-2-3", 2)]))
    assert s["quality"] is None


def test_polyps_are_confirmed_tracks():
    def boxes(i):
        if 100 <= i < 160:  # 2.4 s: one polyp, with a 3-frame gap
            return None if 130 <= i < 133 else [400 + i, 300, 120, 100]
        if 300 <= i < 302:  # a two-frame false alarm
            return [800, 600, 80, 80]
        if 400 <= i < 450:  # a second polyp
            return [200, 700, 90, 90]
        return None
    rows = make_rows([("bbps-2-3", 20)], polyp_boxes=boxes)
    s = summarize(rows)
    assert s["polyps"] == 2
    t1, t2 = s["tracks"]
    assert (t1["id"], t1["first_frame"], t1["last_frame"], t1["frames"]) == (1, 100, 159, 57)
    assert t1["first_s"] == pytest.approx(4.0) and t1["duration_s"] == pytest.approx(59 / 25, abs=1e-3)
    assert t1["max_confidence"] == pytest.approx(0.8) and t1["best_frame"] == 100
    assert (t2["first_frame"], t2["last_frame"]) == (400, 449)


def test_the_summary_is_json_ready_with_the_promised_keys():
    s = summarize(make_rows([("bbps-2-3", 3), ("normal-cecum", 6)], quality=lambda i: q()))
    assert json.loads(json.dumps(s)) == s
    assert {"polyps", "tracks", "cecum_s", "withdrawal_s", "bbps", "quality"} <= set(s)
    assert s["models"] == ["polyp-unet"]
    tl = s["timeline"]
    assert tl["bins"] == 9 * 25  # fewer frames than 600: one bin each
    assert len(tl["classes"]) == len(tl["polyp"]) == len(tl["quality"]) == tl["bins"]
    assert tl["classes"][0] == "bbps-2-3" and tl["classes"][-1] == "normal-cecum"


def test_the_timeline_has_at_most_600_bins():
    s = summarize(make_rows([("bbps-2-3", 40), ("normal-cecum", 20)]))
    assert s["timeline"]["bins"] == 600
    assert s["timeline"]["classes"][400] == "normal-cecum"


def test_add_returns_the_frames_tracks_and_refuses_time_going_back():
    acc = ProcedureSummary()
    rows = make_rows([("bbps-2-3", 1)], polyp_boxes=lambda i: [500, 500, 100, 100])
    results = [acc.add(r) for r in rows]
    assert results[3].tracks == () and results[4].tracks[0].id == 1
    with pytest.raises(ValueError, match="back in time"):
        acc.add(dict(rows[0], index=999))
    with pytest.raises(ValueError, match="timestamp"):
        acc.add({"index": 1})


def test_an_empty_sequence_gives_an_empty_summary():
    s = summarize([])
    assert s["frames"] == 0 and s["polyps"] == 0 and s["cecum_s"] is None and s["bbps"]["frames"] == 0
