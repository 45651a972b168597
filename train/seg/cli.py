"""Console subcommands of the segmentation work: ``train segment``, ``export-seg``, ``eval-seg``.

``add_segment_parser(train_subparsers)`` hangs ``segment`` under ``endoview train`` (train/cli.py
calls it); ``add_export_parser`` and ``add_eval_parser`` are the ``endoview.commands`` entry points
``export-seg`` and ``eval-seg``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import TrainError
from ..options import (ALL_FOLDS, RAW, add_export_flags, add_export_target, apply_flags, fold_arg, print_export,
                       read_config_file)

SEGMENT_EPILOG = """\
A real-time polyp segmenter trained from random weights on Kvasir-SEG (HyperKvasir's 1,000
segmented polyps) with the official 2-fold split. --fold K holds out split-index K (validated
every epoch; Dice per image, averaged) and trains on the other: the model trained on fold 0 is
--fold 1. --data is the kvasir-seg folder (or the folder holding it); the mapping and split files
are found beside it as in ../shared/data, or given with --mapping-csv and --split-csv.

examples:
  endoview train segment --data ../shared/data/kvasir-seg --fold 1 --out runs/unet-f0
  endoview train segment --data ../shared/data/kvasir-seg --fold 1 --out runs/unet-f0 --resume
  endoview train segment ... --arch lraspp --image-size 224 --out runs/lraspp-f0
  endoview export-seg runs/unet-f0 -o bundles/polyp-unet
  endoview eval-seg bundles/polyp-unet --images kvasir-seg/images --masks kvasir-seg/masks --fold 1
"""


def add_segment_parser(train_sub) -> argparse.ArgumentParser:
    from .config import ALL_ARCHS, SegTrainConfig

    d = SegTrainConfig(data="", out="")
    c = train_sub.add_parser("segment", help="train the real-time polyp segmenter (Kvasir-SEG)",
                             description="Train the real-time polyp segmenter from random weights.",
                             epilog=SEGMENT_EPILOG, formatter_class=RAW)
    c.add_argument("--data", type=Path, help="the kvasir-seg folder (images/, masks/)")
    c.add_argument("--out", type=Path, help="run folder to write")
    c.add_argument("--fold", type=fold_arg, help=f"held-out split-index (default {d.fold}: train on fold 0), or "
                   "'all': train on every image of every fold, nothing held out or validated (the final model; "
                   "its figures come from the cross-validation runs: python -m train.seg.ship --final)")
    c.add_argument("--arch", choices=ALL_ARCHS, help=f"default {d.arch}; cascade: the paper's Cascade Mask "
                   "R-CNN second pass (MMDetection, the seg extra)")
    c.add_argument("--width", type=int, help=f"unet: channels of the first level (default {d.width})")
    c.add_argument("--image-size", type=int, help=f"square model input side (default {d.image_size})")
    c.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    c.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    c.add_argument("--lr", type=float, help=f"peak AdamW learning rate (default {d.lr})")
    c.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay}")
    c.add_argument("--warmup-epochs", type=int, help=f"default {d.warmup_epochs}")
    c.add_argument("--ema", type=float, help=f"weight EMA decay (default {d.ema})")
    c.add_argument("--seed", type=int, help=f"default {d.seed}")
    c.add_argument("--threads", type=int, help="torch CPU threads (default: all CPUs)")
    c.add_argument("--limit", type=int, help="use only the first N images of each fold (short runs)")
    c.add_argument("--steps-per-epoch", type=int, help="cap the steps per epoch (short runs)")
    c.add_argument("--negatives", type=Path, nargs="+", metavar="DIR",
                   help="polyp-free image folders (HyperKvasir labeled-images layout or class folders; folds "
                   "from the split file), trained as empty masks so the model learns what is not a polyp")
    c.add_argument("--no-inset", dest="inset", action="store_false", default=None,
                   help="keep the scope-guide inset (default: blacked out in every image)")
    c.add_argument("--val-every", type=int, metavar="N", help="validate every N epochs and after the last (default 1)")
    c.add_argument("--split-csv", type=Path, help="official split file (default: found beside --data)")
    c.add_argument("--mapping-csv", type=Path, help="kvasirseg_to_hyperkvasir_uuid_by_bbox.csv")
    c.add_argument("--cache-dir", type=Path, help="where decoded images are cached (default RUN_DIR/data-cache)")
    c.add_argument("--config", type=Path, help="JSON file of defaults (e.g. a run's config.json)")
    c.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    c.add_argument("--stop-after", type=int, metavar="N", help="train at most N epochs now, then stop "
                   "(resumable; for sessions with a time limit)")
    c.add_argument("--force", action="store_true", help="replace an existing run in --out")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    g = c.add_argument_group("--arch cascade", "Cascade Mask R-CNN (MMDetection 3.3); --data may also be the "
                             "COCO folder of 'endoview data kvasir-coco'; defaults are the paper's (1024 px, "
                             "20 epochs, batch 2, lr 0.004)")
    g.add_argument("--weights", help="local COCO-pretrained checkpoint (.pth); default: random initialisation")
    g.add_argument("--gpus", type=int, help="GPUs: N > 1 runs MMDetection's distributed launcher (torch.distributed.run)")
    g.add_argument("--workers", type=int, help="data loader processes (default 2)")
    g.add_argument("--shrink", action="store_true", help="tests and CPUs: 128 px (unless --image-size), few "
                   "proposals and RoI samples, log every iteration")
    c.set_defaults(func=run_segment)
    return c


def segment_config_from_args(args: argparse.Namespace):
    import dataclasses

    from .config import SegTrainConfig

    fields = {f.name for f in dataclasses.fields(SegTrainConfig)}
    values: dict = {}
    if args.config is not None:
        values.update(read_config_file(args.config, fields))
    if args.resume and args.out is not None and args.config is None and (Path(args.out) / "config.json").is_file():
        # a resumed run keeps its own settings unless a flag changes them
        values.update(json.loads((Path(args.out) / "config.json").read_text(encoding="utf-8")))
    apply_flags(values, args, fields)
    if values.get("fold") == ALL_FOLDS:
        values["fold"] = None
    missing = [f"--{k}" for k in ("data", "out") if not values.get(k)]
    if missing:
        raise TrainError(f"train segment needs {', '.join(missing)}")
    return SegTrainConfig(**values)


def _is_cascade(args: argparse.Namespace) -> bool:
    from .cascade_config import ARCH
    from .cascade_train import is_cascade_run

    if args.arch is not None:
        return args.arch == ARCH
    return bool(args.resume and args.out is not None and is_cascade_run(args.out))


def run_segment(args: argparse.Namespace) -> int:
    if _is_cascade(args):
        from .cascade import run_cli

        if args.fold == ALL_FOLDS:
            raise TrainError("--fold all trains the real-time segmenters (unet, lraspp), not --arch cascade")

        return run_cli(args)
    given = [f"--{n}" for n in ("weights", "gpus", "workers") if getattr(args, n) is not None]
    given += ["--shrink"] if args.shrink else []
    if given:
        raise TrainError(f"{', '.join(given)}: only for --arch cascade")
    from .trainer import train_segmenter

    cfg = segment_config_from_args(args)
    summary = train_segmenter(cfg, resume=args.resume, force=args.force, stop_after=args.stop_after)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        last = summary["last"] or {}
        if summary["fold"] is None:
            print(f"run folder: {summary['run']} ({summary['arch']}, {summary['image_size']} px, every fold, "
                  f"nothing held out, random initialisation): {summary['epochs']} epochs, loss "
                  f"{last.get('train_loss', float('nan')):.4f}")
        else:
            print(f"run folder: {summary['run']} ({summary['arch']}, {summary['image_size']} px, held-out fold "
                  f"{summary['fold']}, random initialisation): {summary['epochs']} epochs, validation Dice "
                  f"{last.get('val_dice', float('nan')):.4f} (best {summary['best_val_dice']:.4f})")
    return 0


def add_coco_parser(data_sub) -> argparse.ArgumentParser:
    """``endoview data kvasir-coco DIR --out OUT``: COCO instance annotations per official fold."""
    c = data_sub.add_parser("kvasir-coco", help="Kvasir-SEG as COCO instances per official fold (MMDetection)",
                            description="Write OUT/images/*.jpg (black border masked as in the viewer) and "
                            "OUT/annotations/fold<K>.json: one instance per connected region of each mask "
                            "(uncompressed RLE), boxes checked against kavsir_bboxes.json.")
    c.add_argument("data", type=Path, help="the kvasir-seg folder (images/, masks/)")
    c.add_argument("--out", type=Path, required=True, help="folder to write")
    c.add_argument("--split-csv", type=Path, help="official split file (default: found beside DATA)")
    c.add_argument("--mapping-csv", type=Path, help="kvasirseg_to_hyperkvasir_uuid_by_bbox.csv")
    c.add_argument("--no-masking", action="store_true", help="keep the black border's contents (burned-in text)")
    c.set_defaults(func=run_coco)
    return c


def run_coco(args: argparse.Namespace) -> int:
    from .coco import write_coco

    files = write_coco(args.data, args.out, split_csv=args.split_csv, mapping_csv=args.mapping_csv,
                       masking=not args.no_masking)
    for k, path in files.items():
        info = json.loads(path.read_text(encoding="utf-8"))["info"]
        c = info["bbox_check"]
        print(f"fold {k}: {path} ({info['images']} images, {info['instances']} instances; {c['matched']} of "
              f"{c['checked']} regions of >= {c['min_area']} px match a kavsir_bboxes.json box)")
    return 0


# --------------------------------------------------------------------------------------------
# export-seg


EXPORT_EPILOG = """\
Exports the run's EMA weights of its best epoch (--checkpoint last: the last) as a segment bundle:
model.onnx (uint8 RGB NHWC in, "mask" N x 1 x H x W probabilities out, preprocessing in the graph)
and model.torchscript.pt; checks ONNX Runtime and TorchScript against PyTorch (<= 1e-4) and
records the parity, the run's validation Dice and the CPU latency in the manifest. Use the bundle
as the viewer's model: --model BUNDLE, or [model] bundle in the config.

examples:
  endoview export-seg runs/unet-f0 -o bundles/polyp-unet
  endoview annotate demo -o demo.mp4 --model bundles/polyp-unet
"""


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export-seg", help="write a segment bundle from a 'train segment' run",
                              description="Export the real-time polyp segmenter as a self-checked bundle.",
                              epilog=EXPORT_EPILOG, formatter_class=RAW)
    add_export_target(p, trained_by="endoview train segment")
    p.add_argument("--name", help="bundle name (default: polyp-<arch>-<size>-kvasir-seg-heldout<K>)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which epoch's weights (default: best validation Dice)")
    add_export_flags(p, latency_runs=50, latency_help="timed runs for the latency")
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    from .export import export_segmenter

    report = export_segmenter(args.run, args.out, name=args.name, checkpoint=args.checkpoint,
                              torchscript=not args.no_torchscript, latency_runs=args.latency_runs,
                              threads=args.threads, force=args.force)
    print_export(report, args, {"parity": report.parity, "cpu_latency_ms": report.latency_ms,
                                "parameters": report.parameters})
    return 0


# --------------------------------------------------------------------------------------------
# eval-seg


EVAL_EPILOG = """\
Runs the bundle as the viewer does (content area, model input, engine backend, mask mapped back to
the frame; an instances bundle, the Cascade Mask R-CNN, runs through MMDetection on the field's
crop) and prints the paper's Table 2 columns: Jaccard, F1 (Dice), recall, precision, per
image on the union of predicted masks, averaged over images (an empty prediction on a polyp image
scores 0), and frames per second (model inference, batch 1; and the whole per-frame path).
--fold K keeps the images of one official fold (Kvasir-SEG layout: the mapping and split files
are found beside the images' parent folder, as in ../shared/data).

examples:
  endoview eval-seg bundles/polyp-unet --images kvasir-seg/images --masks kvasir-seg/masks --fold 1
  endoview eval-seg bundles/polyp-unet --images frames/ --masks masks/ --json
"""


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval-seg", help="Jaccard, Dice, recall, precision and FPS of a segment bundle",
                              description="Evaluate a segment bundle on images with ground-truth masks.",
                              epilog=EVAL_EPILOG, formatter_class=RAW)
    p.add_argument("bundle", type=Path, help="segment bundle folder (manifest.json)")
    p.add_argument("--images", type=Path, required=True, help="folder of images")
    p.add_argument("--masks", type=Path, required=True, help="folder of masks, same file stems (threshold 128)")
    p.add_argument("--fold", type=int, help="only the images of this official fold (Kvasir-SEG)")
    p.add_argument("--split-csv", type=Path, help="with --fold: the official split file")
    p.add_argument("--mapping-csv", type=Path, help="with --fold: kvasirseg_to_hyperkvasir_uuid_by_bbox.csv")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--backend", default="onnxruntime", help="engine backend (default onnxruntime)")
    p.add_argument("--threads", type=int, help="backend CPU threads")
    p.add_argument("--precision", choices=("auto", "fp32"), default="auto",
                   help="onnxruntime: auto (default) runs a bundle's int8 model on the CPU where it has one, as "
                   "the viewer does; fp32 the exported model")
    p.add_argument("--device", help="instances bundles (Cascade Mask R-CNN): cpu or cuda (default: cuda when "
                   "available)")
    p.add_argument("--negatives", type=Path, nargs="+", metavar="DIR",
                   help="polyp-free images (folders, searched recursively; with --fold only that fold's, by "
                   "the split file): adds image-level sensitivity, specificity, AUROC and false alarms per "
                   "minute for the segmenter, the classifier and their combined verdict")
    p.add_argument("--classifier", type=Path, metavar="BUNDLE",
                   help="with --negatives: the classify bundle the viewer runs beside the segmenter")
    p.add_argument("--roc", type=Path, metavar="PNG", help="with --negatives: where to draw the ROC curves "
                   "(default: roc.png beside --out, else none)")
    p.add_argument("--out", type=Path, help="also write the metrics as JSON to this file")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help='print {"jaccard", "dice", "recall", "precision", '
                   '"fps", "images", ...} as JSON; with --negatives also "sensitivity", "specificity", '
                   '"auroc", "false_alarms_per_minute" and "by_model"')
    p.set_defaults(func=run_eval)
    return p


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_bundle, find_pairs, fold_names, format_table, write_json

    names = None
    if args.fold is not None:
        names = fold_names(Path(args.images).expanduser(), args.fold, args.split_csv, args.mapping_csv)
    pairs = find_pairs(args.images, args.masks, names)
    if args.limit:
        pairs = pairs[:args.limit]
    if args.classifier is not None and not args.negatives:
        raise TrainError("--classifier needs --negatives (image-level figures)")
    from ..manifest import bundle_fold_note

    for model in (args.bundle, args.classifier):
        note = bundle_fold_note(model, args.fold) if model is not None else None
        if note:
            print(note, file=sys.stderr)
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    m = evaluate_bundle(args.bundle, pairs, backend=args.backend, threads=args.threads, device=args.device,
                        progress=progress, precision=args.precision)
    if args.fold is not None:
        m["fold"] = args.fold
    detection = None
    if args.negatives:
        from . import detect_eval

        negatives = detect_eval.image_files(args.negatives, _fold_file_names(args) if args.fold is not None else None)
        detection = detect_eval.evaluate_detection(args.bundle, [p.image for p in pairs], negatives,
                                                   classifier=args.classifier, backend=args.backend,
                                                   threads=args.threads, progress=progress,
                                                   precision=args.precision)
        roc = args.roc or (args.out.with_name("roc.png") if args.out else None)
        if roc is not None:
            detection["roc_png"] = str(detect_eval.plot_roc(
                detection, roc, title=f"{m['model']}" + (f" fold {args.fold}" if args.fold is not None else "")))
        m.update(detect_eval.public(detection))
    if args.out:
        write_json(m, args.out)
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        print(format_table(m, f"{m['model']}" + (f" fold {args.fold}" if args.fold is not None else "")))
        if detection is not None:
            print(detect_eval.format_detection(detection))
            if detection.get("roc_png"):
                print(f"ROC curves: {detection['roc_png']}")
    return 0


def _fold_file_names(args: argparse.Namespace) -> set[str]:
    """File names of --fold's images in the split file (for the polyp-free images)."""
    from ..split import read_split
    from .data import SPLIT_CANDIDATES, _find

    split = args.split_csv or _find(Path(args.images).expanduser().parent, None, SPLIT_CANDIDATES, "official split file")
    return {name for name, row in read_split(split).items() if row.fold == args.fold}


def main(argv: list[str] | None = None) -> int:
    """``python -m train.seg.cli export-seg|eval-seg ...`` (without the entry points)."""
    import logging

    from engine.errors import EndoviewError

    parser = argparse.ArgumentParser(prog="python -m train.seg.cli")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_export_parser(sub)
    add_eval_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except EndoviewError as exc:
        print(f"endoview: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
