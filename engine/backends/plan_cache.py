"""The TensorRT plan cache: where built engines live, how they are keyed, when one may be trusted.

A TensorRT plan is not portable: it is valid only for the exact ONNX model, GPU model, compute
capability, TensorRT version and precision it was built with, and it is built for one largest
batch and one builder workspace; all seven are the plan's key. Plans are stored outside the
bundle, in ``$ENDOVIEW_CACHE/engines/`` (default ``~/.cache/endoview/engines/``), as
``<key>.plan`` with a ``<key>.json`` sidecar holding the key fields and the plan's own sha256.
The runtime loads a plan only when its sidecar matches the current machine exactly; anything
else is stale or foreign and is rebuilt (``endoview build-engine``), never trusted.

TensorRT's timing cache (the measured speed of each kernel tactic, which makes later builds
faster) is kept beside the plans, one file per GPU model, compute capability and TensorRT
version (:func:`timing_cache_path`): timings from another GPU or TensorRT are no help.

Everything here is pure Python (no TensorRT) so that tests can exercise it anywhere.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import BackendError

log = logging.getLogger(__name__)

SCHEMA = "endoview-plan/2"  # 2: max_batch and workspace_mb joined the key
PRECISIONS = ("fp32", "fp16")
ENV_VAR = "ENDOVIEW_CACHE"
#: What a plan is built for unless asked otherwise (``endoview build-engine --max-batch/--workspace``).
DEFAULT_MAX_BATCH = 8
DEFAULT_WORKSPACE_MB = 2048


@dataclass(frozen=True)
class PlanKey:
    """Everything a TensorRT plan depends on. ``compute_capability`` is "major.minor";
    ``max_batch`` is the largest batch the plan's optimisation profile accepts and
    ``workspace_mb`` the builder's workspace (it limits which tactics the build may choose)."""

    onnx_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_mb: int = DEFAULT_WORKSPACE_MB

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if len(self.onnx_sha256) != 64:
            raise ValueError(f"onnx_sha256 must be 64 hex digits, not {self.onnx_sha256!r}")
        for name in ("max_batch", "workspace_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")

    def fields(self) -> dict[str, str]:
        return asdict(self)

    @property
    def digest(self) -> str:
        """sha256 over the canonical JSON of the key fields."""
        text = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def describe(self) -> str:
        return (
            f"{self.precision} plan for ONNX {self.onnx_sha256[:12]} on {self.gpu_name} "
            f"(sm {self.compute_capability}), TensorRT {self.tensorrt_version}, max batch "
            f"{self.max_batch}, workspace {self.workspace_mb} MB"
        )


def cache_root(env: dict[str, str] | None = None) -> Path:
    """The endoview cache folder: ``$ENDOVIEW_CACHE`` or ``$XDG_CACHE_HOME/endoview`` or
    ``~/.cache/endoview``."""
    env = os.environ if env is None else env
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "endoview"


def engines_dir(env: dict[str, str] | None = None) -> Path:
    """Where plans live: ``<cache root>/engines``."""
    return cache_root(env) / "engines"


def timing_cache_path(gpu_name: str, compute_capability: str, tensorrt_version: str,
                      folder: Path | None = None) -> Path:
    """The timing cache for one GPU model, compute capability and TensorRT version, in ``folder``
    (default :func:`engines_dir`): ``timing-<gpu>-sm<cc>-trt<version>.cache``."""
    folder = engines_dir() if folder is None else Path(folder)
    parts = (_slug(gpu_name), "sm" + _slug(compute_capability), "trt" + _slug(tensorrt_version))
    return folder / f"timing-{'-'.join(parts)}.cache"


def _slug(text: str) -> str:
    """``text`` as a file-name part: letters, digits, dots and underscores; the rest becomes "_"."""
    out = "".join(c if c.isascii() and (c.isalnum() or c in "._") else "_" for c in str(text).strip())
    return out.strip("._") or "unknown"


def plan_paths(key: PlanKey, folder: Path | None = None) -> tuple[Path, Path]:
    """(plan file, sidecar) for ``key`` in ``folder`` (default :func:`engines_dir`)."""
    folder = engines_dir() if folder is None else Path(folder)
    stem = key.digest[:32]
    return folder / f"{stem}.plan", folder / f"{stem}.json"


def sidecar_for(key: PlanKey, plan: bytes, **extra: Any) -> dict[str, Any]:
    """The sidecar dict written beside a plan."""
    return {
        "schema": SCHEMA,
        "key": key.fields(),
        "digest": key.digest,
        "plan_sha256": hashlib.sha256(plan).hexdigest(),
        "plan_bytes": len(plan),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def sidecar_mismatches(sidecar: Any, key: PlanKey) -> list[str]:
    """Why a sidecar does not vouch for a plan for ``key`` (empty list: it matches exactly)."""
    if not isinstance(sidecar, dict):
        return ["the sidecar is not a JSON object"]
    if sidecar.get("schema") != SCHEMA:
        return [f"the sidecar has schema {sidecar.get('schema')!r}, not {SCHEMA!r}"]
    stored = sidecar.get("key")
    if not isinstance(stored, dict):
        return ["the sidecar has no key"]
    reasons = []
    labels = {
        "onnx_sha256": "ONNX model",
        "gpu_name": "GPU",
        "compute_capability": "compute capability",
        "tensorrt_version": "TensorRT version",
        "precision": "precision",
        "max_batch": "max batch",
        "workspace_mb": "workspace (MB)",
    }
    for field, label in labels.items():
        want = getattr(key, field)
        got = stored.get(field)
        if got != want:
            reasons.append(f"it was built for {label} {got!r}, this is {want!r}")
    if not reasons and sidecar.get("digest") != key.digest:
        reasons.append("its key digest does not match its key fields")
    return reasons


def check_plan(key: PlanKey, folder: Path | None = None) -> tuple[Path | None, str]:
    """Look up the plan for ``key``: (path, "") when it exists and its sidecar and contents
    match exactly, else (None, why not)."""
    plan, side = plan_paths(key, folder)
    if not plan.is_file():
        return None, f"no plan in {plan.parent} ({key.describe()})"
    if not side.is_file():
        return None, f"{plan} has no sidecar {side.name}, so it cannot be trusted"
    try:
        sidecar = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"the sidecar {side} is unreadable ({err})"
    reasons = sidecar_mismatches(sidecar, key)
    if reasons:
        return None, f"{plan} is stale or foreign: " + "; ".join(reasons)
    with open(plan, "rb") as fh:
        actual = hashlib.file_digest(fh, "sha256").hexdigest()
    if actual != sidecar.get("plan_sha256"):
        return None, f"{plan} does not match the sha256 in its sidecar (truncated or modified)"
    return plan, ""


def write_plan(key: PlanKey, plan: bytes, folder: Path | None = None, **extra: Any) -> Path:
    """Store ``plan`` and its sidecar atomically (plan first, sidecar last); return the plan path."""
    plan_path, side_path = plan_paths(key, folder)
    try:
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        # Remove the old sidecar first: a crash between the two writes leaves a plan without a
        # sidecar (never trusted) rather than an old sidecar vouching for a new plan.
        side_path.unlink(missing_ok=True)
        atomic_write(plan_path, plan)
        text = json.dumps(sidecar_for(key, plan, **extra), indent=2) + "\n"
        atomic_write(side_path, text.encode("utf-8"))
    except OSError as err:
        raise BackendError(
            f"cannot write the TensorRT plan to {plan_path.parent}: {err}; set {ENV_VAR} to a writable folder"
        ) from err
    log.info("stored %s as %s", key.describe(), plan_path)
    return plan_path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so a
    reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
