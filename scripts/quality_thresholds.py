"""Re-measure the image-quality thresholds' table (engine/procedure/quality.py's docstring) on the
real images, through both ways the quality check shrinks a frame.

    python scripts/quality_thresholds.py [--data DIR] [--stride N] [--json OUT]

Every image of ``DATA/kvasir-seg/images``, ``DATA/hyperkvasir-lower-gi`` and ``DATA/hyperkvasir-ileum``
(2,009 with the shared data; ``--stride N`` takes every N-th; ``--lines N`` scales each to N
lines first), as it is and degraded three ways
(Gaussian blur with sigma 1 % of the longest side, darkened to 20 %, gain x3 clipped), each with its
own detected content area, is measured by :class:`engine.procedure.quality.QualityChecker`:

- **direct**: ``check(frame, area)``, the field shrunk from full size (the path before the
  Analyzer shared its half-resolution field);
- **shared**: ``check(frame, area, ModelInputs(frame, area))``, the shrink starting from the model
  inputs' 2 x 2 average of the field (what the Analyzer does now).

Prints, for each path, each measure's range on the originals and on the degraded copies, the
frames each flag catches, and where the two paths differ (largest differences of the measures,
frames whose flags differ). Also the weaker blur of the docstring (sigma 0.4 %, every fourth
image). A measurement, not a test: a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.analysis.content_area import detect_content_area  # noqa: E402
from engine.analysis.crop import ModelInputs  # noqa: E402
from engine.procedure.quality import QualityChecker  # noqa: E402

KINDS = ("original", "blurred", "darkened", "saturated")
FLAGS = ("blurred", "dark", "overexposed")


def images(data: Path) -> list[Path]:
    files = sorted((data / "kvasir-seg" / "images").glob("*.jpg"))
    files += sorted((data / "hyperkvasir-lower-gi").rglob("*.jpg"))
    files += sorted((data / "hyperkvasir-ileum").rglob("*.jpg"))
    return files


def degrade(img: np.ndarray, kind: str, sigma_share: float = 0.01) -> np.ndarray:
    if kind == "blurred":
        return cv2.GaussianBlur(img, (0, 0), max(img.shape[:2]) * sigma_share)
    if kind == "darkened":
        return (img * 0.2).astype(np.uint8)
    if kind == "saturated":
        return np.clip(img.astype(np.int32) * 3, 0, 255).astype(np.uint8)
    return img


def measures(checker: QualityChecker, img: np.ndarray, area) -> dict[str, tuple]:
    direct = checker.check(img, area)
    shared = checker.check(img, area, ModelInputs(img, area))
    return {"direct": direct, "shared": shared}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("ENDOVIEW_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--lines", type=int, default=None,
                    help="scale each image to this many lines first (bilinear), as a 720p or 1080p source")
    ap.add_argument("--json", type=Path, default=None, help="write every frame's measures here")
    args = ap.parse_args(argv)
    files = images(args.data)[:: args.stride]
    if not files:
        print(f"no images under {args.data}", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    checker = QualityChecker()
    rows = []  # (name, kind, path, sharpness, brightness, clipped, blurred, dark, overexposed)
    for i, f in enumerate(files):
        img = cv2.imread(str(f))
        if img is None:
            print(f"cannot read {f}", file=sys.stderr)
            return 2
        if args.lines:
            img = cv2.resize(img, None, fx=args.lines / img.shape[0], fy=args.lines / img.shape[0],
                             interpolation=cv2.INTER_LINEAR)
        area = detect_content_area(img)
        variants = {k: degrade(img, k) for k in KINDS}
        if i % 4 == 0:
            variants["blurred_0.4%"] = degrade(img, "blurred", 0.004)
        for kind, im in variants.items():
            for path, q in measures(checker, im, area).items():
                rows.append((f.name, kind, path, q.sharpness, q.brightness, q.clipped,
                             q.blurred, q.dark, q.overexposed, area.bbox[2], area.bbox[3]))
        if (i + 1) % 200 == 0:
            print(f"{i + 1} / {len(files)} images", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows))
    report(rows, len(files))
    return 0


def report(rows, n: int) -> None:
    def sel(kind, path):
        return [r for r in rows if r[1] == kind and r[2] == path]

    print(f"{n} images; each measure's range (min .. max) and the frames each flag catches")
    for path in ("direct", "shared"):
        print(f"\n[{path}]")
        for kind in (*KINDS, "blurred_0.4%"):
            rs = sel(kind, path)
            if not rs:
                continue
            a = np.array([r[3:6] for r in rs], float)
            flags = {f: sum(r[6 + j] for r in rs) for j, f in enumerate(FLAGS)}
            sharp = np.sort(a[:, 0])
            print(f"  {kind:<13} n={len(rs):5d}  sharpness {sharp[0]:.1f} .. {sharp[-1]:.1f} "
                  f"(next lowest {sharp[1]:.1f})  brightness {a[:, 1].min():.1f} .. {a[:, 1].max():.1f}  "
                  f"clipped {a[:, 2].min():.3f} .. {a[:, 2].max():.3f}  flagged {flags}")
    print("\nshared vs direct (same frame):")
    d = {(r[0], r[1]): r for r in rows if r[2] == "direct"}
    s = {(r[0], r[1]): r for r in rows if r[2] == "shared"}
    for kind in (*KINDS, "blurred_0.4%"):
        keys = [k for k in d if k[1] == kind]
        if not keys:
            continue
        dd = np.array([d[k][3:6] for k in keys], float)
        ss = np.array([s[k][3:6] for k in keys], float)
        rel = np.abs(ss[:, 0] - dd[:, 0]) / np.maximum(dd[:, 0], 1e-9)
        changed = [(k[0], d[k][6:9], s[k][6:9], round(d[k][3], 2), round(s[k][3], 2)) for k in keys
                   if d[k][6:9] != s[k][6:9]]
        print(f"  {kind:<13} sharpness: largest relative difference {rel.max():.4f} (median {np.median(rel):.4f}); "
              f"brightness: largest {np.abs(ss[:, 1] - dd[:, 1]).max():.3f}; "
              f"clipped: largest {np.abs(ss[:, 2] - dd[:, 2]).max():.4f}; frames whose flags differ: {len(changed)}")
        for c in changed:
            print(f"    {c[0]}: flags (blurred, dark, overexposed) {c[1]} -> {c[2]}, sharpness {c[3]} -> {c[4]}")
    # how often the shared half is used at all (the field at least twice 256 px)
    def factor(w, h):
        s = 256 / max(w, h)
        return min(w // max(1, round(w * s)), h // max(1, round(h * s))) if max(w, h) > 256 else 1

    used = sum(1 for r in rows if r[1] == "original" and r[2] == "direct" and factor(r[9], r[10]) >= 2)
    print(f"\noriginals whose field is at least twice the working size (the shared path starts from "
          f"the half): {used} of {n}")


if __name__ == "__main__":
    raise SystemExit(main())
