"""Video files read with PyAV: threaded decoding, exact seeking to a frame index, and the container
sniffing (a missing MP4 index, the codec tag in the header) that turns FFmpeg's errors into
messages a user can act on.
"""

from __future__ import annotations

import fractions
import logging
import os
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from engine.errors import SourceError
from engine.sources.base import Source, SourceInfo, to_bgr8
from engine.types import Frame

logger = logging.getLogger(__name__)


def _av_reason(err: BaseException) -> str:
    """A short reason from an FFmpeg error, without PyAV's errno prefix and file name."""
    reason = getattr(err, "strerror", None) or str(err)
    return str(reason).rstrip(".")


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
