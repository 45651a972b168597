"""The viewer's controller: the state on one side, the engine's player, recorder, timeline and
background jobs on the other (STYLE 7 and 8).

Engine callbacks run on worker threads; :class:`PlayerBridge` re-emits them as Qt signals, so
everything here that touches the state or widgets runs on the GUI thread. The newest picture
wins: a frame that arrives while the previous one has not been painted replaces it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QGuiApplication

from engine.config import Config
from engine.errors import EndoviewError
from engine.outputs.export import annotate
from engine.outputs.recorder import Recorder, recording_path, recording_sink
from engine.outputs.snapshot import save_snapshot
from engine.player import Player, Shown
from engine.procedure.alerts import AlertPolicy
from engine.procedure.findings import AnalysedRows, Fanout, PolypFindings
from engine.runtime import make_overlay, open_analyzer, settle_heap
from engine.sources import open_source
from engine.timeline import Timeline, analyse_video
from engine.types import ContentArea

from .settings import Settings
from .state import ViewerState
from .tasks import Task

logger = logging.getLogger(__name__)

SECOND_PASS_MISSING = (
    "Second pass: no second-pass model is set. Give a classifier bundle (the trimmed ResNet-152 "
    "that 'endoview export' writes) or a Cascade Mask R-CNN bundle ('endoview export-seg' of a "
    "'train segment --arch cascade' run) with --second-pass BUNDLE or in a --config FILE "
    "[second_pass].")


def describe(exc: BaseException) -> str:
    """One line for the user: our own errors as they are, anything else as an internal error."""
    if isinstance(exc, EndoviewError):
        return str(exc)
    # the traceback goes to the log (the viewer's log file, pytest's captured log) for the report
    logger.error("internal error: %r", exc, exc_info=exc)
    return f"internal error: {exc!r} (please report it)"


@dataclass(frozen=True)
class Opened:
    """What the player's worker opened, handed to the GUI thread by ``PlayerBridge.opened``."""

    info: object  # SourceInfo
    model_text: str
    analyzer: object  # the Analyzer, used by the player's threads
    timeline: Timeline | None  # filled by the player's threads, read by the GUI


class TimelineFeed:
    """The player's side of one opened source: each result goes to the timeline made for it.

    Only the player's threads touch it: its worker sets ``timeline`` before the first frame (in
    ``on_open``), then the thread analysing frames records into it.
    """

    def __init__(self) -> None:
        self.timeline: Timeline | None = None

    def record(self, result) -> None:
        if self.timeline is not None:
            self.timeline.record(result)


class PlayerBridge(QObject):
    """Player callbacks (worker threads) -> queued signals on the GUI thread."""

    opened = Signal(object)  # Opened
    frame_ready = Signal()
    status = Signal(str)
    error = Signal(object)
    playing = Signal(bool)
    second_pass = Signal(object)  # SecondPassResult
    alert = Signal(object)  # track ids of new polyps to announce (engine.procedure.alerts)

    def __init__(self) -> None:
        super().__init__()
        self._latest: Shown | None = None
        self._pending = False
        self._lock = threading.Lock()

    def on_frame(self, shown: Shown) -> None:
        with self._lock:
            self._latest = shown
            if self._pending:
                return
            self._pending = True
        self.frame_ready.emit()

    def take(self) -> Shown | None:
        with self._lock:
            shown, self._latest, self._pending = self._latest, None, False
            return shown


@dataclass(frozen=True)
class ExportOptions:
    output: Path
    overlay: bool = True
    deidentify: bool = False
    log: Path | None = None
    start_s: float | None = None
    end_s: float | None = None
    force: bool = False


class Session(QObject):
    """Owns what is open and every job; actions are methods, choices are state fields."""

    frame_shown = Signal(object)  # Shown
    opened = Signal()
    message = Signal(str)  # a one-off message: export done, snapshot saved...
    failed = Signal(object)  # an error from a worker (recorder), re-emitted on the GUI thread

    def __init__(self, state: ViewerState, config: Config, settings: Settings, *, model: bool = True,
                 source_opener: Callable = open_source, live: bool | None = None,
                 pace: float | bool | None = True, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.config = config
        self.settings = settings
        self.model = model
        self.source_opener = source_opener
        self.live, self.pace = live, pace  # live None: devices live, files replayed
        self.player: Player | None = None
        self._screen_size: tuple[int, int] | None = None
        self.analyzer = None  # the player's Analyzer, once its worker has opened it
        # the second-pass toggle as the analysing thread reads it: set and cleared by the GUI
        self._ask_second_pass = threading.Event()
        if state.second_pass:
            self._ask_second_pass.set()
        self.timeline: Timeline | None = None
        # procedure intelligence of what is open (engine.procedure): the polyps and the analysed rows
        # seen while playing; those of "Analyse the whole video" once it has run (one pass in order)
        self.polyps = PolypFindings()
        self.rows = AnalysedRows()
        self.whole: tuple[PolypFindings, AnalysedRows] | None = None
        self.alerts = AlertPolicy(config.alert_cooldown)
        self.sound = None  # app.alerts.AlertSound, made at the first alert
        self.alerts_sounded = 0
        self.info = None
        self.model_text = ""
        self.shown: Shown | None = None
        self.recorders: list[Recorder] = []
        self.tasks: dict[str, Task] = {}
        self._bridge: PlayerBridge | None = None
        self._sink = None
        self.overlay = make_overlay(config)
        self.failed.connect(self._on_recorder_error)
        state.subscribe(self._on_state)

    # ------------------------------------------------------------------ sources

    def open(self, spec: str) -> None:
        """Open a file, device, folder or 'demo' (in the player's worker: never blocks)."""
        self.close_source()
        spec = str(spec)
        bridge = PlayerBridge()
        bridge.opened.connect(self._on_opened)
        bridge.frame_ready.connect(self._on_frame_ready)
        bridge.second_pass.connect(self._on_second_pass)
        bridge.status.connect(self._on_status)
        bridge.error.connect(self._on_error)
        bridge.alert.connect(self._on_alert)
        bridge.playing.connect(lambda playing: setattr(self.state, "playing", playing))
        self._bridge = bridge
        self.state.update(source=spec, loading=True, error="", status=f"opening {spec}",
                          position=-1, frame_count=None, mark_in=None, mark_out=None, frozen=False)
        feed = TimelineFeed()
        self.polyps, self.rows, self.whole = PolypFindings(), AnalysedRows(), None
        self.alerts = AlertPolicy(self.config.alert_cooldown)
        self.player = Player(
            lambda: self.source_opener(spec), lambda info: self._analyzer_for(info, bridge),
            overlay=self._overlay_or_none(),
            speed=self.state.speed, loop=self.state.loop, play=True, live=self.live, pace=self.pace,
            present_fps=_display_hz(), busy_fps=self.config.busy_fps,
            on_open=lambda info, analyzer: self._worker_opened(bridge, feed, info, analyzer),
            on_frame=bridge.on_frame, on_result=lambda result: self._record_result(result, feed, bridge),
            on_playing=bridge.playing.emit, on_status=bridge.status.emit, on_error=bridge.error.emit,
            settle=None,  # on this thread, in _on_opened: a collection frees Qt objects where they belong
        )
        self.player.screen_size = self._screen_size
        self.player.start()

    @Slot(int, int)
    def set_screen_size(self, width: int, height: int) -> None:
        """The video view's size: the player scales pictures to it off the GUI thread."""
        self._screen_size = (width, height)
        if self.player is not None:
            self.player.screen_size = self._screen_size

    def _analyzer_for(self, info, bridge: PlayerBridge):
        return open_analyzer(self.config, still=info.still, model=self.model,
                             on_second_pass=bridge.second_pass.emit)

    def _worker_opened(self, bridge: PlayerBridge, feed: TimelineFeed, info, analyzer) -> None:
        """Worker thread: set up what the worker owns (the analyzer's triggers, the timeline its
        results go to) before the first frame, then hand it all to the GUI thread, which keeps it
        (``_on_opened``). Nothing of the session is changed here."""
        triggers, ask = analyzer.triggers, self._ask_second_pass
        if triggers is not None:  # the triggers are consulted only while the toggle is on
            analyzer.triggers = lambda result: ask.is_set() and triggers(result)
        m = analyzer.model
        timeline = None
        if m is not None:  # a classifier's classes, or a segmenter's "no polyp" / "polyp"
            s = self.settings
            timeline = Timeline(m.labels, info.fps or 30.0, info.frame_count,
                                classes=s.finding_classes, min_duration_s=s.finding_min_s,
                                min_confidence=s.finding_min_confidence)
        feed.timeline = timeline
        text = f"{m.name} on {m.backend.description}" if m is not None else "no model (content area only)"
        bridge.opened.emit(Opened(info, text, analyzer, timeline))

    def _record_result(self, result, feed: TimelineFeed | None = None, bridge: PlayerBridge | None = None) -> None:
        """Worker thread: every analysed frame into the timeline, the polyps, the rows; the alert."""
        if feed is not None:
            feed.record(result)
        self.polyps.record(result)
        self.rows.record(result)
        due = self.alerts.feed(result)
        if due and bridge is not None and self.config.alert_sound:
            bridge.alert.emit(due)

    @Slot(object)
    def _on_alert(self, track_ids) -> None:
        """GUI thread: sound the chime for newly confirmed polyps (see engine.procedure.alerts)."""
        if not self.config.alert_sound:
            return
        if self.sound is None:
            from .alerts import AlertSound

            self.sound = AlertSound()
        self.sound.play()
        self.alerts_sounded += 1
        self.state.status = "new polyp: " + ", ".join(f"#{i}" for i in track_ids)

    def polyp_rows(self) -> list:
        """The findings list's rows: the whole-video analysis's polyps once it ran, else those seen."""
        polyps = self.whole[0] if self.whole is not None else self.polyps
        return polyps.rows()

    def analysed_rows(self) -> list[dict]:
        """The per-frame rows a report is made of: the whole-video analysis's once it ran, else the
        rows of the frames analysed while playing (a replay with seeks covers only what was shown)."""
        return (self.whole[1] if self.whole is not None else self.rows).rows()

    def close_source(self, timeout: float = 4.0) -> None:
        if self.recorders:
            self.stop_recording(wait=True)
        for name in ("analyse",):
            self.cancel(name)
        if self._bridge is not None:
            self._bridge.blockSignals(True)  # nothing more from the old player
            self._bridge = None
        if self.player is not None:
            player, self.player = self.player, None
            player.stop(timeout)
        self.timeline = None
        self.info = None
        self.shown = None
        self.analyzer = None

    @property
    def triggers_on(self) -> bool:
        """Whether the second pass's triggers are consulted (the second-pass toggle)."""
        return self._ask_second_pass.is_set()

    @Slot(object)
    def _on_opened(self, opened: Opened) -> None:
        info = opened.info
        self.info, self.model_text = info, opened.model_text
        self.analyzer, self.timeline = opened.analyzer, opened.timeline
        self.state.update(loading=False, live=bool(self.player and self.player.live),
                          frame_count=info.frame_count, fps=float(info.fps),
                          playing=bool(self.player and self.player.playing), status="")
        self.opened.emit()
        settle_heap()  # here, not in the worker: what it frees may be Qt objects of this thread

    @Slot()
    def _on_frame_ready(self) -> None:
        shown = self._bridge.take() if self._bridge is not None else None
        if shown is None:
            return
        self.shown = shown
        self.state.position = shown.frame.index
        self.frame_shown.emit(shown)

    @Slot(str)
    def _on_status(self, message: str) -> None:
        self.state.status = message

    @Slot(object)
    def _on_error(self, exc: BaseException) -> None:
        self.state.update(error=describe(exc), loading=False, playing=False, status="")

    # ------------------------------------------------------------------ state -> engine

    def _overlay_or_none(self):
        return self.overlay if self.state.overlay else None

    def _on_state(self, name: str, value) -> None:
        p = self.player
        if name == "second_pass":
            worker = self.analyzer.second_pass if self.analyzer is not None else None
            if value and worker is None and self.config.second_pass is None:
                self.message.emit(SECOND_PASS_MISSING)
                self.state.second_pass = False
            else:  # the analysing thread consults the triggers only while this is set
                (self._ask_second_pass.set if value else self._ask_second_pass.clear)()
        if p is None:
            return
        if name == "playing" and not self.state.live:
            (p.play if value else p.pause)()
        elif name == "frozen":
            p.frozen = bool(value) and bool(self.state.live)
        elif name == "speed":
            p.set_speed(float(value))
        elif name == "loop":
            p.loop = bool(value)
        elif name == "overlay":
            p.overlay = self._overlay_or_none()

    # ------------------------------------------------------------------ actions

    def toggle_play(self) -> None:
        """Space: freeze/unfreeze live, play/pause a replay."""
        if self.state.live:
            self.state.frozen = not self.state.frozen
        else:
            self.state.playing = not self.state.playing

    def step(self, frames: int) -> None:
        if self.player is not None and not self.state.live:
            self.player.step(frames)

    def jump(self, seconds: float) -> None:
        if self.player is not None and not self.state.live:
            self.player.jump(seconds)

    def seek(self, index: int) -> None:
        if self.player is not None and not self.state.live:
            self.player.seek(index)

    def mark(self, which: str) -> None:
        """I / O: the export range starts / ends at the frame on screen."""
        if self.state.position >= 0 and not self.state.live:
            setattr(self.state, f"mark_{which}", self.state.position)

    def analyse_this_frame(self) -> None:
        """A: the second pass looks at the frame on screen; its result is drawn when it is in."""
        worker = self.analyzer.second_pass if self.analyzer is not None else None
        if worker is None:
            self.message.emit(SECOND_PASS_MISSING)
            return
        shown = self.shown
        if shown is not None:
            area = shown.result.area if shown.result is not None else None
            if area is None:
                h, w = shown.frame.image.shape[:2]
                area = ContentArea.full_frame(w, h)
            worker.request(shown.frame, area)
            self.state.status = f"second pass: analysing frame {shown.frame.index}"

    @Slot(object)
    def _on_second_pass(self, result) -> None:
        """A second-pass result: redraw the picture on screen with it when the video stands still."""
        shown, player = self.shown, self.player
        conf = "" if result.confidence is None else f" {result.confidence:.0%}"
        found = "" if result.scores is None else f", {len(result.scores)} instance(s)"
        self.state.status = f"second pass: {result.label}{conf}{found} (frame {result.frame_index})"
        if shown is None or shown.result is None or player is None:
            return
        if self.state.playing and not self.state.frozen:
            return  # the next frames carry it anyway
        updated = dataclasses.replace(shown.result, second_pass=result)
        self.shown = player.picture(shown.frame, updated)
        self.frame_shown.emit(self.shown)

    def apply_settings(self, settings: Settings, config: Config) -> None:
        """New settings: the overlay follows at once, a new model by reopening the source."""
        reopen = (config.bundle, config.backend, config.smoothing) != (
            self.config.bundle, self.config.backend, self.config.smoothing)
        self.settings, self.config = settings, config
        self.alerts.cooldown_s = config.alert_cooldown
        self.overlay = make_overlay(config)
        if self.player is not None:
            self.player.overlay = self._overlay_or_none()
        if self.timeline is not None:
            self.timeline.classes = settings.finding_classes
            self.timeline.min_duration_s = settings.finding_min_s
            self.timeline.min_confidence = settings.finding_min_confidence
            self.timeline.version += 1
        if reopen and self.state.source:
            self.open(self.state.source)

    # ------------------------------------------------------------------ background jobs

    def busy(self) -> list[str]:
        """What would be lost by closing now."""
        jobs = ["an export"] if self.running("export") else []
        return jobs + (["a recording"] if self.recorders else [])

    def running(self, name: str) -> bool:
        task = self.tasks.get(name)
        return task is not None and task.running

    def cancel(self, name: str) -> None:
        task = self.tasks.get(name)
        if task is not None:
            task.cancel()

    def _start(self, name: str, job, *, done: Callable[[object], None],
               total: int | None = None) -> Task | None:
        if self.running(name):
            self.message.emit(f"{name} is already running")
            return None
        task = Task(name, job, self)
        flag = {"export": "exporting", "analyse": "analysing"}.get(name)
        if flag:
            self.state.update(**{flag: True}, progress=(0, total or 0))
            task.progressed.connect(lambda n: setattr(self.state, "progress", (n, total or 0)))
        task.succeeded.connect(done)
        task.failed.connect(lambda exc: self._job_failed(name, exc, task))
        task.ended.connect(lambda: self._job_ended(name, task, flag))
        self.tasks[name] = task
        return task.start()

    def _job_failed(self, name: str, exc: BaseException, task: Task) -> None:
        if task.stop.is_set():
            self.message.emit(f"{name} cancelled")
        else:
            self.state.error = describe(exc)

    def _job_ended(self, name: str, task: Task, flag: str | None) -> None:
        task.join(1.0)
        if self.tasks.get(name) is task:
            del self.tasks[name]
        if flag:
            self.state.update(**{flag: False}, progress=None)

    def export(self, options: ExportOptions) -> Task | None:
        """Annotated clip (and log) of the open video, in the background."""
        spec, config, fps = self.state.source, self.config, self.state.fps
        if not spec or self.state.live:
            self.state.error = "export needs an open video file (not a live source)"
            return None
        n = self.state.frame_count or 0
        first = round((options.start_s or 0) * fps)
        last = round(options.end_s * fps) if options.end_s is not None else n
        overlay = make_overlay(config) if options.overlay else None

        def job(stop, progress):
            with self.source_opener(spec) as source, open_analyzer(config, model=self.model) as analyzer:
                return annotate(source, options.output, analyzer, overlay=overlay,
                                logs=[options.log] if options.log else [], deidentify=options.deidentify,
                                start_s=options.start_s, end_s=options.end_s, force=options.force,
                                progress=progress, stop=stop)

        def done(report):
            logs = "".join(f" and {p}" for p in report.logs)
            self.message.emit(f"exported {report.frames} frames to {report.output}{logs}")

        return self._start("export", job, done=done, total=max(0, last - first))

    def analyse_whole(self) -> Task | None:
        """Fill the timeline for every frame, in the background."""
        timeline, spec, config = self.timeline, self.state.source, self.config
        if timeline is None or self.state.live:
            self.state.error = "analysing the whole video needs an open video file and a model"
            return None

        polyps, rows = PolypFindings(), AnalysedRows()

        def job(stop, progress):
            fast_only = dataclasses.replace(config, second_pass=None)
            with self.source_opener(spec) as source, open_analyzer(fast_only) as analyzer:
                # the polyps and rows of one pass in order; the analyser's own polyp tracker counts
                return analyse_video(source, analyzer, Fanout(timeline, polyps, rows), progress=progress, stop=stop)

        def done(n):
            if self.timeline is timeline:  # still the same video
                self.whole = (polyps, rows)
            self.message.emit(f"analysed {n} frames; {len(polyps)} polyps")

        return self._start("analyse", job, done=done, total=self.state.frame_count or 0)

    def snapshot(self) -> Task | None:
        """S: the frame on screen as PNG, with and without the overlay."""
        shown, folder, overlay = self.shown, Path(self.settings.output_folder), self.overlay
        if shown is None:
            self.state.error = "no frame to save yet"
            return None
        name = Path(self.state.source).name or "frame"

        def job(stop, progress):
            folder.mkdir(parents=True, exist_ok=True)
            return save_snapshot(folder, name, shown.frame.index, shown.frame.image, shown.annotated(overlay))

        done = lambda paths: self.message.emit("snapshot saved: " + ", ".join(map(str, paths)))  # noqa: E731
        return self._start("snapshot", job, done=done)

    def write_report(self, path: Path) -> Task | None:
        """The procedure report (HTML) of the analysed rows of what is open, in the background:
        polyps with their best frames (read again from the video), cecum, withdrawal, bowel prep,
        quality (engine.procedure). Overwrites ``path`` (the file dialog asked)."""
        rows, spec = self.analysed_rows(), self.state.source
        if not rows:
            self.state.error = "no analysed frames to report on yet: play the video or analyse all of it"
            return None
        live, path = self.state.live, Path(path)
        opener = self.source_opener

        def job(stop, progress):
            from engine.procedure.report import render_html, write_text
            from engine.procedure.summary import summarize

            summary = summarize(rows)
            summary["source"] = Path(spec).name or spec
            thumbnails, note = None, None
            if live:
                note = "a live source: no frames to read back"
            elif summary["tracks"]:
                from engine.procedure.thumbnails import track_thumbnails

                thumbnails = track_thumbnails(spec, summary, rows, open_source=opener)
            models = [{"name": n, "version": summary["model_versions"].get(n, "")} for n in summary["models"]]
            html = render_html(summary, thumbnails=thumbnails, models=models, source=summary["source"],
                               thumbnails_note=note)
            write_text(path, html, force=True)
            return path, summary

        def done(result):
            out, summary = result
            self.message.emit(f"report written: {out} ({summary['polyps']} polyps, {summary['frames']} frames)")

        return self._start("report", job, done=done)

    def snapshot_dicom(self, path: Path) -> Task | None:
        """The frame on screen (without the overlay) as a DICOM Secondary Capture, blacked out
        outside the endoscopic field (the processor's text lies there)."""
        shown, path = self.shown, Path(path)
        if shown is None:
            self.state.error = "no frame to save yet"
            return None
        area = shown.result.area if shown.result is not None else None

        def job(stop, progress):
            from engine.procedure.dicom import save_snapshot as save_dicom

            path.parent.mkdir(parents=True, exist_ok=True)
            return save_dicom(path, shown.frame.image, area=area, force=True,
                              description=f"endoview snapshot, frame {shown.frame.index}")

        done = lambda out: self.message.emit(f"DICOM snapshot saved: {out}")  # noqa: E731
        return self._start("dicom", job, done=done)

    # ------------------------------------------------------------------ recording

    def toggle_recording(self) -> None:
        if self.recorders:
            self.stop_recording()
        else:
            self.start_recording()

    def start_recording(self) -> None:
        s, info, p = self.settings, self.info, self.player
        if p is None or info is None:
            self.state.error = "nothing to record: open a source first"
            return
        kinds = [k for k, on in (("raw", s.record_raw), ("annotated", s.record_annotated)) if on]
        if not kinds:
            self.state.error = "choose raw and/or annotated recording in the settings"
            return
        folder = Path(s.output_folder)
        recs: dict[str, Recorder] = {}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for k in kinds:
                recs[k] = Recorder(recording_path(folder, k), info.width, info.height, info.fps,
                                   on_error=self.failed.emit)
        except (EndoviewError, OSError) as exc:
            _abandon(recs.values())  # the raw one may have started before the annotated one failed
            self.state.error = describe(exc) if isinstance(exc, EndoviewError) else f"cannot record in {folder}: {exc}"
            return
        sink = recording_sink(recs, self.overlay)
        self.recorders, self._sink = list(recs.values()), sink
        p.add_sink(sink)
        self.state.recording = True

    @Slot(object)
    def _on_recorder_error(self, exc: BaseException) -> None:
        self.state.error = describe(exc)
        if self.recorders:
            self.stop_recording()

    def stop_recording(self, wait: bool = False) -> None:
        recorders, self.recorders = self.recorders, []
        if self.player is not None and self._sink is not None:
            self.player.remove_sink(self._sink)
        self._sink = None
        self.state.recording = False

        def job(stop, progress):
            return [r.stop() for r in recorders]

        done = lambda paths: self.message.emit("recorded " + ", ".join(map(str, paths)))  # noqa: E731
        task = self._start("recording", job, done=done)
        if wait and task is not None:
            task.join(15.0)

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop everything with bounded waits (the window's close)."""
        self.state.unsubscribe(self._on_state)
        for task in list(self.tasks.values()):
            task.cancel()
        self.close_source()
        for task in list(self.tasks.values()):
            if not task.join(timeout):
                logger.warning("%s did not stop within %.1f s", task.name, timeout)


def _abandon(recorders) -> None:
    """Stop recorders that started but will get no frame: their threads end, and a recording that
    never began leaves no file (as in ``endoview record``; PyAV creates the file at the first
    frame, so there is normally nothing to remove)."""
    for r in recorders:
        try:
            r.stop()
        except EndoviewError as exc:
            logger.warning("stopping the abandoned recording %s: %s", r.path, exc)
        if r.frames == 0:
            try:
                r.path.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("cannot remove the empty recording %s: %s", r.path, exc)


def _display_hz() -> float:
    """The primary screen's refresh rate (60 when Qt does not know it, e.g. offscreen)."""
    screen = QGuiApplication.primaryScreen()
    hz = screen.refreshRate() if screen is not None else 0.0
    return hz if 20.0 <= hz <= 240.0 else 60.0
