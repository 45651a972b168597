"""Tiny but real model bundles for tests (no torch needed for the ONNX part).

API (stable, used across the test suite):

- ``make_tiny_classifier_bundle(folder, *, labels=("a","b","c"), size=(32, 32), seed=0,
  trained=True, torchscript="auto") -> Bundle``
- ``reference_probs(images_uint8_nhwc, seed=0, labels=("a","b","c"), size=(32, 32)) -> ndarray``
- ``make_tiny_segmenter_bundle(folder, size=(32, 32), *, seed=0, torchscript="auto") -> Bundle``
- ``reference_mask(images_uint8_nhwc, seed=0) -> ndarray``
- ``random_images(n, size=(32, 32), seed=0) -> ndarray`` (uint8 N x H x W x 3 RGB)

The classifier is the same graph shape as the real ones: uint8 RGB NHWC in, preprocessing as
graph ops in the exporters' order (``train/models.py`` ``WithPreprocessing``): Cast to float
first, then Transpose to NCHW, then Sub/Div by ImageNet mean/std * 255 (the Cast comes first
because TensorRT's ONNX parser refuses any intermediate uint8 tensor), a 3x3 conv + ReLU,
GlobalAveragePool, Flatten, Gemm, Softmax -> "probs" [N, C]. The segmenter shares the
preprocessing, then a 1x1 conv and Sigmoid -> "mask" [N, 1, H, W]. The batch dimension is dynamic.
When torch is importable (``torchscript="auto"``) the bundle also carries an equivalent
TorchScript module (same weights) as ``model.torchscript.pt``, returning ``{"probs": ...}``.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.bundle import Bundle, write_bundle

OPSET = 17  # what TensorRT 10's parser and onnxruntime both take
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
HIDDEN = 8


def random_images(n: int, size: tuple[int, int] = (32, 32), seed: int = 0) -> np.ndarray:
    """``n`` random uint8 RGB images, N x H x W x 3: a random colour per image plus noise and a
    gradient, so that the tiny models' outputs differ from image to image."""
    rng = np.random.default_rng(seed + 1000)
    h, w = size
    base = rng.uniform(0, 255, (n, 1, 1, 3))
    ramp = np.linspace(-1.0, 1.0, w)[None, None, :, None] * rng.uniform(-80, 80, (n, 1, 1, 3))
    noise = rng.normal(0.0, 40.0, (n, h, w, 3))
    return np.clip(base + ramp + noise, 0, 255).astype(np.uint8)


def _want_torch(torchscript: bool | str) -> bool:
    if torchscript == "auto":
        try:
            return importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):
            return False
    if torchscript not in (True, False):
        raise ValueError(f"torchscript must be True, False or 'auto', not {torchscript!r}")
    return bool(torchscript)


# ---------------------------------------------------------------------------------------------
# classifier


def _classifier_weights(seed: int, num_classes: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv_w": rng.normal(0.0, 0.4, (HIDDEN, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0.0, 0.1, (HIDDEN,)).astype(np.float32),
        "fc_w": rng.normal(0.0, 0.5, (num_classes, HIDDEN)).astype(np.float32),
        "fc_b": rng.normal(0.0, 0.1, (num_classes,)).astype(np.float32),
    }


def _preprocess_nodes(input_name: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Cast, Transpose, Sub, Div: the order torch.onnx.export gives ``WithPreprocessing``."""
    inits = [
        numpy_helper.from_array((MEAN * 255.0).reshape(1, 3, 1, 1), "mean255"),
        numpy_helper.from_array((STD * 255.0).reshape(1, 3, 1, 1), "std255"),
    ]
    nodes = [
        helper.make_node("Cast", [input_name], ["x_float"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Transpose", ["x_float"], ["x_nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Sub", ["x_nchw", "mean255"], ["x_centred"], name="sub_mean"),
        helper.make_node("Div", ["x_centred", "std255"], ["x_norm"], name="div_std"),
    ]
    return nodes, inits, "x_norm"


def _classifier_onnx(labels: Sequence[str], size: tuple[int, int], seed: int) -> bytes:
    h, w = size
    wts = _classifier_weights(seed, len(labels))
    nodes, inits, x = _preprocess_nodes("image")
    inits += [numpy_helper.from_array(v, k) for k, v in wts.items()]
    nodes += [
        helper.make_node("Conv", [x, "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", h, w, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(labels)])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="endoview-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _conv3x3_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NCHW float64 conv, kernel 3x3, padding 1, stride 1."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # N C H W 3 3
    return np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]


def reference_probs(
    images_uint8_nhwc: np.ndarray,
    seed: int = 0,
    labels: Sequence[str] = ("a", "b", "c"),
    size: tuple[int, int] = (32, 32),
) -> np.ndarray:
    """What the tiny classifier must output for ``images`` (float32 N x C), computed in numpy."""
    imgs = np.asarray(images_uint8_nhwc)
    if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[1:] != (size[0], size[1], 3):
        raise ValueError(f"expected uint8 N x {size[0]} x {size[1]} x 3 images, got {imgs.dtype} {imgs.shape}")
    wts = {k: v.astype(np.float64) for k, v in _classifier_weights(seed, len(labels)).items()}
    x = (imgs.astype(np.float64) - MEAN.astype(np.float64) * 255.0) / (STD.astype(np.float64) * 255.0)
    x = x.transpose(0, 3, 1, 2)
    y = np.maximum(_conv3x3_same(x, wts["conv_w"], wts["conv_b"]), 0.0)
    feats = y.mean(axis=(2, 3))
    logits = feats @ wts["fc_w"].T + wts["fc_b"]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _classifier_torchscript(labels: Sequence[str], seed: int) -> bytes:
    import torch

    wts = _classifier_weights(seed, len(labels))

    class TinyClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean255", torch.from_numpy(MEAN * 255.0).view(1, 3, 1, 1))
            self.register_buffer("std255", torch.from_numpy(STD * 255.0).view(1, 3, 1, 1))
            self.conv = torch.nn.Conv2d(3, HIDDEN, 3, padding=1)
            self.fc = torch.nn.Linear(HIDDEN, len(labels))
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(wts["conv_w"]))
                self.conv.bias.copy_(torch.from_numpy(wts["conv_b"]))
                self.fc.weight.copy_(torch.from_numpy(wts["fc_w"]))
                self.fc.bias.copy_(torch.from_numpy(wts["fc_b"]))

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            x = image.float().permute(0, 3, 1, 2)  # the exporters' order: Cast first
            x = (x - self.mean255) / self.std255
            x = torch.relu(self.conv(x)).mean(dim=(2, 3))
            return {"probs": torch.softmax(self.fc(x), dim=1)}

    return _save_torchscript(TinyClassifier())


def _save_torchscript(module: object) -> bytes:
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; we still ship it
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module.eval()), buf)
    return buf.getvalue()


def make_tiny_classifier_bundle(
    folder: str | Path,
    *,
    labels: Sequence[str] = ("a", "b", "c"),
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
    trained: bool = True,
    torchscript: bool | str = "auto",
    name: str | None = None,
    force: bool = False,
) -> Bundle:
    """Write a tiny classifier bundle to ``folder`` and return it loaded."""
    labels = tuple(labels)
    files: dict[str, Path | bytes] = {"model.onnx": _classifier_onnx(labels, size, seed)}
    formats = {"onnx": "model.onnx"}
    if _want_torch(torchscript):
        files["model.torchscript.pt"] = _classifier_torchscript(labels, seed)
        formats["torchscript"] = "model.torchscript.pt"
    return write_bundle(
        folder,
        name=name or f"tiny-classifier-{len(labels)}c-{size[0]}x{size[1]}-s{seed}",
        task="classify",
        labels=labels,
        input_size=size,
        files=files,
        formats=formats,
        outputs={"probabilities": "probs"},
        trained=trained,
        training={"recipe": "none: fixed random weights for tests", "seed": seed},
        metrics={},
        notes="tiny test model from tests/tiny_models.py",
        force=force,
    )


# ---------------------------------------------------------------------------------------------
# segmenter


def _segmenter_weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 7)
    return rng.normal(0.0, 3.0, (1, 3, 1, 1)).astype(np.float32), rng.normal(0.0, 0.5, (1,)).astype(np.float32)


def _segmenter_onnx(size: tuple[int, int], seed: int) -> bytes:
    h, w = size
    cw, cb = _segmenter_weights(seed)
    nodes, inits, x = _preprocess_nodes("image")
    inits += [numpy_helper.from_array(cw, "seg_w"), numpy_helper.from_array(cb, "seg_b")]
    nodes += [
        helper.make_node("Conv", [x, "seg_w", "seg_b"], ["seg_logits"], name="seg_conv"),
        helper.make_node("Sigmoid", ["seg_logits"], ["mask"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_segmenter",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", h, w, 3])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, h, w])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="endoview-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def reference_mask(images_uint8_nhwc: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the tiny segmenter must output (float32 N x 1 x H x W probabilities)."""
    imgs = np.asarray(images_uint8_nhwc)
    if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[3] != 3:
        raise ValueError(f"expected uint8 N x H x W x 3 images, got {imgs.dtype} {imgs.shape}")
    cw, cb = _segmenter_weights(seed)
    x = (imgs.astype(np.float64) - MEAN * 255.0) / (STD * 255.0)
    z = np.einsum("nhwc,c->nhw", x, cw.reshape(3).astype(np.float64)) + float(cb[0])
    return (1.0 / (1.0 + np.exp(-z)))[:, None].astype(np.float32)


def _segmenter_torchscript(seed: int) -> bytes:
    import torch

    cw, cb = _segmenter_weights(seed)

    class TinySegmenter(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean255", torch.from_numpy(MEAN * 255.0).view(1, 3, 1, 1))
            self.register_buffer("std255", torch.from_numpy(STD * 255.0).view(1, 3, 1, 1))
            self.conv = torch.nn.Conv2d(3, 1, 1)
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(cw))
                self.conv.bias.copy_(torch.from_numpy(cb))

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            x = (image.float().permute(0, 3, 1, 2) - self.mean255) / self.std255
            return {"mask": torch.sigmoid(self.conv(x))}

    return _save_torchscript(TinySegmenter())


def make_tiny_segmenter_bundle(
    folder: str | Path,
    size: tuple[int, int] = (32, 32),
    *,
    seed: int = 0,
    labels: Sequence[str] = ("polyp",),
    trained: bool = True,
    torchscript: bool | str = "auto",
    force: bool = False,
) -> Bundle:
    """Write a tiny segmenter bundle (task "segment", output "mask" N x 1 x H x W)."""
    files: dict[str, Path | bytes] = {"model.onnx": _segmenter_onnx(size, seed)}
    formats = {"onnx": "model.onnx"}
    if _want_torch(torchscript):
        files["model.torchscript.pt"] = _segmenter_torchscript(seed)
        formats["torchscript"] = "model.torchscript.pt"
    return write_bundle(
        folder,
        name=f"tiny-segmenter-{size[0]}x{size[1]}-s{seed}",
        task="segment",
        labels=tuple(labels),
        input_size=size,
        files=files,
        formats=formats,
        outputs={"mask": "mask"},
        trained=trained,
        training={"recipe": "none: fixed random weights for tests", "seed": seed},
        notes="tiny test model from tests/tiny_models.py",
        force=force,
    )
