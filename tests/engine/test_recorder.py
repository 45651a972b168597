import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from engine.errors import ExportError, OutputExistsError
from engine.outputs.recorder import Recorder, recording_path

ROOT = Path(__file__).resolve().parents[2]


def frames_in(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def image(i: int, w=160, h=120) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (i * 7 % 255, 80, 160)
    return img


def test_records_every_frame_with_duration_and_free_space(tmp_path):
    path = recording_path(tmp_path, "raw")
    rec = Recorder(path, 161, 121, 30)  # odd sizes are padded to even
    for i in range(45):
        while not rec.write(image(i, 161, 121)):
            threading.Event().wait(0.01)
    assert rec.stop() == path
    assert rec.frames == 45 and rec.duration_s == pytest.approx(1.5)
    assert rec.free_bytes() > 0 and not rec.recording
    assert frames_in(path) == 45 and not rec.write(image(0))
    assert recording_path(tmp_path, "raw").name != path.name or not path.exists()


def test_refuses_an_existing_file_and_a_missing_folder(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"")
    with pytest.raises(OutputExistsError):
        Recorder(tmp_path / "x.mp4", 64, 64, 30)
    with pytest.raises(ExportError, match="does not exist"):
        Recorder(tmp_path / "nope" / "x.mp4", 64, 64, 30)


def test_full_disk_is_reported_and_keeps_what_was_written(small_disk):
    errors = []
    rec = Recorder(small_disk / "r.mp4", 320, 240, 30, on_error=errors.append)
    rng = np.random.default_rng(0)
    for _ in range(400):  # noise does not compress: 2 MiB fills quickly
        rec.write(rng.integers(0, 255, (240, 320, 3), np.uint8))
        if errors:
            break
        threading.Event().wait(0.002)
    with pytest.raises(ExportError, match="disk full"):
        rec.stop()
    assert errors and "disk full" in str(errors[0])


KILLED = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    from engine.outputs.recorder import Recorder
    rec = Recorder(sys.argv[1], 160, 120, 30)
    n = int(sys.argv[2])
    for i in range(n):
        img = np.zeros((120, 160, 3), np.uint8); img[:] = (i * 7 % 255, 80, 160)
        while not rec.write(img):
            time.sleep(0.005)
    while rec.frames < n:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_recording_loses_at_most_the_last_second(tmp_path):
    path = tmp_path / "killed.mp4"
    n = 100  # 3.3 s at 30 fps
    proc = subprocess.run([sys.executable, "-c", KILLED, str(path), str(n)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    got = frames_in(path)
    assert n - 30 <= got <= n, got


def test_force_replaces_and_a_frame_of_another_size_is_scaled(tmp_path):
    path = tmp_path / "r.mp4"
    path.write_bytes(b"old")
    rec = Recorder(path, 160, 120, 30, force=True)
    for i in range(20):  # the device changed its format half way
        while not rec.write(image(i) if i < 10 else image(i, 320, 240)):
            threading.Event().wait(0.01)
    rec.stop()
    assert rec.error is None and frames_in(path) == 20
    with av.open(str(path)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (160, 120)
