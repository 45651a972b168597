"""V4L2 capture devices under /dev, listed with raw ioctls (no stream is opened)."""

from __future__ import annotations

import glob
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.sources.base import natural_key


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
