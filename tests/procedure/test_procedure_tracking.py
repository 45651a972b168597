"""Polyp tracks on synthetic moving blobs: gaps, flicker, two at once, masks at model resolution."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from engine.procedure.tracking import (
    Detection,
    PolypTracker,
    TrackerConfig,
    box_distance,
    detections_from_mask,
    detections_from_row,
    track_rows,
)

FRAME = (1024, 1280)  # H, W
SCALE = 4  # masks are drawn at a quarter of the frame, as a segmenter gives them at its own size


def blob_mask(blobs, size=FRAME, scale=1) -> np.ndarray:
    m = np.zeros((size[0] // scale, size[1] // scale), np.uint8)
    for cx, cy, r in blobs:
        cv2.circle(m, (int(round(cx / scale)), int(round(cy / scale))), int(round(r / scale)), 255, -1)
    return m


def run(frames, config=None, fps=25.0):
    """frames: list of blob lists (one per frame), in frame pixels. Returns (tracker, per-frame results)."""
    tracker = PolypTracker(config)
    out = []
    for i, blobs in enumerate(frames):
        dets = (detections_from_mask(blob_mask(blobs, scale=SCALE), box=(0, 0, FRAME[1], FRAME[0]))
                if blobs else [])
        out.append(tracker.update(i, i / fps, dets))
    return tracker, out


def moving(n, start, velocity, radius=60, wobble=0.0):
    x, y = start
    path = []
    for i in range(n):
        path.append((x + velocity[0] * i, y + velocity[1] * i + wobble * math.sin(i / 3.0), radius))
    return path


@pytest.mark.parametrize("speed", [0, 6, 14])
@pytest.mark.parametrize("gap", [1, 4, 8])
def test_a_moving_blob_with_a_gap_is_one_track(speed, gap):
    path = moving(70, (200, 400), (speed, speed / 3), wobble=15)
    frames = [[] if 30 <= i < 30 + gap else [p] for i, p in enumerate(path)]
    tracker, out = run(frames)
    assert tracker.count == 1
    events = [e for r in out for e in r.events]
    assert [(e.kind, e.track_id, e.frame) for e in events] == [("confirmed", 1, 4)]
    # while hidden the track is "missing" with its last box, then comes back under the same id
    assert [t.id for t in out[30].missing] == [1] and not out[30].tracks
    assert [t.id for t in out[30 + gap].tracks] == [1]
    (s,) = tracker.summaries()
    assert (s.first_frame, s.last_frame, s.frames) == (0, 69, 70 - gap)
    assert s.duration_s == pytest.approx(69 / 25)


def test_a_camera_that_stops_during_the_gap_keeps_the_track():
    # fast motion, then a 5-frame gap during which the camera stops: the Kalman prediction
    # overshoots by 5 x 25 px (about one box size), still within the match distance
    path = moving(30, (200, 500), (25, 0))
    stopped = [path[-1]] * 30
    frames = [[p] for p in path] + [[]] * 5 + [[p] for p in stopped]
    tracker, _ = run(frames)
    assert tracker.count == 1


def test_flicker_never_confirms():
    # isolated one- and two-frame false alarms, at random places, never count
    rng = np.random.default_rng(0)
    frames = []
    for i in range(200):
        on = (i % 10) in (0, 1) if i < 100 else (i % 7 == 0)
        frames.append([(rng.uniform(200, 1000), rng.uniform(200, 800), 40)] if on else [])
    tracker, out = run(frames)
    assert tracker.count == 0
    assert not any(r.tracks or r.events for r in out)


def test_flicker_at_one_place_never_confirms():
    # one frame on, one off at the same spot: a young track loses its credit as fast as it gains it
    frames = [[(640, 512, 50)] if i % 2 == 0 else [] for i in range(100)]
    tracker, _ = run(frames)
    assert tracker.count == 0


def test_confirmation_needs_n_frames():
    frames = [[(640, 512, 50)]] * 4 + [[]] * 20 + [[(300, 300, 50)]] * 5
    tracker, out = run(frames)
    assert tracker.count == 1
    assert out[-1].events[0].frame == 28 and out[-1].tracks[0].id == 1
    tracker, _ = run(frames, TrackerConfig(confirm_frames=6))
    assert tracker.count == 0


def test_two_polyps_at_once_are_two_tracks():
    a = moving(60, (250, 300), (6, 2))
    b = moving(60, (900, 700), (-4, -1), radius=80)
    frames = [[pa, pb] if not 25 <= i < 28 else [pb] for i, (pa, pb) in enumerate(zip(a, b))]
    tracker, out = run(frames)
    assert tracker.count == 2
    assert [t.id for t in out[-1].tracks] == [1, 2]
    assert [t.id for t in out[26].missing] == [1] and [t.id for t in out[26].tracks] == [2]
    ids = {t.id for r in out for t in r.tracks}
    assert ids == {1, 2}
    s1, s2 = tracker.summaries()
    assert s1.frames + s2.frames == 60 + 57


def test_a_track_ends_after_max_gap_and_a_return_is_a_new_one():
    frames = [[(640, 512, 50)]] * 10 + [[]] * 20 + [[(640, 512, 50)]] * 10
    tracker, out = run(frames)
    assert tracker.count == 2
    assert not out[25].missing  # gone after 12 frames


def test_an_index_jump_ends_tracks_and_out_of_order_is_refused():
    tracker = PolypTracker()
    d = [Detection((600, 500, 80, 80), 0.9)]
    for i in range(6):
        tracker.update(i, i / 25, d)
    assert tracker.count == 1
    r = tracker.update(500, 20.0, d)  # far later: the old track has ended, this one is young
    assert not r.tracks and not r.missing
    with pytest.raises(ValueError, match="in order"):
        tracker.update(400, 16.0, d)
    tracker.end_tracks()
    tracker.update(400, 16.0, d)
    assert tracker.count == 1


def test_best_frame_is_the_most_confident_detection():
    tracker = PolypTracker()
    confs = [0.5, 0.6, 0.95, 0.7, 0.6, 0.55, 0.8]
    for i, c in enumerate(confs):
        tracker.update(i, i * 0.04, [Detection((500 + i, 400, 100, 90), c)])
    (s,) = tracker.summaries()
    assert (s.best_frame, s.max_confidence, s.best_bbox) == (2, 0.95, (502, 400, 100, 90))
    assert s.best_s == pytest.approx(0.08)
    json.dumps(s.to_dict())


def test_frame_tracks_are_json_ready():
    tracker = PolypTracker()
    for i in range(6):
        r = tracker.update(i, i / 25, [Detection((590 + i, 462, 101, 99), 0.8765432)])
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d == {"tracks": [{"id": 1, "bbox": [595, 462, 101, 99], "confidence": 0.8765}], "missing": [],
                 "events": []}


def test_detections_from_mask_components_area_and_peak():
    m = blob_mask([(100, 100, 30), (400, 300, 5), (600, 500, 40)], size=(800, 1000))
    prob = np.zeros(m.shape, np.float32)
    prob[m > 0] = 0.6
    prob[500, 600] = 0.93
    dets = detections_from_mask(m, prob, min_area=0.001)  # the r=5 speck (~80 px of 800k) is dropped
    assert [d.bbox for d in dets] == [(560, 460, 81, 81), (70, 70, 61, 61)]
    assert [round(d.confidence, 2) for d in dets] == [0.93, 0.6]
    assert detections_from_mask(m, confidence=0.7, min_area=0.0)[0].confidence == 0.7
    assert len(detections_from_mask(m, min_area=0.0)) == 3
    assert detections_from_mask(np.zeros((10, 10), bool)) == []


def test_detections_from_a_model_resolution_mask_land_in_frame_pixels():
    # a 160 x 160 model mask covering the content area's box (100, 50, 800, 640) of the frame
    m = np.zeros((160, 160), bool)
    m[40:80, 20:60] = True
    (d,) = detections_from_mask(m, box=(100, 50, 800, 640))
    assert d.bbox == (100 + 20 * 5, 50 + 40 * 4, 40 * 5, 40 * 4)


def test_detections_from_mask_refuses_bad_input():
    with pytest.raises(ValueError, match="H x W"):
        detections_from_mask(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="shape"):
        detections_from_mask(np.zeros((4, 4)), np.zeros((5, 5)))


def test_detections_from_row():
    row = {"index": 3, "timestamp": 0.12, "polyp": True, "label": "polyp", "confidence": 0.7,
           "topk": [["polyp", 0.7], ["normal-cecum", 0.2], ["dyed-lifted-polyps", 0.05]],
           "content_area": {"bbox": [10, 20, 600, 500], "shape": "octagon", "confidence": 0.9},
           "segmentation": {"label": "polyp", "confidence": 0.8, "peak": 0.99, "present": True,
                            "area": 900, "bbox": [100, 120, 40, 30], "model": "unet"}}
    (d,) = detections_from_row(row)
    assert d.bbox == (100, 120, 40, 30) and d.confidence == pytest.approx(0.75)
    no_mask = dict(row, segmentation={**row["segmentation"], "bbox": None, "present": False})
    assert detections_from_row(no_mask)[0].bbox == (10, 20, 600, 500)  # somewhere in the field
    assert detections_from_row(dict(row, polyp=False)) == []
    assert detections_from_row(dict(row, polyp=None)) == []
    listed = dict(row, detections=[{"bbox": [1, 2, 3, 4], "confidence": 0.5}, {"bbox": [50, 60, 7, 8]}])
    assert [d.bbox for d in detections_from_row(listed)] == [(1, 2, 3, 4), (50, 60, 7, 8)]


def test_track_rows_over_a_log():
    rows = []
    for i in range(40):
        pos = 10 <= i < 30 and i != 20
        rows.append({"index": i, "timestamp": i / 25, "polyp": pos, "topk": [["polyp", 0.8]],
                     "content_area": {"bbox": [0, 0, 640, 480]},
                     "segmentation": {"bbox": [100 + 3 * i, 100, 60, 60], "confidence": 0.8}})
    per_frame, summaries = track_rows(rows)
    assert len(per_frame) == 40 and len(summaries) == 1
    assert summaries[0].first_frame == 10 and summaries[0].last_frame == 29


def test_box_distance_is_scale_free():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[10, 0, 20, 10]], float)  # moved by its own width
    assert box_distance(a, b)[0, 0] == pytest.approx(1.0)
    assert box_distance(a * 10, b * 10)[0, 0] == pytest.approx(1.0)
    assert box_distance(a, a)[0, 0] == 0.0


def test_config_is_validated():
    for bad in ({"confirm_frames": 0}, {"max_gap": -1}, {"max_distance": 0}):
        with pytest.raises(ValueError):
            TrackerConfig(**bad)
