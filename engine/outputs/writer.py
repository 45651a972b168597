"""H.264 MP4 writer (PyAV) used by export, recording and the demo clip.

Two modes, one encoder set-up:

- **finished file** (the default): the output is written to a hidden temporary name in the target
  folder (``.NAME.partial.mp4``, :func:`engine.files.temporary_name`) and renamed to its final
  name only by :meth:`VideoWriter.close`, so a crash, a full disk or an abort never leaves a
  half-written file under the final name.
- **fragmented** (``fragmented=True``, for recordings): a fragmented MP4
  (``movflags=frag_keyframe+empty_moov+default_base_moof``) written in place under its final name.
  Every fragment is complete on disk once written and a new one starts at each keyframe; with a
  keyframe every half second and no encoder lookahead (``tune=zerolatency``), a SIGKILL or a power
  cut loses at most the last half second or so, and an abort keeps what was written.

The output checks, the temporary name and the write errors are :mod:`engine.files`'.

Encoding path: BGR -> I420 with ``cv2.cvtColor`` (BT.601, limited range, the same matrix
swscale and our reader assume), wrapped as a ``yuv420p`` frame. On this project's 2-core
benchmark box this is about 5x faster than PyAV's swscale and nearly doubles the veryfast
1080p encode rate. 4:2:0 needs even sizes: odd widths/heights are padded by one replicated
column/row (the output is then ``width + 1`` and/or ``height + 1``; see
:attr:`VideoWriter.encoded_size`). ``lossless=True`` uses libx264rgb (bgr24, crf 0), which
keeps every pixel exactly and takes any size.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from engine.errors import ExportError
from engine.files import PendingFile, write_error
from engine.types import to_fraction

logger = logging.getLogger(__name__)

_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: the container options of the fragmented (recording) mode
FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
#: a keyframe (and so a new fragment) this often in the fragmented mode
KEYFRAME_INTERVAL_S = 0.5


def encoder_available(name: str) -> bool:
    """True when this FFmpeg build has the encoder ``name`` (e.g. "libx264")."""
    try:
        av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


class VideoWriter:
    """Write BGR frames to an H.264 MP4, one output frame per :meth:`write` call.

    Frame ``n`` gets pts ``n`` in a time base of ``1 / rate``, so the output has exactly the
    frames written at exactly ``rate``. Container metadata comes only from ``metadata``.

    ``fragmented``: the recording mode (see the module docstring): written in place, a keyframe
    every :data:`KEYFRAME_INTERVAL_S`, x264 with ``tune=zerolatency``; :meth:`abort` keeps what
    was written. ``container_options``: more options for the container (FFmpeg's, as strings).
    ``what`` names the output in the error messages ("output", "recording"); ``force_hint``
    ends the message for an existing output (None: no hint, for callers without ``--force``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        rate: Fraction | float,
        *,
        codec: str = "h264",
        preset: str = "veryfast",
        crf: int = 23,
        lossless: bool = False,
        force: bool = False,
        metadata: dict | None = None,
        fragmented: bool = False,
        container_options: dict[str, str] | None = None,
        what: str = "output",
        force_hint: str | None = "use --force to overwrite",
    ) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"frame size must be positive, not {width}x{height}")
        self.rate = to_fraction(rate)
        self.frames_written = 0
        self.lossless = lossless
        self.fragmented = fragmented
        self._closed = False
        self._container = None
        self._muxed = False  # a packet went to the file (a fragmented one exists from then on)
        self._file = PendingFile(self.path, force=force, what=what, force_hint=force_hint,
                                 in_place=fragmented)
        self._tmp = self._file.tmp

        encoder, pix_fmt, options = self._choose_encoder(codec, preset, crf, lossless)
        if fragmented and encoder == "libx264":
            options["tune"] = "zerolatency"  # no lookahead: each frame is on disk at once
        self.codec = encoder
        self._yuv = pix_fmt == "yuv420p"
        pad_w, pad_h = (self.width % 2, self.height % 2) if self._yuv else (0, 0)
        self._pad = (pad_w, pad_h)
        self.encoded_size = (self.width + pad_w, self.height + pad_h)
        if pad_w or pad_h:
            logger.info(
                "%s: %dx%d is odd; padding to %dx%d for 4:2:0 encoding",
                self.path, self.width, self.height, *self.encoded_size,
            )

        fmt = _FORMATS.get(self.path.suffix.lower(), "mp4")
        options_in = {**(FRAGMENTED if fragmented else {}), **(container_options or {})}
        try:
            # FFmpeg opens the file only at the first packet: create it now so that a folder
            # we cannot write to fails here, not in the middle of an export. (A recording is
            # not: one that gets no frame leaves no file.)
            if not fragmented:
                with open(self._tmp, "wb"):
                    pass
            self._container = av.open(str(self._tmp), "w", format=fmt, options=options_in)
        except (OSError, av.FFmpegError) as err:
            if not fragmented:
                self._file.discard()
            raise write_error(err, self.path, in_place=fragmented) from err
        try:
            self._stream = self._container.add_stream(encoder, rate=self.rate)
            self._stream.width, self._stream.height = self.encoded_size
            self._stream.pix_fmt = pix_fmt
            self._stream.time_base = 1 / self.rate
            self._stream.codec_context.time_base = 1 / self.rate
            self._stream.codec_context.thread_count = 0  # auto: one per core (x264: 1.5x)
            if fragmented:
                self._stream.codec_context.gop_size = max(1, round(float(self.rate) * KEYFRAME_INTERVAL_S))
            if self._yuv:
                cc = self._stream.codec_context
                cc.colorspace = 6  # SMPTE 170M (BT.601), what cvtColor's I420 uses
                cc.color_range = 1  # limited ("tv")
                cc.color_primaries = 6
                cc.color_trc = 6
            self._stream.options = options
            self._container.metadata.clear()
            for key, value in (metadata or {}).items():
                self._container.metadata[str(key)] = str(value)
        except (OSError, av.FFmpegError, ValueError) as err:
            self.abort()
            raise ExportError(f"cannot set up the {encoder} encoder for {self.path}: {err}") from err
        logger.debug("writing %s (%s, %dx%d @ %s)", self.path, encoder, *self.encoded_size, self.rate)

    # -- set-up -------------------------------------------------------------------------------

    def _choose_encoder(
        self, codec: str, preset: str, crf: int, lossless: bool
    ) -> tuple[str, str, dict[str, str]]:
        if lossless:
            if not encoder_available("libx264rgb"):
                raise ExportError(
                    f"cannot write {self.path} losslessly: this FFmpeg build has no libx264rgb"
                )
            return "libx264rgb", "bgr24", {"preset": preset, "crf": "0"}
        if codec in ("h264", "libx264"):
            if encoder_available("libx264"):
                return "libx264", "yuv420p", {"preset": preset, "crf": str(int(crf))}
            logger.warning("libx264 is not in this FFmpeg build; writing %s as MPEG-4 (mp4v)", self.path)
            codec = "mpeg4"
        if codec == "mpeg4":
            # qscale 2..31 roughly tracks crf 18..51
            q = max(2, min(31, round((int(crf) - 14) / 1.2)))
            return "mpeg4", "yuv420p", {"qscale": str(q)}
        raise ExportError(f"cannot write {self.path}: unknown codec {codec!r} (use h264 or mpeg4)")

    # -- writing ------------------------------------------------------------------------------

    def _to_frame(self, image: np.ndarray) -> av.VideoFrame:
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: expected a {self.height}x{self.width}x3 uint8 BGR image, "
                f"got {image.shape} {image.dtype}"
            )
        if not self._yuv:
            return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        pad_w, pad_h = self._pad
        if pad_w or pad_h:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        i420 = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.colorspace = 6
        frame.color_range = 1
        return frame

    def write(self, image_bgr: np.ndarray) -> None:
        """Encode one H x W x 3 uint8 BGR image as the next output frame."""
        if self._closed:
            raise ExportError(f"cannot write to {self.path}: the writer is closed")
        frame = self._to_frame(image_bgr)
        frame.pts = self.frames_written
        frame.time_base = 1 / self.rate
        try:
            for packet in self._stream.encode(frame):
                self._muxed = True
                self._container.mux(packet)
        except (OSError, av.FFmpegError) as err:
            self.abort()
            raise write_error(err, self.path, in_place=self.fragmented) from err
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, finish the file and rename it to its final name.

        With no frame written: ExportError, and no file (a fragmented recording: no error, no
        file; the caller has :attr:`frames_written`)."""
        if self._closed:
            return self.path
        if self.frames_written == 0:
            self.abort()
            if self.fragmented:
                return self.path
            raise ExportError(f"nothing was written to {self.path}: no frames were given")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._closed = True
            self._file.commit()
        except (OSError, av.FFmpegError) as err:
            self.abort()
            raise write_error(err, self.path, in_place=self.fragmented) from err
        logger.info("wrote %s (%d frames)", self.path, self.frames_written)
        return self.path

    def abort(self) -> None:
        """Stop writing. The temporary file is deleted: nothing appears under the final name;
        a fragmented recording keeps what was written (one that holds no whole frame is deleted;
        an existing file that ``force`` allowed to replace stays when nothing was written)."""
        if not self._closed:
            self._closed = True
            try:
                if self._container is not None:
                    self._container.close()
            except (OSError, av.FFmpegError) as err:
                logger.debug("closing %s after an abort: %s", self._tmp, err)
        if not self.fragmented or (self.frames_written == 0 and self._muxed):
            self._file.discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()
