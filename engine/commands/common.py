"""Options shared by the commands that run a model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..backends import PRECISIONS
from ..config import Config, load_config


def add_model_options(p) -> None:
    d = load_config()  # the packaged defaults, quoted in the help texts
    g = p.add_argument_group("model")
    g.add_argument("--config", type=Path,
                   help=f"configuration file layered over the packaged defaults ({d.source}): it sets only "
                        "what it changes")
    g.add_argument("--model", type=Path, metavar="BUNDLE",
                   help=f"model bundle folder, classify or segment (default from the config: {d.bundle})")
    g.add_argument("--segmenter", type=Path, metavar="BUNDLE",
                   help="segment bundle run beside a classifier on every frame (default from the config: "
                        f"{d.segmenter or 'none'}); 'none' for the classifier alone")
    g.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt", "torch"),
                   help=f"inference backend (default from the config: {d.backend})")
    g.add_argument("--precision", choices=PRECISIONS,
                   help="auto: onnxruntime on the CPU runs a bundle's int8 model where it has one; fp32: "
                        f"always the exported model (default from the config: {d.precision})")
    g.add_argument("--smoothing", metavar="SPEC",
                   help=f"off, window:N or ema:ALPHA (default from the config: {d.smoothing})")
    g.add_argument("--no-model", action="store_true", help="content area only, no model")
    g.add_argument("--second-pass", type=Path, metavar="BUNDLE",
                   help="a slower classifier bundle (e.g. ResNet-152) run in the background on "
                        "frames where a polyp-related class holds (default from the config: "
                        f"{d.second_pass or 'none'})")
    g.add_argument("--outline", action="store_true", default=None,
                   help=f"draw the detected endoscopic field (default from the config: {'on' if d.outline else 'off'})")


def add_source_options(p) -> None:
    g = p.add_argument_group("source (capture devices; --fps also sets the rate of image folders and the demo)")
    g.add_argument("--size", metavar="WxH", type=_size, help="ask the device for this frame size")
    g.add_argument("--fps", type=float, help="ask the device for this frame rate")
    g.add_argument("--pixel-format", metavar="FOURCC", help="ask the device for this pixel format (MJPG, YUYV, ...)")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1920x1080, not {text!r}") from None
    return w, h


def source_options(args) -> dict:
    """Keyword arguments for ``engine.sources.open_source`` from the device flags."""
    w, h = args.size or (None, None)
    return {"width": w, "height": h, "fps": args.fps, "pixel_format": args.pixel_format}


#: Config field -> the flag that sets it (a bad value is reported under the flag's name)
FLAGS = {"bundle": "--model", "segmenter": "--segmenter", "backend": "--backend", "precision": "--precision", "smoothing": "--smoothing",
         "outline": "--outline", "second_pass": "--second-pass"}


def config_from_args(args) -> Config:
    return load_config(args.config).override(
        FLAGS, bundle=args.model, segmenter=getattr(args, "segmenter", None), backend=args.backend,
        precision=getattr(args, "precision", None), smoothing=args.smoothing, outline=args.outline,
        second_pass=getattr(args, "second_pass", None))
