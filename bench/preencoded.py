"""Pre-encoded media for load generation: publishers that cost almost nothing to run.

A looped VP8 sequence (640x480, 30 fps, ~1 Mbps, a keyframe every second) whose picture
carries the publisher id and the frame's index in the loop (``pattern_media.pattern_planes``;
noise above and below the bands gives the encoder real work, so the bitrate is real),
and a looped Opus tone. Each is encoded once and cached in a file; a second run reads it.

``EncodedVideoTrack`` / ``EncodedAudioTrack`` hand aiortc's ``RTCRtpSender`` ``av.Packet``
objects, which it packetises without encoding (``Encoder.pack``: the RTP timestamp comes
from ``pts`` × ``time_base``). Frame ``n`` of the global sequence is sent at
``t0 + n / fps`` (wall clock), so a receiver that knows ``t0`` knows when every frame was
"captured": the picture carries ``n mod frames``.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack

from .pattern_media import pattern_planes, read_pattern

WIDTH, HEIGHT, FPS = 640, 480, 30
VIDEO_BITRATE = 1_000_000
LOOP_FRAMES = 300  # 10 s
KEYFRAME_EVERY = 30  # 1 s: subscribers joining mid-stream start within a second
AUDIO_RATE = 48_000
AUDIO_FRAME = 960  # 20 ms
AUDIO_PACKETS = 50  # 1 s of a 440 Hz tone: a whole number of periods, seamless loop
TONE_HZ = 440.0
FORMAT_VERSION = 1
_MAGIC = b"JRENC1\n"
_VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
_AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jointreview" / "bench"


@dataclass
class Encoded:
    """A looped sequence of encoded packets (one per frame)."""

    packets: list[bytes]
    keyframes: list[bool]

    @property
    def bitrate(self) -> float:
        """Average bits per second at the sequence's native rate (video: FPS)."""
        return sum(len(p) for p in self.packets) * 8 * FPS / len(self.packets)


def _write(path: Path, meta: dict[str, object], enc: Encoded) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(_MAGIC)
        fh.write(json.dumps(meta).encode() + b"\n")
        for data, key in zip(enc.packets, enc.keyframes, strict=True):
            fh.write(struct.pack("!IB", len(data), int(key)))
            fh.write(data)
    os.replace(tmp, path)


def _read(path: Path, meta: dict[str, object]) -> Encoded | None:
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    if not blob.startswith(_MAGIC):
        return None
    end = blob.index(b"\n", len(_MAGIC))
    if json.loads(blob[len(_MAGIC) : end]) != meta:
        return None
    pos = end + 1
    packets, keys = [], []
    while pos < len(blob):
        size, key = struct.unpack_from("!IB", blob, pos)
        pos += 5
        packets.append(blob[pos : pos + size])
        keys.append(bool(key))
        pos += size
    return Encoded(packets, keys)


def _video_meta(ident: int) -> dict[str, object]:
    return {
        "kind": "vp8",
        "version": FORMAT_VERSION,
        "ident": ident,
        "size": [WIDTH, HEIGHT],
        "fps": FPS,
        "bitrate": VIDEO_BITRATE,
        "frames": LOOP_FRAMES,
        "gop": KEYFRAME_EVERY,
    }


def _picture(ident: int, index: int) -> np.ndarray:
    planes = pattern_planes(ident, index, WIDTH, HEIGHT)
    # Noise outside the band rows (which read_pattern reads): ~1 Mbps of real content.
    rng = np.random.default_rng(index)
    top = HEIGHT // 3
    noise = rng.integers(98, 159, size=(HEIGHT - top, WIDTH), dtype=np.uint8)
    planes[:top] = noise[:top]
    planes[2 * top : HEIGHT] = noise[top:]
    return planes


def encode_video(ident: int) -> Encoded:
    ctx = av.CodecContext.create("libvpx", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height = WIDTH, HEIGHT
    ctx.pix_fmt = "yuv420p"
    ctx.framerate = fractions.Fraction(FPS, 1)
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.bit_rate = VIDEO_BITRATE
    ctx.gop_size = KEYFRAME_EVERY
    ctx.qmin, ctx.qmax = 2, 56
    ctx.thread_count = 1  # faster here than 2 (one token partition: threads only contend)
    ctx.options = {  # aiortc's own realtime CBR settings, at the fastest speed
        "bufsize": str(VIDEO_BITRATE),
        "minrate": str(VIDEO_BITRATE),
        "maxrate": str(VIDEO_BITRATE),
        "cpu-used": "16",
        "deadline": "realtime",
        "lag-in-frames": "0",
        "static-thresh": "1",
        "overshoot-pct": "15",
        "undershoot-pct": "100",
    }
    packets: list[bytes] = []
    keys: list[bool] = []
    for index in range(LOOP_FRAMES):
        frame = av.VideoFrame.from_ndarray(_picture(ident, index), format="yuv420p")
        frame.pts = index
        frame.time_base = ctx.time_base
        if index % KEYFRAME_EVERY == 0:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in ctx.encode(frame):
            packets.append(bytes(packet))
            keys.append(bool(packet.is_keyframe))
    for packet in ctx.encode(None):
        packets.append(bytes(packet))
        keys.append(bool(packet.is_keyframe))
    if len(packets) != LOOP_FRAMES or not keys[0]:
        raise RuntimeError(f"VP8 encoder gave {len(packets)} packets for {LOOP_FRAMES} frames")
    return Encoded(packets, keys)


def check_video(enc: Encoded, ident: int) -> None:
    """Decode the whole loop once and read every picture back."""
    ctx = av.CodecContext.create("libvpx", "r")
    for index, data in enumerate(enc.packets):
        for frame in ctx.decode(av.Packet(data)):
            assert isinstance(frame, av.VideoFrame)
            got = read_pattern(frame)
            if got != (ident, index):
                raise RuntimeError(f"encoded frame {index} reads as {got}")


def encode_audio() -> Encoded:
    ctx = av.CodecContext.create("libopus", "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = AUDIO_RATE
    ctx.layout = "stereo"
    ctx.format = "s16"
    ctx.bit_rate = 32_000
    packets: list[bytes] = []
    # Encode one lap to settle the encoder, keep the second: no start-up packet in the loop.
    for i in range(2 * AUDIO_PACKETS):
        t = (np.arange(AUDIO_FRAME) + i * AUDIO_FRAME) / AUDIO_RATE
        wave = (0.3 * 32767 * np.sin(2 * math.pi * TONE_HZ * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(wave, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = i * AUDIO_FRAME
        frame.time_base = _AUDIO_TIME_BASE
        packets.extend(bytes(p) for p in ctx.encode(frame))
    packets = packets[-AUDIO_PACKETS:]
    return Encoded(packets, [True] * len(packets))


def load_video(ident: int, directory: Path | None = None) -> tuple[Encoded, bool]:
    """The looped VP8 sequence of publisher ``ident``; (sequence, whether it was cached)."""
    directory = directory or cache_dir()
    meta = _video_meta(ident)
    path = directory / f"vp8-{WIDTH}x{HEIGHT}-{FPS}fps-id{ident}-v{FORMAT_VERSION}.bin"
    cached = _read(path, meta)
    if cached is not None and len(cached.packets) == LOOP_FRAMES:
        return cached, True
    enc = encode_video(ident)
    check_video(enc, ident)
    _write(path, meta, enc)
    return enc, False


def load_audio(directory: Path | None = None) -> tuple[Encoded, bool]:
    directory = directory or cache_dir()
    meta: dict[str, object] = {"kind": "opus", "version": FORMAT_VERSION, "hz": TONE_HZ}
    path = directory / f"opus-tone-v{FORMAT_VERSION}.bin"
    cached = _read(path, meta)
    if cached is not None and len(cached.packets) == AUDIO_PACKETS:
        return cached, True
    enc = encode_audio()
    _write(path, meta, enc)
    return enc, False


def frame_index(counter: int, received: float, t0: float, fps: int = FPS) -> int:
    """The global frame number ``n`` whose picture carries ``counter`` (= n mod LOOP_FRAMES)
    and that was received at ``received``: the loop lap that puts the latency
    ``received - (t0 + n / fps)`` in (-0.5 s, 9.5 s]."""
    expected = (received - t0) * fps
    lap = math.floor((expected - counter + fps / 2) / LOOP_FRAMES)
    return counter + lap * LOOP_FRAMES


class _Paced(MediaStreamTrack):
    """Packets of a looped sequence, packet ``n`` due at ``t0 + n * interval``."""

    def __init__(
        self, enc: Encoded, t0: float, rate: int, ticks: int, time_base: fractions.Fraction
    ):
        super().__init__()
        self._packets = enc.packets
        self._t0 = t0
        self._rate = rate  # packets per second
        self._ticks = ticks  # pts units per packet
        self._time_base = time_base
        self._n: int | None = None
        self.sent = 0
        self.late_max = 0.0  # the furthest behind schedule a packet went out (s)

    async def recv(self) -> av.Packet:
        now = time.time()
        if self._n is None:
            self._n = max(0, math.ceil((now - self._t0) * self._rate))
        n = self._n
        due = self._t0 + n / self._rate
        delay = due - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > self.late_max:
            self.late_max = -delay
        packet = av.Packet(self._packets[n % len(self._packets)])
        packet.pts = n * self._ticks
        packet.time_base = self._time_base
        self._n = n + 1
        self.sent += 1
        return packet


class EncodedVideoTrack(_Paced):
    kind = "video"

    def __init__(self, enc: Encoded, t0: float) -> None:
        super().__init__(enc, t0, FPS, 90_000 // FPS, _VIDEO_TIME_BASE)


class EncodedAudioTrack(_Paced):
    kind = "audio"

    def __init__(self, enc: Encoded, t0: float) -> None:
        super().__init__(enc, t0, AUDIO_RATE // AUDIO_FRAME, AUDIO_FRAME, _AUDIO_TIME_BASE)
