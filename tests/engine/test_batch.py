"""Many videos at once (``endoview annotate A B ... -o FOLDER``, engine/tools/batch.py): the folder rule,
names and their clashes, resume after a kill, one bad video among good ones, the summary, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.tools import batch
from engine.tools.batch import Job, Outcome
from engine.cli import main
from engine.errors import ExportError, ExtraMissingError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bad_inputs"))
import make_corpus  # noqa: E402


def endoview(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """video (file name) -> the cells of its row in the summary table."""
    rows = {}
    for line in stdout.splitlines()[1:]:
        cells = line.split()
        if cells and cells[1:2] and cells[1] in batch.STATUSES:
            rows[Path(cells[0]).name] = cells
    return rows


@pytest.fixture
def model_args(tiny_bundle):
    # the tiny classifier alone: the config's real segmenter would make every test slow
    return ["--model", tiny_bundle.path, "--segmenter", "none"]


# ------------------------------------------------------------------------------ inputs, names


def test_output_is_a_folder_with_several_inputs_and_a_file_with_one(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "x.mp4").write_bytes(b"")
    images = tmp_path / "images"
    images.mkdir()
    (images / "1.png").write_bytes(b"")
    assert batch.batch_folder(["a.mp4"], "out.mp4") is None
    assert batch.batch_folder(["a.mp4"], "out") is None  # as before: out.mp4
    assert batch.batch_folder([str(images)], "out") is None  # a folder of images is one input
    assert batch.batch_folder(["a.mp4", "b.mp4"], "out") == Path("out")
    assert batch.batch_folder([str(videos)], "out") == Path("out")
    assert batch.batch_folder(["a.mp4"], "out/") == Path("out")
    assert batch.batch_folder(["a.mp4"], str(tmp_path)) == tmp_path
    with pytest.raises(ExportError, match="several videos need an output folder"):
        batch.batch_folder([str(videos)], "all.mp4")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        batch.batch_folder(["a.mp4", "b.mp4"], tmp_path / "file")


def test_a_folder_stands_for_its_videos_in_natural_order(tmp_path):
    for name in ("b.mp4", "a10.mkv", "a2.AVI", "notes.txt", "img.png", ".hidden.mp4",
                 "a2_annotated.mp4"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).name for p in batch.expand_inputs([str(tmp_path)])] == \
        ["a2.AVI", "a2_annotated.mp4", "a10.mkv", "b.mp4"]
    # writing into the input folder: our own outputs are not taken for inputs on the next run
    again = batch.expand_inputs([str(tmp_path), str(tmp_path / "b.mp4"), "demo"], skip_outputs_in=tmp_path)
    assert [Path(p).name for p in again] == ["a2.AVI", "a10.mkv", "b.mp4", "demo"]


def test_names_never_clash_and_stay_the_same_from_run_to_run(tmp_path):
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
    x1, x2, x3 = str(tmp_path / "a" / "x.mp4"), str(tmp_path / "b" / "x.mp4"), str(tmp_path / "c" / "X.avi")
    out = tmp_path / "out"
    claims: dict[str, str] = {}
    jobs = batch.plan([x1, x2, x3, "demo:64x64@10"], out, claims=claims)
    names = [j.output.name for j in jobs]
    assert names[0] == "x_annotated.mp4" and names[3] == "demo_64x64_10_annotated.mp4"
    assert len({n.casefold() for n in names}) == 4  # distinct even on a case-insensitive disk
    assert names[1].startswith("x-") and names[2].startswith("X-")
    assert jobs[0].logs == (out / "x_annotated.jsonl", out / "x_annotated.csv")
    # the next run remembers who owns "x": b/x.mp4 alone keeps its name, a new x.mp4 gets its own
    (tmp_path / "d").mkdir()
    x4 = str(tmp_path / "d" / "x.mp4")
    again = batch.plan([x2, x4], out, claims=claims)
    assert again[0].output == jobs[1].output
    assert again[1].output.name not in names and again[1].output.name.startswith("x-")
    assert batch.plan([x1], out, logs=False, claims={})[0].logs == ()


def test_claims_are_kept_in_the_output_folder(tmp_path):
    batch.save_claims(tmp_path, {"x": "/data/x.mp4"})
    assert batch.load_claims(tmp_path) == {"x": "/data/x.mp4"}
    assert batch.load_claims(tmp_path / "nowhere") == {}
    (tmp_path / batch.CLAIMS).write_text("{broken")
    with pytest.raises(ExportError, match="delete it"):
        batch.load_claims(tmp_path)


def test_threads_are_shared_out_between_jobs():
    assert batch.threads_per_job(1) is None  # one job: the backend's default, every core
    assert batch.threads_per_job(2, cpus=2) == 1
    assert batch.threads_per_job(2, cpus=16) == 8
    assert batch.threads_per_job(4, cpus=2) == 1
    assert batch.backend_options("auto", 2) == {"threads": 2}
    assert batch.backend_options("onnxruntime", 1) == {"threads": 1}
    assert batch.backend_options("tensorrt", 1) == {}  # TensorRT takes no thread count
    assert batch.backend_options("onnxruntime", None) == {}


def test_summary_table_and_exit_status():
    outcomes = [
        Outcome("a.mp4", "done", Path("out/a_annotated.mp4"), 300, 4.0),
        Outcome("b.mp4", "skipped", Path("out/b_annotated.mp4"), 120),
        Outcome("bad.mp4", "failed", seconds=0.1, reason="cannot open video 'bad.mp4': not a video"),
        Outcome("cut.mkv", "partial", Path("out/cut_annotated.mp4"), 20, 1.0, "decoding stopped at frame 20"),
    ]
    text = batch.summary(outcomes, wall_s=5.0)
    lines = text.splitlines()
    assert lines[0].split() == ["video", "status", "frames", "seconds", "frames/s", "output"]
    assert lines[1].split()[:5] == ["a.mp4", "done", "300", "4.0", "75.0"]
    assert lines[2].split()[:5] == ["b.mp4", "skipped", "120", "-", "-"]
    assert "failed" in lines[3] and lines[3].endswith("cannot open video 'bad.mp4': not a video")
    assert "(decoding stopped at frame 20)" in lines[4]
    assert lines[-1] == ("4 videos: 1 done, 1 partial, 1 skipped, 1 failed; "
                         "320 frames annotated in 5.0 s wall time (64.0 frames/s)")
    assert batch.exit_status(outcomes) == 1
    assert batch.exit_status(outcomes[:2]) == 0
    assert batch.exit_status([outcomes[0], outcomes[3]]) == 3


def test_a_job_is_finished_only_when_every_final_file_exists(tmp_path):
    job = batch.plan(["v.mp4"], tmp_path)[0]
    job.output.write_bytes(b"x")
    assert job.started() and not job.finished()
    for log in job.logs:
        log.write_text('{"index": 0}\n')
    assert job.finished()
    todo, skipped = batch.pending([job])
    assert todo == [] and skipped[0].status == "skipped" and skipped[0].frames == 1
    assert batch.pending([job], force=True)[0] == [job]


# ------------------------------------------------------------------------------ the command


def test_one_bad_video_does_not_stop_the_others_and_a_rerun_resumes(tmp_path, media, model_args):
    videos = tmp_path / "videos"
    videos.mkdir()
    media.make_clip(videos / "one.mp4", 24)
    media.make_clip(videos / "two.mkv", 24)
    make_corpus.truncated_mp4(videos)
    make_corpus.text_as_mp4(videos)
    out = tmp_path / "out"
    r = endoview("-v", "annotate", videos, "-o", out, "--jobs", "2", *model_args)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    # two jobs share the cores: each onnxruntime session gets half of them
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert r.stderr.count(f"CPUExecutionProvider ({threads} threads, ") == 2, r.stderr
    rows = summary_rows(r.stdout)
    assert rows["one.mp4"][1:3] == ["done", "24"] and rows["two.mkv"][1:3] == ["done", "24"]
    assert rows["truncated.mp4"][1] == "failed" and "incomplete" in " ".join(rows["truncated.mp4"])
    assert rows["notes.mp4"][1] == "failed" and "not a video" in " ".join(rows["notes.mp4"])
    assert r.stdout.splitlines()[-1].startswith("4 videos: 2 done, 2 failed; 48 frames annotated in")
    for stem in ("one", "two"):
        for ext in ("mp4", "jsonl", "csv"):
            assert (out / f"{stem}_annotated.{ext}").is_file()
    assert len((out / "one_annotated.jsonl").read_text().splitlines()) == 24
    assert not list(out.glob("truncated*")) and not list(out.glob("notes*"))
    assert not list(out.glob("*partial*"))

    before = (out / "one_annotated.mp4").stat().st_mtime_ns
    r = endoview("annotate", videos, "-o", out, *model_args)
    rows = summary_rows(r.stdout)
    assert r.returncode == 1 and rows["one.mp4"][1] == "skipped" and rows["two.mkv"][1] == "skipped"
    assert rows["notes.mp4"][1] == "failed"  # failures are tried again
    assert (out / "one_annotated.mp4").stat().st_mtime_ns == before

    r = endoview("annotate", videos / "one.mp4", videos / "two.mkv", "-o", out, "--force", *model_args)
    assert r.returncode == 0, r.stderr
    assert [c[1] for c in summary_rows(r.stdout).values()] == ["done", "done"]
    assert (out / "one_annotated.mp4").stat().st_mtime_ns != before


def test_a_killed_run_leaves_no_final_name_and_the_next_run_finishes_it(tmp_path, media, model_args):
    videos = tmp_path / "videos"
    videos.mkdir()
    media.make_clip(videos / "a_short.mp4", 12)
    media.make_clip(videos / "b_long.mp4", 400, width=320, height=240)
    out = tmp_path / "out"
    final = [out / f"b_long_annotated.{ext}" for ext in ("mp4", "jsonl", "csv")]
    partial = out / ".b_long_annotated.partial.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "annotate", videos, "-o", out, *model_args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (partial.exists() and partial.stat().st_size > 0) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1].decode()
            time.sleep(0.01)
        assert proc.poll() is None, "the long video finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    assert (out / "a_short_annotated.mp4").is_file()
    assert partial.exists() and not any(p.exists() for p in final)

    r = endoview("annotate", videos, "-o", out, *model_args)
    assert r.returncode == 0, r.stderr
    rows = summary_rows(r.stdout)
    assert rows["a_short.mp4"][1] == "skipped" and rows["b_long.mp4"][1:3] == ["done", "400"]
    assert all(p.is_file() for p in final) and not list(out.glob("*partial*"))


def test_batch_options_need_an_output_folder(tmp_path, media, model_args, capsys):
    clip = media.make_clip(tmp_path / "c.mp4", 5)
    assert main(["annotate", str(clip), "-o", str(tmp_path / "c_out.mp4"), "--jobs", "2", *map(str, model_args)]) == 1
    err = capsys.readouterr().err
    assert "--jobs works only with an output folder" in err and not (tmp_path / "c_out.mp4").exists()
    assert main(["annotate", str(clip), str(clip), "-o", str(tmp_path / "o"), "--log", "x.jsonl"]) == 1
    assert "--log names one file" in capsys.readouterr().err


def test_missing_extras_name_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ExtraMissingError, match=r'pip install "ray>=2\.9"'):
        batch.import_ray()
    code = main(["annotate", "a.mp4", "b.mp4", "-o", str(tmp_path / "out"), "--parquet", str(tmp_path / "all.parquet")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("endoview: error: Parquet output needs pyarrow") and 'pip install "pyarrow>=15"' in err[0]
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.fixture
def ray():
    return pytest.importorskip("ray", reason="ray is not installed (the batch extra: pip install 'endoview[batch]')")


def test_ray_local_two_workers(tmp_path, media, model_args, ray):
    media.make_clip(tmp_path / "one.mp4", 16)
    media.make_clip(tmp_path / "two.avi", 16)
    bad = make_corpus.text_as_mp4(tmp_path)
    out = tmp_path / "out"
    r = endoview("annotate", tmp_path / "one.mp4", tmp_path / "two.avi", bad, "-o", out,
                 "--ray", "local", "--jobs", "2", *model_args, timeout=240)
    assert r.returncode == 1, r.stderr
    rows = summary_rows(r.stdout)
    assert rows["one.mp4"][1:3] == ["done", "16"] and rows["two.avi"][1:3] == ["done", "16"]
    assert rows["notes.mp4"][1] == "failed" and "not a video" in " ".join(rows["notes.mp4"])
    assert (out / "one_annotated.mp4").is_file() and (out / "two_annotated.jsonl").is_file()
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------ Parquet


@pytest.fixture
def pyarrow():
    return pytest.importorskip("pyarrow", reason="pyarrow is not installed (the batch extra: pip install 'endoview[batch]')")


def _row(index, **extra):
    return {"index": index, "timestamp": index / 30, "polyp": index % 2 == 1, "label": "polyp",
            "confidence": 0.75, "topk": [["polyp", 0.75], ["normal", 0.2], ["other", 0.05]],
            "smoothed": True, "content_area": {"bbox": [1, 2, 300, 200], "shape": "octagon", "confidence": 0.9},
            "timings_ms": {"decode": 1.5, "inference": 3.0}, **extra}


def test_logs_merge_into_one_parquet_with_flat_columns(tmp_path, pyarrow, capsys):
    import pyarrow.parquet as pq

    seg = {"label": "polyp", "confidence": 0.8, "peak": 0.95, "present": True, "area": 1234,
           "bbox": [10, 20, 30, 40], "model": "unet"}
    sp = {"frame_index": 3, "model": "resnet152", "label": "polyp", "confidence": 0.9, "instances": 0}
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "case1_annotated.jsonl").write_text(
        "\n".join(json.dumps(_row(i, segmentation=seg)) for i in range(3)) + "\n")
    (logs / "case2_annotated.jsonl").write_text(
        json.dumps(_row(0, second_pass=sp, timings_ms={"decode": 2.0, "segmenter": 4.0})) + "\n"
        + json.dumps({**_row(1), "topk": []}) + "\n")
    out = tmp_path / "all.parquet"
    assert main(["logs", "merge", str(logs), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.num_rows == 5
    assert table.column_names[:8] == ["video", "index", "timestamp", "polyp", "polyp_score", "label", "confidence",
                                      "smoothed"]
    assert {"top1", "p3", "bbox_w", "area_shape", "mask_area", "seg_peak", "seg_present",
            "second_pass_model", "decode_ms", "inference_ms", "segmenter_ms"} <= set(table.column_names)
    rows = table.to_pylist()
    assert [r["video"] for r in rows] == ["case1"] * 3 + ["case2"] * 2
    first = rows[0]
    assert (first["top1"], first["p1"], first["top3"]) == ("polyp", 0.75, "other")
    assert (first["bbox_x"], first["bbox_h"], first["area_shape"]) == (1, 200, "octagon")
    assert (first["mask_area"], first["mask_x"], first["mask_h"], first["seg_present"]) == (1234, 10, 40, True)
    assert first["second_pass_model"] is None and first["segmenter_ms"] is None
    assert rows[3]["second_pass_frame_index"] == 3 and rows[3]["mask_area"] is None and rows[3]["segmenter_ms"] == 4.0
    assert rows[4]["top1"] is None and rows[1]["polyp"] is True
    assert str(table.schema.field("polyp").type) == "bool" and str(table.schema.field("mask_area").type) == "int64"
    assert main(["logs", "merge", str(logs), "-o", str(out)]) == 1  # kept unless --force
    assert "output exists" in capsys.readouterr().err
    (logs / "broken.jsonl").write_text(json.dumps(_row(0)) + '\n{"index": \n')  # line 2 cut short
    assert main(["logs", "merge", str(logs / "broken.jsonl"), "-o", str(tmp_path / "b.parquet")]) == 1
    assert "broken.jsonl, line 2: not JSON" in capsys.readouterr().err  # the one log reader's message
    assert not list(tmp_path.glob("*partial*")) and not (tmp_path / "b.parquet").exists()


def test_annotate_parquet_has_every_frame_of_every_video(tmp_path, media, model_args, pyarrow):
    import pyarrow.parquet as pq

    a = media.make_clip(tmp_path / "a.mp4", 10)
    b = media.make_clip(tmp_path / "b.avi", 14)
    out, table = tmp_path / "out", tmp_path / "all.parquet"
    r = endoview("annotate", a, b, "-o", out, "--parquet", table, *model_args)
    assert r.returncode == 0, r.stderr
    assert f"wrote {table} (24 rows from 2 logs)" in r.stdout
    data = pq.read_table(table)
    assert data.num_rows == 24
    assert data.column("video").to_pylist() == [str(a)] * 10 + [str(b)] * 14
    assert data.column("index").to_pylist() == list(range(10)) + list(range(14))
    assert {"top1", "p1", "bbox_x", "inference_ms", "encode_ms"} <= set(data.column_names)
