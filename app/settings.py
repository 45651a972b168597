"""The user's settings (Qt-free dataclass) and their QSettings persistence."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from PySide6.QtCore import QSettings

from engine.config import Config, check
from engine.overlay import LAYER_TYPES
from engine.timeline import POLYP_CLASSES

logger = logging.getLogger(__name__)

LAYERS = tuple(LAYER_TYPES)
#: Config field -> the setting that sets it (a bad value is reported under the setting's name)
NAMES = {name: f"the setting {name!r}" for name in ("bundle", "backend", "smoothing", "layers")}
NAMES["outline"] = "the setting 'layers'"  # "content_area" among them
NAMES.update(style="the setting 'display_style'", alert_sound="the setting 'alert_sound'",
             alert_cooldown="the setting 'alert_cooldown_s'", edge_hint="the setting 'edge_hint'")


@dataclass(frozen=True)
class Settings:
    last_source: str = "demo"
    bundle: str = ""  # "" = the configuration's bundle
    backend: str = ""  # "" = the configuration's backend
    smoothing: str = ""  # "" = the configuration's smoothing
    layers: tuple[str, ...] | None = None  # None = the configuration's layers and outline
    finding_classes: tuple[str, ...] = POLYP_CLASSES
    finding_min_s: float = 1.0
    finding_min_confidence: float = 0.5
    record_raw: bool = True
    record_annotated: bool = False
    output_folder: str = field(default_factory=lambda: str(Path.home() / "endoview"))
    speed: float = 1.0
    loop: bool = False
    # the polyp's display style and the alerts; ""/None = the configuration's ([overlay] style, [alerts])
    display_style: str = ""
    alert_sound: bool | None = None
    alert_cooldown_s: float | None = None
    edge_hint: bool | None = None

    def apply(self, config: Config) -> Config:
        """``config`` with the model, overlay and alert choices made here."""
        layers = self.layers
        return config.override(NAMES, bundle=Path(self.bundle) if self.bundle else None,
                               backend=self.backend or None, smoothing=self.smoothing or None,
                               layers=None if layers is None else tuple(n for n in layers if n != "content_area"),
                               outline=None if layers is None else "content_area" in layers,
                               style=self.display_style or None, alert_sound=self.alert_sound,
                               alert_cooldown=self.alert_cooldown_s, edge_hint=self.edge_hint)

    def with_(self, **values) -> Settings:
        return replace(self, **values)


def shown_layers(config: Config) -> tuple[str, ...]:
    """The layers ``config`` draws, as the settings name them (the outline is "content_area")."""
    return (("content_area",) if config.outline else ()) + config.layers


#: the fields kept as lists of names (their default may be None: "from the configuration")
_TUPLES = {f.name for f in fields(Settings) if str(f.type).startswith("tuple")}
#: the fields whose default is None ("from the configuration"), by the type of their value
_OPTIONAL = {f.name: (bool if str(f.type).startswith("bool") else float) for f in fields(Settings)
             if str(f.type) in ("bool | None", "float | None")}


def load_settings(qs: QSettings) -> Settings:
    values = {}
    for f in fields(Settings):
        raw = qs.value(f.name)
        if raw is None:
            continue
        default = getattr(Settings(), f.name)
        try:
            if isinstance(default, bool) or _OPTIONAL.get(f.name) is bool:
                values[f.name] = raw in (True, "true", "1", 1)
            elif _OPTIONAL.get(f.name) is float:
                values[f.name] = float(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif f.name in _TUPLES:
                values[f.name] = tuple(raw if isinstance(raw, list) else [raw] if raw else [])
            else:
                values[f.name] = str(raw)
        except (TypeError, ValueError) as exc:  # a damaged value: keep the default
            logger.warning("setting %r: cannot read %r (%s); using the default", f.name, raw, exc)
    return Settings(**_checked(values))


def _checked(values: dict) -> dict:
    """``values`` less what the configuration would refuse (a hand-edited or older settings file):
    each one logged, so the viewer starts with the configuration's choice instead."""
    for name, field_ in (("backend", "backend"), ("smoothing", "smoothing"), ("display_style", "style"),
                         ("alert_cooldown_s", "alert_cooldown")):
        if values.get(name) not in (None, ""):  # "" / None = the configuration's
            try:
                check(field_, values[name])
            except ValueError as exc:
                logger.warning("setting %r: %s; using the configuration's", name, exc)
                del values[name]
    unknown = [n for n in values.get("layers") or () if n not in LAYER_TYPES]
    if unknown:
        logger.warning("setting 'layers': unknown layer(s) %s left out (known: %s)", ", ".join(map(repr, unknown)),
                       ", ".join(LAYER_TYPES))
        values["layers"] = tuple(n for n in values["layers"] if n in LAYER_TYPES)
    return values


def save_settings(qs: QSettings, settings: Settings) -> None:
    for name, value in asdict(settings).items():
        if value is None:  # "from the configuration"
            qs.remove(name)
        else:
            qs.setValue(name, list(value) if isinstance(value, tuple) else value)
    qs.sync()
