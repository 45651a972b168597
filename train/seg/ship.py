"""``python -m train.seg.ship RUN_A RUN_B -o BUNDLE``: the shipped segmenter with its 2-fold figures.

Kvasir-SEG's official HyperKvasir 2-fold split gives two runs of one recipe: run A trained on one
fold (held out: the other) and run B trained the other way round. Shipping:

1. exports run B into a temporary folder (:func:`train.seg.export.export_segmenter`) and
   evaluates it on its held-out fold, at full resolution through the viewer's path
   (:func:`train.seg.evaluate.evaluate_bundle`, what ``endoview eval-seg --fold K`` does);
2. exports run A the same way and evaluates it on its held-out fold;
3. writes run A's bundle, byte for byte the model that was evaluated, to ``-o`` with the export's
   manifest extended: the data, each run's training and held-out fold, the initialisation, seed,
   epochs and wall time (``log.csv``: train_s + val_s), the per-fold Jaccard, Dice, recall,
   precision and FPS with the 2-fold mean, and the commands that reproduce it.

Only run A is shipped; run B exists for the cross-validation figure. With ``--final RUN`` (a
``train segment --fold all`` run of the same model: arch, width, input size, negatives, inset) that
run is exported and shipped instead: trained on every image of both folds, it has no held-out
figures of its own, and the manifest's figures are the two cross-validation runs' (which it says:
``training.heldout_fold: null``, ``trained_on_folds: [0, 1]``, ``figures_from``). Runs that have
not reached their planned epochs are refused unless ``--allow-unfinished``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TrainError
from ..folders import check_bundle_target
from ..manifest import DATA_ROOT_VAR, REPO, data_root, json_safe, portable, rebundle

log = logging.getLogger("train.seg.ship")  # also when run as __main__

METRICS = ("jaccard", "dice", "recall", "precision")
SPEED = ("fps", "fps_pipeline")
INITIALISATION = "trained from random initialisation (no pretrained weights)"
SPLIT = ("official HyperKvasir 2-fold split (2_fold_split.csv, Kvasir-SEG names mapped through "
         "kvasirseg_to_hyperkvasir_uuid_by_bbox.csv)")
SHIPPED, CV_RUN = "shipped (this bundle)", "cross-validation run (not shipped)"
#: config fields that never change what a run computes (left out of the reproducing command)
NOT_RECIPE = {"data", "out", "fold", "threads", "cache_dir", "progress", "split_csv", "mapping_csv", "val_every"}


@dataclass
class Run:
    """One ``train segment`` run folder as the ship step reads it."""

    path: Path
    config: dict[str, Any]
    log_rows: list[dict[str, float]]

    @property
    def heldout(self) -> int:
        return int(self.config["fold"])

    @property
    def epochs_done(self) -> int:
        return len(self.log_rows)

    @property
    def wall_time_s(self) -> float:
        return round(sum(r.get("train_s", 0.0) + r.get("val_s", 0.0) for r in self.log_rows), 1)

    @property
    def finished(self) -> bool:
        return self.epochs_done >= int(self.config["epochs"])


@dataclass
class ShipReport:
    bundle: Any  # engine.bundle.Bundle
    folds: list[dict[str, Any]]
    mean: dict[str, float]
    command: str
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = f"{'held-out fold':<14} {'model':<16} {'images':>6} {'Jaccard':>8} {'Dice':>8} {'recall':>8} " \
               f"{'precision':>9} {'FPS':>7}"
        rows = [head]
        for i, f in enumerate(self.folds):
            tag = ("shipped (A)" if f["shipped"] else "run A") if i == 0 else "run B"
            rows.append(f"{f['heldout_fold']:<14} {tag:<16} "
                        f"{f['images']:>6} {f['jaccard']:>8.3f} {f['dice']:>8.3f} {f['recall']:>8.3f} "
                        f"{f['precision']:>9.3f} {f['fps']:>7.1f}")
        m = self.mean
        if m is None:
            return [f"wrote {self.bundle.path} ({self.bundle.name})", *rows, *(f"warning: {w}" for w in self.warnings)]
        rows.append(f"{'2-fold mean':<14} {'':<16} {'':>6} {m['jaccard']:>8.3f} {m['dice']:>8.3f} "
                    f"{m['recall']:>8.3f} {m['precision']:>9.3f} {m['fps']:>7.1f}")
        return [f"wrote {self.bundle.path} ({self.bundle.name})", *rows, *(f"warning: {w}" for w in self.warnings)]


def read_run(path: str | os.PathLike[str]) -> Run:
    """A run folder's resolved ``config.json`` and its ``log.csv`` rows (numbers as floats)."""
    run = Path(path).expanduser()
    cfg_path, log_path = run / "config.json", run / "log.csv"
    for p in (cfg_path, log_path):
        if not p.is_file():
            raise TrainError(f"{run} is not a 'train segment' run folder: {p.name} is missing")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
        with log_path.open(newline="", encoding="utf-8") as fh:
            rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]
    except (OSError, ValueError) as err:
        raise TrainError(f"cannot read run {run}: {err}") from err
    for key in ("fold", "epochs", "arch", "image_size", "seed", "data"):
        if key not in config:
            raise TrainError(f"{cfg_path} has no {key!r}: not a 'train segment' run")
    return Run(run.resolve(), config, rows)


def train_command(run: Run) -> str:
    """The ``endoview train segment`` line that trains ``run`` again (non-default settings spelled out)."""
    from .config import SegTrainConfig

    cfg, defaults = run.config, SegTrainConfig(data="", out="").to_dict()
    argv = ["endoview", "train", "segment", "--data", str(cfg["data"]),
            "--fold", "all" if cfg["fold"] is None else str(cfg["fold"]),
            "--out", str(run.path)]
    always = ("arch", "width", "image_size", "epochs", "seed")
    for key, value in cfg.items():
        if key in NOT_RECIPE or key not in defaults or (key not in always and value == defaults[key]):
            continue
        if isinstance(value, bool):
            argv += [] if value else [f"--no-{key.replace('_', '-')}"]
        elif isinstance(value, list):
            argv += [f"--{key.replace('_', '-')}", *map(str, value)]
        else:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    for key in ("split_csv", "mapping_csv"):
        if cfg.get(key):
            argv += [f"--{key.replace('_', '-')}", str(cfg[key])]
    return shlex.join(argv)


def _check_runs(a: Run, b: Run | None, allow_unfinished: bool) -> list[str]:
    if b is None:
        return (["no cross-validation partner: only the shipped run's held-out fold is evaluated"]
                + _unfinished("run A", a, allow_unfinished))
    if a.heldout == b.heldout:
        raise TrainError(f"both runs hold out fold {a.heldout}; run B must hold out the fold run A trained on")
    if {a.heldout, b.heldout} != {0, 1}:
        raise TrainError(f"the runs hold out folds {a.heldout} and {b.heldout}; the official split has folds 0 and 1")
    recipe = ("arch", "width", "image_size", "negatives", "inset")
    differ = [k for k in recipe if a.config.get(k) != b.config.get(k)]
    if differ:
        raise TrainError("run A and run B differ in " + ", ".join(
            f"{k} ({a.config.get(k)} vs {b.config.get(k)})" for k in differ) + "; the 2-fold mean needs one recipe")
    warnings = []
    if a.config.get("epochs") != b.config.get("epochs"):
        warnings.append(f"run B trained {b.config.get('epochs')} epochs, run A {a.config.get('epochs')}: the "
                        "2-fold mean mixes two training lengths")
    for tag, r in (("A", a), ("B", b)):
        warnings += _unfinished(f"run {tag}", r, allow_unfinished)
    if a.config.get("seed") != b.config.get("seed"):
        warnings.append(f"the runs have different seeds ({a.config.get('seed')} vs {b.config.get('seed')})")
    return warnings


def _unfinished(what: str, run: Run, allow_unfinished: bool) -> list[str]:
    """[] for a run that reached its planned epochs; else TrainError, or with ``allow_unfinished`` the warning."""
    if run.finished:
        return []
    msg = f"{what} ({run.path}) has trained {run.epochs_done} of {run.config['epochs']} epochs"
    if not allow_unfinished:
        raise TrainError(msg + "; wait for it to finish or pass --allow-unfinished")
    return [msg]


def _check_final(final: Run, a: Run, allow_unfinished: bool) -> list[str]:
    """TrainError unless ``final`` is a ``--fold all`` run of run A's model; warnings to record."""
    if final.config.get("fold") is not None:
        raise TrainError(f"--final {final.path} holds out fold {final.config['fold']}; the final model is a "
                         "'train segment --fold all' run")
    recipe = ("arch", "width", "image_size", "negatives", "inset", "split_csv", "mapping_csv")
    differ = [k for k in recipe if final.config.get(k) != a.config.get(k)]
    if differ:
        raise TrainError("--final differs from run A in " + ", ".join(
            f"{k} ({final.config.get(k)} vs {a.config.get(k)})" for k in differ)
            + "; the cross-validation figures would not describe it")
    warnings = _unfinished("the final run", final, allow_unfinished)
    if final.config.get("epochs") != a.config.get("epochs"):
        warnings.append(f"the final run trained {final.config.get('epochs')} epochs over both folds, the "
                        f"cross-validation runs {a.config.get('epochs')} over one fold (about "
                        f"{2 * final.config.get('epochs') / a.config.get('epochs'):.2f} times their steps)")
    return warnings


def _fold_figures(m: dict[str, Any], run: Run, report, *, shipped: bool) -> dict[str, Any]:
    ckpt_epoch = report.bundle.manifest.get("training", {}).get("epochs")
    return {
        "heldout_fold": run.heldout, "trained_on_fold": 1 - run.heldout, "shipped": shipped,
        "run": str(run.path), "model": report.bundle.name,
        "onnx_sha256": report.bundle.sha256("onnx"), "exported_epoch": ckpt_epoch,
        **{k: float(m[k]) for k in (*METRICS, *SPEED)},
        "inference_ms": float(m["inference_ms"]), "images": int(m["images"]), "backend": m["backend"],
        "threshold": m["threshold"],
    }


def _run_summary(run: Run, role: str) -> dict[str, Any]:
    """A run's row of the manifest's ``training.runs`` (a ``--fold all`` run: trained on both folds)."""
    every = run.config.get("fold") is None
    folds = {"trained_on_folds": [0, 1], "heldout_fold": None} if every else \
        {"trained_on_fold": 1 - run.heldout, "heldout_fold": run.heldout}
    return {
        "role": role, "run": str(run.path), **folds,
        "initialisation": INITIALISATION, "seed": run.config.get("seed"), "epochs": run.epochs_done,
        "epochs_planned": int(run.config["epochs"]), "wall_time_s": run.wall_time_s,
        "wall_time_source": "log.csv: sum of train_s + val_s over the epochs", "command": train_command(run),
    }


def _evaluate(bundle_dir: Path, samples, fold: int, data: Path, *, limit: int | None, threads: int | None,
              progress: bool) -> dict[str, Any]:
    from .evaluate import evaluate_bundle, find_pairs

    names = {s.name for s in samples if s.fold == fold}
    pairs = find_pairs(data / "images", data / "masks", names)
    if limit:
        pairs = pairs[:limit]
    log.info("evaluating %s on held-out fold %d (%d images, full resolution)", bundle_dir.name, fold, len(pairs))
    return evaluate_bundle(bundle_dir, pairs, threads=threads, progress=progress)


def _image_level(bundle_dir: Path, samples, run: Run, kvasir: Path, split_csv, *, limit: int | None,
                 threads: int | None) -> dict[str, Any]:
    """Image-level figures on the held-out fold: its polyp images and its polyp-free images."""
    from ..data import load_negatives
    from .detect_eval import evaluate_detection, public
    from .trainer import _split_file_beside

    negatives = [n.image for n in load_negatives(run.config["negatives"], split_csv or _split_file_beside(str(kvasir)))
                 if n.fold == run.heldout]
    polyps = [s.image for s in samples if s.fold == run.heldout]
    if limit:
        negatives, polyps = negatives[:limit], polyps[:limit]
    log.info("image level: %d polyp and %d polyp-free images of held-out fold %d", len(polyps), len(negatives),
             run.heldout)
    r = public(evaluate_detection(bundle_dir, polyps, negatives, threads=threads))
    return {k: r[k] for k in ("sensitivity", "specificity", "auroc", "false_alarms_per_minute",
                              "polyp_images", "negative_images")}


def ship_command(run_a: Path, run_b: Path | None, out: Path, **opts: Any) -> str:
    argv = ["python", "-m", "train.seg.ship", str(run_a), *([str(run_b)] if run_b else []), "-o", str(out)]
    for key, value in opts.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return shlex.join(argv)


def ship(run_a: str | os.PathLike[str], run_b: str | os.PathLike[str] | None, out: str | os.PathLike[str], *,
         data: str | os.PathLike[str] | None = None, split_csv=None, mapping_csv=None, name: str | None = None,
         checkpoint: str = "best", torchscript: bool = False, limit: int | None = None,
         threads: int | None = None, latency_runs: int = 50, allow_unfinished: bool = False,
         force: bool = False, progress: bool = False, final: str | os.PathLike[str] | None = None) -> ShipReport:
    """Export and evaluate both runs, write run A's bundle (or the ``final`` run's) to ``out`` with
    the 2-fold figures."""
    from .data import load_kvasir_seg
    from .export import export_segmenter

    target = check_bundle_target(out, force=force)
    a, b = read_run(run_a), (read_run(run_b) if run_b is not None else None)
    warnings = _check_runs(a, b, allow_unfinished)
    fin = read_run(final) if final is not None else None
    if fin is not None:
        if b is None:
            raise TrainError("--final needs both cross-validation runs (RUN_A and RUN_B): they give its figures")
        warnings += _check_final(fin, a, allow_unfinished)
    for w in warnings:
        log.warning("%s", w)
    kvasir = Path(data if data is not None else a.config["data"]).expanduser()
    if (kvasir / "kvasir-seg" / "images").is_dir():
        kvasir = kvasir / "kvasir-seg"
    split_csv = split_csv or a.config.get("split_csv")
    mapping_csv = mapping_csv or a.config.get("mapping_csv")
    samples = load_kvasir_seg(kvasir, split_csv=split_csv, mapping_csv=mapping_csv)
    per_fold = {k: sum(1 for s in samples if s.fold == k) for k in sorted({s.fold for s in samples})}

    options = dict(checkpoint=checkpoint, latency_runs=latency_runs, threads=threads)
    folds, reports = [], {}
    with tempfile.TemporaryDirectory(prefix="endoview-ship-") as tmp:
        for tag, run in ((("B", b),) if b is not None else ()) + (("A", a),):
            log.info("exporting run %s (%s, held-out fold %d)", tag, run.path, run.heldout)
            rep = export_segmenter(run.path, Path(tmp) / tag, torchscript=torchscript if tag == "A" else False,
                                   **options)
            m = _evaluate(rep.bundle.path, samples, run.heldout, kvasir, limit=limit, threads=threads,
                          progress=progress)
            reports[tag] = rep
            row = _fold_figures(m, run, rep, shipped=tag == "A")
            if run.config.get("negatives"):
                row["image_level"] = _image_level(rep.bundle.path, samples, run, kvasir, split_csv,
                                                  limit=limit, threads=threads)
            folds.append(row)
        if fin is not None:
            log.info("exporting the final run %s (every fold)", fin.path)
            reports["final"] = export_segmenter(fin.path, Path(tmp) / "final", torchscript=torchscript, **options)
            for f in folds:
                f["shipped"] = False
            folds.sort(key=lambda f: -f["heldout_fold"])  # run A (held-out fold 1) first
        folds.sort(key=lambda f: not f["shipped"])
        mean = {k: sum(f[k] for f in folds) / len(folds) for k in (*METRICS, *SPEED)} if len(folds) == 2 else None
        command = ship_command(a.path, b.path if b else None, target.resolve(), data=data and Path(data).resolve(),
                               split_csv=split_csv if split_csv != a.config.get("split_csv") else None,
                               mapping_csv=mapping_csv if mapping_csv != a.config.get("mapping_csv") else None,
                               name=name, checkpoint=None if checkpoint == "best" else checkpoint,
                               torchscript=torchscript, limit=limit, threads=threads,
                               latency_runs=None if latency_runs == 50 else latency_runs,
                               allow_unfinished=allow_unfinished, force=True,
                               final=fin.path if fin is not None else None)
        src = reports["final" if fin is not None else "A"].bundle
        training = dict(src.manifest.get("training", {}))
        training.update(
            initialisation=INITIALISATION, trained_on_fold=1 - a.heldout, heldout_fold=a.heldout,
            trained_on_folds=str(1 - a.heldout), seed=a.config.get("seed"), epochs_trained=a.epochs_done,
            wall_time_s=a.wall_time_s,
            dataset={"name": "Kvasir-SEG", "folder": kvasir.name, "path": str(kvasir.resolve()),
                     "negatives": a.config.get("negatives"),
                     "images": len(samples), "images_per_fold": {str(k): n for k, n in per_fold.items()},
                     "split": SPLIT},
            runs=[_run_summary(a, SHIPPED)] + ([_run_summary(b, CV_RUN)] if b else []),
            reproduce={"train": [train_command(a)] + ([train_command(b)] if b else []), "ship": command},
        )
        if fin is not None:
            training.update(
                trained_on_fold=None, heldout_fold=None, trained_on_folds=[0, 1], epochs_trained=fin.epochs_done,
                wall_time_s=fin.wall_time_s,
                runs=[_run_summary(fin, SHIPPED + ", trained on every fold"), _run_summary(a, CV_RUN), _run_summary(b, CV_RUN)],
                reproduce={"train": [train_command(fin), train_command(a), train_command(b)], "ship": command},
                figures_from=("2-fold cross-validation of the same model: run A (trained on fold 0, held-out fold 1) "
                              "and run B (trained on fold 1, held-out fold 0); the shipped model itself trained on "
                              "every image of both folds and has no held-out figures"))
        if warnings:
            training["ship_warnings"] = warnings
        metrics = dict(src.manifest.get("metrics", {}))
        metrics["kvasir_seg_2fold"] = {
            "protocol": ("each run's exported bundle on its held-out fold, every image at full resolution "
                         "through the viewer's path (content area, model input, onnxruntime, mask mapped back to "
                         "the frame; endoview eval-seg --fold K); Jaccard, Dice, recall and precision per image "
                         "on the predicted mask, averaged over images; fps: model inference alone at batch 1, "
                         "fps_pipeline: the whole per-frame path"),
            "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                        "threads": threads},
            "folds": folds, "mean": mean,
            **({"limited_to_images_per_fold": limit} if limit else {}),
        }
        if fin is not None:
            figures = (f"Trained on every image of both folds: no held-out figures of its own; cross-validation "
                       f"of the same model (two runs, each on its held-out fold): Dice {mean['dice']:.3f}, Jaccard "
                       f"{mean['jaccard']:.3f} (run A {folds[0]['dice']:.3f}, run B {folds[1]['dice']:.3f})")
        else:
            figures = (f"Trained on fold {1 - a.heldout}. Held-out Dice {folds[0]['dice']:.3f}, Jaccard "
                       f"{folds[0]['jaccard']:.3f}"
                       + (f"; 2-fold mean Dice {mean['dice']:.3f}, Jaccard {mean['jaccard']:.3f}" if mean else
                          "; no cross-validation partner"))
        notes = (f"Real-time polyp segmenter ({training.get('arch')}, {src.input_size[0]} px) {INITIALISATION}, "
                 f"Kvasir-SEG ({len(samples):,} images, official HyperKvasir 2-fold split"
                 f"{', with polyp-free images as empty masks' if a.config.get('negatives') else ''}). {figures}"
                 + (f" (first {limit} images of each fold only)" if limit else "")
                 + ". Research use only, not a diagnostic device.")
        prefixes = {data_root([str(kvasir), *(a.config.get("negatives") or [])]): DATA_ROOT_VAR,
                    str(a.path.parent): "runs", str((b or a).path.parent): "runs",
                    **({str(fin.path.parent): "runs"} if fin is not None else {}),
                    str(REPO): "."}
        bundle = rebundle(src, target, name=name, training=json_safe(portable(training, prefixes)),
                          metrics=json_safe(portable(metrics, prefixes)), notes=notes, force=force)
    return ShipReport(bundle, folds, mean, command, warnings)


EPILOG = """\
RUN_A is the run whose model is shipped (trained on fold 0: '--fold 1' in its config); RUN_B the
run trained on the other fold, exported and evaluated only for the 2-fold mean. Each is evaluated
on its own held-out fold as 'endoview eval-seg --fold K' does (full resolution, the viewer's path).

example:
  python -m train.seg.ship runs/unet-f0 runs/unet-f1 -o engine/assets/models/polyp-unet --force
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.seg.ship", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Export run A as the shipped segment bundle, with both folds' "
                                "held-out figures and the 2-fold mean in its manifest.", epilog=EPILOG)
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="run folder of the model to ship (trained on fold 0)")
    p.add_argument("run_b", type=Path, metavar="RUN_B", nargs="?",
                   help="run folder trained on the other fold (without it: no 2-fold mean, said in the manifest)")
    p.add_argument("-o", "--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--data", type=Path, help="the kvasir-seg folder (default: run A's --data)")
    p.add_argument("--split-csv", type=Path, help="official split file (default: run A's, or found beside --data)")
    p.add_argument("--mapping-csv", type=Path, help="kvasirseg_to_hyperkvasir_uuid_by_bbox.csv")
    p.add_argument("--name", help="bundle name (default: the export's, polyp-<arch>-<size>-kvasir-seg-heldout<K>)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which epoch's weights of each run (default: best validation Dice)")
    p.add_argument("--torchscript", action="store_true",
                   help="also ship model.torchscript.pt (the torch backend); ONNX only by default (smaller)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images of each fold (quick checks)")
    p.add_argument("--threads", type=int, help="CPU threads for export checks and evaluation")
    p.add_argument("--latency-runs", type=int, default=50, help="timed runs for the export's latency (default 50)")
    p.add_argument("--final", type=Path, metavar="RUN", help="ship this 'train segment --fold all' run of run A's "
                   "model instead of run A (trained on every image; the figures stay the two runs' cross-validation)")
    p.add_argument("--allow-unfinished", action="store_true", help="ship runs that stopped before their planned epochs")
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.add_argument("--json", action="store_true", help="print the per-fold figures and the mean as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    from engine.errors import EndoviewError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = ship(args.run_a, args.run_b, args.out, data=args.data, split_csv=args.split_csv,
                      mapping_csv=args.mapping_csv, name=args.name, checkpoint=args.checkpoint,
                      torchscript=args.torchscript, limit=args.limit, threads=args.threads,
                      latency_runs=args.latency_runs, allow_unfinished=args.allow_unfinished, force=args.force,
                      final=args.final,
                      progress=not args.json and sys.stderr.isatty())
    except EndoviewError as exc:
        print(f"endoview: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps({"bundle": str(report.bundle.path), "folds": report.folds, "mean": report.mean,
                          "command": report.command, "warnings": report.warnings}, indent=2))
    else:
        print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
