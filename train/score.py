"""``python -m train.score``: weigh the classifier and the segmenter together for the frame's verdict.

The frame's verdict (engine.analysis.verdict) can use one score over both models instead of the
classifier's operating point and the segmenter's "sure" rule: polyp where ``bias + a *
logit(P(polyp)) + b * logit(peak) >= 0`` (and the mask is not empty). This command fits it
without touching a fold the models trained on:

1. ``--pair SEG CLF FOLD`` (two or more): cross-validation pairs, each trained on the other fold,
   each scored on FOLD, which it did not see (the classifier's probability of the polyp classes,
   the segmenter's peak probability, whether it has a mask).
2. Cross-fitting: for each pair, a logistic regression (Newton's method, a small ridge) is fitted
   on the *other* pairs' images and its decision point chosen there (the largest sensitivity +
   specificity; ties: the stricter), then measured once on this pair's images, beside the rule
   the bundles have today (the classifier at its operating point with a mask, or the write
   bundle's "sure" rule). These are the figures the shipped rule is judged by.
3. The shipped rule: fitted the same way on every pair's images together, the decision point
   folded into the bias, and written (``--write BUNDLE``) as the segment bundle's ``"score"``, with
   how it was made (``"score_rule"``: the pairs by name, the cross-fit figures, the command; no
   machine paths).

Example (the shipped pair's cross-validation runs):
  D=$ENDOVIEW_DATA
  python -m train.score --pair bundles/seg-trained-on-1 bundles/clf-trained-on-1 0 \\
      --pair bundles/seg-trained-on-0 bundles/clf-trained-on-0 1 \\
      --write engine/assets/models/polyp-unet \\
      --data $D/kvasir-seg $D/hyperkvasir-lower-gi/labeled-images $D/hyperkvasir-ileum \\
      --split-csv $D/hyperkvasir-official-splits/official_splits/2_fold_split.csv
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engine.analysis.verdict import EPS, ScoreRule

from .options import add_data_options

log = logging.getLogger(__name__)

RIDGE = 1e-2  # on the standardised features: keeps Newton's method finite on separable data


def features(s: dict[str, np.ndarray]) -> np.ndarray:
    """N x 2: logit of the classifier's P(polyp) and of the segmenter's peak (clipped as the viewer does)."""
    def logit(p):
        p = np.clip(np.asarray(p, np.float64), EPS, 1.0 - EPS)
        return np.log(p / (1.0 - p))
    return np.stack([logit(s["clf"]), logit(s["peak"])], axis=1)


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE, steps: int = 100) -> np.ndarray:
    """Weights (bias, one per column of ``x``) of a ridge-penalised logistic regression, in x's units."""
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    z = np.column_stack([np.ones(len(x)), (x - mu) / sd])
    w = np.zeros(z.shape[1])
    penalty = np.diag([0.0] + [ridge] * x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -50, 50)))
        grad = z.T @ (p - y) + penalty @ w
        hess = (z * (p * (1.0 - p))[:, None]).T @ z + penalty + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    coef = w[1:] / sd
    return np.concatenate([[w[0] - float(coef @ mu)], coef])


def rates(decided: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    return {"sensitivity": round(float(decided[positive].mean()), 4),
            "specificity": round(float((~decided[~positive]).mean()), 4)}


def fit_rule(s: dict[str, np.ndarray]) -> ScoreRule:
    """The logistic regression on ``s``, its decision point (largest sensitivity + specificity of
    the images with a mask; ties: the stricter) folded into the bias."""
    x, y = features(s), s["positive"].astype(bool)
    w = fit_logistic(x, y.astype(np.float64))
    if w[1] <= 0:
        raise ValueError("the classifier's P(polyp) came out weighing against a polyp: these scores cannot "
                         "make a score rule (too few images, or a classifier that does not know polyps)")
    linear = w[0] + x @ w[1:]
    candidates = np.unique(linear[s["mask"]])
    best, key = 0.0, None
    for t in candidates:
        r = rates((linear >= t) & s["mask"], y)
        k = (round(r["sensitivity"] + r["specificity"], 6), t)
        if key is None or k > key:
            best, key = float(t), k
    # halfway to the next lower score: the same images decide, with a margin for the other fold
    lower = candidates[candidates < best]
    cut = (best + lower.max()) / 2.0 if lower.size else best
    return ScoreRule(classifier=float(w[1]), segmenter=max(float(w[2]), 0.0), bias=float(w[0] - cut))


def decide(s: dict[str, np.ndarray], rule: ScoreRule) -> np.ndarray:
    x = features(s)
    return (rule.bias + rule.classifier * x[:, 0] + rule.segmenter * x[:, 1] >= 0.0) & s["mask"]


def today(s: dict[str, np.ndarray], sure: dict[str, float] | None) -> np.ndarray:
    """The rule without a score: the classifier at its operating point, or the sure rule; a mask."""
    from .sure import decide as sure_decide

    return sure_decide(s, sure)


def join(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def cross_fit(pairs: list[dict[str, np.ndarray]], sure: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """For each pair: the rule fitted on the others, measured on it, beside today's rule."""
    out = []
    for i, s in enumerate(pairs):
        rule = fit_rule(join([p for j, p in enumerate(pairs) if j != i]))
        out.append({"rule": rule.to_dict(), "with": rates(decide(s, rule), s["positive"]),
                    "without": rates(today(s, sure), s["positive"])})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.score", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", nargs=3, action="append", metavar=("SEG", "CLF", "FOLD"), required=True,
                   help="a cross-validation pair (segment and classify bundles trained on the other fold) and "
                        "the fold it held out; two or more")
    p.add_argument("--write", type=Path, metavar="BUNDLE", help="write the rule into this segment bundle's manifest")
    add_data_options(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from engine.errors import EndoviewError

    if len(args.pair) < 2:
        p.error("cross-fitting needs two or more --pair (one per held-out fold)")
    try:
        from engine.bundle import load_bundle

        from .data import load_dataset
        from .manifest import portable, portable_prefixes
        from .sure import scores

        manifest: dict[str, Any] | None = None
        if args.write is not None:
            manifest_path = args.write / "manifest.json"
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise EndoviewError(f"{args.write}: no readable manifest.json ({exc})") from exc
            if manifest.get("task") != "segment":
                raise EndoviewError(f"{args.write} is not a segment bundle")
        sure = (manifest or {}).get("sure")
        samples = load_dataset(args.data, args.split_csv).samples
        names, parts = [], []
        for seg, clf, fold in args.pair:
            seg_name, clf_name = load_bundle(seg).name, load_bundle(clf).name
            log.info("scoring fold %s with %s and %s", fold, seg_name, clf_name)
            parts.append(scores(Path(seg), Path(clf), int(fold), samples, args.threads))
            names.append({"fold": int(fold), "segmenter": seg_name, "classifier": clf_name,
                          "images": int(len(parts[-1]["positive"])), "polyps": int(parts[-1]["positive"].sum())})
        try:
            crossed = cross_fit(parts, sure)
            rule = fit_rule(join(parts))
        except ValueError as exc:
            raise EndoviewError(str(exc)) from exc
        for n, c in zip(names, crossed):
            c.update(held_out=n)
        record: dict[str, Any] = {
            "what": "the frame's verdict is polyp where bias + classifier * logit(P(polyp)) + segmenter * "
                    "logit(peak) >= 0 and the mask is not empty (engine.analysis.verdict); probabilities "
                    f"clipped to [{EPS:g}, 1 - {EPS:g}]",
            "fitted_on": names,
            "how": "logistic regression (ridge on standardised features), decision point where sensitivity + "
                   "specificity is largest, folded into the bias; cross-fitted: each pair's figures come from "
                   "the rule fitted on the other pairs",
            "cross_fit": crossed,
            "without": "the classifier at its operating point with a mask" + (f", or the sure rule {sure}" if sure else ""),
            "command": shlex.join(["python", "-m", "train.score"]
                                  + [a for n in names for a in ("--pair", n["segmenter"], n["classifier"], str(n["fold"]))]
                                  + (["--write", "BUNDLE"] if args.write else [])
                                  + ["--data", *map(str, args.data), "--split-csv", str(args.split_csv)]),
        }
        if manifest is not None:
            manifest["score"] = rule.to_dict()
            prefixes = portable_prefixes(args.data, args.split_csv, args.write)
            manifest["score_rule"] = portable(record, prefixes)
            (args.write / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    except EndoviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"rule": rule.to_dict(), **record}, indent=2))
    else:
        print(f"score rule: {rule.to_dict()}")
        for c in crossed:
            h = c["held_out"]
            print(f"  held-out fold {h['fold']} ({h['segmenter']}, {h['classifier']}): "
                  f"today {c['without']}, with the rule fitted on the others {c['with']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
