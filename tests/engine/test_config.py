"""The one configuration: engine/assets/config.toml holds every default, a user's file is layered over it."""

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


# ------------------------------------------------------------------------------------------
# validation at load: one line naming the file and the key


@pytest.mark.parametrize("text, message", [
    ('[overlay]\nlayers = ["label", "foo"]\n',
     "[overlay] layers: unknown layer 'foo' (known: content_area, label, segmentation, second_pass, stats, "
     "polyp_count, untrained, research_mark)"),
    ("[overlay]\nlayers = \"label\"\n", "[overlay] layers: expected a list of layer names, not a string ('label')"),
    ("[overlay]\noutline = 1\n", "[overlay] outline: expected true or false, not a whole number (1)"),
    ('[model]\nbackend = "cuda"\n', "[model] backend: unknown backend 'cuda' (known: auto, onnxruntime, tensorrt, torch)"),
    ("[model]\nbundle = 3\n", "[model] bundle: expected a string, not a whole number (3)"),
    ('[model]\nbundle = ""\n', "[model] bundle: expected a bundle folder, not an empty string"),
    ('[model]\nbundel = "x"\n', "[model] bundel: unknown key (known: bundle, segmenter, backend, precision)"),
    ('[model]\nprecision = "int4"\n', "[model] precision: unknown precision 'int4' (known: auto, fp32)"),
    ('[modle]\nbundle = "x"\n', "unknown table [modle] (known: alerts, analysis, display, model, overlay, second_pass)"),
    ("[display]\nbusy_fps = 2\n", "[display] busy_fps: must be 0 (off) or 5 to 240 pictures per second, not 2"),
    ('[display]\nbusy_fps = "half"\n', "[display] busy_fps: expected a number of pictures per second, not a string ('half')"),
    ('[overlay]\nstyle = "fill"\n', "[overlay] style: unknown display style 'fill' (known: mask, outline, box)"),
    ("[alerts]\nsound = 1\n", "[alerts] sound: expected true or false, not a whole number (1)"),
    ("[alerts]\ncooldown_s = -1\n", "[alerts] cooldown_s: must be 0 or more seconds, not -1"),
    ('[alerts]\nedge_hint = "yes"\n', "[alerts] edge_hint: expected true or false, not a string ('yes')"),
    ("[alerts]\nvolume = 3\n", "[alerts] volume: unknown key (known: sound, cooldown_s, edge_hint)"),
    ('model = "x"\n', "model: expected a table [model], not a string"),
    ('[analysis]\nsmoothing = "ema:2"\n', "[analysis] smoothing: bad smoothing 'ema:2': EMA alpha must be in (0, 1], not 2.0"),
    ('[analysis]\nsmoothing = "median:3"\n', "[analysis] smoothing: bad smoothing 'median:3': use off, window:N or ema:ALPHA"),
    ("[analysis]\nreestimate_every = 0\n", "[analysis] reestimate_every: must be at least 1, not 0"),
    ("[analysis]\nreestimate_every = 2.5\n", "[analysis] reestimate_every: expected a whole number, not a number (2.5)"),
    ("[second_pass]\nevery_n = -1\n", "[second_pass] every_n: must be at least 0, not -1"),
    ("[second_pass]\nevery_n = true\n", "[second_pass] every_n: expected a whole number, not true/false (True)"),
    ("[second_pass]\nhold_seconds = -0.5\n", "[second_pass] hold_seconds: must be 0 or more seconds, not -0.5"),
    ("[second_pass]\nhold_seconds = inf\n", "[second_pass] hold_seconds: must be 0 or more seconds, not inf"),
])
def test_an_invalid_user_file_names_its_file_and_key(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.toml")
    assert str(err.value) == f"c.toml: {message}"


def test_an_invalid_packaged_file_names_itself(packaged):
    path = packaged(PACKAGED.replace('"research_mark"]', '"research_mark", "foo"]'))
    with pytest.raises(ConfigError, match=r"\[overlay\] layers: unknown layer 'foo'") as err:
        load_config()
    assert str(err.value).startswith(f"{path}: ")


def test_a_file_outside_the_current_folder_is_named_in_full(tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    (tmp_path / "c.toml").write_text("[overlay]\noutline = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'c.toml'}: \\[overlay\\] outline: "):
        load_config(tmp_path / "c.toml")


def test_a_broken_packaged_file_is_one_line_from_the_command_line(tmp_path):
    """Even --help reads the packaged file (its texts quote it): one line, exit 1, no traceback."""
    import os
    import subprocess
    import sys

    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "config.toml").write_text(PACKAGED.replace('backend = "auto"', 'backend = "gpu"'), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "engine.cli", "annotate", "--help"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "ENDOVIEW_ASSETS": str(assets)}, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        "endoview: error: assets/config.toml: [model] backend: unknown backend 'gpu' (known: auto, onnxruntime, "
        "tensorrt, torch)"]


def test_overrides_are_checked_and_named_as_the_caller_says():
    from engine.config import NO_SEGMENTER

    base = load_config()
    assert base.override(smoothing="window:3", segmenter=NO_SEGMENTER, backend=None) == dataclasses.replace(
        base, smoothing="window:3", segmenter=None)
    with pytest.raises(ConfigError, match=r"^--smoothing: bad smoothing 'ema:1\.5': EMA alpha must be in \(0, 1\]"):
        base.override({"smoothing": "--smoothing"}, smoothing="ema:1.5")
    with pytest.raises(ConfigError, match=r"^layers: unknown layer 'sparkles'"):
        base.override(layers=("label", "sparkles"))
