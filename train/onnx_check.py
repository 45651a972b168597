"""Export a wrapped model to ONNX (and TorchScript) and check it against PyTorch: one path for the
classifiers (train/export.py) and the real-time segmenter (train/seg/export.py).

The module takes uint8 RGB NHWC (preprocessing inside, see ``WithPreprocessing``) and has one
output. :func:`export_checked` writes ``model.onnx`` (opset 17, dynamic batch; ``onnx.checker``
full check) and, when asked, ``model.torchscript.pt`` into a folder, runs ONNX Runtime and the
TorchScript module against the PyTorch module on random and real images, and raises
:class:`~train.errors.TrainError` when the largest difference exceeds the tolerance.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .errors import TrainError

OPSET = 17
PARITY_TOLERANCE = 1e-4
INPUT = "image"
#: bundle file -> format name (engine.bundle)
FORMATS = {"model.onnx": "onnx", "model.torchscript.pt": "torchscript"}


@dataclass
class CheckedExport:
    onnx_path: Path
    torchscript_path: Path | None
    parity: dict[str, Any]
    threads: int
    ort_run: Callable[[np.ndarray], np.ndarray]  # batch -> output, through ONNX Runtime

    @property
    def files(self) -> dict[str, Path]:
        """``write_bundle``'s files: model.onnx, and model.torchscript.pt where it was written."""
        files = {"model.onnx": self.onnx_path}
        if self.torchscript_path is not None:
            files["model.torchscript.pt"] = self.torchscript_path
        return files

    @property
    def formats(self) -> dict[str, str]:
        """``write_bundle``'s formats: each of :attr:`files` by its format name."""
        return {FORMATS[name]: name for name in self.files}


def torch_run(module: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(batch)).numpy()


def median_ms(fn: Callable[[], Any], runs: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def export_checked(module: torch.nn.Module, folder: Path, *, output: str, random: np.ndarray,
                   real: np.ndarray, real_source: str, torchscript: bool = True,
                   threads: int | None = None) -> CheckedExport:
    """Write and check ``folder/model.onnx`` (+ ``model.torchscript.pt``); see the module docstring."""
    import onnx
    import onnxruntime as ort

    module.eval()
    onnx_path, ts_path = folder / "model.onnx", folder / "model.torchscript.pt"
    example = torch.from_numpy(random[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-based exporter deprecation notes
        torch.onnx.export(module, (example,), str(onnx_path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[output],
                          dynamic_axes={INPUT: {0: "batch"}, output: {0: "batch"}})
    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except onnx.checker.ValidationError as err:
        raise TrainError(f"the exported ONNX model fails onnx.checker: {err}") from err
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    def ort_run(batch: np.ndarray) -> np.ndarray:
        return session.run([output], {INPUT: batch})[0]

    diffs = {key: float(np.abs(ort_run(b) - torch_run(module, b)).max())
             for key, b in (("random", random), ("real", real)) if len(b)}
    ts_diff = None
    if torchscript:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.trace(module, example).save(str(ts_path))
            loaded = torch.jit.load(str(ts_path))
        ts_diff = float(np.abs(torch_run(loaded, random) - torch_run(module, random)).max())
    worst = max(diffs.values())
    parity = {
        "tolerance": PARITY_TOLERANCE, "max_abs_diff": worst,
        "random_images": int(len(random)), "random_max_abs_diff": diffs.get("random"),
        "real_images": int(len(real)), "real_max_abs_diff": diffs.get("real"), "real_source": real_source,
        "torchscript_max_abs_diff": ts_diff,  # None: no TorchScript file
    }
    if worst > PARITY_TOLERANCE or (ts_diff is not None and not ts_diff <= PARITY_TOLERANCE):
        raise TrainError(f"export parity check failed: onnxruntime vs torch max |dp| {worst:.3e}, "
                         f"torchscript {format_diff(ts_diff)} (tolerance {PARITY_TOLERANCE:.0e})")
    return CheckedExport(onnx_path, ts_path if torchscript else None, parity, opts.intra_op_num_threads, ort_run)


def format_diff(value: float | None) -> str:
    return "not written" if value is None else f"{value:.2e}"


def parity_line(p: dict[str, Any]) -> str:
    """The report line of a parity dict."""
    return (f"parity onnxruntime vs torch: max |dp| {p['max_abs_diff']:.2e} over {p['random_images']} random "
            f"and {p['real_images']} real images (tolerance {p['tolerance']:.0e}); torchscript "
            f"{format_diff(p['torchscript_max_abs_diff'])}")
