"""Where in a video the model found what: per-frame classes and the findings in them (Qt-free).

A :class:`Timeline` is filled as frames are analysed (by the player, or all at once by
:func:`analyse_video` in the background) and is read by the viewer's timeline strip and
findings list. A *finding* is a stretch of frames whose top class is polyp-related (a
configurable list) held for at least ``min_duration_s``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .pipeline import Analyzer, analysed_frames
from .types import POLYP_CLASSES, FrameResult

UNKNOWN = -1


@dataclass(frozen=True)
class Finding:
    """Frames ``start`` .. ``end`` (inclusive) where ``label`` (mostly) held."""

    start: int
    end: int
    label: str
    confidence: float  # mean top-1 confidence over the stretch
    fps: float

    @property
    def start_s(self) -> float:
        return self.start / self.fps

    @property
    def duration_s(self) -> float:
        return (self.end - self.start + 1) / self.fps

    def __str__(self) -> str:
        m, s = divmod(self.start_s, 60)
        return f"{int(m):02d}:{s:04.1f}  {self.label}  {self.duration_s:.1f} s  ({self.confidence:.0%})"


class Timeline:
    """The top class of every analysed frame of one video; thread-safe.

    ``frame_count`` None: grows as frames come (live sources, unknown lengths).
    """

    def __init__(self, labels: Sequence[str], fps: float, frame_count: int | None = None, *,
                 classes: Sequence[str] = POLYP_CLASSES, min_duration_s: float = 1.0,
                 min_confidence: float = 0.0) -> None:
        if fps <= 0:
            raise ValueError(f"timeline frame rate must be positive, not {fps}")
        self.labels = tuple(labels)
        self.fps = float(fps)
        self.frame_count = frame_count
        self.classes = tuple(classes)
        self.min_duration_s = min_duration_s
        self.min_confidence = min_confidence
        self._lock = threading.Lock()
        self._cls = np.full(frame_count or 1024, UNKNOWN, np.int16)
        self._conf = np.zeros(len(self._cls), np.float32)
        self._unusable = np.zeros(len(self._cls), bool)  # the frame's quality was not ok
        self.version = 0  # bumped on every change, so painters know when to repaint

    def record(self, result: FrameResult) -> None:
        """Store the top class of ``result``: the classifier's top-1, or the segmenter's "polyp" /
        "no polyp" (results without either, or with a class not in ``labels``, are ignored), and
        whether the frame was unusable (its quality not ok)."""
        top = result.top
        i = result.frame.index
        if top is None or top[0] not in self.labels or i < 0 or (
                self.frame_count is not None and i >= self.frame_count):
            return
        label, confidence = top
        with self._lock:
            if i >= len(self._cls):
                grow = max(i + 1, 2 * len(self._cls)) - len(self._cls)
                self._cls = np.concatenate([self._cls, np.full(grow, UNKNOWN, np.int16)])
                self._conf = np.concatenate([self._conf, np.zeros(grow, np.float32)])
                self._unusable = np.concatenate([self._unusable, np.zeros(grow, bool)])
            self._cls[i] = self.labels.index(label)
            self._conf[i] = confidence
            quality = result.quality
            self._unusable[i] = quality is not None and not quality.ok
            self.version += 1

    def class_indices(self) -> np.ndarray:
        """A copy of the per-frame class indices (-1: not analysed yet)."""
        with self._lock:
            n = self.frame_count if self.frame_count is not None else self._last_known() + 1
            return self._cls[:n].copy()

    def _last_known(self) -> int:
        known = np.flatnonzero(self._cls != UNKNOWN)
        return int(known[-1]) if known.size else -1

    @property
    def analysed(self) -> int:
        with self._lock:
            return int(np.count_nonzero(self._cls != UNKNOWN))

    def label_at(self, index: int) -> str | None:
        with self._lock:
            if not 0 <= index < len(self._cls) or self._cls[index] == UNKNOWN:
                return None
            return self.labels[self._cls[index]]

    def runs(self) -> list[tuple[int, int, int]]:
        """(first, last, class index) of each stretch of equal class (-1 stretches included)."""
        cls = self.class_indices()
        if cls.size == 0:
            return []
        edges = np.flatnonzero(np.diff(cls)) + 1
        starts = np.concatenate([[0], edges])
        ends = np.concatenate([edges - 1, [cls.size - 1]])
        return [(int(s), int(e), int(cls[s])) for s, e in zip(starts, ends)]

    def unusable_runs(self) -> list[tuple[int, int]]:
        """(first, last) of each stretch of analysed frames whose quality was not ok."""
        with self._lock:
            n = self.frame_count if self.frame_count is not None else self._last_known() + 1
            bad = self._unusable[:n] & (self._cls[:n] != UNKNOWN)
        padded = np.concatenate([[False], bad, [False]]).astype(np.int8)
        changes = np.flatnonzero(np.diff(padded))
        return [(int(a), int(b) - 1) for a, b in zip(changes[::2], changes[1::2])]

    def findings(self) -> list[Finding]:
        """Stretches where a polyp-related class held for at least ``min_duration_s``."""
        with self._lock:
            n = self.frame_count if self.frame_count is not None else self._last_known() + 1
            cls, conf = self._cls[:n].copy(), self._conf[:n].copy()
        wanted = [self.labels.index(c) for c in self.classes if c in self.labels]
        hit = np.isin(cls, wanted) & (conf >= self.min_confidence)
        min_frames = max(1, round(self.min_duration_s * self.fps))
        found = []
        padded = np.concatenate([[False], hit, [False]]).astype(np.int8)
        changes = np.flatnonzero(np.diff(padded))
        for start, stop in zip(changes[::2], changes[1::2]):
            if stop - start < min_frames:
                continue
            label = Counter(cls[start:stop].tolist()).most_common(1)[0][0]
            found.append(Finding(int(start), int(stop - 1), self.labels[label],
                                 float(conf[start:stop].mean()), self.fps))
        return found


def analyse_video(source, analyzer: Analyzer, timeline: Timeline, *,
                  progress: Callable[[int], None] | None = None,
                  stop: threading.Event | None = None) -> int:
    """Analyse every frame of ``source`` into ``timeline`` as fast as possible; returns the count.

    ``stop`` cancels (the frames analysed so far stay in the timeline).
    """
    n = 0
    for result in analysed_frames(source, analyzer, stop=stop):
        timeline.record(result)
        n += 1
        if progress is not None:
            progress(n)
    return n


__all__ = ["Finding", "POLYP_CLASSES", "Timeline", "analyse_video"]
