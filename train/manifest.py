"""What both ship steps (``python -m train.ship``, ``python -m train.seg.ship``) do to a manifest:
machine paths made portable, strict JSON, and the exported bundle written again with new fields."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .errors import TrainError

#: what a path under the data root becomes in a manifest
DATA_ROOT_VAR = "$ENDOVIEW_DATA"
#: the checkout (paths inside it are written relative to it)
REPO = Path(__file__).resolve().parent.parent
#: manifest keys that engine.bundle.write_bundle writes; anything else would be lost in the copy
BUNDLE_KEYS = {"format", "name", "task", "labels", "input", "outputs", "files", "formats", "trained",
               "training", "metrics", "created", "notes"}
#: further manifest keys the viewer reads, carried as they are (or replaced through ``extra``)
CARRIED_KEYS = ("presence", "operating_point")


def portable(value: Any, prefixes: dict[str, str]) -> Any:
    """``value`` with every string that starts with one of ``prefixes`` rewritten (longest first)."""
    if isinstance(value, str):
        for prefix in sorted((p for p in prefixes if p.strip("/")), key=len, reverse=True):
            if value == prefix or value.startswith(prefix.rstrip("/") + "/"):
                return prefixes[prefix] + value[len(prefix.rstrip("/")):]
            if prefix in value:  # inside a command line
                value = value.replace(prefix.rstrip("/"), prefixes[prefix])
        return value
    if isinstance(value, dict):
        return {k: portable(v, prefixes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, prefixes) for v in value]
    return value


def data_root(folders: list[str]) -> str:
    """The common parent of the data folders (what ``$ENDOVIEW_DATA`` stands for)."""
    paths = [str(Path(f).expanduser().resolve()) for f in folders]
    return os.path.commonpath([p if len(paths) > 1 else str(Path(p).parent) for p in paths])


def rebundle(src, out: Path, *, name: str | None, training: dict, metrics: dict, notes: str, force: bool,
             extra: dict | None = None):
    """``src`` (a loaded Bundle) written again to ``out`` with the same model files, input (inset
    included) and viewer keys (presence rule, operating point), and new manifest fields."""
    from engine.bundle import write_bundle

    m = src.manifest
    unknown = sorted(set(m) - BUNDLE_KEYS - set(CARRIED_KEYS))
    if unknown:
        raise TrainError(f"the exported manifest has fields {unknown} that the ship step would drop; "
                         "teach train/manifest.py to carry them")
    carried = {k: m[k] for k in CARRIED_KEYS if k in m} | dict(extra or {})
    return write_bundle(out, name=name or src.name, task=src.task, labels=list(src.labels),
                        input_size=src.input_size, files={rel: src.path / rel for rel in src.files},
                        formats=src.formats, outputs=src.outputs, trained=src.trained, training=training,
                        metrics=metrics, notes=notes, input_name=src.input_name, inset=src.inset,
                        extra=carried, force=force)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None (strict JSON; the ONNX-only export has no TorchScript parity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
