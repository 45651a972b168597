"""``python -m train.sure``: choose the segmenter's "sure" rule, the verdict's second way to "polyp".

The frame's verdict (engine.analysis.verdict) is "polyp" where the classifier reaches its
operating point and the segmenter has a mask, **or** where the segmenter is sure: its peak
probability reaches ``min_peak`` and at least ``min_area`` of the model input is over its mask
threshold. (Where the segment bundle also has a score rule, ``python -m train.score``, the verdict
weighs both models with that instead and does not ask this one.) This command chooses
those numbers without touching the held-out fold of the models it is written into, by
cross-fitting:

1. ``--fit SEG CLF FOLD``: a segmenter and a classifier trained on the *other* fold (the
   cross-validation partners), evaluated on FOLD, which neither saw. Every rule of the grid is
   scored there; the one with the largest sensitivity + specificity wins (ties: the strictest).
   "No rule" is in the grid: it wins when nothing helps.
2. ``--test SEG CLF FOLD`` (optional): the pair the rule is for (trained on FOLD of step 1),
   evaluated on its own held-out fold, with and without the chosen rule, once.
3. ``--write BUNDLE``: the rule (``"sure"``) and how it was chosen (``"sure_rule"``: grid, fit and
   test figures, the command; no machine paths) into a segment bundle's manifest.

Example (the shipped segmenter; its run and the classifier's fold-0 run trained on fold 0):
  D=$ENDOVIEW_DATA
  python -m train.sure --fit bundles/seg-trained-on-1 bundles/clf-trained-on-1 0 \\
      --test engine/assets/models/polyp-unet bundles/clf-trained-on-0 1 \\
      --write engine/assets/models/polyp-unet \\
      --data $D/kvasir-seg $D/hyperkvasir-lower-gi/labeled-images $D/hyperkvasir-ileum \\
      --split-csv $D/hyperkvasir-official-splits/official_splits/2_fold_split.csv
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .options import add_data_options

log = logging.getLogger(__name__)

#: the grid: the peak probability, the share of the model input over the mask threshold
PEAKS = (0.99, 0.995, 0.999, 0.9995, 0.9999)
AREAS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2)


def scores(seg: Path, clf: Path, fold: int, samples, threads: int | None) -> dict[str, np.ndarray]:
    """Per image of ``fold`` (of ``train.data.load_dataset``'s samples): has a polyp, the
    classifier's polyp probability (and over its point), the segmenter's peak and area share, whether it
    has a mask."""
    from .seg.detect_eval import fold_images, image_scores

    pairs, negatives = fold_images(samples, fold)
    rows, positive, _, classifier = image_scores(seg, [p.image for p in pairs], negatives, classifier=clf,
                                                 threads=threads)
    get = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    return {"positive": positive, "clf": get("clf_score"), "clf_rel": get("clf_score") / classifier.operating_point,
            "peak": get("seg_score"), "share": get("seg_share"), "mask": get("mask").astype(bool)}


def decide(s: dict[str, np.ndarray], rule: dict[str, float] | None) -> np.ndarray:
    """The verdict with ``rule`` (None: the classifier and a mask alone)."""
    base = (s["clf_rel"] >= 1.0) & s["mask"]
    if rule is None:
        return base
    sure = (s["peak"] >= rule["min_peak"]) & (s["share"] >= rule["min_area"])
    return base | (sure & s["mask"])


def rates(s: dict[str, np.ndarray], rule: dict[str, float] | None) -> dict[str, float]:
    d, y = decide(s, rule), s["positive"]
    return {"sensitivity": round(float(d[y].mean()), 4), "specificity": round(float((~d[~y]).mean()), 4)}


def choose(s: dict[str, np.ndarray]) -> tuple[dict[str, float] | None, list[dict[str, Any]]]:
    """The grid's rule with the largest sensitivity + specificity on ``s`` (ties: the strictest:
    larger peak, then area; no rule beats any rule it ties with)."""
    table = [{"rule": None, **rates(s, None)}]
    for peak, area in itertools.product(PEAKS, AREAS):
        rule = {"min_peak": peak, "min_area": area}
        table.append({"rule": rule, **rates(s, rule)})

    def key(row):
        r = row["rule"]
        strict = (2.0, 1.0) if r is None else (r["min_peak"], r["min_area"])
        return (round(row["sensitivity"] + row["specificity"], 6), strict)

    best = max(table, key=key)
    return best["rule"], sorted(table, key=key, reverse=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.sure", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fit", nargs=3, metavar=("SEG", "CLF", "FOLD"), required=True,
                   help="segment and classify bundles trained on the other fold, and the fold to choose on")
    p.add_argument("--test", nargs=3, metavar=("SEG", "CLF", "FOLD"),
                   help="the pair the rule is for, and its held-out fold: measured once")
    p.add_argument("--write", type=Path, metavar="BUNDLE", help="write the rule into this segment bundle's manifest")
    add_data_options(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from engine.errors import EndoviewError

    try:
        from engine.bundle import load_bundle

        from .data import load_dataset
        from .manifest import portable, portable_prefixes

        samples = load_dataset(args.data, args.split_csv).samples

        name = lambda path: load_bundle(path).name  # noqa: E731 - the manifests' names, not folders
        seg, clf, fold = Path(args.fit[0]), Path(args.fit[1]), int(args.fit[2])
        log.info("fitting on fold %d with %s and %s", fold, name(seg), name(clf))
        fit = scores(seg, clf, fold, samples, args.threads)
        rule, table = choose(fit)
        record: dict[str, Any] = {
            "what": "the frame's verdict is polyp where this rule holds, whatever the classifier says "
                    "(engine.analysis.verdict)",
            "chosen_on": f"fold {fold}, with bundles trained on the other fold ({name(seg)}, {name(clf)}): "
                         "the largest sensitivity + specificity over the grid (ties: the strictest)",
            "grid": {"min_peak": list(PEAKS), "min_area": list(AREAS)},
            "fit": {"fold": fold, "without": rates(fit, None), "with": rates(fit, rule)},
            # the bundles by their names (their folders are this machine's); the data made portable below
            "command": shlex.join(["python", "-m", "train.sure", "--fit", name(seg), name(clf), str(fold)]
                                  + (["--test", name(args.test[0]), name(args.test[1]), args.test[2]]
                                     if args.test else [])
                                  + (["--write", "BUNDLE"] if args.write else [])
                                  + ["--data", *map(str, args.data), "--split-csv", str(args.split_csv)]),
        }
        if args.test:
            tseg, tclf, tfold = Path(args.test[0]), Path(args.test[1]), int(args.test[2])
            test = scores(tseg, tclf, tfold, samples, args.threads)
            record["test"] = {"fold": tfold, "segmenter": name(tseg), "classifier": name(tclf),
                              "without": rates(test, None), "with": rates(test, rule)}
        if args.write is not None:
            manifest_path = args.write / "manifest.json"
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("task") != "segment":
                raise EndoviewError(f"{args.write} is not a segment bundle")
            manifest.pop("sure", None)
            if rule is not None:
                manifest["sure"] = rule
            prefixes = portable_prefixes(args.data, args.split_csv, args.write)
            manifest["sure_rule"] = portable({**record, "rule": rule}, prefixes)
            manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    except EndoviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = {"rule": rule, **record, "top": table[:5]}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"chosen on fold {fold}: {rule or 'no rule (nothing in the grid helps)'}")
        print(f"  fit fold {fold}: without {record['fit']['without']}, with {record['fit']['with']}")
        if "test" in record:
            t = record["test"]
            print(f"  test fold {t['fold']}: without {t['without']}, with {t['with']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
