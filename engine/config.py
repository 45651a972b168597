"""The one configuration: ``engine/assets/config.toml``, a user's ``--config FILE`` over it, flags over both.

The packaged ``engine/assets/config.toml`` is the only place a default is written: it must set every
key. It and the default bundles it names are package data of ``engine`` (the same in a checkout, an
editable install and a wheel), found through :mod:`importlib.resources`; ``ENDOVIEW_ASSETS=FOLDER``
replaces the whole folder. A user's file is layered over it key by key (it names only what it
changes), and command-line flags override the result. Paths are relative to the folder of the file
that gives them. Every value is checked as it is read: an unknown table or key, a wrong type, a value
out of range or an unknown name is a one-line :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from .backends import BACKENDS, PRECISIONS
from .analysis.classifier import make_smoother
from .errors import EndoviewError
from .overlay import LAYER_TYPES, STYLES


class ConfigError(EndoviewError):
    """The configuration file is missing or malformed, or a value in it (or a flag) is invalid."""


def packaged_assets() -> Path:
    """The ``assets`` folder shipped inside the ``engine`` package (config.toml and the default
    bundles). It must be a real folder: onnxruntime and TensorRT open the model files by path."""
    assets = resources.files("engine") / "assets"
    if not isinstance(assets, Path):
        raise ConfigError(f"endoview's packaged assets are not files on disk ({assets}); install endoview "
                          "unzipped (pip does) or set ENDOVIEW_ASSETS to a copy of engine/assets")
    return assets


ASSETS = Path(os.environ["ENDOVIEW_ASSETS"]) if os.environ.get("ENDOVIEW_ASSETS") else packaged_assets()
DEFAULT_CONFIG = ASSETS / "config.toml"


@dataclass(frozen=True)
class Config:
    """The resolved configuration: build it with :func:`load_config`, which reads every value
    from the packaged file (and the user's); there are no defaults here."""

    bundle: Path
    #: a segment bundle run beside a classify ``bundle`` on every frame (None: none; ignored when
    #: ``bundle`` is itself a segment bundle)
    segmenter: Path | None
    backend: str
    #: "auto": onnxruntime on the CPU runs a bundle's int8 model (formats "onnx-int8") where it has
    #: one; "fp32": always the exported graph
    precision: str
    smoothing: str
    reestimate_every: int
    layers: tuple[str, ...]
    outline: bool
    style: str  # how the segmentation layer shows a polyp: mask | outline | box
    alert_sound: bool  # a sound when a new polyp track is confirmed
    alert_cooldown: float  # seconds between two sounds at least
    edge_hint: bool  # a marker on the field's edge where a polyp touches it or left it
    #: live: pictures per second the window paints while the analysis skips frames (0: the screen's rate always)
    busy_fps: float
    second_pass: Path | None  # classifier bundle run by the second-pass worker
    second_pass_every: int  # frames between second passes (0: off)
    second_pass_hold: float  # seconds a polyp-related class holds before a look (0: off)
    source: Path  # the file read last: the user's, else the packaged one

    def override(self, names: Mapping[str, str] | None = None, /, **values: Any) -> Config:
        """A copy with every non-None value checked and replaced (command-line flags, settings);
        ``segmenter=NO_SEGMENTER`` removes the segmenter. A bad value raises a ConfigError that
        calls it what ``names`` says (``{"smoothing": "--smoothing"}``), else by its field name."""
        changed = {}
        for name, value in values.items():
            if value is None:
                continue
            if name == "segmenter" and value == NO_SEGMENTER:
                changed[name] = None
                continue
            try:
                changed[name] = check(name, value) if name in READERS else value
            except ValueError as exc:
                raise ConfigError(f"{(names or {}).get(name, name)}: {exc}") from None
        return replace(self, **changed)


#: ``--segmenter none``: run no segmenter beside the classifier
NO_SEGMENTER = Path("none")


def _kind(value: Any) -> str:
    return {bool: "true/false", int: "a whole number", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, not {_kind(value)} ({value!r})")
    return value


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if not _text(value):
        raise ValueError("expected a bundle folder, not an empty string")
    return Path(value)


def _optional_path(value: Any) -> Path | None:
    if isinstance(value, Path):
        return value
    return Path(value) if _text(value) else None  # "" = none


def _backend(value: Any) -> str:
    known = ("auto", *BACKENDS)
    if _text(value) not in known:
        raise ValueError(f"unknown backend {value!r} (known: {', '.join(known)})")
    return value


def _smoothing(value: Any) -> str:
    make_smoother(_text(value))  # the one parser of the spec: a ValueError says what is wrong
    return value


def _count(minimum: int) -> Callable[[Any], int]:
    def read(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, not {_kind(value)} ({value!r})")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, not {value}")
        return value
    return read


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number of seconds, not {_kind(value)} ({value!r})")
    if not 0 <= value < float("inf"):
        raise ValueError(f"must be 0 or more seconds, not {value}")
    return float(value)


def _busy_fps(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number of pictures per second, not {_kind(value)} ({value!r})")
    if not (value == 0 or 5 <= value <= 240):
        raise ValueError(f"must be 0 (off) or 5 to 240 pictures per second, not {value}")
    return float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {_kind(value)} ({value!r})")
    return value


def _precision(value: Any) -> str:
    if _text(value) not in PRECISIONS:
        raise ValueError(f"unknown precision {value!r} (known: {', '.join(PRECISIONS)})")
    return value


def _style(value: Any) -> str:
    if _text(value) not in STYLES:
        raise ValueError(f"unknown display style {value!r} (known: {', '.join(STYLES)})")
    return value


def _layers(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of layer names, not {_kind(value)} ({value!r})")
    for name in value:
        if not isinstance(name, str) or name not in LAYER_TYPES:
            raise ValueError(f"unknown layer {name!r} (known: {', '.join(LAYER_TYPES)})")
    return tuple(value)


#: ``[table] key`` of the TOML file -> (the Config field it sets, how its value is checked and read)
KEYS: dict[tuple[str, str], tuple[str, Callable[[Any], Any]]] = {
    ("model", "bundle"): ("bundle", _path),
    ("model", "segmenter"): ("segmenter", _optional_path),
    ("model", "backend"): ("backend", _backend),
    ("model", "precision"): ("precision", _precision),
    ("second_pass", "bundle"): ("second_pass", _optional_path),
    ("second_pass", "every_n"): ("second_pass_every", _count(0)),
    ("second_pass", "hold_seconds"): ("second_pass_hold", _seconds),
    ("analysis", "smoothing"): ("smoothing", _smoothing),
    ("analysis", "reestimate_every"): ("reestimate_every", _count(1)),
    ("overlay", "layers"): ("layers", _layers),
    ("overlay", "outline"): ("outline", _flag),
    ("overlay", "style"): ("style", _style),
    ("alerts", "sound"): ("alert_sound", _flag),
    ("alerts", "cooldown_s"): ("alert_cooldown", _seconds),
    ("alerts", "edge_hint"): ("edge_hint", _flag),
    ("display", "busy_fps"): ("busy_fps", _busy_fps),
}
#: Config field -> how its value is checked and read
READERS = {name: read for name, read in KEYS.values()}


def check(name: str, value: Any) -> Any:
    """``value`` for the Config field ``name``, checked and read as the file's would be; a
    ValueError says what is wrong with it."""
    return READERS[name](value)


def load_config(path: str | os.PathLike | None = None) -> Config:
    """The packaged defaults (``engine/assets/config.toml``) with the user's file ``path`` layered over them."""
    values = _read(DEFAULT_CONFIG)
    missing = [f"[{table}] {key}" for (table, key), (name, _) in KEYS.items() if name not in values]
    if missing:
        raise ConfigError(f"{shown(DEFAULT_CONFIG)}: the packaged defaults must set every key; missing: "
                          f"{', '.join(missing)}")
    source = DEFAULT_CONFIG
    if path and Path(path).resolve() != DEFAULT_CONFIG.resolve():
        source = Path(path)
        values.update(_read(source))
    return Config(**values, source=source)


def _read(path: Path) -> dict[str, Any]:
    """The Config fields that the file ``path`` sets, relative paths resolved against its folder."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from None
    values: dict[str, Any] = {}
    where = shown(path)
    tables = sorted({table for table, _ in KEYS})
    for table, entries in data.items():
        if table not in tables:
            raise ConfigError(f"{where}: unknown table [{table}] (known: {', '.join(tables)})")
        if not isinstance(entries, dict):
            raise ConfigError(f"{where}: {table}: expected a table [{table}], not {_kind(entries)}")
        for key, value in entries.items():
            if (table, key) not in KEYS:
                known = ", ".join(k for t, k in KEYS if t == table)
                raise ConfigError(f"{where}: [{table}] {key}: unknown key (known: {known})")
            name, read = KEYS[(table, key)]
            try:
                value = read(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: [{table}] {key}: {exc}") from None
            if isinstance(value, Path) and not value.is_absolute():
                value = path.parent / value
            values[name] = value
    return values


def shown(path: Path) -> str:
    """``path`` as a user would type it here: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (OSError, ValueError):
        return str(path)
