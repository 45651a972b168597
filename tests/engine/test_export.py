import json
import os
import threading

import numpy as np
import pytest

from engine.errors import ExportError, OutputExistsError
from engine.outputs.export import annotate
from engine.overlay import Overlay
from engine.pipeline import Analyzer
from engine.sources import open_source

from fakes import ListSource


@pytest.fixture
def analyzer(tiny_bundle):
    from engine.analysis.classifier import Classifier
    from engine.backends import open_backend

    with open_backend(tiny_bundle, "onnxruntime") as backend:
        yield Analyzer(Classifier(tiny_bundle, backend))


def read_all(path):
    with open_source(path) as src:
        return src.info, [f.image for f in src]


def test_annotate_writes_every_frame_and_one_log_row_each(tmp_path, analyzer):
    src = ListSource(40, fps=25.0)
    out, jl, csvp = tmp_path / "a.mp4", tmp_path / "a.jsonl", tmp_path / "a.csv"
    report = annotate(src, out, analyzer, overlay=Overlay.default(), logs=[jl, csvp])
    info, frames = read_all(out)
    assert report.frames == 40 and len(frames) == 40
    assert abs(info.fps - 25.0) < 1e-6 and (info.width, info.height) == (160, 120)
    rows = [json.loads(line) for line in jl.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(40))
    assert rows[0]["label"] in ("normal", "polyp", "other") and len(rows[0]["topk"]) == 3
    assert set(rows[0]["timings_ms"]) >= {"decode", "crop", "resize", "inference", "overlay", "encode"}
    assert rows[0]["content_area"]["shape"] in ("octagon", "circle")
    assert len(csvp.read_text().splitlines()) == 41
    assert not list(tmp_path.glob(".*partial*"))


def test_each_frame_s_log_row_is_built_once_for_all_its_logs(tmp_path, analyzer, monkeypatch):
    from engine.types import FrameResult

    calls = []
    to_log_row = FrameResult.to_log_row

    def counted(self, *args, **kwargs):
        calls.append(self.frame.index)
        return to_log_row(self, *args, **kwargs)

    monkeypatch.setattr(FrameResult, "to_log_row", counted)
    jl, csvp = tmp_path / "o.jsonl", tmp_path / "o.csv"
    annotate(ListSource(12, fps=25.0), None, analyzer, overlay=None, logs=[jl, csvp])
    assert calls == list(range(12))  # one row per frame, written to the JSONL and the CSV log
    assert len(jl.read_text().splitlines()) == 12 and len(csvp.read_text().splitlines()) == 13


def test_annotate_time_range(tmp_path, analyzer):
    src = ListSource(60, fps=30.0)
    report = annotate(src, tmp_path / "r.mp4", analyzer, overlay=None, logs=[tmp_path / "r.jsonl"],
                      start_s=0.5, end_s=1.0)
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert report.frames == 15 and [r["index"] for r in rows] == list(range(15, 30))


def test_existing_output_is_kept_unless_forced(tmp_path, analyzer):
    out = tmp_path / "x.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="use --force"):
        annotate(ListSource(5), out, analyzer, overlay=None)
    assert out.read_bytes() == b"precious"
    annotate(ListSource(5), out, analyzer, overlay=None, force=True)
    assert read_all(out)[0].frame_count == 5


def test_unwritable_folder(readonly_dir, analyzer):
    with pytest.raises(ExportError, match="not writable"):
        annotate(ListSource(5), readonly_dir / "x.mp4", analyzer, overlay=None)


def test_disk_full_during_export_leaves_nothing(small_disk, analyzer):
    # big noisy frames: a few hundred KiB each after encoding, more than the 2 MiB disk
    src = ListSource(120, size=(640, 480))
    orig = src.read

    def noisy():
        f = orig()
        if f is not None:
            f.image[:] = np.random.default_rng(f.index).integers(0, 256, f.image.shape, np.uint8)
        return f

    src.read = noisy
    with pytest.raises(ExportError, match="disk full"):
        annotate(src, small_disk / "big.mp4", analyzer, overlay=None, logs=[small_disk / "big.jsonl"],
                 lossless=True)
    assert list(small_disk.iterdir()) == []


def test_missing_folder(tmp_path, analyzer):
    with pytest.raises(ExportError, match="does not exist"):
        annotate(ListSource(5), tmp_path / "nope" / "x.mp4", analyzer, overlay=None)


def test_failure_midway_leaves_nothing_under_the_final_names(tmp_path, analyzer):
    from engine.errors import SourceError

    out, log = tmp_path / "f.mp4", tmp_path / "f.jsonl"
    with pytest.raises(SourceError, match="fake decode failure"):
        annotate(ListSource(30, fail_at=12), out, analyzer, overlay=None, logs=[log])
    assert list(tmp_path.iterdir()) == []


def test_cancel_removes_partial_output(tmp_path, analyzer):
    stop = threading.Event()
    out = tmp_path / "c.mp4"

    def progress(n):
        if n == 5:
            stop.set()

    with pytest.raises(ExportError, match="cancelled"):
        annotate(ListSource(200), out, analyzer, overlay=None, progress=progress, stop=stop)
    assert list(tmp_path.iterdir()) == []


def test_deidentify_blacks_out_outside_the_field(tmp_path):
    src = ListSource(4)
    src_img = src.read().image
    src.seek(0)
    # paint 'patient text' in the black corner of every frame
    orig_read = src.read

    def read_with_text():
        f = orig_read()
        if f is not None:
            f.image[2:12, 2:40] = 255
        return f

    src.read = read_with_text
    out = tmp_path / "d.mp4"
    annotate(src, out, Analyzer(None), overlay=None, deidentify=True, lossless=True)
    _, frames = read_all(out)
    assert frames[0][2:12, 2:40].max() <= 3
    assert frames[0][60, 80].tolist() == src_img[60, 80].tolist()


def test_lossless_passthrough_is_pixel_identical(tmp_path):
    src = ListSource(10)
    expected = [src.read().image for _ in range(10)]
    src.seek(0)
    out = tmp_path / "p.mp4"
    annotate(src, out, Analyzer(None), overlay=None, lossless=True)
    _, frames = read_all(out)
    assert len(frames) == 10
    for a, b in zip(expected, frames):
        assert np.array_equal(a, b)


def test_bad_log_extension(tmp_path, analyzer):
    with pytest.raises(ExportError, match=r"\.jsonl or \.csv"):
        annotate(ListSource(3), tmp_path / "a.mp4", analyzer, overlay=None, logs=[tmp_path / "a.txt"])


def test_the_input_is_never_overwritten(tmp_path):
    from engine.outputs.writer import VideoWriter

    video = tmp_path / "case.mp4"
    with VideoWriter(video, 160, 120, 25) as w:
        for _ in range(3):
            w.write(np.zeros((120, 160, 3), np.uint8))
    before = video.read_bytes()
    with open_source(video) as src, pytest.raises(ExportError, match="output is the input"):
        annotate(src, video, Analyzer(None), overlay=None, force=True)
    assert video.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["case.mp4"]
