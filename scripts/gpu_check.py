"""gpu-check: what endoview's GPU paths do on this NVIDIA machine, in one command.

Run ``scripts/gpu-check.sh [--out DIR]`` (it picks the Python: endoview's venv when there is one,
else ``python3`` from PATH, with this checkout on PYTHONPATH). It installs nothing and needs no
network. Where PyTorch with CUDA, onnxruntime and CuPy are installed and TensorRT or pycuda are
not, it runs what it can and says, part by part, why the rest cannot run.

Parts, each in its own subprocess with a time limit (a crash or hang in one costs only that part):

- ``env``: the GPUs, driver and CUDA versions (driver API, torch's CUDA and cuDNN, CuPy's runtime),
  and which of torch, onnxruntime (providers), TensorRT, pycuda, CuPy and mmcv load, or why not.
- ``plans``: with TensorRT, build each shipped bundle's plan (fp32 and fp16) into ``DIR/cache``
  and time the builds.
- ``contract``: the backend contract (``tests/backend_contract.py``, the same checks and
  tolerances as ``tests/engine/test_backends.py``) on CUDA: the torch backend in fp32 and fp16
  (each also with CUDA graphs), onnxruntime's CUDA provider, TensorRT fp32 and fp16 (the tiny
  models, and in FP16 the shipped bundles too); FP16 is judged on real Kvasir-SEG images when
  ``$ENDOVIEW_DATA`` (default ``../shared/data``) has them, else on random images without ground
  truth.
- ``latency``: the shipped default model, batch 1, through each GPU backend that can run it:
  time to open, first call, median and p99 over 300 calls (target: 1 ms).
- ``bench``: ``endoview bench`` on the GPU for the shipped default (TensorRT when its plan was
  built, else onnxruntime's CUDA provider): per-stage figures, live capacity and the added
  latency at 1080p60 (target: p99 at most 5.75 ms, GI Genius's bar).
- ``cascade``: one Cascade Mask R-CNN inference (the paper's config, random weights, 1024 px) on
  CUDA, when mmcv has its CUDA ops.

Output: ``DIR/gpu-check.json`` (rewritten after every part, so an interrupted run keeps what it
measured) and a table on stdout, within 8 minutes. Exit status 0 when no part failed (a part
that cannot run here is "skipped", with the reason), 1 otherwise. On a machine without an NVIDIA
GPU it prints one line, writes ``{"gpu": null}`` and exits 0. ``--device cpu`` runs the parts on
the CPU instead, to test this script where there is no GPU (the figures are then CPU figures).

The top level imports only the standard library; each part imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "endoview-gpu-check/1"
TOTAL_BUDGET_S = 450.0  # the parts together; the whole command stays within 8 minutes
#: name -> the longest it may take (s); the parts run in this order
BUDGETS = {"env": 45.0, "plans": 150.0, "contract": 90.0, "latency": 60.0, "bench": 120.0, "cascade": 60.0}
LATENCY_RUNS = 300
MODEL_LATENCY_TARGET_MS = 1.0
ADDED_LATENCY_TARGET_MS = 5.75


# ---------------------------------------------------------------------------------------------
# finding the GPU (standard library only)


def detect_gpu() -> tuple[dict[str, Any] | None, str]:
    """(what nvidia-smi or the kernel driver says, "") or (None, why there is no NVIDIA GPU)."""
    smi = shutil.which("nvidia-smi")
    why = []
    if smi:
        fields = "index,name,driver_version,memory.total,compute_cap"
        for query in (fields, fields.rsplit(",", 1)[0]):  # old drivers know no compute_cap
            try:
                proc = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.SubprocessError) as err:
                why.append(f"nvidia-smi failed: {err}")
                break
            if proc.returncode == 0:
                devices = []
                for line in proc.stdout.strip().splitlines():
                    parts = [p.strip() for p in line.split(",")]
                    if len(parts) >= 4:
                        devices.append({"index": int(parts[0]), "name": parts[1], "driver": parts[2],
                                        "memory_mib": _number(parts[3]),
                                        "compute_capability": parts[4] if len(parts) > 4 else None})
                if devices:
                    return {"source": "nvidia-smi", "devices": devices, "driver": devices[0]["driver"],
                            "cuda_driver_api": _smi_cuda_version(smi)}, ""
                why.append("nvidia-smi lists no GPU")
                break
            text = (proc.stderr or proc.stdout).strip().splitlines()
            why.append(f"nvidia-smi exited {proc.returncode}: {text[0] if text else ''}".strip())
    else:
        why.append("no nvidia-smi on PATH")
    proc_gpus = Path("/proc/driver/nvidia/gpus")
    if proc_gpus.is_dir() and any(proc_gpus.iterdir()):
        devices = []
        for i, folder in enumerate(sorted(proc_gpus.iterdir())):
            info = _read(folder / "information")
            model = re.search(r"^Model:\s*(.+)$", info, re.M)
            devices.append({"index": i, "name": model.group(1).strip() if model else "?", "bus": folder.name})
        version = _read(Path("/proc/driver/nvidia/version")).splitlines()
        return {"source": "/proc/driver/nvidia", "devices": devices,
                "driver": version[0].strip() if version else None, "cuda_driver_api": None}, ""
    why.append("no /proc/driver/nvidia/gpus (no NVIDIA kernel driver loaded)")
    return None, "; ".join(why)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _smi_cuda_version(smi: str) -> str | None:
    try:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"CUDA Version:\s*([0-9.]+)", out)
    return found.group(1) if found else None


# ---------------------------------------------------------------------------------------------
# helpers for the parts (run in the part's subprocess)


def _setup_paths() -> None:
    for p in (str(ROOT / "tests"), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)


def _skipped(reason: str, **extra: Any) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, **extra}


def _failed(err: BaseException) -> dict[str, Any]:
    return {"status": "failed", "reason": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=6)}


def _guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``; any exception becomes a "failed" case with its message (a diagnostic reports
    every failure and goes on with the next case)."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - every failure, of any library, is reported and the check goes on
        return _failed(err)


def _torch_cuda(device: str) -> tuple[Any, str]:
    """(torch or None, why not) for running on ``device``."""
    try:
        import torch
    except ImportError as err:
        return None, f"torch does not import: {err}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return None, f"torch {torch.__version__} finds no CUDA device (built for CUDA {torch.version.cuda})"
    return torch, ""


def _data_dir() -> Path:
    return Path(os.environ.get("ENDOVIEW_DATA", ROOT.parent / "shared" / "data"))


def _images_for_fp16() -> tuple[Any, Any, str]:
    """(images, masks or None, where they came from)."""
    from backend_contract import real_images
    from tiny_models import random_images

    data = _data_dir()
    if (data / "kvasir-seg" / "images").is_dir():
        images, masks = real_images(data, (256, 256), n=32)
        return images, masks, f"{len(images)} Kvasir-SEG images from {data}"
    return random_images(32, (256, 256), seed=5), None, f"random images (no real data at {data})"


def _shipped_bundles() -> list[Any]:
    from engine.bundle import load_bundle

    return [load_bundle(m.parent) for m in sorted((ROOT / "engine" / "assets" / "models").glob("*/manifest.json"))]


def _default_bundles() -> list[Any]:
    """The shipped default model(s) of engine/assets/config.toml: the model, and the segmenter run beside
    a classifier when the config names one."""
    from engine.bundle import load_bundle
    from engine.config import load_config

    cfg = load_config()
    paths = [cfg.bundle] + [p for p in [getattr(cfg, "segmenter", None)] if p]
    return [load_bundle(p) for p in paths]


def _ms_stats(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))]
    return {"median_ms": round(statistics.median(values), 4), "p99_ms": round(p99, 4),
            "min_ms": round(values[0], 4), "max_ms": round(values[-1], 4), "runs": len(values)}


def _trt_ok(device: str) -> tuple[bool, str]:
    if not device.startswith("cuda"):
        return False, "--device cpu: TensorRT runs only on CUDA"
    from engine.backends import backend_class

    return backend_class("tensorrt").availability()


def _ort_cuda(device: str) -> tuple[bool, str]:
    if not device.startswith("cuda"):
        return False, "--device cpu"
    try:
        import onnxruntime as ort
    except ImportError as err:
        return False, f"onnxruntime does not import: {err}"
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return False, (f"onnxruntime {ort.__version__} has no CUDA provider (it has {', '.join(providers)}): "
                       "onnxruntime-gpu is not installed")
    return True, f"onnxruntime {ort.__version__}"


# ---------------------------------------------------------------------------------------------
# parts


def part_env(ctx: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {"python": f"{platform.python_version()} ({sys.executable})",
                            "platform": platform.platform(), "device": ctx["device"]}
    torch, why = _torch_cuda("cpu")
    if torch is None:
        info["torch"] = {"error": why}
    else:
        t: dict[str, Any] = {"version": torch.__version__, "cuda_build": torch.version.cuda,
                             "cuda_available": torch.cuda.is_available()}
        if torch.cuda.is_available():
            t["cudnn"] = torch.backends.cudnn.version()
            t["devices"] = []
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                t["devices"].append({"index": i, "name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                                     "memory_mib": p.total_memory // (1 << 20), "sms": p.multi_processor_count})
        info["torch"] = t
    try:
        import cupy

        c: dict[str, Any] = {"version": cupy.__version__}
        try:
            c["cuda_runtime"] = _cuda_int(cupy.cuda.runtime.runtimeGetVersion())
            c["cuda_driver_api"] = _cuda_int(cupy.cuda.runtime.driverGetVersion())
        except Exception as err:  # noqa: BLE001 - CuPy raises its own CUDA errors; reported, not fatal
            c["error"] = f"{type(err).__name__}: {err}"
        info["cupy"] = c
    except ImportError as err:
        info["cupy"] = {"error": f"does not import: {err}"}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
    except ImportError as err:
        info["onnxruntime"] = {"error": f"does not import: {err}"}
    from engine.backends import available_backends
    from engine.backends.tensorrt.cuda import import_cuda
    from engine.backends.tensorrt.library import tensorrt_version
    from engine.errors import BackendUnavailable

    info["backends"] = {name: {"available": ok, "detail": detail} for name, (ok, detail) in available_backends().items()}
    info["tensorrt"] = tensorrt_version()
    try:
        import_cuda()
        info["pycuda"] = "loads, CUDA driver initialised"
    except BackendUnavailable as err:
        info["pycuda"] = str(err)
    info["mmcv"] = _mmcv_cuda_ops()[1]
    info["git"] = _git_commit()
    gpu = ctx.get("gpu") or {}
    names = ", ".join(d.get("name", "?") for d in gpu.get("devices", [])) or "no GPU (--device cpu)"
    t = info["torch"]
    summary = (f"{names}; driver {gpu.get('driver')}, CUDA driver API {gpu.get('cuda_driver_api')}; "
               f"torch {t.get('version')} (CUDA {t.get('cuda_build')}, cuDNN {t.get('cudnn')}); "
               f"TensorRT {info['tensorrt'] or 'absent'}")
    return {"status": "ok", "summary": summary, **info}


def _cuda_int(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _mmcv_cuda_ops() -> tuple[bool, str]:
    try:
        import mmcv
    except ImportError as err:
        return False, f"mmcv does not import: {err}"
    try:
        from mmcv.ops import get_compiling_cuda_version
    except ImportError as err:
        return False, f"mmcv {mmcv.__version__} has no compiled ops: {err}"
    cuda = get_compiling_cuda_version()
    if not cuda or cuda == "not available":
        return False, f"mmcv {mmcv.__version__} was built without CUDA ops (rebuild it with FORCE_CUDA=1 and nvcc)"
    return True, f"mmcv {mmcv.__version__} with CUDA {cuda} ops"


def part_contract(ctx: dict[str, Any]) -> dict[str, Any]:
    from backend_contract import check_fp16, check_fp32
    from engine.backends import open_backend
    from tiny_models import make_tiny_classifier_bundle, make_tiny_segmenter_bundle

    device = ctx["device"]
    tmp = Path(ctx["tmp"])
    torch, torch_why = _torch_cuda(device)
    cls = make_tiny_classifier_bundle(tmp / "cls", labels=("a", "b", "c", "d"))
    seg = make_tiny_segmenter_bundle(tmp / "seg", size=(24, 40))
    images, masks, source = _images_for_fp16()
    reference = lambda b: open_backend(b, "onnxruntime", device="cpu")  # noqa: E731
    shipped = _shipped_bundles()
    cases: dict[str, dict[str, Any]] = {}

    def outcome_case(outcome) -> dict[str, Any]:
        return {"status": "ok" if outcome.ok else "failed", "problems": outcome.problems, "figures": outcome.figures}

    def torch_case(fp16: bool, graphs: bool) -> dict[str, Any]:
        if torch is None:
            return _skipped(torch_why)
        if (fp16 or graphs) and not device.startswith("cuda"):
            return _skipped("--device cpu: fp16 and CUDA graphs run only on CUDA")
        opts = {"device": device, **({"fp16": True} if fp16 else {}), **({"cuda_graphs": True} if graphs else {})}
        if not fp16:
            return outcome_case(check_fp32("torch", lambda b: open_backend(b, "torch", **opts), cls, seg))
        bundles = [cls, seg] + [b for b in shipped if b.has("torchscript")]
        return outcome_case(check_fp16(lambda b: open_backend(b, "torch", **opts), reference, bundles, images, masks))

    for fp16 in (False, True):
        for graphs in (False, True):
            name = f"torch-{'fp16' if fp16 else 'fp32'}{'-cuda-graphs' if graphs else ''}"
            cases[name] = _guard(lambda: torch_case(fp16, graphs))

    def ort_case() -> dict[str, Any]:
        ok, why = _ort_cuda(device)
        if not ok:
            return _skipped(why)
        return outcome_case(check_fp32("onnxruntime", lambda b: open_backend(b, "onnxruntime", device=device), cls, seg))

    cases["onnxruntime-cuda"] = _guard(ort_case)

    def trt_case(fp16: bool) -> dict[str, Any]:
        ok, why = _trt_ok(device)
        if not ok:
            return _skipped(why)
        # the plans part's cache: the shipped bundles' plans are built there already
        open_fn = lambda b: open_backend(b, "tensorrt", device=device, build_missing=True,  # noqa: E731
                                         cache_dir=Path(ctx["out"]) / "cache" / "engines", fp16=fp16)
        if not fp16:
            return outcome_case(check_fp32("tensorrt", open_fn, cls, seg))
        bundles = [cls, seg] + [b for b in shipped if b.has("onnx")]
        return outcome_case(check_fp16(open_fn, reference, bundles, images, masks))

    cases["tensorrt-fp32"] = _guard(lambda: trt_case(False))
    cases["tensorrt-fp16"] = _guard(lambda: trt_case(True))
    failed = [n for n, c in cases.items() if c["status"] == "failed"]
    ran = [n for n, c in cases.items() if c["status"] == "ok"]
    summary = f"ok: {', '.join(ran) or 'none'}"
    if failed:
        summary += f"; FAILED: {', '.join(failed)}"
    skipped = [n for n, c in cases.items() if c["status"] == "skipped"]
    if skipped:
        summary += f"; skipped: {', '.join(skipped)}"
    return {"status": "failed" if failed else "ok", "summary": summary, "fp16_images": source, "cases": cases}


def part_plans(ctx: dict[str, Any]) -> dict[str, Any]:
    ok, why = _trt_ok(ctx["device"])
    if not ok:
        return _skipped(why)
    from engine.backends.tensorrt.build import build_plan

    cache = Path(ctx["out"]) / "cache" / "engines"
    builds: dict[str, Any] = {}
    for bundle in _shipped_bundles():
        if not bundle.has("onnx"):
            builds[bundle.name] = _skipped("no ONNX model")
            continue
        for fp16 in (False, True):
            def build() -> dict[str, Any]:
                t0 = time.perf_counter()
                path = build_plan(bundle, fp16=fp16, device=ctx["device"], cache_dir=cache, force=True)
                return {"status": "ok", "seconds": round(time.perf_counter() - t0, 2), "plan": str(path),
                        "plan_mib": round(path.stat().st_size / 2**20, 2)}

            builds[f"{bundle.name} {'fp16' if fp16 else 'fp32'}"] = _guard(build)
    failed = [k for k, v in builds.items() if v["status"] == "failed"]
    summary = "; ".join(f"{k}: {v.get('seconds', v['status'])} s" if v["status"] == "ok" else f"{k}: {v['status']}"
                        for k, v in builds.items())
    return {"status": "failed" if failed else "ok", "summary": summary, "builds": builds, "cache": str(cache)}


def _time_backend(open_fn: Callable[[], Any], bundle: Any, runs: int) -> dict[str, Any]:
    import numpy as np

    h, w = bundle.input_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    backend = open_fn()
    with backend:
        opened = (time.perf_counter() - t0) * 1000.0
        t1 = time.perf_counter()
        backend.run({bundle.input_name: image})
        first = (time.perf_counter() - t1) * 1000.0
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            backend.run({bundle.input_name: image})
            times.append((time.perf_counter() - t) * 1000.0)
        desc = backend.description
    stats = _ms_stats(times)
    return {"status": "ok", "backend": desc, "open_ms": round(opened, 1), "first_call_ms": round(first, 3), **stats,
            "meets_1ms": stats["median_ms"] <= MODEL_LATENCY_TARGET_MS}


def part_latency(ctx: dict[str, Any]) -> dict[str, Any]:
    from engine.backends import open_backend

    device = ctx["device"]
    cache = Path(ctx["out"]) / "cache" / "engines"
    ort_ok, ort_why = _ort_cuda(device)
    trt_ok, trt_why = _trt_ok(device)
    torch, torch_why = _torch_cuda(device)
    rows: dict[str, Any] = {}
    bundles = _default_bundles()
    for bundle in bundles:
        def timed(name: str, **options: Any) -> dict[str, Any]:
            return _guard(lambda: _time_backend(lambda: open_backend(bundle, name, device=device, **options),
                                                bundle, LATENCY_RUNS))

        if device == "cpu":  # --device cpu: time what runs there, to test this part
            rows[f"{bundle.name} onnxruntime-cpu"] = timed("onnxruntime")
        else:
            rows[f"{bundle.name} onnxruntime-cuda"] = timed("onnxruntime") if ort_ok else _skipped(ort_why)
        for fp16 in (False, True):
            rows[f"{bundle.name} tensorrt-{'fp16' if fp16 else 'fp32'}"] = (
                timed("tensorrt", fp16=fp16, cache_dir=cache, build_missing=True) if trt_ok else _skipped(trt_why))
        for fp16, graphs in ((False, False), (True, False), (True, True)):
            name = f"{bundle.name} torch-{'fp16' if fp16 else 'fp32'}{'-cuda-graphs' if graphs else ''}"
            if torch is None:
                rows[name] = _skipped(torch_why)
            elif not bundle.has("torchscript"):
                rows[name] = _skipped(f"{bundle.name} has no TorchScript model (ONNX only), which the torch backend needs")
            elif (fp16 or graphs) and not device.startswith("cuda"):
                rows[name] = _skipped("--device cpu")
            else:
                opts = {"fp16": fp16, "cuda_graphs": graphs} if device.startswith("cuda") else {}
                rows[name] = timed("torch", **opts)
    failed = [k for k, v in rows.items() if v["status"] == "failed"]
    timed_rows = [f"{k} median {v['median_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms"
                  for k, v in rows.items() if v["status"] == "ok"]
    status = "failed" if failed else "ok" if timed_rows else "skipped"
    summary = "; ".join(timed_rows) or "no backend here can run the shipped default on this device (see rows)"
    if failed:
        summary += f"; FAILED: {', '.join(failed)}"
    return {"status": status, "summary": summary, "reason": summary, "models": [b.name for b in bundles],
            "target_median_ms": MODEL_LATENCY_TARGET_MS, "rows": rows}


def part_bench(ctx: dict[str, Any]) -> dict[str, Any]:
    device = ctx["device"]
    cache = Path(ctx["out"]) / "cache"
    bundles = _default_bundles()
    trt_ok, trt_why = _trt_ok(device)
    ort_ok, ort_why = _ort_cuda(device)
    if trt_ok:
        from engine.backends.tensorrt.backend import TensorRTBackend

        for bundle in bundles:  # the fp32 plans `bench --backend tensorrt` loads (built by `plans` unless skipped)
            with TensorRTBackend(bundle, device=device, build_missing=True, cache_dir=cache / "engines"):
                pass
        env_cache, backend = {"ENDOVIEW_CACHE": str(cache)}, "tensorrt"
    elif ort_ok or device == "cpu":
        env_cache, backend = {}, "onnxruntime"
    elif all(b.has("torchscript") for b in bundles) and _torch_cuda(device)[0] is not None:
        env_cache, backend = {}, "torch"  # picks the GPU by itself
    else:
        no_ts = [b.name for b in bundles if not b.has("torchscript")]
        torch_why = f"{', '.join(no_ts)} has no TorchScript model" if no_ts else _torch_cuda(device)[1]
        return _skipped(f"no GPU backend can run the shipped default ({', '.join(b.name for b in bundles)}): "
                        f"TensorRT: {trt_why}; onnxruntime: {ort_why}; torch: {torch_why}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env_cache)
    frames = ctx.get("bench_frames", 300)
    cmd = [sys.executable, "-m", "engine.cli", "bench", "--json", "--backend", backend,
           "--frames", str(frames), "--live-seconds", str(ctx.get("live_seconds", 5.0))]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=max(10.0, ctx["deadline"] - time.time() - 5))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "failed", "reason": f"endoview bench exited {proc.returncode}: {tail}", "command": cmd}
    report = json.loads(proc.stdout)
    stages = {k: {"mean_ms": round(v["mean"], 3), "p99_ms": round(v["p99"], 3)}
              for k, v in report["stages"].items() if v}
    p99 = report.get("added_latency_ms_p99")
    out = {"status": "ok", "seconds": round(time.perf_counter() - t0, 1), "command": cmd, "backend": report["backend"],
           "model": report["model"], "stages": stages, "model_fps_mean": report["model_fps"].get("mean"),
           "annotate_fps": report["annotate_fps"], "live_fps": report["live_fps"],
           "added_latency_ms_p50": report.get("added_latency_ms_p50"), "added_latency_ms_p99": p99,
           "target_added_latency_p99_ms": ADDED_LATENCY_TARGET_MS,
           "meets_target": p99 is not None and p99 <= ADDED_LATENCY_TARGET_MS, "report": report}
    inf = stages.get("inference", {})
    out["summary"] = (f"{report['backend']}: inference mean {inf.get('mean_ms')} ms, added latency at "
                      f"{report['input']['fps']:.0f} fps p50 {out['added_latency_ms_p50']:.2f} / p99 {p99:.2f} ms "
                      f"(target p99 <= {ADDED_LATENCY_TARGET_MS}), live {report['live_fps']:.1f} FPS")
    return out


def part_cascade(ctx: dict[str, Any]) -> dict[str, Any]:
    device = ctx["device"]
    torch, why = _torch_cuda(device)
    if torch is None:
        return _skipped(why)
    if device.startswith("cuda"):
        ok, why = _mmcv_cuda_ops()
        if not ok:
            return _skipped(why)
    from engine.backends.mmdet_compat import MMDetUnavailable, import_mmdet

    try:
        import_mmdet()
    except MMDetUnavailable as err:
        return _skipped(str(err))
    import numpy as np
    from mmdet.apis import inference_detector, init_detector

    from train.seg.cascade_config import CLASSES, PALETTE, CascadeConfig, CocoSplit, build_config
    from train.seg.cascade_export import export_config

    tmp = Path(ctx["tmp"])
    size = int(ctx.get("cascade_size", 1024))
    split = CocoSplit(images=tmp, train=(tmp / "train.json",), val=tmp / "val.json")  # paths only, never read
    run_cfg = build_config(CascadeConfig(data=str(tmp), out=str(tmp / "run"), image_size=size), split, tmp / "run")
    cfg = export_config(run_cfg, size)
    t0 = time.perf_counter()
    model = init_detector(cfg, None, device=device)  # random weights: the check is that it runs
    model.dataset_meta = {"classes": CLASSES, "palette": PALETTE}
    loaded = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    t1 = time.perf_counter()
    result = inference_detector(model, image)
    first = time.perf_counter() - t1
    times = []
    for _ in range(3):
        t = time.perf_counter()
        result = inference_detector(model, image)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000.0)
    n = len(result.pred_instances)
    return {"status": "ok", "device": device, "image": f"{size}x{size} random", "weights": "random",
            "load_s": round(loaded, 2), "first_ms": round(first * 1000, 1), "median_ms": round(statistics.median(times), 1),
            "instances": n,
            "summary": f"Cascade Mask R-CNN {size}px on {device}: {statistics.median(times):.1f} ms "
                       f"(first {first * 1000:.0f} ms), {n} instances (random weights)"}


PARTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "env": part_env, "plans": part_plans, "contract": part_contract, "latency": part_latency,
    "bench": part_bench, "cascade": part_cascade,
}


# ---------------------------------------------------------------------------------------------
# running


def run_part(name: str, ctx: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Part ``name`` in a subprocess of this script, within ``timeout`` seconds."""
    with tempfile.TemporaryDirectory(prefix=f"gpu-check-{name}-") as tmp:
        result_file = Path(tmp) / "result.json"
        part_ctx = dict(ctx, tmp=tmp, deadline=time.time() + timeout)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--run-part", name, "--ctx", json.dumps(part_ctx),
               "--result", str(result_file)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"timed out after {timeout:.0f} s", "seconds": round(timeout, 1)}
        seconds = round(time.perf_counter() - t0, 1)
        if result_file.is_file():
            result = json.loads(result_file.read_text(encoding="utf-8"))
        else:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-3:]
            result = {"status": "failed", "reason": f"the part exited {proc.returncode} without a result: "
                                                    + " | ".join(tail)}
        result["seconds"] = seconds
        return result


def _child(name: str, ctx_json: str, result_path: str) -> int:
    _setup_paths()
    ctx = json.loads(ctx_json)
    result = _guard(lambda: PARTS[name](ctx))
    Path(result_path).write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return 0


def table(report: dict[str, Any]) -> str:
    lines = [f"{'part':<10}{'status':<9}{'seconds':>8}  summary"]
    for name, part in report["parts"].items():
        text = part.get("summary") or part.get("reason") or ""
        lines.append(f"{name:<10}{part['status']:<9}{part.get('seconds', 0):>8.1f}  {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu-check-out"), metavar="DIR",
                   help="where gpu-check.json (and the built plans) go (default ./gpu-check-out)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--device", default="cuda:0", help="cuda:N (default cuda:0), or cpu to test this script")
    p.add_argument("--run-part", help=argparse.SUPPRESS)
    p.add_argument("--ctx", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_part:
        return _child(args.run_part, args.ctx, args.result)

    asked = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = [s for s in asked if s not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    parts = [name for name in PARTS if name in asked]  # always in PARTS order: plans before their users
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / "gpu-check.json"
    if args.device == "cpu":
        gpu: dict[str, Any] | None = {"source": "--device cpu", "devices": [], "driver": None, "cuda_driver_api": None}
    else:
        gpu, why = detect_gpu()
        if gpu is None:
            result_path.write_text(json.dumps({"gpu": None}) + "\n", encoding="utf-8")
            print(f"gpu-check: no NVIDIA GPU here ({why}); nothing to check; wrote {result_path}")
            return 0
    start = time.time()
    report: dict[str, Any] = {"schema": SCHEMA, "gpu": gpu, "device": args.device, "root": str(ROOT),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "parts": {}}
    names = ", ".join(d.get("name", "?") for d in gpu.get("devices", [])) or args.device
    print(f"gpu-check: {names} (driver {gpu.get('driver')}); writing {result_path}", flush=True)
    ctx = {"device": args.device, "out": str(out), "gpu": gpu}
    for name in parts:
        left = TOTAL_BUDGET_S - (time.time() - start)
        if left < 15:
            report["parts"][name] = _skipped(f"out of time: the parts together may take {TOTAL_BUDGET_S:.0f} s")
        else:
            print(f"gpu-check: {name} ...", flush=True)
            report["parts"][name] = run_part(name, ctx, min(BUDGETS[name], left))
        report["seconds"] = round(time.time() - start, 1)
        result_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(table(report))
    failed = [n for n, part in report["parts"].items() if part["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
