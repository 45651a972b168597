import contextlib
import threading
import time

import pytest

from engine.errors import SourceError
from engine.overlay import Overlay
from engine.pipeline import Analyzer
from engine.player import Player, fit_size

from fakes import ListSource


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


class Collect:
    def __init__(self):
        self.shown, self.results, self.status, self.errors, self.playing = [], [], [], [], []
        self.opened = threading.Event()

    def kwargs(self):
        return dict(on_frame=self.shown.append, on_result=self.results.append,
                    on_status=self.status.append, on_error=self.errors.append,
                    on_playing=self.playing.append, on_open=lambda info, a: self.opened.set())

    @property
    def indices(self):
        return [s.frame.index for s in self.shown]


def make(source, c: Collect, **kw) -> Player:
    return Player(lambda: source, lambda info: contextlib.nullcontext(Analyzer(None)), **c.kwargs(), **kw).start()


def test_plays_every_frame_in_order_then_pauses_at_the_end():
    c = Collect()
    p = make(ListSource(12), c, speed=4.0, overlay=Overlay.default())
    try:
        assert wait_for(lambda: c.playing == [False])
        assert c.indices == list(range(12)) and len(c.results) == 12
        assert all(s.overlaid for s in c.shown) and p.stats().analysed == 12
    finally:
        assert p.stop()


def test_pause_step_seek_jump_are_exact():
    c = Collect()
    p = make(ListSource(200, fps=10), c, play=False)
    try:
        assert wait_for(lambda: c.indices == [0])
        p.step(1)
        p.step(1)
        p.step(-1)
        assert wait_for(lambda: c.indices == [0, 1, 2, 1])
        p.seek(150)
        assert wait_for(lambda: c.indices[-1] == 150)
        p.jump(-5.0)  # 10 fps: 50 frames
        assert wait_for(lambda: c.indices[-1] == 100)
        p.seek(10_000)  # clamped to the last frame
        assert wait_for(lambda: c.indices[-1] == 199)
        assert not p.playing
    finally:
        assert p.stop()


def test_play_pause_and_speed():
    c = Collect()
    p = make(ListSource(400, fps=20), c, play=False)
    try:
        assert wait_for(lambda: c.indices == [0])
        p.set_speed(4.0)
        p.play()
        assert wait_for(lambda: len(c.shown) > 20)
        p.pause()
        assert wait_for(lambda: not p.playing)
        time.sleep(0.2)
        n = len(c.shown)
        time.sleep(0.3)
        assert len(c.shown) == n  # paused: nothing new
        assert c.indices == list(range(n))  # in order, none skipped
        t0, before = time.monotonic(), len(c.shown)
        p.set_speed(0.25)
        p.play()
        time.sleep(0.5)
        assert len(c.shown) - before <= 5  # 0.25x of 20 fps: ~2-3 frames in 0.5 s
        with pytest.raises(ValueError, match="between"):
            p.set_speed(8)
    finally:
        assert p.stop()


def test_loop_starts_again():
    c = Collect()
    p = make(ListSource(6), c, speed=4.0, loop=True)
    try:
        assert wait_for(lambda: len(c.shown) >= 14)
        assert c.indices[:14] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1]
    finally:
        assert p.stop()


def test_source_error_is_reported_and_the_worker_ends():
    c = Collect()

    def bad():
        raise SourceError("video not found: nope.mp4")

    p = Player(bad, lambda info: contextlib.nullcontext(Analyzer(None)), **c.kwargs()).start()
    assert p.finished.wait(5)
    assert [str(e) for e in c.errors] == ["video not found: nope.mp4"] and p.stop()


def test_decode_error_while_playing_is_reported():
    c = Collect()
    p = make(ListSource(30, fail_at=10), c, speed=4.0)
    assert p.finished.wait(5) and p.stop()
    assert "fake decode failure" in str(c.errors[0])


def test_live_delivers_newest_frames_freezes_and_feeds_sinks():
    c = Collect()
    src = ListSource(10_000, delay=0.005)
    src.info.seekable = False
    sunk = []
    p = make(src, c)
    p.add_sink(sunk.append)
    try:
        assert wait_for(lambda: len(c.shown) > 10)
        assert p.live
        p.frozen = True
        time.sleep(0.05)
        n, m = len(c.shown), len(sunk)
        time.sleep(0.2)
        assert len(c.shown) == n and len(sunk) > m + 5  # frozen picture, capture goes on
        p.frozen = False
        assert wait_for(lambda: len(c.shown) > n)
        assert p.stats().analysed > 0
    finally:
        assert p.stop()


def test_live_reconnects_a_lost_device():
    c = Collect()
    src = ListSource(10_000, lose_at=5, missing_reopens=1, delay=0.002)
    src.info.seekable = False
    p = Player(lambda: src, lambda info: contextlib.nullcontext(Analyzer(None)), **c.kwargs())
    p.start()
    try:
        assert wait_for(lambda: any("is back" in s for s in c.status), timeout=10)
        assert any("reconnecting" in s for s in c.status)
        n = len(c.shown)
        assert wait_for(lambda: len(c.shown) > n + 5)
        assert p.stats().reconnects == 1 and not c.errors
    finally:
        assert p.stop()


def test_stop_is_bounded_while_playing():
    c = Collect()
    p = make(ListSource(100_000, fps=30), c)
    assert wait_for(lambda: len(c.shown) > 3)
    t0 = time.monotonic()
    assert p.stop(timeout=3)
    assert time.monotonic() - t0 < 3
    assert not [t for t in threading.enumerate() if t.name.startswith("endoview-")]


def test_fit_size_rounds_so_a_fitted_picture_fits_itself():
    # 1920 x (1018 / 1920) is 1017.99...: truncated, the picture was a pixel narrower than the view
    # and Qt scaled it again on every paint
    assert fit_size((1920, 1080), (1018, 768)) == (1018, 573)
    for size, box in [((1920, 1080), (1018, 768)), ((640, 512), (1018, 768)), ((1280, 1024), (333, 999)),
                      ((720, 576), (1919, 1001))]:
        fitted = fit_size(size, box)
        assert fitted[0] <= box[0] and fitted[1] <= box[1] and (fitted[0] == box[0] or fitted[1] == box[1])
        assert fit_size(fitted, box) == fitted


def test_pictures_for_the_screen_are_scaled_first_then_drawn_on_as_bgra():
    import cv2
    import numpy as np

    from engine.overlay import render
    from engine.types import ContentArea, Frame, FrameResult, Prediction

    image = np.full((1080, 1920, 3), 90, np.uint8)
    frame = Frame(3, 0.1, image, 0.0)
    pred = Prediction(("normal", "polyp"), np.array([0.3, 0.7], np.float32), "tiny", 3.0)
    result = FrameResult(frame, ContentArea.full_frame(1920, 1080), pred)
    p = Player(lambda: None, lambda info: None, overlay=Overlay.default())
    assert p.picture(frame, result).overlaid  # no screen size: the full-size frame, overlay drawn
    p.screen_size = (1018, 768)
    shown = p.picture(frame, result)
    assert shown.image is image and not shown.overlaid and np.all(image == 90)  # the frame untouched
    assert shown.screen.shape == (573, 1018, 4) and np.all(shown.screen[..., 3] == 255)  # BGRA, opaque
    plain = cv2.resize(image, (1018, 573))
    assert np.any(shown.screen[..., :3] != plain, axis=2)[10:60, 10:150].mean() > 0.5  # the label panel
    # whoever needs the full-size annotated picture (recorder, snapshot) draws it
    assert np.array_equal(shown.annotated(p.overlay), render(frame, result, p.overlay))
    p.screen_size = (1920, 1080)  # the view is the frame's size: no scaling, the frame itself is not drawn on
    same = p.picture(frame, result)
    assert same.screen.shape == (1080, 1920, 4) and np.all(image == 90)
    assert p.picture(frame, None).screen.shape == (1080, 1920, 4)  # no result yet: the plain frame


def test_settle_heap_freezes_what_is_alive_and_thaws_it_at_the_next_call():
    """The player settles the heap once its models are loaded (engine.runtime.settle_heap): a
    full collection then walks only what was made since, not the models' heap."""
    import gc
    import weakref

    from engine.runtime import settle_heap

    class Node:
        pass

    try:
        node = Node()
        node.me = node  # a cycle: only the cyclic collector can free it
        ref = weakref.ref(node)
        settle_heap()
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert ref() is not None  # frozen: out of the collector's reach...
        settle_heap()
        assert ref() is None  # ...until the next call thaws it first (a source opened again)
        gc.unfreeze()
        c = Collect()
        p = make(ListSource(3), c, play=False)
        try:
            assert wait_for(lambda: c.opened.is_set() and c.indices == [0])
            assert gc.get_freeze_count() > 0  # the player settled it
        finally:
            assert p.stop()
    finally:
        gc.unfreeze()


def test_settle_heap_waits_for_a_collection_running_in_another_thread_and_keeps_gc_on():
    """A collection in another thread (one that let go of the interpreter lock inside a
    finalizer) must end before the generations are thawed and frozen again; automatic
    collection is off while settle_heap waits, and on again afterwards."""
    import gc

    from engine import runtime

    runtime._collecting.set()  # as the gc "start" callback does
    done = threading.Event()
    seen = []
    t = threading.Thread(target=lambda: (runtime.settle_heap(), done.set()), name="settle-test")
    try:
        t.start()
        time.sleep(0.1)
        seen.append((done.is_set(), gc.isenabled()))
        runtime._collecting.clear()  # the "stop" callback
        t.join(5)
        assert seen == [(False, False)]  # it waited, with automatic collection off
        assert done.is_set() and gc.isenabled()
        gc.collect()  # the callback tracks real collections too: start and stop
        assert not runtime._collecting.is_set()
    finally:
        runtime._collecting.clear()
        t.join(5)
        gc.unfreeze()


def test_player_settles_in_its_worker_unless_told_not_to():
    """The headless player settles the heap in its worker; the viewer passes settle=None and
    settles on its GUI thread instead (a collection in the worker freed Qt objects there)."""
    where = []
    for settle, expected in ((lambda: where.append(threading.current_thread().name), 1), (None, 1)):
        c = Collect()
        p = make(ListSource(3), c, play=False, settle=settle)
        try:
            assert wait_for(lambda: c.opened.is_set() and c.indices == [0])
        finally:
            assert p.stop()
        assert len(where) == expected
    assert where[0] != threading.main_thread().name


def test_load_watch_is_busy_while_frames_are_skipped_and_holds_before_it_lets_go():
    from engine.player import LoadWatch

    w = LoadWatch(window_s=0.5, enter=0.1, leave=0.02, hold_s=3.0)
    assert w.update(0, 0, 0.0) is False
    assert w.update(30, 1, 0.5) is False  # 1 of 30 skipped: keeping up
    assert w.update(60, 1, 0.7) is False  # a window not over yet
    assert w.update(90, 10, 1.0) is True  # 9 of 60 since 0.5 s: 15 % skipped
    assert w.update(120, 10, 1.5) is True  # keeping up again, but within hold_s of becoming busy
    assert w.update(150, 11, 4.0) is True  # past hold_s, but this window skipped 1 of 30 (3 %)
    assert w.update(180, 11, 4.5) is False  # none skipped: the full rate returns
    assert w.update(5, 0, 5.0) is False  # counts restarted (a reconnect): a fresh window


class SlowAnalyzer(Analyzer):
    """An analysis slower than its source: the live runner skips frames."""

    def start(self, frame):
        time.sleep(0.03)
        return super().start(frame)


def test_live_player_paints_at_busy_fps_while_the_analysis_skips_frames():
    c = Collect()
    painted = []
    kwargs = c.kwargs()
    kwargs["on_frame"] = lambda shown: painted.append(time.perf_counter())
    p = Player(lambda: ListSource(3000, delay=0.002), lambda info: contextlib.nullcontext(SlowAnalyzer(None)),
               live=True, present_fps=200, busy_fps=10, **{k: v for k, v in kwargs.items()}).start()
    try:
        assert wait_for(lambda: p.busy, timeout=10)
        assert p.stats().busy and p.stats().dropped > 0
        start = len(painted)
        assert wait_for(lambda: len(painted) >= start + 6, timeout=10)
        gaps = [b - a for a, b in zip(painted[start + 1:], painted[start + 2:])]
        assert min(gaps) >= 0.09  # 10 pictures a second at most (a sleep is never shorter)
    finally:
        assert p.stop()
    q = Player(lambda: ListSource(3000, delay=0.002), lambda info: contextlib.nullcontext(SlowAnalyzer(None)),
               live=True, present_fps=200, busy_fps=None, **c.kwargs()).start()
    try:
        assert wait_for(lambda: q.stats().dropped > 50, timeout=10)
        assert not q.busy and not q.stats().busy  # without busy_fps: never
    finally:
        assert q.stop()
