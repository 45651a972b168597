"""Dialogs: choose a source, export a clip, settings. Each returns plain values; no work here."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                               QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QPushButton, QVBoxLayout, QWidget)

from engine.config import Config, load_config
from engine.overlay import STYLES
from engine.sources.v4l2 import list_devices

from .session import ExportOptions
from .settings import LAYERS, Settings

VIDEO_FILTER = "Videos and images (*.mp4 *.m4v *.mov *.mkv *.avi *.mpg *.webm *.png *.jpg *.jpeg *.bmp *.tif *.tiff);;All files (*)"


def _buttons(dialog: QDialog) -> QDialogButtonBox:
    box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    box.accepted.connect(dialog.accept)
    box.rejected.connect(dialog.reject)
    return box


def _path_row(edit: QLineEdit, pick) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    browse = QPushButton("Browse...")
    browse.clicked.connect(pick)
    layout.addWidget(edit, 1)
    layout.addWidget(browse)
    return row


class SourceDialog(QDialog):
    """A video file, one of the capture devices found (with sizes and rates), or the demo clip."""

    def __init__(self, last: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open a source")
        self.file = QLineEdit(last if last and not last.startswith(("demo", "/dev/")) else "")
        self.devices = QListWidget()
        for d in list_devices():
            modes = ", ".join(f"{m.width}x{m.height}@{'/'.join(f'{r:g}' for r in m.fps)} {m.pixel_format}"
                              for m in d.modes[:6]) or "modes unknown"
            item = QListWidgetItem(f"{d}  [{modes}]")
            item.setData(256, d.path)
            self.devices.addItem(item)
        if not self.devices.count():
            self.devices.addItem("no capture devices found")
            self.devices.setEnabled(False)
        self.devices.itemDoubleClicked.connect(lambda _: self._choose(self._device()))
        demo = QPushButton("Demo clip")
        demo.clicked.connect(lambda: self._choose("demo"))
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Video file, image or folder:"))
        layout.addWidget(_path_row(self.file, self._browse))
        layout.addWidget(QLabel("Capture devices:"))
        layout.addWidget(self.devices)
        layout.addWidget(demo)
        layout.addWidget(_buttons(self))
        self.choice = ""

    def _device(self) -> str:
        item = self.devices.currentItem()
        return item.data(256) if item is not None and item.data(256) else ""

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a video", self.file.text(), VIDEO_FILTER)
        if path:
            self.file.setText(path)

    def _choose(self, spec: str) -> None:
        if spec:
            self.choice = spec
            super().accept()

    def accept(self) -> None:
        self._choose(self._device() or self.file.text().strip())


class ExportDialog(QDialog):
    """Output, overlay on/off, de-identification, per-frame log; the range comes from I/O marks."""

    def __init__(self, source: str, start_s: float | None, end_s: float | None, folder: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export an annotated clip")
        self.start_s, self.end_s = start_s, end_s
        stem = Path(source).stem or "clip"
        self.output = QLineEdit(str(Path(folder) / f"{stem}-annotated.mp4"))
        self.overlay = QCheckBox("Burn in the overlay")
        self.overlay.setChecked(True)
        self.deidentify = QCheckBox("De-identify (black out everything outside the endoscopic field)")
        self.log = QCheckBox("Per-frame log (.jsonl beside the clip)")
        self.log.setChecked(True)
        span = (f"{start_s or 0:.2f} s to " + (f"{end_s:.2f} s" if end_s is not None else "the end"))
        form = QFormLayout(self)
        form.addRow("Output", _path_row(self.output, self._browse))
        form.addRow("Range", QLabel(span + "  (set with I and O)"))
        for w in (self.overlay, self.deidentify, self.log):
            form.addRow(w)
        form.addRow(_buttons(self))

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export to", self.output.text(), "MP4 (*.mp4)")
        if path:
            self.output.setText(path)

    def options(self) -> ExportOptions:
        out = Path(self.output.text().strip())
        return ExportOptions(out, overlay=self.overlay.isChecked(), deidentify=self.deidentify.isChecked(),
                             log=out.with_suffix(".jsonl") if self.log.isChecked() else None,
                             start_s=self.start_s, end_s=self.end_s)


class SettingsDialog(QDialog):
    """Model bundle, backend, smoothing, findings thresholds, overlay layers, the polyp's display
    style, the alerts, recording, folder."""

    def __init__(self, settings: Settings, parent: QWidget | None = None, *,
                 layers: tuple[str, ...] = (), config: Config | None = None) -> None:
        """``layers``: the layers drawn now, ticked when ``settings.layers`` is None (the configuration's).
        ``config``: the configuration in use, whose style and alerts are shown where the settings
        leave them to it (None: the packaged defaults)."""
        super().__init__(parent)
        self.setWindowTitle("Settings")
        s = settings
        self.base = settings
        self.config = config or load_config()
        self.shown = layers if s.layers is None else s.layers
        self.bundle = QLineEdit(s.bundle)
        self.bundle.setPlaceholderText("default from the configuration")
        self.backend = QComboBox()
        self.backend.addItems(["", "auto", "onnxruntime", "tensorrt", "torch"])
        self.backend.setCurrentText(s.backend)
        self.smoothing = QLineEdit(s.smoothing)
        self.smoothing.setPlaceholderText("off, window:N or ema:ALPHA (default from the configuration)")
        self.min_s = self._spin(s.finding_min_s, 0.0, 60.0, " s")
        self.min_conf = self._spin(s.finding_min_confidence, 0.0, 1.0, "")
        self.classes = QLineEdit(", ".join(s.finding_classes))
        self.layers = {name: QCheckBox(name) for name in LAYERS}
        for name, box in self.layers.items():
            box.setChecked(name in self.shown)
        self.raw = QCheckBox("raw")
        self.raw.setChecked(s.record_raw)
        self.annotated = QCheckBox("annotated")
        self.annotated.setChecked(s.record_annotated)
        self.folder = QLineEdit(s.output_folder)
        c = self.config
        self.style = QComboBox()
        self.style.addItems(list(STYLES))
        self.style.setCurrentText(s.display_style or c.style)
        self.style.setToolTip("How a polyp is drawn: its mask filled and outlined, its outline only, or a box")
        self.sound = QCheckBox("sound when a new polyp is counted")
        self.sound.setChecked(c.alert_sound if s.alert_sound is None else s.alert_sound)
        self.cooldown = self._spin(c.alert_cooldown if s.alert_cooldown_s is None else s.alert_cooldown_s,
                                   0.0, 600.0, " s")
        self.cooldown.setToolTip("At least this long between two sounds")
        self.edge_hint = QCheckBox("marker on the field's edge where a polyp touches it or left the view")
        self.edge_hint.setChecked(c.edge_hint if s.edge_hint is None else s.edge_hint)
        form = QFormLayout(self)
        form.addRow("Model bundle", _path_row(self.bundle, self._browse_bundle))
        form.addRow("Backend", self.backend)
        form.addRow("Smoothing", self.smoothing)
        form.addRow("Finding classes", self.classes)
        form.addRow("Finding: held at least", self.min_s)
        form.addRow("Finding: confidence at least", self.min_conf)
        form.addRow("Overlay layers", self._row(*self.layers.values()))
        form.addRow("Polyp display", self.style)
        form.addRow("Alerts", self._row(self.sound, QLabel("at most every"), self.cooldown))
        form.addRow("", self.edge_hint)
        form.addRow("Record", self._row(self.raw, self.annotated))
        form.addRow("Recordings, snapshots, exports", _path_row(self.folder, self._browse_folder))
        form.addRow(_buttons(self))

    @staticmethod
    def _spin(value: float, lo: float, hi: float, suffix: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setSingleStep(0.05 if hi <= 1 else 0.5)
        spin.setValue(value)
        spin.setSuffix(suffix)
        return spin

    @staticmethod
    def _row(*widgets: QWidget) -> QWidget:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in widgets:
            layout.addWidget(w)
        return row

    def _browse_bundle(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model bundle folder", self.bundle.text())
        if path:
            self.bundle.setText(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder", self.folder.text())
        if path:
            self.folder.setText(path)

    def _layers(self) -> tuple[str, ...] | None:
        """The ticked layers; None (still the configuration's) when they were and are unchanged."""
        ticked = tuple(n for n, b in self.layers.items() if b.isChecked())
        return None if self.base.layers is None and set(ticked) == set(self.shown) else ticked

    def _own(self, name: str, value, configured):
        """The setting's new value; None/"" (still the configuration's) when it was and is unchanged."""
        unset = getattr(self.base, name) in (None, "")
        return (None if name != "display_style" else "") if unset and value == configured else value

    def settings(self) -> Settings:
        classes = tuple(c.strip() for c in self.classes.text().split(",") if c.strip())
        c = self.config
        return self.base.with_(
            display_style=self._own("display_style", self.style.currentText(), c.style),
            alert_sound=self._own("alert_sound", self.sound.isChecked(), c.alert_sound),
            alert_cooldown_s=self._own("alert_cooldown_s", self.cooldown.value(), c.alert_cooldown),
            edge_hint=self._own("edge_hint", self.edge_hint.isChecked(), c.edge_hint),
            bundle=self.bundle.text().strip(), backend=self.backend.currentText(),
            smoothing=self.smoothing.text().strip(), finding_min_s=self.min_s.value(),
            finding_min_confidence=self.min_conf.value(), finding_classes=classes,
            layers=self._layers(),
            record_raw=self.raw.isChecked(), record_annotated=self.annotated.isChecked(),
            output_folder=self.folder.text().strip() or self.base.output_folder)
