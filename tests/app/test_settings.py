"""The user's settings: what they take from the configuration, how they persist and load."""

from __future__ import annotations

from PySide6.QtCore import QSettings

from app.settings import Settings, load_settings, save_settings, shown_layers
from engine.config import load_config


def ini(tmp_path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def test_unset_layers_are_the_configurations(tmp_path):
    user = tmp_path / "c.toml"
    user.write_text('[overlay]\nlayers = ["label", "stats"]\noutline = true\n', encoding="utf-8")
    config = load_config(user)
    applied = Settings().apply(config)
    assert applied.layers == ("label", "stats") and applied.outline
    chosen = Settings(layers=("content_area", "segmentation")).apply(config)
    assert chosen.layers == ("segmentation",) and chosen.outline


def test_unset_layers_stay_unset_through_save_and_load(tmp_path):
    save_settings(ini(tmp_path), Settings(layers=("label",)))
    save_settings(ini(tmp_path), Settings())  # back to the configuration's: the saved list goes
    assert load_settings(ini(tmp_path)).layers is None
    save_settings(ini(tmp_path), Settings(layers=()))
    assert load_settings(ini(tmp_path)).layers == ()


def test_the_dialog_ticks_the_configurations_layers_and_keeps_them_unset(qtbot):
    from app.dialogs import SettingsDialog

    config = load_config()
    dialog = SettingsDialog(Settings(), layers=shown_layers(config))
    qtbot.addWidget(dialog)
    assert {n for n, box in dialog.layers.items() if box.isChecked()} == set(config.layers)
    assert dialog.settings().layers is None  # untouched: still "the configuration's"
    dialog.layers["stats"].setChecked(not dialog.layers["stats"].isChecked())
    assert dialog.settings().layers is not None and ("stats" in dialog.settings().layers) != ("stats" in config.layers)


def test_a_damaged_setting_is_logged_by_name_and_the_default_kept(tmp_path, caplog):
    import logging

    qs = ini(tmp_path)
    qs.setValue("speed", "fast")
    qs.setValue("finding_min_s", "2.5")
    qs.sync()
    with caplog.at_level(logging.WARNING, logger="app.settings"):
        s = load_settings(ini(tmp_path))
    assert s.speed == Settings().speed and s.finding_min_s == 2.5  # the rest is read as usual
    assert [r.getMessage() for r in caplog.records if r.name == "app.settings"] == [
        "setting 'speed': cannot read 'fast' (could not convert string to float: 'fast'); using the default"]


def test_settings_the_configuration_would_refuse_are_logged_and_left_out(tmp_path, caplog):
    """A hand-edited or older settings file must not stop the viewer (an unknown layer used to end
    as an internal error when the overlay was built)."""
    import logging

    qs = ini(tmp_path)
    qs.setValue("layers", ["label", "sparkles"])
    qs.setValue("smoothing", "ema:7")
    qs.setValue("backend", "cuda")
    qs.sync()
    with caplog.at_level(logging.WARNING, logger="app.settings"):
        s = load_settings(ini(tmp_path))
    assert s.layers == ("label",) and s.smoothing == "" and s.backend == ""
    messages = sorted(r.getMessage() for r in caplog.records if r.name == "app.settings")
    assert messages == [
        "setting 'backend': unknown backend 'cuda' (known: auto, onnxruntime, tensorrt, torch); using the "
        "configuration's",
        "setting 'layers': unknown layer(s) 'sparkles' left out (known: content_area, label, segmentation, "
        "second_pass, stats, polyp_count, untrained, research_mark)",
        "setting 'smoothing': bad smoothing 'ema:7': EMA alpha must be in (0, 1], not 7.0; using the "
        "configuration's",
    ]
    assert s.apply(load_config()).layers == ("label",)
