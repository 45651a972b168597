"""Qt test set-up: offscreen, and no test may leave a QThread, an active QTimer or an
``endoview-*`` Python thread behind (STYLE 9)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytest.importorskip("PySide6", reason="PySide6 is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")

from PySide6.QtCore import QThread, QTimer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))  # fakes.py


def _alive_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("endoview-") and t.is_alive()]


@pytest.fixture(autouse=True)
def no_leaks(qapp, monkeypatch):
    """Fail a test that leaves a QThread running, a QTimer active or an endoview-* thread alive."""
    import shiboken6

    timers: list[QTimer] = []
    qthreads: list[QThread] = []
    start_timer, start_thread = QTimer.start, QThread.start

    def track_timer(self, *args):
        timers.append(self)
        return start_timer(self, *args)

    def track_thread(self, *args):
        qthreads.append(self)
        return start_thread(self, *args)

    monkeypatch.setattr(QTimer, "start", track_timer)
    monkeypatch.setattr(QThread, "start", track_thread)
    yield
    deadline = time.monotonic() + 3.0
    while _alive_threads() and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.02)
    leaks = [f"thread {n}" for n in _alive_threads()]
    leaks += [f"active QTimer {t.objectName() or t}" for t in timers if shiboken6.isValid(t) and t.isActive()]
    leaks += [f"running QThread {t}" for t in qthreads if shiboken6.isValid(t) and t.isRunning()]
    assert not leaks, "test left running: " + ", ".join(leaks)


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 90-frame 192x160 H.264 demo clip at 30 fps (frames 0..89)."""
    from engine.sources.demo import write_demo_clip

    return write_demo_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", width=192, height=160, frames=90)


@pytest.fixture
def make_viewer(qtbot, tmp_path, tiny_bundle, no_leaks):
    """Build the real window over a session with the tiny model (or ``bundle=``); closed (and checked)
    at teardown."""
    from PySide6.QtCore import QSettings

    from app.session import Session
    from app.settings import Settings
    from app.state import ViewerState
    from app.window import MainWindow
    from engine.config import NO_SEGMENTER, load_config

    made = []

    def make(second_pass=None, bundle=None, segmenter=NO_SEGMENTER, **session_kw):
        qs = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        settings = Settings(output_folder=str(tmp_path / "out"), finding_min_s=0.1, finding_min_confidence=0.0)
        # the tiny model alone unless a test asks for a segmenter beside it (the default's U-Net)
        base = load_config().override(bundle=bundle or tiny_bundle.path, backend="onnxruntime",
                                      second_pass=second_pass, segmenter=segmenter)
        state = ViewerState()
        session = Session(state, settings.apply(base), settings, **session_kw)
        window = MainWindow(session, qs, lambda s: s.apply(base))
        qtbot.addWidget(window)
        # A modal question would block an offscreen test forever: answer yes unless a test
        # replaces this to check the question.
        window.confirm = lambda title, text: True
        window.show()
        made.append(window)
        return window

    yield make
    for w in made:
        w._closing_confirmed = True
        w.close()
