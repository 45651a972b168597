"""The viewer's findings: one row per confirmed polyp track, with a thumbnail of its best frame.

:class:`PolypFindings` is fed every analysed :class:`engine.types.FrameResult` (``record``, the
same call as :meth:`engine.timeline.Timeline.record`, from the analysing thread) and read by the
window (``rows()``, from the GUI thread): thread-safe, with a ``version`` that changes with it.
A row starts when its track is confirmed (first seen: where the track was first detected, a few
frames earlier) and follows it while it is seen; when the track's confidence improves, its best
frame moves there and a small thumbnail (the field cropped, the box drawn) is cut from that frame.
Qt-free: thumbnails are BGR arrays.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np

from ..types import FrameResult
from .report import make_thumbnail

THUMB_WIDTH = 96  # pixels: a findings list row
THUMB_STEP = 0.01  # a new thumbnail only when the best confidence grew by this much


@dataclass(frozen=True, eq=False)
class PolypRow:
    """One confirmed polyp track as the findings list shows it (times in seconds of the video).
    A row that changes is replaced by a new one, so the same object means the same row."""

    id: int
    first_frame: int
    first_s: float
    last_frame: int
    last_s: float
    max_confidence: float
    best_frame: int
    best_s: float
    best_bbox: tuple[int, int, int, int]
    thumbnail: np.ndarray | None = None

    @property
    def duration_s(self) -> float:
        return max(0.0, self.last_s - self.first_s)

    def __str__(self) -> str:
        return (f"polyp {self.id}  {clock(self.first_s)} - {clock(self.last_s)}  {self.duration_s:.1f} s  "
                f"max {self.max_confidence:.0%}")


def clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m):02d}:{s:04.1f}"


class PolypFindings:
    """See the module. ``thumb_width``: the thumbnails' width in pixels (0: none)."""

    def __init__(self, thumb_width: int = THUMB_WIDTH) -> None:
        self.thumb_width = thumb_width
        self._rows: dict[int, PolypRow] = {}
        self._thumb_conf: dict[int, float] = {}
        self._lock = threading.Lock()
        self.version = 0

    def record(self, result: FrameResult) -> None:
        tracks = result.tracks
        if tracks is None or not (tracks.tracks or tracks.events):
            return
        frame = result.frame
        with self._lock:
            for e in tracks.events:
                if e.kind == "confirmed" and e.track_id not in self._rows:
                    first = e.first_frame if e.first_frame >= 0 else e.frame
                    self._rows[e.track_id] = PolypRow(e.track_id, first, e.first_s if e.first_frame >= 0 else e.time,
                                                      frame.index, frame.timestamp, 0.0, frame.index,
                                                      frame.timestamp, (0, 0, 1, 1))
            for t in tracks.tracks:
                row = self._rows.get(t.id)
                if row is None:  # confirmed before this object was fed (it was made mid-stream)
                    row = PolypRow(t.id, frame.index, frame.timestamp, frame.index, frame.timestamp, 0.0,
                                   frame.index, frame.timestamp, tuple(t.bbox))
                row = replace(row, last_frame=max(row.last_frame, frame.index), last_s=max(row.last_s, frame.timestamp))
                if t.confidence > row.max_confidence:
                    row = replace(row, max_confidence=float(t.confidence), best_frame=frame.index,
                                  best_s=frame.timestamp, best_bbox=tuple(int(v) for v in t.bbox))
                    if self.thumb_width and (row.thumbnail is None
                                             or t.confidence >= self._thumb_conf.get(t.id, 0.0) + THUMB_STEP):
                        row = replace(row, thumbnail=thumbnail(frame.image, t.bbox, result.area.bbox,
                                                               self.thumb_width))
                        self._thumb_conf[t.id] = float(t.confidence)
                self._rows[t.id] = row
            self.version += 1

    def rows(self) -> list[PolypRow]:
        """The rows by id (a copy: the rows themselves are immutable)."""
        with self._lock:
            return [self._rows[k] for k in sorted(self._rows)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


def thumbnail(image: np.ndarray, bbox, field, width: int) -> np.ndarray:
    """The field of ``image`` (x, y, w, h) with the polyp's box drawn, ``width`` pixels wide."""
    fx, fy, fw, fh = (int(v) for v in field)
    crop = image[fy:fy + fh, fx:fx + fw]  # a view: make_thumbnail copies only the field
    x, y, w, h = (int(v) for v in bbox)
    return make_thumbnail(crop, (x - fx, y - fy, w, h), None, width)


#: what a stored row leaves out: the report needs none of it, and it is most of a row's size
SLIM = ("timings_ms", "tracks", "events")


class AnalysedRows:
    """The per-frame log rows (:meth:`engine.types.FrameResult.to_log_row`, less :data:`SLIM`) of
    the frames analysed so far, by frame index (a frame analysed again replaces its row): what
    the window's report is made from. Thread-safe: ``record`` from the analysing thread, ``rows``
    from any."""

    def __init__(self) -> None:
        self._rows: dict[int, dict] = {}
        self._lock = threading.Lock()

    def record(self, result: FrameResult) -> None:
        row = result.to_log_row()
        for key in SLIM:
            row.pop(key, None)
        with self._lock:
            self._rows[row["index"]] = row

    def rows(self) -> list[dict]:
        """The rows in frame order."""
        with self._lock:
            return [self._rows[k] for k in sorted(self._rows)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


class Fanout:
    """Several recorders (a Timeline, PolypFindings, AnalysedRows) fed the same results."""

    def __init__(self, *recorders) -> None:
        self.recorders = [r for r in recorders if r is not None]

    def record(self, result: FrameResult) -> None:
        for r in self.recorders:
            r.record(result)
