"""``endoview train segment --arch cascade``: the paper's Cascade Mask R-CNN, trained by MMDetection 3.3.

The command line of the Cascade Mask R-CNN: :func:`config_from_args` reads the ``train segment``
flags into a :class:`~train.seg.cascade_config.CascadeConfig` (over ``--config``, or the run's own
settings on ``--resume``), :func:`run_cli` trains and prints the outcome, and :func:`main` is one
rank of a distributed run (``python -m train.seg.cascade RUN_DIR --launcher pytorch``, started by
``--gpus N``). The recipe and its MMDetection config are :mod:`train.seg.cascade_config`, the COCO
files :mod:`train.seg.cascade_data`, the training and its run folder :mod:`train.seg.cascade_train`,
the bundle :mod:`train.seg.cascade_export`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import TrainError
from ..options import apply_flags, read_config_file
from .cascade_config import SCORE_THR, SHRINK, CascadeConfig
from .cascade_train import RUN_JSON, read_run, run_runner, train_cascade

#: ``train segment`` flags of the real-time segmenters that mean nothing here.
UNET_ONLY = ("width", "warmup_epochs", "ema", "steps_per_epoch", "cache_dir", "stop_after")


def config_from_args(args: argparse.Namespace) -> CascadeConfig:
    """``train segment --arch cascade`` flags (over --config, or the run's own settings on --resume)."""
    unet_only = [f"--{n.replace('_', '-')}" for n in UNET_ONLY if getattr(args, n, None) is not None]
    if unet_only:
        raise TrainError(f"{', '.join(unet_only)}: not for --arch cascade (the real-time segmenters' settings)")
    fields = {f.name for f in dataclasses.fields(CascadeConfig)}
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(read_config_file(args.config, fields))
    if args.resume and args.out is not None and args.config is None and (Path(args.out) / RUN_JSON).is_file():
        values.update(read_run(Path(args.out).expanduser()).get("config", {}))
    apply_flags(values, args, fields - {"shrink"})
    if getattr(args, "shrink", False):
        values["shrink"] = True
        if getattr(args, "image_size", None) is None and not args.resume:
            values["image_size"] = SHRINK["image_size"]
    values.pop("progress", None)
    missing = [f"--{k}" for k in ("data", "out") if not values.get(k)]
    if missing:
        raise TrainError(f"train segment --arch cascade needs {', '.join(missing)}")
    return CascadeConfig.from_dict(values)


def run_cli(args: argparse.Namespace) -> int:
    cc = config_from_args(args)
    info = train_cascade(cc, resume=args.resume, force=args.force)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        val = info.get("val") or {}
        scores = (f"validation bbox mAP {val['bbox_mAP']:.3f}, segm mAP {val['segm_mAP']:.3f}"
                  if "bbox_mAP" in val and "segm_mAP" in val else "no validation mAP (no detection above the "
                  f"score threshold {SCORE_THR})")
        print(f"run folder: {cc.out} (Cascade Mask R-CNN, {cc.image_size} px, held-out fold {cc.fold}, "
              f"{'weights ' + info['weights'] if info['weights'] != 'random' else 'random initialisation'}): "
              f"{info.get('epochs_done', 0)} epochs, {info.get('iterations', 0)} iterations, {scores}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m train.seg.cascade RUN_DIR --launcher pytorch``: one rank of a distributed run."""
    from engine.errors import EndoviewError

    p = argparse.ArgumentParser(prog="python -m train.seg.cascade",
                                description="Train a prepared Cascade Mask R-CNN run folder (one process per GPU; "
                                "started by 'endoview train segment --arch cascade --gpus N').")
    p.add_argument("run", type=Path)
    p.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"), default="none")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_runner(args.run.expanduser().resolve(), resume=args.resume, launcher=args.launcher)
    except EndoviewError as exc:
        print(f"endoview: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
