"""Add an int8 copy of a bundle's ONNX model, for CPUs (``python -m train.quantize``).

ONNX Runtime's static quantization (:func:`onnxruntime.quantization.quantize_static`): QDQ nodes,
int8 weights per output channel, uint8 activations whose ranges are calibrated (MinMax) on images of
the bundle's **training** fold, each through the viewer's path (content area, model input, inset).
The file goes into the bundle as ``model-int8.onnx`` (``"formats": {"onnx-int8": ...}``); the
exported graph stays, for TensorRT, CUDA and ``--precision fp32``. onnxruntime on the CPU then runs
the int8 model (``[model] precision = "auto"``).

The manifest's ``"quantization"`` records the method, the calibration images (paths relative to
``$ENDOVIEW_DATA``), how far the int8 outputs move from the exported model's on those images, the
command, and with ``--evaluate`` (segment bundles) the held-out fold's figures of both models, as
``endoview eval-seg --negatives ... --precision fp32|auto`` measures them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import shlex
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from engine.bundle import MANIFEST, load_bundle, sha256_file
from engine.errors import EndoviewError
from engine.files import replacing

from .data import load_dataset, load_model_input
from .errors import DataError, TrainError
from .images import progress_range
from .manifest import json_safe, portable, portable_prefixes
from .options import ALL_FOLDS, fold_arg

log = logging.getLogger(__name__)

INT8_FILE = "model-int8.onnx"
METHOD = ("onnxruntime static quantization: QDQ, int8 weights per output channel, uint8 activations, "
          "MinMax calibration")


def calibration_set(samples, heldout: int | None, n: int, seed: int) -> list:
    """``n`` images of the training fold (every fold but ``heldout``; ``heldout`` None: a model
    trained on every fold, every image), drawn at random with ``seed``."""
    pool = [s for s in samples if s.fold != heldout]
    if not pool:
        raise DataError(f"no training-fold images (every image is in held-out fold {heldout})")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[i] for i in sorted(pick)]


def quantize_onnx(src: Path, dst: Path, inputs: list[np.ndarray], input_name: str) -> None:
    """Write the int8 (QDQ) model of ``src`` to ``dst``, calibrated on ``inputs`` (H x W x 3 uint8)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x[None]}

    with tempfile.TemporaryDirectory(prefix="endoview-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))  # shape inference and graph clean-up first, as advised
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=output_head(onnx.load(str(pre))))


#: ops between a model's last layer and its outputs (an activation, an upsampling, a reshape)
_TAIL_OPS = {"Sigmoid", "Softmax", "Resize", "Upsample", "Transpose", "Reshape", "Flatten", "Identity", "Cast",
             "Squeeze", "Unsqueeze"}


def output_head(model) -> list[str]:
    """The nodes from the last weighted layer (Conv, Gemm, MatMul) to each output, which stay float:
    a probability quantized to 256 steps would move a presence rule's peak threshold (0.99)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names: list[str] = []
    todo = [o.name for o in model.graph.output]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in names:
            continue
        if node.op_type in _TAIL_OPS:
            names.append(node.name)
            todo.append(node.input[0])
        elif node.op_type in ("Conv", "Gemm", "MatMul"):
            names.append(node.name)
    return names


def agreement(fp32: Path, int8: Path, inputs: list[np.ndarray], input_name: str, output: str) -> dict[str, float]:
    """How far the int8 model's ``output`` moves from the exported model's on ``inputs``."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    diffs, same = [], []
    for x in inputs:
        a, b = (s.run([output], {input_name: x[None]})[0] for s in sessions)
        diffs.append(np.abs(a.astype(np.float64) - b).ravel())
        # probabilities: the same top class; a probability map: the same pixels at 0.5
        same.append(float(a.argmax() == b.argmax()) if a.ndim == 2 else float(np.mean((a >= 0.5) == (b >= 0.5))))
    d = np.concatenate(diffs)
    return {"images": len(inputs), "mean_abs_difference": float(d.mean()), "max_abs_difference": float(d.max()),
            "p99_abs_difference": float(np.percentile(d, 99)),
            ("same_top_class" if a.ndim == 2 else "same_mask_pixels"): float(np.mean(same))}


def evaluate_heldout(bundle_dir: Path, samples, heldout: int, *, classifier: Path | None,
                     threads: int | None) -> dict[str, Any]:
    """The held-out fold's figures of the exported and the int8 model (segment bundles)."""
    from .seg.detect_eval import evaluate_detection, fold_images, public
    from .seg.evaluate import evaluate_bundle

    pairs, negatives = fold_images(samples, heldout)
    positives = [p.image for p in pairs]
    out: dict[str, Any] = {"fold": heldout, "polyp_images": len(positives), "negative_images": len(negatives)}
    for precision, key in (("fp32", "fp32"), ("auto", "int8")):
        log.info("held-out fold %d, %s model", heldout, key)
        seg = evaluate_bundle(bundle_dir, pairs, threads=threads, precision=precision)
        det = public(evaluate_detection(bundle_dir, positives, negatives, classifier=classifier, threads=threads,
                                        precision=precision))
        out[key] = {**{k: seg[k] for k in ("dice", "jaccard", "recall", "precision", "inference_ms")},
                    "image_level": {k: det[k] for k in ("sensitivity", "specificity", "auroc",
                                                        "false_alarms_per_minute") if k in det},
                    **({"by_model": det["by_model"]} if "by_model" in det else {})}
        if seg.get("model_precision") != key:
            raise TrainError(f"the {key} evaluation ran the {seg.get('model_precision')} model")
    return out


def trained_on_every_fold(training: dict[str, Any]) -> bool:
    """Whether a manifest's ``training`` says the model trained on every fold (a ``--fold all`` run)."""
    folds = training.get("trained_on_folds")
    return training.get("heldout_fold") is None and (folds == "every fold" or (isinstance(folds, list) and len(folds) > 1))


def quantize_bundle(bundle_dir: str | Path, data: list[str], split_csv: str | Path, *, heldout: int | str | None = None,
                    images: int = 200, seed: int = 0, evaluate: bool = False, classifier: str | Path | None = None,
                    threads: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Quantize the bundle in place (see the module's docstring); returns its ``"quantization"``."""
    bundle = load_bundle(Path(bundle_dir))
    if not bundle.has("onnx"):
        raise TrainError(f"{bundle.path} has no ONNX model to quantize")
    every = heldout == ALL_FOLDS
    if heldout is None:
        training = bundle.manifest.get("training") or {}
        heldout = training.get("heldout_fold")
        every = trained_on_every_fold(training)
        if heldout is None and not every:
            raise TrainError(f"{bundle.path}: its manifest names no held-out fold; give --fold K (the fold the "
                             "model did not train on), or --fold all for a model trained on every fold")
    if every:
        heldout = None
        if evaluate:
            raise TrainError(f"{bundle.path} trained on every fold: there is no held-out fold to --evaluate on; "
                             "quantize a cross-validation run's bundle to measure the int8 model against it")
    if evaluate and bundle.task != "segment":
        raise TrainError("--evaluate measures segment bundles (Dice and image-level figures); evaluate a "
                         "classifier with 'endoview eval' instead")
    ds = load_dataset(data, split_csv)
    calib = calibration_set(ds.samples, None if heldout is None else int(heldout), images, seed)
    log.info("calibrating on %d images of %s (%s)", len(calib), "every fold" if heldout is None else "the training fold",
             ", ".join(f"{k} {v}" for k, v in sorted(Counter(s.label for s in calib).items())))
    inputs = [load_model_input(calib[i].path, bundle.input_size, inset=bundle.inset)
              for i in progress_range(len(calib), "calibration images", progress)]
    src = bundle.file("onnx")
    output = bundle.output_names[0]
    with replacing(bundle.path / INT8_FILE, force=True, what="int8 model", error=TrainError) as tmp:
        quantize_onnx(src, tmp, inputs, bundle.input_name)
        close = agreement(src, tmp, inputs, bundle.input_name, output)
    log.info("int8 against the exported model on the calibration images: %s", close)
    argv = ["python", "-m", "train.quantize", str(bundle.path.resolve()), "--data", *map(str, data), "--split-csv",
            str(split_csv), "--fold", ALL_FOLDS if heldout is None else str(heldout), "--images", str(images), "--seed", str(seed)]
    if evaluate:
        argv.append("--evaluate")
    if classifier is not None:
        argv += ["--classifier", str(classifier)]
    import onnxruntime

    info: dict[str, Any] = {
        "file": INT8_FILE, "method": METHOD, "onnxruntime": onnxruntime.__version__,
        "calibration": {"fold": sorted({s.fold for s in calib}), "images": len(calib), "seed": seed,
                        "by_class": dict(sorted(Counter(s.label for s in calib).items())),
                        "data": [str(Path(d).expanduser().resolve()) for d in data],
                        "split": str(Path(split_csv).expanduser().resolve())},
        "agreement_on_calibration_images": close,
        "command": shlex.join(argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest = dict(bundle.manifest)
    manifest["files"] = {**manifest["files"], INT8_FILE: sha256_file(bundle.path / INT8_FILE)}
    manifest["formats"] = {**manifest["formats"], "onnx-int8": INT8_FILE}
    _write_manifest(bundle.path, manifest, info, data, split_csv)
    if evaluate:  # the bundle now has both models
        info["heldout"] = evaluate_heldout(bundle.path, ds.samples, int(heldout), threads=threads,
                                           classifier=Path(classifier) if classifier is not None else None)
        _write_manifest(bundle.path, manifest, info, data, split_csv)
    return load_bundle(bundle.path).manifest["quantization"]


def _write_manifest(folder: Path, manifest: dict[str, Any], info: dict[str, Any], data, split_csv) -> None:
    """The manifest with ``info`` as its "quantization", paths made portable: data under
    ``$ENDOVIEW_DATA``, the checkout as ".", a bundle elsewhere relative to its parent folder."""
    out = {**manifest, "quantization": json_safe(portable(info, portable_prefixes(data, split_csv, folder)))}
    with replacing(folder / MANIFEST, force=True, what="manifest", error=TrainError) as tmp:
        tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


EPILOG = """\
The int8 model runs where onnxruntime runs on the CPU ([model] precision = "auto", the default);
'--precision fp32' (annotate, bench, eval-seg, the viewer's config) runs the exported model.

example (the shipped segmenter, trained on fold 0: held-out fold 1):
  D=../shared/data
  python -m train.quantize engine/assets/models/polyp-unet --fold 1 --evaluate \\
      --data $D/kvasir-seg $D/hyperkvasir-lower-gi/labeled-images $D/hyperkvasir-ileum \\
      --split-csv $D/hyperkvasir-official-splits/official_splits/2_fold_split.csv
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.quantize", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Add an int8 copy of a bundle's ONNX model (onnxruntime static "
                                            "quantization, calibrated on its training fold) for CPUs.")
    p.add_argument("bundle", type=Path, help="model bundle folder (written in place)")
    p.add_argument("--data", nargs="+", required=True, metavar="ROOT",
                   help="data roots as 'train classify' takes them (HyperKvasir folders, Kvasir-SEG)")
    p.add_argument("--split-csv", type=Path, required=True, help="the official split file (2_fold_split.csv)")
    p.add_argument("--fold", type=fold_arg, help="the bundle's held-out fold (default: its manifest's); calibration "
                   "uses the other fold; 'all': a model trained on every fold, calibrated on images of every fold")
    p.add_argument("--images", type=int, default=200, help="calibration images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="which calibration images (default 0)")
    p.add_argument("--evaluate", action="store_true", help="segment bundles: measure both models on the "
                   "held-out fold (Dice; image-level sensitivity, specificity, AUROC) into the manifest")
    p.add_argument("--classifier", type=Path, metavar="BUNDLE",
                   help="with --evaluate: the classify bundle beside it, for the combined verdict's figures")
    p.add_argument("--threads", type=int, help="onnxruntime threads for --evaluate")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        q = quantize_bundle(args.bundle, args.data, args.split_csv, heldout=args.fold, images=args.images,
                            seed=args.seed, evaluate=args.evaluate, classifier=args.classifier,
                            threads=args.threads, progress=not args.no_progress and sys.stderr.isatty())
    except EndoviewError as exc:  # a missing or foreign bundle, missing data: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: q[k] for k in ("file", "calibration", "agreement_on_calibration_images", "heldout")
                      if k in q}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
