import threading
import time

import numpy as np
import pytest

from engine.analysis.classifier import Classifier
from engine.analysis.second_pass import ClassifierPass, SecondPassWorker, Triggers
from engine.backends import open_backend
from engine.pipeline import Analyzer
from engine.types import ContentArea, Frame, FrameResult, Prediction, SecondPassResult

from fakes import ListSource


class SlowModel:
    name = "slow"

    def __init__(self, delay=0.05, fail_on=()):
        self.delay, self.fail_on, self.seen = delay, set(fail_on), []

    def __call__(self, frame, area):
        time.sleep(self.delay)
        self.seen.append(frame.index)
        if frame.index in self.fail_on:
            raise RuntimeError("model crashed")
        return SecondPassResult(frame.index, self.name, self.delay * 1000, label="polyp", confidence=0.9)


def frame(i, t=None):
    return Frame(i, i / 30 if t is None else t, np.zeros((8, 8, 3), np.uint8), time.perf_counter())


AREA = ContentArea.full_frame(8, 8)


def test_newest_request_wins_while_busy():
    model = SlowModel(0.1)
    with SecondPassWorker(model) as worker:
        worker.request(frame(0), AREA)
        time.sleep(0.03)  # the model is busy with frame 0
        for i in range(1, 6):
            worker.request(frame(i), AREA)
        deadline = time.monotonic() + 3
        while worker.completed < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert model.seen == [0, 5] and worker.replaced == 4
    assert worker.latest.frame_index == 5


def test_an_error_is_reported_and_the_worker_goes_on():
    errors = []
    model = SlowModel(0.01, fail_on={1})
    with SecondPassWorker(model, on_error=errors.append) as worker:
        worker.request(frame(1), AREA)
        time.sleep(0.1)
        worker.request(frame(2), AREA)
        time.sleep(0.1)
    assert len(errors) == 1 and worker.latest.frame_index == 2


def test_stop_is_bounded_and_leaves_no_thread():
    worker = SecondPassWorker(SlowModel(0.2)).start()
    worker.request(frame(0), AREA)
    assert worker.stop(timeout=2.0)
    assert not [t for t in threading.enumerate() if t.name == "endoview-second-pass"]


def result(i, label, conf=0.9, fps=30.0):
    labels = ("normal", "polyp")
    probs = np.array([1 - conf, conf] if label == "polyp" else [conf, 1 - conf], np.float32)
    return FrameResult(frame(i, i / fps), AREA, Prediction(labels, probs, "m", 1.0))


def test_hold_trigger_fires_once_per_stretch_then_repeats():
    trig = Triggers(hold_seconds=0.5, repeat_seconds=1.0)
    fired = [i for i in range(120) if trig(result(i, "polyp" if 10 <= i < 100 else "normal"))]
    # the stretch starts at frame 10 (0.33 s): fires at 0.83 s (frame 25), then every second
    assert fired == [25, 55, 85]


def test_hold_trigger_ignores_low_confidence_and_every_n():
    trig = Triggers(hold_seconds=0.1, min_confidence=0.8, every_n=50)
    fired = [i for i in range(101) if trig(result(i, "polyp", conf=0.6))]
    assert fired == [0, 50, 100]


def test_analyzer_attaches_the_newest_second_pass_with_its_frame(tiny_bundle):
    model = SlowModel(0.02)
    src = ListSource(40)
    with SecondPassWorker(model) as worker:
        analyzer = Analyzer(None, second_pass=worker, triggers=Triggers(every_n=10, hold_seconds=None))
        results = []
        for _ in range(40):
            results.append(analyzer(src.read()))
            time.sleep(0.005)
    attached = [r for r in results if r.second_pass is not None]
    assert attached, "the second pass never finished"
    assert all(r.second_pass.frame_index <= r.frame.index for r in attached)
    assert {r.second_pass.frame_index for r in attached} <= {0, 10, 20, 30}


def test_classifier_pass_labels_a_frame(tiny_bundle):
    src = ListSource(1)
    f = src.read()
    with open_backend(tiny_bundle, "onnxruntime") as backend:
        sp = ClassifierPass(Classifier(tiny_bundle, backend))(f, ContentArea.full_frame(160, 120))
    assert sp.frame_index == 0 and sp.label in tiny_bundle.labels and 0 < sp.confidence <= 1


def test_config_second_pass_runs_in_annotate(tmp_path, tiny_bundle):
    """--second-pass BUNDLE: the worker labels frames every N, and the log names the frame used."""
    import json
    import subprocess
    import sys

    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nbundle = "{tiny_bundle.path}"\nsegmenter = ""\n[second_pass]\nevery_n = 10\n'
                      'hold_seconds = 0\n', encoding="utf-8")
    out = tmp_path / "o.mp4"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "annotate", "demo:160x128@10", "-o", out,
                        "--end", "4", "--config", config, "--second-pass", tiny_bundle.path],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    used = [row["second_pass"] for row in rows if "second_pass" in row]
    assert used, "no frame carried a second-pass result"
    assert all(u["frame_index"] % 10 == 0 and u["label"] in tiny_bundle.labels for u in used)
    assert all(row["index"] >= row["second_pass"]["frame_index"] for row in rows if "second_pass" in row)


def seg_result(i, present, conf=0.8, fps=30):
    from engine.types import SegmentationResult

    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = present
    return FrameResult(frame(i, i / fps), AREA, segmentation=SegmentationResult(mask, conf, "polyp", "seg"))


def test_triggers_fire_when_the_segmenter_holds_a_polyp():
    trig = Triggers(hold_seconds=1.0, repeat_seconds=2.0)
    # a polyp in frames 15..124: held 1 s at frame 45, again 2 s later at 105
    fired = [i for i in range(150) if trig(seg_result(i, present=15 <= i < 125))]
    assert fired == [45, 105]


def test_triggers_ignore_a_segmenter_without_a_mask_or_with_low_confidence():
    trig = Triggers(hold_seconds=0.5, min_confidence=0.5)
    assert not any(trig(seg_result(i, present=False, conf=0.99)) for i in range(60))
    assert not any(trig(seg_result(i, present=True, conf=0.3)) for i in range(60))
