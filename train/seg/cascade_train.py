"""Training a Cascade Mask R-CNN run with mmengine's Runner: the run folder, the starting weights, the launch.

Run folder: ``config.py`` (the resolved MMDetection config), ``run.json`` (arch, fold, data,
weights "coco:<sha256>" or "random", seed, epochs, times, iterations, the last validation mAP),
mmengine's ``epoch_N.pth`` checkpoints (the newest two) with ``last_checkpoint``, and one
``<timestamp>/`` folder of mmengine logs per session. ``--resume`` continues from the last
checkpoint (optimizer, schedule and message hub included). ``--gpus N`` (N > 1) runs
MMDetection's distributed launcher: ``python -m torch.distributed.run --nproc_per_node N -m
train.seg.cascade RUN_DIR --launcher pytorch``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.bundle import sha256_file

from ..errors import TrainError
from ..folders import check_new_run, start_run_dir
from .cascade_config import ARCH, CascadeConfig, build_config
from .cascade_data import resolve_data
from .config import check_fixed_on_resume

log = logging.getLogger(__name__)

CONFIG_PY = "config.py"
RUN_JSON = "run.json"
#: Settings that must not change when a run is resumed.
FIXED_ON_RESUME = ("fold", "data", "image_size", "seed", "limit", "shrink", "weights")


def read_run(run: Path) -> dict[str, Any]:
    p = run / RUN_JSON
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TrainError(f"{p} cannot be read ({err}); is {run} a 'train segment --arch cascade' run?") from err


def write_run(run: Path, info: dict[str, Any]) -> None:
    tmp = run / (RUN_JSON + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, run / RUN_JSON)


def is_cascade_run(run: str | os.PathLike[str]) -> bool:
    p = Path(run).expanduser() / RUN_JSON
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("arch") == ARCH
    except (OSError, json.JSONDecodeError):
        return False


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def last_checkpoint(run: Path) -> Path | None:
    marker = run / "last_checkpoint"
    if marker.is_file():
        p = Path(marker.read_text(encoding="utf-8").strip())
        p = p if p.is_absolute() else run / p
        if p.is_file():
            return p
    found = sorted(run.glob("epoch_*.pth"), key=lambda q: int(q.stem.split("_")[1]))
    return found[-1] if found else None


def _short_error(err: BaseException) -> str:
    """The informative line of a torch.load error (its weights-only explanation is pages long)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def weights_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state dict of a checkpoint file (``{"state_dict": ...}`` or a bare one); TrainError if it
    is not a torch file of tensors. Loaded with ``weights_only=True`` (plus mmengine's safe globals)."""
    from engine.backends.mmdet_compat import import_mmdet

    import_mmdet()
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise TrainError(f"--weights {p} does not exist; give a local COCO-pretrained Cascade Mask R-CNN "
                         "checkpoint (.pth) or leave --weights out for random initialisation")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises anything on a foreign file
        raise TrainError(f"--weights {p} cannot be loaded as a torch checkpoint of weights "
                         f"({_short_error(err)}); give an MMDetection .pth file") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise TrainError(f"--weights {p} holds no model weights (expected a dict of tensors or "
                         "{'state_dict': ...}, as MMDetection's checkpoints are)")
    return state


def check_weights_match(state: dict[str, Any], model, path: str) -> dict[str, int]:
    """How many tensors of ``state`` fit the model; TrainError when none do (not this architecture)."""
    own = model.state_dict()
    keys = [k[7:] if k.startswith("module.") else k for k in state]
    fits = [k in own and tuple(own[k].shape) == tuple(v.shape) for k, v in zip(keys, state.values())]
    if not any(fits):
        raise TrainError(f"--weights {path}: none of its {len(state)} tensors fits Cascade Mask R-CNN R50-FPN "
                         "(names or shapes differ); give an MMDetection cascade-mask-rcnn_r50_fpn checkpoint")
    return {"loaded": sum(fits), "skipped": len(fits) - sum(fits), "model_tensors": len(own),
            "skipped_names": [k for k, ok in zip(keys, fits) if not ok][:20]}


def train_cascade(cc: CascadeConfig, *, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Train (or continue) one Cascade Mask R-CNN run; returns run.json's contents."""
    cc.validate()
    from engine.backends.mmdet_compat import import_mmdet

    versions = import_mmdet()
    if cc.gpus > 1:
        import torch

        if torch.cuda.device_count() < cc.gpus:
            raise TrainError(f"--gpus {cc.gpus}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                             "MMDetection's distributed launcher needs one per process")
    run = Path(cc.out).expanduser().resolve()
    if resume:
        info = read_run(run)
        old = info["config"]
        check_fixed_on_resume(old, cc, FIXED_ON_RESUME, run)
        if last_checkpoint(run) is None or not info.get("iterations"):
            raise TrainError(f"--resume: {run} has not trained an epoch yet (no epoch_N.pth with an optimizer "
                             "state); start it again with --force")
        if info.get("epochs_done", 0) >= cc.epochs:
            raise TrainError(f"--resume: {run} has already trained {info['epochs_done']} of {cc.epochs} epochs; "
                             "raise --epochs to train on")
    else:
        check_new_run(run, force=force)
        weights = "random"
        if cc.weights:
            weights_state(cc.weights)  # before anything in --out is touched
            weights = f"coco:{sha256_file(Path(cc.weights).expanduser())}"
        start_run_dir(run)
        info = {"arch": ARCH, "fold": cc.fold, "data": str(Path(cc.data).expanduser().resolve()), "weights": weights,
                "weights_file": str(Path(cc.weights).expanduser().resolve()) if cc.weights else None,
                "seed": cc.seed, "epochs": cc.epochs, "created": _now(), "sessions": []}
    data = resolve_data(cc, run)
    cfg = build_config(cc, data, run)
    cfg.dump(str(run / CONFIG_PY))
    info.update(config=cc.to_dict(), epochs=cc.epochs, versions=versions,
                coco={"images": str(data.images), "train": [str(p) for p in data.train], "val": str(data.val)})
    write_run(run, info)
    log.info("Cascade Mask R-CNN run %s: fold %d held out, %s, %d epochs at %d px, batch %d x %d GPU(s), lr %g%s",
             run, cc.fold, "COCO-pretrained weights " + info["weights"] if cc.weights else "random initialisation",
             cc.epochs, cc.image_size, cc.batch_size, cc.gpus, cc.lr, " (shrunk for a quick run)" if cc.shrink else "")
    if cc.gpus > 1:
        _launch_distributed(run, cc.gpus, resume=resume)
    else:
        run_runner(run, resume=resume, threads=cc.threads)
    return read_run(run)


def _launch_distributed(run: Path, gpus: int, *, resume: bool) -> None:
    """MMDetection's own distributed launcher: one process per GPU, launcher='pytorch'."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}",
           f"--master_port={os.environ.get('MASTER_PORT', '29500')}", "-m", "train.seg.cascade", str(run),
           "--launcher", "pytorch"] + (["--resume"] if resume else [])
    log.info("launching %d processes: %s", gpus, " ".join(cmd))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise TrainError(f"distributed training of {run} failed (exit code {proc.returncode}); its log is in "
                         f"{run}/<timestamp>/<timestamp>.log")


def _val_metrics(message_hub) -> dict[str, float]:
    out = {}
    for key, buf in message_hub.log_scalars.items():
        if key.startswith("val/coco/"):
            out[key[len("val/coco/"):]] = float(buf.current())
    return out


def run_runner(run: Path, *, resume: bool = False, launcher: str = "none", threads: int = 0) -> None:
    """Build mmengine's Runner from RUN/config.py and train; rank 0 records the outcome in run.json."""
    from engine.backends.mmdet_compat import import_mmdet

    import_mmdet()
    import torch
    from mmengine.config import Config
    from mmengine.logging import print_log
    from mmengine.runner import Runner

    if threads:
        torch.set_num_threads(threads)
    info = read_run(run)
    cfg = Config.fromfile(str(run / CONFIG_PY))
    cfg.launcher = launcher
    if resume:
        cfg.resume, cfg.load_from = True, None  # mmengine finds RUN/last_checkpoint
    started, t0 = _now(), time.perf_counter()
    runner = Runner.from_cfg(cfg)
    rank0 = runner.rank == 0
    weights_note = "random initialisation (no pretrained weights)"
    match = None
    if not resume and cfg.load_from:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        match = check_weights_match(weights_state(cfg.load_from), model, cfg.load_from)
        weights_note = (f"COCO-pretrained weights {cfg.load_from} ({info['weights']}): {match['loaded']} of the "
                        f"model's {match['model_tensors']} tensors load; {match['skipped']} do not fit (the one-class "
                        f"heads) and are skipped: {', '.join(match['skipped_names'])}")
    elif resume:
        weights_note = f"resumed from {last_checkpoint(run)} (started from {info['weights']})"
    print_log(f"endoview: {weights_note}", logger="current", level=logging.INFO)
    start_iter = int(info.get("iterations", 0)) if resume else 0
    runner.train()
    # after train(): runner.iter counts iterations over all sessions
    iters, epochs_done = int(runner.iter), int(runner.epoch)
    if not rank0:
        return
    if last_checkpoint(run) is None:  # 0 epochs: keep the initial weights so the run can be exported
        runner.save_checkpoint(str(run), "epoch_0.pth", save_optimizer=False, save_param_scheduler=False)
        (run / "last_checkpoint").write_text(str(run / "epoch_0.pth"), encoding="utf-8")
    info = read_run(run)
    session = {"started": started, "finished": _now(), "seconds": round(time.perf_counter() - t0, 1),
               "resumed": resume, "start_iter": start_iter, "iterations": iters, "epochs": epochs_done,
               "launcher": launcher, "world_size": runner.world_size}
    if match:
        session["weights_match"] = match
    info["sessions"].append(session)
    info.update(iterations=iters, epochs_done=epochs_done, last_checkpoint=str(last_checkpoint(run)),
                finished=session["finished"])
    metrics = _val_metrics(runner.message_hub)
    if metrics:
        info["val"] = metrics
    write_run(run, info)
