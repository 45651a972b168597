import threading
import time

import numpy as np
import pytest

from engine.errors import PipelineError, SourceError
from engine.live import LiveRunner
from engine.overlay import Overlay
from engine.pipeline import Analyzer, Pacer, analysed_frames, run_stages, timed_frames
from engine.slots import LatestSlot

from fakes import ListSource


def test_run_stages_keeps_order_and_applies_each_stage():
    out = list(run_stages(range(50), [("double", lambda x: 2 * x), ("inc", lambda x: x + 1)], maxsize=2))
    assert out == [2 * i + 1 for i in range(50)]


def test_run_stages_reports_the_failing_stage():
    def boom(x):
        if x == 7:
            raise ValueError("bad frame")
        return x

    got = []
    with pytest.raises(PipelineError, match="analyse stage failed: ValueError\\('bad frame'\\)"):
        for item in run_stages(range(100), [("analyse", boom)]):
            got.append(item)
    assert got == list(range(7))


def test_run_stages_passes_our_errors_through_unchanged():
    def source():
        yield 1
        raise SourceError("video broke")

    with pytest.raises(SourceError, match="video broke"):
        list(run_stages(source(), [("id", lambda x: x)]))


def test_run_stages_leaving_early_stops_every_thread():
    before = {t.name for t in threading.enumerate()}
    endless = iter(int, 1)  # never ends
    for i, _ in enumerate(run_stages(endless, [("a", lambda x: x), ("b", lambda x: x)], maxsize=1)):
        if i == 5:
            break
    time.sleep(0.1)
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("endoview-") and t.name not in before]
    assert leftover == []


def test_run_stages_consumer_error_does_not_hang():
    # the caller's own callback raising (supervision's old hang): threads must still stop
    with pytest.raises(RuntimeError):
        for _ in run_stages(iter(int, 1), [("a", lambda x: x)], maxsize=1):
            raise RuntimeError("sink failed")
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name in ("endoview-a", "endoview-source")]


def test_timed_frames_range_and_decode_timing():
    src = ListSource(20)
    frames = list(timed_frames(src, start=5, end=9))
    assert [f.index for f, _ in frames] == [5, 6, 7, 8]
    assert all("decode" in t and t["decode"] >= 0 for _, t in frames)


def test_analyzer_fills_area_prediction_and_timings(tiny_bundle):
    from engine.analysis.classifier import Classifier
    from engine.backends import open_backend

    src = ListSource(3)
    with open_backend(tiny_bundle, "onnxruntime") as backend:
        analyzer = Analyzer(Classifier(tiny_bundle, backend))
        result = analyzer(src.read())
    assert result.prediction is not None and result.prediction.label in tiny_bundle.labels
    assert set(result.timings) >= {"crop", "resize", "inference"}
    assert result.area.shape in ("octagon", "circle")
    assert not result.untrained


def test_analyzer_without_model_gives_area_only():
    result = Analyzer(None)(ListSource(1).read())
    assert result.prediction is None and "inference" not in result.timings


def test_analysed_frames_paced_gives_every_frame_in_order():
    src = ListSource(12, fps=100.0)
    t0 = time.perf_counter()
    out = [r.frame.index for r in analysed_frames(src, Analyzer(None), speed=1.0)]
    elapsed = time.perf_counter() - t0
    assert out == list(range(12))
    assert elapsed >= 0.11 * 0.9  # 11 frame intervals of 10 ms: paced, not as fast as possible


def test_analysed_frames_range_timings_and_pictures_threaded_or_in_turn():
    for threads in (True, False):
        out = list(analysed_frames(ListSource(20), Analyzer(None), start=5, end=9, threads=threads,
                                   draw=lambda r: r.frame.index * 10))
        assert [(r.frame.index, picture) for r, picture in out] == [(i, i * 10) for i in range(5, 9)]
        assert all({"decode", "crop"} <= set(r.timings) for r, _ in out)


def test_analysed_frames_prepare_and_stop():
    seen = []

    def prepare(frame):
        seen.append(threading.current_thread().name)
        return frame

    stop = threading.Event()
    out = []
    for r in analysed_frames(ListSource(10**6), Analyzer(None), prepare=prepare, stop=stop):
        out.append(r.frame.index)
        if len(out) == 5:
            stop.set()
    assert out[:5] == list(range(5)) and len(out) <= 5 + 8  # a few read ahead, then it ends
    assert set(seen) == {"endoview-source"}  # prepared in the decode thread, off the caller's


def test_analysed_frames_follows_a_speed_change():
    speed = [1000.0]
    src = ListSource(10, fps=20.0)  # 50 ms apart
    t0 = time.perf_counter()
    for r in analysed_frames(src, Analyzer(None), speed=lambda: speed[0]):
        if r.frame.index == 4:
            fast = time.perf_counter() - t0
            speed[0] = 2.0  # 25 ms apart from here on
    slow = time.perf_counter() - t0 - fast
    assert fast < 0.1 and slow >= 4 * 0.025 * 0.9  # the clock restarts at frame 5: 4 intervals


def test_replay_speed_doubles_rate():
    pacer = Pacer(speed=2.0)
    t0 = time.perf_counter()
    for i in range(6):
        pacer.wait(i * 0.04)
    assert time.perf_counter() - t0 >= 0.1 * 0.9  # 5 intervals of 40 ms at 2x = 100 ms


def test_latest_slot_counts_replaced_items_as_dropped():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get(0.01) == 4 and slot.dropped == 4
    assert slot.get(0.01) is None
    slot.close()
    assert slot.get(1.0) is None and slot.closed


def test_latest_slot_iterates_the_newest_items_until_closed():
    slot, got = LatestSlot(), []
    for i in range(3):
        slot.put(i)  # unread: only the newest is left
    consumer = threading.Thread(target=lambda: got.extend(slot), name="endoview-test-consumer")
    consumer.start()
    assert slot.wait_empty(1.0)
    slot.put(10)
    assert slot.wait_empty(1.0)
    slot.put(11)
    slot.close()  # an item put before close is still given, then the loop ends
    consumer.join(1.0)
    assert not consumer.is_alive() and got == [2, 10, 11] and slot.dropped == 2
    assert list(slot) == []  # closed and empty: nothing, at once


def test_live_runner_drops_stale_frames_and_reports_results():
    class SlowAnalyzer(Analyzer):
        def start(self, frame, timings=None):
            time.sleep(0.02)
            return super().start(frame, timings)

    painted, results = [], []
    src = ListSource(60, delay=0.002)
    runner = LiveRunner(src, SlowAnalyzer(None), overlay=Overlay.default(),
                        on_frame=painted.append, on_result=lambda r, img: results.append((r, img)))
    with runner:
        assert runner.wait(10)
    assert runner.error is None
    assert len(painted) == 60  # every frame reaches the painter at once
    assert runner.stats.dropped > 0  # the slow model never holds the video back
    assert runner.stats.analysed + runner.stats.dropped == 60
    indices = [r.frame.index for r, _ in results]
    assert indices == sorted(indices) and indices[-1] == 59  # the newest frame is always analysed
    r, img = results[-1]
    assert img is not None and img.shape == r.frame.image.shape and "overlay" in r.timings
    assert len(runner.stats.latencies_ms) == runner.stats.analysed


def test_live_runner_sets_the_analyzers_background_mode_from_its_analysis_thread():
    class Watched(Analyzer):
        def __init__(self):
            super().__init__(None)
            self.calls, self.during, self.finishing = [], [], []

        def set_background(self, on):
            self.calls.append((threading.get_ident(), threading.current_thread().name, on))
            super().set_background(on)

        def start(self, frame, timings=None):
            self.during.append((threading.get_ident(), self.tracker.background))
            return super().start(frame, timings)

        def finish(self, started):
            self.finishing.append(threading.get_ident())
            return super().finish(started)

    analyzer = Watched()
    runner = LiveRunner(ListSource(20), analyzer)
    with runner:
        assert runner.wait(5)
    assert runner.error is None
    analysing = {ident for ident, _ in analyzer.during}
    assert len(analysing) == 1 and all(on for _, on in analyzer.during)  # background while live
    assert [(ident, name, on) for ident, name, on in analyzer.calls] == [
        (*analysing, "endoview-analyse", True), (*analysing, "endoview-analyse", False)]
    assert threading.get_ident() not in analysing and not analyzer.tracker.background
    # the second half of each frame runs in a thread of its own, every frame that started
    assert len(set(analyzer.finishing)) == 1 and set(analyzer.finishing).isdisjoint(analysing)
    assert len(analyzer.finishing) == len(analyzer.during) == runner.stats.analysed


def test_live_runner_overlaps_the_two_halves_and_keeps_the_order():
    """While one frame is finished, the next one is started (two frames in analysis at once), the
    results come out in order, and none is dropped in lockstep."""
    spans = {"start": [], "finish": []}

    class Halves(Analyzer):
        def start(self, frame, timings=None):
            t0 = time.perf_counter()
            time.sleep(0.02)
            spans["start"].append((t0, time.perf_counter()))
            return super().start(frame, timings)

        def finish(self, started):
            t0 = time.perf_counter()
            time.sleep(0.02)
            spans["finish"].append((t0, time.perf_counter()))
            return super().finish(started)

    results = []
    runner = LiveRunner(ListSource(30), Halves(None), lockstep=True,
                        on_result=lambda r, img: results.append(r.frame.index))
    with runner:
        assert runner.wait(10)
    assert runner.error is None and results == list(range(30))  # lockstep: none dropped, in order
    overlapping = sum(1 for a0, a1 in spans["start"] for b0, b1 in spans["finish"] if a0 < b1 and b0 < a1)
    assert overlapping >= 20, "the first half of a frame should run while the frame before it is finished"


def test_live_runner_analysis_error_is_reported():
    class Broken(Analyzer):
        def start(self, frame, timings=None):
            raise RuntimeError("model crashed")

    class BrokenLater(Analyzer):
        def finish(self, started):
            raise RuntimeError("segmenter crashed")

    for analyzer in (Broken(None), BrokenLater(None)):
        runner = LiveRunner(ListSource(10), analyzer)
        with runner:
            assert runner.wait(5)
        assert isinstance(runner.error, RuntimeError)
        assert runner.stop(2.0)  # both analysis threads ended


def test_live_runner_stop_is_bounded_on_an_endless_source():
    src = ListSource(10**9)
    runner = LiveRunner(src, Analyzer(None)).start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    assert runner.stop(timeout=2.0)
    assert time.perf_counter() - t0 < 2.0
    assert runner.stats.frames_in > 0


def test_live_runner_pacing_keeps_arrival_rate():
    runner = LiveRunner(ListSource(10), Analyzer(None), pace=50.0)
    t0 = time.perf_counter()
    with runner:
        runner.wait(5)
    assert time.perf_counter() - t0 >= 9 / 50 * 0.9


def test_live_runner_survives_an_unplugged_capture_card():
    """The real DeviceSource over a fake OpenCV capture: unplugged mid-stream, plugged back."""
    from engine.sources.device import DeviceSource
    from test_sources import FakeCamera, FakeCapture

    class SlowCapture(FakeCapture):  # a 200 Hz card
        def read(self):
            time.sleep(0.005)
            return super().read()

    camera = FakeCamera()
    src = DeviceSource(0, capture_factory=lambda target: SlowCapture(camera), max_failures=3,
                       lost_after_s=0.05)
    statuses, results = [], []
    runner = LiveRunner(src, Analyzer(None), on_status=statuses.append,
                        on_result=lambda r, img: results.append(r.frame.index), backoff=(0.05,),
                        max_frames=40)
    with runner:
        deadline = time.monotonic() + 5
        while runner.stats.frames_in < 10 and time.monotonic() < deadline:
            time.sleep(0.005)
        camera.present = False
        while not any("reconnecting" in s for s in statuses) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.2)  # a few failed reconnects
        camera.present = True
        assert runner.wait(5)
    src.close()
    assert runner.error is None
    assert runner.stats.frames_in == 40 and runner.stats.reconnects == 1
    assert any("is back" in s for s in statuses)
    assert results[-1] == 39  # indices keep counting across the reconnect


def test_the_segmenter_runs_beside_the_classifier_with_a_pool_and_gives_the_same_answer(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from tiny_models import make_tiny_classifier_bundle, make_tiny_segmenter_bundle

    from engine.analysis.classifier import Classifier
    from engine.analysis.segmenter import Segmenter
    from engine.backends import open_backend
    from engine.types import Frame

    clf_b = make_tiny_classifier_bundle(tmp_path / "c", labels=("normal", "polyp"), size=(32, 32), torchscript=False)
    seg_b = make_tiny_segmenter_bundle(tmp_path / "s", size=(32, 32), torchscript=False)
    image = (np.random.default_rng(1).random((96, 128, 3)) * 255).astype(np.uint8)
    with open_backend(clf_b, "onnxruntime") as cb, open_backend(seg_b, "onnxruntime") as sb:
        analyzer = Analyzer(Classifier(clf_b, cb), segmenter=Segmenter(seg_b, sb), smooth=False)
        runs = []
        probabilities = analyzer.segmenter.probabilities
        analyzer.segmenter.probabilities = lambda x: runs.append(threading.current_thread().name) or probabilities(x)
        analyzer.warm_up()  # each model once, outside any frame
        plain = analyzer(Frame(0, 0.0, image, time.perf_counter()))
        run_model = sb.run
        sb.run = lambda feeds: time.sleep(0.02) or run_model(feeds)  # a model slower than the mask's own work
        with ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:
            analyzer.set_pool(pool)
            started = analyzer.start(Frame(1, 0.1, image, time.perf_counter()))
            assert started.segmenter_run is not None  # already under way beside the classifier
            pooled = analyzer.finish(started)
            analyzer.set_pool(None)
    assert runs[0] == threading.current_thread().name and runs[1].startswith("pool")
    assert np.array_equal(plain.segmentation.mask, pooled.segmentation.mask)
    assert plain.segmentation.peak == pooled.segmentation.peak and plain.polyp == pooled.polyp
    assert "segmenter" in pooled.timings and "resize" in pooled.timings
    # the mask's own time: never the model's latency taken off a span it was not spent in
    assert pooled.timings["mask"] >= 0.0 and plain.timings["mask"] >= 0.0

