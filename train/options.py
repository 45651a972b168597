"""Command-line pieces that train/'s commands share: ``--config`` files and the flags over them,
and the arguments and output of the two export commands (``export``, ``export-seg``).

Imports nothing else of train/ but its errors, so every command module (train/cli.py,
train/seg/cli.py, train/seg/cascade.py) can use it without importing another command module.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import TrainError

RAW = argparse.RawDescriptionHelpFormatter


def int_list(text: str) -> tuple[int, ...]:
    """An argparse ``type``: ``"10,20,30"`` -> ``(10, 20, 30)``."""
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


#: ``--fold all``: train on every fold (``TrainConfig.fold = None``)
ALL_FOLDS = "all"


def fold_arg(text: str) -> int | str:
    """An argparse ``type``: a split-index, or ``all``."""
    if text.strip().lower() == ALL_FOLDS:
        return ALL_FOLDS
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a split-index or 'all', got {text!r}") from None


def read_config_file(path, allowed: set[str]) -> dict:
    """A ``--config`` JSON object whose keys are all in ``allowed``; TrainError otherwise."""
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TrainError(f"cannot read --config {path}: {err}") from err
    if not isinstance(loaded, dict):
        raise TrainError(f"--config {path} must hold a JSON object")
    unknown = sorted(set(loaded) - allowed)
    if unknown:
        raise TrainError(f"--config {path}: unknown keys {', '.join(unknown)}")
    return loaded


def apply_flags(values: dict, args: argparse.Namespace, fields: set[str]) -> None:
    """Command-line flags override the config file (paths as strings)."""
    for name in fields:
        v = getattr(args, name, None)
        if isinstance(v, list):
            v = [str(x) if isinstance(x, Path) else x for x in v]
            v = v[0] if name == "data" and len(v) == 1 else v
        if v is not None:
            values[name] = str(v) if isinstance(v, Path) else v
    if args.no_progress:
        values["progress"] = False


# --------------------------------------------------------------------------------------------
# export and export-seg


def add_export_target(p: argparse.ArgumentParser, *, trained_by: str) -> None:
    """An export command's first arguments: the run folder and ``-o/--out``."""
    p.add_argument("run", type=Path, help=f"run folder written by '{trained_by}'")
    p.add_argument("-o", "--out", type=Path, required=True, help="bundle folder to write")


def add_export_flags(p: argparse.ArgumentParser, *, latency_runs: int, latency_help: str) -> None:
    """The flags ``endoview export`` and ``endoview export-seg`` share, after each command's own."""
    p.add_argument("--no-torchscript", action="store_true", help="ONNX only (no torch backend)")
    p.add_argument("--latency-runs", type=int, default=latency_runs, help=f"{latency_help} (default {latency_runs})")
    p.add_argument("--threads", type=int, help="CPU threads for the checks and latency")
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def print_export(report, args: argparse.Namespace, figures: dict) -> None:
    """An export's outcome: ``{"bundle": ..., **figures}`` as JSON with ``--json``, else its report lines."""
    if args.json:
        print(json.dumps({"bundle": str(report.bundle.path), **figures}, indent=2))
    else:
        print("\n".join(report.lines()))


def add_data_options(p: argparse.ArgumentParser) -> None:
    """``--data``, ``--split-csv``, ``--threads`` and ``--json``: the image-level commands over the
    official split (train.sure, train.score, train.shift)."""
    p.add_argument("--data", nargs="+", required=True, metavar="ROOT",
                   help="the data folders (Kvasir-SEG, HyperKvasir labeled-images, ...), as train.quantize")
    p.add_argument("--split-csv", type=Path, required=True, help="the official split file (2_fold_split.csv)")
    p.add_argument("--threads", type=int, help="onnxruntime threads")
    p.add_argument("--json", action="store_true")
