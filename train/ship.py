"""``python -m train.ship``: the shipped per-frame classifier with its 2-fold Table-1 comparison.

The paper's Table 1 on the data that is here: MobileNetV3-Large trained with the hybrid loss and
the raw-head-only baseline, each on both folds of the official HyperKvasir split::

    python -m train.ship HYBRID_A HYBRID_B --baseline RAW_A RAW_B -o engine/assets/models/hyperkvasir-mnv3

Run A holds out fold 1 (trained on fold 0) and is shipped; run B holds out fold 0. For each of the
cross-validation runs the step:

1. exports the trimmed model (:func:`train.export.export_run`: raw head only, ONNX, parity-checked);
2. evaluates the bundle through the engine on its held-out fold (macro/micro precision, recall,
   F1, MCC, the per-class table and the confusion matrix, PNG beside ``--figures``);
3. chooses the polyp operating point (the probability of the polyp classes at which the viewer
   says "polyp") **on the run's training fold only**: the threshold with the largest sensitivity
   + specificity there, ties to the one nearest 0.5; then reports polyp-vs-rest sensitivity and
   specificity on the held-out fold at that point, and the AUROC.

With ``--final RUN`` (a finished ``endoview train classify --fold all`` run of the hybrid runs'
recipe, trained on every image of every fold) that run is exported and shipped instead of run A.
Every figure stays the cross-validation runs' (the final model has no held-out images), and the
manifest says so (``training.figures_from``, ``heldout_fold: null``, ``trained_on_folds``). Its
operating point is the cross-validation runs' (each chosen on its own training fold; their mean on
the 0.05 grid), the point every figure was measured at: on its own training images, every image,
the rule would have little to choose with (they are nearly separated at most thresholds, and it
falls to its tie-break); that choice is recorded beside it (``metrics.operating_point``).

The shipped bundle's manifest records the data (folders relative to the data root), the folds, both
folds' figures for both variants with their means, whether the hybrid loss helped, the operating
point (``"operating_point": {"polyp": P}``, read by :mod:`engine.analysis.verdict`) and the commands that
reproduce it. Machine paths never enter it: the data root is written ``$ENDOVIEW_DATA`` and run
folders ``runs/<name>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TrainError
from .folders import check_bundle_target
from .manifest import DATA_ROOT_VAR, REPO, data_root, json_safe, portable, rebundle
from .options import ALL_FOLDS

log = logging.getLogger("train.ship")

TABLE1 = ("macro_precision", "macro_recall", "macro_f1", "micro_precision", "micro_recall", "micro_f1", "mcc")
#: candidate operating points (probability of the polyp classes)
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))


def polyp_scores(probs: np.ndarray, labels: list[str]) -> np.ndarray:
    from engine.types import POLYP_CLASSES

    idx = [labels.index(c) for c in POLYP_CLASSES if c in labels]
    return probs[:, idx].sum(axis=1)


def choose_operating_point(scores: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """The threshold with the largest sensitivity + specificity (ties: nearest 0.5)."""
    best = None
    for t in THRESHOLDS:
        said = scores >= t
        sens, spec = float(said[positive].mean()), float((~said[~positive]).mean())
        key = (round(sens + spec, 9), -abs(t - 0.5))
        if best is None or key > best[0]:
            best = (key, float(t), sens, spec)
    _, t, sens, spec = best
    return {"polyp": t, "training_fold_sensitivity": sens, "training_fold_specificity": spec}


#: the operating point's rule, as the manifest states it
RULE = "the threshold with the largest sensitivity + specificity on the training images (ties: nearest 0.5)"


@dataclass
class _Exported:
    """A finished run exported to a bundle (trimmed, ONNX, parity-checked), with its data set."""

    run: Path
    ckpt: dict[str, Any]
    cfg: dict[str, Any]
    report: Any  # train.export.ExportReport
    bundle: Any  # engine.bundle.Bundle
    data: Any  # train.data.Dataset

    def fields(self, backend: str) -> dict[str, Any]:
        """The row fields every exported run has."""
        r = self.report
        return {"run": str(self.run), "heads": list(self.ckpt["heads"]), "epochs": int(self.ckpt["epoch"]),
                "bundle": r.bundle.path, "onnx_sha256": self.bundle.sha256("onnx"), "backend": backend,
                "wall_time_s": round(sum(h.get("train_s", 0.0) for h in self.ckpt["history"]), 1),
                "config": self.cfg, "export": {"parity": r.parity, "cpu_latency_ms": r.latency_ms, "size": r.size}}

    def training_point(self, samples) -> tuple[dict[str, float], np.ndarray, str]:
        """The operating point the rule gives on ``samples`` (the run's training images), their
        RAW_CLASSES targets and the backend's description."""
        from .evaluate import bundle_probabilities
        from .labels import RAW_CLASSES

        probs, targets, desc = bundle_probabilities(self.bundle, samples)
        scores = polyp_scores(probs, list(self.bundle.labels))
        return choose_operating_point(scores, targets == RAW_CLASSES.index("polyp")), targets, desc


def _export(run: Path, dest: Path, threads: int | None) -> _Exported:
    from engine.bundle import load_bundle

    from .checkpoint import load_checkpoint
    from .data import load_dataset
    from .export import export_run

    ckpt = load_checkpoint(run)
    cfg = run_config(ckpt)
    if ckpt["epoch"] < cfg["epochs"]:
        raise TrainError(f"{run} has trained {ckpt['epoch']} of {cfg['epochs']} epochs; ship finished runs")
    held = f"held-out fold {cfg['fold']}" if cfg["fold"] is not None else "trained on every fold"
    log.info("exporting %s (%s, %s)", run, ",".join(ckpt["heads"]), held)
    rep = export_run(run, dest, torchscript=False, latency_runs=20, threads=threads, force=True)
    return _Exported(run, ckpt, cfg, rep, load_bundle(rep.bundle.path), load_dataset(cfg["data"], cfg["split_csv"]))


def _evaluate_run(run: Path, tmp: Path, tag: str, figures: Path | None, threads: int | None) -> dict[str, Any]:
    from .evaluate import bundle_probabilities, metrics_from_probs
    from .labels import RAW_CLASSES
    from .metrics import plot_confusion
    from .seg.detect_eval import auroc

    ex = _export(run, tmp / tag, threads)
    cfg, bundle, ds = ex.cfg, ex.bundle, ex.data
    labels = list(bundle.labels)
    held = ds.fold(cfg["fold"])
    p_held, t_held, desc = bundle_probabilities(bundle, held)
    op, _, _ = ex.training_point(ds.not_fold(cfg["fold"]))
    to_bundle = np.array([labels.index(RAW_CLASSES[i]) for i in t_held])
    m = metrics_from_probs(p_held, to_bundle, labels)
    s_held = polyp_scores(p_held, labels)
    pos = to_bundle == labels.index("polyp")
    said = s_held >= op["polyp"]
    present = [i for i, r in enumerate(m["per_class"]) if r["support"] or r["predicted"]]
    png = None
    if figures is not None:
        cm = np.array(m["confusion_matrix"])[np.ix_(present, present)]
        png = plot_confusion(cm, [labels[i] for i in present], figures / f"confusion-{tag}.png",
                             title=f"{bundle.name}: held-out fold {cfg['fold']} ({len(held)} images)")
    log.info("%s: held-out fold %d MCC %.3f macro F1 %.3f; polyp vs rest at %.2f (chosen on the training fold): "
             "sensitivity %.3f, specificity %.3f", tag, cfg["fold"], m["mcc"], m["macro_f1"], op["polyp"],
             float(said[pos].mean()), float((~said[~pos]).mean()))
    return {
        "tag": tag, **ex.fields(desc), "heldout_fold": int(cfg["fold"]), "trained_on_fold": 1 - int(cfg["fold"]),
        "images": len(held),
        **{k: float(m[k]) for k in TABLE1},
        "per_class": [m["per_class"][i] for i in present],
        "confusion_matrix": {"labels": [labels[i] for i in present],
                             "counts": np.array(m["confusion_matrix"])[np.ix_(present, present)].tolist()},
        "polyp_vs_rest": {"operating_point": op["polyp"], "chosen_on": "training fold",
                          "training_fold": {"sensitivity": op["training_fold_sensitivity"],
                                            "specificity": op["training_fold_specificity"]},
                          "sensitivity": float(said[pos].mean()), "specificity": float((~said[~pos]).mean()),
                          "auroc": auroc(s_held, pos)},
        "confusion_png": str(png) if png else None,
    }


def _mean(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {k: float(np.mean([r[k] for r in rows])) for k in TABLE1}
    for k in ("sensitivity", "specificity", "auroc"):
        out[f"polyp_{k}"] = float(np.mean([r["polyp_vs_rest"][k] for r in rows]))
    return out


#: what makes two classifier runs comparable (the heads and the fold aside)
RECIPE_KEYS = ("arch", "image_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule",
               "warmup_epochs", "label_smoothing", "ema", "blur", "augment_strength", "zoom", "zoom_share", "seed",
               "inset", "mask_loss", "white_balance", "exposure")

#: recipe settings added after runs had been trained: a run whose config lacks one trained with its default
ADDED_LATER = ("zoom", "zoom_share", "mask_loss", "white_balance", "exposure")


def run_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """``ckpt["config"]`` (a checkpoint's, or a shipped run's row's): the run's training configuration,
    the settings it predates filled with their defaults (what it trained with)."""
    import dataclasses

    from .trainer import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in ADDED_LATER}
    return {**defaults, **ckpt["config"]}


#: what a ``--final`` run must share with the cross-validation hybrid runs: the recipe, the heads, the data
FINAL_KEYS = (*RECIPE_KEYS, "heads", "data", "split_csv")


def _same_recipe_as(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg``'s FINAL_KEYS, the data folders and split file as resolved paths."""
    out = {k: cfg.get(k) for k in FINAL_KEYS}
    out["heads"] = list(out["heads"] or [])
    data = out["data"] if isinstance(out["data"], list) else [out["data"]]
    out["data"] = [str(Path(d).expanduser().resolve()) for d in data]
    out["split_csv"] = str(Path(out["split_csv"]).expanduser().resolve())
    return out


def check_final(final: Path, hybrid: list[Path]) -> None:
    """TrainError unless ``final`` is a finished ``--fold all`` run of the hybrid runs' recipe."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(final)
    cfg = run_config(ckpt)
    if cfg["fold"] is not None:
        raise TrainError(f"--final {final} holds out fold {cfg['fold']}: the final model is a run trained "
                         f"with --fold {ALL_FOLDS}")
    if ckpt["epoch"] < cfg["epochs"]:
        raise TrainError(f"--final {final} has trained {ckpt['epoch']} of {cfg['epochs']} epochs; ship finished runs")
    mine = _same_recipe_as(cfg)
    for run in hybrid:
        theirs = _same_recipe_as(run_config(load_checkpoint(run)))
        differ = [k for k in FINAL_KEYS if mine[k] != theirs[k]]
        if differ:
            shown = ", ".join(k if k in ("data", "split_csv") else f"{k} {mine[k]!r} (not {theirs[k]!r})"
                              for k in differ)
            raise TrainError(f"--final {final} was not trained with the recipe of the cross-validation run "
                             f"{run}: {shown} differ; its figures would not describe the shipped model")


def cv_operating_point(ops: list[float]) -> float:
    """The final model's operating point: the cross-validation runs' (each chosen on its training
    fold), averaged and put on the candidates' grid."""
    mean = float(np.mean(ops))
    return float(min(THRESHOLDS, key=lambda t: (round(abs(float(t) - mean), 9), -t)))


def _final_run(run: Path, tmp: Path, threads: int | None) -> dict[str, Any]:
    """Export the ``--fold all`` run; what the operating point's rule gives on its training images
    (all of them) is recorded beside the one shipped."""
    from .labels import RAW_CLASSES

    ex = _export(run, tmp / "final", threads)
    op, targets, desc = ex.training_point(ex.data.samples)
    counts = Counter(RAW_CLASSES[i] for i in targets)
    log.info("final: on its %d training images (every fold) the rule gives %.2f: sensitivity %.3f, specificity "
             "%.3f there", len(targets), op["polyp"], op["training_fold_sensitivity"], op["training_fold_specificity"])
    return {
        "tag": "hybrid-allfolds", **ex.fields(desc), "heldout_fold": None, "trained_on_folds": list(ex.data.folds),
        "images": len(targets), "images_per_class": {c: counts[c] for c in ex.bundle.labels if counts[c]},
        "operating_point": {"polyp": op["polyp"], "sensitivity": op["training_fold_sensitivity"],
                            "specificity": op["training_fold_specificity"]},
    }


def carried_baseline(bundle: Path) -> list[dict[str, Any]]:
    """The raw-only baseline rows recorded in a classify bundle shipped before (``metrics.table1_2fold``),
    each with that bundle's recipe as its configuration and its recorded train command: what stands
    in for the baseline runs when they are not on this machine (their figures are not measured again)."""
    from engine.bundle import load_bundle

    m = load_bundle(bundle).manifest
    try:
        folds = m["metrics"]["table1_2fold"]["raw_only_baseline"]["folds"]
        recipe = m["training"]["recipe"]
    except (KeyError, TypeError):
        raise TrainError(f"--baseline-from {bundle}: its manifest records no raw-only baseline "
                         "(metrics.table1_2fold) and recipe (training.recipe)") from None
    # the bundle's recipe is its hybrid runs'; where the baseline's differed, the manifest says how
    differ = m["metrics"]["table1_2fold"].get("recipes_differ") or {}
    recipe = {**recipe, **{k: v["raw"] for k, v in differ.items() if isinstance(v, dict) and "raw" in v}}
    commands = {r.get("heldout_fold"): r.get("command") for r in m["training"].get("runs", []) if r.get("variant") == "raw"}
    name = m.get("name", Path(bundle).name)
    return [{**row, "config": run_config({"config": dict(recipe)}), "command": commands.get(row["heldout_fold"]),
             "tag": f"raw-heldout{row['heldout_fold']}",
             "carried_from": f"the bundle shipped before ({name}, created {m.get('created')}): "
                             "recorded figures, not measured again"} for row in folds]


def train_command(r: dict[str, Any]) -> str:
    cfg = run_config(r)
    data = cfg["data"] if isinstance(cfg["data"], list) else [cfg["data"]]
    argv = ["endoview", "train", "classify", "--data", *data, "--split-csv", cfg["split_csv"],
            "--fold", ALL_FOLDS if cfg["fold"] is None else str(cfg["fold"]),
            "--heads", "all" if len(r["heads"]) > 1 else "raw", "--out", r["run"]]
    for key in ("arch", "weights", "image_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay",
                "schedule", "warmup_epochs", "label_smoothing", "ema", "blur", "augment_strength", "zoom",
                "zoom_share", "seed"):
        argv += [f"--{key.replace('_', '-')}", str(cfg[key])]
    if cfg.get("mask_loss"):
        argv += ["--mask-loss", str(cfg["mask_loss"])]
    if cfg.get("white_balance"):
        argv += ["--white-balance", str(cfg["white_balance"])]
    if cfg.get("exposure"):
        argv += ["--exposure", str(cfg["exposure"])]
    if not cfg.get("inset", True):
        argv.append("--no-inset")
    return shlex.join(argv)


def ship(hybrid: list[Path], baseline: list[Path], out: Path, *, final: Path | None = None,
         figures: Path | None = None, name: str = "hyperkvasir-mnv3-lowergi", threads: int | None = None,
         force: bool = False, baseline_from: Path | None = None) -> dict[str, Any]:
    """Ship run A (held-out fold 1), or ``final`` (a ``--fold all`` run of the same recipe) with
    the cross-validation runs' figures. ``baseline_from``: a bundle shipped before whose recorded
    raw-only baseline rows stand in for ``baseline`` runs that are not on this machine."""
    target = check_bundle_target(out, force=force)
    if final is not None:
        final = Path(final).expanduser().resolve()
        check_final(final, [Path(h).expanduser().resolve() for h in hybrid])
    with tempfile.TemporaryDirectory(prefix="endoview-ship-") as tmp:
        rows = {"hybrid": [], "raw": carried_baseline(baseline_from) if baseline_from is not None else []}
        for variant, runs in (("hybrid", hybrid), ("raw", baseline)):
            for run in runs:
                run = Path(run).expanduser().resolve()
                r = _evaluate_run(run, Path(tmp), f"{variant}-{run.name}", figures, threads)
                r["tag"] = f"{variant}-heldout{r['heldout_fold']}"
                if figures is not None and r["confusion_png"]:
                    png = figures / f"confusion-{r['tag']}.png"
                    os.replace(r["confusion_png"], png)
                    r["confusion_png"] = str(png)
                rows[variant].append(r)
        for variant, rs in rows.items():
            folds = sorted(r["heldout_fold"] for r in rs)
            if folds not in ([0, 1], [1]) or (variant == "hybrid" and folds != [0, 1]):
                raise TrainError(f"the {variant} runs must hold out folds 0 and 1 (the baseline at least fold 1), "
                                 f"not {folds}")
            rs.sort(key=lambda r: -r["heldout_fold"])  # run A (held-out fold 1, shipped) first
        a = rows["hybrid"][0]
        shipped = _final_run(final, Path(tmp), threads) if final is not None else a
        means = {v: _mean(rs) for v, rs in rows.items() if len(rs) == 2}
        # the comparison on what both variants have: the 2-fold means, or held-out fold 1 alone
        both = "2-fold mean" if "raw" in means else "held-out fold 1"
        compare = ((means["hybrid"]["mcc"], means["raw"]["mcc"]) if "raw" in means
                   else (a["mcc"], rows["raw"][0]["mcc"]))
        cfg = a["config"]
        # the comparison means something only between runs of the same recipe, heads aside
        differ = {k: {"hybrid": cfg.get(k), "raw": r["config"].get(k)} for r in rows["raw"] for k in RECIPE_KEYS
                  if cfg.get(k) != r["config"].get(k)}
        hybrid_helps = compare[0] > compare[1] if not differ else None
        if differ:
            log.warning("the raw-only baseline was trained with another recipe (%s): the hybrid-vs-raw comparison "
                        "is recorded but not judged", ", ".join(sorted(differ)))
        data = cfg["data"] if isinstance(cfg["data"], list) else [cfg["data"]]
        root = data_root(data)
        prefixes = {root: DATA_ROOT_VAR, str(Path(a["run"]).parent): "runs", str(REPO): "."}
        if final is not None:
            prefixes.setdefault(str(final.parent), "runs")
        src = __import__("engine.bundle", fromlist=["load_bundle"]).load_bundle(shipped["bundle"])

        def fold_row(r):
            return {k: v for k, v in r.items() if k not in ("config", "bundle", "export")}

        training = dict(src.manifest.get("training", {}))
        if final is None:
            folds = {"heldout_fold": a["heldout_fold"], "trained_on_fold": a["trained_on_fold"]}
            classes = {c: sum(int(r["support"]) for r in a["per_class"] if r["label"] == c)
                       for c in (r["label"] for r in a["per_class"])}
        else:
            cv = " and ".join(f"{r['run']} (held-out fold {r['heldout_fold']})" for r in rows["hybrid"])
            folds = {"heldout_fold": None, "trained_on_folds": shipped["trained_on_folds"],
                     "figures_from": f"2-fold cross-validation of the same recipe: {cv}; the shipped model "
                                     f"itself was trained on every fold and has no held-out figures"}
            classes = shipped["images_per_class"]
            training.pop("trained_on_fold", None)
        runs = [{"role": ("shipped (this bundle)" if r is shipped else "cross-validation run"), "variant": v,
                 "run": r["run"], "heldout_fold": r["heldout_fold"], "epochs": r["epochs"],
                 "wall_time_s": r["wall_time_s"], "command": r.get("command") or train_command(r),
                 **({"carried_from": r["carried_from"]} if "carried_from" in r else {})}
                for v, rs in rows.items() for r in rs]
        if final is not None:
            runs.insert(0, {"role": "shipped (this bundle), trained on every fold", "variant": "hybrid",
                            "run": shipped["run"], "heldout_fold": None,
                            "trained_on_folds": shipped["trained_on_folds"], "epochs": shipped["epochs"],
                            "wall_time_s": shipped["wall_time_s"], "command": train_command(shipped)})
        training.update(
            data=[os.path.relpath(str(Path(d).resolve()), root) for d in data], data_root=DATA_ROOT_VAR,
            split_csv=os.path.relpath(str(Path(cfg["split_csv"]).resolve()), root),
            classes_with_data=classes,
            split="official HyperKvasir 2-fold split (2_fold_split.csv); Kvasir-SEG is the polyp class, mapped "
                  "to HyperKvasir ids by kvasirseg_to_hyperkvasir_uuid_by_bbox.csv",
            **folds,
            initialisation="random initialisation (no pretrained weights)",
            recipe={k: cfg[k] for k in RECIPE_KEYS},
            runs=runs,
            reproduce={"train": [r["command"] for r in runs],
                       "ship": shlex.join(["python", "-m", "train.ship", *(r["run"] for r in rows["hybrid"]),
                                           "--baseline", *(r["run"] for r in rows["raw"]),
                                           *(["--final", str(final)] if final is not None else []),
                                           "-o", str(target), *(["--figures", str(figures)] if figures else []),
                                           "--force"])},
        )
        metrics = dict(src.manifest.get("metrics", {}))
        metrics["table1_2fold"] = {
            "protocol": "each run's trimmed bundle (raw head) on its held-out fold through the engine "
                        "(onnxruntime, the viewer's model input); macro metrics over the classes present",
            "hybrid": {"folds": [fold_row(r) for r in rows["hybrid"]], "mean": means["hybrid"]},
            "raw_only_baseline": {"folds": [fold_row(r) for r in rows["raw"]], "mean": means.get("raw")},
            "hybrid_loss_helps": hybrid_helps,
            "compared_on": f"MCC, {both}: hybrid {compare[0]:.3f}, raw-only {compare[1]:.3f}"
                           + (f" (not the same recipe: {', '.join(sorted(differ))} differ)" if differ else ""),
        }
        if differ:
            metrics["table1_2fold"]["recipes_differ"] = differ
        metrics["heldout"] = {k: a[k] for k in TABLE1}
        metrics["polyp_vs_rest"] = a["polyp_vs_rest"]
        if final is not None:
            cv_ops = [r["polyp_vs_rest"]["operating_point"] for r in rows["hybrid"]]
            shipped_op = cv_operating_point(cv_ops)
            own = shipped["operating_point"]
            metrics["operating_point"] = {
                "polyp": shipped_op, "rule": RULE,
                "chosen_on": "the cross-validation runs of the same recipe, each on its own training fold "
                             "(their mean on the 0.05 grid): the point at which every figure here was measured",
                "cross_validation_runs": [{"run": r["run"], "heldout_fold": r["heldout_fold"],
                                           "polyp": r["polyp_vs_rest"]["operating_point"],
                                           "chosen_on": f"training fold {r['trained_on_fold']}"}
                                          for r in rows["hybrid"]],
                "own_training_images": {
                    "polyp": own["polyp"], "sensitivity": own["sensitivity"], "specificity": own["specificity"],
                    "images": shipped["images"],
                    "why_not_used": "the shipped model's own training images (every image) are nearly "
                                    "separated at most thresholds, so the rule there says little of unseen "
                                    "frames, and no held-out figure would describe that point"},
            }
            shipped["operating_point"]["shipped"] = shipped_op
        notes = (f"The paper's MobileNetV3-Large trained with the hybrid loss from random initialisation on the "
                 f"6 lower-GI HyperKvasir classes here ({sum(training['classes_with_data'].values())} held-out "
                 f"images), trimmed to the raw head. Held-out fold {a['heldout_fold']}: MCC {a['mcc']:.3f}, macro F1 "
                 f"{a['macro_f1']:.3f}; 2-fold mean MCC {means['hybrid']['mcc']:.3f} (raw-only baseline "
                 f"{compare[1]:.3f} on the {both}{', another recipe' if differ else ''}). It knows lower-GI classes only. Research use only, not a "
                 "diagnostic device.")
        if final is not None:
            by_fold = ", ".join(f"held-out fold {r['heldout_fold']} MCC {r['mcc']:.3f}" for r in rows["hybrid"])
            notes = (f"The paper's MobileNetV3-Large trained with the hybrid loss from random initialisation on the "
                     f"6 lower-GI HyperKvasir classes here, trimmed to the raw head. The shipped model was trained "
                     f"on both folds (all {shipped['images']} images) and has no held-out figures: the figures here "
                     f"are the 2-fold cross-validation estimates of the same recipe ({by_fold}; mean MCC "
                     f"{means['hybrid']['mcc']:.3f}, raw-only baseline {compare[1]:.3f} on the {both}"
                     f"{', another recipe' if differ else ''}). Its polyp operating point "
                     f"({shipped['operating_point']['shipped']:.2f}) is the cross-validation runs', each chosen "
                     "on its training fold, so the figures describe it. It knows "
                     "lower-GI classes only. Research use only, not a diagnostic device.")
        op = a["polyp_vs_rest"]["operating_point"] if final is None else shipped["operating_point"]["shipped"]
        bundle = rebundle(src, target, name=name, training=json_safe(portable(training, prefixes)),
                          metrics=json_safe(portable(metrics, prefixes)), notes=notes, force=force,
                          extra={"operating_point": {"polyp": op}})
    return {"bundle": str(bundle.path), "rows": rows, "means": means, "hybrid_loss_helps": hybrid_helps,
            "final": shipped if final is not None else None}


def format_report(report: dict[str, Any]) -> str:
    from .metrics import table1_header, table1_row

    lines = [table1_header()]
    for variant, rs in report["rows"].items():
        name = "MobileNetV3 w. raw" if variant == "hybrid" else "MobileNetV3 raw"
        for r in rs:
            lines.append(table1_row(name, f"held-out fold {r['heldout_fold']}", r))
        if variant in report["means"]:
            lines.append(table1_row(name, "2-fold mean", report["means"][variant]))
    lines.append("")
    lines.append(f"{'run':<22} {'op':>5} {'sens':>6} {'spec':>6} {'AUROC':>6}   polyp vs rest, held-out fold")
    for rs in report["rows"].values():
        for r in rs:
            p = r["polyp_vs_rest"]
            lines.append(f"{r['tag']:<22} {p['operating_point']:>5.2f} {p['sensitivity']:>6.3f} "
                         f"{p['specificity']:>6.3f} {p['auroc']:>6.3f}")
    final = report.get("final")
    if final is not None:
        p = final["operating_point"]
        lines.append(f"shipped: {final['run']} (trained on every fold, {final['images']} images; no held-out "
                     f"figures: the rows above are its recipe's cross-validation), operating point "
                     f"{p['shipped']:.2f}, the cross-validation runs' (on its own training images the rule "
                     f"gives {p['polyp']:.2f}: sensitivity {p['sensitivity']:.3f}, specificity "
                     f"{p['specificity']:.3f} there)")
    helps = report["hybrid_loss_helps"]
    lines.append("hybrid loss helps (MCC): " + ("not judged (the baseline had another recipe)" if helps is None
                                                  else "yes" if helps else "no"))
    lines.append(f"wrote {report['bundle']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from engine.errors import EndoviewError

    p = argparse.ArgumentParser(prog="python -m train.ship", description="Export the hybrid run that holds out "
                                "fold 1 (or, with --final, the run of the same recipe trained on every fold) as the "
                                "shipped classifier, with the 2-fold Table-1 comparison against the raw-only "
                                "baseline in its manifest.")
    p.add_argument("hybrid", type=Path, nargs=2, metavar="HYBRID_RUN", help="the hybrid-loss runs (both folds)")
    base = p.add_mutually_exclusive_group(required=True)
    base.add_argument("--baseline", type=Path, nargs="+", metavar="RAW_RUN",
                      help="the raw-head-only runs (both folds; at least the one holding out fold 1)")
    base.add_argument("--baseline-from", type=Path, metavar="BUNDLE",
                      help="instead: the raw-only baseline figures recorded in a classify bundle shipped before "
                           "(when its raw runs are not on this machine; recorded as carried, with its recipe)")
    p.add_argument("--final", type=Path, metavar="RUN", help="ship this finished 'train classify --fold all' run "
                   "of the hybrid runs' recipe instead of run A; the figures stay the cross-validation runs'")
    p.add_argument("-o", "--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--figures", type=Path, help="folder for the confusion-matrix PNGs")
    p.add_argument("--name", default="hyperkvasir-mnv3-lowergi", help="bundle name")
    p.add_argument("--threads", type=int, help="CPU threads for export and evaluation")
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = ship(args.hybrid, args.baseline or [], args.out, final=args.final, figures=args.figures,
                      name=args.name, threads=args.threads, force=args.force, baseline_from=args.baseline_from)
    except EndoviewError as exc:
        print(f"endoview: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        def brief(r):
            return {k: x for k, x in r.items() if k not in ("config", "bundle", "export")}

        print(json.dumps({k: v for k, v in report.items() if k not in ("rows", "final")} | {
            "rows": {v: [brief(r) for r in rs] for v, rs in report["rows"].items()},
            "final": brief(report["final"]) if report["final"] else None}, indent=2, default=str))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
