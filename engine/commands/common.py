"""Options shared by the commands that run a model."""

from __future__ import annotations

from pathlib import Path

from ..config import Config, load_config


def add_model_options(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--config", type=Path, help="configuration file (default: assets/config.toml)")
    g.add_argument("--model", type=Path, metavar="BUNDLE", help="classifier bundle folder")
    g.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt", "torch"),
                   help="inference backend (default from the config: auto)")
    g.add_argument("--smoothing", metavar="SPEC", help="off, window:N or ema:ALPHA")
    g.add_argument("--no-model", action="store_true", help="content area only, no classifier")
    g.add_argument("--outline", action="store_true", default=None,
                   help="draw the detected endoscopic field")


def config_from_args(args) -> Config:
    return load_config(args.config).override(
        bundle=args.model, backend=args.backend, smoothing=args.smoothing, outline=args.outline)
