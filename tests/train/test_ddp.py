"""torchrun with two CPU processes (gloo): DistributedDataParallel keeps both ranks in step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_two_gloo_processes_agree(synthetic, tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo distributed backend")
    data, split = synthetic
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "train", "train", "classify", "--data", str(data), "--split-csv", str(split),
           "--out", str(out), "--epochs", "1", "--batch-size", "8", "--image-size", "32",
           "--workers", "0", "--weights", "none", "--device", "cpu", "--steps-per-epoch", "2",
           "--no-progress", "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    summary = json.loads((out / "summary.json").read_text())
    ddp = summary["ddp"]
    assert ddp["world_size"] == 2 and ddp["agree"]
    assert len(ddp["parameter_checksums"]) == 2 and len(set(ddp["parameter_checksums"])) == 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resolved"]["world_size"] == 2 and cfg["resolved"]["batch_per_process"] == 4
    assert "[rank 1]" in proc.stderr and "[rank 0]" in proc.stderr
    # the parameters moved: both ranks trained, not just loaded the same initial weights
    import torch

    from train.checkpoint import load_checkpoint, model_from_checkpoint
    from train.models import build_model
    from train.distributed import parameter_checksum

    torch.manual_seed(0)
    start, _ = build_model("mobilenet_v3_large", weights="none", announce=False)
    trained = model_from_checkpoint(load_checkpoint(out))
    assert parameter_checksum(trained) == ddp["parameter_checksums"][0]
    assert parameter_checksum(trained) != parameter_checksum(start)
