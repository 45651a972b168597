"""Console subcommands of train/: ``train``, ``eval``, ``export``, ``data``.

Registered in pyproject's ``endoview.commands`` entry-point group (``engine.cli`` finds them);
each ``add_*_parser(subparsers)`` adds one subcommand whose ``func(args) -> int`` runs it. Without
the entry points (or under torchrun): ``python -m train train classify ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from .errors import DataError, TrainError
from .options import (ALL_FOLDS, RAW, add_export_flags, add_export_target, apply_flags, fold_arg, int_list,
                      print_export, read_config_file)

log = logging.getLogger(__name__)

TRAIN_EPILOG = """\
Defaults are the paper's (He et al., EndoTect 2020): SGD lr 0.003, momentum 0.9, x0.1 after epochs
10, 20, 30; 40 epochs; batch 128 (mobilenet_v3_large) / 32 (resnet152); hybrid loss over the
raw, macro, oesophagus and ulcer heads. --fold K holds out the images with split-index K (they are
evaluated each epoch); the others are trained on. --fold all trains on every image and evaluates
none: the final model, whose figures are its recipe's cross-validation runs' (python -m train.ship
... --final RUN ships it with them). Values: built-in defaults < --config FILE < command-line
flags; the resolved configuration is saved as RUN_DIR/config.json.

examples:
  endoview train classify --data hyper-kvasir/labeled-images \\
      --split-csv official_splits/2_fold_split.csv --fold 0 --arch mobilenet_v3_large --out runs/mnv3-f0
  endoview train classify ... --arch resnet152 --weights resnet152-f82ba261.pth --out runs/r152-f0
  endoview train classify ... --heads raw --out runs/mnv3-raw-f0        # the paper's baseline
  endoview train classify ... --cv 2 --out runs/mnv3-cv                  # Table 1: both folds, hybrid and raw
  endoview train classify ... --fold all --out runs/mnv3-all             # the final model: nothing held out
  endoview train classify ... --out runs/mnv3-f0 --resume --epochs 50
  torchrun --nproc-per-node 4 -m train train classify ... --out runs/mnv3-ddp
"""

EVAL_EPILOG = """\
Prints the paper's Table 1 columns (macro and micro precision, recall, F1; MCC) and a per-class
table, and writes the confusion matrix as PNG. A bundle is run by engine/'s backend (what the
viewer runs); a run folder by torch from its last checkpoint. With a run folder, --data,
--split-csv and --fold default to the run's own. A model evaluated on a fold it was trained on (its
manifest's training.heldout_fold / trained_on_folds say which) gets a note on stderr: those are not
held-out figures.

examples:
  endoview eval bundles/mnv3-f0 --data hyper-kvasir/labeled-images --split-csv 2_fold_split.csv --fold 0
  endoview eval runs/mnv3-f0 --json > metrics.json
"""

EXPORT_EPILOG = """\
Keeps the raw head only (network trimming), exports ONNX (uint8 RGB NHWC input, preprocessing in
the graph) and TorchScript, checks the ONNX with onnx.checker and ONNX Runtime against PyTorch
(max probability difference <= 1e-4, recorded in the manifest), and prints parameter count and
CPU latency of the trimmed model next to the untrimmed one. A ResNet-152 run gives the viewer's
second-pass classifier bundle (manifest training.role = "second-pass").

examples:
  endoview export runs/mnv3-f0 -o bundles/mobilenetv3-large-hyperkvasir
  endoview export runs/r152-f0 -o bundles/resnet152-hyperkvasir --images some/frames/
  endoview build-engine bundles/mobilenetv3-large-hyperkvasir --fp16
"""

DATA_EPILOG = """\
examples:
  endoview data fetch hyperkvasir ~/data/hyper-kvasir     # ~3.9 GB, resumes when run again
  endoview data fetch kvasir-seg ~/data/kvasir-seg
  endoview data counts --data ~/data/hyper-kvasir/labeled-images --split-csv ~/data/hyper-kvasir/2_fold_split.csv
"""


# --------------------------------------------------------------------------------------------
# train


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train models (classify: the hybrid-loss classifiers; "
                              "segment: the real-time polyp segmenter)",
                              description="Train the models endoview runs.")
    sub = p.add_subparsers(dest="train_command", metavar="TASK", required=True)
    c = sub.add_parser("classify", help="train a classifier with the hybrid loss (paper recipe)",
                       description="Train MobileNetV3-Large or ResNet-152 on HyperKvasir with the "
                       "hybrid loss, as in the paper.", epilog=TRAIN_EPILOG, formatter_class=RAW)
    c.add_argument("--data", type=Path, nargs="+", metavar="DIR",
                   help="one or more data folders, combined: HyperKvasir labeled-images folders (or plain "
                   "class folders) and Kvasir-SEG folders (its images are the polyp class)")
    c.add_argument("--split-csv", type=Path, help="official split file (file-name;class-name;split-index)")
    c.add_argument("--out", type=Path, help="run folder to write (with --cv: one sub-folder per run)")
    c.add_argument("--fold", type=fold_arg, metavar="{K,all}", help="held-out split-index (default 0), or 'all': train on every "
                   "fold and hold nothing out (the final model; its figures come from the cross-validation runs)")
    c.add_argument("--cv", type=int, metavar="N", help="train every fold 0..N-1 (hybrid and raw-only "
                   "baseline) and print the Table-1 mean rows")
    c.add_argument("--no-baseline", action="store_true", help="with --cv: skip the raw-only baseline")
    c.add_argument("--arch", choices=("mobilenet_v3_large", "resnet152"), help="default mobilenet_v3_large")
    c.add_argument("--heads", help="'all' (hybrid loss, default) or a comma list including raw; "
                   "'raw' is the single-head baseline")
    c.add_argument("--epochs", type=int, help="default 40")
    c.add_argument("--batch-size", type=int, help="global batch (default: 128 MobileNetV3, 32 ResNet-152)")
    c.add_argument("--lr", type=float, help="initial learning rate (default 0.003)")
    c.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    c.add_argument("--weight-decay", type=float, help="SGD weight decay (default 0; the paper states none)")
    c.add_argument("--milestones", type=int_list, help="epochs after which lr x0.1 (default 10,20,30)")
    c.add_argument("--weights", help="ImageNet weights: a local torchvision state-dict file, 'imagenet' "
                   "(download), 'none' (random init) or 'auto' (download where possible, default)")
    c.add_argument("--image-size", type=int, help="square model input side (default 224)")
    c.add_argument("--workers", type=int, help="data loader processes (default: min(8, CPUs))")
    c.add_argument("--seed", type=int, help="default 0")
    c.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    c.add_argument("--amp", choices=("auto", "on", "off"), help="mixed precision (default: on with CUDA)")
    c.add_argument("--steps-per-epoch", type=int, help="cap the steps per epoch (short runs)")
    c.add_argument("--optimizer", choices=("sgd", "adamw"), help="default sgd (the paper)")
    c.add_argument("--schedule", choices=("step", "cosine"),
                   help="step: x0.1 at the milestones (default, the paper); cosine: warm-up then cosine decay")
    c.add_argument("--warmup-epochs", type=int, help="linear warm-up epochs (default 0)")
    c.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (default 0)")
    c.add_argument("--ema", type=float, help="decay of a moving average of the weights, validated and "
                   "exported (default 0: none; 0.998 is a good value from random initialisation)")
    c.add_argument("--blur", type=float, help="share of each batch blurred (default 0.3)")
    c.add_argument("--augment-strength", type=float, help="scale of the affine and photometric augmentation "
                   "ranges, 0..1 (default 0.5; the segmenter trains with 1)")
    c.add_argument("--zoom", type=float, metavar="MAX", help="zoom in part of each batch by a factor drawn "
                   "log-uniformly from [1, MAX] about a random point of the polyp (Kvasir-SEG's mask) or, in an "
                   "image without one, of the visible field, 1..4, whatever "
                   "--augment-strength (default 1: off); against the close-up shortcut (scripts/zoom_check.py)")
    c.add_argument("--zoom-share", type=float, metavar="P", help="share of each batch zoomed in with --zoom, "
                   "0..1 (default 0.5)")
    c.add_argument("--white-balance", type=float, metavar="W", help="multiply each image's red, green and blue "
                   "by gains drawn log-uniformly from [exp(-W), exp(W)] (another endoscope's white balance), 0..0.7, "
                   "whatever --augment-strength (default 0: off)")
    c.add_argument("--exposure", type=float, metavar="E", help="raise each image to a gamma drawn "
                   "log-uniformly from [exp(-E), exp(E)] (another light source or exposure: darker, brighter), "
                   "0..1, whatever --augment-strength (default 0: the gamma range of --augment-strength, exp(±0.3 x it))")
    c.add_argument("--mask-loss", type=float, metavar="W", help="weight of a training-only polyp-mask head on "
                   "MobileNetV3's stride-16 features, learning Kvasir-SEG's masks and empty ones on polyp-free "
                   "classes (it teaches the trunk where a polyp is); dropped before export (default 0: off)")
    c.add_argument("--no-inset", dest="inset", action="store_false", default=None,
                   help="keep the scope-guide inset (default: blacked out in every image, as the "
                   "viewer does for bundles that say so)")
    c.add_argument("--bn-momentum", type=float, help="batch-norm running-statistics momentum (default 0.1)")
    c.add_argument("--no-recalibrate-bn", dest="recalibrate_bn", action="store_false", default=None,
                   help="keep the running batch-norm statistics (default: recomputed over the training "
                   "images after the last epoch)")
    c.add_argument("--cache-dir", type=Path, help="where decoded images are kept (default: <out>/data-cache)")
    c.add_argument("--threads", type=int, help="torch CPU threads (default: all CPUs)")
    c.add_argument("--config", type=Path, help="JSON file of defaults (e.g. a run's config.json)")
    c.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    c.add_argument("--force", action="store_true", help="replace an existing run in --out")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=run_train)
    from .seg.cli import add_segment_parser

    add_segment_parser(sub)
    return p


def train_config_from_args(args: argparse.Namespace):
    from .labels import parse_heads
    from .trainer import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict = {}
    if args.config is not None:
        loaded = read_config_file(args.config, fields | {"resolved"})
        values.update({k: v for k, v in loaded.items() if k in fields})
    apply_flags(values, args, fields)
    missing = [f"--{k.replace('_', '-')}" for k in ("data", "split_csv", "out") if not values.get(k)]
    if missing:
        raise TrainError(f"train classify needs {', '.join(missing)}")
    heads = values.get("heads", "all")
    try:
        values["heads"] = parse_heads(heads if isinstance(heads, str) else ",".join(heads))
    except ValueError as err:
        raise TrainError(f"--heads: {err}") from None
    if "milestones" in values:
        values["milestones"] = tuple(values["milestones"])
    if values.get("fold") == ALL_FOLDS:
        values["fold"] = None
    return TrainConfig(**values)


def run_train(args: argparse.Namespace) -> int:
    from .crossval import format_table1, run_cross_validation
    from .distributed import leave_process_group
    from .metrics import table1_header, table1_row
    from .trainer import train_classifier

    cfg = train_config_from_args(args)
    main = int(os.environ.get("RANK", "0")) == 0
    try:
        if args.cv:
            if cfg.fold is None:
                raise TrainError("--cv trains each fold in turn; leave out --fold all")
            if args.cv < 2:
                raise TrainError("--cv needs at least 2 folds")
            table = run_cross_validation(cfg, args.cv, baseline=not args.no_baseline, resume=args.resume,
                                         force=args.force)
            if main:
                print(json.dumps(table, indent=2) if args.json else format_table1(table))
            return 0
        summary = train_classifier(cfg, resume=args.resume, force=args.force)
    finally:
        leave_process_group()
    if main:
        if args.json:
            print(json.dumps({k: v for k, v in summary.items() if k != "metrics_full"}, indent=2))
        else:
            print(f"run folder: {summary['run']} ({summary['arch']}, heads {','.join(summary['heads'])}, "
                  f"weights: {summary['weights_source']})")
            if summary["metrics"]:
                print(table1_header())
                print(table1_row(f"{summary['arch']} {'+'.join(summary['heads'])}",
                                 f"held-out fold {summary['fold']}", summary["metrics"]))
    return 0


# --------------------------------------------------------------------------------------------
# eval


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="evaluate a model bundle or a training run on a fold",
                              description="Evaluate a classify bundle or a run folder on one fold of "
                              "the split (the paper's Table 1 columns).", epilog=EVAL_EPILOG,
                              formatter_class=RAW)
    p.add_argument("model", type=Path, help="bundle folder (manifest.json) or run folder (checkpoint-last.pt)")
    p.add_argument("--data", type=Path, nargs="+", metavar="DIR",
                   help="data folders (as train classify --data; default: the run's)")
    p.add_argument("--split-csv", type=Path, help="official split file")
    p.add_argument("--fold", type=int, help="split-index to evaluate on")
    p.add_argument("--out", type=Path, help="folder for confusion.png and metrics.json "
                   "(default: eval-fold<K> inside the model folder)")
    p.add_argument("--backend", default="onnxruntime", help="engine backend for a bundle (default onnxruntime)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--device", default="cpu", help="torch device for a run folder (default cpu)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run_eval)
    return p


def run_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load_dataset
    from .evaluate import evaluate_bundle, evaluate_run, is_bundle, write_report
    from .metrics import format_per_class, plot_confusion, table1_header, table1_row

    from .manifest import bundle_fold_note, fold_note

    model = Path(args.model).expanduser()
    bundle = is_bundle(model)
    data, split, fold = args.data, args.split_csv, args.fold
    if not bundle:
        from .checkpoint import load_checkpoint

        cfg = load_checkpoint(model)["config"]
        data = data or ([cfg["data"]] if isinstance(cfg["data"], str) else cfg["data"])
        split = split or Path(cfg["split_csv"])
        fold = cfg["fold"] if fold is None else fold
        if fold is None:
            raise TrainError(f"{model} trained on every fold (--fold all) and held none out: give --fold")
    if data is None or split is None or fold is None:
        raise TrainError("eval of a bundle needs --data, --split-csv and --fold")
    note = (bundle_fold_note(model, fold) if bundle
            else fold_note(model.name, {"training": {"heldout_fold": cfg["fold"]}}, fold))
    if note:
        print(note, file=sys.stderr)
    ds = load_dataset(data, split)
    samples = ds.fold(fold)
    if not samples:
        raise DataError(f"fold {fold} has no images under {data} (folds found: {ds.folds})")
    if bundle:
        metrics, info = evaluate_bundle(model, samples, batch_size=args.batch_size, workers=args.workers,
                                        backend=args.backend)
    else:
        metrics, info = evaluate_run(model, samples, batch_size=args.batch_size, workers=args.workers,
                                     device=args.device)
    out = args.out or (model / f"eval-fold{fold}")
    info = {**info, "data": [str(d) for d in data], "split_csv": str(split), "fold": fold}
    png = plot_confusion(np.array(metrics["confusion_matrix"]), metrics["labels"],
                         out / "confusion.png", title=f"{info['model']} - fold {fold}")
    write_report(metrics, info, out / "metrics.json")
    if args.json:
        print(json.dumps({**info, **metrics, "confusion_png": str(png) if png else None}, indent=2))
        return 0
    print(f"{info['model']}: fold {fold}, {metrics['n']} images, {metrics['classes_evaluated']} classes")
    print(table1_header())
    print(table1_row(model.name[:28], f"fold {fold}", metrics))
    print()
    print(format_per_class(metrics))
    print(f"\nconfusion matrix: {png or '(no matplotlib: not drawn)'}; metrics: {out / 'metrics.json'}")
    return 0


# --------------------------------------------------------------------------------------------
# export


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="trim a training run to its raw head and write a model bundle",
                              description="Trim a run to the raw head and export the bundle the "
                              "viewer loads (ONNX + TorchScript, self-checked).", epilog=EXPORT_EPILOG,
                              formatter_class=RAW)
    add_export_target(p, trained_by="endoview train classify")
    p.add_argument("--name", help="bundle name (default: <arch>-hyperkvasir-<hybrid|raw-only>-fold<K>)")
    p.add_argument("--role", choices=("fast", "second-pass"),
                   help="what the viewer uses it for (default: fast for MobileNetV3, second-pass for ResNet-152)")
    p.add_argument("--images", type=Path, nargs="+", help="real images (files or folders) for the parity "
                   "check (default: the run's held-out fold)")
    add_export_flags(p, latency_runs=10, latency_help="timed runs per latency figure")
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    from .export import export_run

    report = export_run(args.run, args.out, name=args.name, role=args.role, images=args.images,
                        torchscript=not args.no_torchscript, latency_runs=args.latency_runs,
                        threads=args.threads, force=args.force)
    print_export(report, args, {"parity": report.parity, "size": report.size, "cpu_latency_ms": report.latency_ms})
    return 0


# --------------------------------------------------------------------------------------------
# data


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="download datasets; count images per class and fold",
                              description="Dataset helpers.", epilog=DATA_EPILOG, formatter_class=RAW)
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="download, verify and unpack HyperKvasir or Kvasir-SEG (resumes)",
                       epilog=DATA_EPILOG, formatter_class=RAW)
    f.add_argument("dataset", choices=("hyperkvasir", "kvasir-seg"))
    f.add_argument("dir", type=Path, help="folder to download and unpack into")
    f.add_argument("--url", help="archive URL (default: the official one)")
    f.add_argument("--sha256", help="expected sha256 of the archive")
    f.add_argument("--split-url", help="hyperkvasir: URL of the 2-fold split file (default: the official one)")
    f.add_argument("--no-split", action="store_true", help="hyperkvasir: do not fetch the split file")
    f.add_argument("--delete-archive", action="store_true", help="delete the archive after unpacking")
    f.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=run_data_fetch)
    c = sub.add_parser("counts", help="images per class and fold (data matched with the split file)")
    c.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                   help="one or more data folders, combined (labeled-images folders, class folders, Kvasir-SEG)")
    c.add_argument("--split-csv", type=Path, required=True)
    c.set_defaults(func=run_data_counts)
    from .seg.cli import add_coco_parser

    add_coco_parser(sub)
    return p


def run_data_fetch(args: argparse.Namespace) -> int:
    from .fetch import SPLIT_URL, fetch

    split_url = None if args.no_split else (args.split_url or SPLIT_URL)
    info = fetch(args.dataset, args.dir, url=args.url, sha256=args.sha256, split_url=split_url,
                 keep_archive=not args.delete_archive, progress=not args.no_progress, timeout=args.timeout)
    state = "already fetched" if info.get("already") else "fetched"
    print(f"{args.dataset} {state}: {info['data']} ({info['contents']}); archive sha256 {info['sha256']}"
          f"{'' if info['verified'] else ' (no published checksum: recorded, not verified)'}")
    if info.get("split_csv"):
        print(f"split file: {info['split_csv']}")
    return 0


def run_data_counts(args: argparse.Namespace) -> int:
    from .data import format_counts, load_dataset

    print(format_counts(load_dataset(args.data, args.split_csv)))
    return 0


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """A parser with train/'s four subcommands only (``python -m train``, torchrun, tests)."""
    parser = argparse.ArgumentParser(prog="python -m train")
    parser.add_argument("-v", "--verbose", action="count", default=1)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (add_train_parser, add_eval_parser, add_export_parser, add_data_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engine.errors import EndoviewError

    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    rank = os.environ.get("RANK")
    fmt = f"%(levelname)s [rank {rank}] %(name)s: %(message)s" if rank else "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt)
    try:
        return int(args.func(args) or 0)
    except EndoviewError as exc:
        print(f"endoview: error: {exc}", file=sys.stderr)
        return exc.exit_code
