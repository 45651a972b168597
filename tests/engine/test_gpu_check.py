"""scripts/gpu-check.sh: the no-GPU path for real (from a copy of the scripts, no venv, python3 from
PATH), and the parts' plumbing with ``--device cpu``. The GPU path itself needs an NVIDIA machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def _has_nvidia_gpu() -> bool:
    sys.path.insert(0, str(SCRIPTS))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPTS))
    return gpu_check.detect_gpu()[0] is not None


@pytest.fixture
def copied_tree(tmp_path: Path) -> Path:
    """The two files gpu-check needs on a machine without a GPU, copied as a working tree would be."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    for name in ("gpu-check.sh", "gpu_check.py"):
        shutil.copy2(SCRIPTS / name, tree / "scripts" / name)
    return tree


def _bare_env(tmp_path: Path, extra_bin: dict[str, str] | None = None) -> tuple[dict[str, str], Path]:
    """HOME without an endoview venv, PATH = a folder with a python3 shim (which leaves a mark when
    used) and any ``extra_bin`` scripts, then /usr/bin:/bin."""
    home, bin_dir, mark = tmp_path / "home", tmp_path / "bin", tmp_path / "python3-was-used"
    home.mkdir()
    bin_dir.mkdir()
    shim = bin_dir / "python3"
    shim.write_text(f'#!/bin/sh\ntouch "{mark}"\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    for name, text in (extra_bin or {}).items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    return env, mark


def _run(tree: Path, env: dict[str, str], out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(tree / "scripts" / "gpu-check.sh"), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_no_gpu_writes_null_and_exits_0(copied_tree: Path, tmp_path: Path) -> None:
    if _has_nvidia_gpu():
        pytest.skip("this machine has an NVIDIA GPU: the no-GPU path does not run here")
    env, mark = _bare_env(tmp_path)
    proc = _run(copied_tree, env, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no NVIDIA GPU here (no nvidia-smi on PATH; ")
    assert lines[0].endswith(f"nothing to check; wrote {tmp_path / 'out' / 'gpu-check.json'}")
    assert json.loads((tmp_path / "out" / "gpu-check.json").read_text()) == {"gpu": None}
    assert mark.exists(), "without the venv, gpu-check must use python3 from PATH"
    assert proc.stderr == ""


def test_no_gpu_with_a_broken_nvidia_smi(copied_tree: Path, tmp_path: Path) -> None:
    """nvidia-smi installed but no driver (a common container state) is no GPU too, and says so."""
    if _has_nvidia_gpu():
        pytest.skip("this machine has an NVIDIA GPU")
    smi = ("#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\n"
           "exit 9\n")
    env, _ = _bare_env(tmp_path, {"nvidia-smi": smi})
    proc = _run(copied_tree, env, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gpu-check: no NVIDIA GPU here (nvidia-smi exited 9: NVIDIA-SMI has failed "
                                  "because it couldn't communicate with the NVIDIA driver.; ")
    assert json.loads((tmp_path / "out" / "gpu-check.json").read_text()) == {"gpu": None}


def test_parts_plumbing_on_the_cpu(tmp_path: Path) -> None:
    """``--device cpu`` runs the env and contract parts on the CPU: each part in its own process,
    the JSON and the table, and every case that cannot run here says why."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), "--out", str(tmp_path / "out"),
                           "--device", "cpu", "--parts", "contract,env"],
                          env=env, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert proc.returncode == 0, (proc.stdout, proc.stderr, report)
    assert report["schema"] == "endoview-gpu-check/1" and list(report["parts"]) == ["env", "contract"]
    env_part, contract = report["parts"]["env"], report["parts"]["contract"]
    assert env_part["status"] == "ok" and env_part["backends"]["onnxruntime"]["available"]
    cases = contract["cases"]
    assert set(cases) == {"torch-fp32", "torch-fp32-cuda-graphs", "torch-fp16", "torch-fp16-cuda-graphs",
                          "onnxruntime-cuda", "tensorrt-fp32", "tensorrt-fp16"}
    for name, case in cases.items():
        assert case["status"] in ("ok", "skipped"), (name, case)
        if case["status"] == "skipped":
            assert case["reason"], name
    assert cases["onnxruntime-cuda"]["reason"] == "--device cpu"
    assert cases["tensorrt-fp32"]["reason"] == "--device cpu: TensorRT runs only on CUDA"
    try:
        import torch  # noqa: F401
    except ImportError:
        assert cases["torch-fp32"]["status"] == "skipped"
    else:
        assert cases["torch-fp32"]["status"] == "ok"
        assert cases["torch-fp32"]["figures"]["atol"] == 1e-5
    table = proc.stdout.splitlines()
    assert table[-3].split() == ["part", "status", "seconds", "summary"]
    assert table[-2].startswith("env       ok") and table[-1].startswith("contract  ok")


def test_unknown_part_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), "--out", str(tmp_path), "--parts", "env,nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "gpu-check: error: unknown part(s) nope; choose from env, plans, contract, latency, bench, cascade")
