"""The HTML report (parses, holds its images and numbers, escapes text) and ``endoview report``."""

from __future__ import annotations

import base64
import json
import sys
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.cli import main
from engine.config import ASSETS
from engine.procedure.dicom import read_dicom
from engine.procedure.report import (
    RESEARCH_ONLY,
    clock,
    make_thumbnail,
    render_html,
    timeline_image,
)
from engine.procedure.summary import summarize

sys.path.insert(0, str(Path(__file__).parent))
from test_procedure_summary import make_rows, q  # noqa: E402

W, H, FPS = 320, 256, 25


class Parsed(HTMLParser):
    """Collects the tags, the images and the text; fails on unbalanced structure tags."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[dict] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a)
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    @property
    def body(self) -> str:
        return " ".join(" ".join(self.text).split())


def boxes(i):
    if 50 <= i < 120:  # polyp 1, brightest on frame 80
        return [40 + i // 4, 60, 60, 50]
    if 300 <= i < 340:  # polyp 2
        return [200, 150, 50, 50]
    return None


def log_rows():
    rows = make_rows([("bbps-2-3", 8), ("normal-cecum", 6), ("bbps-2-3", 6), ("bbps-0-1", 2)],
                     quality=lambda i: q(False, "blurred") if 500 <= i < 520 else q(), polyp_boxes=boxes)
    for r in rows:
        r["content_area"]["bbox"] = [0, 0, W, H]
        if r["polyp"]:
            p = 0.95 if r["index"] == 80 else 0.8
            r["topk"] = [["polyp", p], ["bbps-2-3", 1 - p]]
    return rows


def write_log(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def level(i: int) -> int:
    return 30 + (i % 40) * 5


def write_video(path: Path, n: int) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"qscale": "2"}
        for i in range(n):
            img = np.full((H, W, 3), level(i), np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def decode_data_uri(src: str) -> np.ndarray:
    head, data = src.split(",", 1)
    assert head in ("data:image/jpeg;base64", "data:image/png;base64")
    return cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def summary():
    return summarize(log_rows())


def test_the_summary_of_the_fixture_log(summary):
    assert summary["polyps"] == 2
    assert summary["cecum_s"] == pytest.approx(8.0) and summary["withdrawal_s"] == pytest.approx(14.0)
    assert summary["tracks"][0]["best_frame"] == 80


def test_the_html_parses_and_holds_the_images_and_numbers(summary):
    thumbs = {1: np.full((100, 160, 3), 90, np.uint8), 2: np.full((100, 160, 3), 200, np.uint8)}
    models = [{"name": "polyp-unet16", "version": "2026-12-01"}, {"name": "hyperkvasir-mnv3", "version": "v2"}]
    text = render_html(summary, thumbnails=thumbs, models=models, source="case.jsonl")
    p = Parsed(text)
    assert not p.stack, f"unclosed tags {p.stack}"
    assert {"research-use-only", "polyps", "cecum", "withdrawal", "timeline", "polyp-table", "polyp-1", "polyp-2",
            "bbps", "quality", "models"} <= p.ids
    assert all(img["src"].startswith("data:image/") for img in p.images)
    assert len(p.images) == 3  # the timeline and two thumbnails
    timeline = decode_data_uri(p.images[0]["src"])
    assert timeline.shape[1] == 960
    assert decode_data_uri(p.images[1]["src"]).shape == (100, 160, 3)
    body = p.body
    assert RESEARCH_ONLY in body and "Not a diagnostic device" in body
    assert "Polyps (confirmed tracks) 2" in body
    assert "Cecum reached 0:08 (8.0 s)" in body
    assert "Withdrawal time 0:14 (14.0 s, from the cecum to the end of video)" in body
    b = summary["bbps"]
    assert f"bbps-0-1 {100 * b['bbps-0-1']:.1f} %" in body and f"bbps-2-3 {100 * b['bbps-2-3']:.1f} %" in body
    assert f"blurred {100 * summary['quality']['blurred']:.1f} %" in body
    assert "polyp-unet16" in body and "2026-12-01" in body and "hyperkvasir-mnv3" in body
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched from outside


def test_text_is_escaped(summary):
    evil = dict(summary, tracks=[], polyps=0)
    text = render_html(evil, models=[{"name": "<script>alert(1)</script>", "version": "\"><b>"}],
                       source="<img src=x onerror=alert(1)>.jsonl")
    assert "<script>" not in text and "<img src=x" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    Parsed(text)


def test_without_thumbnails_the_report_says_so(summary):
    p = Parsed(render_html(summary, thumbnails=None, thumbnails_note="no video was given (--video)"))
    assert "no-thumbnails" in p.ids and "Thumbnails unavailable: no video was given (--video)." in p.body
    assert len(p.images) == 1


def test_no_polyps_no_cecum_no_quality():
    s = summarize(make_rows([("bbps-2-3", 3)]))
    p = Parsed(render_html(s))
    assert "No polyp track was confirmed." in p.body
    assert "not determined (normal-cecum never held 5 s)" in p.body
    assert "Image quality Not recorded in this log." in p.body
    assert "the whole video (the cecum was not reached)" in p.body


def test_timeline_and_thumbnail_drawings(summary):
    img = timeline_image(summary, 700)
    assert img.shape[1] == 700 and img.dtype == np.uint8
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[40:440, 100:540] = 120
    th = make_thumbnail(frame, (200, 200, 80, 60), (100, 40, 440, 400), width=220)
    assert th.shape == (200, 220, 3)
    assert th[5, 5].tolist() == [120, 120, 120]  # cropped to the field: no black border left
    assert clock(3725) == "1:02:05" and clock(65.4) == "1:05" and clock(None) == "\u2014"


# ---- the command ------------------------------------------------------------------------------


def test_report_command_writes_html_and_prints_json(tmp_path, capsys):
    log = write_log(tmp_path / "case.jsonl", log_rows())
    out = tmp_path / "case.html"
    assert main(["report", str(log), "-o", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    s = json.loads(captured.out)
    assert s["polyps"] == 2 and s["cecum_s"] == pytest.approx(8.0) and s["source"] == "case.jsonl"
    assert f"wrote {out} (2 polyps, cecum at 8.0 s, withdrawal 14.0 s)" in captured.err
    p = Parsed(out.read_text())
    assert "no-thumbnails" in p.ids and "no video was given (--video)" in p.body
    assert "polyp-unet" in p.body  # the segmenter named in the log


def test_report_command_with_the_video_embeds_the_best_frames(tmp_path, capsys):
    rows = log_rows()
    log = write_log(tmp_path / "case.jsonl", rows)
    video = write_video(tmp_path / "case.avi", len(rows))
    out, dcm = tmp_path / "case.html", tmp_path / "case.dcm"
    assert main(["report", str(log), "-o", str(out), "--video", str(video), "--dicom", str(dcm),
                 "--bundle", str(ASSETS / "models" / "polyp-unet")]) == 0
    assert "wrote" in capsys.readouterr().out
    p = Parsed(out.read_text())
    assert "no-thumbnails" not in p.ids
    thumbs = [decode_data_uri(img["src"]) for img in p.images[1:]]
    assert len(thumbs) == 2
    for thumb, best in zip(thumbs, (80, 300)):  # each is its track's best frame (the frames' grey levels)
        assert abs(float(np.median(thumb)) - level(best)) < 6
    assert "model.onnx sha256" in p.body
    ds = read_dicom(dcm)
    assert ds.Modality == "OT" and str(ds.PatientName) == ""
    assert ds.BurnedInAnnotation == "YES"  # it holds video frames, which may carry the processor's text


def test_report_command_maps_an_annotated_clip_that_starts_later(tmp_path):
    # 'annotate --start': the log's first index is 40, the clip's frame 0 is the source's frame 40
    rows = log_rows()[40:]
    log = write_log(tmp_path / "late.jsonl", rows)
    video = write_video(tmp_path / "late.avi", len(rows))  # its frame k shows level(k)
    from engine.procedure.thumbnails import track_thumbnails
    from engine.sources import open_source

    s = summarize(rows)
    thumbs = track_thumbnails(video, s, rows, open_source=open_source)
    assert abs(float(np.median(thumbs[1])) - level(80 - 40)) < 6
    assert log.exists()


@pytest.mark.parametrize("name, content, message", [
    ("missing.jsonl", None, "no such file"),
    ("empty.jsonl", "", "empty log"),
    ("blank.jsonl", "\n\n", "empty log"),
    ("garbage.jsonl", "hello\n", "line 1: not JSON"),
    ("list.jsonl", "[1, 2]\n", "line 1: not a per-frame row"),
    ("noindex.jsonl", '{"timestamp": 0}\n', "line 1: not a per-frame row"),
    ("binary.jsonl", b"\xff\xfe\x00\x81", "not a text file"),
    ("case.csv", "index,timestamp\n", "CSV log cannot be summarised"),
    ("case.mp4", b"\x00\x00\x00\x18ftypmp42", "cannot open video"),  # a video INPUT is analysed: this one is broken
    ("backwards.jsonl", '{"index": 0, "timestamp": 1.0}\n{"index": 1, "timestamp": 0.5}\n', "back in time"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    code = main(["report", str(path), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("endoview: error: ") and message in err, err
    assert not (tmp_path / "r.html").exists()


def test_outputs_are_not_overwritten_without_force(tmp_path, capsys):
    log = write_log(tmp_path / "case.jsonl", log_rows()[:50])
    out = tmp_path / "r.html"
    out.write_text("keep me")
    assert main(["report", str(log), "-o", str(out)]) == 1
    assert "output exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["report", str(log), "-o", str(out), "--force"]) == 0
    assert main(["report", str(log)]) == 1
    assert "nothing to do" in capsys.readouterr().err
    assert main(["report", str(log), "-o", str(tmp_path / "r.pdf")]) == 1
    assert main(["report", str(log), "--json", "--video", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "x.html")]) == 1
    assert "video not found" in capsys.readouterr().err


def test_thumbnails_black_out_text_outside_the_field_but_inside_its_box():
    from engine.sources.demo import DemoSource, demo_layout
    from engine.procedure.thumbnails import blacken_outside_field

    with DemoSource(width=640, height=512, fps=25) as demo:
        frame = demo.render(0)
    layout = demo_layout(640, 512)
    x, y, w, h = layout.bbox
    frame = frame.copy()
    cv2.putText(frame, "ID", (x + 2, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)  # an octagon corner
    assert frame[y:y + 16, x:x + 24].max() == 255
    clean = blacken_outside_field(frame)
    assert clean[y:y + 16, x:x + 24].max() < 40  # the corner's text is gone
    cy, cx = y + h // 2, x + w // 2
    assert np.array_equal(clean[cy - 20:cy + 20, cx - 20:cx + 20], frame[cy - 20:cy + 20, cx - 20:cx + 20])
