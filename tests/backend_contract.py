"""The backend contract: what every backend must compute for the tiny models, and how close.

Shared by ``tests/engine/test_backends.py`` (pytest, any machine) and ``scripts/gpu_check.py``
(an NVIDIA machine, which may have no pytest), so both hold a backend to the same tolerances.
Each check returns an :class:`Outcome`: the problems found (empty: the backend keeps the
contract) and the figures measured.

Tolerances, and why:

- ``FP32_ATOL`` (1e-5): float32 on the CPU against the float64 numpy reference of
  ``tiny_models``; only float32 rounding separates them.
- ``TF32_ATOL`` (5e-3): "fp32" on an NVIDIA GPU of compute capability 8.0 or newer. TensorRT
  builds with TF32 enabled by default, and PyTorch lets cuDNN use it for convolutions: the
  operands of convolutions and matrix products are rounded to a 10-bit mantissa (relative error
  up to 2^-11 each) before float32 accumulation. Emulating exactly that rounding in numpy
  (:func:`tf32_probs` / :func:`tf32_mask`) moves the tiny classifier's probabilities and the tiny
  segmenter's mask by up to 4.5e-4 on 64 ``random_images`` (test_backends.py checks that this
  breaks FP32_ATOL and stays under a third of TF32_ATOL); the tenfold margin leaves room for
  TensorRT folding the normalisation into the convolution weights before rounding them and for
  another accumulation order.
- FP16 (TensorRT ``--fp16``, torch ``fp16=True``) is judged on what a user sees, on real images:
  for classifiers, the top-1 class must agree with onnxruntime's float32 result on every image
  whose float32 top-2 margin is at least ``FP16_MARGIN`` (FP16 moves a probability by a few 1e-3;
  closer calls are counted, not judged); for segmenters, the mean Dice against the ground-truth
  masks (mask = probability > 0.5) may change by at most ``FP16_MAX_DICE_CHANGE``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiny_models import MEAN, STD, _classifier_weights, _segmenter_weights, random_images, reference_mask, reference_probs

FP32_ATOL = 1e-5
TF32_ATOL = 5e-3
FP16_MARGIN = 0.02
FP16_MAX_DICE_CHANGE = 0.01
MASK_THRESHOLD = 0.5

#: bundle -> a constructed (not entered) backend
Opener = Callable[[Any], Any]


@dataclass
class Outcome:
    """What a contract check found: ``problems`` (empty when the backend keeps the contract) and
    the ``figures`` it measured (JSON-able)."""

    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def fp32_tolerance(backend: Any) -> tuple[float, str]:
    """(atol, why) for an entered backend computing in "fp32"."""
    if backend.runs_on == "cuda":
        return TF32_ATOL, "TF32 (GPU convolutions and matrix products round operands to 10 mantissa bits)"
    return FP32_ATOL, "float32 on the CPU"


# ---------------------------------------------------------------------------------------------
# TF32 emulation (documents and checks TF32_ATOL)


def tf32(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to TF32 (float32 with a 10-bit mantissa, round to nearest even), as float32."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x0FFF + ((bits >> 13) & 1)) & 0xFFFFE000
    return bits.astype(np.uint32).view(np.float32)


def _normalised(images: np.ndarray) -> np.ndarray:
    x = (images.astype(np.float32) - MEAN * 255.0) / (STD * 255.0)
    return x.transpose(0, 3, 1, 2)


def tf32_probs(images: np.ndarray, seed: int = 0, num_classes: int = 3) -> np.ndarray:
    """The tiny classifier computed with TF32 convolution and Gemm operands (float64 otherwise)."""
    wts = _classifier_weights(seed, num_classes)
    x = tf32(_normalised(images)).astype(np.float64)
    w = tf32(wts["conv_w"]).astype(np.float64)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    y = np.maximum(np.einsum("nchwij,ocij->nohw", win, w) + wts["conv_b"][None, :, None, None], 0.0)
    feats = tf32(y.mean(axis=(2, 3)).astype(np.float32)).astype(np.float64)
    logits = feats @ tf32(wts["fc_w"]).astype(np.float64).T + wts["fc_b"]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def tf32_mask(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The tiny segmenter computed with TF32 convolution operands."""
    cw, cb = _segmenter_weights(seed)
    x = tf32(_normalised(images)).astype(np.float64)
    z = np.einsum("nchw,c->nhw", x, tf32(cw).reshape(3).astype(np.float64)) + float(cb[0])
    return (1.0 / (1.0 + np.exp(-z)))[:, None].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# fp32: the tiny models against numpy


@contextlib.contextmanager
def _entered(open_fn: Opener, bundle: Any) -> Iterator[Any]:
    with open_fn(bundle) as backend:
        yield backend


def check_fp32(name: str, open_fn: Opener, classifier: Any, segmenter: Any) -> Outcome:
    """The tiny classifier (4 labels, 32x32) and segmenter through the backend ``name`` opened by
    ``open_fn``, against numpy, within :func:`fp32_tolerance`."""
    out = Outcome()
    problems = out.problems
    images = random_images(4, (32, 32), seed=3)
    with _entered(open_fn, classifier) as backend:
        atol, why = fp32_tolerance(backend)
        out.figures.update(backend=backend.description, runs_on=backend.runs_on, atol=atol, precision=why)
        if backend.outputs() != ["probs"]:
            problems.append(f"outputs() is {backend.outputs()}, not ['probs']")
        spec = backend.inputs.get("image")
        if spec is None or spec.dtype != np.uint8 or spec.shape[1:] != (32, 32, 3):
            problems.append(f"input spec is {spec}, not uint8 N x 32 x 32 x 3 'image'")
        if not backend.description.startswith(name):
            problems.append(f"description {backend.description!r} does not start with {name!r}")
        worst = 0.0
        for batch in (images[:1], images):
            result = backend.run({"image": batch})
            probs = result.get("probs")
            if set(result) != {"probs"} or not isinstance(probs, np.ndarray):
                problems.append(f"run() returned {sorted(result)}, not one 'probs' array")
                continue
            if probs.dtype != np.float32 or probs.shape != (len(batch), 4):
                problems.append(f"probs is {probs.dtype} {probs.shape}, not float32 {(len(batch), 4)}")
                continue
            ref = reference_probs(batch, seed=0, labels=classifier.labels, size=(32, 32))
            worst = max(worst, float(np.abs(probs - ref).max()))
        out.figures["classifier_max_abs_err"] = worst
        if worst > atol:
            problems.append(f"classifier probabilities differ from numpy by {worst:.2e} (tolerance {atol:.0e})")
    seg_images = random_images(2, segmenter.input_size, seed=4)
    with _entered(open_fn, segmenter) as backend:
        atol, _ = fp32_tolerance(backend)
        mask = backend.run({"image": seg_images}).get("mask")
        want = (2, 1, *segmenter.input_size)
        if not isinstance(mask, np.ndarray) or mask.shape != want or mask.dtype != np.float32:
            problems.append(f"mask is {getattr(mask, 'dtype', None)} {getattr(mask, 'shape', None)}, not float32 {want}")
        else:
            err = float(np.abs(mask - reference_mask(seg_images)).max())
            out.figures["segmenter_max_abs_err"] = err
            if err > atol:
                problems.append(f"segmenter mask differs from numpy by {err:.2e} (tolerance {atol:.0e})")
    return out


# ---------------------------------------------------------------------------------------------
# fp16: what a user sees, on real images


def _resize_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read {path}")
    h, w = size
    return cv2.cvtColor(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def real_images(data_dir: Path, size: tuple[int, int], n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Kvasir-SEG images (uint8 RGB N x H x W x 3, resized to ``size``) and their polyp
    masks (bool N x H x W), the first ``n`` in name order."""
    import cv2

    folder = Path(data_dir) / "kvasir-seg"
    names = sorted(p.name for p in (folder / "images").glob("*.jpg"))[:n]
    if not names:
        raise FileNotFoundError(f"no Kvasir-SEG images in {folder / 'images'}")
    h, w = size
    images, masks = [], []
    for name in names:
        images.append(_resize_rgb(folder / "images" / name, size))
        m = cv2.imread(str(folder / "masks" / name), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise OSError(f"cannot read {folder / 'masks' / name}")
        masks.append(cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) > 127)
    return np.stack(images), np.stack(masks)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    inter = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * inter / total)


def _run_all(backend: Any, bundle: Any, images: np.ndarray, batch: int = 8) -> np.ndarray:
    key = bundle.output_names[0]
    return np.concatenate([backend.run({bundle.input_name: images[i:i + batch]})[key]
                           for i in range(0, len(images), batch)])


def check_fp16(open_fn: Opener, reference_fn: Opener, bundles: Sequence[Any], images: np.ndarray,
               masks: np.ndarray | None) -> Outcome:
    """Each bundle through ``open_fn`` (an FP16 backend) and ``reference_fn`` (onnxruntime,
    float32) on ``images`` (uint8 RGB, any size: resized per bundle). Classifiers: top-1
    agreement (see the module docstring); segmenters: change in mean Dice against ``masks``
    (without masks, e.g. where the real data is absent: the Dice between the FP32 and FP16 masks,
    which must be at least 1 - FP16_MAX_DICE_CHANGE)."""
    import cv2

    out = Outcome()
    for bundle in bundles:
        h, w = bundle.input_size
        x = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
        with _entered(reference_fn, bundle) as ref_backend:
            ref = _run_all(ref_backend, bundle, x)
        with _entered(open_fn, bundle) as backend:
            got = _run_all(backend, bundle, x)
            desc = backend.description
        fig: dict[str, Any] = {"backend": desc, "images": len(x), "max_abs_diff": float(np.abs(got - ref).max())}
        if bundle.task == "classify":
            top2 = np.sort(ref, axis=1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]
            agree = ref.argmax(1) == got.argmax(1)
            judged = margin >= FP16_MARGIN
            fig.update(top1_agreement=float(agree.mean()), judged=int(judged.sum()),
                       close_calls=int((~judged).sum()), close_call_flips=int((~agree & ~judged).sum()))
            bad = int((~agree & judged).sum())
            if bad:
                out.problems.append(f"{bundle.name}: FP16 changes the top-1 class of {bad} of {int(judged.sum())} "
                                    f"images whose FP32 margin is at least {FP16_MARGIN}")
        elif bundle.task == "segment":
            pm, gm = ref[:, 0] > MASK_THRESHOLD, got[:, 0] > MASK_THRESHOLD
            if masks is not None:
                truth = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
                                  for m in masks])
                d32 = np.mean([dice(a, t) for a, t in zip(pm, truth)])
                d16 = np.mean([dice(a, t) for a, t in zip(gm, truth)])
                change = abs(float(d16 - d32))
                fig.update(dice_fp32=float(d32), dice_fp16=float(d16), dice_change=change)
                if change > FP16_MAX_DICE_CHANGE:
                    out.problems.append(f"{bundle.name}: FP16 changes the mean Dice by {change:.4f} "
                                        f"({d32:.4f} -> {d16:.4f}; at most {FP16_MAX_DICE_CHANGE})")
            else:
                agreement = float(np.mean([dice(a, b) for a, b in zip(pm, gm)]))
                fig.update(dice_fp32_vs_fp16=agreement, note="no ground truth: Dice between the FP32 and FP16 masks")
                if agreement < 1.0 - FP16_MAX_DICE_CHANGE:
                    out.problems.append(f"{bundle.name}: FP16 masks agree with FP32 masks at Dice {agreement:.4f} "
                                        f"(at least {1.0 - FP16_MAX_DICE_CHANGE})")
        else:
            fig["note"] = f"task {bundle.task!r}: no FP16 criterion"
        out.figures[bundle.name] = fig
    return out
