"""What this machine offers for inference, for ``endoview info``: onnxruntime's version and
execution providers, and the GPUs (through torch when it is installed, else nvidia-smi)."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
from typing import Any

log = logging.getLogger(__name__)


def onnxruntime_info() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError as err:
        return {"version": None, "error": str(err)}
    return {"version": ort.__version__, "providers": ort.get_available_providers(), "device": ort.get_device()}


def gpus() -> dict[str, Any]:
    """GPUs via torch (when installed) else nvidia-smi; never fails."""
    try:
        has_torch = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        has_torch = False
    if has_torch:
        try:
            import torch

            if torch.cuda.is_available():
                devs = []
                for i in range(torch.cuda.device_count()):
                    props = torch.cuda.get_device_properties(i)
                    devs.append({
                        "index": i,
                        "name": props.name,
                        "compute_capability": f"{props.major}.{props.minor}",
                        "memory_mib": props.total_memory // (1 << 20),
                    })
                return {"source": "torch", "devices": devs}
        except (ImportError, RuntimeError, OSError) as err:
            log.debug("torch could not list GPUs: %s", err)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index,name,compute_cap,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError) as err:
            return {"source": "nvidia-smi", "devices": [], "error": str(err)}
        devs = []
        for line in out.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 4:
                devs.append({"index": int(parts[0]), "name": parts[1], "compute_capability": parts[2],
                             "memory_mib": int(float(parts[3])) if parts[3].replace(".", "").isdigit() else None})
        return {"source": "nvidia-smi", "devices": devs}
    return {"source": None, "devices": []}
