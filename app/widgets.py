"""The viewer's widgets. Each only paints or forwards user input; the state is in ViewerState."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPen, QPixmap, QRegion
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPushButton, QSlider, QToolButton, QWidget)

from engine.overlay import SEG_COLOR, class_color
from engine.player import SPEEDS, fit_size
from engine.procedure.findings import clock
from engine.timeline import Timeline
from engine.types import absent_label

from .state import ViewerState


def qcolor(bgr: tuple[int, int, int]) -> QColor:
    return QColor(bgr[2], bgr[1], bgr[0])


def timecode(index: int, fps: float) -> str:
    if index < 0 or fps <= 0:
        return "--:--.--"
    m, s = divmod(index / fps, 60)
    return f"{int(m):02d}:{s:05.2f}"


class Coalesced:
    """Calls ``apply()`` at once, then at most once every ``interval_ms`` however often it is
    asked; the last request is never lost (it runs when the interval ends). For what follows the
    playing frame (the time code, the slider, the strip's playhead): a reader cannot follow 60
    updates a second, and each costs a repaint the analysis pays for on 2 cores."""

    def __init__(self, apply, interval_ms: int = 66, parent: QObject | None = None) -> None:
        self._apply = apply
        self._pending = False
        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._due)

    def request(self, now: bool = False) -> None:
        """``now``: apply at once whatever came before (paused: a seek or a step shows where it went)."""
        if now:
            self.stop()
        elif self._timer.isActive():
            self._pending = True
            return
        self._apply()
        self._timer.start()

    def stop(self) -> None:
        """Drop a pending request (the widget is closing)."""
        self._timer.stop()
        self._pending = False

    def _due(self) -> None:
        if self._pending:
            self._pending = False
            self._apply()
            self._timer.start()


class VideoView(QWidget):
    """Paints the newest BGR picture (overlay already drawn by engine.overlay), scaled to fit."""

    HINT = "Open a video (Ctrl+O), a capture device or the demo clip, or drop a file here"
    resized = Signal(int, int)  # width, height: the player pre-scales pictures to fit

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 240)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._array: np.ndarray | None = None
        self._image: QImage | None = None
        self.painted = 0

    def set_image(self, image: np.ndarray | None) -> None:
        """Show ``image`` (H x W x 3 uint8 BGR, or H x W x 4 BGRA: the player's pictures for the
        screen, which Qt paints as they are) without copying it: the QImage wraps its buffer,
        which this view keeps alive until the next picture (copied only when its rows are not
        packed pixels, e.g. a strided slice)."""
        if image is not None and (image.strides[1:] != (image.shape[2], 1) or image.dtype != np.uint8):
            image = np.ascontiguousarray(image, dtype=np.uint8)
        self._array = image  # QImage shares this buffer: keep it alive
        before = self._image.size() if self._image is not None else None
        if image is None:
            self._image = None
        else:
            h, w, channels = image.shape
            fmt = QImage.Format.Format_RGB32 if channels == 4 else QImage.Format.Format_BGR888
            self._image = QImage(image.data, w, h, image.strides[0], fmt)
        if self._image is not None and self._image.size() == before:
            self.update(self.placed())  # the same place: the black bars stay as they are
        else:
            self.update()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().resizeEvent(event)
        self.resized.emit(self.width(), self.height())

    def target_rect(self) -> QRect:
        if self._image is None:
            return self.rect()
        tw, th = fit_size((self._image.width(), self._image.height()), (self.width(), self.height()))
        return QRect((self.width() - tw) // 2, (self.height() - th) // 2, tw, th)

    def placed(self) -> QRect:
        """Where the picture goes: ``target_rect``, or the picture's own size centred when it is
        the player's picture for this view (a pixel or two off while the view is resized), which
        is then copied, not scaled."""
        target = self.target_rect()
        if self._image is not None:
            w, h = self._image.width(), self._image.height()
            if abs(target.width() - w) <= 2 and abs(target.height() - h) <= 2:
                target = QRect((self.width() - w) // 2, (self.height() - h) // 2, w, h)
        return target

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        painter = QPainter(self)
        if self._image is None:
            painter.fillRect(self.rect(), Qt.GlobalColor.black)
            painter.setPen(QColor(170, 170, 170))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.HINT)
        else:
            target = self.placed()
            if not target.contains(event.rect()):  # the black bars, when they were asked for too
                for margin in QRegion(self.rect()).subtracted(QRegion(target)):
                    painter.fillRect(margin, Qt.GlobalColor.black)
            if target.size() == self._image.size():
                painter.drawImage(target.topLeft(), self._image)
            else:
                painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
                painter.drawImage(target, self._image)
            self.painted += 1
        painter.end()


NO_FINDING = (110, 90, 70)  # BGR: a segmenter's "no polyp" frames, muted (grey: not analysed)


def is_segmenter_labels(labels) -> bool:
    """A segmenter's per-frame classes: ("no polyp", "polyp")."""
    labels = tuple(labels)
    return len(labels) == 2 and labels[0] == absent_label(labels[1])


def strip_colors(labels) -> list[tuple[int, int, int]]:
    """BGR colour of each class on the strip: a segmenter's "no polyp" muted and "polyp" in the
    mask's colour; a classifier's classes in their overlay colours, except "polyp" (the frame's
    verdict: engine.analysis.verdict), which takes the mask's colour as well."""
    if is_segmenter_labels(labels):
        return [NO_FINDING, SEG_COLOR]
    return [SEG_COLOR if name == "polyp" else class_color(i) for i, name in enumerate(tuple(labels))]


class TimelineStrip(QWidget):
    """One pixel column per stretch of frames, coloured by predicted class; click to seek."""

    seek = Signal(int)
    TOOLTIP = "Predicted class of every analysed frame (grey: not analysed yet); click to jump"
    UNUSABLE_TIP = "; light grey ticks below: unusable frames (blurred, dark or overexposed: no alert there)"
    UNUSABLE = QColor(175, 175, 175)

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.timeline: Timeline | None = None
        self._version = -1
        self.setFixedHeight(16)
        self._colors: list[QColor] = []
        self._runs: QPixmap | None = None  # the coloured runs, drawn again only when they change
        self._runs_key: tuple | None = None
        self.setToolTip(self.TOOLTIP)

    def set_timeline(self, timeline: Timeline | None) -> None:
        self.timeline, self._version, self._runs_key = timeline, -1, None
        self._colors = [qcolor(c) for c in strip_colors(timeline.labels)] if timeline is not None else []
        if timeline is not None and is_segmenter_labels(timeline.labels):
            no, yes = timeline.labels
            self.setToolTip(f"Yellow: {yes} in the frame, blue-grey: {no} (dark grey: not analysed yet); "
                            "click to jump" + self.UNUSABLE_TIP)
        else:
            self.setToolTip(self.TOOLTIP + self.UNUSABLE_TIP)
        self.update()

    def refresh(self) -> None:
        """Take the timeline's new frames (the window calls this a few times a second: the
        playhead moves with every frame, the colours need not)."""
        if self.timeline is not None and self.timeline.version != self._version:
            self._version = self.timeline.version
            self.update()

    def _x(self, index: int, n: int) -> int:
        return round(index * self.width() / max(1, n))

    def _draw_runs(self, n: int) -> QPixmap:
        """The strip's colours: one rectangle per run of frames of one class, the unusable ones
        ticked below, for the timeline as of the last ``refresh``."""
        pixmap = QPixmap(self.size())
        pixmap.fill(QColor(45, 45, 45))
        if self.timeline is not None and n:
            painter = QPainter(pixmap)
            for start, end, cls in self.timeline.runs():
                if 0 <= cls < len(self._colors):
                    x0, x1 = self._x(start, n), self._x(end + 1, n)
                    painter.fillRect(x0, 0, max(1, x1 - x0), self.height(), self._colors[cls])
            tick = max(3, self.height() // 3)  # the frame's quality was not ok: the bottom third, grey
            for start, end in self.timeline.unusable_runs():
                x0, x1 = self._x(start, n), self._x(end + 1, n)
                painter.fillRect(x0, self.height() - tick, max(1, x1 - x0), tick, self.UNUSABLE)
            painter.end()
        return pixmap

    def paintEvent(self, event) -> None:  # noqa: N802
        n = self.state.frame_count or 0
        key = (self._version, n, self.width(), self.height(), id(self.timeline))
        if key != self._runs_key:  # repaints for the playhead alone reuse the colours
            self._runs, self._runs_key = self._draw_runs(n), key
        painter = QPainter(self)
        painter.drawPixmap(0, 0, self._runs)
        if n:
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            x = self._x(max(0, self.state.position), n)
            painter.drawLine(x, 0, x, self.height())
            painter.setPen(QPen(QColor(255, 220, 0), 2))
            for mark in (self.state.mark_in, self.state.mark_out):
                if mark is not None:
                    painter.drawLine(self._x(mark, n), 0, self._x(mark, n), self.height())
        painter.end()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        n = self.state.frame_count or 0
        if n and self.width():
            self.seek.emit(min(n - 1, int(event.position().x() * n / self.width())))


def bgr_pixmap(image: np.ndarray) -> QPixmap:
    """A QPixmap of a BGR uint8 image (copied: the array may go)."""
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return QPixmap.fromImage(QImage(image.data, w, h, image.strides[0], QImage.Format.Format_BGR888).copy())


class FindingsList(QListWidget):
    """One row per polyp (a confirmed track, engine.procedure.findings.PolypRow): a thumbnail of its
    best frame, first and last seen, duration, highest confidence; clicking one jumps to where it
    was first seen. Rows are updated in place (the list keeps its scroll position)."""

    seek = Signal(int)
    THUMB = QSize(96, 80)
    EMPTY = "No polyps counted yet (a polyp counts once it has been tracked for 5 frames)"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._items: dict[int, tuple[QListWidgetItem, object]] = {}  # track id -> (item, the row shown)
        self.itemClicked.connect(self._clicked)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setIconSize(self.THUMB)
        self.setWordWrap(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setToolTip(self.EMPTY)

    def _clicked(self, item: QListWidgetItem) -> None:
        target = item.data(Qt.ItemDataRole.UserRole)
        if target is not None:
            self.seek.emit(int(target))

    def set_polyps(self, rows: list) -> None:
        """Show ``rows`` (PolypRow each, by id): new ones added, changed ones updated, gone ones removed."""
        ids = {r.id for r in rows}
        for gone in [i for i in self._items if i not in ids]:
            item, _ = self._items.pop(gone)
            self.takeItem(self.row(item))
        for r in rows:
            item, shown = self._items.get(r.id, (None, None))
            if shown is r:  # rows are replaced when they change
                continue
            if item is None:
                item = QListWidgetItem()
                self.addItem(item)
            item.setText(f"polyp {r.id}\n{clock(r.first_s)} - {clock(r.last_s)}  ({r.duration_s:.1f} s)\n"
                         f"max {r.max_confidence:.0%}")
            item.setToolTip(f"polyp {r.id}: first seen at frame {r.first_frame}, last at {r.last_frame}; "
                            f"best frame {r.best_frame} ({r.max_confidence:.0%}). Click to jump to where it "
                            "was first seen.")
            item.setData(Qt.ItemDataRole.UserRole, r.first_frame)
            if r.thumbnail is not None and (shown is None or shown.thumbnail is not r.thumbnail):
                item.setIcon(QIcon(bgr_pixmap(r.thumbnail)))
            self._items[r.id] = (item, r)
        self.setToolTip("" if rows else self.EMPTY)


class ControlBar(QWidget):
    """Transport controls mirroring ViewerState both ways; actions go out as signals."""

    step = Signal(int)
    seek = Signal(int)
    record = Signal()
    analyse = Signal()

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.play = self._button("Play", "Play / pause (Space); live: freeze the picture")
        self.back = self._button("<", "One frame back (Left)")
        self.forward = self._button(">", "One frame forward (Right)")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.time = QLabel("--:--.--")
        self.speed = QComboBox()
        self.speed.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        for s in SPEEDS:
            self.speed.addItem(f"{s:g}x", s)
        self.loop = self._check("Loop", "Start again at the end")
        self.overlay = self._check("Overlay", "Draw the model's overlay")
        self.second = self._check("2nd pass", "Second-pass models (ResNet-152, Mask R-CNN)")
        self.rec = self._button("REC", "Record the live video (R); raw and/or annotated: see Settings")
        self.rec.setCheckable(True)
        self.whole = self._button("Analyse all", "Analyse the whole video in the background")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        for w in (self.back, self.play, self.forward, self.slider, self.time, self.speed, self.loop,
                  self.overlay, self.second, self.whole, self.rec):
            layout.addWidget(w, 1 if w is self.slider else 0)

        self.play.clicked.connect(self._toggle_play)
        self.back.clicked.connect(lambda: self.step.emit(-1))
        self.forward.clicked.connect(lambda: self.step.emit(1))
        self.slider.sliderReleased.connect(lambda: self.seek.emit(self.slider.value()))
        self.slider.actionTriggered.connect(self._slider_action)
        self.speed.currentIndexChanged.connect(lambda i: setattr(state, "speed", self.speed.itemData(i)))
        self.loop.toggled.connect(lambda on: setattr(state, "loop", on))
        self.overlay.toggled.connect(lambda on: setattr(state, "overlay", on))
        self.second.toggled.connect(lambda on: setattr(state, "second_pass", on))
        self.rec.clicked.connect(lambda: self.record.emit())
        self.whole.clicked.connect(lambda: self.analyse.emit())
        self._position = Coalesced(self._show_position, parent=self)
        state.subscribe(self.sync)
        for name in ("speed", "loop", "overlay", "second_pass", "playing", "live", "frame_count", "recording"):
            self.sync(name, getattr(state, name))

    def _button(self, text: str, tip: str) -> QPushButton:
        b = QPushButton(text)
        b.setToolTip(tip)
        b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        return b

    def _check(self, text: str, tip: str) -> QCheckBox:
        c = QCheckBox(text)
        c.setToolTip(tip)
        c.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        return c

    def _toggle_play(self) -> None:
        if self.state.live:
            self.state.frozen = not self.state.frozen
        else:
            self.state.playing = not self.state.playing

    def _slider_action(self, action) -> None:
        if action != QSlider.SliderAction.SliderMove:  # page steps and clicks on the groove
            self.seek.emit(self.slider.sliderPosition())

    def sync(self, name: str, value) -> None:
        """State -> widgets (signals blocked, so this never loops back)."""
        s = self.state
        if name in ("playing", "frozen", "live"):
            text = ("Unfreeze" if s.frozen else "Freeze") if s.live else ("Pause" if s.playing else "Play")
            self.play.setText(text)
            for w in (self.back, self.forward, self.slider, self.speed, self.loop, self.whole):
                w.setEnabled(not s.live)
            self.rec.setEnabled(s.live)
        elif name == "position":
            self._position.request(now=not s.playing)
        elif name == "frame_count":
            self.slider.setRange(0, max(0, (value or 1) - 1))
        elif name == "speed":
            with _Blocked(self.speed):
                self.speed.setCurrentIndex(max(0, self.speed.findData(value)))
        elif name in ("loop", "overlay", "recording"):
            box = {"loop": self.loop, "overlay": self.overlay, "recording": self.rec}[name]
            with _Blocked(box):
                box.setChecked(bool(value))
        elif name == "second_pass":
            with _Blocked(self.second):
                self.second.setChecked(bool(value))

    def _show_position(self) -> None:
        s = self.state
        if not self.slider.isSliderDown():
            with _Blocked(self.slider):
                self.slider.setValue(max(0, s.position))
        self.time.setText(f"{timecode(s.position, s.fps)} / {timecode((s.frame_count or 0) - 1, s.fps)}")

    def close_sync(self) -> None:
        self.state.unsubscribe(self.sync)
        self._position.stop()


class _Blocked:
    def __init__(self, widget: QWidget) -> None:
        self.widget = widget

    def __enter__(self) -> None:
        self.widget.blockSignals(True)

    def __exit__(self, *exc) -> None:
        self.widget.blockSignals(False)


class JobBar(QWidget):
    """Progress of the running background job (export, whole-video analysis) with Cancel."""

    cancel = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        from PySide6.QtWidgets import QProgressBar

        super().__init__(parent)
        self.label = QLabel()
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(220)
        self.button = QToolButton()
        self.button.setText("Cancel")
        self.button.clicked.connect(self.cancel.emit)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self.label, self.bar, self.button):
            layout.addWidget(w)
        self.hide()

    def show_progress(self, what: str, progress: tuple[int, int] | None) -> None:
        if progress is None:
            self.hide()
            return
        done, total = progress
        self.label.setText(what)
        self.bar.setRange(0, total)  # total 0: busy indicator
        self.bar.setValue(min(done, total) if total else 0)
        self.show()
