"""How often a classifier calls a zoomed-in view "polyp": the close-up shortcut, measured.

    python scripts/zoom_check.py BUNDLE [--data DIR] [--fold K] [--per-class N] [--polyps M]
                                 [--classes C,...|all] [--zooms 1,1.5,2,2.5] [--operating-point P]
                                 [--json OUT]

Kvasir-SEG's polyp images are close-ups and the polyp-free HyperKvasir images mostly wide views, so
a classifier can learn "close-up means polyp". This takes images of split-index ``K`` of the
official 2-fold split, the first by sorted name: ``N`` (default 40) of each polyp-free class (by
default the four lower-GI classes of the shared data; ``--classes all`` adds the ileum) and ``M``
(default 80) Kvasir-SEG polyps. It zooms into each as a camera would (the centre of the visible
field, 1/zoom of its width and height rounded down, scaled back to the field's size) and runs the
bundle on it as the viewer does (content area detected again on the zoomed view, the bundle's model
input, ONNX Runtime, no smoothing). It prints, per zoom, how many images are called polyp (polyp
probability at or above the bundle's operating point, or ``--operating-point``) and the flip rate:
the share whose call differs from the call at zoom 1, each way. On the polyp-free images every call
is a false alarm; on the polyp images a zoom can also cut the polyp out of view, so a flip there is
not by itself an error: with Kvasir-SEG's masks it also counts the polyps still in view (at least
half of the mask's area inside the zoomed view) and the calls among them. Images near the operating
point make the counts move by a few with a pixel of crop (rounding the crop's side instead of
rounding it down moved 3 of 160 at 2x for the fold-0 run): compare models with this script, not with
figures measured otherwise.

The held-out fold is only held out for a model that did not train on it: the bundle's manifest
says which folds it trained on, and the script prints the same note ``endoview eval`` does when it
trained on ``K`` (the shipped classifier trained on both folds).

Data: ``DATA`` (default ``$ENDOVIEW_DATA`` or ``../shared/data``) in the shared layout:
``hyperkvasir-lower-gi/labeled-images``, ``kvasir-seg``, ``hyperkvasir-ileum`` and
``hyperkvasir-official-splits/official_splits/2_fold_split.csv``. A measurement, not a test: under a
minute on two cores for the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.analysis.classifier import Classifier  # noqa: E402
from engine.analysis.content_area import detect_content_area  # noqa: E402
from engine.analysis.crop import model_input  # noqa: E402
from engine.analysis.verdict import operating_point, polyp_probability  # noqa: E402
from engine.backends import open_backend  # noqa: E402
from engine.bundle import load_bundle  # noqa: E402
from engine.types import POLYP_CLASSES  # noqa: E402
from train.data import load_dataset  # noqa: E402
from train.manifest import fold_note, trained_on  # noqa: E402

FOLDERS = ("hyperkvasir-lower-gi/labeled-images", "kvasir-seg", "hyperkvasir-ileum")
SPLIT = "hyperkvasir-official-splits/official_splits/2_fold_split.csv"
POLYP = "polyp"
#: the polyp-free classes checked by default: the lower-GI views a withdrawal shows most
CLASSES = ("normal-cecum", "bbps-2-3", "bbps-0-1", "impacted-stool")


def default_data() -> Path:
    return Path(os.environ.get("ENDOVIEW_DATA") or ROOT.parent / "shared" / "data")


def select(data: Path, fold: int, per_class: int, polyps: int, classes: tuple[str, ...] | None
           ) -> dict[str, list[Path]]:
    """class -> the first images (sorted names) of split-index ``fold``: ``per_class`` of each
    polyp-free class in ``classes`` (None: every one with images), then ``polyps`` of the polyp
    classes together, under "polyp"."""
    roots = [data / f for f in FOLDERS if (data / f).is_dir()]
    if not roots:
        raise SystemExit(f"zoom_check: no data under {data} (expected {', '.join(FOLDERS)})")
    ds = load_dataset(roots, data / SPLIT)
    if fold not in ds.folds:
        raise SystemExit(f"zoom_check: --fold {fold}: the split file's folds are {ds.folds}")
    by_class: dict[str, list[Path]] = defaultdict(list)
    for s in sorted(ds.fold(fold), key=lambda s: s.path.name):
        by_class[POLYP if s.label in POLYP_CLASSES else s.label].append(s.path)
    wanted = classes if classes is not None else sorted(c for c in by_class if c != POLYP)
    absent = [c for c in wanted if not by_class.get(c)]
    if absent:
        raise SystemExit(f"zoom_check: no images of {', '.join(absent)} in fold {fold} under {data}")
    chosen = {c: by_class[c][:per_class] for c in wanted}
    chosen[POLYP] = by_class.get(POLYP, [])[:polyps]
    return chosen


def zoom_window(image: np.ndarray, zoom: float) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """((x, y, w, h) of the centre of ``image``'s visible field, 1/``zoom`` of its width and height
    rounded down; the field's size (w, h))."""
    x, y, w, h = detect_content_area(image).bbox
    cw, ch = max(1, int(w / zoom)), max(1, int(h / zoom))
    return (x + (w - cw) // 2, y + (h - ch) // 2, cw, ch), (w, h)


def zoomed(image: np.ndarray, zoom: float) -> np.ndarray:
    """:func:`zoom_window` scaled back to the field's size (a camera moved closer, the black border
    left behind)."""
    if zoom == 1:
        return image
    (cx, cy, cw, ch), size = zoom_window(image, zoom)
    return cv2.resize(image[cy:cy + ch, cx:cx + cw], size, interpolation=cv2.INTER_LINEAR)


def polyp_in_view(image_path: Path, zooms: list[float]) -> list[float] | None:
    """Per zoom, the share of the polyp's area (its Kvasir-SEG mask, ``../masks/<name>``) left in
    the zoomed view; None without a mask."""
    mask_path = image_path.parent.parent / "masks" / image_path.name
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) if mask_path.is_file() else None
    if mask is None:
        return None
    image = cv2.imread(str(image_path))
    area = max(int((mask > 128).sum()), 1)
    out = []
    for z in zooms:
        (cx, cy, cw, ch), _ = zoom_window(image, z)
        out.append(int((mask[cy:cy + ch, cx:cx + cw] > 128).sum()) / area)
    return out


def polyp_scores(clf: Classifier, files: list[Path], zooms: list[float]) -> np.ndarray:
    """len(files) x len(zooms) polyp probabilities."""
    spec = clf.bundle.manifest["input"]
    size = (int(spec["height"]), int(spec["width"]))
    inset = tuple(spec["inset"]) if spec.get("inset") else None
    out = np.zeros((len(files), len(zooms)), dtype=np.float32)
    for i, f in enumerate(files):
        image = cv2.imread(str(f))
        if image is None:
            raise SystemExit(f"zoom_check: cannot read {f}")
        for j, z in enumerate(zooms):
            view = zoomed(image, z)
            x = model_input(view, detect_content_area(view), size, inset=inset)
            out[i, j] = polyp_probability(clf.predict(x, smooth=False))
    return out


def summarise(called: np.ndarray, zooms: list[float]) -> list[dict]:
    """Per zoom: images called polyp, and the calls that differ from zoom 1's (both ways)."""
    base = called[:, zooms.index(1.0)] if 1.0 in zooms else called[:, 0]
    return [{"zoom": z, "images": int(len(called)), "called_polyp": int(called[:, j].sum()),
             "flips": int((called[:, j] != base).sum()), "to_polyp": int((called[:, j] & ~base).sum()),
             "to_free": int((~called[:, j] & base).sum())} for j, z in enumerate(zooms)]


LABEL, COLUMN = 18, 10


def _line(label: str, cells: list[str]) -> str:
    return f"{label:<{LABEL}}" + "".join(f"{c:>{COLUMN}}" for c in cells)


def _counts(label: str, rows: list[dict]) -> str:
    return _line(label, [f"{r['called_polyp']}/{r['images']}" for r in rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="classify bundle folder")
    p.add_argument("--data", type=Path, default=default_data(), help="shared data folder (default %(default)s)")
    p.add_argument("--fold", type=int, default=1, help="split-index the images come from (default 1)")
    p.add_argument("--per-class", type=int, default=40, help="images per polyp-free class (default 40)")
    p.add_argument("--polyps", type=int, default=80, help="polyp images (default 80)")
    p.add_argument("--classes", default=",".join(CLASSES),
                   help="polyp-free classes, comma-separated, or 'all' (default %(default)s)")
    p.add_argument("--zooms", default="1,1.5,2,2.5", help="zoom factors, comma-separated (default %(default)s)")
    p.add_argument("--operating-point", type=float, help="polyp threshold (default: the bundle's)")
    p.add_argument("--backend", default="onnxruntime", help="engine backend (default onnxruntime)")
    p.add_argument("--json", type=Path, help="write the counts and every score here")
    args = p.parse_args(argv)
    zooms = sorted({float(z) for z in args.zooms.split(",") if z.strip()})
    if not zooms or min(zooms) < 1:
        raise SystemExit(f"zoom_check: --zooms must be factors >= 1, not {args.zooms!r}")
    if 1.0 not in zooms:
        zooms.insert(0, 1.0)  # the flips are counted against zoom 1

    bundle = load_bundle(args.bundle)
    op = args.operating_point if args.operating_point is not None else operating_point(bundle.manifest, bundle.path)
    note = fold_note(bundle.name, bundle.manifest, args.fold)
    training = bundle.manifest.get("training")
    training = training if isinstance(training, dict) else {}
    source = "--operating-point" if args.operating_point is not None else "the bundle's"
    print(f"{bundle.name} ({bundle.path}); images of fold {args.fold}; operating point {op:.2f} ({source})")
    if note is None:
        note = (f"{bundle.name} did not train on fold {args.fold}'s images: held-out figures"
                if trained_on(training, args.fold) is False
                else f"note: {bundle.name}'s manifest does not say which folds it trained on")
    print(note)
    classes = None if args.classes == "all" else tuple(c.strip() for c in args.classes.split(",") if c.strip())
    chosen = select(args.data, args.fold, args.per_class, args.polyps, classes)
    report: dict = {"bundle": str(bundle.path), "name": bundle.name, "fold": args.fold, "operating_point": op,
                    "fold_note": note, "zooms": zooms, "classes": {}, "groups": {}}
    called: dict[str, np.ndarray] = {}
    with open_backend(bundle, args.backend) as backend:
        clf = Classifier(bundle, backend)
        for cls, files in chosen.items():
            scores = polyp_scores(clf, files, zooms)
            called[cls] = scores >= op
            report["classes"][cls] = {"files": [f.name for f in files], "scores": scores.round(4).tolist(),
                                      "by_zoom": summarise(called[cls], zooms)}
    kept = [polyp_in_view(f, zooms) for f in chosen[POLYP]]
    in_view = np.array([k if k is not None else [np.nan] * len(zooms) for k in kept]).reshape(-1, len(zooms))
    report["classes"][POLYP]["polyp_in_view"] = np.round(in_view, 4).tolist()
    groups = {"polyp-free": [c for c in called if c != POLYP], "polyp": [POLYP]}
    for group, classes in groups.items():
        stacked = np.concatenate([called[c] for c in classes]) if classes else np.zeros((0, len(zooms)), bool)
        rows = summarise(stacked, zooms)
        report["groups"][group] = {"classes": classes, "by_zoom": rows}
        n = len(stacked)
        print(f"\n{group}: {n} images of fold {args.fold} ({', '.join(f'{c} {len(called[c])}' for c in classes)})")
        print(_line("zoom", [f"{z:g}x" for z in zooms]))
        print(_counts("called polyp", rows))
        print(_line("flips vs 1x", [f"{100 * r['flips'] / max(n, 1):.1f}%" for r in rows]))
        print(_line("  to polyp", [str(r["to_polyp"]) for r in rows]))
        print(_line("  to polyp-free", [str(r["to_free"]) for r in rows]))
        if len(classes) > 1:
            for c in classes:
                print(_counts(f"  {c}", summarise(called[c], zooms)))
        if group == "polyp" and n and not np.isnan(in_view).any():
            seen = in_view >= 0.5
            print(_line("polyp in view", [f"{int(seen[:, j].sum())}/{n}" for j in range(len(zooms))]))
            print(_line("  called polyp", [f"{int((seen[:, j] & stacked[:, j]).sum())}/{int(seen[:, j].sum())}"
                                            for j in range(len(zooms))]))
            print(_line("  out of view", [f"{int((~seen[:, j] & stacked[:, j]).sum())}/{int((~seen[:, j]).sum())}"
                                           for j in range(len(zooms))]))
            print("  (in view: at least half the polyp's mask area inside the zoomed view)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
