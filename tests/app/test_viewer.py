"""The viewer driven through its state object, its session and its widgets (offscreen)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.session import ExportOptions
from app.state import ViewerState
from engine.overlay import _scale as overlay_scale

from fakes import ListSource

WAIT = 15_000  # ms


def opened(qtbot, window, spec) -> None:
    window.open(str(spec))
    qtbot.waitUntil(lambda: window.session.info is not None and window.state.position >= 0, timeout=WAIT)


def on_screen(shown) -> np.ndarray:
    """The BGR picture the video view shows: the player's screen-sized BGRA one, when it made one."""
    return shown.image if shown.screen is None else np.ascontiguousarray(shown.screen[..., :3])


def paused_at(qtbot, window, index) -> None:
    qtbot.waitUntil(lambda: not window.state.playing and window.state.position == index, timeout=WAIT)


def test_state_notifies_changes_only_and_rejects_unknown_fields():
    state, seen = ViewerState(), []
    state.subscribe(lambda name, value: seen.append((name, value)))
    state.speed = 2.0
    state.speed = 2.0
    state.update(loop=True, position=3)
    assert seen == [("speed", 2.0), ("loop", True), ("position", 3)]
    with pytest.raises(AttributeError, match="no field"):
        state.update(nope=1)


def test_widgets_mirror_the_state_both_ways_and_let_go_on_close(make_viewer):
    w = make_viewer()
    c = w.controls
    w.state.speed = 2.0
    assert c.speed.currentText() == "2x"
    c.speed.setCurrentIndex(c.speed.findData(0.5))
    assert w.state.speed == 0.5
    c.loop.setChecked(True)
    assert w.state.loop
    w.state.overlay = False
    assert not c.overlay.isChecked()
    c.close_sync()
    w.state.speed = 4.0
    assert c.speed.currentText() == "0.5x"  # disconnected


def test_play_pause_step_seek_jump_and_speed(qtbot, make_viewer, clip):
    w = make_viewer()
    w.state.speed = 4.0
    opened(qtbot, w, clip)
    assert w.state.frame_count == 90 and not w.state.live
    paused_at(qtbot, w, 89)  # played to the end at 4x and paused there
    assert w.session.timeline.analysed == 90
    w.session.seek(10)
    qtbot.waitUntil(lambda: w.state.position == 10, timeout=WAIT)
    qtbot.keyClick(w.video, Qt.Key.Key_Right)
    paused_at(qtbot, w, 11)
    qtbot.keyClick(w.video, Qt.Key.Key_Left)
    qtbot.keyClick(w.video, Qt.Key.Key_Left)
    paused_at(qtbot, w, 9)
    qtbot.keyClick(w.video, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)  # +5 s = 150 -> last
    paused_at(qtbot, w, 89)
    w.session.seek(30)
    paused_at(qtbot, w, 30)
    assert w.controls.slider.value() == 30
    w.state.speed = 0.25
    qtbot.keyClick(w.video, Qt.Key.Key_Space)
    assert w.state.playing
    qtbot.waitUntil(lambda: w.state.position > 30, timeout=WAIT)
    qtbot.keyClick(w.video, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: not w.session.player.playing, timeout=WAIT)
    at = w.state.position
    qtbot.wait(300)
    assert w.state.position == at and at < 40  # 0.25x: about 7 frames a second
    assert w.video.painted > 0


def test_timeline_findings_and_whole_video_analysis(qtbot, make_viewer, clip):
    w = make_viewer()
    w.state.playing = False
    opened(qtbot, w, clip)
    w.state.playing = False
    w.session.analyse_whole()
    assert w.state.analysing
    qtbot.waitUntil(lambda: not w.state.analysing, timeout=WAIT)
    assert w.session.timeline.analysed == 90 and "analysed 90 frames" in w.last_message
    # the findings list shows the polyps of that pass (one row per confirmed track; with the tiny
    # model, as many as it found: rows and click-to-jump are checked in test_procedure_viewer.py)
    assert w.session.whole is not None and len(w.session.analysed_rows()) == 90
    w.refresh()
    assert w.findings.count() == len(w.session.polyp_rows())
    assert f"{w.findings.count()} polyps" in w.last_message


def test_export_with_cancel_then_complete(qtbot, make_viewer, clip, tmp_path):
    w = make_viewer()
    opened(qtbot, w, clip)
    out = tmp_path / "x.mp4"
    w.session.export(ExportOptions(out, log=tmp_path / "x.jsonl"))
    w.session.cancel("export")
    qtbot.waitUntil(lambda: not w.state.exporting, timeout=WAIT)
    assert "cancelled" in w.last_message and not out.exists()
    w.state.mark_in, w.state.mark_out = 30, 59
    w.session.export(ExportOptions(out, log=tmp_path / "x.jsonl", start_s=1.0, end_s=2.0))
    assert w.job.isVisible()
    qtbot.waitUntil(lambda: not w.state.exporting, timeout=WAIT)
    assert "exported 30 frames" in w.last_message and out.exists() and str(out) in w.last_message
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 30 and not w.job.isVisible()


def test_snapshot_with_and_without_overlay(qtbot, make_viewer, clip, tmp_path):
    w = make_viewer()
    opened(qtbot, w, clip)
    qtbot.keyClick(w.video, Qt.Key.Key_S)
    qtbot.waitUntil(lambda: "snapshot saved" in w.last_message, timeout=WAIT)
    import cv2

    pngs = sorted((tmp_path / "out").glob("*.png"), key=lambda p: len(p.name))
    assert len(pngs) == 2 and pngs[1].name == pngs[0].name.replace(".png", "-overlay.png")
    raw, annotated = (cv2.imread(str(p)) for p in pngs)
    assert raw.shape == annotated.shape == (160, 192, 3) and not np.array_equal(raw, annotated)


def test_bad_file_shows_a_message_and_the_app_stays_usable(qtbot, make_viewer, clip, tmp_path):
    w = make_viewer()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    w.open(str(bad))
    qtbot.waitUntil(lambda: bool(w.state.error), timeout=WAIT)
    assert "not a video" in w.state.error and w.banner.isVisible()
    opened(qtbot, w, clip)
    assert w.state.error == "" and not w.banner.isVisible()


def test_missing_model_is_reported(qtbot, make_viewer, clip, tmp_path):
    w = make_viewer()
    assert w.apply_settings(w.session.settings.with_(bundle=str(tmp_path / "no-model")))
    w.open(str(clip))
    qtbot.waitUntil(lambda: bool(w.state.error), timeout=WAIT)
    assert "no-model" in w.state.error
    assert not w.apply_settings(w.session.settings.with_(bundle="", smoothing="bogus"))
    assert "smoothing" in w.state.error


def fake_device(**kw):
    src = ListSource(100_000, delay=0.01, **kw)
    src.info.seekable = False
    src.info.kind = "device"
    return src


def test_live_status_says_when_the_display_yields_to_a_lagging_analysis(qtbot, make_viewer, monkeypatch):
    """While the analysis skips frames the window paints [display] busy_fps pictures a second
    (30 in the packaged config) and its status line says so."""
    import engine.player

    monkeypatch.setattr(engine.player.LoadWatch, "update", lambda self, *args: True)  # always behind
    w = make_viewer(source_opener=lambda spec: fake_device())
    w.open("/dev/video-fake")
    qtbot.waitUntil(lambda: w.state.live and w.state.position > 5, timeout=WAIT)
    assert w.session.player.busy_fps == 30.0 and w.session.player.stats().busy
    qtbot.waitUntil(lambda: "display 30 fps while the analysis catches up" in (w.refresh() or w.status_label.text()),
                    timeout=WAIT)


def test_exit_after_frames_stops_when_a_live_source_ends_before_that_many_were_shown(qtbot, make_viewer, monkeypatch):
    """`view FILE --live --exit-after-frames N`: a file that ends before N pictures were painted
    (a yielding display paints fewer than it reads) closes the window instead of timing out."""
    def short_device(spec):
        src = ListSource(15, delay=0.005)
        src.info.seekable = False
        return src

    import app.window

    exits = []  # the window leaves the application's event loop when done: not the test run's
    monkeypatch.setattr(app.window.QCoreApplication, "exit", lambda code=0: exits.append(code))
    w = make_viewer(source_opener=short_device)
    w.exit_after_frames = 1000
    w.open("/dev/video-short")
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=WAIT)
    assert w.exit_code == 0 and exits == [0] and 0 < w.frames_seen < 1000


def test_live_freeze_reconnect_after_device_loss(qtbot, make_viewer):
    w = make_viewer(source_opener=lambda spec: fake_device(lose_at=20, missing_reopens=1))
    w.open("/dev/video-fake")
    qtbot.waitUntil(lambda: w.state.live and w.state.position > 5, timeout=WAIT)
    qtbot.waitUntil(lambda: "reconnecting" in w.state.status or "waiting" in w.state.status, timeout=WAIT)
    qtbot.waitUntil(lambda: "is back" in w.state.status, timeout=WAIT)
    at = w.state.position
    qtbot.waitUntil(lambda: w.state.position > at + 5, timeout=WAIT)
    qtbot.keyClick(w.video, Qt.Key.Key_Space)  # freeze
    assert w.state.frozen and "FROZEN" in (w.refresh() or w.status_label.text())
    qtbot.wait(100)
    at, analysed = w.state.position, w.session.player.stats().analysed
    qtbot.wait(300)
    assert w.state.position == at and w.session.player.stats().analysed > analysed
    qtbot.keyClick(w.video, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: w.state.position > at, timeout=WAIT)


def test_recording_live_and_closing_asks_first(qtbot, make_viewer, tmp_path):
    import av

    w = make_viewer(source_opener=lambda spec: fake_device())
    w.session.settings = w.session.settings.with_(record_annotated=True)
    w.open("/dev/video-fake")
    qtbot.waitUntil(lambda: w.state.live and w.state.position > 2, timeout=WAIT)
    qtbot.keyClick(w.video, Qt.Key.Key_R)
    assert w.state.recording and w.controls.rec.isChecked()
    qtbot.waitUntil(lambda: min(r.frames for r in w.session.recorders) > 10, timeout=WAIT)
    w.refresh()
    assert "REC" in w.rec_label.text() and "GB free" in w.rec_label.text()
    asked = []
    w.confirm = lambda title, text: asked.append(text) or False
    w.close()
    assert asked and "recording" in asked[0] and w.isVisible()
    qtbot.keyClick(w.video, Qt.Key.Key_R)
    qtbot.waitUntil(lambda: "recorded" in w.last_message, timeout=WAIT)
    files = sorted((tmp_path / "out").glob("rec-*.mp4"))
    assert [f.name.split("-")[-1] for f in files] == ["annotated.mp4", "raw.mp4"]
    with av.open(str(files[1])) as c:
        assert sum(1 for _ in c.decode(video=0)) > 10


def test_a_recorder_that_fails_to_start_stops_the_one_already_started(qtbot, make_viewer, tmp_path, monkeypatch):
    """Raw and annotated: the raw recorder starts, the annotated one cannot (its file exists). The
    raw one must be stopped (no endoview-recorder thread left: the no_leaks fixture checks, and
    failed before the fix), leave no file, and the session must not think it is recording."""
    import app.session as session_module

    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"not ours")
    real = session_module.recording_path
    monkeypatch.setattr(session_module, "recording_path",
                        lambda folder, kind: taken if kind == "annotated" else real(folder, kind))
    w = make_viewer(source_opener=lambda spec: fake_device())
    w.session.settings = w.session.settings.with_(record_raw=True, record_annotated=True)
    w.open("/dev/video-fake")
    qtbot.waitUntil(lambda: w.state.live and w.state.position > 2, timeout=WAIT)
    w.session.start_recording()
    assert "recording exists" in w.state.error
    assert not w.state.recording and w.session.recorders == []
    assert list((tmp_path / "out").glob("rec-*")) == []  # no empty raw recording left behind
    assert taken.read_bytes() == b"not ours"


def test_the_viewer_settles_the_heap_on_its_gui_thread_never_in_the_worker(qtbot, make_viewer, clip, monkeypatch):
    """A full collection in the player's worker freed the Qt objects of an earlier window there,
    and the GUI thread crashed (CI: a segfault while opening a source). The session settles the
    heap on the GUI thread, once per opened source; the player's worker does not."""
    import threading

    import app.session

    where = []
    record = lambda: where.append(threading.current_thread() is threading.main_thread())  # noqa: E731
    monkeypatch.setattr(app.session, "settle_heap", record)
    w = make_viewer()
    opened(qtbot, w, clip)
    qtbot.waitUntil(lambda: bool(where), timeout=WAIT)
    assert where == [True] and w.session.player._settle is None


def test_closing_during_export_asks_and_cancels_when_confirmed(qtbot, make_viewer, clip, tmp_path):
    slow = lambda spec: ListSource(2000, delay=0.01) if "slow" in str(spec) else None  # noqa: E731
    w = make_viewer(source_opener=slow)
    opened(qtbot, w, "slow")
    w.session.export(ExportOptions(tmp_path / "slow.mp4"))
    assert w.state.exporting
    w.confirm = lambda title, text: False
    w.close()
    assert w.isVisible() and w.state.exporting
    w.confirm = lambda title, text: "export" in text
    w.close()
    assert not w.isVisible() and not (tmp_path / "slow.mp4").exists()


def test_second_pass_control_explains_what_is_missing(qtbot, make_viewer):
    w = make_viewer()
    w.controls.second.setChecked(True)
    assert "no second-pass model" in w.last_message and not w.state.second_pass
    assert not w.controls.second.isChecked()
    qtbot.keyClick(w.video, Qt.Key.Key_A)
    assert "--second-pass BUNDLE" in w.last_message


def test_second_pass_on_a_paused_frame_is_drawn_with_its_frame(qtbot, make_viewer, clip, tiny_bundle):
    w = make_viewer(second_pass=tiny_bundle.path)
    opened(qtbot, w, clip)
    paused_at(qtbot, w, 89)
    w.session.seek(40)
    paused_at(qtbot, w, 40)
    qtbot.waitUntil(lambda: w.session.shown is not None and w.session.shown.frame.index == 40, timeout=WAIT)
    qtbot.keyClick(w.video, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: w.session.shown.result.second_pass is not None, timeout=WAIT)
    sp = w.session.shown.result.second_pass
    assert sp.frame_index == 40 and sp.label in tiny_bundle.labels
    assert "second pass" in w.state.status
    w.controls.second.setChecked(True)  # a bundle is configured: the toggle stays on
    assert w.state.second_pass and w.session.triggers_on
    w.controls.second.setChecked(False)
    assert not w.session.triggers_on


def test_opening_hands_its_state_to_the_gui_thread(qtbot, make_viewer, clip, tiny_bundle, monkeypatch):
    """The player's worker opens the source and the model; the session and its state change only
    on the GUI thread, from the opened signal (the worker changes nothing of theirs)."""
    import threading

    from PySide6.QtCore import QThread

    from app.session import Session

    gui, gui_qthread, writes = threading.get_ident(), QThread.currentThread(), []
    session_setattr, state_setattr = Session.__setattr__, ViewerState.__setattr__

    def watch(original):
        def setattr_(self, name, value):
            writes.append((type(self).__name__, name, threading.get_ident(),
                           QThread.currentThread() == gui_qthread))
            original(self, name, value)
        return setattr_

    monkeypatch.setattr(Session, "__setattr__", watch(session_setattr))
    monkeypatch.setattr(ViewerState, "__setattr__", watch(state_setattr))
    w = make_viewer(second_pass=tiny_bundle.path)
    seen = []
    w.session.opened.connect(lambda: seen.append(threading.get_ident()))
    opened(qtbot, w, clip)
    paused_at(qtbot, w, 89)
    assert seen == [gui]
    assert w.session.analyzer is not None and w.session.timeline.analysed == 90  # not a frame lost
    names = {(kind, name) for kind, name, _, _ in writes}
    assert {("Session", "analyzer"), ("Session", "timeline"), ("Session", "info")} <= names
    off_gui = [(kind, name) for kind, name, ident, on_gui in writes if ident != gui or not on_gui]
    assert off_gui == []


def test_settings_persist(qtbot, make_viewer, tmp_path):
    from PySide6.QtCore import QSettings

    from app.settings import load_settings

    w = make_viewer()
    new = w.session.settings.with_(layers=("label",), finding_min_s=2.5, smoothing="off")
    assert w.apply_settings(new)
    assert [type(l).__name__ for l in w.session.overlay.layers] == ["ClassLabel"]
    back = load_settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    assert back.layers == ("label",) and back.finding_min_s == 2.5 and back.smoothing == "off"


def test_the_default_models_in_the_window(qtbot, make_viewer, clip):
    """The embedded defaults (the classifier and the segmenter beside it): both answer on every
    frame, one verdict, the label panel drawn, "polyp" in the mask's colour on the timeline strip,
    the classifier named in the status bar."""
    from PySide6.QtGui import QColor

    from engine.bundle import load_bundle
    from engine.config import load_config

    config = load_config()
    bundle = load_bundle(config.bundle)
    w = make_viewer(bundle=bundle.path, segmenter=config.segmenter)
    opened(qtbot, w, clip)
    qtbot.waitUntil(lambda: w.session.shown is not None and w.session.shown.result is not None, timeout=WAIT)
    shown = w.session.shown
    r = shown.result
    assert r.segmentation is not None and r.prediction is not None and isinstance(r.polyp, bool)
    assert r.top[0] == ("polyp" if r.polyp else r.top[0]) and (r.top[0] != "polyp" or r.polyp)
    picture = on_screen(shown)  # drawn at the view's size, on the frame scaled to it
    plain = cv2.resize(shown.frame.image, picture.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    s = overlay_scale(picture)  # the label panel (engine.overlay.ClassLabel), at the picture's size
    pad = round(10 * s)
    box = (slice(pad, pad + 2 * pad + round(30 * s) + 3 * round(22 * s)), slice(pad, pad + round(330 * s)))
    panel = np.any(picture[box] != plain[box], axis=2)
    assert panel.mean() > 0.5  # the verdict's class and the top-3 bars on every frame
    assert w.session.timeline.labels == bundle.labels
    # the mask's amber, BGR (60, 230, 255) in the overlay: written out, not taken from SEG_COLOR/qcolor
    assert w.strip._colors[bundle.labels.index("polyp")] == QColor(255, 230, 60)
    w.refresh()
    assert bundle.name in w.status_label.text()


def test_strip_colours_for_classifier_classes():
    from app.widgets import strip_colors

    # The expectations used to be computed with engine.overlay's own class_color and SEG_COLOR, so
    # a wrong colour there would have passed. Worked out by hand instead: class i has hue
    # i * 0.618034 (mod 1), saturation 0.75, value 0.95, so its weakest channel is 0.95 * 0.25 *
    # 255 = 60 and its strongest 0.95 * 255 = 242 (truncated), in BGR:
    #   class 0: hue 0 (red) -> (60, 60, 242)
    #   class 1: hue 0.618 (sector 3, f = 0.708): green 0.95 * (1 - 0.75 * 0.708) * 255 = 113 -> (242, 113, 60)
    #   class 2: hue 0.236 (sector 1, f = 0.416): red 0.95 * (1 - 0.75 * 0.416) * 255 = 166 -> (60, 242, 166)
    # and the segmenter's mask colour, "polyp", is the amber (60, 230, 255) of the overlay.
    c0, c1, c2, polyp = (60, 60, 242), (242, 113, 60), (60, 242, 166), (60, 230, 255)
    # "polyp" (the frame's verdict) in the mask's colour, whatever its index; the others their own
    assert strip_colors(("normal", "polyp", "other")) == [c0, polyp, c2]
    assert strip_colors(("a", "b")) == [c0, c1]
    assert strip_colors(("a", "polyp")) == [c0, polyp]


def test_video_view_shows_the_picture_without_copying_it(qtbot):
    """The view wraps the BGR array (no copy, the array kept alive), shows its colours right, and
    copies only a picture whose pixels are not packed."""
    from PySide6.QtGui import QColor

    from app.widgets import VideoView

    view = VideoView()
    qtbot.addWidget(view)
    image = np.zeros((90, 160, 3), np.uint8)
    image[:, :80] = (255, 0, 0)  # BGR: blue on the left
    image[:, 80:] = (0, 0, 255)  # red on the right
    view.set_image(image)
    assert view._array is image  # kept alive, not copied
    assert view._image.constBits().tobytes()[:3] == bytes(image[0, 0])  # same bytes...
    assert view._image.pixelColor(10, 10) == QColor(0, 0, 255)
    assert view._image.pixelColor(150, 10) == QColor(255, 0, 0)
    image[:, :80] = (0, 255, 0)  # ...the same buffer: a change shows without set_image
    assert view._image.pixelColor(10, 10) == QColor(0, 255, 0)
    view.resize(320, 240)  # the picture scaled 2x, letterboxed
    shot = view.grab().toImage()
    assert shot.pixelColor(20, 120) == QColor(0, 255, 0) and shot.pixelColor(300, 120) == QColor(255, 0, 0)
    assert shot.pixelColor(160, 5) == QColor(0, 0, 0)
    strided = np.zeros((90, 320, 3), np.uint8)[:, ::2]
    strided[:] = (0, 0, 255)
    view.set_image(strided)
    assert view._array is not strided and view._array.flags.c_contiguous
    assert view._image.pixelColor(5, 5) == QColor(255, 0, 0)


def test_video_view_paints_the_players_bgra_pictures_as_they_are(qtbot):
    """The player's screen pictures are BGRA at the view's size: wrapped as RGB32 (what the window's
    backing store holds: no conversion) and copied unscaled, the margins black; one a pixel off
    the view's fitted size (while it is resized) is not scaled again."""
    from PySide6.QtGui import QColor, QImage

    from app.widgets import VideoView

    view = VideoView()
    qtbot.addWidget(view)
    view.resize(320, 240)
    image = np.zeros((180, 320, 4), np.uint8)
    image[..., :3] = (0, 0, 255)  # BGR red
    image[..., 3] = 255
    image[:, :1] = (255, 0, 0, 255)  # a blue first column: an unscaled copy keeps it one pixel wide
    view.set_image(image)
    assert view._array is image and view._image.format() == QImage.Format.Format_RGB32
    shot = view.grab().toImage()
    assert shot.pixelColor(0, 120) == QColor(0, 0, 255) and shot.pixelColor(1, 120) == QColor(255, 0, 0)
    assert shot.pixelColor(160, 10) == QColor(0, 0, 0) and shot.pixelColor(160, 235) == QColor(0, 0, 0)
    view.set_image(np.ascontiguousarray(image[:179, :319]))  # a pixel short: centred, not scaled
    shot = view.grab().toImage()
    assert shot.pixelColor(0, 120) == QColor(0, 0, 255) and shot.pixelColor(1, 120) == QColor(255, 0, 0)


def test_coalesced_applies_at_once_then_at_most_once_an_interval_never_losing_the_last(qtbot):
    from app.widgets import Coalesced

    seen = []
    value = [0]
    c = Coalesced(lambda: seen.append(value[0]), interval_ms=50)
    for v in range(1, 6):  # five requests in a row: the first at once, the rest as one, later
        value[0] = v
        c.request()
    assert seen == [1]
    qtbot.waitUntil(lambda: seen == [1, 5], timeout=1000)
    value[0] = 6
    c.request(now=True)  # paused: a seek shows at once, whatever is pending
    assert seen == [1, 5, 6]
    value[0] = 7
    c.request()
    c.stop()  # closing: nothing pending runs
    qtbot.wait(120)
    assert seen == [1, 5, 6]


def test_strip_redraws_its_colours_only_when_the_timeline_changed(qtbot, monkeypatch):
    """Every shown frame moves the playhead; the coloured runs are drawn again only after
    ``refresh`` saw new frames (or the size changed)."""
    from app.widgets import TimelineStrip
    from engine.timeline import Timeline

    state = ViewerState()
    state.update(frame_count=100, fps=25.0)
    strip = TimelineStrip(state)
    qtbot.addWidget(strip)
    strip.resize(200, 16)
    timeline = Timeline(("normal", "polyp"), 25.0, 100)
    strip.set_timeline(timeline)
    drawn = []
    real = strip._draw_runs
    monkeypatch.setattr(strip, "_draw_runs", lambda n: drawn.append(n) or real(n))
    strip.grab()
    from engine.types import ContentArea, Frame, FrameResult, Prediction

    for i in range(50):
        probs = np.array([0.1, 0.9] if 20 <= i < 30 else [0.9, 0.1], np.float32)
        frame = Frame(i, i / 25, np.zeros((4, 4, 3), np.uint8), 0.0)
        timeline.record(FrameResult(frame, ContentArea.full_frame(4, 4), Prediction(timeline.labels, probs, "m", 1.0)))
    for position in (10, 20, 30):  # the playhead moves: the colours are reused
        state.position = position
        strip.grab()
    assert len(drawn) == 1
    strip.refresh()
    picture = strip.grab().toImage()
    assert len(drawn) == 2
    polyp = picture.pixelColor(int(25 / 100 * 200), 8)
    assert (polyp.red(), polyp.green(), polyp.blue()) == (255, 230, 60)
