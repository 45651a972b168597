"""The one configuration: ``assets/config.toml``, a user's ``--config FILE`` over it, flags over both.

The packaged ``assets/config.toml`` is the only place a default is written: it must set every
key. A user's file is layered over it key by key (it names only what it changes), and command-line
flags override the result. Paths are relative to the folder of the file that gives them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .errors import EndoviewError

ASSETS = Path(os.environ.get("ENDOVIEW_ASSETS", Path(__file__).resolve().parent.parent / "assets"))
DEFAULT_CONFIG = ASSETS / "config.toml"


class ConfigError(EndoviewError):
    """The configuration file is missing or malformed."""


@dataclass(frozen=True)
class Config:
    """The resolved configuration: build it with :func:`load_config`, which reads every value
    from the packaged file (and the user's); there are no defaults here."""

    bundle: Path
    #: a segment bundle run beside a classify ``bundle`` on every frame (None: none; ignored when
    #: ``bundle`` is itself a segment bundle)
    segmenter: Path | None
    backend: str
    smoothing: str
    reestimate_every: int
    layers: tuple[str, ...]
    outline: bool
    second_pass: Path | None  # classifier bundle run by the second-pass worker
    second_pass_every: int  # frames between second passes (0: off)
    second_pass_hold: float  # seconds a polyp-related class holds before a look (0: off)
    source: Path  # the file read last: the user's, else the packaged one

    def override(self, **values) -> Config:
        """A copy with every non-None value replaced (command-line flags); ``segmenter=NO_SEGMENTER``
        removes the segmenter."""
        values = {k: v for k, v in values.items() if v is not None}
        if values.get("segmenter") == NO_SEGMENTER:
            values["segmenter"] = None
        return replace(self, **values)


#: ``--segmenter none``: run no segmenter beside the classifier
NO_SEGMENTER = Path("none")


def _path(value: Any) -> Path:
    return Path(value)


def _optional_path(value: Any) -> Path | None:
    return Path(value) if value else None  # "" = none


#: ``[table] key`` of the TOML file -> (the Config field it sets, how its value is read)
KEYS: dict[tuple[str, str], tuple[str, Callable[[Any], Any]]] = {
    ("model", "bundle"): ("bundle", _path),
    ("model", "segmenter"): ("segmenter", _optional_path),
    ("model", "backend"): ("backend", str),
    ("second_pass", "bundle"): ("second_pass", _optional_path),
    ("second_pass", "every_n"): ("second_pass_every", int),
    ("second_pass", "hold_seconds"): ("second_pass_hold", float),
    ("analysis", "smoothing"): ("smoothing", str),
    ("analysis", "reestimate_every"): ("reestimate_every", int),
    ("overlay", "layers"): ("layers", tuple),
    ("overlay", "outline"): ("outline", bool),
}


def load_config(path: str | os.PathLike | None = None) -> Config:
    """The packaged defaults (``assets/config.toml``) with the user's file ``path`` layered over them."""
    values = _read(DEFAULT_CONFIG)
    missing = [f"[{table}] {key}" for (table, key), (name, _) in KEYS.items() if name not in values]
    if missing:
        raise ConfigError(f"{DEFAULT_CONFIG}: the packaged defaults must set every key; missing: "
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
    for table, entries in data.items():
        for key, value in entries.items():
            if (table, key) not in KEYS:
                continue
            name, read = KEYS[(table, key)]
            try:
                value = read(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"bad value in configuration {path}: {exc}") from None
            if isinstance(value, Path) and not value.is_absolute():
                value = path.parent / value
            values[name] = value
    return values
