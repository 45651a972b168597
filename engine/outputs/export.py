"""Annotated export: every frame of a source (or a time range) through the pipeline into an
H.264 MP4 with the overlay burned in, plus a per-frame log (JSONL and/or CSV).

Decode, analysis, overlay and encode overlap in a short chain of bounded queues; the output has
exactly the input's frames and rate (a source whose frame size changes mid-stream is scaled to
its first size, see :class:`SameSize`). Every file is written under a temporary name and renamed
when complete (:mod:`engine.files`), so nothing is ever left under a final name by a failed or
cancelled export.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2

from ..analysis.crop import deidentify as blacken_outside
from ..errors import ExportError
from ..files import check_output
from ..overlay import Overlay, render
from ..pipeline import Analyzer, analysed_frames
from ..types import Frame, FrameResult
from .logs import FrameLog
from .writer import VideoWriter

logger = logging.getLogger(__name__)


@dataclass
class ExportReport:
    output: Path | None
    logs: list[Path]
    frames: int
    seconds: float
    stopped_early: str | None = None
    stage_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def frame_range(info, start_s: float | None, end_s: float | None) -> tuple[int, int | None]:
    """Frame indices [first, last) for a time range in seconds of a source with ``info.fps``."""
    if start_s is not None and start_s < 0 or end_s is not None and end_s < 0:
        raise ExportError("--start and --end must be positive times in seconds")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ExportError(f"--end ({end_s} s) must be after --start ({start_s} s)")
    first = round(start_s * info.fps) if start_s else 0
    last = round(end_s * info.fps) if end_s is not None else None
    if info.frame_count is not None and first >= info.frame_count:
        raise ExportError(f"--start {start_s} s is past the end of the video "
                          f"({info.frame_count / info.fps:.2f} s)")
    if (start_s or end_s is not None) and not info.seekable and first:
        raise ExportError(f"{info.name} cannot seek, so --start is not available for it")
    return first, last


class SameSize:
    """Frames scaled to ``width`` x ``height`` when the source changes size mid-stream.

    An MP4 holds one frame size, so export keeps the first size: later frames of another size are
    scaled to it (aspect ratio not kept), with one warning per change. Called once per frame, in
    order.
    """

    def __init__(self, width: int, height: int, name: str = "source") -> None:
        self.size = (width, height)
        self.name = name
        self._current = self.size
        self._seen = 0

    def __call__(self, frame: Frame) -> Frame:
        n, self._seen = self._seen, self._seen + 1
        width, height = self.size
        h, w = frame.image.shape[:2]
        if (w, h) != (width, height):
            if (w, h) != self._current:
                logger.warning("%s: frame size changed to %dx%d after %d frames; scaling to %dx%d",
                               self.name, w, h, n, width, height)
                self._current = (w, h)
            image = cv2.resize(frame.image, (width, height), interpolation=cv2.INTER_AREA)
            return Frame(frame.index, frame.timestamp, image, frame.arrival)
        self._current = self.size
        return frame


def annotate(source, output: Path | None, analyzer: Analyzer, *, overlay: Overlay | None,
             logs: list[Path] = (), deidentify: bool = False, start_s: float | None = None,
             end_s: float | None = None, force: bool = False, lossless: bool = False,
             preset: str = "ultrafast", progress: Callable[[int], None] | None = None,
             stop: threading.Event | None = None) -> ExportReport:
    """Run ``source`` through ``analyzer`` and write the clip and logs; return what was done.

    ``output`` None writes no video (logs only). ``preset``: the x264 speed preset; ultrafast
    keeps a 2-core CPU above 60 frames/s at 1080p, slower presets give smaller files. ``stop`` cancels: everything written so far is
    removed and ExportError("export cancelled") is raised.
    """
    stop = stop or threading.Event()
    info = source.info
    first, last = frame_range(info, start_s, end_s)
    inputs = [source.path] if getattr(source, "path", None) is not None else []
    for path in ([output] if output is not None else []) + list(logs):
        check_output(path, force=force, inputs=inputs)

    def picture(result: FrameResult) -> object:
        t0 = time.perf_counter()
        frame = result.frame
        if deidentify:
            frame = Frame(frame.index, frame.timestamp, blacken_outside(frame.image, result.area), frame.arrival)
        image = render(frame, result, overlay, copy=False)  # the decoded frame is ours alone: no copy
        result.timings["overlay"] = (time.perf_counter() - t0) * 1000.0
        return image

    writer = None
    log_writers: list[FrameLog] = []
    stage_ms: dict[str, list[float]] = {}
    frames = 0
    t_start = time.perf_counter()
    try:
        log_writers = [FrameLog(Path(p), force=force) for p in logs]
        if output is not None:
            writer = VideoWriter(Path(output), info.width, info.height, info.rate,
                                 force=force, lossless=lossless, preset=preset)
        chain = analysed_frames(source, analyzer, start=first, end=last, stop=stop,
                                prepare=SameSize(info.width, info.height, info.name), draw=picture)
        for result, image in chain:
            if writer is not None:
                t0 = time.perf_counter()
                writer.write(image)
                result.timings["encode"] = (time.perf_counter() - t0) * 1000.0
            if log_writers:
                row = result.to_log_row()  # once for the JSONL and the CSV log
                for log in log_writers:
                    log.write_row(row)
            for k, v in result.timings.items():
                stage_ms.setdefault(k, []).append(v)
            frames += 1
            if progress is not None:
                progress(frames)
        if stop.is_set():
            raise ExportError("export cancelled; nothing was kept")
        if frames == 0:
            raise ExportError(f"no frames to export from {info.name}"
                              + (f" in the range {start_s}..{end_s} s" if start_s or end_s else ""))
        out_path = writer.close() if writer is not None else None
        written_logs = [log.close() for log in log_writers]
    except BaseException:
        if writer is not None:
            writer.abort()
        for log in log_writers:
            log.abort()
        raise
    stopped = getattr(source, "stopped_early", None)
    if stopped:
        logger.warning("%s: %s", info.name, stopped)
    return ExportReport(out_path, written_logs, frames, time.perf_counter() - t_start,
                        stopped_early=stopped, stage_ms=stage_ms)
