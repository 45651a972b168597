"""``endoview build-engine BUNDLE``: build the TensorRT plan for a bundle on this GPU, into the cache."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.errors import BackendUnavailable

log = logging.getLogger(__name__)

EPILOG = """\
The plan is stored outside the bundle, in the plan cache ($ENDOVIEW_CACHE/engines, default
~/.cache/endoview/engines), keyed by the ONNX sha256, GPU, compute capability, TensorRT version,
precision, max batch and workspace. A plan that does not match all of these is never loaded;
rebuild it here. TensorRT's timing cache is kept there too, one file per GPU and TensorRT version.

examples:
  endoview build-engine engine/assets/models/polyp-unet
  endoview build-engine BUNDLE --fp16 --workspace 4096
"""

NO_TENSORRT = (
    "build-engine needs an NVIDIA GPU with TensorRT 10 or 11 (pip install 'endoview[gpu]')"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from engine.backends.tensorrt.build import DEFAULT_MAX_BATCH, DEFAULT_WORKSPACE_MB

    p = subparsers.add_parser(
        "build-engine",
        help="build the TensorRT plan of a model bundle for this GPU",
        description="Build a TensorRT plan from a bundle's ONNX model for this GPU and store it in the "
        "plan cache, where the tensorrt backend finds it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", type=Path, help="model bundle folder (with manifest.json)")
    p.add_argument("--fp16", action="store_true",
                   help="build in FP16 (TensorRT 10: builder flag; TensorRT 11: FP16 ONNX, strongly typed)")
    p.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MB, metavar="MB",
                   help=f"builder workspace in MiB (default {DEFAULT_WORKSPACE_MB})")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, metavar="N",
                   help=f"largest batch the plan accepts (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--device", default=None, metavar="cuda:N", help="GPU to build for (default cuda:0)")
    p.add_argument("--timing-cache", type=Path, default=None, metavar="FILE",
                   help="TensorRT timing cache to load and update (default: this GPU's and TensorRT "
                        "version's file in the plan cache)")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching plan is cached")
    p.set_defaults(func=run)


#: The start of each BackendUnavailable message of engine.backends.tensorrt -> what to say.
_CAUSES = (
    ("TensorRT is not installed", "TensorRT is not installed here"),
    ("pycuda is not installed", "pycuda (needed by TensorRT) is not installed here"),
    ("no CUDA driver", "there is no CUDA driver here"),
    ("the CUDA driver does not start", "the CUDA driver does not start here"),
    ("no CUDA GPU found", "there is no CUDA GPU here"),
)


def _why_not(err: BackendUnavailable) -> str:
    """One line: what is missing, then the underlying error."""
    text = str(err)
    for start, what in _CAUSES:
        if text.startswith(start):
            detail = str(err.__cause__) if err.__cause__ is not None else text[len(start):].lstrip(": ")
            return f"{what}: {detail}"
    return f"TensorRT cannot run here: {text}"


def run(args: argparse.Namespace) -> int:
    from engine.backends.tensorrt.build import build_plan
    from engine.bundle import load_bundle

    bundle = load_bundle(args.bundle)  # BundleError is reported by the CLI
    try:
        path = build_plan(
            bundle,
            fp16=args.fp16,
            workspace_mb=args.workspace,
            max_batch=args.max_batch,
            device=getattr(args, "device", None),
            timing_cache=getattr(args, "timing_cache", None),
            force=args.force,
        )
    except BackendUnavailable as err:
        print(f"endoview: error: {_why_not(err)}; {NO_TENSORRT}", file=sys.stderr)
        return 2
    print(f"TensorRT plan for {bundle.name} ({'fp16' if args.fp16 else 'fp32'}): {path}")
    return 0
