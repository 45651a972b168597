"""The audible polyp alert: a short two-tone chime through QtMultimedia's QSoundEffect.

The sound is generated (no asset): a WAV written once into the user's cache folder
(``$XDG_CACHE_HOME/endoview``, else ``~/.cache/endoview``; the system's temporary folder when that
cannot be written). When the sound cannot be played, because QtMultimedia is missing, no audio
output device exists (a server, an offscreen test) or the effect fails to load, :class:`AlertSound`
logs that once and stays quiet: an alert never stops the viewer. When to sound it is decided by
:class:`engine.procedure.alerts.AlertPolicy`.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import tempfile
import wave
from pathlib import Path

logger = logging.getLogger(__name__)

RATE = 22050  # samples per second
TONES = ((880.0, 0.09), (0.0, 0.04), (1320.0, 0.12))  # (Hz, seconds): a rising two-tone chime
VOLUME = 0.6


def chime_samples(rate: int = RATE) -> bytes:
    """The chime as 16-bit mono PCM, each tone with 5 ms fades (no clicks)."""
    frames = bytearray()
    fade = int(0.005 * rate)
    for freq, seconds in TONES:
        n = int(seconds * rate)
        for i in range(n):
            ramp = min(1.0, i / fade, (n - 1 - i) / fade) if fade else 1.0
            value = math.sin(2 * math.pi * freq * i / rate) * ramp * VOLUME if freq else 0.0
            frames += struct.pack("<h", int(value * 32767))
    return bytes(frames)


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "endoview"


def chime_file() -> Path:
    """The chime's WAV file, written on first use (the cache folder, else the temporary folder)."""
    for folder in (cache_folder(), Path(tempfile.gettempdir())):
        path = folder / "polyp-alert.wav"
        if path.is_file() and path.stat().st_size > 44:
            return path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
            with wave.open(str(tmp), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(chime_samples())
            os.replace(tmp, path)
            return path
        except OSError as exc:
            logger.info("cannot write the alert sound into %s: %s", folder, exc)
    raise OSError("no folder to write the alert sound into")


class AlertSound:
    """Plays the chime; quiet (logged once) where no sound can be played. GUI thread only."""

    def __init__(self) -> None:
        self._effect = None
        self._devices = None
        self._broken = False
        self._warned = False
        self.requested = 0  # times play() was called
        self.played = 0  # times the effect was really started

    def play(self) -> bool:
        """Start the chime; False (and a log line the first time) when it cannot be played."""
        self.requested += 1
        effect = self._load()
        if effect is None:
            return False
        if not self._devices.audioOutputs():  # checked each time: a headset may be plugged in later
            self._give_up("no audio output device", permanent=False)
            return False
        effect.play()
        self.played += 1
        return True

    def _load(self):
        if self._broken:
            return None
        if self._effect is not None:
            return self._effect
        try:
            from PySide6.QtCore import QUrl
            from PySide6.QtMultimedia import QMediaDevices, QSoundEffect
        except ImportError as exc:
            self._give_up(f"QtMultimedia is not available ({exc})")
            return None
        try:
            path = chime_file()
        except OSError as exc:
            self._give_up(str(exc))
            return None
        effect = QSoundEffect()
        effect.setSource(QUrl.fromLocalFile(str(path)))
        effect.setVolume(1.0)
        effect.statusChanged.connect(lambda: self._status(effect))
        self._effect, self._devices = effect, QMediaDevices
        return effect

    def _status(self, effect) -> None:
        from PySide6.QtMultimedia import QSoundEffect

        if effect.status() == QSoundEffect.Status.Error:
            self._give_up("the sound could not be loaded")

    def _give_up(self, why: str, permanent: bool = True) -> None:
        if not self._warned:
            logger.warning("polyp alert sound is off: %s; the viewer goes on without it", why)
            self._warned = True
        self._broken = self._broken or permanent
