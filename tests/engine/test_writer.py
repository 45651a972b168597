"""VideoWriter: exact frames and rate, lossless round trip, temp + rename, refusals, disk full."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engine.errors import ExportError, OutputExistsError
from engine.files import temporary_name as partial_path
from engine.outputs.writer import VideoWriter
from engine.sources import open_source
from engine.types import to_fraction

NTSC = Fraction(30000, 1001)


def _frames(n: int, w: int = 64, h: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _write(path: Path, images: list[np.ndarray], rate=NTSC, **kw) -> Path:
    h, w = images[0].shape[:2]
    with VideoWriter(path, w, h, rate, **kw) as writer:
        for img in images:
            writer.write(img)
    return path


def test_exact_frame_count_and_rate(tmp_path: Path, media) -> None:
    images = [media.index_image(i) for i in range(37)]
    path = _write(tmp_path / "out.mp4", images)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == NTSC
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in c.decode(stream)) == 37
    with open_source(path) as src:
        assert src.info.rate == NTSC and src.info.frame_count == 37
        frames = list(src)
    assert [media.read_index(f.image) for f in frames] == list(range(37))
    assert frames[-1].timestamp == pytest.approx(36 * 1001 / 30000, abs=1e-4)


def test_ffprobe_agrees(tmp_path: Path) -> None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe (FFmpeg command line) is not installed")
    path = _write(tmp_path / "out.mp4", _frames(23))
    out = subprocess.run(
        [ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames,avg_frame_rate,r_frame_rate:format_tags", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    )
    info = json.loads(out.stdout)
    stream = info["streams"][0]
    assert int(stream["nb_read_frames"]) == 23
    assert stream["avg_frame_rate"] == "30000/1001"
    tags = info.get("format", {}).get("tags", {})
    assert "title" not in tags and "creation_time" not in tags


@pytest.mark.parametrize("size", [(64, 48), (65, 49)])
def test_lossless_round_trip_is_pixel_exact(tmp_path: Path, size: tuple[int, int]) -> None:
    images = _frames(6, *size)
    path = _write(tmp_path / "exact.mp4", images, rate=25, lossless=True)
    with open_source(path) as src:
        decoded = [f.image for f in src]
    assert len(decoded) == len(images)
    for a, b in zip(images, decoded):
        assert np.array_equal(a, b)


def test_odd_size_is_padded_to_even(tmp_path: Path) -> None:
    img = np.full((49, 65, 3), (40, 90, 200), np.uint8)
    with VideoWriter(tmp_path / "odd.mp4", 65, 49, 30) as writer:
        assert writer.encoded_size == (66, 50)
        for _ in range(3):
            writer.write(img)
    with open_source(tmp_path / "odd.mp4") as src:
        frame = src.read()
    assert frame.image.shape == (50, 66, 3)
    assert np.abs(frame.image[:49, :65].astype(int) - img).max() <= 6  # colour survives 4:2:0 + x264


def test_colour_is_preserved_lossy(tmp_path: Path) -> None:
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, :32] = (200, 30, 30)
    img[:, 32:64] = (30, 200, 30)
    img[:, 64:] = (60, 80, 220)
    path = _write(tmp_path / "c.mp4", [img] * 3, crf=12)
    with open_source(path) as src:
        out = src.read().image
    assert np.abs(out[8:-8, 4:28].astype(int) - img[8:-8, 4:28]).max() <= 6
    assert np.abs(out[8:-8, 68:92].astype(int) - img[8:-8, 68:92]).max() <= 6


def test_temp_name_until_close(tmp_path: Path) -> None:
    final = tmp_path / "clip.mp4"
    writer = VideoWriter(final, 64, 48, 30)
    for img in _frames(3):
        writer.write(img)
    assert partial_path(final) == tmp_path / ".clip.partial.mp4"
    assert partial_path(final).exists() and not final.exists()
    assert writer.close() == final
    assert final.exists() and not partial_path(final).exists()
    assert writer.frames_written == 3
    assert writer.close() == final  # idempotent


def test_abort_and_exception_leave_nothing(tmp_path: Path) -> None:
    final = tmp_path / "clip.mp4"
    writer = VideoWriter(final, 64, 48, 30)
    writer.write(_frames(1)[0])
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(final, 64, 48, 30) as w:
            w.write(_frames(1)[0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_no_frames_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"nothing was written to .*empty\.mp4"):
        with VideoWriter(tmp_path / "empty.mp4", 64, 48, 30):
            pass
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path: Path) -> None:
    final = tmp_path / "clip.mp4"
    final.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match=rf"^output exists: {final} \(use --force to overwrite\)$"):
        VideoWriter(final, 64, 48, 30)
    assert final.read_bytes() == b"old"
    _write(final, _frames(2), force=True)
    with open_source(final) as src:
        assert src.info.frame_count == 2


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=rf"output folder does not exist: {tmp_path / 'nope'}"):
        VideoWriter(tmp_path / "nope" / "clip.mp4", 64, 48, 30)


def _mount_tmpfs(where: Path, options: str) -> None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")


@pytest.fixture()
def tmpfs(tmp_path: Path):
    mounts: list[Path] = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        _mount_tmpfs(where, options)
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", str(where)], check=False)


def test_unwritable_folder(tmp_path: Path, tmpfs) -> None:
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
    else:  # root ignores permission bits: use a read-only file system
        folder = tmpfs("ro", "ro,size=1m")
    try:
        with pytest.raises(ExportError, match=rf"^output folder is not writable: {folder} "):
            VideoWriter(folder / "clip.mp4", 64, 48, 30)
    finally:
        if os.geteuid() != 0:
            folder.chmod(0o700)


def test_disk_full_on_a_small_tmpfs(tmpfs) -> None:
    folder = tmpfs("small", "size=256k")
    final = folder / "big.mp4"
    with pytest.raises(ExportError, match=rf"^disk full while writing {final}"):
        _write(final, _frames(60, 320, 240), rate=30, crf=0)
    assert list(folder.iterdir()) == []


def test_file_size_limit_in_a_subprocess(tmp_path: Path) -> None:
    final = tmp_path / "big.mp4"
    script = textwrap.dedent(
        f"""
        import json, resource, signal
        import numpy as np
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
        from engine.errors import ExportError
        from engine.outputs.writer import VideoWriter
        rng = np.random.default_rng(0)
        try:
            with VideoWriter({str(final)!r}, 320, 240, 30, crf=0) as w:
                for _ in range(60):
                    w.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
            print(json.dumps({{"error": None}}))
        except ExportError as err:
            print(json.dumps({{"error": str(err)}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    error = json.loads(result.stdout.strip().splitlines()[-1])["error"]
    assert error and error.startswith(f"file too large while writing {final}")
    assert list(tmp_path.iterdir()) == []


def test_enospc_from_the_muxer_is_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    final = tmp_path / "clip.mp4"
    writer = VideoWriter(final, 64, 48, 30)

    def full(*_args):
        av.error.err_check(-errno.ENOSPC, str(partial_path(final)))

    monkeypatch.setattr(writer, "_container", _Proxy(writer._container, mux=full))
    with pytest.raises(ExportError, match=rf"^disk full while writing {final}; free some space"):
        for img in _frames(40):
            writer.write(img)
    assert list(tmp_path.iterdir()) == []


class _Proxy:
    def __init__(self, inner, **overrides) -> None:
        self._inner, self._overrides = inner, overrides

    def __getattr__(self, name):
        return self._overrides.get(name) or getattr(self._inner, name)


def test_no_source_metadata_unless_given(tmp_path: Path) -> None:
    src_path = tmp_path / "source.mp4"
    with av.open(str(src_path), "w", format="mp4") as out:
        out.metadata["title"] = "Patient Jane Doe"
        out.metadata["creation_time"] = "2020-01-01T10:00:00Z"
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i, img in enumerate(_frames(3)):
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    with open_source(src_path) as src:
        images = [f.image for f in src]
    plain = _write(tmp_path / "plain.mp4", images)
    tagged = _write(tmp_path / "tagged.mp4", images, metadata={"comment": "endoview export"})
    with av.open(str(src_path)) as c:
        assert c.metadata.get("title") == "Patient Jane Doe"  # the check below is real
    with av.open(str(plain)) as c:
        assert "title" not in c.metadata and "creation_time" not in c.metadata
        assert "creation_time" not in c.streams.video[0].metadata
    with av.open(str(tagged)) as c:
        assert c.metadata.get("comment") == "endoview export" and "title" not in c.metadata


def test_mpeg4_fallback_without_libx264(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, media) -> None:
    import engine.outputs.writer as writer_mod

    real = writer_mod.encoder_available
    monkeypatch.setattr(writer_mod, "encoder_available", lambda name: name != "libx264" and real(name))
    with caplog.at_level(logging.WARNING, logger="engine.outputs.writer"):
        path = _write(tmp_path / "fallback.mp4", [media.index_image(i) for i in range(12)])
    assert "libx264 is not in this FFmpeg build" in caplog.text
    with open_source(path) as src:
        assert src.info.codec == "mpeg4" and src.info.frame_count == 12 and src.info.rate == NTSC
        assert [media.read_index(f.image) for f in src] == list(range(12))


def test_bad_input_is_a_value_error(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "x.mp4", 64, 48, 30) as writer:
        writer.write(_frames(1)[0])
        with pytest.raises(ValueError, match=r"expected a 48x64x3 uint8 BGR image"):
            writer.write(np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / "y.mp4", 0, 48, 30)


def test_to_fraction() -> None:
    assert to_fraction(29.97) == NTSC
    assert to_fraction(59.94) == Fraction(60000, 1001)
    assert to_fraction(25.0) == 25
    assert to_fraction(12.5) == Fraction(25, 2)
    assert to_fraction(NTSC) is NTSC
    with pytest.raises(ValueError):
        to_fraction(0)


def test_fragmented_mode_writes_in_place_and_an_abort_keeps_it(tmp_path: Path, media) -> None:
    final = tmp_path / "rec.mp4"
    writer = VideoWriter(final, 160, 120, 30, fragmented=True)
    for i in range(30):
        writer.write(media.index_image(i))
    assert final.exists() and not partial_path(final).exists()  # on disk as it is written
    writer.abort()  # what a failure does: the frames written so far stay playable
    assert list(tmp_path.iterdir()) == [final]
    with open_source(final) as src:
        indices = [media.read_index(f.image) for f in src]
    assert 15 <= len(indices) <= 30 and indices == list(range(len(indices)))
    with av.open(str(final)) as c:
        keys = sum(p.is_keyframe for p in c.demux(video=0) if p.size)
    assert keys >= 2  # a keyframe (a new fragment) every half second


def test_fragmented_mode_refuses_or_replaces_an_existing_file(tmp_path: Path) -> None:
    final = tmp_path / "rec.mp4"
    final.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match=rf"^recording exists: {final}$"):
        VideoWriter(final, 64, 48, 30, fragmented=True, what="recording", force_hint=None)
    VideoWriter(final, 64, 48, 30, fragmented=True, force=True).close()  # no frame: nothing replaced
    assert final.read_bytes() == b"old"
    _write(final, _frames(3), fragmented=True, force=True)
    with open_source(final) as src:
        assert src.info.frame_count == 3
