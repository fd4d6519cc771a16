"""``bench.vp8_framer``: real VP8 frames (libvpx through PyAV), packetised by aiortc's
own VP8 packetiser, fed in the orders, losses and repeats a network produces."""

from __future__ import annotations

import fractions
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import av
import numpy as np
import pytest
from aiortc.codecs.vpx import Vp8Encoder

from bench.vp8_framer import SEQ_MOD, Vp8Framer, seq_ahead

FRAMES = 8
GOP = 4  # keyframes: 0 and 4


class Pkt(NamedTuple):
    seq: int
    timestamp: int
    marker: bool
    payload: bytes
    frame: int  # index of the frame it belongs to
    part: int  # index within the frame


@dataclass(frozen=True)
class Encoded:
    data: list[bytes]  # each frame's VP8 bitstream, as the encoder produced it
    keyframe: list[bool]
    payloads: list[list[bytes]]  # each frame's RTP payloads (descriptor + data)
    timestamps: list[int]


@pytest.fixture(scope="module")
def encoded() -> Encoded:
    """Noise, so every frame spans several RTP packets (keyframes dozens)."""
    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.bit_rate = 2_000_000
    ctx.gop_size = GOP
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.options = {"deadline": "realtime", "lag-in-frames": "0", "cpu-used": "8"}
    rng = np.random.default_rng(1)
    packer = Vp8Encoder()
    data, keys, payloads, stamps = [], [], [], []
    for i in range(FRAMES):
        img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i, ctx.time_base
        for packet in ctx.encode(frame):
            data.append(bytes(packet))
            keys.append(bool(packet.is_keyframe))
            chunks, timestamp = packer.pack(packet)
            payloads.append(chunks)
            stamps.append(timestamp)
    assert keys == [i % GOP == 0 for i in range(FRAMES)]
    assert all(len(p) >= 2 for p in payloads), "every frame must span several packets"
    return Encoded(data, keys, payloads, stamps)


def packetise(enc: Encoded, first_seq: int) -> list[list[Pkt]]:
    """Each frame's RTP packets, sequence numbers from ``first_seq`` (mod 2^16)."""
    frames: list[list[Pkt]] = []
    seq = first_seq
    for f, chunks in enumerate(enc.payloads):
        pkts = []
        for k, payload in enumerate(chunks):
            last = k == len(chunks) - 1
            pkts.append(Pkt(seq % SEQ_MOD, enc.timestamps[f], last, payload, f, k))
            seq += 1
        frames.append(pkts)
    return frames


Frames = list[list[Pkt]]


def flat(frames: Frames) -> list[Pkt]:
    return [p for f in frames for p in f]


def without(frames: Frames, *drop: tuple[int, int]) -> list[Pkt]:
    """Every packet except (frame, part) ones; part -1 is the frame's last (marker)."""
    gone = {(f, k % len(frames[f])) for f, k in drop}
    return [p for p in flat(frames) if (p.frame, p.part) not in gone]


def shuffled_within_frames(frames: Frames) -> list[Pkt]:
    rng = random.Random(7)
    out: list[Pkt] = []
    for f in frames:
        pkts = list(f)
        while [p.part for p in pkts] == sorted(p.part for p in pkts):
            rng.shuffle(pkts)
        out.extend(pkts)
    return out


def late_after_loss(frames: Frames) -> list[Pkt]:
    """Frame 1 misses its marker until frame 2 is complete: then the marker comes."""
    return [*frames[0], *frames[1][:-1], *frames[2], frames[1][-1], *flat(frames[3:])]


def first_packets_twice(frames: Frames) -> list[Pkt]:
    return [q for f in frames for p in f for q in ([p, p] if p.part == 0 else [p])]


def resend_old(frames: Frames) -> list[Pkt]:
    """Once frame 2 is out, a packet of frame 0 and of frame 1 come again (a retransmit
    nobody asked for, a duplicate from the network)."""
    return [*flat(frames[:3]), frames[0][3], frames[1][0], *flat(frames[3:])]


@dataclass(frozen=True)
class Case:
    name: str
    arrivals: Callable[[Frames], list[Pkt]]
    emitted: list[int]  # frames coming out, in order
    first_seq: Callable[[Encoded], int] = lambda e: 1000
    incomplete: int = 0
    skipped: int = 0
    late: int = 0
    duplicates: int = 0
    on_marker: bool = False  # each frame comes out on the push of its marker packet


ALL = list(range(FRAMES))


def WRAP_IN_FRAME_1(e: Encoded) -> int:
    """Frame 1's packets are 65535, 0, 1, ..."""
    return SEQ_MOD - len(e.payloads[0]) - 1


CASES = [
    Case("in order", flat, ALL, on_marker=True),
    Case("reversed within each frame", lambda fs: [p for f in fs for p in f[::-1]], ALL),
    Case("shuffled within each frame", shuffled_within_frames, ALL),
    Case(
        "inter frame loses a middle packet: dropped, then wait for the keyframe",
        lambda fs: without(fs, (1, 1)),
        [0, 4, 5, 6, 7],
        incomplete=1,
        skipped=2,
    ),
    Case(
        "inter frame loses its marker packet",
        lambda fs: without(fs, (2, -1)),
        [0, 1, 4, 5, 6, 7],
        incomplete=1,
        skipped=1,
    ),
    Case(
        "inter frame loses its first packet",
        lambda fs: without(fs, (3, 0)),
        [0, 1, 2, 4, 5, 6, 7],
        incomplete=1,
    ),
    Case(
        "a whole inter frame lost",
        lambda fs: without(fs, *((1, k) for k in range(len(fs[1])))),
        [0, 4, 5, 6, 7],
        incomplete=1,
        skipped=2,
    ),
    Case(
        "keyframe loses a packet: the next keyframe restarts",
        lambda fs: without(fs, (4, 5)),
        [0, 1, 2, 3],
        incomplete=1,
        skipped=3,
    ),
    Case(
        "joined mid-stream: nothing before the first keyframe",
        lambda fs: flat(fs)[len(fs[0]) + 1 :],
        [4, 5, 6, 7],
        skipped=2,
    ),
    Case(
        "lost packet arrives after the next frame completed: late, ignored",
        late_after_loss,
        [0, 4, 5, 6, 7],
        incomplete=1,
        skipped=2,
        late=1,
    ),
    Case("each frame's first packet twice", first_packets_twice, ALL, duplicates=FRAMES),
    Case("old packets after their frame went out", resend_old, ALL, late=2),
    Case(
        "wrap inside the first keyframe",
        flat,
        ALL,
        first_seq=lambda e: SEQ_MOD - 10,
        on_marker=True,
    ),
    Case(
        "wrap inside an inter frame, reversed",
        lambda fs: [p for f in fs for p in f[::-1]],
        ALL,
        first_seq=WRAP_IN_FRAME_1,
    ),
    Case(
        "wrap, losing the packet at 65535",
        lambda fs: without(fs, (1, 0)),
        [0, 4, 5, 6, 7],
        first_seq=WRAP_IN_FRAME_1,
        incomplete=1,
        skipped=2,
    ),
]


def feed(framer: Vp8Framer, pkts: list[Pkt]) -> list[tuple[int, Pkt, bytes, bool]]:
    """Push each packet; (frame index, packet that completed it, data, keyframe)."""
    out = []
    by_ts = {}
    for p in pkts:
        by_ts[p.timestamp] = p.frame
        frame = framer.push(p.seq, p.timestamp, p.marker, p.payload)
        if frame is not None:
            out.append((by_ts[frame.timestamp], p, frame.data, frame.keyframe))
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_framer(case: Case, encoded: Encoded) -> None:
    frames = packetise(encoded, case.first_seq(encoded))
    arrivals = case.arrivals(frames)
    framer = Vp8Framer()
    out = feed(framer, arrivals)

    assert [f for f, *_ in out] == case.emitted
    for f, by, data, keyframe in out:
        assert data == encoded.data[f], f"frame {f}: not the encoder's bitstream"
        assert keyframe == encoded.keyframe[f]
        if case.on_marker:
            assert by == frames[f][-1], f"frame {f} came out on {by}, not on its marker"
    assert framer.emitted == len(case.emitted)
    assert (framer.incomplete, framer.skipped) == (case.incomplete, case.skipped)
    assert (framer.late, framer.duplicates) == (case.late, case.duplicates)


def test_emitted_frames_decode(encoded: Encoded) -> None:
    """What comes out after a loss is decodable from the keyframe on: a decoder that
    gets it reports no error and returns one picture per frame."""
    frames = packetise(encoded, 40_000)
    codec = av.CodecContext.create("vp8", "r")
    out = feed(Vp8Framer(), without(frames, (2, 1)))
    assert [f for f, *_ in out] == [0, 1, 4, 5, 6, 7]
    pictures = [codec.decode(av.Packet(data)) for _, _, data, _ in out]
    assert [len(p) for p in pictures] == [1] * len(out)


def test_nothing_emitted_before_the_marker(encoded: Encoded) -> None:
    frames = packetise(encoded, 7)
    framer = Vp8Framer()
    for p in frames[0][:-1]:
        assert framer.push(p.seq, p.timestamp, p.marker, p.payload) is None
    last = frames[0][-1]
    frame = framer.push(last.seq, last.timestamp, last.marker, last.payload)
    assert frame is not None and frame.data == encoded.data[0]
    assert (frame.first_seq, frame.last_seq) == (frames[0][0].seq, last.seq)
    assert framer.buffered == 0


def test_memory_is_bounded(encoded: Encoded) -> None:
    """Every frame misses its first packet: nothing ever completes, and the framer
    still holds no more than its cap. When the stream heals, frames come out again."""
    cap = 64
    assert max(len(p) for p in encoded.payloads) < cap
    framer = Vp8Framer(max_packets=cap)
    seq = 0
    for _ in range(20):  # far more packets than the cap
        for f in packetise(encoded, seq):
            seq += len(f)
            for p in f[1:]:
                assert framer.push(p.seq, p.timestamp, p.marker, p.payload) is None
                assert framer.buffered <= cap
    assert framer.emitted == 0 and framer.incomplete > 0
    healed = packetise(encoded, seq)
    emitted = [f for f, *_ in feed(framer, flat(healed))]
    assert emitted[-4:] == [4, 5, 6, 7]  # at the latest from the next keyframe on
    assert framer.buffered <= cap
    again = packetise(encoded, seq + len(flat(healed)))
    assert [f for f, *_ in feed(framer, flat(again))] == ALL
    assert framer.buffered == 0


@pytest.mark.parametrize(
    ("seq", "ref", "ahead"),
    [(5, 3, 2), (3, 5, -2), (0, 65535, 1), (65535, 0, -1), (10, 65530, 16), (32767, 0, 32767)],
)
def test_seq_ahead(seq: int, ref: int, ahead: int) -> None:
    assert seq_ahead(seq, ref) == ahead
