"""``endoview crop``: JSON output, previews, bad files."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

from engine.commands import crop


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="endoview")
    crop.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["crop", *argv])


def _octagon_image(path, width=640, height=480):
    img = np.zeros((height, width, 3), np.uint8)
    c = 70
    poly = np.array([[100 + c, 20], [540 - c, 20], [540, 20 + c], [540, 460 - c], [540 - c, 460],
                     [100 + c, 460], [100, 460 - c], [100, 20 + c]], np.int32)
    rng = np.random.default_rng(1)
    tissue = np.clip(rng.normal(140, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [poly], 255)
    img[mask > 0] = tissue[mask > 0]
    cv2.putText(img, "ID: 0042", (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    cv2.imwrite(str(path), img)
    return img


def test_json_output_and_previews(tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    _octagon_image(a)
    _octagon_image(b, 800, 600)
    previews = tmp_path / "previews" / "nested"
    code = crop.run(_parse([str(a), str(b), "--json", "--preview", str(previews)]))
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert set(doc) == {"results"} and len(doc["results"]) == 2
    for result, path in zip(doc["results"], (a, b)):
        assert set(result) == {"path", "frame", "bbox", "shape", "confidence"}
        assert result["path"] == str(path) and result["frame"] is None
        assert result["shape"] == "octagon"
        assert len(result["bbox"]) == 4 and all(isinstance(v, int) for v in result["bbox"])
        assert 0.0 <= result["confidence"] <= 1.0
    written = sorted(p.name for p in previews.iterdir())
    assert written == ["a.jpg", "b.jpg"]
    shown = cv2.imread(str(previews / "a.jpg"))
    assert shown.shape[1] > 2 * 640 - 10  # original beside the outlined copy


def test_text_output(tmp_path, capsys):
    a = tmp_path / "frame.png"
    _octagon_image(a)
    assert crop.run(_parse([str(a)])) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{a}: octagon x=") and "confidence=" in line


def test_bad_file_gives_exit_1_and_one_line(tmp_path, capsys):
    good, bad, missing = tmp_path / "good.png", tmp_path / "broken.jpg", tmp_path / "missing.mp4"
    _octagon_image(good)
    bad.write_bytes(b"not a jpeg at all")
    code = crop.run(_parse([str(bad), str(good), str(missing), "--json"]))
    out = capsys.readouterr()
    assert code == 1
    errors = out.err.strip().splitlines()
    assert len(errors) == 2
    assert str(bad) in errors[0] and str(missing) in errors[1]
    doc = json.loads(out.out)
    assert [r["path"] for r in doc["results"]] == [str(good)]


def test_video_samples(tmp_path, capsys):
    av = pytest.importorskip("av", reason="PyAV is needed to write the test video")
    path = tmp_path / "clip.mp4"
    frame = _octagon_image(tmp_path / "f.png")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for _ in range(20):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert crop.run(_parse([str(path), "--samples", "3", "--json"])) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["frame"] for r in results] == [0, 10, 19]
    assert all(r["shape"] == "octagon" for r in results)


def test_help_has_examples():
    parser = argparse.ArgumentParser(prog="endoview")
    sub = parser.add_subparsers(dest="command")
    crop.add_parser(sub)
    text = sub.choices["crop"].format_help()
    assert "--samples" in text and "examples:" in text
