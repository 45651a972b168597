"""The benchmark runs end to end and reports every figure (values are not asserted: a benchmark
measures the machine, the test checks the command works)."""

import json
import subprocess
import sys

import pytest

from engine.config import NO_SEGMENTER, load_config
from engine.sources.demo import write_demo_clip
from engine.tools.bench import format_report, run_bench


def test_bench_reports_every_figure(tmp_path, tiny_bundle):
    clip = write_demo_clip(tmp_path / "clip.mp4", width=320, height=240, fps=30, frames=30)
    config = load_config().override(bundle=tiny_bundle.path, segmenter=NO_SEGMENTER)  # the tiny classifier alone
    r = run_bench(config, clip, live_seconds=0.3)
    for key in ("annotate_fps", "naive_fps", "live_fps", "added_latency_ms_p99", "stages"):
        assert key in r
    assert r["input"]["frames"] == 30
    assert set(r["stages"]) == {"decode", "crop", "resize", "inference", "classifier", "overlay", "encode"}
    for stage in r["stages"].values():
        assert stage["min"] <= stage["mean"] <= stage["max"] and stage["n"] == 30
    assert r["annotate_fps"] > 0 and r["naive_fps"] > 0 and r["live_fps"] > 0
    # CPU-ms per frame of each stage alone, and the floor they give on this machine's cores
    assert set(r["cpu_ms"]) == {"decode", "crop", "resize", "classifier", "overlay", "encode"}
    assert all(v >= 0 for v in r["cpu_ms"].values()) and r["cpu_ms"]["decode"] > 0
    assert r["cpu_ms_per_frame"] == pytest.approx(sum(r["cpu_ms"].values()))
    assert r["floor_fps"] == pytest.approx(1000 * r["cores"] / r["cpu_ms_per_frame"])
    # live mode's floor: the same stages without decoding and encoding (a capture card hands frames over)
    live = sum(v for k, v in r["cpu_ms"].items() if k in ("crop", "resize", "classifier", "segmenter", "overlay"))
    assert r["live_cpu_ms_per_frame"] == pytest.approx(live)
    assert r["live_cpu_ms_per_frame"] < r["cpu_ms_per_frame"] - r["cpu_ms"]["decode"]
    assert r["live_floor_fps"] == pytest.approx(1000 * r["cores"] / live)
    assert r["annotate_cpu_ms_per_frame"] > 0 and r["naive_cpu_ms_per_frame"] > 0
    assert r["added_latency_ms_p99"] >= r["added_latency_ms_p50"] > 0
    # live figures count the frames after a one-second warm-up (the first frames find the field)
    assert r["live_warmup_frames"] == 30 and r["live_frames_in"] == round(30 * 0.3)
    text = format_report(r)
    assert "annotate, pipelined" in text and "p99" in text and "CPU-ms" in text and "floor" in text
    assert "live floor" in text and "after the first 30 frames" in text


def test_live_run_counts_only_the_frames_after_the_warm_up(tmp_path, tiny_bundle):
    from engine.tools.bench import CaptureBuffer, live_run

    clip = write_demo_clip(tmp_path / "clip.mp4", width=160, height=128, fps=30, frames=10)
    config = load_config().override(bundle=tiny_bundle.path, segmenter=NO_SEGMENTER)
    buffer = CaptureBuffer(clip, frames=12)
    r = live_run(buffer, config, pace=None, warmup=5)  # lockstep: every frame offered is analysed
    assert (r["frames_in"], r["analysed"], r["dropped"], r["warmup_frames"]) == (12, 12, 0, 5)
    assert r["latency_ms"]["n"] == 12 and buffer.frames == 12  # the buffer is left as it was


def test_bench_command_json(tmp_path, tiny_bundle):
    clip = write_demo_clip(tmp_path / "clip.mp4", width=160, height=128, fps=30, frames=20)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "bench", str(clip), "--json",
                          "--model", str(tiny_bundle.path), "--live-seconds", "0.3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["input"]["frames"] == 20
