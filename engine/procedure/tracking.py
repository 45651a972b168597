"""Polyp tracks: detections on positive frames joined across frames, counted once confirmed.

A **detection** is one connected component of the segmenter's mask on a frame whose verdict
(:mod:`engine.analysis.verdict`) is positive: its bounding box in frame pixels (x, y, w, h) and a
confidence (the component's peak probability, or the frame's polyp probability when no
probability map is at hand). :func:`detections_from_mask` makes them from a mask at any
resolution; :func:`detections_from_row` from a row of the per-frame log.

:class:`PolypTracker` joins them into tracks with norfair (the maintained ``norfair-enough``
release, imported as ``norfair``): a constant-velocity Kalman filter per box corner, and a greedy
match on a scale-free distance (:func:`box_distance`: the centre's shift in box sizes plus the
change of size), so a polyp that slides across the field as the camera moves stays one track. A
track lives on through up to ``max_gap`` frames without a detection (a fold, a smear, the
verdict flickering off) and counts (*confirmed*: it gets an id and the "confirmed" event fires,
for the audible alert) only after it has been matched on ``confirm_frames`` analysed frames
in a row (norfair's initialisation delay; a miss while it is young costs it one frame of credit),
so one- and two-frame false alarms never count. What it does not do: recognise a polyp that left
the field and came back after the gap (that is a new track), or follow the camera's own motion
(the Kalman prediction stands in for it over short gaps).

Every frame gets a :class:`FrameTracks` (the confirmed tracks seen on it, the confirmed tracks
missing from it, the events); :meth:`PolypTracker.summaries` gives one :class:`TrackSummary` per
confirmed track. All of them turn into JSON-ready dicts with ``to_dict()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import norfair
import numpy as np
from norfair.distances import Distance

from ..types import POLYP_CLASSES

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels

#: The smallest component kept by default, as a share of the mask's pixels (0.5 %: about 11 x 11
#: pixels of a 160 x 160 model output, 90 x 70 pixels of a 1280 x 1024 frame's field).
DEFAULT_MIN_AREA = 0.005


@dataclass(frozen=True)
class Detection:
    """One polyp candidate on one frame: ``bbox`` (x, y, w, h) in frame pixels, ``confidence`` 0..1."""

    bbox: Box
    confidence: float

    def __post_init__(self) -> None:
        if len(self.bbox) != 4 or self.bbox[2] <= 0 or self.bbox[3] <= 0:
            raise ValueError(f"Detection.bbox must be (x, y, w, h) with w, h > 0, not {self.bbox!r}")

    def to_dict(self) -> dict:
        return {"bbox": [int(v) for v in self.bbox], "confidence": round(float(self.confidence), 4)}


def detections_from_mask(
    mask: np.ndarray, probability: np.ndarray | None = None, *, box: Sequence[int] | None = None,
    min_area: float = DEFAULT_MIN_AREA, confidence: float | None = None,
) -> list[Detection]:
    """The connected components of ``mask`` as detections, most confident first.

    mask: H x W, non-zero where the segmenter says polyp (bool, or a probability map already
    thresholded), at any resolution. probability: H x W float of the same shape; a component's
    confidence is its peak. Without it, ``confidence`` (the frame's polyp probability) is used,
    else 1.0. box: the (x, y, w, h) of the frame that the mask covers, e.g. the content area's
    bbox for a mask at the model's resolution; None: the mask is already in frame pixels.
    min_area: the smallest component kept, as a share of the mask's pixels (8-connectivity).
    Call it only on frames whose verdict is positive: the verdict decides, the mask shows where.
    Call it on the segmenter's output at the model's size with ``box`` set, not on the frame-sized
    mask: the components cost well under a millisecond at 160 x 160, tens at 1280 x 1024.
    """
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a non-empty H x W array, not shape {m.shape}")
    if probability is not None and np.shape(probability) != m.shape:
        raise ValueError(f"probability has shape {np.shape(probability)}, the mask {m.shape}")
    if not 0.0 <= min_area < 1.0:
        raise ValueError(f"min_area is a share of the mask in [0, 1), not {min_area}")
    h, w = m.shape
    if box is None:
        bx, by, sx, sy = 0, 0, 1.0, 1.0
    else:
        bx, by, bw, bh = (int(v) for v in box)
        if bw <= 0 or bh <= 0:
            raise ValueError(f"box must be (x, y, w, h) with w, h > 0, not {tuple(box)}")
        sx, sy = bw / w, bh / h
    binary = (m > 0).astype(np.uint8) if m.dtype != np.uint8 else (m > 0).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    smallest = max(1, int(np.ceil(min_area * h * w)))
    fallback = 1.0 if confidence is None else float(confidence)
    found: list[Detection] = []
    for k in range(1, count):
        x, y, cw, ch, area = (int(v) for v in stats[k])
        if area < smallest:
            continue
        if probability is not None:
            view = labels[y:y + ch, x:x + cw] == k
            conf = float(np.asarray(probability)[y:y + ch, x:x + cw][view].max())
        else:
            conf = fallback
        x0, y0 = bx + int(np.floor(x * sx)), by + int(np.floor(y * sy))
        x1, y1 = bx + int(np.ceil((x + cw) * sx)), by + int(np.ceil((y + ch) * sy))
        found.append(Detection((x0, y0, max(1, x1 - x0), max(1, y1 - y0)), conf))
    found.sort(key=lambda d: -d.confidence)
    return found


def polyp_probability_of_row(row: Mapping) -> float | None:
    """The polyp classes' probability as far as a log row's top-k shows it (None without top-k)."""
    topk = row.get("topk") or []
    if not topk:
        return None
    return float(sum(p for name, p in topk if name in POLYP_CLASSES))


def detections_from_row(row: Mapping) -> list[Detection]:
    """Detections of one per-frame log row (the schema of ``FrameResult.to_log_row``).

    A row with a ``"detections"`` list (``[{"bbox": [x, y, w, h], "confidence": c}, ...]``, what the
    pipeline will write once it extracts components) gives those. Otherwise a row whose ``"polyp"``
    verdict is true gives one detection: the segmenter's mask box (``segmentation.bbox``, the
    whole mask, not per component), or the content area's box when there is no mask box (a
    classifier alone, or a segmenter that found nothing where the classifier said polyp), with the
    polyp classes' probability from the row's top-k (else the segmenter's confidence, else 1).
    """
    if isinstance(row.get("detections"), list):
        return [Detection(tuple(int(v) for v in d["bbox"]), float(d.get("confidence", 1.0)))
                for d in row["detections"]]
    if row.get("polyp") is not True:
        return []
    seg = row.get("segmentation") or {}
    bbox = seg.get("bbox") or (row.get("content_area") or {}).get("bbox")
    if not bbox or bbox[2] <= 0 or bbox[3] <= 0:
        return []
    conf = polyp_probability_of_row(row)
    if conf is None:
        conf = float(seg.get("confidence", 1.0)) if seg else 1.0
    return [Detection(tuple(int(v) for v in bbox), conf)]


def box_distance(candidates: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """N x K distances between boxes given as rows (x1, y1, x2, y2).

    The centres' distance over the boxes' mean size (square root of the area), plus the absolute
    log ratio of the sizes: 0 for the same box, 1 for a box moved by its own size. Scale-free, so
    the same threshold holds for a small polyp far away and a large one close up.
    """
    c = np.asarray(candidates, np.float64).reshape(-1, 4)
    o = np.asarray(objects, np.float64).reshape(-1, 4)

    def centre_size(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = np.maximum(b[:, 2] - b[:, 0], 1.0)
        h = np.maximum(b[:, 3] - b[:, 1], 1.0)
        return (b[:, :2] + b[:, 2:]) / 2.0, np.sqrt(w * h)

    cc, cs = centre_size(c)
    oc, os_ = centre_size(o)
    shift = np.linalg.norm(cc[:, None, :] - oc[None, :, :], axis=2)
    size = (cs[:, None] + os_[None, :]) / 2.0
    return shift / size + np.abs(np.log(cs[:, None] / os_[None, :]))


class _TrackDistance(Distance):
    """:func:`box_distance` to where a track is predicted *or* where it was last seen, the nearer:
    the Kalman filter carries a moving polyp through a gap, and when the camera stopped during the
    gap, the polyp is found where it was."""

    def get_distances(self, objects, candidates):
        if not objects or not candidates:
            return np.full((len(candidates or ()), len(objects)), np.inf)
        cands = np.stack([np.asarray(c.points, np.float64).ravel() for c in candidates])
        predicted = np.stack([o.estimate.ravel() for o in objects])
        seen = np.stack([np.asarray(o.last_detection.points, np.float64).ravel() for o in objects])
        return np.minimum(box_distance(cands, predicted), box_distance(cands, seen))


@dataclass(frozen=True)
class TrackerConfig:
    """confirm_frames: analysed frames in a row a track needs before it counts (5: 0.2 s at 25 fps).
    max_gap: source frames a track outlives without a detection (12: about 0.5 s at 25 fps); a
    jump in frame index larger than this ends every track. max_distance: the largest
    :func:`box_distance` that still matches (1.0: the centre moved at most about one box size)."""

    confirm_frames: int = 5
    max_gap: int = 12
    max_distance: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.confirm_frames, int) or self.confirm_frames < 1:
            raise ValueError(f"confirm_frames must be a whole number >= 1, not {self.confirm_frames!r}")
        if not isinstance(self.max_gap, int) or self.max_gap < 0:
            raise ValueError(f"max_gap must be a whole number >= 0, not {self.max_gap!r}")
        if not self.max_distance > 0:
            raise ValueError(f"max_distance must be > 0, not {self.max_distance!r}")


@dataclass(frozen=True)
class TrackedBox:
    """A confirmed track on one frame: its id, the box it has there and that detection's confidence."""

    id: int
    bbox: Box
    confidence: float

    def to_dict(self) -> dict:
        return {"id": self.id, "bbox": [int(v) for v in self.bbox],
                "confidence": round(float(self.confidence), 4)}


@dataclass(frozen=True)
class TrackEvent:
    """Something that happened to a track on a frame. kind: "confirmed" (a new polyp counts).
    first_frame / first_s: where the track was first detected (before it was confirmed)."""

    kind: str
    track_id: int
    frame: int
    time: float
    first_frame: int = -1
    first_s: float = 0.0

    def to_dict(self) -> dict:
        return {"event": self.kind, "id": self.track_id, "frame": self.frame, "time": round(self.time, 6),
                "first_frame": self.first_frame, "first_s": round(self.first_s, 6)}


@dataclass(frozen=True)
class FrameTracks:
    """The tracker's answer for one frame.

    tracks: confirmed tracks detected on this frame. missing: confirmed tracks still alive but not
    detected on this frame, with the box they were last seen at (for a direction marker).
    events: what happened on this frame (a track confirmed).
    """

    frame: int
    time: float
    tracks: tuple[TrackedBox, ...] = ()
    missing: tuple[TrackedBox, ...] = ()
    events: tuple[TrackEvent, ...] = ()

    def to_dict(self) -> dict:
        """``{"tracks": [{id, bbox, confidence}], "missing": [...], "events": [...]}``."""
        return {"tracks": [t.to_dict() for t in self.tracks],
                "missing": [t.to_dict() for t in self.missing],
                "events": [e.to_dict() for e in self.events]}


@dataclass
class TrackSummary:
    """One confirmed track over the whole video.

    first/last: the first and last frame it was detected on (the first is before it was
    confirmed); frames: how many frames it was detected on; best: the frame of its most confident
    detection, and that detection's box (for a thumbnail).
    """

    id: int
    first_frame: int
    first_s: float
    last_frame: int
    last_s: float
    frames: int
    max_confidence: float
    best_frame: int
    best_s: float
    best_bbox: Box
    confirmed_frame: int
    confirmed_s: float

    @property
    def duration_s(self) -> float:
        return max(0.0, self.last_s - self.first_s)

    def to_dict(self) -> dict:
        return {"id": self.id, "first_frame": self.first_frame, "first_s": round(self.first_s, 3),
                "last_frame": self.last_frame, "last_s": round(self.last_s, 3),
                "duration_s": round(self.duration_s, 3), "frames": self.frames,
                "max_confidence": round(self.max_confidence, 4), "best_frame": self.best_frame,
                "best_s": round(self.best_s, 3), "best_bbox": [int(v) for v in self.best_bbox],
                "confirmed_frame": self.confirmed_frame, "confirmed_s": round(self.confirmed_s, 3)}


@dataclass
class _Record:
    first_frame: int
    first_s: float
    last_frame: int
    last_s: float
    last_bbox: Box
    last_confidence: float
    best_frame: int
    best_s: float
    best_bbox: Box
    max_confidence: float
    frames: int = 1
    id: int | None = None
    confirmed_frame: int = -1
    confirmed_s: float = 0.0

    def add(self, frame: int, time: float, d: Detection) -> None:
        self.last_frame, self.last_s, self.last_bbox, self.last_confidence = frame, time, d.bbox, d.confidence
        self.frames += 1
        if d.confidence > self.max_confidence:
            self.max_confidence, self.best_frame, self.best_s, self.best_bbox = d.confidence, frame, time, d.bbox

    def summary(self) -> TrackSummary:
        return TrackSummary(self.id or 0, self.first_frame, self.first_s, self.last_frame, self.last_s,
                            self.frames, self.max_confidence, self.best_frame, self.best_s, self.best_bbox,
                            self.confirmed_frame, self.confirmed_s)


@dataclass
class _Live:
    record: _Record
    obj: object = field(repr=False)


class PolypTracker:
    """Joins each frame's detections into tracks (see the module's docstring).

    Call :meth:`update` once per analysed frame, in frame order, with that frame's detections
    (an empty list on a negative frame: that is how a track learns it was not seen). Not
    thread-safe: one tracker per stream, fed by one thread.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._confirmed: list[_Record] = []
        self._start()

    def _start(self) -> None:
        c = self.config
        # norfair's hit counter: +1 per matched frame, -1 per missed one; a young track is confirmed
        # when it passes the initialisation delay, and dies below 0. Our own max_gap (in source
        # frames) is the binding limit, so the counter's ceiling only has to exceed the delay.
        tracker = norfair.Tracker(distance_function="iou", distance_threshold=c.max_distance,
                                  hit_counter_max=max(c.max_gap, c.confirm_frames),
                                  initialization_delay=c.confirm_frames - 1, past_detections_length=0)
        # norfair wraps a plain callable as a slow scalar distance; our own Distance goes in directly
        tracker.distance_function = _TrackDistance()
        self._tracker = tracker
        self._live: dict[int, _Live] = {}
        self._last_frame: int | None = None

    def reset(self) -> None:
        """Forget everything (a new video)."""
        self._confirmed = []
        self._start()

    def end_tracks(self) -> None:
        """End every live track but keep the confirmed ones' summaries (a seek in a replay, a cut)."""
        confirmed = self._confirmed
        self._start()
        self._confirmed = confirmed

    @property
    def count(self) -> int:
        """Confirmed tracks so far: the polyp count."""
        return len(self._confirmed)

    def update(self, frame: int, time: float, detections: Iterable[Detection]) -> FrameTracks:
        """Feed one frame's detections; returns the confirmed tracks on it and its events."""
        frame = int(frame)
        if self._last_frame is not None:
            if frame <= self._last_frame:
                raise ValueError(f"frames must come in order: frame {frame} after frame {self._last_frame} "
                                 "(call end_tracks() after a seek)")
            if frame - self._last_frame > self.config.max_gap + 1:  # a jump: every track has ended
                self.end_tracks()
        self._last_frame = frame
        dets = list(detections)
        nf = [norfair.Detection(np.array([[x, y], [x + w, y + h]], np.float64), data=(frame, d))
              for d in dets for (x, y, w, h) in [d.bbox]]
        self._tracker.update(nf)

        seen: list[TrackedBox] = []
        missing: list[TrackedBox] = []
        events: list[TrackEvent] = []
        alive: dict[int, _Live] = {}
        for obj in self._tracker.tracked_objects:
            key = obj.initializing_id
            det_frame, det = obj.last_detection.data
            live = self._live.get(key)
            if live is None:
                rec = _Record(det_frame, time, det_frame, time, det.bbox, det.confidence, det_frame, time,
                              det.bbox, det.confidence)
                live = _Live(rec, obj)
            elif det_frame == frame:
                live.record.add(frame, time, det)
            rec = live.record
            if frame - rec.last_frame > self.config.max_gap:
                continue  # ended: dropped from norfair below
            alive[key] = live
            if rec.id is None and not obj.is_initializing:
                rec.id, rec.confirmed_frame, rec.confirmed_s = len(self._confirmed) + 1, frame, time
                self._confirmed.append(rec)
                events.append(TrackEvent("confirmed", rec.id, frame, time, rec.first_frame, rec.first_s))
                logger.debug("track %d confirmed on frame %d", rec.id, frame)
            if rec.id is not None:
                box = TrackedBox(rec.id, rec.last_bbox, rec.last_confidence)
                (seen if rec.last_frame == frame else missing).append(box)
        if len(alive) != len(self._tracker.tracked_objects):
            self._tracker.tracked_objects = [o for o in self._tracker.tracked_objects
                                             if o.initializing_id in alive]
        self._live = alive
        return FrameTracks(frame, float(time), tuple(sorted(seen, key=lambda t: t.id)),
                           tuple(sorted(missing, key=lambda t: t.id)), tuple(events))

    def summaries(self) -> list[TrackSummary]:
        """One summary per confirmed track, by id (the tracks still alive included)."""
        return [rec.summary() for rec in self._confirmed]


def track_rows(rows: Iterable[Mapping], config: TrackerConfig | None = None) -> tuple[list[FrameTracks], list[TrackSummary]]:
    """Run a tracker over log rows (in order): each row's :class:`FrameTracks`, and the summaries.

    Rows whose frame index does not increase (a log of several passes) restart the tracker's live
    state. Rows without a verdict count as frames without a detection.
    """
    tracker = PolypTracker(config)
    per_frame: list[FrameTracks] = []
    last: int | None = None
    for row in rows:
        index, time = int(row["index"]), float(row["timestamp"])
        if last is not None and index <= last:
            tracker.end_tracks()
        last = index
        per_frame.append(tracker.update(index, time, detections_from_row(row)))
    return per_frame, tracker.summaries()
