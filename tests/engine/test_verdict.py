"""The frame's polyp verdict (engine/analysis/verdict.py), the segmenter's presence rule and the scope-guide
inset: each decides what the screen, the timeline and the log say, so each is checked on its own."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from engine.analysis.classifier import Classifier
from engine.analysis.crop import SCOPE_GUIDE_INSET, blank_inset, inset_pixels, model_input
from engine.analysis.segmenter import PresenceRule, Segmenter, presence_rule, presence_scores
from engine.analysis.verdict import ScoreRule, Verdict, operating_point, polyp_probability, score_rule
from engine.backends import open_backend
from engine.bundle import check_inset, load_bundle, write_bundle
from engine.errors import BundleError, ContentAreaError
from engine.outputs.logs import FrameLog
from engine.overlay import Segmentation
from engine.pipeline import Analyzer
from engine.types import ContentArea, Frame, FrameResult, Prediction, SegmentationResult

from tiny_models import make_tiny_classifier_bundle, make_tiny_segmenter_bundle

LABELS = ("bbps-2-3", "normal-cecum", "polyp")


def prediction(p_polyp: float, other: str = "normal-cecum") -> Prediction:
    probs = np.array([0.0, 0.0, p_polyp], np.float32)
    probs[LABELS.index(other)] = 1.0 - p_polyp
    return Prediction(LABELS, probs, "clf", 1.0)


def segmentation(present: bool, shape=(40, 60)) -> SegmentationResult:
    mask = np.zeros(shape, bool)
    if present:
        mask[10:20, 10:30] = True
    return SegmentationResult(mask, 0.9 if present else 0.2, "polyp", "seg", 1.0, 0.95 if present else 0.2)


def full_area(w=60, h=40) -> ContentArea:
    poly = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.int32)
    return ContentArea((0, 0, w, h), "full", poly, 1.0, (w, h))


def result(p=None, s=None, verdict=True) -> FrameResult:
    r = FrameResult(Frame(3, 0.1, np.zeros((40, 60, 3), np.uint8), 0.0), full_area(), p, segmentation=s)
    if verdict:
        r.polyp = Verdict(0.5)(p, s)
    return r


# ------------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("p_polyp, seg_present, expected", [
    (0.9, True, True),
    (0.3, True, False),   # the classifier decides: a segmenter's mask alone is no polyp
    (0.9, False, False),  # ... and the segmenter must have something to show: an empty mask vetoes
    (0.1, False, False),
])
def test_with_both_models_the_classifier_decides_and_the_mask_must_not_be_empty(p_polyp, seg_present, expected):
    assert Verdict(0.5)(prediction(p_polyp), segmentation(seg_present)) is expected


def test_any_mask_pixel_is_enough_the_presence_rule_is_not_asked():
    """One pixel over the segmenter's threshold lets the classifier's polyp through, even where the
    segmenter's own presence rule (peak and area) says no."""
    mask = np.zeros((40, 60), bool)
    mask[5, 7] = True
    weak = SegmentationResult(mask, 0.55, "polyp", "seg", 1.0, 0.55, detected=False)
    assert not weak.present
    assert Verdict(0.5)(prediction(0.9), weak) is True
    assert Verdict(0.5)(prediction(0.4), weak) is False


def test_one_model_alone_decides_alone():
    assert Verdict(0.5)(prediction(0.6), None) is True
    assert Verdict(0.7)(prediction(0.6), None) is False  # the operating point, not the top-1
    assert Verdict(0.5)(None, segmentation(True)) is True
    assert Verdict(0.5)(None, segmentation(False)) is False
    assert Verdict(0.5)(None, None) is None


def test_polyp_probability_sums_the_polyp_classes():
    labels = ("dyed-lifted-polyps", "normal-cecum", "polyp")
    p = Prediction(labels, np.array([0.3, 0.4, 0.3], np.float32), "m", 1.0)
    assert polyp_probability(p) == pytest.approx(0.6)  # above 0.5 although "normal-cecum" is top-1
    assert polyp_probability(Prediction(("a", "b"), np.array([0.5, 0.5], np.float32), "m", 1.0)) == 0.0


def test_operating_point_from_the_manifest():
    assert operating_point({}) == 0.5
    assert operating_point({"operating_point": {"polyp": 0.35}}) == 0.35
    for bad in ({"polyp": 1.5}, {"polyp": "0.3"}, 0.3, {"other": 0.3}):
        with pytest.raises(BundleError, match="operating_point"):
            operating_point({"operating_point": bad}, "x")


def test_top_follows_the_verdict():
    # a negative frame: the classifier's best other class, never "polyp"
    assert result(prediction(0.45, "bbps-2-3"), segmentation(True)).top == ("bbps-2-3", pytest.approx(0.55))
    # a positive frame: "polyp" with the classifier's confidence
    assert result(prediction(0.8), segmentation(True)).top == ("polyp", pytest.approx(0.8))
    # polyp classes together over the operating point although another class is top-1
    labels = ("dyed-lifted-polyps", "normal-cecum", "polyp")
    p = Prediction(labels, np.array([0.3, 0.4, 0.3], np.float32), "m", 1.0)
    r = FrameResult(Frame(0, 0.0, np.zeros((40, 60, 3), np.uint8), 0.0), full_area(), p)
    r.polyp = Verdict(0.5)(p, None)
    assert r.polyp and r.top[0] in ("polyp", "dyed-lifted-polyps")
    # a segmenter alone: its own answer
    assert result(None, segmentation(False)).top[0] == "no polyp"
    # without a verdict (results built by hand): the classifier's top-1 as before
    assert result(prediction(0.9), segmentation(False), verdict=False).top[0] == "polyp"


def test_the_mask_is_drawn_only_on_a_positive_verdict():
    for p, drawn in ((0.9, True), (0.2, False)):
        r = result(prediction(p), segmentation(True))
        image = np.zeros((40, 60, 3), np.uint8)
        Segmentation().draw(image, r, 3)
        assert bool(image[15, 20].any()) is drawn


def test_log_rows_carry_the_verdict(tmp_path):
    rows = [result(prediction(0.9), segmentation(True)), result(prediction(0.2), segmentation(True)),
            result(None, None)]
    for suffix in ("jsonl", "csv"):
        log = FrameLog(tmp_path / f"log.{suffix}")
        for r in rows:
            log.write(r)
        log.close()
    got = [json.loads(line)["polyp"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert got == [True, False, None]
    with open(tmp_path / "log.csv", newline="") as fh:
        assert [r["polyp"] for r in csv.DictReader(fh)] == ["1", "0", ""]


# ----------------------------------------------------------------------------- presence rule


def test_presence_scores_and_rule():
    prob = np.zeros((10, 10), np.float32)
    prob[0, :3] = 0.8
    peak, area = presence_scores(prob, 0.5)
    assert peak == pytest.approx(0.8) and area == pytest.approx(0.03)
    assert PresenceRule().present(prob)  # no rule: any pixel over the threshold
    assert PresenceRule(0.7, 0.02).present(prob)
    assert not PresenceRule(0.9, 0.0).present(prob)  # peak too low
    assert not PresenceRule(0.5, 0.05).present(prob)  # too small
    assert not PresenceRule().present(np.zeros((4, 4), np.float32))
    for bad in ({"min_peak": 2}, {"min_area": 0.1}, [0.5, 0.1]):
        with pytest.raises(BundleError, match="presence"):
            presence_rule(bad, "x")


def _rewrite(bundle, folder, **kw):
    """The same model files under a new manifest (with an inset, a presence rule, ...)."""
    return write_bundle(folder, name=bundle.name, task=bundle.task, labels=bundle.labels,
                        input_size=bundle.input_size, files={k: bundle.path / k for k in bundle.files},
                        formats=bundle.formats, outputs=bundle.outputs, trained=True, **kw)


def test_segmenter_applies_the_presence_rule(tmp_path):
    base = make_tiny_segmenter_bundle(tmp_path / "seg", torchscript=False)
    x = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    area = full_area(32, 32)
    with open_backend(base, "onnxruntime") as be:
        plain = Segmenter(base, be).segment(x, area)
        prob, _ = Segmenter(base, be).probabilities(x)
    peak, share = presence_scores(prob, 0.5)
    assert plain.present and 0 < share < 1, "the tiny model should find something in this image"
    strict = _rewrite(base, tmp_path / "strict", extra={"presence": {"min_peak": 0.5, "min_area": min(1.0, share + 0.01)}})
    loose = _rewrite(base, tmp_path / "loose", extra={"presence": {"min_peak": 0.5, "min_area": share}})
    with open_backend(strict, "onnxruntime") as be:
        r = Segmenter(strict, be).segment(x, area)
        # the rule says no: no polyp, but the mask keeps its pixels for a classifier's positive verdict
        assert not r.present and r.detected is False and r.area == plain.area and r.peak == pytest.approx(peak)
        assert r.to_dict()["present"] is False
    with open_backend(loose, "onnxruntime") as be:
        r = Segmenter(loose, be).segment(x, area)
        assert r.present and r.area == plain.area



def test_a_sure_segmenter_makes_a_polyp_whatever_the_classifier_says():
    """The segmenter's "sure" rule (a near-certain, large mask) is the verdict's second way to
    "polyp": the classifier takes some plain polyps for normal cecum."""
    mask = np.zeros((40, 60), bool)
    mask[5:30, 5:40] = True
    sure = SegmentationResult(mask, 0.99, "polyp", "seg", 1.0, 0.9995, detected=True, sure=True)
    unsure = SegmentationResult(mask, 0.99, "polyp", "seg", 1.0, 0.9995, detected=True, sure=False)
    assert Verdict(0.5)(prediction(0.1), sure) is True
    assert Verdict(0.5)(prediction(0.1), unsure) is False  # the classifier decides, as before
    assert Verdict(0.5)(prediction(0.9), unsure) is True
    empty = SegmentationResult(np.zeros((40, 60), bool), 0.2, "polyp", "seg", 1.0, 0.2, sure=True)
    assert Verdict(0.5)(prediction(0.1), empty) is False  # nothing to show: never a polyp
    assert sure.to_dict()["sure"] is True and segmentation(True).to_dict()["sure"] is None
    r = FrameResult(Frame(3, 0.1, np.zeros((40, 60, 3), np.uint8), 0.0), full_area(), prediction(0.1), segmentation=sure)
    r.polyp = Verdict(0.5)(r.prediction, sure)
    assert r.top == ("polyp", pytest.approx(0.99))  # the segmenter's confidence, not "polyp 10%"


def test_segmenter_applies_its_sure_rule_from_the_manifest(tmp_path):
    base = make_tiny_segmenter_bundle(tmp_path / "seg", torchscript=False)
    x = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    area = full_area(32, 32)
    with open_backend(base, "onnxruntime") as be:
        assert Segmenter(base, be).sure is None and Segmenter(base, be).segment(x, area).sure is None
        prob, _ = Segmenter(base, be).probabilities(x)
    peak, share = presence_scores(prob, 0.5)
    met = _rewrite(base, tmp_path / "met", extra={"sure": {"min_peak": 0.5, "min_area": share}})
    missed = _rewrite(base, tmp_path / "missed", extra={"sure": {"min_peak": 0.5, "min_area": min(1.0, share + 0.01)}})
    with open_backend(met, "onnxruntime") as be:
        assert Segmenter(met, be).segment(x, area).sure is True
    with open_backend(missed, "onnxruntime") as be:
        assert Segmenter(missed, be).segment(x, area).sure is False
    bad = _rewrite(base, tmp_path / "bad", extra={"sure": {"min_peak": 1.5, "min_area": 0.1}})
    with open_backend(bad, "onnxruntime") as be, pytest.raises(BundleError, match="'sure' must be"):
        Segmenter(bad, be)


def test_a_score_rule_weighs_both_models_together():
    """With the segmenter's score rule, a certain segmenter makes up for an unsure classifier and the
    other way round; the operating point and the sure rule are not asked; an empty mask still vetoes."""
    rule = ScoreRule(classifier=1.0, segmenter=0.5, bias=-2.0)  # polyp where logit(p) + logit(peak) / 2 >= 2
    assert rule.decide(0.9, 0.9) and not rule.decide(0.5, 0.9)  # 2.20 + 1.10 >= 2; 0 + 1.10 < 2
    assert rule.decide(0.5, 0.9999) and not rule.decide(0.05, 0.9999)  # 0 + 4.6 >= 2; -2.9 + 4.6 < 2
    assert rule.score(0.5, 0.9999) > 0.5 > rule.score(0.05, 0.9999)
    assert rule.score(1.0, 1.0) < 1.0 and rule.linear(1.0, 1.0) == pytest.approx(-2.0 + 1.5 * np.log(1e6 - 1))
    verdict = Verdict(0.4, rule)

    def seg(peak, sure=None, area=True):
        mask = np.zeros((40, 60), bool)
        mask[10:20, 10:30] = area
        return SegmentationResult(mask, 0.9, "polyp", "seg", 1.0, peak, detected=True, sure=sure)

    assert verdict(prediction(0.5), seg(0.9, sure=True)) is False  # over the point, and "sure": not enough
    assert verdict(prediction(0.5), seg(0.9999)) is True
    assert verdict(prediction(0.9), seg(0.9999, area=False)) is False  # nothing to show
    assert verdict(prediction(0.9), None) is True  # the classifier alone: its operating point
    assert verdict(None, seg(0.9999)) is True  # the segmenter alone: its presence rule (here none)


@pytest.mark.parametrize("spec", [{"classifier": 1.0, "segmenter": 0.5}, {"classifier": "1", "segmenter": 0, "bias": 0},
                                  {"classifier": -1.0, "segmenter": 0.5, "bias": 0}, [1, 2, 3],
                                  {"classifier": 1.0, "segmenter": float("nan"), "bias": 0}])
def test_a_bad_score_rule_is_refused_in_one_line(spec):
    with pytest.raises(BundleError, match="'score' must"):
        score_rule(spec, "bundle x")
    assert score_rule(None) is None


def test_the_analyzer_takes_the_segmenters_score_rule_beside_a_classifier_only(tmp_path):
    clf_b = _rewrite(make_tiny_classifier_bundle(tmp_path / "c", labels=LABELS, torchscript=False),
                     tmp_path / "ci", extra={"operating_point": {"polyp": 0.4}})
    spec = {"classifier": 1.0, "segmenter": 0.0, "bias": 50.0}  # polyp wherever the mask is not empty
    seg_b = _rewrite(make_tiny_segmenter_bundle(tmp_path / "s", torchscript=False), tmp_path / "si",
                     extra={"score": spec})
    with open_backend(clf_b, "onnxruntime") as cb, open_backend(seg_b, "onnxruntime") as sb:
        both = Analyzer(Classifier(clf_b, cb), segmenter=Segmenter(seg_b, sb), smooth=False)
        assert both.verdict.score == ScoreRule(**spec)
        assert Analyzer(None, segmenter=Segmenter(seg_b, sb), smooth=False).verdict.score is None
        frame = np.full((120, 160, 3), 180, np.uint8)
        r = both(Frame(0, 0.0, frame, 0.0))
        assert r.polyp is (r.segmentation.area > 0)
        assert r.polyp_score == pytest.approx(ScoreRule(**spec).score(polyp_probability(r.prediction),
                                                                      r.segmentation.peak))
        assert r.to_log_row()["polyp_score"] == pytest.approx(r.polyp_score, abs=1e-6)
        if r.polyp:  # the label panel's "polyp NN%" is the score that made it
            assert r.top == ("polyp", pytest.approx(r.polyp_score))
        alone = Analyzer(Classifier(clf_b, cb), smooth=False)(Frame(0, 0.0, frame, 0.0))
        assert alone.polyp_score is None and "polyp_score" not in alone.to_log_row()


def test_the_shipped_segmenter_weighs_both_models_with_a_cross_fitted_score_rule():
    """Fitted by train.score on the two cross-validation pairs' held-out folds; each fold's figures come
    from the rule fitted on the other fold, and there it keeps the sensitivity and cuts false alarms."""
    from engine.config import load_config

    manifest = json.loads((load_config().segmenter / "manifest.json").read_text())
    rule, record = score_rule(manifest["score"]), manifest["score_rule"]
    assert rule.classifier > 0 and rule.segmenter > 0
    assert [c["held_out"]["fold"] for c in record["cross_fit"]] == [0, 1]
    for c in record["cross_fit"]:
        assert c["with"]["specificity"] > c["without"]["specificity"] and c["with"]["specificity"] >= 0.95
        assert c["with"]["sensitivity"] >= 0.93
    assert record["command"].startswith("python -m train.score --pair ") and "/root" not in json.dumps(record)


def test_the_shipped_segmenter_records_how_its_sure_rule_was_chosen():
    """Chosen on fold 0 with the cross-validation pair trained on fold 1, measured once on fold 1."""
    from engine.config import load_config

    manifest = json.loads((load_config().segmenter / "manifest.json").read_text())
    rule, record = manifest["sure"], manifest["sure_rule"]
    assert 0.99 <= rule["min_peak"] < 1 and 0 < rule["min_area"] < 0.2
    assert record["chosen_on"].startswith("fold 0") and record["fit"]["fold"] == 0 and record["test"]["fold"] == 1
    held = record["test"]  # measured once, on the shipped pair's held-out fold
    assert held["with"]["sensitivity"] > held["without"]["sensitivity"] and held["with"]["specificity"] >= 0.95
    assert record["rule"] == rule and record["command"].startswith("python -m train.sure --fit ")


# ------------------------------------------------------------------------------- the inset


def test_inset_box_is_validated_and_blanked():
    assert check_inset(None) is None
    assert check_inset([0, 0.5, 0.25, 1]) == (0.0, 0.5, 0.25, 1.0)
    for bad in ([0, 0, 0, 0], [0.5, 0, 0.2, 1], [0, 0, 1, 1.2], "box", [0, 0, 1]):
        with pytest.raises(ContentAreaError, match="inset"):
            check_inset(bad)
    img = np.full((100, 200, 3), 255, np.uint8)
    x0, y0, x1, y1 = inset_pixels(SCOPE_GUIDE_INSET, (100, 200))
    assert (x0, y0, x1, y1) == (0, 64, 72, 100)
    blank_inset(img, SCOPE_GUIDE_INSET)
    assert not img[64:, :72].any() and img[63, :].all() and img[:, 72:].all()
    assert img[64:, :72].size == 36 * 72 * 3  # 13 % of the picture


def test_model_input_blanks_the_inset_and_nothing_else():
    frame = np.full((120, 160, 3), 200, np.uint8)
    a = model_input(frame, full_area(160, 120), (50, 50))
    b = model_input(frame, full_area(160, 120), (50, 50), inset=SCOPE_GUIDE_INSET)
    x0, y0, x1, y1 = inset_pixels(SCOPE_GUIDE_INSET, (50, 50))
    assert not b[y0:y1, x0:x1].any()
    outside = np.ones((50, 50), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(a[outside], b[outside])


def test_bundle_carries_the_inset_and_refuses_a_bad_one(tmp_path):
    base = make_tiny_classifier_bundle(tmp_path / "clf", labels=LABELS, torchscript=False)
    assert base.inset is None
    b = _rewrite(base, tmp_path / "inset", inset=SCOPE_GUIDE_INSET)
    assert b.inset == SCOPE_GUIDE_INSET and load_bundle(b.path).inset == SCOPE_GUIDE_INSET
    m = json.loads((b.path / "manifest.json").read_text())
    m["input"]["inset"] = [0.5, 0.5, 0.1, 1]
    (b.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="inset"):
        load_bundle(b.path)


class _Spy:
    """A backend that records its input and answers "polyp" (for the classifier)."""

    def __init__(self, bundle):
        self.bundle, self.seen = bundle, []

    def run(self, feeds):
        x = next(iter(feeds.values()))
        self.seen.append(x.copy())
        if self.bundle.task == "classify":
            return {self.bundle.outputs["probabilities"]: np.array([[0.0, 0.0, 1.0]], np.float32)}
        return {self.bundle.outputs["mask"]: np.ones((1, 1, *self.bundle.input_size), np.float32)}


def test_analyzer_feeds_each_model_its_inset_and_combines_them(tmp_path):
    clf_b = _rewrite(make_tiny_classifier_bundle(tmp_path / "c", labels=LABELS, torchscript=False),
                     tmp_path / "ci", inset=SCOPE_GUIDE_INSET, extra={"operating_point": {"polyp": 0.4}})
    seg_b = make_tiny_segmenter_bundle(tmp_path / "s", torchscript=False)  # no inset: sees the corner
    clf_be, seg_be = _Spy(clf_b), _Spy(seg_b)
    analyzer = Analyzer(Classifier(clf_b, clf_be), segmenter=Segmenter(seg_b, seg_be), smooth=False)
    assert analyzer.verdict.operating_point == 0.4
    frame = np.full((120, 160, 3), 180, np.uint8)
    r = analyzer(Frame(0, 0.0, frame, 0.0))
    x0, y0, x1, y1 = inset_pixels(SCOPE_GUIDE_INSET, (32, 32))
    assert not clf_be.seen[0][0, y0:y1, x0:x1].any()
    assert seg_be.seen[0][0, y0:y1, x0:x1].all()
    assert r.polyp is True and r.top[0] == "polyp"
