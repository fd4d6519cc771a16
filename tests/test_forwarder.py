"""media_server/forwarder.py: the sans-IO forwarding core, fed real captured RTP with time
passed in (tests/data/*.rtpdump.json, made by tests/data/capture_rtp.py).

What a subscriber or publisher would notice is asserted on the bytes the core returns,
parsed by aiortc's own RTP/RTCP code: a black picture (no keyframe, a dropped request),
freezes (gaps, wrong retransmissions), A/V drift (timestamps, sender reports), wrong
bitrate (REMB), wrong loss reports.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiortc.codecs.h264 import H264Decoder, h264_depayload
from aiortc.codecs.vpx import Vp8Decoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)

from bench.pattern_media import read_pattern
from media_server import forwarder as fw
from media_server import rtp
from media_server.forwarder import Bitrate, Leg, Upstream

DATA = Path(__file__).parent / "data"
T0 = 5000.0  # a monotonic clock well past zero
RTCP_SSRC = 0x0C0FFEE0
VP8_PT, OPUS_PT, H264_PT = 97, 96, 99  # what aiortc negotiated in the captures


# -- captured streams ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pkt:
    t: float
    data: bytes

    @property
    def h(self) -> rtp.Header:
        return rtp.parse(self.data)

    @property
    def payload(self) -> bytes:
        h = self.h
        return self.data[h.payload_start : h.payload_end]


@cache
def _capture(name: str) -> list[tuple[float, bytes]]:
    entries = json.loads((DATA / f"{name}.rtpdump.json").read_text())
    return [(T0 + e["t"], bytes.fromhex(e["hex"])) for e in entries]


def stream(name: str, payload_type: int) -> list[Pkt]:
    out = [Pkt(t, d) for t, d in _capture(name) if rtp.parse(d).payload_type == payload_type]
    assert len(out) > 50, f"{name}: too few packets of payload type {payload_type}"
    seqs = [p.h.seq for p in out]
    assert all((b - a) & 0xFFFF == 1 for a, b in pairwise(seqs)), "capture has gaps"
    return out


def vp8() -> list[Pkt]:
    return stream("vp8_opus", VP8_PT)


def opus() -> list[Pkt]:
    return stream("vp8_opus", OPUS_PT)


def h264() -> list[Pkt]:
    return stream("h264", H264_PT)


def rewrite(
    p: Pkt, *, ssrc: int | None = None, seq_add: int = 0, ts_add: int = 0, t_add: float = 0.0
) -> Pkt:
    b0, b1, seq, ts, old_ssrc = struct.unpack_from("!BBHII", p.data)
    header = struct.pack(
        "!BBHII",
        b0,
        b1,
        (seq + seq_add) & 0xFFFF,
        (ts + ts_add) & 0xFFFFFFFF,
        old_ssrc if ssrc is None else ssrc,
    )
    return Pkt(p.t + t_add, header + p.data[12:])


def looped(packets: list[Pkt], times: int) -> list[Pkt]:
    """The capture played several times in a row as one continuous stream."""
    span_seq = len(packets)
    span_ts = (packets[-1].h.timestamp - packets[0].h.timestamp + 3000) & 0xFFFFFFFF
    span_t = packets[-1].t - packets[0].t + 0.033
    return [
        rewrite(p, seq_add=k * span_seq, ts_add=k * span_ts, t_add=k * span_t)
        for k in range(times)
        for p in packets
    ]


def keyframe_indexes(packets: list[Pkt], codec: str) -> list[int]:
    """Where keyframes start (one index per frame: an H.264 keyframe may have its SPS/PPS
    in a STAP-A before the IDR's first fragment, both "starting" it)."""
    detect = rtp.keyframe_detector(codec)
    assert detect is not None
    out: list[int] = []
    for i, p in enumerate(packets):
        if detect(p.payload) and not (out and packets[out[-1]].h.timestamp == p.h.timestamp):
            out.append(i)
    return out


# -- the core under test ----------------------------------------------------------------------


def video_up(
    codec: str = "video/VP8", *, nack: bool = True, ext: int = 3, bitrate: Bitrate | None = None
) -> Upstream:
    return Upstream(
        "pub.video",
        "video",
        codec,
        clock_rate=90_000,
        rtcp_ssrc=RTCP_SSRC,
        abs_send_time_id=ext,
        nack=nack,
        bitrate=bitrate,
    )


def audio_up(level_id: int = 2) -> Upstream:
    return Upstream(
        "pub.audio",
        "audio",
        "audio/opus",
        clock_rate=48_000,
        rtcp_ssrc=RTCP_SSRC,
        audio_level_id=level_id,
    )


_next_ssrc = iter(range(0x5000_0000, 0x6000_0000, 7))


def leg(**kw: Any) -> Leg:
    kw.setdefault("payload_type", 120)
    return Leg(object(), next(_next_ssrc), **kw)


def feed(
    up: Upstream, packets: list[Pkt], *, poll: list[bytes] | None = None
) -> list[tuple[Leg, bytes]]:
    out: list[tuple[Leg, bytes]] = []
    for p in packets:
        out += up.on_rtp(p.data, p.h, p.t)
        if poll is not None:
            poll += up.poll(p.t)
    return out


def only(out: list[tuple[Leg, bytes]], who: Leg) -> list[bytes]:
    return [data for lg, data in out if lg is who]


def rtcp(packets: list[bytes]) -> list[Any]:
    return [parsed for data in packets for parsed in RtcpPacket.parse(data)]


def plis(packets: list[bytes]) -> list[RtcpPsfbPacket]:
    return [p for p in rtcp(packets) if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI]


def nacks(packets: list[bytes]) -> list[RtcpRtpfbPacket]:
    return [p for p in rtcp(packets) if isinstance(p, RtcpRtpfbPacket) and p.fmt == RTCP_RTPFB_NACK]


def rembs(packets: list[bytes]) -> list[tuple[int, list[int]]]:
    return [
        unpack_remb_fci(p.fci)
        for p in rtcp(packets)
        if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_APP
    ]


def rrs(packets: list[bytes]) -> list[RtcpRrPacket]:
    return [p for p in rtcp(packets) if isinstance(p, RtcpRrPacket)]


# -- forwarding: a leg that joins mid-stream ------------------------------------------------

CODECS = [
    pytest.param(vp8, "video/VP8", id="vp8"),
    pytest.param(h264, "video/H264", id="h264"),
]


def _late_leg_run(source: Callable[[], list[Pkt]], codec: str):
    packets = source()
    keys = keyframe_indexes(packets, codec)
    join = keys[1] // 2  # well after the first keyframe, well before the next one
    assert keys[0] < join < keys[1]
    up = video_up(codec)
    early, late = leg(), leg(payload_type=101)
    up.add_leg(early, packets[0].t)
    out: list[tuple[int, Leg, bytes]] = []
    for i, p in enumerate(packets):
        if i == join:
            up.add_leg(late, p.t)
        out += [(i, lg, data) for lg, data in up.on_rtp(p.data, p.h, p.t)]
    return packets, keys, join, late, [(i, data) for i, lg, data in out if lg is late]


@pytest.mark.parametrize(("source", "codec"), CODECS)
def test_late_leg_waits_for_keyframe_then_forwards_every_packet(
    source: Callable[[], list[Pkt]], codec: str
) -> None:
    packets, keys, _, late, forwarded = _late_leg_run(source, codec)
    indexes = [i for i, _ in forwarded]
    assert indexes[0] == keys[1], "nothing before the next keyframe start, then that packet"
    assert indexes == list(range(keys[1], len(packets))), "then every later packet, once"

    first_in, first_out = packets[keys[1]].h, rtp.parse(forwarded[0][1])
    for i, data in forwarded:
        p, h = packets[i], rtp.parse(data)
        assert (h.ssrc, h.payload_type) == (late.ssrc, 101)
        assert h.marker == p.h.marker
        assert (h.seq - first_out.seq) & 0xFFFF == i - keys[1], "contiguous sequence numbers"
        assert (h.timestamp - p.h.timestamp) & 0xFFFFFFFF == (
            first_out.timestamp - first_in.timestamp
        ) & 0xFFFFFFFF, "timestamps shifted by one constant"
        assert data[h.payload_start : h.payload_end] == p.payload, "payload untouched"
        assert h.ext_start == -1 and not data[0] & 0x30 and data[0] & 0x0F == 0
        theirs = RtpPacket.parse(data)
        assert theirs.payload == p.payload and theirs.marker == p.h.marker
        assert theirs.sequence_number == h.seq and theirs.ssrc == late.ssrc


@pytest.mark.parametrize(("source", "codec"), CODECS)
def test_late_leg_stream_decodes_picture_by_picture(
    source: Callable[[], list[Pkt]], codec: str
) -> None:
    """What the subscriber sees: aiortc's depayloader and decoder turn the forwarded
    packets back into the publisher's pictures (pattern ident 1, consecutive counters)."""
    *_, forwarded = _late_leg_run(source, codec)
    depayload, decoder = (
        (vp8_depayload, Vp8Decoder()) if codec == "video/VP8" else (h264_depayload, H264Decoder())
    )
    frames: list[tuple[int, bytes]] = []
    for _, data in forwarded:
        h = rtp.parse(data)
        chunk = depayload(data[h.payload_start : h.payload_end])
        if frames and frames[-1][0] == h.timestamp:
            frames[-1] = (h.timestamp, frames[-1][1] + chunk)
        else:
            frames.append((h.timestamp, chunk))
    if forwarded and not rtp.parse(forwarded[-1][1]).marker:
        frames.pop()  # the capture ended mid-frame
    patterns = []
    for ts, frame in frames:
        decoded = decoder.decode(JitterFrame(data=frame, timestamp=ts))
        assert len(decoded) == 1, f"frame at ts {ts} did not decode"
        patterns.append(read_pattern(decoded[0]))
    assert len(patterns) > 10
    assert {ident for ident, _ in patterns} == {1}
    counters = [c for _, c in patterns]
    assert counters == list(range(counters[0], counters[0] + len(counters)))


# -- forwarding: header extensions per leg ---------------------------------------------------


EXT_CASES = [
    pytest.param(
        "audio",
        [
            dict(audio_level_id=5),
            dict(audio_level_id=9),
            dict(),
            dict(audio_level_id=1, abs_send_time_id=3),
        ],
        id="audio-levels",
    ),
    pytest.param(
        "video",
        [dict(abs_send_time_id=3), dict(abs_send_time_id=7), dict(), dict(abs_send_time_id=7)],
        id="video-abs-send-time",
    ),
]


@pytest.mark.parametrize(("kind", "leg_ids"), EXT_CASES)
def test_each_leg_gets_its_own_extension_ids(kind: str, leg_ids: list[dict[str, int]]) -> None:
    up, packets = (audio_up(), opus()) if kind == "audio" else (video_up(), vp8())
    legs = [leg(**ids) for ids in leg_ids]
    for lg in legs:
        up.add_leg(lg, packets[0].t)
    out = feed(up, packets[:60])
    for lg, ids in zip(legs, leg_ids, strict=True):
        sent = only(out, lg)
        assert len(sent) == 60
        for p, data in zip(packets[:60], sent, strict=True):
            h = rtp.parse(data)
            assert h.ssrc == lg.ssrc
            expected: dict[int, bytes] = {}
            if ids.get("audio_level_id"):
                level = rtp.find_extension(p.data, p.h, 2)
                assert level is not None
                expected[ids["audio_level_id"]] = level
            if ids.get("abs_send_time_id"):
                expected[ids["abs_send_time_id"]] = rtp.abs_send_time(p.t)
            assert rtp.extensions(data, h) == expected
            if not expected:
                assert h.ext_start == -1 and not data[0] & 0x10, "no extension block at all"
            assert data[h.payload_start : h.payload_end] == p.payload


def test_audio_level_is_tracked() -> None:
    up = audio_up()
    for p in opus()[:5]:
        up.on_rtp(p.data, p.h, p.t)
        assert up.audio_level == rtp.audio_level(rtp.find_extension(p.data, p.h, 2))
    assert up.audio_level is not None


# -- keyframe requests ---------------------------------------------------------------------

# Synthetic VP8 packets: the PLI logic only cares which packets start a keyframe.


def vp8_packet(seq: int, *, key: bool, ssrc: int = 0x1234) -> bytes:
    payload = bytes([0x10, 0x00 if key else 0x01, 0x9D, 0x01, 0x2A])
    return struct.pack("!BBHII", 0x80, 0x80 | VP8_PT, seq, seq * 3000, ssrc) + payload


PLI_STEPS = {
    # op, time since T0, PLIs the poll must emit (for polls)
    "new-leg-one-pli-then-deferred-not-dropped": [
        ("delta", 0.0),
        ("poll", 0.0, 0),
        ("add", 0.0),
        ("poll", 0.0, 1),
        ("poll", 0.01, 0),
        ("add", 0.05),
        ("poll", 0.1, 0),
        ("poll", 0.2, 0),
        ("poll", 0.31, 1),
        ("poll", 0.35, 0),
    ],
    "waiting-leg-re-requests-every-second": [
        ("delta", 0.0),
        ("add", 0.0),
        ("poll", 0.0, 1),
        ("poll", 0.5, 0),
        ("poll", 0.99, 0),
        ("poll", 1.0, 1),
        ("delta", 1.2),
        ("poll", 1.5, 0),
        ("poll", 2.0, 1),
        ("poll", 2.5, 0),
    ],
    "keyframe-arrives-no-more-requests": [
        ("delta", 0.0),
        ("add", 0.0),
        ("poll", 0.0, 1),
        ("key", 0.2),
        ("poll", 1.2, 0),
        ("poll", 3.0, 0),
        ("delta", 3.1),
        ("poll", 5.0, 0),
    ],
    "leg-before-first-packet-request-kept": [
        ("add", 0.0),
        ("poll", 0.0, 0),
        ("poll", 0.5, 0),
        ("delta", 0.6),
        ("poll", 0.6, 1),
    ],
    "subscriber-plis-coalesced-and-deferred": [
        ("add", 0.0),
        ("key", 0.0),
        ("poll", 0.0, 1),
        ("poll", 1.0, 0),
        ("pli", 1.0),
        ("poll", 1.0, 1),
        ("pli", 1.1),
        ("pli", 1.2),
        ("poll", 1.2, 0),
        ("poll", 1.29, 0),
        ("poll", 1.3, 1),
        ("poll", 1.4, 0),
        ("poll", 3.0, 0),
    ],
    "pli-from-waiting-leg-needs-no-extra": [
        ("delta", 0.0),
        ("add", 0.0),
        ("poll", 0.0, 1),
        ("pli", 0.1),
        ("poll", 0.5, 0),
        ("poll", 1.0, 1),
    ],
}


@pytest.mark.parametrize("steps", list(PLI_STEPS.values()), ids=list(PLI_STEPS))
def test_keyframe_requests(steps: list[tuple]) -> None:
    up = video_up()
    legs: list[Leg] = []
    seq = 100
    for step in steps:
        op, at = step[0], T0 + step[1]
        if op in ("delta", "key"):
            data = vp8_packet(seq, key=op == "key")
            seq += 1
            up.on_rtp(data, rtp.parse(data), at)
        elif op == "add":
            legs.append(leg())
            up.add_leg(legs[-1], at)
        elif op == "pli":
            up.on_keyframe_request(legs[0], at)
        else:
            sent = plis(up.poll(at))
            assert len(sent) == step[2], f"poll at +{step[1]}s"
            for pli in sent:
                assert (pli.ssrc, pli.media_ssrc) == (RTCP_SSRC, 0x1234)


def test_audio_never_requests_keyframes() -> None:
    up, packets = audio_up(), opus()
    lg = leg()
    up.add_leg(lg, packets[0].t)
    out: list[bytes] = []
    sent = feed(up, packets, poll=out)
    up.on_keyframe_request(lg, packets[-1].t)
    out += up.poll(packets[-1].t + 5)
    assert plis(out) == []
    assert len(only(sent, lg)) == len(packets), "audio legs start at once"
    assert not rembs(out) and not nacks(out)


# -- NACK toward the publisher --------------------------------------------------------------

DROPS = [
    pytest.param({20}, id="one"),
    pytest.param({20, 21, 22}, id="burst-of-3"),
    pytest.param({20, 30, 45}, id="three-apart"),
    pytest.param(set(range(20, 36)), id="burst-of-16"),
]


@pytest.mark.parametrize("dropped", DROPS)
def test_nack_names_exactly_the_missing(dropped: set[int]) -> None:
    packets = vp8()[:60]
    up = video_up()
    missing_seqs = {packets[i].h.seq for i in dropped}
    asked: dict[int, list[float]] = {}
    for i, p in enumerate(packets):
        if i in dropped:
            continue
        up.on_rtp(p.data, p.h, p.t)
        for nack in nacks(up.poll(p.t)):
            assert (nack.ssrc, nack.media_ssrc) == (RTCP_SSRC, p.h.ssrc)
            for s in nack.lost:
                asked.setdefault(s, []).append(p.t)
    assert set(asked) == missing_seqs
    for i in dropped:  # asked for as soon as the gap shows (a burst in one go)
        shows = min(k for k in range(i + 1, len(packets)) if k not in dropped)
        assert asked[packets[i].h.seq][0] == packets[shows].t
    for times in asked.values():
        assert len(times) <= fw.NACK_MAX_TRIES


def test_nack_retries_are_bounded() -> None:
    packets = vp8()[:30]
    up = video_up()
    feed(up, packets[:10] + packets[11:12])
    lost = packets[10].h.seq
    start = packets[11].t
    times = []
    t = start
    while t < start + 3:
        if any(lost in n.lost for n in nacks(up.poll(t))):
            times.append(t)
        t += 0.01
    assert 1 <= len(times) <= fw.NACK_MAX_TRIES
    assert times[0] == start, "the first NACK goes out at the first poll"
    assert times[-1] - start <= fw.NACK_MAX_AGE
    assert all(b - a >= fw.NACK_INTERVAL - 1e-9 for a, b in pairwise(times))
    assert not up.missing, "given up after its last try"


def rtx_of(
    p: Pkt, *, rtx_seq: int, rtx_ssrc: int = 0x7777, rtx_pt: int = 98, padding: int = 0
) -> Pkt:
    h = p.h
    header = bytearray(p.data[: h.payload_start])
    header[0] |= 0x20 if padding else 0
    struct.pack_into(
        "!BBHII", header, 0, header[0], (h.marker << 7) | rtx_pt, rtx_seq, h.timestamp, rtx_ssrc
    )
    pad = b"\x00" * (padding - 1) + bytes([padding]) if padding else b""
    return Pkt(p.t, bytes(header) + struct.pack("!H", h.seq) + p.payload + pad)


@pytest.mark.parametrize("recovery", ["late-rtp", "rtx", "rtx-padded"])
def test_recovered_packet_is_forwarded_in_place_and_no_longer_nacked(recovery: str) -> None:
    packets = vp8()[:40]
    up = video_up()
    lg = leg()
    up.add_leg(lg, packets[0].t)
    lost = 15
    out = feed(up, packets[:lost] + packets[lost + 1 : 20])
    sent = {rtp.parse(d).seq: d for d in only(out, lg)}
    assert nacks(up.poll(packets[19].t))[0].lost == [packets[lost].h.seq]

    p = packets[lost]
    now = packets[19].t + 0.02
    if recovery == "late-rtp":
        recovered = up.on_rtp(p.data, p.h, now)
    else:
        r = rtx_of(p, rtx_seq=500, padding=4 if recovery == "rtx-padded" else 0)
        recovered = up.on_rtx(r.data, r.h, now)
        assert up.on_rtx(r.data, r.h, now) == [], "a second copy is not forwarded again"
    assert [lg_ for lg_, _ in recovered] == [lg]
    data = recovered[0][1]
    h = rtp.parse(data)
    first = rtp.parse(only(out, lg)[0])  # the leg's copy of packets[0]
    assert h.seq == (first.seq + lost) & 0xFFFF, "the gap is filled at the original's place"
    assert (h.seq - 1) & 0xFFFF in sent and (h.seq + 1) & 0xFFFF in sent and h.seq not in sent
    after = rtp.parse(sent[(h.seq + 1) & 0xFFFF])
    assert (h.ssrc, h.payload_type, h.marker) == (lg.ssrc, lg.payload_type, p.h.marker)
    assert (h.timestamp - p.h.timestamp) & 0xFFFFFFFF == (
        after.timestamp - packets[lost + 1].h.timestamp
    ) & 0xFFFFFFFF
    assert data[h.payload_start : h.payload_end] == p.payload
    RtpPacket.parse(data)
    later: list[bytes] = []
    for k in range(1, 100):
        later += up.poll(now + k * 0.01)
    assert all(p.h.seq not in n.lost for n in nacks(later))


def test_rtx_not_asked_for_is_dropped() -> None:
    packets = vp8()[:20]
    up = video_up()
    lg = leg()
    up.add_leg(lg, packets[0].t)
    feed(up, packets)
    r = rtx_of(packets[5], rtx_seq=1)
    assert up.on_rtx(r.data, r.h, packets[-1].t) == []
    empty = rtx_of(packets[5], rtx_seq=2)
    probe = Pkt(empty.t, empty.data[: empty.h.payload_start])  # bandwidth probe: no OSN
    assert up.on_rtx(probe.data, probe.h, packets[-1].t) == []


# -- NACK from subscribers ------------------------------------------------------------------


@pytest.mark.parametrize("with_rtx", [True, False], ids=["rtx", "plain-resend"])
def test_subscriber_nack_answered_from_cache(with_rtx: bool) -> None:
    packets = vp8()[:80]
    up = video_up()
    lg = leg(rtx_ssrc=0xAB0001, rtx_payload_type=121) if with_rtx else leg()
    up.add_leg(lg, packets[0].t)
    sent = {rtp.parse(d).seq: d for d in only(feed(up, packets), lg)}
    want = sorted(sent)[40:43]
    now = packets[-1].t
    resent = up.on_nack(lg, want, now)
    assert [lg_ for lg_, _ in resent] == [lg] * 3
    rtx_seqs = []
    for out_seq, (_, data) in zip(want, resent, strict=True):
        original = sent[out_seq]
        oh, h = rtp.parse(original), rtp.parse(data)
        opayload = original[oh.payload_start : oh.payload_end]
        payload = data[h.payload_start : h.payload_end]
        assert h.timestamp == oh.timestamp and h.marker == oh.marker
        if with_rtx:
            assert (h.ssrc, h.payload_type) == (0xAB0001, 121)
            assert struct.unpack("!H", payload[:2])[0] == out_seq, "OSN first"
            assert payload[2:] == opayload
            rtx_seqs.append(h.seq)
        else:
            assert (h.ssrc, h.payload_type, h.seq) == (lg.ssrc, lg.payload_type, out_seq)
            assert payload == opayload
        RtpPacket.parse(data)
    if with_rtx:
        assert [(s - rtx_seqs[0]) & 0xFFFF for s in rtx_seqs] == [0, 1, 2], "own RTX numbering"

    assert up.on_nack(lg, want, now + 0.03) == [], "not twice within 50 ms"
    assert len(up.on_nack(lg, [*want, want[-1] + 1], now + 0.03)) == 1, "only the new one"
    assert len(up.on_nack(lg, want, now + 0.06)) == 3, "again after 50 ms"


def test_subscriber_nack_for_what_the_cache_no_longer_has() -> None:
    packets = looped(vp8(), (fw.CACHE_SIZE // len(vp8())) + 2)
    assert len(packets) > fw.CACHE_SIZE + 50
    up = video_up()
    lg = leg()
    up.add_leg(lg, packets[0].t)
    sent = [rtp.parse(d).seq for d in only(feed(up, packets), lg)]
    assert len(sent) == len(packets)
    now = packets[-1].t
    assert up.on_nack(lg, sent[:5], now) == [], "older than the cache"
    assert up.on_nack(lg, [(sent[-1] + 10) & 0xFFFF], now) == [], "never sent"
    assert len(up.on_nack(lg, sent[-fw.CACHE_SIZE + 1 : -fw.CACHE_SIZE + 3], now)) == 2


def test_subscriber_nack_ignored_without_nack_or_before_start() -> None:
    packets = vp8()[:10]
    up = video_up(nack=False)
    lg = leg()
    up.add_leg(lg, packets[0].t)
    sent = [rtp.parse(d).seq for d in only(feed(up, packets), lg)]
    assert up.on_nack(lg, sent[2:4], packets[-1].t) == []
    up2 = video_up()
    waiting = leg()
    feed(up2, packets[:1])
    up2.add_leg(waiting, packets[1].t)
    feed(up2, packets[1:])
    assert up2.on_nack(waiting, list(range(100)), packets[-1].t) == []


# -- REMB ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimates", "expected"),
    [
        pytest.param([], 2_000_000, id="no-legs-max"),
        pytest.param([None, None], 2_000_000, id="no-estimates-max"),
        pytest.param([900_000, 300_000, 700_000], 300_000, id="minimum"),
        pytest.param([None, 400_000], 400_000, id="ignores-unknown"),
        pytest.param([50_000, 900_000], 200_000, id="clamped-to-min"),
        pytest.param([9_000_000], 2_000_000, id="clamped-to-max"),
    ],
)
def test_target_bitrate(estimates: list[int | None], expected: int) -> None:
    up = video_up(bitrate=Bitrate(200_000, 2_000_000))
    for estimate in estimates:
        lg = leg()
        up.add_leg(lg, T0)
        if estimate is not None:
            up.on_remb(lg, estimate, T0)
    assert up.target_bitrate() == expected


def _remb_times(
    up: Upstream,
    start: float,
    end: float,
    step: float = 0.05,
    events: dict[float, Callable[[float], None]] | None = None,
) -> list[tuple[float, int]]:
    out = []
    k = 0
    while start + k * step <= end + 1e-9:
        t = round(start + k * step, 6)
        for at, event in (events or {}).items():
            if abs(at - t) < 1e-9:
                event(t)
        for bps, ssrcs in rembs(up.poll(t)):
            assert ssrcs == [up.ssrc]
            out.append((t, bps))
        k += 1
    return out


def test_remb_about_once_a_second() -> None:
    packets = vp8()
    up = video_up(bitrate=Bitrate(200_000, 2_000_000))
    a, b = leg(), leg()
    up.add_leg(a, T0)
    up.add_leg(b, T0)
    feed(up, packets[:1])
    up.on_remb(a, 800_000, T0)
    up.on_remb(b, 1_200_000, T0)
    sent = _remb_times(up, T0, T0 + 4.0)
    times = [t for t, _ in sent]
    assert len(sent) in (4, 5)
    assert all(0.99 <= b_ - a_ <= 1.1 for a_, b_ in pairwise(times))
    for _, bps in sent:
        assert 0.999 * 800_000 <= bps <= 800_000


@pytest.mark.parametrize(
    ("first", "then", "immediate"),
    [
        pytest.param(1_000_000, 950_000, False, id="down-5pct-waits"),
        pytest.param(1_000_000, 900_000, False, id="down-10pct-waits"),
        pytest.param(1_000_000, 850_000, True, id="down-15pct-now"),
        pytest.param(1_000_000, 300_000, True, id="collapse-now"),
        pytest.param(1_000_000, 1_500_000, False, id="up-waits"),
    ],
)
def test_remb_sent_at_once_when_a_leg_slows_down(first: int, then: int, immediate: bool) -> None:
    up = video_up(bitrate=Bitrate(100_000, 5_000_000))
    lg = leg()
    up.add_leg(lg, T0)
    feed(up, vp8()[:1])
    up.on_remb(lg, first, T0)
    events = {T0 + 0.3: lambda t: up.on_remb(lg, then, t)}
    sent = _remb_times(up, T0, T0 + 1.2, events=events)
    assert sent[0][0] == T0 and sent[0][1] == pytest.approx(first, rel=1e-3)
    expected_at = T0 + 0.3 if immediate else T0 + 1.0
    assert sent[1][0] == pytest.approx(expected_at)
    assert sent[1][1] == pytest.approx(then, rel=1e-3)


# -- receiver reports ----------------------------------------------------------------------

LOSS = [
    pytest.param(set(), id="no-loss"),
    pytest.param({50}, id="one"),
    pytest.param({10, 11, 12, 13, 14}, id="burst-5"),
    pytest.param(set(range(5, 95, 10)), id="every-10th"),
]


@pytest.mark.parametrize("first_seq", [1000, 65500], ids=["no-wrap", "wrap"])
@pytest.mark.parametrize("dropped", LOSS)
def test_receiver_report_matches_input(dropped: set[int], first_seq: int) -> None:
    base = vp8()
    shift = (first_seq - base[0].h.seq) & 0xFFFF
    packets = [rewrite(p, seq_add=shift) for p in base[:150]]
    up = video_up()
    feed(up, [p for i, p in enumerate(packets[:100]) if i not in dropped])
    reports = rrs(up.poll(packets[99].t))
    assert len(reports) == 1 and reports[0].ssrc == RTCP_SSRC
    (report,) = reports[0].reports
    last = first_seq + 99
    assert report.ssrc == packets[0].h.ssrc
    assert report.highest_sequence == last, "extended: cycles count the wrap"
    assert report.packets_lost == len(dropped)
    assert report.fraction_lost == (len(dropped) * 256) // 100
    assert 0 <= report.jitter < 90_000

    feed(up, packets[100:150])
    assert rrs(up.poll(packets[99].t + 0.5)) == [], "about once a second"
    (second,) = rrs(up.poll(packets[99].t + 1.0))[0].reports
    assert second.fraction_lost == 0, "nothing lost in this interval"
    assert second.packets_lost == len(dropped), "cumulative"
    assert second.highest_sequence == first_seq + 149


def test_late_packet_is_not_reported_lost() -> None:
    packets = vp8()[:30]
    up = video_up()
    feed(up, packets[:10] + packets[11:])
    feed(up, packets[10:11])
    (report,) = rrs(up.poll(packets[-1].t))[0].reports
    assert (report.packets_lost, report.fraction_lost) == (0, 0)


def test_receiver_report_echoes_last_sender_report() -> None:
    packets = vp8()[:30]
    up = video_up()
    feed(up, packets)
    ntp = 0x1122334455667788
    up.on_sender_report(ntp, 123, packets[-1].t)
    (report,) = rrs(up.poll(packets[-1].t + 0.25))[0].reports
    assert report.lsr == 0x33445566
    assert report.dlsr == pytest.approx(0.25 * 65536, abs=2)


def test_sender_reports_per_started_leg() -> None:
    packets = vp8()
    keys = keyframe_indexes(packets, "video/VP8")
    up = video_up()
    a, b, waiting = leg(), leg(payload_type=100), leg()
    up.add_leg(a, packets[0].t)
    up.add_leg(b, packets[0].t)
    out = feed(up, packets[: keys[1] - 5])
    up.add_leg(waiting, packets[keys[1] - 5].t)
    out += feed(up, packets[keys[1] - 5 : keys[1]])
    last = packets[keys[1] - 1]
    ntp, in_rtp = 0xE000000012345678, (last.h.timestamp + 1500) & 0xFFFFFFFF
    srs = up.on_sender_report(ntp, in_rtp, last.t)
    assert [lg for lg, _ in srs] == [a, b], "only legs that forward something"
    for lg, data in srs:
        (sr,) = RtcpPacket.parse(data)
        assert isinstance(sr, RtcpSrPacket)
        assert sr.ssrc == lg.ssrc
        info = sr.sender_info
        assert info.ntp_timestamp == ntp
        sent = only(out, lg)
        last_out = rtp.parse(sent[-1])
        assert (info.rtp_timestamp - last_out.timestamp) & 0xFFFFFFFF == 1500, (
            "the SR maps the leg's timestamps to the publisher's wall clock"
        )
        assert info.packet_count == len(sent)
        assert info.octet_count == sum(
            rtp.parse(d).payload_end - rtp.parse(d).payload_start for d in sent
        )


# -- publisher restart (new SSRC) -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_publisher_restart_keeps_leg_numbering(kind: str) -> None:
    if kind == "video":
        packets, up = vp8(), video_up()
        keys = keyframe_indexes(packets, "video/VP8")
    else:
        packets, up = opus(), audio_up()
        keys = [0, 40]
    lg = leg()
    up.add_leg(lg, packets[0].t)
    before = only(feed(up, packets[:30]), lg)
    assert len(before) == 30
    last = rtp.parse(before[-1])

    # the publisher restarts: new SSRC, unrelated seq and timestamp, mid-GOP for video
    dt = packets[30].t - packets[keys[1] - 10].t + 2.0
    restarted = [
        rewrite(p, ssrc=0x0BEEF000, seq_add=20_000, ts_add=777_777, t_add=dt)
        for p in packets[keys[1] - 10 :]
    ]
    rtcp_out: list[bytes] = []
    after = only(feed(up, restarted, poll=rtcp_out), lg)
    if kind == "video":
        assert len(after) == len(restarted) - 10, "waits for the new source's keyframe"
        first_pli = plis(rtcp_out)[0]
        assert first_pli.media_ssrc == 0x0BEEF000, "asks the new source"
    else:
        assert len(after) == len(restarted), "audio continues at once"
    hs = [rtp.parse(d) for d in after]
    assert hs[0].seq == (last.seq + 1) & 0xFFFF, "the leg's numbering goes on, no jump"
    assert all((b.seq - a.seq) & 0xFFFF == 1 for a, b in pairwise(hs))
    assert {h.ssrc for h in hs} == {lg.ssrc}
    assert {h.payload_type for h in hs} == {lg.payload_type}


def test_receiver_report_after_restart_describes_the_new_source() -> None:
    packets = vp8()
    up = video_up()
    feed(up, packets[:100])
    rrs(up.poll(packets[99].t))
    restarted = [rewrite(p, ssrc=0x0BEEF000, seq_add=20_000, t_add=5.0) for p in packets[:60]]
    feed(up, [p for i, p in enumerate(restarted) if i not in (10, 20, 30)])
    (report,) = rrs(up.poll(restarted[-1].t))[0].reports
    assert report.ssrc == 0x0BEEF000
    assert report.highest_sequence == restarted[-1].h.seq
    assert report.packets_lost == 3
    assert report.fraction_lost == (3 * 256) // 60
