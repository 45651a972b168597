"""Reliability in the window (issue 6): capture loss through the real DeviceSource over a fake
OpenCV capture, and live view + background export + second pass together, then a bounded close."""

from __future__ import annotations

import gc
import queue
import threading
import time

import pytest
from PySide6.QtCore import QTimer

from fakes import ListSource
from test_sources import FakeCamera, FakeCapture

WAIT = 20_000


class PacedCapture(FakeCapture):
    """A 100 Hz capture card."""

    def read(self):
        time.sleep(0.01)
        return super().read()


def test_capture_loss_errors_and_size_change_keep_the_window_live(qtbot, make_viewer):
    from engine.sources.device import DeviceSource

    camera = FakeCamera()
    sources = []

    def opener(spec):
        src = DeviceSource(0, capture_factory=lambda target: PacedCapture(camera), max_failures=3,
                           lost_after_s=0.1)
        sources.append(src)
        return src

    w = make_viewer(source_opener=opener)
    ticks = []
    heartbeat = QTimer()
    heartbeat.setInterval(20)
    heartbeat.timeout.connect(lambda: ticks.append(time.monotonic()))
    heartbeat.start()
    try:
        w.open("/dev/video0")
        qtbot.waitUntil(lambda: w.state.live and w.state.position > 10, timeout=WAIT)
        player = w.session.player

        camera.script = ["fail"] * 2  # a glitch: errors, not a loss
        at = w.state.position
        qtbot.waitUntil(lambda: w.state.position > at + 5, timeout=WAIT)
        assert "reconnecting" not in w.state.status

        camera.size = (1280, 720)  # the processor switched its output format
        qtbot.waitUntil(lambda: w.session.shown is not None
                        and w.session.shown.frame.image.shape[:2] == (720, 1280), timeout=WAIT)

        camera.present = False  # unplugged: stops delivering
        qtbot.waitUntil(lambda: "reconnecting" in w.state.status or "waiting" in w.state.status, timeout=WAIT)
        lost_at, ticks_at = w.state.position, len(ticks)
        w.refresh()
        assert "capture device" in w.status_label.text()  # the loss is shown
        qtbot.wait(1000)  # several retries with backoff, the event loop keeps running
        assert len(ticks) - ticks_at >= 20, "the GUI thread stalled while the device was gone"
        assert w.state.position == lost_at and not w.state.error

        camera.present = True
        qtbot.waitUntil(lambda: "is back" in w.state.status, timeout=WAIT)
        qtbot.waitUntil(lambda: w.state.position > lost_at + 10, timeout=WAIT)
        assert w.session.player is player  # the same session goes on
        assert player.stats().reconnects == 1 and len(sources) == 1
        assert not w.state.error
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        assert max(gaps) < 1.0, f"event loop stalled for {max(gaps):.2f} s"
    finally:
        heartbeat.stop()


def _queues():
    return [o for o in gc.get_objects() if issubclass(type(o), queue.Queue)]


def test_live_view_export_and_second_pass_together_then_close_within_2_s(qtbot, make_viewer, clip, tiny_bundle,
                                                                       tmp_path):
    from app.session import ExportOptions

    def opener(spec):
        if str(spec).startswith("/dev/"):
            src = ListSource(1_000_000, delay=0.01, size=(192, 160))  # a 100 Hz live device
            src.info.seekable, src.info.kind = False, "device"
            return src
        from engine.sources import open_source

        return open_source(spec)

    w = make_viewer(second_pass=tiny_bundle.path, source_opener=opener)
    w.session.settings = w.session.settings.with_(record_raw=True)
    w.open("/dev/video-fake")
    qtbot.waitUntil(lambda: w.state.live and w.state.position > 5, timeout=WAIT)
    w.state.second_pass = True
    w.session.analyzer.triggers = lambda result: result.frame.index % 5 == 0  # ask often
    w.session.start_recording()
    assert w.state.recording
    w.state.update(source=str(clip), live=False, fps=30.0, frame_count=90)  # export reads the clip

    exports, deadline = 0, time.monotonic() + 20
    max_queue = 0
    while time.monotonic() < deadline:
        w.session.export(ExportOptions(tmp_path / f"e{exports}.mp4", force=True))
        qtbot.waitUntil(lambda: not w.session.running("export"), timeout=60_000)
        assert not w.state.error, w.state.error
        exports += 1
        max_queue = max([max_queue] + [q.qsize() for q in _queues()])
    w.state.update(live=True, source="/dev/video-fake")
    at = w.state.position
    qtbot.waitUntil(lambda: w.state.position > at + 10, timeout=WAIT)  # live view still moving
    assert exports >= 2 and all((tmp_path / f"e{i}.mp4").exists() for i in range(exports))
    second = w.session.analyzer.second_pass.latest
    assert second is not None  # the second pass ran meanwhile
    assert all(q.maxsize > 0 for q in _queues()), "an unbounded queue exists"
    assert max_queue <= 64
    assert w.session.recorders[0].frames > 100

    # one more export left running, then close the window: everything stops within 2 s
    w.session.export(ExportOptions(tmp_path / "last.mp4", force=True))
    w._closing_confirmed = True
    t0 = time.monotonic()
    w.close()
    elapsed = time.monotonic() - t0
    while any(t.name.startswith("endoview-") for t in threading.enumerate()) and time.monotonic() - t0 < 5:
        qtbot.wait(10)
    left = [t.name for t in threading.enumerate() if t.name.startswith("endoview-")]
    total = time.monotonic() - t0
    print(f"close: {elapsed:.2f} s, all endoview threads gone after {total:.2f} s")
    assert elapsed < 2.0 and not left and total < 2.0, (elapsed, total, left)
    assert not (tmp_path / "last.mp4").exists() or (tmp_path / "last.mp4").stat().st_size > 0


def test_an_internal_error_is_one_line_for_the_user_and_a_traceback_in_the_log(caplog):
    from app.session import describe
    from engine.errors import EndoviewError

    def deep():
        raise SystemError("bad argument to internal function")

    try:
        deep()
    except SystemError as exc:
        caught = exc
    with caplog.at_level("ERROR", logger="app.session"):
        line = describe(caught)
    assert line.startswith("internal error: SystemError(") and "\n" not in line
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and logged[0].exc_info[1] is caught  # where it came from, for the report
    assert "in deep" in caplog.text

    caplog.clear()
    assert describe(EndoviewError("the clip is truncated")) == "the clip is truncated"
    assert not caplog.records  # our own errors are the message itself, no traceback
