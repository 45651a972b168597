"""Thread plumbing shared by the pipeline, live mode, the player and the second pass: a one-item
mailbox where the newest item wins (:class:`LatestSlot`), and how long a stopping thread is
waited for (:data:`JOIN_TIMEOUT_S`)."""

from __future__ import annotations

import threading
from typing import Iterator

#: How long a stopping pipeline waits for each of its threads.
JOIN_TIMEOUT_S = 2.0


class LatestSlot:
    """A one-item mailbox: ``put`` replaces an unread item (counted as dropped).

    The consumer iterates it: ``for item in slot:`` gives the newest item each time one is there
    and ends once the slot is closed and empty (an item put before ``close`` is still given).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def get(self, timeout: float) -> object | None:
        """The newest item, or None after ``timeout`` or once closed and empty."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def __iter__(self) -> Iterator:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._item is not None or self._closed)
                item, self._item = self._item, None
                self._cond.notify_all()
            if item is None:  # closed and empty
                return
            yield item

    def wait_empty(self, timeout: float) -> bool:
        """Wait until the item was taken (or the slot closed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._item is None or self._closed, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
