"""The command line as a user meets it: help texts, the main job, one-line errors."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine.cli import ENGINE_COMMANDS, main


def endoview(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_help_for_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("annotate", "crop", "bench", "info", "build-engine"):
        assert cmd in text
    for cmd in ENGINE_COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([cmd.replace("_", "-"), "--help"])
        assert e.value.code == 0


def test_annotate_demo_clip_end_to_end(tmp_path, tiny_bundle):
    out = tmp_path / "demo.mp4"
    r = endoview("annotate", "demo:320x256@30", "-o", out, "--model", tiny_bundle.path, "--end", "1")
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout
    rows = (tmp_path / "demo.jsonl").read_text().splitlines()
    assert len(rows) == 30 and (tmp_path / "demo.csv").exists()
    assert json.loads(rows[0])["label"] in tiny_bundle.labels
    assert json.loads(rows[1])["smoothed"]  # a video: smoothed by the configured EMA


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "not found"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("this is not a video\n" * 50), "cannot open video"),
])
def test_bad_inputs_give_one_line_and_no_traceback(tmp_path, tiny_bundle, make, message):
    bad = tmp_path / "bad.mp4"
    make(bad)
    r = endoview("annotate", bad, "-o", tmp_path / "out.mp4", "--model", tiny_bundle.path)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("endoview: error:")]
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_existing_output_and_bad_bundle(tmp_path, tiny_bundle):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"x")
    r = endoview("annotate", "demo:160x128@10", "-o", out, "--model", tiny_bundle.path, "--end", "0.5")
    assert r.returncode != 0 and "output exists" in r.stderr and "Traceback" not in r.stderr
    r = endoview("annotate", "demo:160x128@10", "-o", tmp_path / "n.mp4", "--model", tmp_path / "nobundle")
    assert r.returncode != 0 and "bundle" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("spec, reason", [
    ("bogus", "bad smoothing 'bogus': use off, window:N or ema:ALPHA"),
    ("ema:0", "bad smoothing 'ema:0': EMA alpha must be in (0, 1], not 0.0"),
    ("window:x", "bad smoothing 'window:x': invalid literal for int() with base 10: 'x'"),
])
def test_a_bad_smoothing_flag_is_one_line_naming_the_flag(tmp_path, tiny_bundle, spec, reason):
    """It used to surface from the analyzer as "internal error ... please report it"."""
    out = tmp_path / "o.mp4"
    r = endoview("annotate", "demo:160x128@10", "-o", out, "--model", tiny_bundle.path, "--end", "0.5",
                 "--smoothing", spec)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"endoview: error: --smoothing: {reason}"]
    assert not out.exists()


def test_a_bad_overlay_layer_is_one_line_naming_the_key_and_file(tmp_path, tiny_bundle):
    """Layers are chosen in a configuration file (no flag names them); a typo used to end as
    "internal error" when the overlay was built."""
    config = tmp_path / "c.toml"
    config.write_text('[overlay]\nlayers = ["label", "foo"]\n', encoding="utf-8")
    out = tmp_path / "o.mp4"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "annotate", "demo:160x128@10", "-o", str(out),
                        "--model", str(tiny_bundle.path), "--end", "0.5", "--config", "c.toml"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        "endoview: error: c.toml: [overlay] layers: unknown layer 'foo' (known: content_area, label, "
        "segmentation, second_pass, stats, polyp_count, untrained, research_mark)"]
    assert not out.exists()


def test_kvasir_seg_clip_through_annotate(tmp_path, data_dir, tiny_bundle):
    """Real frames: a clip built from Kvasir-SEG images keeps its frame count, one log row each."""
    from engine.outputs.writer import VideoWriter

    images = sorted((data_dir / "kvasir-seg" / "images").glob("*.jpg"))[:24]
    clip = tmp_path / "kvasir.mp4"
    with VideoWriter(clip, 640, 512, 8) as w:
        for p in images:
            w.write(cv2.resize(cv2.imread(str(p)), (640, 512), interpolation=cv2.INTER_AREA))
    out = tmp_path / "kvasir_annotated.mp4"
    r = endoview("annotate", clip, "-o", out, "--model", tiny_bundle.path, "--log", tmp_path / "k.jsonl")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "k.jsonl").read_text().splitlines()]
    assert [x["index"] for x in rows] == list(range(24))
    from engine.sources import open_source

    with open_source(out) as src:
        assert sum(1 for _ in src) == 24


def test_truncated_video_is_annotated_as_far_as_it_decodes(tmp_path, tiny_bundle, media):
    clip = media.make_clip(tmp_path / "whole.mkv", 60)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "cut_annotated.mp4"
    r = endoview("annotate", cut, "-o", out, "--model", tiny_bundle.path, "--no-log")
    assert "Traceback" not in r.stderr
    assert out.exists(), r.stderr
    from engine.sources import open_source

    with open_source(out) as src:
        written = sum(1 for _ in src)
    assert 0 < written < 60
    if r.returncode == 3:  # the source knew the file was cut short and said where it stopped
        assert "warning:" in r.stderr and "stopped" in r.stderr
    else:
        assert r.returncode == 0


def test_missing_capture_device(tmp_path, tiny_bundle):
    r = endoview("annotate", "/dev/video63", "-o", tmp_path / "o.mp4", "--model", tiny_bundle.path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("endoview: error:")]
    assert len(lines) == 1 and "/dev/video63" in lines[0]


def test_audio_only_file_is_refused(tmp_path, tiny_bundle):
    import av

    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    r = endoview("annotate", path, "-o", tmp_path / "o.mp4", "--model", tiny_bundle.path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no video stream" in r.stderr


def test_device_request_flags(capsys):
    from engine.cli import build_parser
    from engine.commands.common import source_options

    args = build_parser().parse_args(["annotate", "0", "-o", "x.mp4", "--size", "1920x1080",
                                      "--fps", "60", "--pixel-format", "MJPG"])
    assert source_options(args) == {"width": 1920, "height": 1080, "fps": 60.0, "pixel_format": "MJPG"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["annotate", "0", "-o", "x.mp4", "--size", "big"])
    assert "1920x1080" in capsys.readouterr().err


def test_image_folder_is_annotated_without_smoothing(tmp_path, tiny_bundle, data_dir):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted((data_dir / "hyperkvasir-ileum").rglob("*.jpg"))[:4]:
        img = cv2.imread(str(p))
        cv2.imwrite(str(folder / p.name), cv2.resize(img, (320, 256)))
    r = endoview("annotate", folder, "-o", tmp_path / "f.mp4", "--model", tiny_bundle.path,
                 "--log", tmp_path / "f.jsonl", "--fps", "2")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[1]["timestamp"] == 0.5
    assert not any(row["smoothed"] for row in rows)  # unrelated stills: no temporal smoothing


def test_a_broken_plugin_listing_is_logged_not_swallowed(monkeypatch, caplog):
    """The engine commands still work when the entry points cannot be listed, and the log says why."""
    import logging

    import engine.cli as cli

    def broken(**_kw):
        raise OSError("METADATA unreadable")

    monkeypatch.setattr(cli.metadata, "entry_points", broken)
    with caplog.at_level(logging.WARNING, logger="engine.cli"):
        parser = cli.build_parser()
    assert parser.parse_args(["info"]).command == "info"
    [record] = [r for r in caplog.records if r.name == "engine.cli"]
    assert record.levelno == logging.WARNING
    assert "'endoview.commands'" in record.getMessage() and "OSError: METADATA unreadable" in record.getMessage()


def test_a_plugin_missing_a_third_party_package_is_logged_by_name(monkeypatch, caplog, capsys):
    import logging

    import engine.cli as cli

    class EntryPoint:
        name, value = "view", "app.cli:add_parser"

        def load(self):
            raise ImportError("No module named 'PySide6'", name="PySide6")

    monkeypatch.setattr(cli, "_plugins", lambda: [EntryPoint()])
    with caplog.at_level(logging.INFO, logger="engine.cli"):
        parser = cli.build_parser()
    messages = [r.getMessage() for r in caplog.records if r.name == "engine.cli"]
    assert messages == ["command 'view' (entry point app.cli:add_parser) is unavailable: No module named 'PySide6'"]
    assert parser.parse_args(["view"]).func(None) == 2
    assert "'view' is not available in this install" in capsys.readouterr().err
