"""What both ship steps (``python -m train.ship``, ``python -m train.seg.ship``) do to a manifest:
machine paths made portable, strict JSON, and the exported bundle written again with new fields;
and what the evaluations read from one: which folds the model trained on (:func:`fold_note`)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from .errors import TrainError

log = logging.getLogger(__name__)

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


#: a path that only means something on one machine: absolute ("/data/x", "C:\\x") or under a home
#: folder ("~/x"), anywhere in a string (a command line too). Not "a/b", "$ENDOVIEW_DATA/x", "./x" or a URL.
MACHINE_PATH = re.compile(r"(?<![\w.$}/:~-])/[\w.~-]|(?<![\w$])~[\w.-]*/|\b[A-Za-z]:[\\/]")


def machine_paths(value: Any, where: str = "") -> list[str]:
    """``where: text`` for every string in ``value`` (a manifest, or part of one) that holds a
    machine path (MACHINE_PATH); a shipped manifest must have none."""
    if isinstance(value, str):
        return [f"{where or '(value)'}: {value}"] if MACHINE_PATH.search(value) else []
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in machine_paths(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in machine_paths(v, f"{where}[{i}]")]
    return []


def portable_prefixes(data, split_csv, bundle_folder: Path | None = None) -> dict[str, str]:
    """The prefixes :func:`portable` rewrites for a command run on ``data`` and ``split_csv``: the
    data under ``$ENDOVIEW_DATA``, the checkout as ".", and a bundle outside the checkout relative
    to its parent folder."""
    roots = [str(Path(d).expanduser().resolve()) for d in data]
    prefixes = {data_root(roots + [str(Path(split_csv).expanduser().resolve())]): DATA_ROOT_VAR, str(REPO): "."}
    if bundle_folder is not None and not Path(bundle_folder).resolve().is_relative_to(REPO):
        prefixes[str(Path(bundle_folder).resolve().parent)] = "."
    return prefixes


def data_root(folders: list[str]) -> str:
    """The common parent of the data folders (what ``$ENDOVIEW_DATA`` stands for)."""
    paths = [str(Path(f).expanduser().resolve()) for f in folders]
    return os.path.commonpath([p if len(paths) > 1 else str(Path(p).parent) for p in paths])


def rebundle(src, out: Path, *, name: str | None, training: dict, metrics: dict, notes: str, force: bool,
             extra: dict | None = None):
    """``src`` (a loaded Bundle) written again to ``out`` with the same model files, input (inset
    included) and viewer keys (presence rule, operating point), and new manifest fields. A manifest
    written into the checkout (a bundle to ship) holds no machine path: the callers write paths
    relative to the data root, the runs folder and the checkout, and one that is left is an error
    there (a warning for a bundle written elsewhere)."""
    from engine.bundle import write_bundle

    m = src.manifest
    unknown = sorted(set(m) - BUNDLE_KEYS - set(CARRIED_KEYS))
    if unknown:
        raise TrainError(f"the exported manifest has fields {unknown} that the ship step would drop; "
                         "teach train/manifest.py to carry them")
    carried = {k: m[k] for k in CARRIED_KEYS if k in m} | dict(extra or {})
    leaks = machine_paths({"training": training, "metrics": metrics, "notes": notes, **carried})
    if leaks:
        what = (f"the manifest of {out} holds {len(leaks)} machine path(s), first {leaks[0]!r}; keep the data "
                "under one root and the runs in one folder (written $ENDOVIEW_DATA and runs/)")
        if Path(out).resolve().is_relative_to(REPO):
            raise TrainError(f"{what}, or teach the ship step to rewrite it")
        log.warning("%s before shipping it in engine/assets", what)
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


def trained_on(training: dict[str, Any], fold: int) -> bool | None:
    """Whether a model (its manifest's ``training`` section, or a run's ``{"heldout_fold": K}``)
    was trained on the images of split-index ``fold``: True, False (its held-out fold) or None
    when it does not say. ``trained_on_folds`` (a list) decides; else ``heldout_fold``: null means
    every fold trained (``--fold all``), K means every fold but K; else ``trained_on_fold``."""
    folds = training.get("trained_on_folds")
    if isinstance(folds, list):
        return fold in folds
    if "heldout_fold" in training:
        return training["heldout_fold"] is None or fold != training["heldout_fold"]
    if isinstance(training.get("trained_on_fold"), int):
        return fold == training["trained_on_fold"]
    return None


def fold_note(name: str, manifest: dict[str, Any], fold: int | None) -> str | None:
    """The line an evaluation on split-index ``fold`` prints when the model trained on its images."""
    training = manifest.get("training") or {}
    if fold is None or not isinstance(training, dict) or not trained_on(training, fold):
        return None
    held = training.get("heldout_fold")
    if held is not None:
        where = f"its held-out fold is {held}"
    elif {"table1_2fold", "kvasir_seg_2fold"} & set(manifest.get("metrics") or {}):
        where = "it held no fold out; its manifest holds the cross-validation figures"
    else:
        where = "it held no fold out; the cross-validation runs of its recipe give the figures"
    return f"note: {name} was trained on fold {fold}'s images: these are not held-out figures ({where})"


def bundle_fold_note(bundle: str | os.PathLike[str], fold: int | None) -> str | None:
    """:func:`fold_note` of the bundle in folder ``bundle`` (None when its manifest cannot be read:
    loading the bundle for the evaluation says why)."""
    try:
        manifest = json.loads((Path(bundle).expanduser() / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    return fold_note(str(manifest.get("name") or Path(bundle).name), manifest, fold)
