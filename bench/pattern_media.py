"""Synthetic media with content a receiver can check: who sent a frame and which one.

The picture carries 16 bright-or-dark bands (4 bits of publisher id, 12 bits of frame
counter), wide enough to survive VP8/H.264 at low bitrates; ``read_pattern`` reads them
back from a decoded frame. Audio is a tone whose pitch is the publisher's.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import numpy as np
from aiortc import MediaStreamTrack
from av import AudioFrame, VideoFrame

BITS = 16
VIDEO_CLOCK = 90_000


def pattern_planes(ident: int, counter: int, width: int, height: int) -> np.ndarray:
    """A yuv420p picture (as one array, I420 layout) carrying ident and counter."""
    value = ((ident & 0xF) << 12) | (counter & 0xFFF)
    y = np.full((height, width), 60, dtype=np.uint8)
    band = width // BITS
    top = height // 3
    for bit in range(BITS):
        if value >> (BITS - 1 - bit) & 1:
            y[top : 2 * top, bit * band : (bit + 1) * band] = 220
    u = np.full((height // 2, width // 2), 128, dtype=np.uint8)
    v = np.full((height // 2, width // 2), 128, dtype=np.uint8)
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(
        height * 3 // 2, width
    )


def read_pattern(frame: VideoFrame) -> tuple[int, int]:
    """(ident, counter) from a decoded frame."""
    y = frame.to_ndarray(format="gray")
    height, width = y.shape
    band = width // BITS
    top = height // 3
    value = 0
    for bit in range(BITS):
        x0 = bit * band + band // 4
        x1 = (bit + 1) * band - band // 4
        mean = float(y[top + top // 4 : 2 * top - top // 4, x0:x1].mean())
        value = (value << 1) | (1 if mean > 140 else 0)
    return value >> 12, value & 0xFFF


class PatternVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, ident: int, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        self.ident = ident
        self.width, self.height, self.fps = width, height, fps
        self.counter = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.counter / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        planes = pattern_planes(self.ident, self.counter, self.width, self.height)
        frame = VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = int(self.counter * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.counter += 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """20 ms frames of a sine tone (48 kHz mono); loud enough to count as speech."""

    kind = "audio"

    def __init__(self, hz: float = 440.0, amplitude: float = 0.3, rate: int = 48_000) -> None:
        super().__init__()
        self.hz, self.amplitude, self.rate = hz, amplitude, rate
        self.samples = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        n = self.rate // 50
        due = self._start + self.samples / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(n) + self.samples) / self.rate
        wave = (self.amplitude * 32767 * np.sin(2 * math.pi * self.hz * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(wave.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, self.rate)
        self.samples += n
        return frame
