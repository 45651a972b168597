"""The procedure summary: what a whole examination's per-frame rows add up to.

Input: the per-frame rows of the log (``FrameResult.to_log_row()``: ``index``, ``timestamp``,
``label`` (the classifier's top class), ``polyp`` (the frame's verdict), ``topk``,
``content_area``, ``segmentation``), each optionally with ``"quality"`` (a
:meth:`engine.procedure.quality.Quality.to_dict`) and ``"detections"`` (see
:func:`engine.procedure.tracking.detections_from_row`) and ``"models"`` (names of the models that
made the row: names, or ``{"name", "task", "version"}`` as the pipeline writes them; older logs
name only the segmenter, in ``segmentation.model``). Output: one JSON-ready dict
(:meth:`ProcedureSummary.result`):

- ``polyps``: the number of confirmed polyp tracks; ``tracks``: one summary per track. The
  tracker runs again over the rows' ``detections`` (the boxes the pipeline found), so a log gives
  the same tracks as the viewer or ``annotate`` that wrote it.
- ``models`` (names) and ``model_versions`` (name -> version, where a row gave one).
- ``cecum_s``: when the cecum was reached: the first time the classifier's top class was
  ``normal-cecum`` for at least ``cecum_hold_s`` seconds (default 5 s), breaks of at most
  ``cecum_max_break_s`` (default 0.5 s) of other classes allowed inside; the time is the first
  frame of that stretch. None when it never held.
- ``withdrawal_s``: from ``cecum_s`` to the end of the video (the last frame's time plus one frame).
  The end is the end of the video, not the scope leaving the body: nothing in the rows tells
  that reliably (no class for "outside", and the field's brightness and content area outside the
  patient were never measured here), so a video that runs on after the scope is out overstates
  the withdrawal. None without ``cecum_s``.
- ``bbps``: the shares of frames whose top class is ``bbps-0-1``, ``bbps-2-3`` and
  ``impacted-stool`` among the usable frames (quality ok, or no quality recorded) of the
  withdrawal, or of the whole video when the cecum was not reached (``"over"`` says which).
- ``quality``: the shares of frames that are ok, blurred, dark, overexposed (None when no row
  carries a quality).
- ``timeline``: the video cut into at most 600 equal bins, each with its majority class, its
  share of polyp frames and its majority quality issue: what the report draws.

:class:`ProcedureSummary` takes rows one at a time (``add`` returns that frame's tracks, so the
same object can run beside the live pipeline); :func:`summarize` is the one-call form.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .tracking import FrameTracks, PolypTracker, TrackerConfig, detections_from_row

CECUM = "normal-cecum"
PREP_CLASSES = ("bbps-0-1", "bbps-2-3", "impacted-stool")
QUALITY_FLAGS = ("blurred", "dark", "overexposed")
TIMELINE_BINS = 600


@dataclass(frozen=True)
class SummaryConfig:
    """cecum_hold_s: how long ``normal-cecum`` must hold (5 s); cecum_max_break_s: the longest break
    of another class inside that stretch (0.5 s); tracker: the polyp tracker's settings."""

    cecum_hold_s: float = 5.0
    cecum_max_break_s: float = 0.5
    cecum_label: str = CECUM
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self) -> None:
        if not self.cecum_hold_s > 0:
            raise ValueError(f"cecum_hold_s must be > 0, not {self.cecum_hold_s}")
        if not self.cecum_max_break_s >= 0:
            raise ValueError(f"cecum_max_break_s must be >= 0, not {self.cecum_max_break_s}")


def frame_period(times: list[float]) -> float:
    """The typical time between frames (median step; 0 for fewer than two frames)."""
    if len(times) < 2:
        return 0.0
    steps = np.diff(np.asarray(times, np.float64))
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else 0.0


def find_cecum(times: list[float], labels: list[str | None], hold_s: float, max_break_s: float,
               label: str = CECUM, period: float | None = None) -> float | None:
    """The start of the first stretch where ``label`` holds for ``hold_s`` seconds (see the module).

    A frame stands for ``period`` seconds (default: the median step), so 125 frames at 25 fps
    hold for 5.0 s. A break longer than ``max_break_s`` starts the count again.
    """
    dt = frame_period(times) if period is None else period
    start: float | None = None
    end = -np.inf
    for t, lab in zip(times, labels):
        if lab != label:
            continue
        if start is None or t - end > max_break_s + 1e-9:
            start = t
        end = t + dt
        if end - start >= hold_s - 1e-6:
            return start
    return None


def _bins(times: list[float], start: float, end: float, n: int) -> list[int]:
    """The bin (0..n-1) of each time."""
    span = max(end - start, 1e-9)
    # the nudge keeps frame k of n equal bins in bin k (timestamps are rounded: 0.033333 / 10 * 300 < 1)
    return [min(n - 1, max(0, int((t - start) / span * n + 1e-3))) for t in times]


class ProcedureSummary:
    """Accumulates per-frame rows into the procedure summary (see the module's docstring)."""

    def __init__(self, config: SummaryConfig | None = None) -> None:
        self.config = config or SummaryConfig()
        self.tracker = PolypTracker(self.config.tracker)
        self._times: list[float] = []
        self._labels: list[str | None] = []
        self._polyp: list[bool] = []
        self._quality: list[dict | None] = []
        self._models: dict[str, None] = {}
        self._last_index: int | None = None

    def __len__(self) -> int:
        return len(self._times)

    def add(self, row: Mapping) -> FrameTracks:
        """One per-frame row, in order. Returns the frame's tracks (for the screen and the log)."""
        try:
            index, time = int(row["index"]), float(row["timestamp"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a row needs a whole 'index' and a numeric 'timestamp' ({exc!r})") from None
        if self._times and time < self._times[-1]:
            raise ValueError(f"frame {index}: its timestamp {time} goes back in time (after {self._times[-1]})")
        if self._last_index is not None and index <= self._last_index:
            self.tracker.end_tracks()
        self._last_index = index
        self._times.append(time)
        label = row.get("label")
        self._labels.append(label if isinstance(label, str) else None)
        self._polyp.append(row.get("polyp") is True)
        q = row.get("quality")
        self._quality.append(q if isinstance(q, Mapping) else None)
        seg = row.get("segmentation")
        if isinstance(seg, Mapping) and seg.get("model"):
            self._models.setdefault(str(seg["model"]), None)
        for model in row.get("models") or ():  # names, or {"name", "task", "version"} as the pipeline writes
            if isinstance(model, Mapping):
                if model.get("name"):
                    version = model.get("version")
                    self._models[str(model["name"])] = None if version is None else str(version)
            else:
                self._models.setdefault(str(model), None)
        return self.tracker.update(index, time, detections_from_row(row))

    def result(self) -> dict:
        """The summary as a JSON-ready dict."""
        c = self.config
        times, n = self._times, len(self._times)
        dt = frame_period(times)
        start = times[0] if n else 0.0
        end = (times[-1] + dt) if n else 0.0
        cecum = find_cecum(times, self._labels, c.cecum_hold_s, c.cecum_max_break_s, c.cecum_label, dt)
        withdrawal = None if cecum is None else max(0.0, end - cecum)
        tracks = self.tracker.summaries()
        return {
            "frames": n,
            "start_s": round(start, 3),
            "end_s": round(end, 3),
            "duration_s": round(end - start, 3),
            "fps": round(1.0 / dt, 3) if dt > 0 else None,
            "polyps": len(tracks),
            "tracks": [t.to_dict() for t in tracks],
            "cecum_s": None if cecum is None else round(cecum, 3),
            "withdrawal_s": None if withdrawal is None else round(withdrawal, 3),
            "withdrawal_end": "end of video",
            "rules": {"cecum_label": c.cecum_label, "cecum_hold_s": c.cecum_hold_s,
                      "cecum_max_break_s": c.cecum_max_break_s,
                      "track_confirm_frames": c.tracker.confirm_frames, "track_max_gap": c.tracker.max_gap},
            "bbps": self._prep(cecum),
            "quality": self._quality_shares(),
            "models": list(self._models),
            "model_versions": {name: v for name, v in self._models.items() if v is not None},
            "timeline": self._timeline(start, end),
        }

    def _usable(self, i: int) -> bool:
        q = self._quality[i]
        return q is None or bool(q.get("ok", True))

    def _prep(self, cecum: float | None) -> dict:
        first = 0 if cecum is None else bisect.bisect_left(self._times, cecum)
        frames = [i for i in range(first, len(self._times)) if self._usable(i)]
        counts = Counter(self._labels[i] for i in frames)
        total = len(frames)
        out: dict = {"over": "video" if cecum is None else "withdrawal", "frames": total}
        for name in PREP_CLASSES:
            out[name] = round(counts[name] / total, 4) if total else None
        return out

    def _quality_shares(self) -> dict | None:
        rated = [q for q in self._quality if q is not None]
        if not rated:
            return None
        total = len(rated)
        out: dict = {"frames": total, "ok": round(sum(bool(q.get("ok")) for q in rated) / total, 4)}
        for flag in QUALITY_FLAGS:
            out[flag] = round(sum(bool(q.get(flag)) for q in rated) / total, 4)
        return out

    def _timeline(self, start: float, end: float) -> dict:
        n_frames = len(self._times)
        bins = max(1, min(TIMELINE_BINS, n_frames))
        where = _bins(self._times, start, end, bins)
        labels: list[Counter] = [Counter() for _ in range(bins)]
        issues: list[Counter] = [Counter() for _ in range(bins)]
        polyp = np.zeros(bins)
        count = np.zeros(bins)
        for i, b in enumerate(where):
            labels[b][self._labels[i]] += 1
            q = self._quality[i]
            if q is not None:
                issues[b][q.get("issue") if not q.get("ok", True) else None] += 1
            polyp[b] += self._polyp[i]
            count[b] += 1
        return {
            "start_s": round(start, 3), "end_s": round(end, 3), "bins": bins,
            "classes": [lab.most_common(1)[0][0] if lab else None for lab in labels],
            "polyp": [round(float(p / c), 3) if c else 0.0 for p, c in zip(polyp, count)],
            "quality": [iss.most_common(1)[0][0] if iss else None for iss in issues],
        }


def summarize(rows: Iterable[Mapping], config: SummaryConfig | None = None) -> dict:
    """The summary of a sequence of per-frame rows (see the module's docstring)."""
    acc = ProcedureSummary(config)
    for row in rows:
        acc.add(row)
    return acc.result()
