"""When the viewer sounds its alert for a new polyp (Qt-free; the window plays the sound).

A polyp track that is confirmed (:class:`engine.procedure.tracking.TrackEvent` "confirmed") is
*pending*. It is announced on the first frame that

- shows it (it is among the frame's tracks, not only missing from it),
- is usable (its quality is ok, or no quality was measured): no alert on a blurred, dark or
  overexposed frame; the alert waits for the next usable frame that shows the polyp,
- comes at least ``cooldown_s`` seconds (wall clock) after the previous alert.

Several pending polyps announced together make one alert. A pending track that ends (left the
field beyond the tracker's gap, or a seek) is dropped unannounced. Feed it from one thread.
"""

from __future__ import annotations

import time
from typing import Callable

from ..types import FrameResult


class AlertPolicy:
    """See the module. ``feed(result)`` returns the track ids to announce now (empty: stay quiet)."""

    def __init__(self, cooldown_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not cooldown_s >= 0:
            raise ValueError(f"the alert cooldown must be 0 or more seconds, not {cooldown_s}")
        self.cooldown_s = float(cooldown_s)
        self.clock = clock
        self._pending: list[int] = []
        self._last: float | None = None
        self.fired = 0  # alerts given so far
        self.held_unusable = 0  # frames on which a pending alert waited for a usable frame

    def feed(self, result: FrameResult) -> list[int]:
        tracks = result.tracks
        if tracks is None:
            return []
        self._pending += [e.track_id for e in tracks.events if e.kind == "confirmed"]
        if not self._pending:
            return []
        seen = {t.id for t in tracks.tracks}
        self._pending = [i for i in self._pending if i in seen or any(t.id == i for t in tracks.missing)]
        due = [i for i in self._pending if i in seen]
        if not due:
            return []
        quality = result.quality
        if quality is not None and not quality.ok:
            self.held_unusable += 1
            return []
        now = self.clock()
        if self._last is not None and now - self._last < self.cooldown_s:
            return []
        self._last = now
        self._pending = [i for i in self._pending if i not in due]
        self.fired += 1
        return due

    def reset(self) -> None:
        """A new source: nothing pending, no cooldown running."""
        self._pending = []
        self._last = None
