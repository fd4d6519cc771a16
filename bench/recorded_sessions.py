"""Recorded sessions made in-process: real track files and a real ``recording.json``.

Each party's media is encoded (VP8 or H.264 video, Opus audio), packetized as aiortc
sends it and fed to the recorder's own ``capture.TrackCapture`` with simulated arrival
times, then closed and repaired as the recorder does; the track index entries are the ones
the recorder writes. So the composite export (and its tests and benchmark) reads exactly
what a recorded session leaves, with the timing known: party frame ``i`` was sent at
``t0 + join_s + i / fps`` (plus a constant network delay), and its picture carries ``i``
(``bench.pattern_media.pattern_planes``), so a composite can be checked frame by frame.
"""

from __future__ import annotations

import fractions
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from recording import track_index
from recording.live import track_capture as capture
from recording.repair import repair

from .pattern_media import pattern_planes
from .rtp_streams import RtpSender

NET_DELAY_S = 0.02  # every packet arrives this long after it was sent
AUDIO_RATE = 48_000


@dataclass
class Party:
    """One participant's media. Times are seconds of the session (0: ``t0``)."""

    ident: int  # 1..15, carried in every picture
    name: str = ""
    dept: str | None = None
    role: str = "clerk"
    source: str = "camera"
    join_s: float = 0.0
    leave_s: float | None = None  # None: until the end of the session
    video: bool = True
    audio: bool = True
    codec: str = "video/VP8"
    width: int = 320
    height: int = 240
    fps: int = 30
    video_gaps: list[tuple[float, float]] = field(default_factory=list)  # nothing sent
    tone_from_s: float | None = 0.0  # the microphone is silent before this
    tone_hz: float = 0.0  # 0: 300 + 100 * ident
    content: str = "pattern"  # "pattern" (checkable) or "camera" (like a webcam: costs)
    video_kbps: int = 0  # 0: the encoder's default quality
    # A keyframe this often, as the recorder asks for (0: only the first, as aiortc and
    # browsers send them unasked).
    keyframe_s: float = capture.KEYFRAME_EVERY_S


def _gapped(t: float, gaps: list[tuple[float, float]]) -> bool:
    return any(a <= t < b for a, b in gaps)


# -- content ------------------------------------------------------------------------------


class _Camera:
    """Webcam-like pictures: a textured background, a moving head, sensor noise, and the
    pattern bands (so the benchmark's output stays checkable)."""

    def __init__(self, ident: int, width: int, height: int) -> None:
        rng = np.random.default_rng(ident)
        small = rng.integers(40, 200, (height // 16 + 1, width // 16 + 1)).astype(np.float32)
        big = np.kron(small, np.ones((16, 16), np.float32))[:height, :width]
        # A box blur (two passes of shifted means) so the texture is smooth, not blocky.
        for _ in range(2):
            big = (big + np.roll(big, 7, 0) + np.roll(big, 7, 1) + np.roll(big, -7, 1)) / 4
        self.background = big.astype(np.uint8)
        self.noise = [rng.integers(-3, 4, (height, width)).astype(np.int16) for _ in range(4)]
        self.u = np.full((height // 2, width // 2), 110 + 8 * (ident % 4), np.uint8)
        self.v = np.full((height // 2, width // 2), 140 - 6 * (ident % 5), np.uint8)
        yy, xx = np.mgrid[0:height, 0:width]
        self.yy, self.xx = yy.astype(np.float32), xx.astype(np.float32)
        self.ident, self.width, self.height = ident, width, height

    def planes(self, i: int) -> np.ndarray:
        w, h = self.width, self.height
        y = self.background.astype(np.int16) + self.noise[i % 4]
        cx = w / 2 + w / 6 * math.sin(i / 25 + self.ident)
        cy = h / 2 + h / 12 * math.sin(i / 17)
        head = ((self.xx - cx) / (w / 7)) ** 2 + ((self.yy - cy) / (h / 4)) ** 2 < 1
        y[head] = 170 + (self.xx[head].astype(np.int16) + i) % 32
        bands = pattern_planes(self.ident, i, w, h)[:h]
        top = h // 3
        y[top : 2 * top] = bands[top : 2 * top]
        out = np.empty((h * 3 // 2, w), np.uint8)
        out[:h] = np.clip(y, 0, 255)
        out[h : h + h // 4] = self.u.reshape(h // 4, w)
        out[h + h // 4 :] = self.v.reshape(h // 4, w)
        return out


def _pictures(party: Party) -> Callable[[int], np.ndarray]:
    if party.content == "camera":
        return _Camera(party.ident, party.width, party.height).planes
    return lambda i: pattern_planes(party.ident, i, party.width, party.height)


def _video_frames(party: Party, seconds: float) -> Iterator[tuple[bytes, float, bool]]:
    """(encoded frame, send time in the session, keyframe) of a party's camera."""
    name = {"video/vp8": "libvpx", "video/h264": "libx264"}[party.codec.lower()]
    ctx: Any = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = party.width, party.height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 90_000)
    ctx.framerate = party.fps
    ctx.gop_size = round(party.keyframe_s * party.fps) if party.keyframe_s else 10_000
    if party.video_kbps:
        ctx.bit_rate = party.video_kbps * 1000
    if name == "libx264":
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "bframes": "0"}
    else:
        # One thread: libvpx's own threads only contend with whatever else runs here.
        ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        ctx.options["threads"] = "1"
    picture = _pictures(party)
    end = min(seconds, party.leave_s if party.leave_s is not None else seconds)
    count = max(0, math.ceil((end - party.join_s) * party.fps - 1e-9))

    def drain(frame: av.VideoFrame | None) -> Iterator[tuple[bytes, float, bool]]:
        for p in ctx.encode(frame):
            yield bytes(p), party.join_s + int(p.pts or 0) / 90_000, bool(p.is_keyframe)

    for i in range(count):
        t = party.join_s + i / party.fps
        if _gapped(t, party.video_gaps):
            continue
        frame = av.VideoFrame.from_ndarray(picture(i), "yuv420p")
        frame.pts = round(i * 90_000 / party.fps)
        frame.time_base = ctx.time_base
        yield from drain(frame)
    yield from drain(None)


def _audio_packets(party: Party, seconds: float) -> Iterator[tuple[bytes, float]]:
    """(20 ms Opus packet, send time) of a party's microphone: silence, then a tone."""
    ctx: Any = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = AUDIO_RATE, "stereo", "s16"
    ctx.time_base = fractions.Fraction(1, AUDIO_RATE)
    hz = party.tone_hz or 300.0 + 100.0 * party.ident
    end = min(seconds, party.leave_s if party.leave_s is not None else seconds)
    count = max(0, math.floor((end - party.join_s) * 50 + 1e-9))
    sent = 0
    for i in range(count):
        t = (np.arange(960) + i * 960) / AUDIO_RATE
        mono = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
        if party.tone_from_s is None:
            mono[:] = 0
        else:
            mono[t + party.join_s < party.tone_from_s] = 0
        frame = av.AudioFrame.from_ndarray(
            np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, i * 960, ctx.time_base
        # Timestamped as aiortc does, by the input frame (not the encoder's output pts,
        # which is 312 samples earlier): so the encoder delay is in the file, as it is in
        # a real recording, and the export's compensation for it is exercised.
        for p in ctx.encode(frame):
            yield bytes(p), party.join_s + sent * 0.02
            sent += 1


# -- recording ----------------------------------------------------------------------------


def _record(
    directory: Path,
    index: dict[str, Any],
    party: Party,
    n: int,
    kind: str,
    items: Iterator[tuple[bytes, float, bool]],
    t0: float,
    end_s: float,
) -> None:
    codec = party.codec if kind == "video" else "audio/opus"
    clock = 90_000 if kind == "video" else AUDIO_RATE
    track_id = f"p{n}.{0 if kind == 'video' else 1}"
    ext = capture.container_for(codec)
    assert ext is not None
    name = track_index.file_name(index, track_id, ext[0])
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cap = capture.TrackCapture(path, codec, clock)
    sender = RtpSender(codec)
    first = None
    for data, sent, _key in items:
        arrival = t0 + sent + NET_DELAY_S
        first = arrival if first is None else first
        ts = round((sent - party.join_s) * clock)
        payloads = sender.payloads(data) if kind == "video" else [data]
        for raw, header in sender.packets(payloads, ts):
            cap.feed(raw, header, arrival, sender.ssrc)
    cap.close()
    owner: dict[str, Any] = {"participant_id": f"p{n}", "sub": f"user-{party.ident}"}
    owner.update(name=party.name, role=party.role, dept=party.dept, level=None)
    entry: dict[str, Any] = {
        "file": name,
        "track_id": track_id,
        "kind": kind,
        "codec": codec,
        "clock_rate": clock,
        "container": ext[1],
        "participant_id": f"p{n}",
        "owner": owner,
        "source": party.source if kind == "video" else "microphone",
        "run": 0,
        "state": "closed",
        "first_packet_at": first,
        "started_at": cap.started_at,
        "first_rtp_ts": cap.first_rtp_ts,
        "ended_at": t0 + end_s + NET_DELAY_S,
        "segments": cap.segments,
        "sender_reports": [],
        "width": cap.width or None,
        "height": cap.height or None,
        "frames": cap.frames,
        "keyframes": cap.keyframes,
        "gaps": cap.gaps,
        "dropped": 0,
        "error": None,
    }
    if cap.frames:
        entry.update(repair(path))
    index["tracks"].append(entry)


def synthesize(
    directory: Path,
    parties: list[Party],
    seconds: float,
    *,
    case_id: str = "SYN-1",
    session_id: str = "s_synth",
    t0: float = 1_790_000_000.0,
    on_party: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``tracks/*`` and ``recording.json`` of a session into ``directory``
    (``on_party(n)``: party ``n`` is done, for a progress display)."""
    directory.mkdir(parents=True, exist_ok=True)
    index = track_index.new(case_id, session_id)
    index["runs"].append(
        {
            "started_at": t0,
            "stopped_at": t0 + seconds + 1,
            "host": "synth",
            "pid": 0,
            "node": "synth",
            "state": "closed",
        }
    )
    for n, party in enumerate(parties):
        end_s = min(seconds, party.leave_s if party.leave_s is not None else seconds)
        if party.video:
            frames = _video_frames(party, seconds)
            _record(directory, index, party, n, "video", frames, t0, end_s)
        if party.audio:
            packets = ((d, t, True) for d, t in _audio_packets(party, seconds))
            _record(directory, index, party, n, "audio", packets, t0, end_s)
        if on_party is not None:
            on_party(n)
    track_index.save(directory, index)
    return index
