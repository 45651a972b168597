"""The main window: lays out the widgets, maps keys and menus to session actions, mirrors the
state. It paints and forwards; the work is done by the session's workers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QCoreApplication, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMessageBox,
                               QToolButton, QVBoxLayout, QWidget)

from engine.analysis.classifier import make_smoother
from engine.config import Config, ConfigError

from .dialogs import ExportDialog, SettingsDialog, SourceDialog
from .session import Session
from .settings import Settings, save_settings, shown_layers
from .widgets import Coalesced, ControlBar, FindingsList, JobBar, TimelineStrip, VideoView

logger = logging.getLogger(__name__)


class ErrorBanner(QWidget):
    """The last error, in red above the video, until dismissed."""

    def __init__(self, dismiss: Callable[[], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("x")
        close.clicked.connect(dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self.setStyleSheet("background: #a02020; color: white;")
        self.hide()

    def show_error(self, text: str) -> None:
        self.label.setText(text)
        self.setVisible(bool(text))


class MainWindow(QMainWindow):
    def __init__(self, session: Session, qsettings: QSettings, make_config: Callable[[Settings], Config], *,
                 exit_after_frames: int | None = None, screenshot: Path | None = None) -> None:
        super().__init__()
        self.session, self.state = session, session.state
        self.qsettings, self.make_config = qsettings, make_config
        self.exit_after_frames, self.screenshot = exit_after_frames, screenshot
        self.exit_code = 0
        self.frames_seen = 0
        self.last_message = ""
        self._closing_confirmed = False
        self.setWindowTitle("endoview (research use only)")
        self.setAcceptDrops(True)
        self.resize(1280, 860)

        self.video = VideoView()
        self.banner = ErrorBanner(lambda: setattr(self.state, "error", ""))
        self.strip = TimelineStrip(self.state)
        self.controls = ControlBar(self.state)
        self.findings = FindingsList()
        self.status_label = QLabel()
        self.rec_label = QLabel()
        self.rec_label.setStyleSheet("color: #e02020; font-weight: bold;")
        self.job = JobBar()
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        for w, stretch in ((self.banner, 0), (self.video, 1), (self.strip, 0), (self.controls, 0)):
            layout.addWidget(w, stretch)
        self.setCentralWidget(central)
        dock = QDockWidget("Polyps", self)
        dock.setObjectName("findings")
        dock.setWidget(self.findings)
        self.findings.setMaximumWidth(320)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.job)
        self.statusBar().addPermanentWidget(self.rec_label)
        self._make_actions(dock)

        session.frame_shown.connect(self._show_frame)
        self.video.resized.connect(session.set_screen_size)
        session.opened.connect(self._opened)
        session.message.connect(self._message)
        self.strip.seek.connect(session.seek)
        self.findings.seek.connect(session.seek)
        self.controls.seek.connect(session.seek)
        self.controls.step.connect(session.step)
        self.controls.record.connect(session.toggle_recording)
        self.controls.analyse.connect(session.analyse_whole)
        self.job.cancel.connect(lambda: [session.cancel(n) for n in ("export", "analyse")])
        self._playhead = Coalesced(self.strip.update, parent=self)
        self.state.subscribe(self._on_state)
        self.timer = QTimer(self)
        self.timer.setInterval(250)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self._deadline = QTimer(self)
        self._deadline.setSingleShot(True)
        self._deadline.timeout.connect(lambda: self.finish_automation(2, "timed out"))
        if exit_after_frames:
            self._deadline.start(180_000)

    # ------------------------------------------------------------------ actions

    def _make_actions(self, dock: QDockWidget) -> None:
        s = self.session
        menus = {name: self.menuBar().addMenu(name) for name in ("&File", "&Play", "&Tools", "&View")}
        table = [
            ("&File", "&Open...", "Ctrl+O", self.choose_source),
            ("&File", "Open the &demo clip", "Ctrl+D", lambda: self.open("demo")),
            ("&File", "&Export clip...", "Ctrl+E", self.export_dialog),
            ("&File", "&Snapshot (PNG with and without overlay)", "S", s.snapshot),
            ("&File", "Save snapshot as &DICOM...", "Ctrl+Shift+S", self.dicom_dialog),
            ("&File", "Procedure re&port...", "Ctrl+Shift+P", self.report_dialog),
            ("&File", "&Record / stop", "R", s.toggle_recording),
            ("&File", "&Quit", "Ctrl+Q", self.close),
            ("&Play", "Play / pause (live: freeze)", "Space", s.toggle_play),
            ("&Play", "One frame back", "Left", lambda: s.step(-1)),
            ("&Play", "One frame forward", "Right", lambda: s.step(1)),
            ("&Play", "Back 5 s", "Shift+Left", lambda: s.jump(-5.0)),
            ("&Play", "Forward 5 s", "Shift+Right", lambda: s.jump(5.0)),
            ("&Play", "Mark &in", "I", lambda: s.mark("in")),
            ("&Play", "Mark &out", "O", lambda: s.mark("out")),
            ("&Tools", "Analyse the &whole video", "Ctrl+W", s.analyse_whole),
            ("&Tools", "&Analyse this frame (second pass)", "A", s.analyse_this_frame),
            ("&Tools", "&Settings...", "Ctrl+,", self.settings_dialog),
            ("&View", "&Full screen", "F", self.toggle_full_screen),
            ("&View", "Leave full screen", "Escape", self.showNormal),
        ]
        self.actions_by_text: dict[str, QAction] = {}
        for menu, text, key, slot in table:
            action = QAction(text, self)
            action.setShortcut(QKeySequence(key))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(slot)
            menus[menu].addAction(action)
            self.addAction(action)  # shortcuts work in full screen too
            self.actions_by_text[text] = action
        menus["&View"].addAction(dock.toggleViewAction())

    def open(self, spec: str) -> None:
        self.session.open(spec)
        self.session.settings = self.session.settings.with_(last_source=str(spec))
        save_settings(self.qsettings, self.session.settings)

    def choose_source(self) -> None:
        dialog = SourceDialog(self.session.settings.last_source, self)
        if dialog.exec() and dialog.choice:
            self.open(dialog.choice)

    def export_dialog(self) -> None:
        st = self.state
        if not st.source or st.live or not st.fps:
            self.state.error = "export needs an open video file (not a live source)"
            return
        start = st.mark_in / st.fps if st.mark_in is not None else None
        end = (st.mark_out + 1) / st.fps if st.mark_out is not None else None
        dialog = ExportDialog(st.source, start, end, self.session.settings.output_folder, self)
        if dialog.exec():
            self.session.export(dialog.options())

    def report_dialog(self) -> None:
        """File > Procedure report: the HTML report of the analysed frames, where the user says."""
        st = self.state
        if not st.source:
            st.error = "open a video first: the report is made of its analysed frames"
            return
        stem = Path(st.source).stem or "procedure"
        default = str(Path(self.session.settings.output_folder) / f"{stem}-report.html")
        path, _ = QFileDialog.getSaveFileName(self, "Save the procedure report", default, "HTML (*.html)")
        if path:
            self.session.write_report(Path(path))

    def dicom_dialog(self) -> None:
        """File > Save snapshot as DICOM: the frame on screen as a Secondary Capture file."""
        if self.session.shown is None:
            self.state.error = "no frame to save yet"
            return
        stem = Path(self.state.source).stem or "frame"
        default = str(Path(self.session.settings.output_folder)
                      / f"{stem}-{max(0, self.state.position):06d}.dcm")
        path, _ = QFileDialog.getSaveFileName(self, "Save the frame as DICOM", default, "DICOM (*.dcm)")
        if path:
            self.session.snapshot_dicom(Path(path))

    def settings_dialog(self) -> None:
        dialog = SettingsDialog(self.session.settings, self, layers=shown_layers(self.session.config),
                                config=self.session.config)
        if dialog.exec():
            self.apply_settings(dialog.settings())

    def apply_settings(self, settings: Settings) -> bool:
        try:
            make_smoother(settings.smoothing or None)
            config = self.make_config(settings)
        except (ValueError, ConfigError) as exc:
            self.state.error = f"settings not applied: {exc}"
            return False
        self.session.apply_settings(settings, config)
        save_settings(self.qsettings, settings)
        return True

    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    # ------------------------------------------------------------------ session -> widgets

    def _show_frame(self, shown) -> None:
        self.video.set_image(shown.screen if shown.screen is not None else shown.image)
        self.frames_seen += 1
        if self.exit_after_frames and self.frames_seen == self.exit_after_frames:
            QTimer.singleShot(0, self.finish_automation)

    def _opened(self) -> None:
        self.strip.set_timeline(self.session.timeline)
        self.findings.set_polyps([])
        self.setWindowTitle(f"endoview: {self.state.source} (research use only)")
        self.refresh()

    def _message(self, text: str) -> None:
        self.last_message = text
        self.statusBar().showMessage(text, 15_000)

    def _on_state(self, name: str, value) -> None:
        if name == "error":
            self.banner.show_error(value)
            if value and self.exit_after_frames:
                QTimer.singleShot(0, lambda: self.finish_automation(1, value))
        elif name in ("progress", "exporting", "analysing"):
            what = "Exporting" if self.state.exporting else "Analysing"
            self.job.show_progress(what, self.state.progress)
        elif name == "position":
            self._playhead.request(now=not self.state.playing)
        elif name in ("mark_in", "mark_out"):
            self.strip.update()
        elif name == "frozen":
            self.refresh()

    def refresh(self) -> None:
        """Status line, timeline, findings and REC indicator (a few times a second)."""
        s = self.session
        parts = []
        if s.info is not None:
            i = s.info
            parts.append(f"{Path(i.name).name}: {i.width}x{i.height} @ {i.fps:.3g} fps")
            parts.append(s.model_text)
        if s.player is not None and s.info is not None:
            st = s.player.stats()
            if st.fps:
                parts.append(f"{st.fps:.1f} FPS")
            if st.latency_ms is not None:
                parts.append(f"added latency {st.latency_ms:.0f} ms")
            if self.state.live:
                parts.append(f"dropped {st.dropped}")
                if st.busy:  # the analysis cannot keep up: the screen yields it some of the cores
                    parts.append(f"display {s.player.busy_fps:g} fps while the analysis catches up")
        if self.state.frozen:
            parts.append("FROZEN (capture and analysis go on)")
        if self.state.loading:
            parts.append("loading...")
        if self.state.status:
            parts.append(self.state.status)
        self.status_label.setText("  |  ".join(parts))
        if (self.exit_after_frames and self.frames_seen and not self.state.playing
                and not self.state.loading and s.player is not None
                and (not self.state.live or s.player.finished.is_set())
                and not self.state.loop and self.frames_seen < self.exit_after_frames):
            # --exit-after-frames N on a source that showed fewer (one image; a live file that ended,
            # painted at the display's rate): it ended, so stop
            QTimer.singleShot(0, self.finish_automation)
        self.strip.refresh()
        self.findings.set_polyps(s.polyp_rows())
        self._refresh_rec()

    def _refresh_rec(self) -> None:
        recs = self.session.recorders
        if not recs:
            self.rec_label.setText("")
            return
        secs = max(r.duration_s for r in recs)
        free = recs[0].free_bytes() / 1e9
        dropped = sum(r.dropped for r in recs)
        m, s = divmod(int(secs), 60)
        self.rec_label.setText(f"\u25cf REC {m:02d}:{s:02d}  {free:.1f} GB free" +
                               (f"  {dropped} dropped" if dropped else ""))

    # ------------------------------------------------------------------ drag and drop

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            self.open(files[0])
            event.acceptProposedAction()

    # ------------------------------------------------------------------ closing

    def confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event) -> None:  # noqa: N802
        busy = self.session.busy()
        if busy and not self._closing_confirmed and not self.confirm(
                "Quit endoview?", f"{' and '.join(busy).capitalize()} is running. Stop it and quit?"):
            event.ignore()
            return
        self.timer.stop()
        self._deadline.stop()
        self.controls.close_sync()
        self.state.unsubscribe(self._on_state)
        self._playhead.stop()
        self.session.shutdown()
        s = self.session.settings.with_(speed=self.state.speed, loop=self.state.loop)
        save_settings(self.qsettings, s)
        event.accept()

    def finish_automation(self, code: int = 0, reason: str = "") -> None:
        """--exit-after-frames: save the screenshot, close, leave the event loop with ``code``."""
        if self._closing_confirmed:
            return
        self._closing_confirmed = True
        if reason:
            logger.error("view: %s", reason)
        if self.screenshot is not None:
            if not self.grab().save(str(self.screenshot)):
                logger.error("cannot save the screenshot to %s", self.screenshot)
                code = code or 1
        self.exit_code = code
        self.close()
        QCoreApplication.exit(code)
