"""The one configuration: assets/config.toml holds every default, a user's file is layered over it."""

import dataclasses
import tomllib

import pytest

from engine import config as config_module
from engine.config import DEFAULT_CONFIG, KEYS, ConfigError, load_config

PACKAGED = DEFAULT_CONFIG.read_text(encoding="utf-8")


@pytest.fixture
def packaged(tmp_path, monkeypatch):
    """Writes a packaged default file (the shipped one, edited) and makes it the default."""
    def write(text=PACKAGED):
        path = tmp_path / "assets" / "config.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        monkeypatch.setattr(config_module, "DEFAULT_CONFIG", path)
        return path
    return write


def test_every_value_comes_from_the_packaged_file():
    data = tomllib.loads(PACKAGED)
    config = load_config()
    for (table, key), (name, _) in KEYS.items():
        value = getattr(config, name)
        expected = data[table][key]
        if name in ("bundle", "segmenter", "second_pass"):
            expected = DEFAULT_CONFIG.parent / expected if expected else None
        elif name == "layers":
            expected = tuple(expected)
        assert value == expected, f"[{table}] {key}"
    assert config.source == DEFAULT_CONFIG


def test_the_config_class_holds_no_defaults():
    """A default written in Python as well as in the file would be a second place to change it."""
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(config_module.Config))


def test_a_changed_packaged_file_changes_the_defaults(packaged):
    path = packaged(PACKAGED.replace('smoothing = "ema:0.3"', 'smoothing = "window:7"'))
    config = load_config()
    assert config.smoothing == "window:7" and config.bundle == path.parent / "models/hyperkvasir-mnv3"


def test_the_packaged_file_must_set_every_key(packaged):
    packaged(PACKAGED.replace("reestimate_every = 30", ""))
    with pytest.raises(ConfigError, match=r"missing: \[analysis\] reestimate_every"):
        load_config()


def test_a_user_file_is_layered_over_the_defaults(tmp_path):
    user = tmp_path / "mine" / "c.toml"
    user.parent.mkdir()
    user.write_text('[model]\nsegmenter = "seg"\n[analysis]\nsmoothing = "off"\n', encoding="utf-8")
    default, config = load_config(), load_config(user)
    assert config.smoothing == "off"
    assert config.segmenter == user.parent / "seg"  # relative to the user's file, not to assets/
    assert config.bundle == default.bundle  # from assets/, relative to assets/
    assert (config.backend, config.layers, config.reestimate_every) == (
        default.backend, default.layers, default.reestimate_every)
    assert config.source == user


def test_an_empty_bundle_in_a_user_file_removes_the_default_one(tmp_path):
    user = tmp_path / "c.toml"
    user.write_text('[model]\nsegmenter = ""\n', encoding="utf-8")
    assert load_config().segmenter is not None and load_config(user).segmenter is None


def test_the_help_quotes_the_packaged_defaults(packaged, capsys):
    from engine.cli import main

    packaged(PACKAGED.replace('smoothing = "ema:0.3"', 'smoothing = "window:7"')
             .replace('backend = "auto"', 'backend = "onnxruntime"'))
    with pytest.raises(SystemExit):
        main(["annotate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default from the config: window:7)" in text
    assert "inference backend (default from the config: onnxruntime)" in text
