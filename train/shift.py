"""``python -m train.shift``: the frame's verdict on held-out images as another camera would show them.

The models will meet frames from other endoscopes, processors and centres, which are not in the
data here. This command takes a fold's polyp images and polyp-free images (the fold the given
models did not train on) and runs the viewer's analysis (content area, both models, the verdict,
smoothing off) on each image as it is and as changed by one shift at a time:

- ``jpeg``: JPEG quality 25 (a compressed recording);
- ``low-res``: shrunk to 288 lines (an old processor, a small capture);
- ``warm`` / ``cool``: red x1.18 and blue x0.85, or red x0.88, green x1.05 and blue x1.15
  (another white balance);
- ``dark`` / ``bright``: gamma 1.5 or 0.7 (another light source or exposure);
- ``blur``: a Gaussian of sigma 1/300 of the image's longer side (a soft focus);
- ``noise``: Gaussian noise of sigma 8 grey levels (a noisy sensor, fixed seed).

For each it prints the verdict's and the classifier's sensitivity and specificity. A shift that
costs much shows what training should augment; none of them is another centre's real frames.

Example (the cross-validation pair trained on fold 0, on fold 1):
  D=$ENDOVIEW_DATA
  python -m train.shift SEG_TRAINED_ON_0 CLF_TRAINED_ON_0 --fold 1 \\
      --data $D/kvasir-seg $D/hyperkvasir-lower-gi/labeled-images $D/hyperkvasir-ileum \\
      --split-csv $D/hyperkvasir-official-splits/official_splits/2_fold_split.csv
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .options import add_data_options

log = logging.getLogger(__name__)


def _gains(b: float, g: float, r: float) -> Callable[[np.ndarray], np.ndarray]:
    lut = np.stack([np.clip(np.arange(256) * k, 0, 255) for k in (b, g, r)], 1).astype(np.uint8)  # 256 x 3
    return lambda im: np.stack([lut[:, c][im[..., c]] for c in range(3)], -1)


def _gamma(gamma: float) -> Callable[[np.ndarray], np.ndarray]:
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    return lambda im: lut[im]


def _jpeg(im: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 25])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _low_res(im: np.ndarray) -> np.ndarray:
    h, w = im.shape[:2]
    return cv2.resize(im, (max(1, round(w * 288 / h)), 288), interpolation=cv2.INTER_AREA) if h > 288 else im


def _blur(im: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(im, (0, 0), max(im.shape[:2]) / 300.0)


def _noise(im: np.ndarray) -> np.ndarray:
    # seeded by the image itself: the same image gets the same noise in every run
    rng = np.random.default_rng(int(im[::17, ::17].sum()) % (2 ** 32))
    return np.clip(im + rng.normal(0.0, 8.0, im.shape), 0, 255).astype(np.uint8)


#: name -> change of one BGR uint8 image (None: the image as it is)
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "none": None,
    "jpeg": _jpeg,
    "low-res": _low_res,
    "warm": _gains(0.85, 1.0, 1.18),
    "cool": _gains(1.15, 1.05, 0.88),
    "dark": _gamma(1.5),
    "bright": _gamma(0.7),
    "blur": _blur,
    "noise": _noise,
}


def measure(seg: Path, clf: Path, positives, negatives, shifts, threads: int | None = None) -> dict[str, Any]:
    """{shift: {"verdict": {sensitivity, specificity}, "classifier": {...}}} on these images."""
    from .seg.detect_eval import image_scores

    out: dict[str, Any] = {}
    for name in shifts:
        rows, positive, _, _ = image_scores(seg, positives, negatives, classifier=clf, threads=threads,
                                            transform=SHIFTS[name])
        verdict = np.array([r["combined"] for r in rows])
        said = np.array([r["clf"] for r in rows])
        out[name] = {
            "verdict": {"sensitivity": round(float(verdict[positive].mean()), 4),
                        "specificity": round(float((~verdict[~positive]).mean()), 4)},
            "classifier": {"sensitivity": round(float(said[positive].mean()), 4),
                           "specificity": round(float((~said[~positive]).mean()), 4)},
        }
        log.info("%s: %s", name, out[name])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.shift", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("segmenter", type=Path, help="segment bundle (trained on the other fold)")
    p.add_argument("classifier", type=Path, help="classify bundle (trained on the other fold)")
    p.add_argument("--fold", type=int, required=True, help="the fold the two did not train on")
    p.add_argument("--shifts", nargs="+", choices=list(SHIFTS), default=list(SHIFTS), metavar="SHIFT",
                   help=f"which ({', '.join(SHIFTS)}; default all)")
    p.add_argument("--limit", type=int, help="only the first N polyp and N polyp-free images (a quick look)")
    add_data_options(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from engine.errors import EndoviewError

    try:
        from .data import load_dataset
        from .seg.detect_eval import fold_images

        pairs, negatives = fold_images(load_dataset(args.data, args.split_csv).samples, args.fold)
        positives = [q.image for q in pairs]
        if args.limit:
            positives, negatives = positives[:args.limit], negatives[:args.limit]
        result = measure(args.segmenter, args.classifier, positives, negatives, args.shifts, args.threads)
    except EndoviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"fold": args.fold, "polyp_images": len(positives), "negative_images": len(negatives),
                          "shifts": result}, indent=2))
    else:
        print(f"fold {args.fold}: {len(positives)} polyp images, {len(negatives)} polyp-free images")
        print(f"{'shift':<8} {'verdict sens / spec':>20} {'classifier sens / spec':>23}")
        for name, r in result.items():
            v, c = r["verdict"], r["classifier"]
            print(f"{name:<8} {v['sensitivity']:>9.3f} / {v['specificity']:.3f} "
                  f"{c['sensitivity']:>12.3f} / {c['specificity']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
