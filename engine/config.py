"""The one configuration: ``assets/config.toml`` (or ``--config FILE``), overridden by flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import EndoviewError
from .overlay import DEFAULT_LAYERS

#: the embedded default models, relative to the config's folder: the per-frame classifier (the
#: paper's trimmed MobileNetV3) and the real-time polyp segmenter run beside it
DEFAULT_BUNDLE = "models/hyperkvasir-mnv3"
DEFAULT_SEGMENTER = "models/polyp-unet"

ASSETS = Path(os.environ.get("ENDOVIEW_ASSETS", Path(__file__).resolve().parent.parent / "assets"))
DEFAULT_CONFIG = ASSETS / "config.toml"


class ConfigError(EndoviewError):
    """The configuration file is missing or malformed."""


@dataclass(frozen=True)
class Config:
    bundle: Path
    #: a segment bundle run beside a classify ``bundle`` on every frame (None: none; ignored when
    #: ``bundle`` is itself a segment bundle)
    segmenter: Path | None = None
    backend: str = "auto"
    smoothing: str = "ema:0.3"
    reestimate_every: int = 30
    layers: tuple[str, ...] = DEFAULT_LAYERS
    outline: bool = False
    second_pass: Path | None = None  # classifier bundle run by the second-pass worker
    second_pass_every: int = 0  # frames between second passes (0: off)
    second_pass_hold: float = 1.0  # seconds a polyp-related class holds before a look (0: off)
    source: Path = field(default=DEFAULT_CONFIG)

    def override(self, **values) -> Config:
        """A copy with every non-None value replaced (command-line flags); ``segmenter=NO_SEGMENTER``
        removes the segmenter."""
        values = {k: v for k, v in values.items() if v is not None}
        if values.get("segmenter") == NO_SEGMENTER:
            values["segmenter"] = None
        return replace(self, **values)


#: ``--segmenter none``: run no segmenter beside the classifier
NO_SEGMENTER = Path("none")


def load_config(path: str | os.PathLike | None = None) -> Config:
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from None
    try:
        model, analysis, overlay = data.get("model", {}), data.get("analysis", {}), data.get("overlay", {})
        second = data.get("second_pass", {})
        bundle = Path(model.get("bundle", DEFAULT_BUNDLE))
        seg = model.get("segmenter")  # a config file without one runs its bundle alone
        segmenter = Path(seg) if seg else None
        second_bundle = Path(second["bundle"]) if second.get("bundle") else None
        return Config(
            bundle=bundle if bundle.is_absolute() else path.parent / bundle,
            segmenter=segmenter if segmenter is None or segmenter.is_absolute() else path.parent / segmenter,
            backend=str(model.get("backend", "auto")),
            smoothing=str(analysis.get("smoothing", "ema:0.3")),
            reestimate_every=int(analysis.get("reestimate_every", 30)),
            layers=tuple(overlay.get("layers", Config.layers)),
            outline=bool(overlay.get("outline", False)),
            second_pass=(second_bundle if second_bundle is None or second_bundle.is_absolute()
                         else path.parent / second_bundle),
            second_pass_every=int(second.get("every_n", 0)),
            second_pass_hold=float(second.get("hold_seconds", 1.0)),
            source=path,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value in configuration {path}: {exc}") from None
