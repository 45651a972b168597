"""``python -m train.ship``: the shipped per-frame classifier with its 2-fold Table-1 comparison.

The paper's Table 1 on the data that is here: MobileNetV3-Large trained with the hybrid loss and
the raw-head-only baseline, each on both folds of the official HyperKvasir split::

    python -m train.ship HYBRID_A HYBRID_B --baseline RAW_A RAW_B -o engine/assets/models/hyperkvasir-mnv3

Run A holds out fold 1 (trained on fold 0) and is shipped; run B holds out fold 0. For each of the
four runs the step:

1. exports the trimmed model (:func:`train.export.export_run`: raw head only, ONNX, parity-checked);
2. evaluates the bundle through the engine on its held-out fold (macro/micro precision, recall,
   F1, MCC, the per-class table and the confusion matrix, PNG beside ``--figures``);
3. chooses the polyp operating point (the probability of the polyp classes at which the viewer
   says "polyp") **on the run's training fold only**: the threshold with the largest sensitivity
   + specificity there, ties to the one nearest 0.5; then reports polyp-vs-rest sensitivity and
   specificity on the held-out fold at that point, and the AUROC.

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
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TrainError
from .folders import check_bundle_target
from .manifest import DATA_ROOT_VAR, REPO, data_root, json_safe, portable, rebundle

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


def _evaluate_run(run: Path, tmp: Path, tag: str, figures: Path | None, threads: int | None) -> dict[str, Any]:
    from engine.bundle import load_bundle

    from .checkpoint import load_checkpoint
    from .data import load_dataset
    from .evaluate import bundle_probabilities, metrics_from_probs
    from .export import export_run
    from .labels import RAW_CLASSES
    from .metrics import plot_confusion
    from .seg.detect_eval import auroc

    ckpt = load_checkpoint(run)
    cfg = ckpt["config"]
    if ckpt["epoch"] < cfg["epochs"]:
        raise TrainError(f"{run} has trained {ckpt['epoch']} of {cfg['epochs']} epochs; ship finished runs")
    log.info("exporting %s (%s, held-out fold %d)", run, ",".join(ckpt["heads"]), cfg["fold"])
    rep = export_run(run, tmp / tag, torchscript=False, latency_runs=20, threads=threads, force=True)
    bundle = load_bundle(rep.bundle.path)
    ds = load_dataset(cfg["data"], cfg["split_csv"])
    labels = list(bundle.labels)
    held, train = ds.fold(cfg["fold"]), ds.not_fold(cfg["fold"])
    p_held, t_held, desc = bundle_probabilities(bundle, held)
    p_train, t_train, _ = bundle_probabilities(bundle, train)
    to_bundle = np.array([labels.index(RAW_CLASSES[i]) for i in t_held])
    m = metrics_from_probs(p_held, to_bundle, labels)
    polyp = labels.index("polyp")
    op = choose_operating_point(polyp_scores(p_train, labels), t_train == RAW_CLASSES.index("polyp"))
    s_held = polyp_scores(p_held, labels)
    pos = to_bundle == polyp
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
        "tag": tag, "run": str(run), "heads": list(ckpt["heads"]), "heldout_fold": int(cfg["fold"]),
        "trained_on_fold": 1 - int(cfg["fold"]), "epochs": int(ckpt["epoch"]), "bundle": rep.bundle.path,
        "onnx_sha256": bundle.sha256("onnx"), "backend": desc, "images": len(held),
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
        "wall_time_s": round(sum(r.get("train_s", 0.0) for r in ckpt["history"]), 1),
        "config": cfg, "export": {"parity": rep.parity, "cpu_latency_ms": rep.latency_ms, "size": rep.size},
    }


def _mean(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {k: float(np.mean([r[k] for r in rows])) for k in TABLE1}
    for k in ("sensitivity", "specificity", "auroc"):
        out[f"polyp_{k}"] = float(np.mean([r["polyp_vs_rest"][k] for r in rows]))
    return out


#: what makes two classifier runs comparable (the heads and the fold aside)
RECIPE_KEYS = ("arch", "image_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule",
               "warmup_epochs", "label_smoothing", "ema", "blur", "augment_strength", "seed", "inset")


def train_command(r: dict[str, Any]) -> str:
    cfg = r["config"]
    data = cfg["data"] if isinstance(cfg["data"], list) else [cfg["data"]]
    argv = ["endoview", "train", "classify", "--data", *data, "--split-csv", cfg["split_csv"],
            "--fold", str(cfg["fold"]), "--heads", "all" if len(r["heads"]) > 1 else "raw", "--out", r["run"]]
    for key in ("arch", "weights", "image_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay",
                "schedule", "warmup_epochs", "label_smoothing", "ema", "blur", "augment_strength", "seed"):
        argv += [f"--{key.replace('_', '-')}", str(cfg[key])]
    if not cfg.get("inset", True):
        argv.append("--no-inset")
    return shlex.join(argv)


def ship(hybrid: list[Path], baseline: list[Path], out: Path, *, figures: Path | None = None,
         name: str = "hyperkvasir-mnv3-lowergi", threads: int | None = None, force: bool = False) -> dict[str, Any]:
    target = check_bundle_target(out, force=force)
    with tempfile.TemporaryDirectory(prefix="endoview-ship-") as tmp:
        rows = {"hybrid": [], "raw": []}
        for variant, runs in (("hybrid", hybrid), ("raw", baseline)):
            for run in runs:
                run = Path(run).expanduser().resolve()
                r = _evaluate_run(run, Path(tmp), f"{variant}-{run.name}", figures, threads)
                r["tag"] = f"{variant}-heldout{r['heldout_fold']}"
                if figures is not None and r["confusion_png"]:
                    final = figures / f"confusion-{r['tag']}.png"
                    os.replace(r["confusion_png"], final)
                    r["confusion_png"] = str(final)
                rows[variant].append(r)
        for variant, rs in rows.items():
            folds = sorted(r["heldout_fold"] for r in rs)
            if folds not in ([0, 1], [1]) or (variant == "hybrid" and folds != [0, 1]):
                raise TrainError(f"the {variant} runs must hold out folds 0 and 1 (the baseline at least fold 1), "
                                 f"not {folds}")
            rs.sort(key=lambda r: -r["heldout_fold"])  # run A (held-out fold 1, shipped) first
        a = rows["hybrid"][0]
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
        src = __import__("engine.bundle", fromlist=["load_bundle"]).load_bundle(a["bundle"])

        def fold_row(r):
            return {k: v for k, v in r.items() if k not in ("config", "bundle", "export")}

        training = dict(src.manifest.get("training", {}))
        training.update(
            data=[os.path.relpath(str(Path(d).resolve()), root) for d in data], data_root=DATA_ROOT_VAR,
            split_csv=os.path.relpath(str(Path(cfg["split_csv"]).resolve()), root),
            classes_with_data={c: sum(int(r["support"]) for r in a["per_class"] if r["label"] == c)
                               for c in (r["label"] for r in a["per_class"])},
            split="official HyperKvasir 2-fold split (2_fold_split.csv); Kvasir-SEG is the polyp class, mapped "
                  "to HyperKvasir ids by kvasirseg_to_hyperkvasir_uuid_by_bbox.csv",
            heldout_fold=a["heldout_fold"], trained_on_fold=a["trained_on_fold"],
            initialisation="random initialisation (no pretrained weights)",
            recipe={k: cfg[k] for k in RECIPE_KEYS},
            runs=[{"role": ("shipped (this bundle)" if r is a else "cross-validation run"), "variant": v,
                   "run": r["run"], "heldout_fold": r["heldout_fold"], "epochs": r["epochs"],
                   "wall_time_s": r["wall_time_s"], "command": train_command(r)}
                  for v, rs in rows.items() for r in rs],
            reproduce={"train": [train_command(r) for rs in rows.values() for r in rs],
                       "ship": shlex.join(["python", "-m", "train.ship", *(r["run"] for r in rows["hybrid"]),
                                           "--baseline", *(r["run"] for r in rows["raw"]), "-o", str(target),
                                           *(["--figures", str(figures)] if figures else []), "--force"])},
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
        notes = (f"The paper's MobileNetV3-Large trained with the hybrid loss from random initialisation on the "
                 f"6 lower-GI HyperKvasir classes here ({sum(training['classes_with_data'].values())} held-out "
                 f"images), trimmed to the raw head. Held-out fold {a['heldout_fold']}: MCC {a['mcc']:.3f}, macro F1 "
                 f"{a['macro_f1']:.3f}; 2-fold mean MCC {means['hybrid']['mcc']:.3f} (raw-only baseline "
                 f"{compare[1]:.3f} on the {both}{', another recipe' if differ else ''}). It knows lower-GI classes only. Research use only, not a "
                 "diagnostic device.")
        bundle = rebundle(src, target, name=name, training=json_safe(portable(training, prefixes)),
                          metrics=json_safe(portable(metrics, prefixes)), notes=notes, force=force,
                          extra={"operating_point": {"polyp": a["polyp_vs_rest"]["operating_point"]}})
    return {"bundle": str(bundle.path), "rows": rows, "means": means, "hybrid_loss_helps": hybrid_helps}


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
    helps = report["hybrid_loss_helps"]
    lines.append("hybrid loss helps (MCC): " + ("not judged (the baseline had another recipe)" if helps is None
                                                  else "yes" if helps else "no"))
    lines.append(f"wrote {report['bundle']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from engine.errors import EndoviewError

    p = argparse.ArgumentParser(prog="python -m train.ship", description="Export the hybrid run that holds out "
                                "fold 1 as the shipped classifier, with the 2-fold Table-1 comparison against the "
                                "raw-only baseline in its manifest.")
    p.add_argument("hybrid", type=Path, nargs=2, metavar="HYBRID_RUN", help="the hybrid-loss runs (both folds)")
    p.add_argument("--baseline", type=Path, nargs="+", required=True, metavar="RAW_RUN",
                   help="the raw-head-only runs (both folds; at least the one holding out fold 1)")
    p.add_argument("-o", "--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--figures", type=Path, help="folder for the confusion-matrix PNGs")
    p.add_argument("--name", default="hyperkvasir-mnv3-lowergi", help="bundle name")
    p.add_argument("--threads", type=int, help="CPU threads for export and evaluation")
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = ship(args.hybrid, args.baseline, args.out, figures=args.figures, name=args.name,
                      threads=args.threads, force=args.force)
    except EndoviewError as exc:
        print(f"endoview: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "rows"} | {
            "rows": {v: [{k: x for k, x in r.items() if k not in ("config", "bundle", "export")} for r in rs]
                     for v, rs in report["rows"].items()}}, indent=2, default=str))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
