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
