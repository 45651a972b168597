"""Soak test: the live pipeline on a looping clip for a long time, watching the process.

:func:`run_soak` drives :class:`engine.live.LiveRunner` (capture thread, newest-frame
analysis, overlay, and the second-pass worker when the analyzer has one) for ``frames`` delivered
frames and samples the process every ``every`` frames: resident memory, OS thread count, open
file descriptors, and the delivered and analysed frame rates. The report says how much each grew
after the warm-up (caches, thread pools and allocator arenas fill during the first frames).

Process figures come from ``/proc/self`` on Linux, else from psutil when it is installed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..errors import EndoviewError
from ..live import LiveRunner
from ..overlay import Overlay
from ..pipeline import Analyzer

logger = logging.getLogger(__name__)


class SoakError(EndoviewError):
    """The soak run could not be done (bad arguments, no way to read process figures)."""


def process_figures() -> tuple[int, int, int]:
    """(resident bytes, OS threads, open file descriptors) of this process."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            status = dict(line.split(":", 1) for line in fh if ":" in line)
        rss = int(status["VmRSS"].split()[0]) * 1024
        threads = int(status["Threads"])
        files = len(os.listdir("/proc/self/fd")) - 1  # minus the listing's own descriptor
        return rss, threads, files
    except (OSError, KeyError, ValueError):
        pass
    try:
        import psutil
    except ImportError:
        raise SoakError("cannot read memory, threads and open files here: no /proc and no psutil "
                        "(pip install psutil)") from None
    p = psutil.Process()
    files = p.num_fds() if hasattr(p, "num_fds") else p.num_handles()
    return p.memory_info().rss, p.num_threads(), files


@dataclass(frozen=True)
class SoakSample:
    frames: int  # delivered so far
    analysed: int
    dropped: int
    seconds: float
    rss_mib: float
    threads: int
    open_files: int
    fps: float  # delivered frames per second since the previous sample
    analysed_fps: float

    def line(self) -> str:
        return (f"frames {self.frames:>8d}  rss {self.rss_mib:8.1f} MiB  threads {self.threads:3d}  "
                f"files {self.open_files:3d}  {self.fps:7.1f} fps  analysed {self.analysed_fps:6.1f}/s  "
                f"dropped {self.dropped}")


@dataclass
class SoakReport:
    source: str
    frames: int
    seconds: float
    analysed: int
    dropped: int
    reconnects: int
    second_pass_results: int
    warmup_frames: int
    samples: list[SoakSample] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def analysed_fps(self) -> float:
        return self.analysed / self.seconds if self.seconds > 0 else 0.0

    def _after_warmup(self) -> list[SoakSample]:
        after = [s for s in self.samples if s.frames >= self.warmup_frames]
        return after if len(after) >= 2 else self.samples[-2:]

    @property
    def rss_growth_pct(self) -> float | None:
        s = self._after_warmup()
        if len(s) < 2 or s[0].rss_mib <= 0:
            return None
        return (s[-1].rss_mib - s[0].rss_mib) / s[0].rss_mib * 100.0

    @property
    def threads_growth(self) -> int | None:
        s = self._after_warmup()
        return s[-1].threads - s[0].threads if len(s) >= 2 else None

    @property
    def files_growth(self) -> int | None:
        s = self._after_warmup()
        return s[-1].open_files - s[0].open_files if len(s) >= 2 else None

    def summary(self) -> str:
        s = self._after_warmup()
        head = (f"soak: {self.frames} frames of {self.source} in {self.seconds:.1f} s "
                f"({self.fps:.1f} fps delivered, {self.analysed_fps:.1f} analysed/s, {self.dropped} dropped, "
                f"{self.second_pass_results} second-pass results)")
        if len(s) < 2:
            return head + "; too few samples to measure growth (use more --frames or a smaller --every)"
        a, b = s[0], s[-1]
        return (head + f"\nafter warm-up (frame {a.frames} -> {b.frames}): rss {a.rss_mib:.1f} -> "
                f"{b.rss_mib:.1f} MiB ({self.rss_growth_pct:+.2f}%), peak {max(x.rss_mib for x in s):.1f} MiB; "
                f"threads {a.threads} -> {b.threads}; open files {a.open_files} -> {b.open_files}")

    def to_json(self) -> dict:
        return {"source": self.source, "frames": self.frames, "seconds": round(self.seconds, 3),
                "fps": round(self.fps, 2), "analysed": self.analysed,
                "analysed_fps": round(self.analysed_fps, 2), "dropped": self.dropped,
                "reconnects": self.reconnects, "second_pass_results": self.second_pass_results,
                "warmup_frames": self.warmup_frames,
                "rss_growth_pct": None if self.rss_growth_pct is None else round(self.rss_growth_pct, 3),
                "threads_growth": self.threads_growth, "files_growth": self.files_growth,
                "samples": [asdict(s) for s in self.samples]}


def run_soak(source, analyzer: Analyzer, *, frames: int, every: int = 5000, warmup: int | None = None,
             overlay: Overlay | None = None, pace: float | None = None, on_sample: Callable[[SoakSample], None] | None = None) -> SoakReport:
    """Run ``source`` (loop it: a file ends) live through ``analyzer`` for ``frames`` frames.

    Samples are taken in the capture thread right after every ``every``-th delivered frame and
    after the last one, while every pipeline thread is alive. ``warmup``: samples
    from this frame on count for the growth figures (default: a tenth of the run, at least
    ``every``). ``pace``: deliver at this many frames/s (as a capture card does) instead of as
    fast as the source decodes.
    """
    if frames <= 0 or every <= 0:
        raise SoakError(f"--frames and --every must be positive, not {frames} and {every}")
    warmup = max(every, frames // 10) if warmup is None else int(warmup)
    second_pass = getattr(analyzer, "second_pass", None)
    second = {"last": None, "count": 0}  # distinct second-pass results seen (no growing set)

    def on_result(result, image) -> None:
        sp = result.second_pass
        if sp is not None and sp is not second["last"]:
            second["last"] = sp
            second["count"] += 1

    report = SoakReport(getattr(source.info, "name", str(source)), 0, 0.0, 0, 0, 0, 0, warmup)
    marks = {*range(every, frames, every), frames}
    last = [0, 0, 0.0]
    runner: LiveRunner

    def on_frame(frame) -> None:
        # capture thread, right after frame number ``frames_in`` was delivered: every thread is
        # still alive, and the count is exact
        st = runner.stats
        if st.frames_in not in marks:
            return
        now = time.perf_counter()
        rss, threads, files = process_figures()
        f0, a0, t_prev = last
        dt = max(now - t_prev, 1e-9)
        s = SoakSample(st.frames_in, st.analysed, st.dropped, round(now - t0, 3), round(rss / 2**20, 2),
                       threads, files, round((st.frames_in - f0) / dt, 2), round((st.analysed - a0) / dt, 2))
        last[:] = [st.frames_in, st.analysed, now]
        report.samples.append(s)
        if on_sample is not None:
            on_sample(s)

    runner = LiveRunner(source, analyzer, overlay=overlay, max_frames=frames, on_result=on_result,
                        on_frame=on_frame, pace=pace)
    t0 = time.perf_counter()
    last[2] = t0
    with runner:
        runner.wait()
    report.seconds = time.perf_counter() - t0
    if runner.error is not None:
        raise runner.error
    st = runner.stats
    report.frames, report.analysed, report.dropped, report.reconnects = (
        st.frames_in, st.analysed, st.dropped, st.reconnects)
    report.second_pass_results = second["count"]
    if second_pass is not None:
        logger.info("second pass gave %d results", second["count"])
    return report


__all__ = ["SoakError", "SoakReport", "SoakSample", "process_figures", "run_soak"]
