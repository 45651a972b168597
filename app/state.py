"""The viewer's state as a plain, Qt-free object (STYLE 8): widgets mirror it, tests drive it.

Setting a field notifies every subscriber with ``(name, value)`` when the value changed.
Fields the user controls (``playing``, ``speed``, ``loop``, ``overlay``, ``frozen``...) are
acted on by the session; fields the engine reports (``position``, ``status``...) are set by it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

Observer = Callable[[str, Any], None]


@dataclass
class ViewerState:
    source: str = ""  # what is open ("" = nothing)
    live: bool = False
    loading: bool = False
    playing: bool = False
    frozen: bool = False  # live: picture held while capture and analysis go on
    position: int = -1  # index of the frame on screen
    frame_count: int | None = None
    fps: float = 0.0
    speed: float = 1.0
    loop: bool = False
    overlay: bool = True
    second_pass: bool = False
    mark_in: int | None = None
    mark_out: int | None = None
    recording: bool = False
    exporting: bool = False
    analysing: bool = False
    progress: tuple[int, int] | None = None  # (done, total) of the running background job
    status: str = ""  # one line for the status area
    error: str = ""  # the last error message ("" = none)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_observers", [])

    def __setattr__(self, name: str, value: Any) -> None:
        old = self.__dict__.get(name, _MISSING)
        object.__setattr__(self, name, value)
        if old is not _MISSING and old != value:
            for observer in list(self._observers):
                if self.__dict__[name] != value:
                    break  # an observer changed it again; that change notified everyone
                observer(name, value)

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def update(self, **values: Any) -> None:
        for name, value in values.items():
            if name not in _NAMES:
                raise AttributeError(f"ViewerState has no field {name!r}")
            setattr(self, name, value)

    @property
    def duration_s(self) -> float | None:
        return self.frame_count / self.fps if self.frame_count and self.fps else None


_MISSING = object()
_NAMES = {f.name for f in fields(ViewerState)}
