"""The user's settings (Qt-free dataclass) and their QSettings persistence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from PySide6.QtCore import QSettings

from engine.config import Config
from engine.overlay import DEFAULT_LAYERS, LAYER_TYPES
from engine.timeline import POLYP_CLASSES

LAYERS = tuple(LAYER_TYPES)


@dataclass(frozen=True)
class Settings:
    last_source: str = "demo"
    bundle: str = ""  # "" = the configuration's bundle
    backend: str = ""  # "" = the configuration's backend
    smoothing: str = ""
    layers: tuple[str, ...] = DEFAULT_LAYERS
    finding_classes: tuple[str, ...] = POLYP_CLASSES
    finding_min_s: float = 1.0
    finding_min_confidence: float = 0.5
    record_raw: bool = True
    record_annotated: bool = False
    output_folder: str = field(default_factory=lambda: str(Path.home() / "endoview"))
    speed: float = 1.0
    loop: bool = False

    def apply(self, config: Config) -> Config:
        """``config`` with the model and overlay choices made here."""
        return config.override(bundle=Path(self.bundle) if self.bundle else None,
                               backend=self.backend or None, smoothing=self.smoothing or None,
                               layers=tuple(n for n in self.layers if n != "content_area"),
                               outline="content_area" in self.layers)

    def with_(self, **values) -> Settings:
        return replace(self, **values)


def load_settings(qs: QSettings) -> Settings:
    values = {}
    for f in fields(Settings):
        raw = qs.value(f.name)
        if raw is None:
            continue
        default = getattr(Settings(), f.name)
        try:
            if isinstance(default, bool):
                values[f.name] = raw in (True, "true", "1", 1)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, tuple):
                values[f.name] = tuple(raw if isinstance(raw, list) else [raw] if raw else [])
            else:
                values[f.name] = str(raw)
        except (TypeError, ValueError):
            continue  # a damaged value: keep the default
    return Settings(**values)


def save_settings(qs: QSettings, settings: Settings) -> None:
    for name, value in asdict(settings).items():
        qs.setValue(name, list(value) if isinstance(value, tuple) else value)
    qs.sync()
