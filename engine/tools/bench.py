"""``endoview bench``: measured figures for the pipeline on a 1080p H.264 clip.

Prints per-stage latency, the model's FPS, the end-to-end annotate rate next to a naive
sequential loop measured in the same run, and live-mode rate and added latency. Live mode is fed
from frames decoded beforehand (a capture card hands over frames in memory, with no decode
cost): once with each frame offered as soon as the analysis is ready for it (its capacity), once
paced at the source's rate (the added latency a user sees, with stale frames dropped). A benchmark, not a test: the figures depend on the machine
and its load.

Wall-clock figures move with the machine's load; ``cpu_profile`` measures what each stage costs
in CPU time (``time.process_time``: every thread of the process, so the decoder's, ONNX Runtime's
and x264's own threads count), each stage alone, which a loaded machine barely changes. Their sum
per frame, spread over the cores, is the floor: the most frames/s this machine can reach.
"""

from __future__ import annotations

import itertools
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from ..config import Config
from ..live import LiveRunner
from ..outputs.export import annotate
from ..outputs.writer import VideoWriter
from ..overlay import render
from ..pipeline import analysed_frames
from ..runtime import make_overlay, open_analyzer, settle_heap
from ..sources import open_source
from ..types import Frame

logger = logging.getLogger(__name__)

STAGES = ("decode", "crop", "resize", "inference", "classifier", "segmenter", "overlay", "encode")
#: CPU-time stages, each measured alone; "resize" is the analyzer's time outside the content area
#: and the models (the model inputs, the verdict and its bookkeeping)
CPU_STAGES = ("decode", "crop", "resize", "classifier", "segmenter", "overlay", "encode")
#: what live mode does per frame (a capture card hands decoded frames over; nothing is encoded)
LIVE_STAGES = ("crop", "resize", "classifier", "segmenter", "overlay")
EXPORT_PRESET = "ultrafast"  # annotate's default, used by the naive loop too (same encoder work)


def summarise(values) -> dict[str, float]:
    a = np.asarray(list(values), dtype=float)
    if a.size == 0:
        return {}
    return {"min": float(a.min()), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "n": int(a.size)}


def make_bench_clip(folder: Path, *, width: int = 1920, height: int = 1080, fps: float = 60.0,
                    frames: int = 300) -> Path:
    from ..sources.demo import write_demo_clip

    return write_demo_clip(folder / f"bench_{width}x{height}.mp4", width=width, height=height,
                           fps=fps, frames=frames, force=True)


class CaptureBuffer:
    """Frames decoded beforehand, delivered as a capture card delivers them: ready in memory,
    no decode cost, stamped with their arrival time when handed out. Loops to ``frames``."""

    def __init__(self, path: Path, *, keep: int = 120, frames: int = 600) -> None:
        with open_source(path) as source:
            self.info = source.info
            self._images = []
            while len(self._images) < keep and (f := source.read()) is not None:
                self._images.append(f.image)
        self.frames = frames
        self._n = 0

    def read(self) -> Frame | None:
        if self._n >= self.frames or not self._images:
            return None
        i = self._n
        self._n += 1
        # a fresh buffer per frame, as a capture device returns (the pipeline may draw on it)
        return Frame(i, i / self.info.fps, self._images[i % len(self._images)].copy(), time.perf_counter())

    def rewind(self) -> None:
        self._n = 0


def naive_loop(path: Path, config: Config, out: Path) -> tuple[int, float, float]:
    """Read, crop/resize, infer, draw, write, one frame after the other in one thread.
    Returns frames, seconds and CPU seconds (every thread of the process)."""
    overlay = make_overlay(config)
    with open_source(path) as source, open_analyzer(config) as analyzer:
        info = source.info
        n = 0
        t0 = time.perf_counter()
        c0 = time.process_time()
        with VideoWriter(out, info.width, info.height, info.rate, force=True,
                         preset=EXPORT_PRESET) as writer:
            for result in analysed_frames(source, analyzer, threads=False):
                writer.write(render(result.frame, result, overlay))
                n += 1
        return n, time.perf_counter() - t0, time.process_time() - c0


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _CpuTimed:
    """Wraps a method, adding the process CPU time of each call to ``self.ms``."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.ms = 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.process_time()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.ms += (time.process_time() - t0) * 1000.0


def cpu_profile(path: Path, config: Config, *, frames: int = 120, warmup: int = 3) -> dict:
    """CPU-ms per frame of each stage, each measured alone over the first ``frames`` frames:
    decoding them; analysing them (content area, model inputs, each model) and drawing the
    overlay; encoding the drawn pictures with annotate's encoder settings. ``floor_fps`` = 1000 x
    cores / (sum of the stages' CPU-ms per frame): the best frames/s all cores together can give."""
    clock = time.process_time
    # decoding is timed in a pass that keeps no frame (as the pipeline does, which frees each
    # frame once written: keeping them all would add the cost of touching fresh memory)
    with open_source(path) as source:
        info = source.info
        n = 0
        t0 = clock()
        while n < frames and source.read() is not None:
            n += 1
        decode_s = clock() - t0
    if n == 0:
        return {}
    with open_source(path) as source:
        images = [f.image for f in itertools.islice(iter(source.read, None), n)]
    ms = {"decode": decode_s * 1000.0 / n}
    overlay = make_overlay(config)
    with open_analyzer(config) as analyzer:
        for i in range(min(warmup, n)):  # first calls allocate (ONNX Runtime's arenas)
            analyzer(Frame(i, i / info.fps, images[i].copy(), time.perf_counter()))
        analyzer.reset()
        timed = {"crop": _CpuTimed(analyzer.tracker.update)}
        analyzer.tracker.update = timed["crop"]
        if analyzer.classifier is not None:
            timed["classifier"] = analyzer.classifier.predict = _CpuTimed(analyzer.classifier.predict)
        if analyzer.segmenter is not None:
            timed["segmenter"] = analyzer.segmenter.segment = _CpuTimed(analyzer.segmenter.segment)
        total = draw = 0.0
        for i, image in enumerate(images):
            frame = Frame(i, i / info.fps, image, time.perf_counter())
            t0 = clock()
            result = analyzer(frame)
            t1 = clock()
            images[i] = render(frame, result, overlay, copy=False)  # as export draws
            draw += clock() - t1
            total += t1 - t0
    for k, t in timed.items():
        ms[k] = t.ms / n
    ms["resize"] = max(0.0, total * 1000.0 / n - sum(t.ms for t in timed.values()) / n)
    ms["overlay"] = draw * 1000.0 / n
    with tempfile.TemporaryDirectory(prefix="endoview-bench-") as tmp:
        t0 = clock()
        with VideoWriter(Path(tmp) / "encode.mp4", info.width, info.height, info.rate, force=True,
                         preset=EXPORT_PRESET) as writer:
            for image in images:
                writer.write(image)
        ms["encode"] = (clock() - t0) * 1000.0 / n
    per_frame = sum(ms.values())
    live = sum(ms.get(k, 0.0) for k in LIVE_STAGES)
    return {"ms": {k: ms[k] for k in CPU_STAGES if k in ms}, "frames": n, "per_frame_ms": per_frame,
            "cores": cores(), "floor_fps": 1000.0 * cores() / per_frame if per_frame else None,
            "live_per_frame_ms": live, "live_floor_fps": 1000.0 * cores() / live if live else None}


def live_run(buffer: CaptureBuffer, config: Config, *, pace: float | None, warmup: int = 0) -> dict:
    """Live mode over ``buffer``: paced at ``pace`` frames/s, or (None) in lockstep with the
    analysis, which gives its capacity. The first ``warmup`` frames offered run but are not counted
    (frame rate, drops and latency are those of the frames after them): the first frames find the
    field and fill the first re-estimate, once per session, not the steady state a procedure runs in."""
    overlay = make_overlay(config)
    buffer.rewind()
    buffer.frames += warmup
    done: list[tuple[int, float, float]] = []  # (frame index, finished at, added latency ms)

    def finished(result, image) -> None:
        now = time.perf_counter()
        done.append((result.frame.index, now, (now - result.frame.arrival) * 1000.0))

    try:
        with open_analyzer(config) as analyzer:
            settle_heap()  # as the viewer's player does once its models are loaded
            runner = LiveRunner(buffer, analyzer, overlay=overlay, pace=pace, lockstep=pace is None,
                                on_result=finished)
            t0 = time.perf_counter()
            with runner:
                runner.wait(timeout=600)
            end = time.perf_counter()
            if runner.error is not None:
                raise runner.error
    finally:
        buffer.frames -= warmup
    counted = [d for d in done if d[0] >= warmup]
    start = max((d[1] for d in done if d[0] < warmup), default=t0)
    seconds = end - start
    offered = buffer.frames
    lat = np.array([d[2] for d in counted], float)
    return {"frames_in": offered, "analysed": len(counted), "dropped": offered - len(counted),
            "seconds": seconds, "fps": len(counted) / seconds if seconds else 0.0,
            "warmup_frames": warmup, "latency_ms": summarise(lat)}


def run_bench(config: Config, input_path: Path | None = None, *, frames: int = 300,
              live_seconds: float = 5.0, cpu_frames: int = 120, progress=None) -> dict:
    """Run every measurement and return the figures as one dict (the ``--json`` output)."""
    say = progress or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="endoview-bench-") as tmp:
        tmp = Path(tmp)
        if input_path is None:
            say(f"writing a {frames}-frame 1920x1080 H.264 demo clip")
            input_path = make_bench_clip(tmp, frames=frames)
        with open_source(input_path) as source:
            info = source.info
        say("annotate (pipelined)")
        with open_source(input_path) as source, open_analyzer(config) as analyzer:
            models = [m for m in (analyzer.classifier, analyzer.segmenter) if m is not None]
            model = " + ".join(m.name for m in models) or None
            backend = " + ".join(dict.fromkeys(m.backend.description for m in models)) or None
            c0 = time.process_time()
            report = annotate(source, tmp / "annotated.mp4", analyzer, overlay=make_overlay(config),
                              force=True, preset=EXPORT_PRESET)
            annotate_cpu = time.process_time() - c0
        say("naive sequential loop")
        naive_frames, naive_s, naive_cpu = naive_loop(input_path, config, tmp / "naive.mp4")
        say("CPU time of each stage alone")
        cpu = cpu_profile(input_path, config, frames=min(cpu_frames, report.frames))
        buffer = CaptureBuffer(input_path, frames=round(info.fps * live_seconds))
        say("live mode, each frame offered as soon as the analysis is ready (capacity)")
        warmup = round(info.fps)  # one second: the first frames find the field, once per session
        live = live_run(buffer, config, pace=None, warmup=warmup)
        say(f"live mode, paced at the source rate ({info.fps:.0f} fps)")
        paced = live_run(buffer, config, pace=info.fps, warmup=warmup)
    stages = {k: summarise(report.stage_ms[k]) for k in STAGES if report.stage_ms.get(k)}
    inf = np.asarray(report.stage_ms.get("inference", []), float)
    model_fps = summarise(1000.0 / inf[inf > 0]) if inf.size else {}
    naive_fps = naive_frames / naive_s if naive_s else 0.0
    return {
        "input": {"path": str(input_path), "width": info.width, "height": info.height,
                  "fps": info.fps, "frames": report.frames},
        "model": model, "backend": backend, "machine": platform.processor() or platform.machine(),
        "stages": stages,
        "model_fps": model_fps,
        "annotate_fps": report.fps,
        "naive_fps": naive_fps,
        "speedup": report.fps / naive_fps if naive_fps else None,
        "cpu_ms": cpu.get("ms", {}),
        "cpu_ms_per_frame": cpu.get("per_frame_ms"),
        "cores": cpu.get("cores"),
        "floor_fps": cpu.get("floor_fps"),
        "of_floor": report.fps / cpu["floor_fps"] if cpu.get("floor_fps") else None,
        "live_cpu_ms_per_frame": cpu.get("live_per_frame_ms"),
        "live_floor_fps": cpu.get("live_floor_fps"),
        "annotate_cpu_ms_per_frame": annotate_cpu * 1000.0 / report.frames if report.frames else None,
        "naive_cpu_ms_per_frame": naive_cpu * 1000.0 / naive_frames if naive_frames else None,
        "live_fps": live["fps"],
        "live_dropped": live["dropped"],
        "live_frames_in": live["frames_in"],
        "live_warmup_frames": live["warmup_frames"],
        "added_latency_ms_p50": paced["latency_ms"].get("p50"),
        "added_latency_ms_p99": paced["latency_ms"].get("p99"),
        "paced_fps": paced["fps"],
        "paced_dropped": paced["dropped"],
    }


def format_report(r: dict) -> str:
    lines = [f"input: {r['input']['path']} ({r['input']['width']}x{r['input']['height']} "
             f"@ {r['input']['fps']:.3g} fps, {r['input']['frames']} frames)",
             f"model: {r['model']} on {r['backend']}", "",
             f"{'stage (ms)':<12}{'min':>8}{'mean':>8}{'p99':>8}{'max':>8}{'CPU-ms':>8}"]
    cpu = r.get("cpu_ms") or {}
    for k, s in r["stages"].items():
        if s:
            c = f"{cpu[k]:8.2f}" if k in cpu else f"{'':8}"
            lines.append(f"{k:<12}{s['min']:8.2f}{s['mean']:8.2f}{s['p99']:8.2f}{s['max']:8.2f}{c}")
    if r.get("floor_fps"):
        lines.append(f"CPU-ms per frame, each stage alone: {r['cpu_ms_per_frame']:.2f} "
                     f"(pipelined annotate {r['annotate_cpu_ms_per_frame']:.2f}, naive loop "
                     f"{r['naive_cpu_ms_per_frame']:.2f}); floor on {r['cores']} cores: "
                     f"{r['floor_fps']:.1f} FPS (1000 x cores / CPU-ms per frame)")
    m = r["model_fps"]
    if m:
        lines.append(f"\nmodel FPS (1 / inference): mean {m['mean']:.1f}, min {m['min']:.1f}, "
                     f"max {m['max']:.1f}   (paper, MobileNetV3 on a GPU: 129.7 mean)")
    sp = f" ({r['speedup']:.2f}x the naive loop" if r["speedup"] else ""
    if sp:
        sp += f", {100 * r['of_floor']:.0f}% of the floor)" if r.get("of_floor") else ")"
    lines += [f"annotate, pipelined:      {r['annotate_fps']:7.1f} FPS{sp}",
              f"naive sequential loop:    {r['naive_fps']:7.1f} FPS",
              f"live, capacity:           {r['live_fps']:7.1f} FPS analysed (each frame offered as "
              f"soon as the analysis is ready)" + (
                  f"; live floor {r['live_floor_fps']:.1f} FPS ({r['live_cpu_ms_per_frame']:.2f} CPU-ms "
                  f"per frame: {' + '.join(LIVE_STAGES)})" if r.get("live_floor_fps") else ""),
              f"live, paced at {r['input']['fps']:.0f} fps:     {r['paced_fps']:7.1f} FPS analysed, "
              f"added latency p50 {r['added_latency_ms_p50']:.2f} ms, "
              f"p99 {r['added_latency_ms_p99']:.2f} ms"]
    if r.get("live_warmup_frames"):
        lines.append(f"(live figures after the first {r['live_warmup_frames']} frames, which find the field "
                     "once per session)")
    return "\n".join(lines)
