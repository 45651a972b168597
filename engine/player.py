"""A controllable player over a Source and an Analyzer, in its own worker thread (Qt-free).

The viewer drives it; tests drive it the same way without Qt.

- **Replay** (seekable sources): every frame in order, paced to the source's timestamps times
  ``speed`` (0.25x to 4x); play/pause, exact seek, step back/forward, jump, loop. While playing,
  decoding and analysis overlap in :func:`engine.pipeline.analysed_frames`.
- **Live** (devices, or any source with ``live=True``): :class:`engine.live.LiveRunner`
  semantics: every captured frame is shown at once with the newest finished result, stale
  frames are dropped, a lost device is reconnected. ``frozen`` holds the picture on screen
  while capture, analysis and recording go on.

The source and the analyzer are opened *in the worker thread* (a long file or a model load
never blocks the caller) and closed there. Callbacks run on worker threads; a GUI must marshal
them to its own thread. Every shown picture also goes to the sinks (recorders), even frozen.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, ContextManager

import cv2
import numpy as np

from .errors import SourceError
from .live import LiveRunner
from .overlay import Overlay, render
from .pipeline import Analyzer, RateMeter, analysed_frames
from .runtime import settle_heap
from .slots import JOIN_TIMEOUT_S, LatestSlot
from .types import Frame, FrameResult

logger = logging.getLogger(__name__)

SPEEDS = (0.25, 0.5, 1.0, 1.5, 2.0, 4.0)
MIN_SPEED, MAX_SPEED = 0.25, 4.0


@dataclass(frozen=True, eq=False)
class Shown:
    """One picture for the screen: the frame, the newest result (in live mode it may belong to
    an earlier frame), and ``image``: the frame with the overlay drawn, or the frame's own image
    when the overlay is off or there is no result yet (``overlaid`` says which)."""

    frame: Frame
    result: FrameResult | None
    image: np.ndarray
    overlaid: bool
    screen: np.ndarray | None = None  # for the screen, when a size was asked for: see Player.picture

    def annotated(self, overlay: Overlay) -> np.ndarray:
        """The picture with ``overlay`` drawn (reuses ``image`` when it has it already)."""
        if self.overlaid:
            return self.image
        return render(self.frame, self.result, overlay)


@dataclass(frozen=True)
class PlayerStats:
    fps: float | None  # analysed frames per second
    dropped: int  # stale frames skipped (live)
    latency_ms: float | None  # median added latency: arrival to result ready
    reconnects: int
    analysed: int
    busy: bool = False  # live: the analysis skips frames, the screen gets Player.busy_fps pictures


class Player:
    """See the module docstring. ``open_source()`` returns a Source (a context manager);
    ``open_analyzer(info)`` returns a context manager yielding an Analyzer for that source.

    Callbacks (worker threads): ``on_open(info, analyzer)``, ``on_frame(shown)`` (not while
    frozen), ``on_result(result)`` (every analysed frame), ``on_playing(bool)`` (play state
    changed by the player itself: end of stream), ``on_status(message)``, ``on_error(exc)``
    (the player has stopped), ``on_finished()`` (the worker ended, after closing everything).
    ``live``: None picks live mode for sources that cannot seek. ``pace`` (live mode): deliver a
    file at this many frames/s, True: at its own rate, None: as fast as it decodes.
    ``present_fps`` (live mode): the most pictures per second drawn for ``on_frame`` (a screen
    shows 60; a capture card may deliver more). Live pictures are drawn by a presenter thread
    that always takes the newest frame, so the overlay is drawn only for pictures that will be
    shown and the capture thread never waits for it; sinks (recorders) still get every frame.
    ``busy_fps`` (live mode): while the analysis skips frames (:class:`LoadWatch`), the screen
    gets at most this many pictures per second instead, and the cores the painting gave back go
    to the analysis (None or 0: never).
    ``settle``: called in the worker once the models are loaded, before frames flow
    (``settle_heap`` by default); the viewer passes None and settles on its GUI thread, where
    any Qt object the collection frees belongs.
    """

    def __init__(self, open_source: Callable[[], ContextManager], open_analyzer: Callable[[object], ContextManager[Analyzer]],
                 *, overlay: Overlay | None = None, live: bool | None = None, pace: float | bool | None = None,
                 speed: float = 1.0, loop: bool = False, play: bool = True,
                 present_fps: float | None = None, busy_fps: float | None = None,
                 on_open=None, on_frame=None, on_result=None, on_playing=None, on_status=None,
                 on_error=None, on_finished=None,
                 settle: Callable[[], None] | None = settle_heap) -> None:
        self._open_source, self._open_analyzer = open_source, open_analyzer
        self._settle = settle
        self.overlay = overlay
        self._live_request = live
        self.pace = pace
        self.present_fps = present_fps
        self.busy_fps = busy_fps
        self.busy = False  # live: the analysis is skipping frames, the screen gets busy_fps pictures
        self.screen_size: tuple[int, int] | None = None  # (width, height) to pre-scale pictures to
        self.speed = speed
        self.loop = loop
        self.frozen = False
        self.on_open, self.on_frame, self.on_result = on_open, on_frame, on_result
        self.on_playing, self.on_status, self.on_error, self.on_finished = on_playing, on_status, on_error, on_finished
        self.info = None
        self.live: bool | None = None
        self.position = -1  # index of the frame shown last
        self.error: BaseException | None = None
        self._playing = play
        self._sinks: list[Callable[[Shown], None]] = []
        self._commands: deque[tuple] = deque()
        self._cond = threading.Condition()
        self._interrupt = threading.Event()  # a command arrived or stop was asked
        self._halt = threading.Event()
        self._next_read: int | None = 0
        self._runner: LiveRunner | None = None
        self._meter = RateMeter(30)
        self._latencies: deque[float] = deque(maxlen=60)
        self._analysed = 0
        self._thread: threading.Thread | None = None
        self.finished = threading.Event()

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> Player:
        self._thread = threading.Thread(target=self._run, name="endoview-player", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2 * JOIN_TIMEOUT_S) -> bool:
        """Ask the worker to stop and wait at most ``timeout``; True when it ended."""
        self._halt.set()
        self._send("stop")
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("player did not stop within %.1f s", timeout)
                return False
        return True

    @property
    def playing(self) -> bool:
        return self._playing

    def play(self) -> None:
        self._send("play")

    def pause(self) -> None:
        self._send("pause")

    def seek(self, index: int) -> None:
        """Show frame ``index`` (exact); playing goes on from there."""
        self._send("seek", int(index))

    def step(self, frames: int = 1) -> None:
        """Pause and show the frame ``frames`` away from the current one."""
        self._send("step", int(frames))

    def jump(self, seconds: float) -> None:
        """Show the frame ``seconds`` away from the current one (keeps playing)."""
        self._send("jump", float(seconds))

    def set_speed(self, speed: float) -> None:
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED}x and {MAX_SPEED}x, not {speed}")
        self.speed = float(speed)

    def add_sink(self, sink: Callable[[Shown], None]) -> None:
        self._sinks = [*self._sinks, sink]

    def remove_sink(self, sink: Callable[[Shown], None]) -> None:
        self._sinks = [s for s in self._sinks if s is not sink]

    def stats(self) -> PlayerStats:
        runner = self._runner
        if runner is not None:
            s = runner.stats
            return PlayerStats(s.fps, s.dropped, _median_tail(s.latencies_ms), s.reconnects, s.analysed,
                               busy=self.busy)
        return PlayerStats(self._meter.rate, 0, _median_tail(self._latencies), 0, self._analysed)

    def _send(self, *command) -> None:
        with self._cond:
            self._commands.append(command)
            self._interrupt.set()
            self._cond.notify_all()

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                self._status("opening the source")
                source = stack.enter_context(self._open_source())
                self.info = source.info
                self._status("loading the model")
                analyzer = stack.enter_context(self._open_analyzer(source.info))
                if self._halt.is_set():
                    return
                if self._settle is not None:  # no collector pause walks the models' heap while frames are shown
                    self._settle()
                self.live = (not source.info.seekable) if self._live_request is None else self._live_request
                if self.on_open is not None:
                    self.on_open(source.info, analyzer)
                self._status("")
                if self.live:
                    self._run_live(source, analyzer)
                else:
                    self._run_replay(source, analyzer)
        except BaseException as exc:  # noqa: BLE001 - reported, never lost
            self.error = exc
            # reported through on_error when someone listens; logged only when nobody does
            logger.log(logging.DEBUG if self.on_error is not None else logging.WARNING,
                       "player stopped: %s", exc)
            if self.on_error is not None:
                self.on_error(exc)
        finally:
            self.finished.set()
            if self.on_finished is not None:
                self.on_finished()

    def _status(self, message: str) -> None:
        if self.on_status is not None:
            self.on_status(message)

    def _set_playing(self, playing: bool) -> None:
        if playing != self._playing:
            self._playing = playing
            if self.on_playing is not None:
                self.on_playing(playing)

    def picture(self, frame: Frame, result: FrameResult | None) -> Shown:
        """The picture for the screen. Without a screen size: the frame with the overlay drawn.
        With one (the window's view): the frame scaled to fit it and the overlay drawn on that, at
        the screen's size (a 1080p frame in a 1000-pixel view: a quarter of the pixels to draw and
        no full-size copy), as BGRA, which Qt paints without converting it (``Shown.screen``);
        here, off the GUI thread, so the GUI thread only copies pixels. ``Shown.image`` is then the
        frame itself, and ``Shown.annotated`` draws the full-size overlay for whoever needs it."""
        overlay = self.overlay
        drawn = overlay is not None and result is not None
        size = self.screen_size
        if size is None:
            return Shown(frame, result, render(frame, result, overlay), drawn)
        fitted = fit_size(frame.size, size)
        small = frame.image if fitted == frame.size else cv2.resize(frame.image, fitted, interpolation=cv2.INTER_LINEAR)
        if drawn:
            small = overlay.draw(small, result, frame.index, copy=small is frame.image)
        return Shown(frame, result, frame.image, False, screen=cv2.cvtColor(small, cv2.COLOR_BGR2BGRA))

    def _deliver(self, frame: Frame, result: FrameResult | None) -> None:
        shown = self.picture(frame, result)
        self.position = frame.index
        for sink in self._sinks:
            sink(shown)
        if not self.frozen and self.on_frame is not None:
            self.on_frame(shown)

    def _analysed_one(self, result: FrameResult) -> None:
        self._analysed += 1
        self._meter.tick()
        self._latencies.append(sum(result.timings.values()))
        if self.on_result is not None:
            self.on_result(result)

    # replay -----------------------------------------------------------

    def _last_index(self) -> int | None:
        count = self.info.frame_count
        return None if count is None else count - 1

    def _clamp(self, index: int) -> int:
        last = self._last_index()
        return max(0, index if last is None else min(index, last))

    def _take(self, block: bool) -> tuple | None:
        with self._cond:
            while block and not self._commands and not self._halt.is_set():
                self._cond.wait(0.1)
            if not self._commands:
                self._interrupt.clear()
                return None
            command = self._commands.popleft()
            if not self._commands:
                self._interrupt.clear()
            return command

    def _run_replay(self, source, analyzer: Analyzer) -> None:
        self._show(source, analyzer, 0)
        while not self._halt.is_set():
            command = self._take(block=not self._playing)
            if command is not None:
                self._apply(command, source, analyzer)
            elif self._playing:
                self._play(source, analyzer)

    def _apply(self, command: tuple, source, analyzer: Analyzer) -> None:
        name, *args = command
        if name == "play":
            self._set_playing(True)
        elif name == "pause":
            self._set_playing(False)
        elif name == "seek":
            self._show(source, analyzer, args[0])
        elif name == "step":
            self._set_playing(False)
            self._show(source, analyzer, self.position + args[0])
        elif name == "jump":
            self._show(source, analyzer, self.position + round(args[0] * self.info.fps))

    def _show(self, source, analyzer: Analyzer, index: int) -> None:
        """Read, analyse and deliver frame ``index`` (one frame, no pacing)."""
        index = self._clamp(index)
        if index != self._next_read:
            source.seek(index)
            analyzer.reset()
        result = next(analysed_frames(source, analyzer, threads=False), None)
        if result is None:
            self._next_read = None
            return
        self._next_read = result.frame.index + 1
        self._analysed_one(result)
        self._deliver(result.frame, result)

    def _play(self, source, analyzer: Analyzer) -> None:
        """Play from the frame after the current one until a command arrives or the end."""
        start = self.position + 1
        last = self._last_index()
        if last is not None and start > last:
            start = 0  # at the end: play again from the start
        if start != self._next_read:
            try:
                source.seek(start)
            except SourceError:
                if start == 0:
                    raise
                self._end_of_stream()
                return
            analyzer.reset()
        self._next_read = None  # the chain reads ahead
        for result in analysed_frames(source, analyzer, speed=lambda: self.speed, stop=self._interrupt,
                                      maxsize=2):
            self._analysed_one(result)
            self._deliver(result.frame, result)
        if not self._interrupt.is_set():
            self._end_of_stream(source)

    def _end_of_stream(self, source=None) -> None:
        early = getattr(source, "stopped_early", None)
        if early:
            self._status(f"{self.info.name}: {early}")
        if self.loop:
            self.position = -1
            return
        self._set_playing(False)

    # live -------------------------------------------------------------

    def _run_live(self, source, analyzer: Analyzer) -> None:
        pace = self.pace or None
        if pace is True:  # a file or demo at its own rate; a device delivers at its own anyway
            pace = source.info.fps if source.info.seekable else None
        runner = LiveRunner(source, analyzer, on_frame=self._live_frame, on_result=self._live_result,
                            on_status=self._status, pace=pace)
        self._runner = runner
        self._present_slot = LatestSlot()
        presenter = threading.Thread(target=self._present, name="endoview-presenter", daemon=True)
        presenter.start()
        try:
            with runner:
                while not self._halt.is_set() and not runner.finished.wait(0.05):
                    while self._take(block=False) is not None:
                        pass  # replay commands mean nothing live; freeze is an attribute
        finally:
            self._present_slot.close()
            presenter.join(JOIN_TIMEOUT_S)
        if runner.error is not None:
            raise runner.error
        self._set_playing(False)

    def _live_frame(self, frame: Frame) -> None:
        """Capture thread: every frame to the sinks, the newest to the presenter."""
        result = self._runner.latest
        self.position = frame.index
        if self._sinks:
            shown = Shown(frame, result, frame.image, False)  # sinks draw only if they need it
            for sink in self._sinks:
                sink(shown)
        if not self.frozen:
            self._present_slot.put((frame, result))

    def _present(self) -> None:
        """Presenter thread: draws the overlay on the newest frame for the screen."""
        watch, runner = LoadWatch(), self._runner
        for frame, result in self._present_slot:
            started = time.perf_counter()
            if self.on_frame is not None and not self.frozen:
                self.on_frame(self.picture(frame, result))
            self.busy = bool(self.busy_fps) and watch.update(runner.stats.frames_in, runner.dropped, started)
            fps = self.busy_fps if self.busy else self.present_fps
            if fps:  # no faster than the screen: the next picture is newer anyway
                delay = 1.0 / fps - (time.perf_counter() - started)
                if delay > 0:
                    time.sleep(delay)

    def _live_result(self, result: FrameResult, image) -> None:
        if self.on_result is not None:
            self.on_result(result)


class LoadWatch:
    """Is live analysis falling behind its source? Over windows of ``window_s`` seconds: busy once
    at least ``enter`` of the frames that arrived were skipped (the analysis was still on an
    earlier one), and busy until a window skips at most ``leave`` of them, ``hold_s`` seconds
    after it became busy at the earliest (the screen's rate does not flip to and fro each second).
    The viewer then paints fewer pictures (``Player.busy_fps``): on two cores the painting (the
    picture scaled and drawn, Qt's paint pass, the copy to the X server) costs what the analysis
    lacks."""

    def __init__(self, window_s: float = 1.0, enter: float = 0.2, leave: float = 0.05, hold_s: float = 3.0) -> None:
        self.window_s, self.enter, self.leave, self.hold_s = window_s, enter, leave, hold_s
        self.busy = False
        self._mark: tuple[float, int, int] | None = None  # (time, frames in, dropped) at the window's start
        self._since = 0.0

    def update(self, frames_in: int, dropped: int, now: float) -> bool:
        if self._mark is None or frames_in < self._mark[1] or dropped < self._mark[2]:  # first call, or counts restarted
            self._mark = (now, frames_in, dropped)
            return self.busy
        t0, in0, drop0 = self._mark
        if now - t0 < self.window_s:
            return self.busy
        arrived, skipped = frames_in - in0, dropped - drop0
        share = skipped / arrived if arrived > 0 else 0.0
        if not self.busy and share >= self.enter:
            self.busy, self._since = True, now
        elif self.busy and share <= self.leave and now - self._since >= self.hold_s:
            self.busy = False
        self._mark = (now, frames_in, dropped)
        return self.busy


def fit_size(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a picture of ``size`` scaled to fit ``box`` with its aspect kept (the
    video view uses the same rule to place it)."""
    w, h = size
    scale = min(box[0] / w, box[1] / h)
    # rounded, not truncated: 1920 x 0.5302 is 1017.99..., and a picture one pixel narrower than
    # the view would be scaled again on the GUI thread; so a fitted size fits to itself
    return max(1, min(box[0], round(w * scale))), max(1, min(box[1], round(h * scale)))


def _median_tail(values, n: int = 60) -> float | None:
    tail = list(values)[-n:]
    return float(np.median(tail)) if tail else None


__all__ = ["MAX_SPEED", "MIN_SPEED", "Player", "PlayerStats", "SPEEDS", "Shown"]
