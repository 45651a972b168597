"""Procedure intelligence in the window (offscreen): one findings row per polyp with its thumbnail
and click-to-jump, unusable frames on the strip, the alert (no audio device here: logged once,
the viewer goes on), the display style and alert settings, the report and the DICOM snapshot."""

from __future__ import annotations

import contextlib
import logging
import wave


from engine.procedure.quality import Quality
from scripted import ScriptedAnalyzer

WAIT = 20_000  # ms


def first_polyp(i):
    return (0.4, 0.5, 0.15) if 10 <= i < 50 else None


def two_polyps(i):
    if 10 <= i < 40:
        return (0.3, 0.5, 0.12)
    if 55 <= i < 85:
        return (0.75, 0.3, 0.1)
    return None


class Blurred(ScriptedAnalyzer):
    """Frames in ``bad`` come out blurred (quality not ok), the others sharp: the test clip's
    192 x 160 frames are smaller than the 256 pixels the sharpness threshold was set at, and the
    measure flags some of them."""

    def __init__(self, blob, bad=()):
        super().__init__(blob)
        self.bad = set(bad)

    def finish(self, started):
        result = super().finish(started)
        bad = result.frame.index in self.bad
        result.quality = Quality(3.0 if bad else 300.0, 90.0, 0.0, blurred=bad, dark=False, overexposed=False)
        return result


def scripted(window, blob, bad=()):
    @contextlib.contextmanager
    def open_analyzer(info, bridge=None):
        yield Blurred(blob, bad)

    window.session._analyzer_for = open_analyzer


def played_to_the_end(qtbot, w, clip) -> None:
    w.open(str(clip))
    qtbot.waitUntil(lambda: w.session.info is not None and w.state.position >= 89, timeout=WAIT)
    qtbot.waitUntil(lambda: not w.state.playing, timeout=WAIT)


def test_one_findings_row_per_polyp_with_its_thumbnail_and_click_to_jump(qtbot, make_viewer, clip):
    w = make_viewer()
    scripted(w, two_polyps)
    played_to_the_end(qtbot, w, clip)
    w.refresh()
    assert w.findings.count() == 2
    first, second = (w.findings.item(i) for i in range(2))
    assert first.text().startswith("polyp 1\n00:00.3 - 00:01.3") and "max 90%" in first.text()
    assert second.text().startswith("polyp 2\n00:01.8")
    assert not first.icon().isNull() and w.findings.iconSize().width() == 96
    # the count on the picture and in the rows
    assert w.session.shown.result.polyps == 2 and w.session.rows.rows()[-1]["polyps"] == 2
    w.findings.itemClicked.emit(second)
    qtbot.waitUntil(lambda: w.state.position == 55, timeout=WAIT)
    # refreshing again changes nothing (rows are updated in place)
    w.refresh()
    assert w.findings.item(0) is first and w.findings.count() == 2


def test_unusable_frames_are_grey_ticks_on_the_strip(qtbot, make_viewer, clip):
    w = make_viewer()
    scripted(w, first_polyp, bad=range(60, 75))
    played_to_the_end(qtbot, w, clip)
    assert w.session.timeline.unusable_runs() == [(60, 74)]
    w.strip.resize(900, 16)
    picture = w.strip.grab().toImage()
    x = int(67 / 90 * 900)
    grey = picture.pixelColor(x, 14)
    assert (grey.red(), grey.green(), grey.blue()) == (175, 175, 175)
    top = picture.pixelColor(x, 2)
    assert (top.red(), top.green(), top.blue()) != (175, 175, 175)
    assert "unusable" in w.strip.toolTip()


def test_the_alert_sounds_for_each_new_polyp_never_on_an_unusable_frame(qtbot, make_viewer, clip, caplog):
    w = make_viewer()
    assert w.apply_settings(w.session.settings.with_(alert_sound=True, alert_cooldown_s=0.0))
    # the second polyp is confirmed on frame 59, blurred until 64: its alert waits for frame 65
    scripted(w, two_polyps, bad=range(57, 65))
    with caplog.at_level(logging.WARNING, logger="app.alerts"):
        played_to_the_end(qtbot, w, clip)
        qtbot.waitUntil(lambda: w.session.alerts_sounded == 2, timeout=WAIT)
    assert w.session.alerts.fired == 2 and w.session.alerts.held_unusable == 6
    assert w.session.sound.requested == 2
    # no audio device offscreen: said once, and the viewer went on
    said = [r.getMessage() for r in caplog.records if r.name == "app.alerts"]
    assert len(said) == 1 and "alert sound is off" in said[0]
    assert not w.state.error


def test_no_alert_when_the_sound_is_off(qtbot, make_viewer, clip):
    w = make_viewer()
    assert not w.session.config.alert_sound  # off by default
    scripted(w, two_polyps)
    played_to_the_end(qtbot, w, clip)
    qtbot.wait(200)
    assert w.session.alerts_sounded == 0 and w.session.sound is None


def test_the_chime_is_a_short_wav(tmp_path, monkeypatch):
    from app.alerts import AlertSound, chime_file

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = chime_file()
    assert path.parent == tmp_path / "endoview"
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and 0.2 < w.getnframes() / w.getframerate() < 0.4
    sound = AlertSound()
    assert sound.play() is False and sound.play() is False  # no audio device offscreen
    assert sound.requested == 2 and sound.played == 0


def test_style_and_alert_settings_follow_at_once_and_persist(qtbot, make_viewer, tmp_path):
    from PySide6.QtCore import QSettings

    from app.dialogs import SettingsDialog
    from app.settings import load_settings

    w = make_viewer()
    dialog = SettingsDialog(w.session.settings, w, config=w.session.config)
    assert dialog.style.currentText() == "mask" and not dialog.sound.isChecked() and not dialog.edge_hint.isChecked()
    assert dialog.settings().display_style == "" and dialog.settings().alert_sound is None  # still the config's
    dialog.style.setCurrentText("box")
    dialog.sound.setChecked(True)
    dialog.cooldown.setValue(12.0)
    dialog.edge_hint.setChecked(True)
    chosen = dialog.settings()
    assert (chosen.display_style, chosen.alert_sound, chosen.alert_cooldown_s, chosen.edge_hint) == ("box", True, 12.0, True)
    assert w.apply_settings(chosen)
    layers = {l.name: l for l in w.session.overlay.layers}
    assert layers["segmentation"].style == "box" and "edge_hint" in layers
    assert w.session.config.alert_sound and w.session.alerts.cooldown_s == 12.0
    back = load_settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    assert (back.display_style, back.alert_sound, back.alert_cooldown_s, back.edge_hint) == ("box", True, 12.0, True)


def test_report_and_dicom_snapshot_from_the_window(qtbot, make_viewer, clip, tmp_path):
    from engine.procedure.dicom import read_dicom

    w = make_viewer()
    assert {"Procedure re&port...", "Save snapshot as &DICOM..."} <= set(w.actions_by_text)
    w.session.write_report(tmp_path / "nothing.html")
    assert "no analysed frames" in w.state.error
    w.state.error = ""
    scripted(w, first_polyp)
    played_to_the_end(qtbot, w, clip)
    out = tmp_path / "report.html"
    w.session.write_report(out)
    qtbot.waitUntil(lambda: "report written" in w.last_message, timeout=WAIT)
    assert "1 polyps, 90 frames" in w.last_message
    html = out.read_text()
    assert "data:image/png;base64" in html  # the polyp's best frame, read back from the clip
    dcm = tmp_path / "frame.dcm"
    w.session.snapshot_dicom(dcm)
    qtbot.waitUntil(lambda: "DICOM snapshot saved" in w.last_message, timeout=WAIT)
    ds = read_dicom(dcm)
    assert ds.Modality == "ES" and (ds.Rows, ds.Columns) == (160, 192) and ds.BurnedInAnnotation == "NO"
    pixels = ds.pixel_array
    assert pixels[0, 0].tolist() == [0, 0, 0]  # outside the octagonal field: blacked out


def test_whole_video_analysis_gives_the_polyp_list_of_one_pass(qtbot, make_viewer, clip, monkeypatch):
    import app.session as session_module
    from scripted import scripted_analyzer

    w = make_viewer()
    scripted(w, two_polyps)
    w.state.playing = False
    w.open(str(clip))
    qtbot.waitUntil(lambda: w.session.info is not None and w.state.position >= 0, timeout=WAIT)
    w.state.playing = False
    monkeypatch.setattr(session_module, "open_analyzer", lambda config, **kw: scripted_analyzer(two_polyps))
    w.session.analyse_whole()
    qtbot.waitUntil(lambda: not w.state.analysing, timeout=WAIT)
    assert "analysed 90 frames; 2 polyps" in w.last_message
    w.refresh()
    assert w.findings.count() == 2 and len(w.session.analysed_rows()) == 90
