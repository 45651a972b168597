"""Background jobs for the GUI (STYLE 7): a Python thread per job, results as Qt signals.

A job is ``fn(stop, progress)``: it checks ``stop`` (a threading.Event) and calls
``progress(done)``. Its progress, result and error arrive on the GUI thread as queued signals.
Cancelling sets ``stop``; nothing is ever terminated.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

logger = logging.getLogger(__name__)

Job = Callable[[threading.Event, Callable[[int], None]], Any]


class Task(QObject):
    progressed = Signal(int)
    succeeded = Signal(object)
    failed = Signal(object)
    ended = Signal()

    def __init__(self, name: str, job: Job, parent: QObject | None = None, *, progress_every_s: float = 0.1) -> None:
        super().__init__(parent)
        self.name = name
        self.stop = threading.Event()
        self._job = job
        self._every = progress_every_s
        self._last = 0.0
        self._thread = threading.Thread(target=self._run, name=f"endoview-{name}", daemon=True)

    def start(self) -> Task:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def cancel(self) -> None:
        self.stop.set()

    def join(self, timeout: float = 5.0) -> bool:
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _progress(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self.progressed.emit(done)

    def _run(self) -> None:
        try:
            result = self._job(self.stop, self._progress)
        except BaseException as exc:  # noqa: BLE001 - carried to the GUI
            logger.info("%s failed: %s", self.name, exc)
            self.failed.emit(exc)
        else:
            self.succeeded.emit(result)
        finally:
            self.ended.emit()
