"""Sources: files in every container, exact seeking, damaged files, folders, images, devices."""

from __future__ import annotations

import logging
import os
import wave
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.errors import DeviceLostError, SourceError
from engine.sources import open_source
from engine.sources.base import natural_key
from engine.sources.device import DeviceSource
from engine.sources.file import FileSource
from engine.sources.v4l2 import DeviceDescription, list_devices

N = 40
EXTS = ["avi", "mkv", "mov", "mp4", "mpg"]
RATES = {"mp4": Fraction(30), "avi": Fraction(25), "mkv": Fraction(30000, 1001), "mov": Fraction(24), "mpg": Fraction(25)}


# --------------------------------------------------------------------------------------------
# files


@pytest.mark.parametrize("ext", EXTS)
def test_each_container_opens_with_right_count_and_indices(clips: dict[str, Path], media, ext: str) -> None:
    with open_source(clips[ext]) as src:
        assert isinstance(src, FileSource)
        info = src.info
        assert (info.kind, info.width, info.height) == ("file", 160, 120)
        assert info.frame_count == N
        assert info.rate == RATES[ext]
        assert info.fps == pytest.approx(float(RATES[ext]))
        assert info.seekable and not info.still
        frames = list(src)
    assert [f.index for f in frames] == list(range(N))
    assert [media.read_index(f.image) for f in frames] == list(range(N))
    assert frames[0].timestamp == 0.0  # also for mpg, whose stream starts at 0.54 s
    assert frames[10].timestamp == pytest.approx(10 / float(RATES[ext]), abs=1e-3)
    img = frames[3].image
    assert img.dtype == np.uint8 and img.shape == (120, 160, 3) and img.flags.c_contiguous
    assert src.stopped_early is None


@pytest.mark.parametrize("ext", EXTS)
def test_exact_seek_matches_sequential_decoding(clips: dict[str, Path], media, ext: str) -> None:
    with open_source(clips[ext]) as src:
        sequential = [f.image for f in src]
        for i in [0, 5, 9, 10, 11, 17, 25, 39, 38, 1, 20, 0, 39]:
            src.seek(i)
            frame = src.read()
            assert frame is not None and frame.index == i, ext
            assert np.array_equal(frame.image, sequential[i]), f"{ext}: frame {i} differs"
        # step back one frame at a time, then forward
        src.seek(30)
        for i in range(30, 20, -1):
            src.seek(i)
            assert media.read_index(src.read().image) == i
        src.seek(12)
        assert [media.read_index(src.read().image) for _ in range(5)] == [12, 13, 14, 15, 16]


def test_seek_out_of_range_names_the_file(clips: dict[str, Path]) -> None:
    with open_source(clips["mp4"]) as src:
        with pytest.raises(SourceError, match=r"cannot seek .*clip\.mp4 to frame 40: frames are 0\.\.39"):
            src.seek(40)
        with pytest.raises(SourceError, match="to frame -1"):
            src.seek(-1)


def test_loop_restarts_and_keeps_counting(clips: dict[str, Path], media) -> None:
    with open_source(clips["mkv"], loop=True) as src:
        frames = [src.read() for _ in range(2 * N + 5)]
    assert [f.index for f in frames] == list(range(2 * N + 5))
    assert [media.read_index(f.image) for f in frames] == [i % N for i in range(2 * N + 5)]
    assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:]))


def test_close_is_idempotent_and_read_after_close_is_none(clips: dict[str, Path]) -> None:
    src = open_source(clips["mp4"])
    src.close()
    src.close()
    assert src.read() is None


def test_missing_path() -> None:
    with pytest.raises(SourceError, match=r"^video not found: /no/such/video\.mp4$"):
        open_source("/no/such/video.mp4")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"cannot open video '.*x\.mp4': file is empty"):
        open_source(path)


def test_text_file_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError, match=r"cannot open video '.*notes\.mp4': not a video FFmpeg can read"):
        open_source(path)


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "sound.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 4000)
    with pytest.raises(SourceError, match=r"cannot open video '.*sound\.wav': file has no video stream"):
        open_source(path)


def test_unsupported_codec(tmp_path: Path, clips: dict[str, Path]) -> None:
    path = tmp_path / "odd.avi"
    path.write_bytes(clips["avi"].read_bytes().replace(b"FMP4", b"ZZZ9"))
    with pytest.raises(SourceError, match=r"codec 'ZZZ9' is not supported by this FFmpeg build"):
        open_source(path)


def test_truncated_mp4_without_index(tmp_path: Path, clips: dict[str, Path]) -> None:
    data = clips["mp4"].read_bytes()  # moov at the end: half a file has no index at all
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"cut\.mp4': the file is incomplete \(its 'moov' index is missing"):
        open_source(path)


@pytest.mark.parametrize("ext", ["mkv", "avi", "mpg", "faststart.mp4"])
def test_truncated_file_decodes_what_it_can(tmp_path: Path, media, ext: str) -> None:
    options = {"movflags": "+faststart"} if ext.startswith("faststart") else None
    full = media.make_clip(tmp_path / f"full.{ext}", 60, ext=ext.split(".")[-1], options=options)
    data = full.read_bytes()
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data[: len(data) // 2])
    with open_source(path) as src:
        frames = list(src)
        assert 0 < len(frames) < 60
        assert [media.read_index(f.image) for f in frames[:5]] == [0, 1, 2, 3, 4]
        if src.info.frame_count and src.info.frame_count > len(frames) + 2:
            assert src.stopped_early and src.stopped_early.startswith("decoding stopped at frame")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize("where", ["data", "anywhere"])
def test_bit_flipped_file_never_leaks_av_errors(tmp_path: Path, clips: dict[str, Path], ext: str, where: str) -> None:
    data = bytearray(clips[ext].read_bytes())
    rng = np.random.default_rng(7)
    low = len(data) // 3 if where == "data" else 0
    for pos in rng.integers(low, len(data), 60):
        data[pos] ^= 0xA5
    path = tmp_path / f"flipped.{ext}"
    path.write_bytes(bytes(data))
    try:
        src = open_source(path)
    except SourceError as err:
        assert "flipped" in str(err)
        return
    with src:
        frames = list(src)
        for i in (0, 3):  # seeking a damaged file may fail, but only with SourceError
            try:
                src.seek(i)
                src.read()
            except SourceError:
                pass
    assert len(frames) <= N + 5
    if src.stopped_early:
        assert src.stopped_early.startswith("decoding stopped at frame")


def _write_raw(path: Path, fmt: str, codec: str, pix_fmt: str, frames: list[np.ndarray], in_fmt: str) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=10)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format=in_fmt)
            frame.pts = i
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return path


@pytest.mark.parametrize(
    "pix_fmt,in_fmt,make",
    [
        ("gray", "gray", lambda i: np.full((48, 64), 40 + 50 * i, np.uint8)),
        ("gray16le", "gray16le", lambda i: np.full((48, 64), (40 + 50 * i) * 257, np.uint16)),
        ("bgra", "bgra", lambda i: np.dstack([np.full((48, 64, 3), 40 + 50 * i, np.uint8), np.full((48, 64), 7, np.uint8)])),
    ],
)
def test_gray_16bit_and_alpha_videos_become_8bit_bgr(tmp_path: Path, pix_fmt: str, in_fmt: str, make) -> None:
    path = _write_raw(tmp_path / f"{pix_fmt}.mkv", "matroska", "ffv1", pix_fmt, [make(i) for i in range(3)], in_fmt)
    with open_source(path) as src:
        frames = list(src)
    assert len(frames) == 3
    for i, f in enumerate(frames):
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        assert abs(int(f.image[10, 10, 1]) - (40 + 50 * i)) <= 2


# --------------------------------------------------------------------------------------------
# folders and images


def _png(path: Path, value: int, shape=(24, 32, 3), dtype=np.uint8) -> Path:
    cv2.imwrite(str(path), np.full(shape, value, dtype))
    return path


def test_natural_key() -> None:
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png"]
    assert sorted(names, key=natural_key) == ["IMG1.png", "img2.png", "img2b.png", "img10.png"]


def test_folder_source_sorts_naturally_and_skips_junk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for n in (10, 2, 1):
        _png(tmp_path / f"frame{n}.png", n * 10)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "frame5.jpg").write_bytes(b"\xff\xd8 broken jpeg")  # sorts between 2 and 10
    (tmp_path / "sub").mkdir()
    with caplog.at_level(logging.WARNING, logger="engine.sources.images"):
        with open_source(tmp_path, fps=5) as src:
            assert (src.info.kind, src.info.still, src.info.fps, src.info.rate) == ("folder", True, 5.0, Fraction(5))
            assert (src.info.width, src.info.height, src.info.frame_count) == (32, 24, 4)
            frames = list(src)
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 20, 100]
    assert [f.index for f in frames] == [0, 1, 3]  # index = position in the sorted list
    assert frames[2].timestamp == pytest.approx(3 / 5)
    assert any("frame5.jpg" in r.getMessage() for r in caplog.records)


def test_folder_default_fps_seek_and_loop(tmp_path: Path) -> None:
    for n in range(3):
        _png(tmp_path / f"{n}.png", 50 + n)
    with open_source(tmp_path, loop=True) as src:
        assert src.info.fps == 1.0
        src.seek(2)
        assert [int(src.read().image[0, 0, 0]) for _ in range(4)] == [52, 50, 51, 52]


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(SourceError, match=r"no images in folder '.*'"):
        open_source(tmp_path)


def test_single_image_and_conversions(tmp_path: Path) -> None:
    gray16 = tmp_path / "g16.png"
    cv2.imwrite(str(gray16), np.full((20, 30), 300 * 257 // 2, np.uint16))
    rgba = tmp_path / "a.png"
    cv2.imwrite(str(rgba), np.dstack([np.full((20, 30, 3), 99, np.uint8), np.zeros((20, 30), np.uint8)]))
    for path, value in ((gray16, (300 * 257 // 2) >> 8), (rgba, 99)):
        with open_source(path) as src:
            assert (src.info.kind, src.info.still, src.info.frame_count) == ("image", True, 1)
            frames = list(src)
        assert len(frames) == 1
        img = frames[0].image
        assert img.shape == (20, 30, 3) and img.dtype == np.uint8 and int(img[5, 5, 2]) == value


def test_unreadable_single_image(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(b"not a png")
    with pytest.raises(SourceError, match=r"cannot read image '.*bad\.png'"):
        open_source(path)


# --------------------------------------------------------------------------------------------
# capture devices (a fake cv2.VideoCapture)


class FakeCamera:
    """What the device really supports and does; several captures may open it over time."""

    def __init__(self, sizes=((640, 480), (1280, 720)), fps=30.0, fourccs=("MJPG", "YUYV")) -> None:
        self.sizes, self.fps, self.fourccs = sizes, fps, fourccs
        self.present = True
        self.size = sizes[0]
        self.fourcc = fourccs[0]
        self.script: list[str] = []  # per read: "ok" (default when empty) or "fail"
        self.frames = 0


class FakeCapture:
    def __init__(self, camera: FakeCamera | None) -> None:
        self.camera = camera
        self.opened = camera is not None and camera.present
        self.want: dict[int, float] = {}

    def isOpened(self) -> bool:  # noqa: N802 (cv2 API)
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        cam = self.camera
        if prop == cv2.CAP_PROP_FOURCC:
            text = "".join(chr((int(value) >> (8 * i)) & 0xFF) for i in range(4))
            if text in cam.fourccs:
                cam.fourcc = text
        elif prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            self.want[prop] = value
            w = self.want.get(cv2.CAP_PROP_FRAME_WIDTH, cam.size[0])
            h = self.want.get(cv2.CAP_PROP_FRAME_HEIGHT, cam.size[1])
            cam.size = min(cam.sizes, key=lambda s: abs(s[0] - w) + abs(s[1] - h))
        return True

    def get(self, prop: int) -> float:
        cam = self.camera
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(cam.size[0])
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(cam.size[1])
        if prop == cv2.CAP_PROP_FPS:
            return cam.fps
        if prop == cv2.CAP_PROP_FOURCC:
            return float(cv2.VideoWriter_fourcc(*cam.fourcc))
        return 0.0

    def read(self):
        cam = self.camera
        step = cam.script.pop(0) if cam.script else "ok"
        if not self.opened or not cam.present or step == "fail":
            return False, None
        cam.frames += 1
        w, h = cam.size
        return True, np.full((h, w, 3), cam.frames % 256, np.uint8)

    def release(self) -> None:
        self.opened = False


@pytest.fixture()
def camera() -> FakeCamera:
    return FakeCamera()


@pytest.fixture()
def factory(camera: FakeCamera):
    opened = []

    def make(target):
        cap = FakeCapture(camera if target in (0, "/dev/video0") else None)
        opened.append((target, cap))
        return cap

    make.opened = opened
    return make


def test_device_opens_reads_and_reports_actual_vs_requested(factory, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.sources.device"):
        src = open_source(0, width=1920, height=1080, fps=60, pixel_format="YUYV", capture_factory=factory)
    with src:
        assert isinstance(src, DeviceSource)
        info = src.info
        assert info.kind == "device" and not info.seekable and not info.still and info.frame_count is None
        assert (info.width, info.height, info.fps, info.pixel_format) == (1280, 720, 30.0, "YUYV")
        assert info.requested == {"width": 1920, "height": 1080, "fps": 60, "pixel_format": "YUYV"}
        frames = [src.read() for _ in range(3)]
        assert [f.index for f in frames] == [0, 1, 2]
        assert frames[0].image.shape == (720, 1280, 3)
        assert 0 <= frames[0].timestamp <= frames[2].timestamp < 5
        with pytest.raises(SourceError, match="cannot seek"):
            src.seek(0)
    text = caplog.text
    assert "asked for width=1920, the device gives 1280" in text
    assert "asked for fps=60" in text
    assert "pixel_format" not in text  # YUYV was granted


def test_device_lost_after_repeated_failures_then_reopen(camera: FakeCamera, factory) -> None:
    src = DeviceSource("/dev/video0", capture_factory=factory, max_failures=5, lost_after_s=0.0)
    assert src.read().index == 0
    camera.script = ["fail", "fail", "ok"]  # a short glitch is not a loss
    assert src.read().index == 1
    camera.present = False
    with pytest.raises(DeviceLostError, match=r"^capture device /dev/video0 stopped delivering frames$"):
        src.read()
    with pytest.raises(SourceError, match=r"capture device /dev/video0"):
        src.reopen()  # still unplugged
    camera.present = True
    src.reopen()
    assert src.read().index == 2  # counting continues across reopen
    src.close()
    src.close()
    assert all(not cap.opened for _, cap in factory.opened)


def test_device_lost_waits_the_grace_period(camera: FakeCamera, factory) -> None:
    import time

    src = DeviceSource(0, capture_factory=factory, max_failures=3, lost_after_s=0.3)
    camera.present = False
    start = time.monotonic()
    with pytest.raises(DeviceLostError):
        src.read()
    assert time.monotonic() - start >= 0.25
    src.close()


def test_device_resolution_change_mid_stream(camera: FakeCamera, factory) -> None:
    with DeviceSource(0, capture_factory=factory) as src:
        assert src.read().image.shape == (480, 640, 3)
        camera.size = (1280, 720)
        frame = src.read()
        assert frame.image.shape == (720, 1280, 3) and frame.index == 1
        assert src.current_size == (1280, 720)


def test_missing_device_lists_what_exists(factory, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.sources.device as device

    monkeypatch.setattr(device, "list_devices", lambda: [])
    with pytest.raises(SourceError, match=r"capture device /dev/video3 not found; no capture devices were found"):
        open_source("/dev/video3", capture_factory=factory)
    found = [DeviceDescription("/dev/video0", 0, "USB3 Capture HDMI"), DeviceDescription("/dev/video2", 2, "")]
    monkeypatch.setattr(device, "list_devices", lambda: found)
    with pytest.raises(SourceError, match=r"devices found: /dev/video0 \(USB3 Capture HDMI\), /dev/video2$"):
        open_source(3, capture_factory=factory)


def test_missing_real_device() -> None:
    if os.path.exists("/dev/video63"):
        pytest.skip("/dev/video63 exists on this machine")
    with pytest.raises(SourceError, match=r"capture device /dev/video63 not found"):
        open_source(63)


def test_list_devices_reads_sysfs_names(tmp_path: Path) -> None:
    dev, sys_dir = tmp_path / "dev", tmp_path / "sys"
    dev.mkdir()
    for n, name in ((0, "HD Grabber"), (10, "Webcam"), (2, None)):
        (dev / f"video{n}").write_bytes(b"")
        if name:
            (sys_dir / f"video{n}").mkdir(parents=True)
            (sys_dir / f"video{n}" / "name").write_text(name + "\n")
    found = list_devices(str(dev), str(sys_dir))
    assert [(d.path.rsplit("/", 1)[1], d.index, d.name) for d in found] == [
        ("video0", 0, "HD Grabber"), ("video2", 2, ""), ("video10", 10, "Webcam"),
    ]
    assert str(found[0]).endswith("video0 (HD Grabber)")
    assert isinstance(list_devices(), list)


def test_index_image_round_trip(media) -> None:
    assert [media.read_index(media.index_image(i)) for i in range(0, 128, 7)] == list(range(0, 128, 7))
