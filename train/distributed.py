"""Several processes of one ``train classify`` run: ``torchrun --nproc-per-node N -m train train classify ...``.

One process per GPU (NCCL on CUDA, gloo on the CPU), each told its rank by torchrun's environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); rank 0 evaluates, logs and writes the run folder. At
the end all ranks compare :func:`parameter_checksum` of their parameters.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import TrainError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group", rank, world, backend)
    return Dist(rank, world, local)


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def pick_device(spec: str, d: Dist) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise TrainError("--device cuda: torch here has no CUDA device; use --device cpu")
        return torch.device("cuda", d.local_rank)
    if spec != "cpu":
        raise TrainError(f"--device must be auto, cpu or cuda, not {spec!r}")
    return torch.device("cpu")


def parameter_checksum(model: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of the trainable parameters. Buffers (batch-norm statistics) are not
    included: each rank updates them on its own batch and DDP broadcasts rank 0's at each forward."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def leave_process_group() -> None:
    """Leave torchrun's process group, where this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
