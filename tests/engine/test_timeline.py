import threading
from types import SimpleNamespace

import numpy as np
import pytest

from engine.pipeline import Analyzer
from engine.timeline import Timeline, analyse_video
from engine.types import ContentArea, Frame, FrameResult, Prediction

from fakes import ListSource

LABELS = ("normal", "polyp", "dyed-lifted-polyps", "other")


def result(i: int, label: str, conf: float = 0.9) -> FrameResult:
    probs = np.full(len(LABELS), (1 - conf) / (len(LABELS) - 1), np.float32)
    probs[LABELS.index(label)] = conf
    frame = Frame(i, i / 10, np.zeros((4, 4, 3), np.uint8), 0.0)
    return FrameResult(frame, ContentArea.full_frame(4, 4), Prediction(LABELS, probs, "m", 1.0))


def fill(tl: Timeline, labels: str) -> None:
    codes = {"n": "normal", "p": "polyp", "d": "dyed-lifted-polyps", "o": "other"}
    for i, c in enumerate(labels):
        if c != ".":
            tl.record(result(i, codes[c]))


def test_runs_and_unknown_frames():
    tl = Timeline(LABELS, fps=10, frame_count=8)
    fill(tl, "nnp..ooo")
    assert tl.runs() == [(0, 1, 0), (2, 2, 1), (3, 4, -1), (5, 7, 3)]
    assert tl.analysed == 6 and tl.label_at(2) == "polyp" and tl.label_at(3) is None


def test_findings_need_the_minimum_duration_and_merge_polyp_classes():
    tl = Timeline(LABELS, fps=10, frame_count=40, min_duration_s=0.5)
    fill(tl, "nnpppnn" + "ppdpppppnn" + "nnnnnnpppp")
    found = tl.findings()
    assert [(f.start, f.end, f.label) for f in found] == [(7, 14, "polyp")]
    assert found[0].duration_s == pytest.approx(0.8) and "polyp" in str(found[0])
    tl.min_duration_s = 0.3
    assert [(f.start, f.end) for f in tl.findings()] == [(2, 4), (7, 14), (23, 26)]


def test_findings_respect_the_confidence_threshold_and_class_list():
    tl = Timeline(LABELS, fps=10, frame_count=10, min_duration_s=0.2, classes=("other",))
    for i in range(5):
        tl.record(result(i, "other", 0.4))
    for i in range(5, 10):
        tl.record(result(i, "other", 0.95))
    assert [(f.start, f.end) for f in tl.findings()] == [(0, 9)]
    tl.min_confidence = 0.5
    assert [(f.start, f.end) for f in tl.findings()] == [(5, 9)]


def test_grows_when_the_length_is_unknown():
    tl = Timeline(LABELS, fps=10)
    tl.record(result(3000, "polyp"))
    assert tl.class_indices().shape == (3001,) and tl.label_at(3000) == "polyp"


def test_analyse_video_fills_every_frame_with_progress_and_cancels(tiny_bundle):
    from engine.analysis.classifier import Classifier
    from engine.backends import open_backend

    with open_backend(tiny_bundle, "onnxruntime") as backend:
        analyzer = Analyzer(Classifier(tiny_bundle, backend))
        tl = Timeline(tiny_bundle.labels, fps=30, frame_count=25)
        seen = []
        assert analyse_video(ListSource(25), analyzer, tl, progress=seen.append) == 25
        assert tl.analysed == 25 and seen[-1] == 25

        stop = threading.Event()
        tl2 = Timeline(tiny_bundle.labels, fps=30, frame_count=200)

        def progress(n):
            if n == 5:
                stop.set()

        n = analyse_video(ListSource(200), analyzer, tl2, progress=progress, stop=stop)
        assert 5 <= n < 200 and tl2.analysed == n


def test_records_the_segmenters_polyp_and_no_polyp_frames():
    from engine.types import SegmentationResult

    tl = Timeline(("no polyp", "polyp"), fps=10, frame_count=40, min_duration_s=1.0)
    area = ContentArea.full_frame(8, 8)
    for i in range(40):
        mask = np.zeros((8, 8), bool)
        mask[1:4, 1:4] = 10 <= i < 25
        tl.record(FrameResult(Frame(i, i / 10, np.zeros((8, 8, 3), np.uint8), 0.0), area,
                              segmentation=SegmentationResult(mask, 0.7, "polyp", "seg")))
    assert tl.runs() == [(0, 9, 0), (10, 24, 1), (25, 39, 0)]
    [f] = tl.findings()
    assert (f.start, f.end, f.label) == (10, 24, "polyp") and f.confidence == pytest.approx(0.7)
    assert tl.label_at(5) == "no polyp"
