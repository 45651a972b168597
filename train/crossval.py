"""``endoview train classify --cv N``: every fold with the hybrid loss and the raw-only baseline,
and the paper's Table 1 mean rows (``cv_summary.json``, ``table1.txt`` in ``--out``)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .checkpoint import LAST
from .labels import HEAD_NAMES, TRIMMED_HEAD
from .metrics import mean_metrics, table1_header, table1_row
from .models import DISPLAY
from .trainer import TrainConfig, train_classifier


def run_cross_validation(cfg: TrainConfig, folds: int, *, baseline: bool = True, resume: bool = False,
                         force: bool = False) -> dict[str, Any]:
    """Train each fold with the hybrid loss (and the raw-only baseline); mean rows as in Table 1."""
    variants = [("hybrid", HEAD_NAMES)] + ([("raw", (TRIMMED_HEAD,))] if baseline else [])
    root = Path(cfg.out).expanduser()
    results: dict[str, list[dict]] = {name: [] for name, _ in variants}
    for name, heads in variants:
        for k in range(folds):
            sub = dataclasses.replace(cfg, out=str(root / f"fold{k}-{name}"), fold=k, heads=heads)
            s = train_classifier(sub, resume=resume and (Path(sub.out) / LAST).is_file(), force=force)
            results[name].append(s)
    rank = int(os.environ.get("RANK", "0"))
    table = {"arch": cfg.arch, "folds": folds, "rows": []}
    model = DISPLAY[cfg.arch]
    for name, _ in variants:
        ms = [r["metrics"] for r in results[name] if r["metrics"]]
        if len(ms) != folds:
            continue
        row_name = f"{model} w. raw" if name == "hybrid" else f"{model} raw"
        table["rows"].append({"model": row_name, "heads": name, "runs": [r["run"] for r in results[name]],
                              **mean_metrics(ms)})
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        (root / "cv_summary.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
        (root / "table1.txt").write_text(format_table1(table) + "\n", encoding="utf-8")
    return table


def format_table1(table: dict) -> str:
    data = f"{table['folds']}-fold mean"
    lines = [table1_header()]
    for r in table["rows"]:
        lines.append(table1_row(r["model"], data, r))
    return "\n".join(lines)
