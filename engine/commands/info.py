"""``endoview info``: versions, backends, GPUs and the plan cache, for bug reports and setup checks."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import platform
import sys
from typing import Any

EPILOG = """\
examples:
  endoview info            human-readable summary
  endoview info --json     the same as JSON (attach it to bug reports)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "info",
        help="show versions, inference backends, GPUs and the TensorRT plan cache",
        description="Show what endoview finds on this machine: library versions, which inference "
        "backends can run (and why not), GPUs, and where TensorRT plans are cached.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _module_version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "?"))


def _pyav() -> dict[str, Any]:
    try:
        import av
    except ImportError as err:
        return {"version": None, "error": str(err)}
    try:
        av.codec.Codec("libx264", "w")
        x264 = True
    except (ValueError, av.FFmpegError):  # UnknownCodecError derives from ValueError
        x264 = False
    ffmpeg = getattr(av, "ffmpeg_version_info", None)
    return {"version": av.__version__, "libx264": x264, "ffmpeg": ffmpeg}


def collect() -> dict[str, Any]:
    """Everything ``endoview info`` reports, as a JSON-able dict."""
    import numpy

    import engine
    from engine.backends import available_backends, plan_cache
    from engine.backends.probe import gpus, onnxruntime_info
    from engine.backends.tensorrt.library import tensorrt_version

    backends = {name: {"available": ok, "detail": why} for name, (ok, why) in available_backends().items()}
    return {
        "endoview": engine.__version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "opencv": _module_version("cv2"),
        "onnx": _dist_version("onnx"),
        "onnxruntime": onnxruntime_info(),
        "pyav": _pyav(),
        "pyside6": _dist_version("PySide6", "PySide6-Essentials"),
        "torch": _dist_version("torch"),
        "tensorrt": tensorrt_version(),
        "pycuda": _dist_version("pycuda"),
        "backends": backends,
        "gpus": gpus(),
        "plan_cache": str(plan_cache.engines_dir()),
    }


def _text(info: dict[str, Any]) -> str:
    def v(x: Any) -> str:
        return "not installed" if x is None else str(x)

    ort = info["onnxruntime"]
    av_ = info["pyav"]
    lines = [
        f"endoview     {info['endoview']}",
        f"python       {info['python']}",
        f"platform     {info['platform']}",
        f"numpy        {info['numpy']}",
        f"opencv       {v(info['opencv'])}",
        f"onnx         {v(info['onnx'])}",
        f"onnxruntime  {v(ort['version'])}"
        + (f" (providers: {', '.join(ort['providers'])})" if ort.get("providers") else ""),
        f"PyAV         {v(av_['version'])}"
        + ("" if av_["version"] is None else f" (libx264: {'yes' if av_['libx264'] else 'no'})"),
        f"PySide6      {v(info['pyside6'])}",
        f"torch        {v(info['torch'])}",
        f"TensorRT     {v(info['tensorrt'])}",
        f"pycuda       {v(info['pycuda'])}",
        "backends:",
    ]
    for name, b in info["backends"].items():
        lines.append(f"  {name:<12} {'yes' if b['available'] else 'no ':<4} {b['detail']}")
    gpus = info["gpus"]["devices"]
    if gpus:
        lines.append(f"GPUs ({info['gpus']['source']}):")
        for g in gpus:
            lines.append(f"  [{g['index']}] {g['name']} (sm {g['compute_capability']}, {g['memory_mib']} MiB)")
    else:
        lines.append("GPUs         none found")
    lines.append(f"plan cache   {info['plan_cache']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = collect()
    if getattr(args, "json", False):
        print(json.dumps(info, indent=2))
    else:
        print(_text(info))
    return 0
