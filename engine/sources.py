"""Frame sources: video files, capture devices, image folders, single images and the demo clip.

``open_source(spec)`` is the one factory the pipeline and the GUI call; each source yields
:class:`engine.types.Frame` objects (H x W x 3 uint8 BGR, C-contiguous) and describes itself
with a :class:`SourceInfo`. Every failure a user can cause is raised as
:class:`engine.errors.SourceError` (or :class:`DeviceLostError`); no ``av.error`` escapes.
"""

from __future__ import annotations

import abc
import fractions
import glob
import logging
import os
import re
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import cv2
import numpy as np

from engine.errors import DeviceLostError, SourceError
from engine.types import Frame

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2",
     ".pbm", ".pgm", ".ppm", ".pnm"}
)


@dataclass(frozen=True)
class SourceInfo:
    """What a source delivers. For devices, width/height/fps are what the device actually gives
    and ``requested`` is what was asked for."""

    kind: str  # "file" | "device" | "folder" | "image" | "demo"
    name: str
    width: int
    height: int
    fps: float
    rate: fractions.Fraction
    frame_count: int | None
    seekable: bool
    still: bool
    codec: str | None = None
    pixel_format: str | None = None
    requested: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceMode:
    """One capture format a device offers: FOURCC, size and the frame rates listed for it."""

    pixel_format: str
    width: int
    height: int
    fps: tuple[float, ...] = ()


@dataclass(frozen=True)
class DeviceDescription:
    """A V4L2 capture device found under /dev."""

    path: str
    index: int
    name: str
    modes: tuple[DeviceMode, ...] = ()

    def __str__(self) -> str:
        return f"{self.path} ({self.name})" if self.name else self.path


# --------------------------------------------------------------------------------------------
# base class and helpers


class Source(abc.ABC):
    """A stream of frames. A context manager; ``close()`` may be called any number of times."""

    info: SourceInfo
    stopped_early: str | None = None

    @abc.abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end of the stream."""

    def seek(self, index: int) -> None:
        """Make the next :meth:`read` return frame ``index``."""
        raise SourceError(f"{self.info.name} cannot seek (it is a live source)")

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file or device."""

    def _check_seek(self, index: int) -> int:
        if not self.info.seekable:
            raise SourceError(f"{self.info.name} cannot seek (it is a live source)")
        index = int(index)
        count = self.info.frame_count
        if index < 0 or (count is not None and index >= count):
            last = "?" if count is None else count - 1
            raise SourceError(f"cannot seek {self.info.name} to frame {index}: frames are 0..{last}")
        return index

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        i = getattr(self, "info", None)
        return f"<{type(self).__name__} {i.name!r} {i.width}x{i.height}>" if i else super().__repr__()


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Convert gray / BGRA / 16-bit / float images to H x W x 3 uint8 BGR, C-contiguous."""
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        elif np.issubdtype(image.dtype, np.floating):
            image = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        else:
            image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"cannot convert an image of shape {image.shape} to BGR")
    return np.ascontiguousarray(image)


def _rate_of(fps: float) -> fractions.Fraction:
    from engine.writer import to_fraction

    return to_fraction(fps)


def _av_reason(err: BaseException) -> str:
    """A short reason from an FFmpeg error, without PyAV's errno prefix and file name."""
    reason = getattr(err, "strerror", None) or str(err)
    return str(reason).rstrip(".")


# --------------------------------------------------------------------------------------------
# video files


class FileSource(Source):
    """A video file read with PyAV: threaded decoding, exact seeking, robust to damaged files.

    Frame ``index`` is derived from the pts: ``round((pts - first_pts) * time_base * rate)``
    with ``rate`` the stream's average frame rate, so files that start at a non-zero time still
    count from 0. ``timestamp`` is seconds since the first frame, from the pts.
    """

    def __init__(self, path: str | os.PathLike, *, loop: bool = False) -> None:
        self.path = Path(path)
        self.loop = loop
        self.stopped_early = None
        self._container: Any = None
        label = f"cannot open video '{self.path}'"
        if not self.path.exists():
            raise SourceError(f"video not found: {self.path}")
        if self.path.is_dir():
            raise SourceError(f"{label}: it is a folder")
        if self.path.stat().st_size == 0:
            raise SourceError(f"{label}: file is empty")
        try:
            self._container = av.open(str(self.path), "r")
        except av.FFmpegError as err:
            if _mp4_without_index(self.path):
                raise SourceError(
                    f"{label}: the file is incomplete (its 'moov' index is missing; the recording "
                    "or copy was probably interrupted)"
                ) from err
            raise SourceError(
                f"{label}: not a video FFmpeg can read, or damaged ({_av_reason(err)})"
            ) from err
        except OSError as err:
            raise SourceError(f"{label}: {err.strerror or err}") from err
        try:
            self._setup(label)
        except BaseException:
            self.close()
            raise

    def _setup(self, label: str) -> None:
        streams = self._container.streams.video
        if not streams:
            tag = _video_codec_tag(self.path, mkv_only=True)
            if tag:
                raise SourceError(
                    f"{label}: video codec '{tag}' is not supported by this FFmpeg build "
                    "(convert it to H.264 first)"
                )
            raise SourceError(f"{label}: file has no video stream")
        stream = streams[0]
        self._stream = stream
        codec_name = stream.codec_context.name if stream.codec_context is not None else None
        if stream.codec_context is None or codec_name in (None, "", "none"):
            tag = _video_codec_tag(self.path) or "unknown"
            raise SourceError(
                f"{label}: video codec '{tag}' is not supported by this FFmpeg build "
                "(convert it to H.264 first)"
            )
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 0
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or rate <= 0:
            logger.warning("%s: no frame rate in the file; assuming 30 fps", self.path)
            rate = fractions.Fraction(30)
        self._rate = fractions.Fraction(rate)
        self._tb = fractions.Fraction(stream.time_base) if stream.time_base else fractions.Fraction(1, 90000)
        self._origin: int | None = None  # pts of frame 0
        self._last_index = -1
        self._loop_offset = 0
        self._pending: list[Frame] = []
        self._packets = self._decode()
        first = self._next_frame()
        if first is None:
            reason = self.stopped_early or "no frame could be decoded"
            self.stopped_early = None
            raise SourceError(f"{label}: no decodable video ({reason})")
        self._pending.append(first)

        # Frame count: the container's count when it has one (mp4/mov sample tables, avi
        # headers); otherwise estimated from the duration (mkv, mpg, ...).
        count: int | None = stream.frames or None
        self._count_exact = count is not None
        if count is None:
            duration = None
            if stream.duration:
                duration = float(stream.duration * self._tb)
            elif self._container.duration:
                duration = self._container.duration / av.time_base
                if stream.start_time is not None:
                    duration -= max(0.0, float(stream.start_time * self._tb) - (self._container.start_time or 0) / av.time_base)
            if duration:
                count = max(1, round(duration * float(self._rate)))
                logger.debug("%s: frame count %d estimated from the duration", self.path, count)
        self._count = count
        fmt = first.image
        self.info = SourceInfo(
            kind="file",
            name=str(self.path),
            width=int(stream.codec_context.width or fmt.shape[1]),
            height=int(stream.codec_context.height or fmt.shape[0]),
            fps=float(self._rate),
            rate=self._rate,
            frame_count=count,
            seekable=bool(count),
            still=False,
            codec=stream.codec_context.name,
            pixel_format=stream.codec_context.pix_fmt,
        )
        logger.info(
            "opened %s: %s %dx%d @ %.3f fps, %s frames",
            self.path, self.info.codec, self.info.width, self.info.height, self.info.fps,
            count if count is not None else "unknown",
        )

    # -- decoding -----------------------------------------------------------------------------

    def _decode(self) -> Iterator[Any]:
        """Demux and decode, skipping packets the decoder rejects; stops at the first demux error."""
        bad_packets = 0  # in a row
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.InvalidDataError as err:
                    bad_packets += 1
                    logger.debug("%s: skipping a damaged packet: %s", self.path, err)
                    if bad_packets > 50:
                        self._stop(f"too many damaged packets in a row ({_av_reason(err)})")
                        return
                    continue
                bad_packets = 0
                yield from frames
        except av.EOFError:
            return
        except av.FFmpegError as err:
            self._stop(_av_reason(err))
        except OSError as err:
            self._stop(err.strerror or str(err))

    def _stop(self, reason: str) -> None:
        at = self._last_index + 1
        seconds = at / float(self._rate)
        self.stopped_early = f"decoding stopped at frame {at} ({seconds:.2f} s): {reason}"
        logger.warning("%s: %s", self.path, self.stopped_early)

    def _to_bgr(self, vf: Any) -> np.ndarray:
        fmt = vf.format.name
        if (
            fmt == "yuv420p"
            and vf.width % 2 == 0
            and vf.height % 2 == 0
            and int(vf.colorspace) in (2, 5, 6)  # unspecified, BT.470BG, SMPTE 170M (BT.601)
            and int(vf.color_range) != 2  # not full range
        ):
            # cv2's I420 -> BGR (BT.601, limited) is ~1.3x faster than swscale here.
            return cv2.cvtColor(vf.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
        return to_bgr8(vf.to_ndarray(format="bgr24"))

    def _next_frame(self) -> Frame | None:
        try:
            vf = next(self._packets)
        except StopIteration:
            return None
        except av.FFmpegError as err:  # defensive: _decode catches these already
            self._stop(_av_reason(err))
            return None
        pts = vf.pts
        if pts is None:
            index = self._last_index + 1
            timestamp = index / float(self._rate)
        else:
            if self._origin is None:
                self._origin = pts
            seconds = (pts - self._origin) * self._tb
            index = round(seconds * self._rate)
            timestamp = float(seconds)
        image = self._to_bgr(vf)
        return Frame(index, timestamp, image, time.perf_counter())

    def read(self) -> Frame | None:
        if self._container is None:
            return None
        if self._pending:
            frame = self._pending.pop(0)
        else:
            frame = self._next_frame()
        if frame is None:
            self._check_complete()
            if self.loop and self.stopped_early is None and self._last_index >= 0:
                period = self._last_index + 1
                self._seek_exact(0)
                self._loop_offset += period
                self._last_index = -1
                frame = self._pending.pop(0) if self._pending else self._next_frame()
            if frame is None:
                return None
        self._last_index = frame.index
        if self._loop_offset:
            offset_s = self._loop_offset / float(self._rate)
            return Frame(frame.index + self._loop_offset, frame.timestamp + offset_s, frame.image, frame.arrival)
        return frame

    def _check_complete(self) -> None:
        """At the end: flag a file that gave clearly fewer frames than it says it holds."""
        got, count = self._last_index + 1, self._count
        if self.stopped_early is not None or not count or got <= 0:
            return
        # exact counts must match; estimates (from the duration) get some slack
        slack = 0 if self._count_exact else max(2, round(0.05 * count))
        if got + slack < count:
            what = "" if self._count_exact else "about "
            self._stop(
                f"the last decodable frame is {got - 1} but the file should have {what}{count} "
                "frames (it is truncated or damaged)"
            )

    # -- seeking ------------------------------------------------------------------------------

    def seek(self, index: int) -> None:
        """Exact seek: the next read() returns frame ``index`` (loop offset reset)."""
        index = self._check_seek(index)
        self._loop_offset = 0
        self._seek_exact(index)

    def _seek_exact(self, index: int) -> None:
        origin = self._origin or 0
        start = self._stream.start_time
        floor = origin if start is None else min(origin, start)
        target = origin + round(fractions.Fraction(index) / self._rate / self._tb)
        # Seek to the keyframe at/before the target and decode forward to it. When the demuxer
        # lands after the target, or where nothing decodes (B-frame reordering, inexact indexes
        # as in MPEG-PS, mis-flagged keyframes in AVI), back off further, finally to the start.
        tried = set()
        for back_s in (0, 1, 5, 30, None):
            offset = floor if back_s is None else max(floor, target - round(back_s / self._tb))
            if offset in tried:
                continue
            tried.add(offset)
            self.stopped_early = None
            try:
                self._container.seek(offset, stream=self._stream, backward=True, any_frame=False)
            except av.FFmpegError as err:
                raise SourceError(f"cannot seek {self.path} to frame {index}: {_av_reason(err)}") from err
            self._packets = self._decode()
            self._pending = []
            self._last_index = index - 1
            frame = self._next_frame()
            if (frame is None or frame.index > index) and offset != floor:
                continue
            while frame is not None and frame.index < index:
                frame = self._next_frame()
            if frame is None:
                break
            if frame.index != index:
                logger.debug("%s: frame %d is missing; next is %d", self.path, index, frame.index)
            self._pending = [frame]
            return
        raise SourceError(f"cannot seek {self.path} to frame {index}: it could not be decoded")

    def close(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            self._packets = iter(())
            try:
                container.close()
            except av.FFmpegError as err:
                logger.debug("closing %s: %s", self.path, err)


def _mp4_without_index(path: Path) -> bool:
    """True for an MP4/MOV that starts like one but has no top-level 'moov' box (cut short)."""
    boxes = []
    try:
        size_total = path.stat().st_size
        with open(path, "rb") as f:
            pos = 0
            while pos + 8 <= size_total and len(boxes) < 1000:
                f.seek(pos)
                size, kind = struct.unpack(">I4s", f.read(8))
                if size == 1:
                    size = struct.unpack(">Q", f.read(8))[0]
                elif size == 0:
                    size = size_total - pos
                boxes.append(kind)
                if size < 8:
                    break
                pos += size
    except (OSError, struct.error):
        return False
    return bool(boxes) and boxes[0] == b"ftyp" and b"moov" not in boxes


_TAG_PATTERNS = (
    re.compile(rb"strh.{4}vids(.{4})", re.DOTALL),  # AVI stream header handler
    re.compile(rb"stsd.{12}(.{4})", re.DOTALL),  # MP4/MOV sample description
)
_MKV_VIDEO_CODEC = re.compile(rb"\x86[\x80-\xff](V_[A-Za-z0-9/_.\-]+)")


def _video_codec_tag(path: Path, *, mkv_only: bool = False) -> str | None:
    """The video codec name/FOURCC written in the file's header, for error messages."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    patterns = () if mkv_only else _TAG_PATTERNS
    for pattern in (*patterns, _MKV_VIDEO_CODEC):
        match = pattern.search(head)
        if match:
            tag = match.group(1).decode("latin-1").strip()
            if tag and tag.isprintable():
                return tag
    return None


# --------------------------------------------------------------------------------------------
# image folders and single images


def natural_key(name: str) -> list[Any]:
    """Sort key that puts "img2" before "img10"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file to BGR uint8 (any depth/channels); None when it cannot be read."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as err:
        logger.warning("cannot read image %s: %s", path, err.strerror or err)
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    if image is None:
        return None
    return to_bgr8(image)


class ImageSource(Source):
    """A sorted list of still images (a folder, or one image file), ``fps`` frames per second."""

    def __init__(
        self, paths: list[Path], *, name: str, kind: str, fps: float | None = None, loop: bool = False
    ) -> None:
        self.paths = list(paths)
        self.loop = loop
        self.stopped_early = None
        self._pos = 0
        self._loops = 0
        fps = float(fps) if fps else 1.0
        first = None
        for path in self.paths:
            first = read_image(path)
            if first is not None:
                break
            if len(self.paths) > 1:  # one image: the error below says it
                logger.warning("skipping unreadable image %s", path)
        if first is None:
            what = "image" if kind == "image" else "images in folder"
            raise SourceError(f"cannot read {what} '{name}': not an image file OpenCV can decode")
        self.info = SourceInfo(
            kind=kind, name=name, width=first.shape[1], height=first.shape[0], fps=fps,
            rate=_rate_of(fps), frame_count=len(self.paths), seekable=True, still=True,
        )

    def read(self) -> Frame | None:
        n = len(self.paths)
        while True:
            if self._pos >= n:
                if not self.loop:
                    return None
                self._pos = 0
                self._loops += 1
            index = self._pos + self._loops * n
            path = self.paths[self._pos]
            self._pos += 1
            image = read_image(path)
            if image is None:
                logger.warning("skipping unreadable image %s", path)
                continue
            return Frame(index, index / self.info.fps, image, time.perf_counter())

    def seek(self, index: int) -> None:
        """Next read() returns image ``index`` (or the next readable one after it)."""
        self._pos = self._check_seek(index)
        self._loops = 0

    def close(self) -> None:
        self._pos = len(self.paths)
        self.loop = False


class FolderSource(ImageSource):
    """All images in a folder (not recursive), sorted naturally; other files are skipped."""

    def __init__(self, folder: str | os.PathLike, *, fps: float | None = None, loop: bool = False) -> None:
        folder = Path(folder)
        try:
            entries = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        except OSError as err:
            raise SourceError(f"cannot read folder '{folder}': {err.strerror or err}") from err
        if not entries:
            raise SourceError(
                f"no images in folder '{folder}' (expected {', '.join(sorted(IMAGE_EXTENSIONS)[:6])} ...)"
            )
        entries.sort(key=lambda p: natural_key(p.name))
        super().__init__(entries, name=str(folder), kind="folder", fps=fps, loop=loop)


# --------------------------------------------------------------------------------------------
# capture devices

CaptureFactory = Callable[[int | str], Any]


def _fourcc_str(value: float) -> str | None:
    code = int(value)
    if code <= 0:
        return None
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() else None


def _default_capture(target: int | str) -> Any:
    backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    return cv2.VideoCapture(target, backend)


class DeviceSource(Source):
    """A live capture device (V4L2/UVC grabbers, webcams) through ``cv2.VideoCapture``.

    ``read()`` blocks until a frame arrives. After ``max_failures`` failed reads in a row that
    span at least ``lost_after_s`` seconds it raises :class:`DeviceLostError`; the caller may
    then call :meth:`reopen` (with backoff) until the device is back. Index counts delivered
    frames (across reopens); timestamp is monotonic seconds since the source was opened.
    """

    def __init__(
        self,
        device: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        pixel_format: str | None = None,
        capture_factory: CaptureFactory | None = None,
        max_failures: int = 5,
        lost_after_s: float = 1.0,
    ) -> None:
        self.target, self.name = _device_target(device)
        self.requested = {
            k: v for k, v in
            {"width": width, "height": height, "fps": fps, "pixel_format": pixel_format}.items()
            if v is not None
        }
        if pixel_format is not None and len(pixel_format) != 4:
            raise SourceError(f"pixel format for {self.name} must be a FOURCC like MJPG or YUYV, not {pixel_format!r}")
        self._factory = capture_factory or _default_capture
        self.max_failures = max_failures
        self.lost_after_s = lost_after_s
        self.stopped_early = None
        self._cap: Any = None
        self._count = 0
        self._t0 = time.monotonic()
        self._pending: np.ndarray | None = None
        self._open()

    def _open(self) -> None:
        try:
            cap = self._factory(self.target)
        except cv2.error as err:
            raise SourceError(f"capture device {self.name} could not be opened: {err}") from err
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceError(self._missing_message())
        self._cap = cap
        req = self.requested
        if "pixel_format" in req:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*req["pixel_format"]))
        if "width" in req:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(req["width"]))
        if "height" in req:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(req["height"]))
        if "fps" in req:
            cap.set(cv2.CAP_PROP_FPS, float(req["fps"]))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        fourcc = _fourcc_str(cap.get(cv2.CAP_PROP_FOURCC) or 0)
        if width <= 0 or height <= 0:  # some backends report the size only once streaming
            image = self._read_once()
            if image is None:
                self.close()
                raise SourceError(f"capture device {self.name} opened but delivers no frames")
            self._pending = image
            height, width = image.shape[:2]
        if fps <= 0 or not np.isfinite(fps):
            fps = float(req.get("fps") or 30.0)
            logger.info("%s does not report its frame rate; assuming %.3g fps", self.name, fps)
        actual = {"width": width, "height": height, "fps": fps, "pixel_format": fourcc}
        for key, want in req.items():
            got = actual[key]
            differs = abs(got - want) > 0.01 if key == "fps" else str(got).upper() != str(want).upper() if key == "pixel_format" else got != want
            if differs:
                logger.warning("%s: asked for %s=%s, the device gives %s", self.name, key, want, got)
        self.current_size = (width, height)
        self.info = SourceInfo(
            kind="device", name=self.name, width=width, height=height, fps=fps, rate=_rate_of(fps),
            frame_count=None, seekable=False, still=False, codec=None, pixel_format=fourcc,
            requested=dict(req),
        )
        self._failures = 0
        self._last_good = time.monotonic()
        logger.info("opened %s: %dx%d @ %.3g fps %s", self.name, width, height, fps, fourcc or "")

    def _missing_message(self) -> str:
        exists = not isinstance(self.target, str) or os.path.exists(self.target)
        if sys.platform.startswith("linux") and isinstance(self.target, int):
            exists = os.path.exists(self.name)
        found = list_devices()
        listing = ("devices found: " + ", ".join(str(d) for d in found)) if found else "no capture devices were found"
        if not exists:
            return f"capture device {self.name} not found; {listing}"
        return (
            f"capture device {self.name} could not be opened (in use by another program, "
            f"or not a video capture device); {listing}"
        )

    def _read_once(self) -> np.ndarray | None:
        try:
            ok, image = self._cap.read()
        except cv2.error as err:
            logger.debug("%s: read failed: %s", self.name, err)
            return None
        if not ok or image is None or image.size == 0:
            return None
        return image

    def read(self) -> Frame | None:
        if self._cap is None:
            return None  # closed
        while True:
            if self._pending is not None:
                image, self._pending = self._pending, None
            else:
                image = self._read_once()
            if image is not None:
                break
            self._failures += 1
            if self._failures >= self.max_failures and time.monotonic() - self._last_good >= self.lost_after_s:
                raise DeviceLostError(f"capture device {self.name} stopped delivering frames")
            time.sleep(min(0.1, 0.01 * self._failures))
        self._failures = 0
        self._last_good = time.monotonic()
        image = to_bgr8(image)
        size = (image.shape[1], image.shape[0])
        if size != self.current_size:
            logger.info("%s: frame size changed from %dx%d to %dx%d", self.name, *self.current_size, *size)
            self.current_size = size
        frame = Frame(self._count, time.monotonic() - self._t0, image, time.perf_counter())
        self._count += 1
        return frame

    def reopen(self) -> None:
        """Release the device and open it again (SourceError while it is still missing)."""
        self.close()
        self._pending = None
        self._open()

    def close(self) -> None:
        if self._cap is not None:
            cap, self._cap = self._cap, None
            try:
                cap.release()
            except cv2.error as err:
                logger.debug("releasing %s: %s", self.name, err)


def _device_target(device: int | str) -> tuple[int | str, str]:
    """(what to pass to VideoCapture, the name for messages)."""
    linux = sys.platform.startswith("linux")
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        index = int(device)
        return index, (f"/dev/video{index}" if linux else f"camera {index}")
    path = os.path.realpath(device) if linux else device
    match = re.fullmatch(r"/dev/video(\d+)", path)
    if match:
        return int(match.group(1)), str(device)
    return str(device), str(device)


# V4L2 ioctls, to list what a device offers without opening a stream
def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("V") << 8) | nr


_VIDIOC_QUERYCAP = _ioc(2, 0, 104)
_VIDIOC_ENUM_FMT = _ioc(3, 2, 64)
_VIDIOC_ENUM_FRAMESIZES = _ioc(3, 74, 44)
_VIDIOC_ENUM_FRAMEINTERVALS = _ioc(3, 75, 52)
_CAP_VIDEO_CAPTURE = 0x1
_CAP_DEVICE_CAPS = 0x80000000


def _enum(fd: int, request: int, fmt: str, *fields: int) -> Iterator[tuple]:
    import fcntl  # POSIX only

    for index in range(64):
        buf = bytearray(struct.calcsize(fmt))
        struct.pack_into(fmt, buf, 0, index, *fields)
        try:
            fcntl.ioctl(fd, request, buf)
        except OSError:
            return
        yield struct.unpack(fmt, buf)


def _device_modes(path: str) -> tuple[bool, tuple[DeviceMode, ...]]:
    """(is a capture device, discrete modes). Cheap: ioctls only, no streaming."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return True, ()
    modes: list[DeviceMode] = []
    try:
        import fcntl  # POSIX only

        cap = bytearray(104)
        try:
            fcntl.ioctl(fd, _VIDIOC_QUERYCAP, cap)
            caps, device_caps = struct.unpack_from("<II", cap, 84)
            effective = device_caps if caps & _CAP_DEVICE_CAPS else caps
            if not effective & _CAP_VIDEO_CAPTURE:
                return False, ()
        except OSError:
            return True, ()
        for fmt_desc in _enum(fd, _VIDIOC_ENUM_FMT, "<III32sII12x", 1):
            pixfmt = fmt_desc[4]
            fourcc = "".join(chr((pixfmt >> (8 * i)) & 0xFF) for i in range(4))
            for size in _enum(fd, _VIDIOC_ENUM_FRAMESIZES, "<IIIII16x8x", pixfmt):
                if size[2] != 1:  # not discrete
                    break
                w, h = size[3], size[4]
                rates = []
                for ival in _enum(fd, _VIDIOC_ENUM_FRAMEINTERVALS, "<IIIIIII16x8x", pixfmt, w, h):
                    if ival[4] != 1:
                        break
                    num, den = ival[5], ival[6]
                    if num:
                        rates.append(round(den / num, 3))
                modes.append(DeviceMode(fourcc.strip(), w, h, tuple(rates)))
    finally:
        os.close(fd)
    return True, tuple(modes)


def list_devices(dev_dir: str = "/dev", sys_dir: str = "/sys/class/video4linux") -> list[DeviceDescription]:
    """V4L2 capture devices (``/dev/video*``) with their sysfs name and discrete modes.

    Metadata-only nodes (UVC creates one beside each camera) are left out. Empty on systems
    without V4L2.
    """
    found = []
    for path in sorted(glob.glob(os.path.join(dev_dir, "video*")), key=natural_key):
        match = re.search(r"video(\d+)$", path)
        if not match:
            continue
        index = int(match.group(1))
        name = ""
        try:
            name = Path(sys_dir, f"video{index}", "name").read_text(errors="replace").strip()
        except OSError:
            pass
        is_capture, modes = _device_modes(path)
        if is_capture:
            found.append(DeviceDescription(path, index, name, modes))
    return found


# --------------------------------------------------------------------------------------------
# the factory

_DEMO_SPEC = re.compile(r"demo(?::(\d+)x(\d+)(?:@([\d.]+))?)?", re.IGNORECASE)


def open_source(
    spec: str | os.PathLike | int,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    pixel_format: str | None = None,
    loop: bool = False,
    capture_factory: CaptureFactory | None = None,
) -> Source:
    """Open a video file, capture device, image folder, image or the demo clip.

    ``spec``: "demo" or "demo:WIDTHxHEIGHT@FPS"; a device index (int or digits) or
    "/dev/videoN"; a folder of images; an image file; anything else is a video file.
    ``width``/``height``/``fps``/``pixel_format`` are requests for devices (and demo);
    ``fps`` is the frame rate of folders. ``loop`` restarts files, folders and demo at the end.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return DeviceSource(spec, width=width, height=height, fps=fps, pixel_format=pixel_format,
                            capture_factory=capture_factory)
    text = os.fspath(spec)
    match = _DEMO_SPEC.fullmatch(text) if isinstance(text, str) else None
    if match:
        from engine.demo import DemoSource

        w = width or (int(match.group(1)) if match.group(1) else 1280)
        h = height or (int(match.group(2)) if match.group(2) else 1024)
        rate = fps or (float(match.group(3)) if match.group(3) else 30.0)
        return DemoSource(width=w, height=h, fps=rate, loop=loop)
    if re.fullmatch(r"/dev/video\d+", text) or text.startswith("/dev/v4l/"):
        return DeviceSource(text, width=width, height=height, fps=fps, pixel_format=pixel_format,
                            capture_factory=capture_factory)
    path = Path(text)
    if not path.exists():
        raise SourceError(f"video not found: {path}")
    if path.is_dir():
        return FolderSource(path, fps=fps, loop=loop)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSource([path], name=str(path), kind="image", fps=fps, loop=loop)
    return FileSource(path, loop=loop)


__all__ = [
    "DeviceDescription", "DeviceMode", "DeviceSource", "FileSource", "FolderSource", "ImageSource",
    "Source", "SourceInfo", "list_devices", "natural_key", "open_source", "read_image", "to_bgr8",
]
