"""``python -m app.measure``: is the GUI thread ever blocked, and does the window slow the pipeline?

Plays a 1080p clip (default: the 1920x1080 60 fps demo clip ``endoview bench`` generates) with
the overlay on in the real window, while a 5 ms QTimer records how late the event loop serves it
(the longest stall; target < 50 ms). The window's analysed frame rate in live mode is compared
with ``engine.tools.bench.live_run`` (the figures ``endoview bench`` prints for live mode) fed from the
same in-memory capture buffer: offered at 240 frames/s (more than it can take), and paced at the
clip's rate (target: the window costs at most 10%). Both count from the end of the same warm-up:
the model loaded, the first frame analysed and one second more. Replay mode's shown frame rate
is printed too. Figures, not a test: they depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from engine.commands.common import add_model_options, config_from_args
from engine.tools.bench import CaptureBuffer, live_run, make_bench_clip

#: frames/s offered to live mode, more than it can analyse: both runs drop the rest as stale
OFFERED_FPS = 240
#: seconds after the first analysed frame that no figure counts, in the window and in bench's runs
WARMUP_S = 1.0


class StallMeter:
    """A 5 ms repeating QTimer; records how late each tick comes (the event loop's stalls)."""

    def __init__(self, interval_ms: int = 5) -> None:
        from PySide6.QtCore import QTimer

        self.interval = interval_ms / 1000.0
        self.stalls: list[float] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.stalls.append(max(0.0, now - self._last - self.interval) * 1000.0)
        self._last = now

    def stop(self) -> None:
        self.timer.stop()


def run_window(clip, config, *, live: bool, pace, seconds: float) -> dict:
    """Play ``clip`` (a path, or a CaptureBuffer) in the real window; frame rates and stalls."""
    import contextlib

    import numpy as np
    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.session import Session
    from app.settings import Settings
    from app.state import ViewerState
    from app.window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    with tempfile.TemporaryDirectory() as tmp:
        qs = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
        opener = (lambda spec: contextlib.nullcontext(clip)) if isinstance(clip, CaptureBuffer) else None
        session = Session(ViewerState(), config, Settings(), live=live, pace=pace,
                          **({"source_opener": opener} if opener else {}))
        window = MainWindow(session, qs, lambda s: config)
        window.show()
        window.open("capture-buffer" if opener else str(clip))
        while session.info is None and not session.state.error:
            app.processEvents()
            time.sleep(0.005)
        player = session.player

        def serve(until) -> None:
            """Run the event loop, as the app does, until ``until()`` or the player stops."""
            loop, check = QEventLoop(), QTimer()
            check.timeout.connect(lambda: (player.finished.is_set() or not player.playing or until()) and loop.quit())
            check.start(10)
            loop.exec()
            check.stop()

        # as bench's live figures: counted from the end of a warm-up (the model loaded, the first
        # frames analysed, WARMUP_S more), not from the moment the source opened
        serve(lambda: player.stats().analysed > 0)
        warm = time.perf_counter() + WARMUP_S
        serve(lambda: time.perf_counter() >= warm)
        meter = StallMeter()
        busy = []  # sampled every 5 ms with the stalls: was the display yielding (Player.busy)?
        meter.timer.timeout.connect(lambda: busy.append(player.busy))
        t0, painted0, analysed0 = time.perf_counter(), window.video.painted, player.stats().analysed
        serve(lambda: time.perf_counter() - t0 >= seconds)
        elapsed = time.perf_counter() - t0
        meter.stop()
        stats = player.stats()
        analysed = stats.analysed - analysed0
        painted = window.video.painted - painted0
        window._closing_confirmed = True
        window.close()
    stalls = np.asarray(meter.stalls or [0.0])
    return {"mode": "live" if live else "replay", "pace": pace, "seconds": elapsed,
            "analysed": analysed, "analysed_fps": analysed / elapsed, "painted_fps": painted / elapsed,
            "dropped": stats.dropped, "busy_share": float(np.mean(busy)) if busy else 0.0,
            "stall_max_ms": float(stalls.max()),
            "stall_p99_ms": float(np.percentile(stalls, 99)), "error": session.state.error}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.measure", description=__doc__.split("\n\n")[0])
    p.add_argument("clip", nargs="?", type=Path, help="1080p clip (default: generated demo clip)")
    p.add_argument("--frames", type=int, default=600, help="length of the generated clip (60 fps)")
    p.add_argument("--seconds", type=float, default=10.0, help="longest time per window run")
    p.add_argument("--json", action="store_true")
    add_model_options(p)
    args = p.parse_args(argv)
    config = config_from_args(args)
    with tempfile.TemporaryDirectory(prefix="endoview-measure-") as tmp:
        clip = args.clip or make_bench_clip(Path(tmp), frames=args.frames)
        from engine.sources import open_source

        with open_source(clip) as source:
            fps = source.info.fps
        runs = {}
        for name, pace in (("capacity", OFFERED_FPS), ("paced", fps)):
            # the window's run is offered a second more than it counts, for its warm-up
            buffer = CaptureBuffer(clip, frames=round(pace * (args.seconds + 2 * WARMUP_S)))
            runs[f"window_live_{name}"] = run_window(buffer, config, live=True, pace=pace, seconds=args.seconds)
            buffer.frames = round(pace * args.seconds)
            runs[f"bench_live_{name}"] = live_run(buffer, config, pace=pace, warmup=round(pace * WARMUP_S))
        runs["window_replay"] = run_window(clip, config, live=False, pace=None, seconds=args.seconds)
    if args.json:
        print(json.dumps(runs, indent=2, default=str))
        return 0
    for pace in ("capacity", "paced"):
        bench, window = runs[f"bench_live_{pace}"], runs[f"window_live_{pace}"]
        change = (window["analysed_fps"] / bench["fps"] - 1) * 100 if bench["fps"] else float("nan")
        print(f"live {pace:8s}: bench {bench['fps']:6.1f} FPS analysed, window {window['analysed_fps']:6.1f} "
              f"({change:+.1f}%), window painted {window['painted_fps']:.1f} FPS "
              f"(at [display] busy_fps {window['busy_share']:.0%} of the time), "
              f"longest event-loop stall {window['stall_max_ms']:.1f} ms (p99 {window['stall_p99_ms']:.1f})")
    r = runs["window_replay"]
    print(f"replay (1x)   : shown {r['analysed_fps']:.1f} FPS of a {fps:.0f} fps clip, painted "
          f"{r['painted_fps']:.1f} FPS, longest event-loop stall {r['stall_max_ms']:.1f} ms "
          f"(p99 {r['stall_p99_ms']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
