"""RTP streams made in-process, for the recorder's tests and benchmark: real encoded
frames (the pattern of ``bench.pattern_media``, so a recording can be checked frame by
frame) or frames of the right size and structure only (the benchmark: the recorder
never decodes), packetized as aiortc sends them."""

from __future__ import annotations

import fractions
import os
import random
import struct
from typing import Any

import av
import numpy as np

from media_server import aiortc_adapter, rtp

from .pattern_media import pattern_planes

PAYLOAD_TYPES = {"video/vp8": 96, "video/h264": 102, "audio/opus": 111}
_HDR = struct.Struct("!BBHII")


def encode_video(
    codec: str, count: int, ident: int = 1, width: int = 320, height: int = 240, fps: int = 30
) -> list[tuple[bytes, int, bool]]:
    """``count`` frames of the pattern (ident, counter 0..), encoded: (data, pts, key)."""
    name = {"video/vp8": "libvpx", "video/h264": "libx264"}[codec.lower()]
    ctx: Any = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 90_000)
    ctx.framerate = fps
    ctx.gop_size = 10_000  # like aiortc: keyframes only when asked
    if name == "libx264":
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "bframes": "0"}
    else:  # like aiortc's encoder: real time, not best quality
        ctx.options = {"deadline": "realtime", "cpu-used": "8"}
    out = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(pattern_planes(ident, i, width, height), "yuv420p")
        frame.pts = i * 90_000 // fps
        frame.time_base = ctx.time_base
        out += [(bytes(p), int(p.pts or 0), bool(p.is_keyframe)) for p in ctx.encode(frame)]
    out += [(bytes(p), int(p.pts or 0), bool(p.is_keyframe)) for p in ctx.encode(None)]
    return out


def encode_audio(count: int, hz: float = 440.0) -> list[tuple[bytes, int]]:
    """``count`` 20 ms Opus packets of a tone: (data, pts at 48 kHz)."""
    ctx: Any = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 48_000, "stereo", "s16"
    ctx.time_base = fractions.Fraction(1, 48_000)
    out = []
    for i in range(count):
        t = (np.arange(960) + i * 960) / 48_000
        mono = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
        pcm = np.repeat(mono, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48_000, i * 960, ctx.time_base
        out += [(bytes(p), int(p.pts or 0)) for p in ctx.encode(frame)]
    return out


def fake_vp8_frames(count: int, size: int, keyframe: bytes) -> list[bytes]:
    """A real keyframe, then inter frames of ``size`` bytes (P bit set, content random)."""
    frames = [keyframe]
    for _ in range(count - 1):
        body = bytearray(os.urandom(size))
        body[0] |= 0x01  # frame tag: inter frame
        frames.append(bytes(body))
    return frames


class RtpSender:
    """Packets of one stream, numbered and timed as a sender would."""

    def __init__(self, codec: str, ssrc: int | None = None) -> None:
        self.codec = codec.lower()
        self.ssrc = ssrc if ssrc is not None else random.randrange(1, 1 << 32)
        self.pt = PAYLOAD_TYPES[self.codec]
        self.seq = random.randrange(1 << 16)
        self.picture_id = random.randrange(1 << 15)

    def payloads(self, frame: bytes) -> list[bytes]:
        if self.codec == "video/vp8":
            out = aiortc_adapter.packetize_vp8(frame, self.picture_id)
            self.picture_id = (self.picture_id + 1) % (1 << 15)
            return out
        if self.codec == "video/h264":
            return aiortc_adapter.packetize_h264(frame)
        return [frame]

    def packets(self, payloads: list[bytes], timestamp: int) -> list[tuple[bytes, rtp.Header]]:
        """One frame's packets (the marker bit on the last), with parsed headers."""
        out = []
        for i, payload in enumerate(payloads):
            marker = 1 if i == len(payloads) - 1 and self.codec != "audio/opus" else 0
            header = _HDR.pack(
                0x80, (marker << 7) | self.pt, self.seq, timestamp & 0xFFFFFFFF, self.ssrc
            )
            self.seq = (self.seq + 1) & 0xFFFF
            data = header + payload
            out.append((data, rtp.parse(data)))
        return out

    def rtx(self, data: bytes, h: rtp.Header, rtx_ssrc: int, rtx_pt: int, seq: int) -> bytes:
        """The RFC 4588 retransmission of a packet of this stream."""
        payload = struct.pack("!H", h.seq) + data[h.payload_start : h.payload_end]
        return _HDR.pack(0x80, (h.marker << 7) | rtx_pt, seq, h.timestamp, rtx_ssrc) + payload
