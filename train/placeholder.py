"""Export an UNTRAINED MobileNetV3-Large bundle (random weights) as the viewer's placeholder.

Until ``endoview train`` produces real models, ``assets/`` holds this bundle so the pipeline runs
end to end; its manifest says ``"trained": false`` and the overlay shows "UNTRAINED MODEL".

    python -m train.placeholder assets/models/mobilenetv3-large-untrained --force
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision

from engine.bundle import write_bundle

from .labels import RAW_CLASSES
from .models import WithPreprocessing

logger = logging.getLogger(__name__)


def export_placeholder(out: Path, *, size: int = 224, seed: int = 0, force: bool = False,
                       torchscript: bool = False):
    torch.manual_seed(seed)
    net = torchvision.models.mobilenet_v3_large(weights=None, num_classes=len(RAW_CLASSES))
    model = WithPreprocessing(net).eval()
    example = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, ts_path = Path(tmp) / "model.onnx", Path(tmp) / "model.torchscript.pt"
        torch.onnx.export(model, (example,), onnx_path, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["probs"],
                          dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}})
        with torch.inference_mode():
            torch.jit.trace(model, example).save(str(ts_path))
            reference = model(example).numpy()
        import onnxruntime as ort

        got = ort.InferenceSession(str(onnx_path)).run(None, {"image": example.numpy()})[0]
        diff = float(np.abs(got - reference).max())
        files, formats = {"model.onnx": onnx_path}, {"onnx": "model.onnx"}
        if torchscript:
            files["model.torchscript.pt"], formats["torchscript"] = ts_path, "model.torchscript.pt"
        bundle = write_bundle(
            out, name="mobilenetv3-large-untrained", task="classify", labels=list(RAW_CLASSES),
            input_size=(size, size), files=files, formats=formats,
            outputs={"probabilities": "probs"}, trained=False,
            training={"data": None, "weights": "random initialisation (seed %d)" % seed,
                      "arch": "torchvision mobilenet_v3_large, raw head (23 classes)"},
            metrics={"onnxruntime_vs_torch_max_abs_diff": diff},
            notes="PLACEHOLDER: exported from an untrained network; its labels are meaningless. "
                  "Replace with a bundle from 'endoview export'.",
            force=force,
        )
    return bundle, diff


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="bundle folder to write")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.add_argument("--torchscript", action="store_true",
                   help="also write model.torchscript.pt for the torch backend (17 MB more)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    bundle, diff = export_placeholder(args.out, size=args.size, seed=args.seed, force=args.force,
                                      torchscript=args.torchscript)
    print(f"wrote {bundle.path} (onnxruntime vs torch max abs diff {diff:.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
