"""media_server/rtp.py: the RTP wire format of the forwarding path (sans-IO, table-driven).

Packets are built here byte by byte (not with rtp.py itself), cross-checked against
aiortc's own parser, and real captured streams (tests/data/*.rtpdump.json, made by
tests/data/capture_rtp.py) are run through the codec detectors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    HeaderExtensionsMap,
    RtpPacket,
    pack_header_extensions,
    unpack_header_extensions,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media_server import rtp

DATA = Path(__file__).parent / "data"


def build(
    *,
    pt: int = 96,
    seq: int = 1,
    ts: int = 0,
    ssrc: int = 0x11223344,
    marker: int = 0,
    csrcs: tuple[int, ...] = (),
    ext: tuple[int, bytes] | None = None,
    payload: bytes = b"",
    padding: int = 0,
    version: int = 2,
) -> bytes:
    """An RTP packet, byte by byte (ext: profile and the raw element bytes, 32-bit padded)."""
    b0 = (version << 6) | (0x20 if padding else 0) | (0x10 if ext else 0) | len(csrcs)
    out = struct.pack("!BBHII", b0, (marker << 7) | pt, seq, ts, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext is not None:
        profile, body = ext
        assert len(body) % 4 == 0
        out += struct.pack("!HH", profile, len(body) // 4) + body
    out += payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes([padding])
    return out


def load(name: str) -> list[bytes]:
    return [bytes.fromhex(e["hex"]) for e in json.loads((DATA / name).read_text())]


# -- parse ---------------------------------------------------------------------------------

ONE_BYTE_EXT = (0xBEDE, bytes([0x10, 0x31, 0x22, 0x9E, 0x00, 0x00, 0x00, 0x00]))
TWO_BYTE_EXT = (0x1000, bytes([0x01, 0x01, 0x31, 0x00, 0x20, 0x03, 0x01, 0x02, 0x03, 0, 0, 0]))

PARSE_OK = [
    pytest.param(dict(payload=b"hello"), id="plain"),
    pytest.param(dict(payload=b""), id="empty-payload"),
    pytest.param(dict(marker=1, pt=127, seq=0xFFFF, ts=0xFFFFFFFF, payload=b"x"), id="max-fields"),
    pytest.param(dict(csrcs=(1, 2), payload=b"abc"), id="two-csrcs"),
    pytest.param(dict(csrcs=tuple(range(15)), payload=b"abc"), id="fifteen-csrcs"),
    pytest.param(dict(ext=ONE_BYTE_EXT, payload=b"abc"), id="one-byte-ext"),
    pytest.param(dict(ext=TWO_BYTE_EXT, payload=b"abc"), id="two-byte-ext"),
    pytest.param(dict(ext=(0xBEDE, b""), payload=b"abc"), id="empty-ext-block"),
    pytest.param(dict(payload=b"abcd", padding=4), id="padding"),
    pytest.param(dict(payload=b"", padding=1), id="padding-only-one-byte"),
    pytest.param(
        dict(csrcs=(7,), ext=ONE_BYTE_EXT, payload=b"abcdef", padding=3, marker=1),
        id="csrc-ext-padding",
    ),
]


@pytest.mark.parametrize("fields", PARSE_OK)
def test_parse(fields: dict) -> None:
    data = build(**fields)
    h = rtp.parse(data)
    assert (h.marker, h.payload_type, h.seq, h.timestamp, h.ssrc) == (
        fields.get("marker", 0),
        fields.get("pt", 96),
        fields.get("seq", 1),
        fields.get("ts", 0),
        fields.get("ssrc", 0x11223344),
    )
    assert data[h.payload_start : h.payload_end] == fields["payload"]
    ext = fields.get("ext")
    if ext is None:
        assert h.ext_start == h.ext_end == -1
    else:
        assert h.ext_profile == ext[0]
        assert data[h.ext_start : h.ext_end] == ext[1]
        assert h.ext_start == 12 + 4 * len(fields.get("csrcs", ())) + 4


PARSE_ERRORS = [
    pytest.param(b"", "shorter than 12", id="empty"),
    pytest.param(build()[:11], "shorter than 12", id="11-bytes"),
    pytest.param(build(version=1), "version", id="version-1"),
    pytest.param(build(version=0), "version", id="version-0"),
    pytest.param(build(version=3), "version", id="version-3"),
    pytest.param(build(csrcs=(1, 2, 3))[:20], "longer than packet", id="truncated-csrc"),
    pytest.param(build(csrcs=(1,), payload=b"")[:15], "longer than packet", id="csrc-cut-short"),
    pytest.param(build(ext=ONE_BYTE_EXT)[:14], "truncated header extension", id="ext-header-cut"),
    pytest.param(build(ext=ONE_BYTE_EXT)[:18], "longer than packet", id="ext-body-cut"),
    pytest.param(
        build(ext=(0xBEDE, b""))[:12] + struct.pack("!HH", 0xBEDE, 0xFFFF),
        "longer",
        id="ext-len-huge",
    ),
    pytest.param(build(payload=b"ab", padding=1)[:-1] + b"\x00", "bad padding", id="padding-0"),
    pytest.param(build(payload=b"ab", padding=1)[:-1] + b"\x04", "longer", id="padding-too-long"),
    pytest.param(
        build(ext=ONE_BYTE_EXT, payload=b"ab", padding=1)[:-1] + b"\x08",
        "longer",
        id="pad-eats-ext",
    ),
    pytest.param(bytes([0xA0]) + bytes(11), "bad padding", id="padding-bit-header-only"),
    pytest.param(bytes([0x8F]) + bytes(11), "longer than packet", id="cc-15-no-csrcs"),
]


@pytest.mark.parametrize(("data", "message"), PARSE_ERRORS)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(rtp.RtpError, match=message):
        rtp.parse(data)


@given(st.binary(max_size=64))
@settings(max_examples=500)
def test_parse_never_crashes_otherwise(data: bytes) -> None:
    """Garbage either parses into in-bounds offsets or raises RtpError (never IndexError),
    and nothing downstream of a successful parse raises either."""
    try:
        h = rtp.parse(data)
    except rtp.RtpError:
        return
    assert 12 <= h.payload_start <= h.payload_end <= len(data)
    if h.ext_start >= 0:
        assert h.ext_start <= h.ext_end <= h.payload_start
    rtp.extensions(data, h)
    for ident in (1, 2, 14, 15, 200):
        rtp.find_extension(data, h, ident)
    rtp.rtx_unwrap(data, h)
    payload = memoryview(data)[h.payload_start : h.payload_end]
    rtp.vp8_keyframe_start(payload)
    rtp.h264_keyframe_start(payload)


@given(st.binary(max_size=24))
def test_keyframe_detectors_never_crash(payload: bytes) -> None:
    assert rtp.vp8_keyframe_start(payload) in (True, False)
    assert rtp.h264_keyframe_start(payload) in (True, False)


# -- cross-check against aiortc's parser ------------------------------------------------------


@st.composite
def random_packets(draw: st.DrawFn) -> bytes:
    """Any header layout, extension elements packed by aiortc (one- or two-byte form)."""
    elements = draw(
        st.lists(
            st.tuples(st.integers(1, 255), st.binary(min_size=0, max_size=20)),
            max_size=4,
            unique_by=lambda e: e[0],
        )
    )
    ext = None
    if elements:
        ext = pack_header_extensions(elements)
    elif draw(st.booleans()):
        ext = (0xBEDE, b"")  # an extension block with no elements
    return build(
        pt=draw(st.integers(0, 127)),
        seq=draw(st.integers(0, 0xFFFF)),
        ts=draw(st.integers(0, 0xFFFFFFFF)),
        ssrc=draw(st.integers(0, 0xFFFFFFFF)),
        marker=draw(st.integers(0, 1)),
        csrcs=tuple(draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=15))),
        ext=ext,
        payload=draw(st.binary(max_size=40)),
        padding=draw(st.integers(0, 255)),
    )


@given(random_packets())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_parse_agrees_with_aiortc(data: bytes) -> None:
    h = rtp.parse(data)
    theirs = RtpPacket.parse(data)
    assert (h.marker, h.payload_type, h.seq, h.timestamp, h.ssrc) == (
        theirs.marker,
        theirs.payload_type,
        theirs.sequence_number,
        theirs.timestamp,
        theirs.ssrc,
    )
    assert data[h.payload_start : h.payload_end] == theirs.payload
    if h.ext_start >= 0:
        elements = unpack_header_extensions(h.ext_profile, data[h.ext_start : h.ext_end])
        assert rtp.extensions(data, h) == dict(elements)
        for ident, value in elements:
            assert rtp.find_extension(data, h, ident) == value


@given(st.binary(min_size=12, max_size=48))
@settings(max_examples=500)
def test_parse_no_more_lenient_than_aiortc(data: bytes) -> None:
    """Where aiortc refuses a packet for its header (not its extension contents), so do we."""
    try:
        h = rtp.parse(data)
    except rtp.RtpError:
        return
    try:
        theirs = RtpPacket.parse(data)
    except ValueError:
        assert h.ext_start >= 0, "aiortc refused a header that rtp.parse accepted"
        with pytest.raises(ValueError):
            unpack_header_extensions(h.ext_profile, data[h.ext_start : h.ext_end])
        return
    assert data[h.payload_start : h.payload_end] == theirs.payload


@given(
    mid=st.text(alphabet="0123456789abc", min_size=1, max_size=3),
    level=st.tuples(st.booleans(), st.integers(0, 127)),
    send_time=st.integers(0, 0xFFFFFF),
    payload=st.binary(max_size=30),
    padding=st.integers(0, 32),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=3),
)
def test_parse_reads_what_aiortc_serializes(
    mid: str, level: tuple[bool, int], send_time: int, payload: bytes, padding: int, csrcs: list
) -> None:
    params = RTCRtpParameters(
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=1, uri=rtp.URI_MID),
            RTCRtpHeaderExtensionParameters(id=2, uri=rtp.URI_AUDIO_LEVEL),
            RTCRtpHeaderExtensionParameters(id=3, uri=rtp.URI_ABS_SEND_TIME),
        ]
    )
    ext_map = HeaderExtensionsMap()
    ext_map.configure(params)
    packet = RtpPacket(payload_type=111, marker=1, sequence_number=7, timestamp=9, ssrc=5)
    packet.payload = payload
    packet.padding_size = padding
    packet.csrc = csrcs
    packet.extensions.mid = mid
    packet.extensions.audio_level = level
    packet.extensions.abs_send_time = send_time
    data = packet.serialize(ext_map)

    h = rtp.parse(data)
    assert (h.marker, h.payload_type, h.seq, h.timestamp, h.ssrc) == (1, 111, 7, 9, 5)
    assert data[h.payload_start : h.payload_end] == payload
    assert rtp.extensions(data, h) == {
        1: mid.encode(),
        2: bytes([(0x80 if level[0] else 0) | level[1]]),
        3: send_time.to_bytes(3, "big"),
    }
    assert rtp.audio_level(rtp.find_extension(data, h, 2)) == level


# -- extensions ------------------------------------------------------------------------------

EXTENSION_CASES = [
    pytest.param(
        0xBEDE,
        bytes([0x10, 0xAA, 0x21, 0xBB, 0xCC, 0, 0, 0]),
        {1: b"\xaa", 2: b"\xbb\xcc"},
        id="one-byte",
    ),
    pytest.param(
        0xBEDE,
        bytes([0x10, 0xAA, 0, 0, 0x21, 0xBB, 0xCC, 0]),
        {1: b"\xaa", 2: b"\xbb\xcc"},
        id="one-byte-padding-between",
    ),
    pytest.param(
        0xBEDE, bytes([0, 0, 0, 0x30, 0x01, 0, 0, 0]), {3: b"\x01"}, id="one-byte-leading-padding"
    ),
    pytest.param(
        0xBEDE,
        bytes([0xEF]) + bytes(range(16)) + bytes(3),
        {14: bytes(range(16))},
        id="one-byte-16-byte-value",
    ),
    pytest.param(
        0xBEDE,
        bytes([0x10, 0xAA, 0xF3, 0x21, 0xBB, 0xCC, 0, 0]),
        {1: b"\xaa"},
        id="one-byte-id15-stops",
    ),
    pytest.param(0xBEDE, bytes([0xF0, 0x10, 0xAA, 0]), {}, id="one-byte-id15-first"),
    pytest.param(
        0x1000,
        bytes([1, 1, 0xAA, 0, 0, 2, 2, 0xBB, 0xCC, 0, 0, 0]),
        {1: b"\xaa", 2: b"\xbb\xcc"},
        id="two-byte-padding-between",
    ),
    pytest.param(
        0x1000,
        bytes([200, 0, 15, 1, 0x55, 0, 0, 0]),
        {200: b"", 15: b"\x55"},
        id="two-byte-empty-value-and-id15",
    ),
    pytest.param(
        0x1000,
        bytes([16, 17]) + bytes(range(17)) + bytes(1),
        {16: bytes(range(17))},
        id="two-byte-long-value",
    ),
    pytest.param(0x1003, bytes([5, 1, 0x42, 0]), {5: b"\x42"}, id="two-byte-appbits"),
    pytest.param(0x1234, bytes([0x10, 0xAA, 0, 0]), {}, id="unknown-profile"),
]


@pytest.mark.parametrize(("profile", "body", "expected"), EXTENSION_CASES)
def test_extensions(profile: int, body: bytes, expected: dict[int, bytes]) -> None:
    data = build(ext=(profile, body), payload=b"payload")
    h = rtp.parse(data)
    assert rtp.extensions(data, h) == expected
    for ident in range(1, 256):
        assert rtp.find_extension(data, h, ident) == expected.get(ident), f"id {ident}"


def test_no_extension_block() -> None:
    data = build(payload=b"\x10\xaa")
    h = rtp.parse(data)
    assert rtp.extensions(data, h) == {}
    assert rtp.find_extension(data, h, 1) is None


BUILD_CASES = [
    pytest.param([], None, id="none"),
    pytest.param([(1, b"0")], 0xBEDE, id="one-byte-mid"),
    pytest.param([(2, b"\x9e"), (3, b"\x01\x02\x03")], 0xBEDE, id="one-byte-level-and-time"),
    pytest.param([(14, bytes(16))], 0xBEDE, id="one-byte-largest"),
    pytest.param([(1, bytes(17))], 0x1000, id="value-17-bytes-two-byte"),
    pytest.param([(15, b"x")], 0x1000, id="id15-two-byte"),
    pytest.param([(20, b"x"), (1, b"ab")], 0x1000, id="id20-two-byte"),
    pytest.param([(3, b"")], 0x1000, id="empty-value-two-byte"),
    pytest.param([(1, b"a"), (2, b"bc"), (3, b"def"), (4, b"ghij")], 0xBEDE, id="four-elements"),
]


@pytest.mark.parametrize(("elements", "profile"), BUILD_CASES)
def test_build_extensions_round_trips(
    elements: list[tuple[int, bytes]], profile: int | None
) -> None:
    block = rtp.build_extensions(elements)
    if profile is None:
        assert block == b""
        return
    assert len(block) % 4 == 0, "the block must be padded to 32 bits"
    assert struct.unpack("!H", block[:2])[0] == profile
    assert struct.unpack("!H", block[2:4])[0] == len(block) // 4 - 1
    data = build()[:12]
    data = bytes([data[0] | 0x10]) + data[1:] + block + b"payload"
    h = rtp.parse(data)
    assert data[h.payload_start : h.payload_end] == b"payload"
    assert rtp.extensions(data, h) == dict(elements)
    assert dict(unpack_header_extensions(h.ext_profile, data[h.ext_start : h.ext_end])) == dict(
        elements
    )
    for ident, value in elements:
        assert rtp.find_extension(data, h, ident) == value


# -- audio level, abs-send-time ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"\x80", (True, 0), id="voice-loudest"),
        pytest.param(b"\x7f", (False, 127), id="silence"),
        pytest.param(b"\x9e", (True, 30), id="voice-30"),
        pytest.param(b"\x3c\xff", (False, 60), id="extra-bytes-ignored"),
    ],
)
def test_audio_level(value: bytes | None, expected: tuple[bool, int] | None) -> None:
    assert rtp.audio_level(value) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(0.0, 0x000000, id="zero"),
        pytest.param(1.0, 0x040000, id="one-second"),
        pytest.param(0.5, 0x020000, id="half-second"),
        pytest.param(1.25, 0x050000, id="fraction"),
        pytest.param(63.0, 0xFC0000, id="63s"),
        pytest.param(64.0, 0x000000, id="wraps-at-64s"),
        pytest.param(65.5, 0x060000, id="after-wrap"),
        pytest.param(1 / (1 << 18), 0x000001, id="one-tick"),
    ],
)
def test_abs_send_time(now: float, expected: int) -> None:
    value = rtp.abs_send_time(now)
    assert len(value) == 3
    assert int.from_bytes(value, "big") == expected


# -- VP8 ---------------------------------------------------------------------------------

KEY = 0x00  # first byte of the VP8 payload header: P bit 0 (keyframe)
DELTA = 0x01  # P bit 1 (interframe)

VP8_CASES = [
    pytest.param(b"", False, id="empty"),
    pytest.param(bytes([0x10, KEY]), True, id="S-pid0-key"),
    pytest.param(bytes([0x10, DELTA]), False, id="S-pid0-delta"),
    pytest.param(bytes([0x00, KEY]), False, id="no-S"),
    pytest.param(bytes([0x11, KEY]), False, id="partition-1"),
    pytest.param(bytes([0x17, KEY]), False, id="partition-7"),
    pytest.param(bytes([0x18, KEY]), True, id="reserved-bit-ignored"),
    pytest.param(bytes([0x30, KEY]), True, id="N-bit"),
    pytest.param(bytes([0x10]), False, id="no-payload-header"),
    pytest.param(bytes([0x90, 0x00, KEY]), True, id="X-no-fields"),
    pytest.param(bytes([0x90, 0x80, 0x13, KEY]), True, id="X-I-7bit"),
    pytest.param(bytes([0x90, 0x80, 0x13, DELTA]), False, id="X-I-7bit-delta"),
    pytest.param(bytes([0x90, 0x80, 0x81, 0x35, KEY]), True, id="X-I-15bit"),
    pytest.param(bytes([0x90, 0x80, 0x81, 0x34, DELTA]), False, id="X-I-15bit-delta"),
    pytest.param(bytes([0x90, 0x40, 0x01, KEY]), True, id="X-L"),
    pytest.param(bytes([0x90, 0x20, 0x41, KEY]), True, id="X-T"),
    pytest.param(bytes([0x90, 0x10, 0x41, KEY]), True, id="X-K"),
    pytest.param(bytes([0x90, 0x30, 0x41, KEY]), True, id="X-T-K-share-a-byte"),
    pytest.param(bytes([0x90, 0xF0, 0x81, 0x23, 0x45, 0x67, KEY]), True, id="X-I15-L-T-K"),
    pytest.param(bytes([0x90, 0xF0, 0x81, 0x23, 0x45, 0x67, DELTA]), False, id="X-I15-L-T-K-delta"),
    pytest.param(bytes([0x90, 0xE0, 0x05, 0x45, 0x67, KEY]), True, id="X-I7-L-T"),
    pytest.param(bytes([0x80, 0xF0, 0x81, 0x23, 0x45, 0x67, KEY]), False, id="X-no-S"),
    pytest.param(bytes([0x90]), False, id="X-cut"),
    pytest.param(bytes([0x90, 0x80]), False, id="X-I-cut"),
    pytest.param(bytes([0x90, 0x80, 0x81]), False, id="X-I15-cut"),
    pytest.param(bytes([0x90, 0x80, 0x81, 0x01]), False, id="X-I15-no-payload-header"),
    pytest.param(bytes([0x90, 0xF0, 0x81, 0x23, 0x45]), False, id="X-all-cut"),
]


@pytest.mark.parametrize(("payload", "expected"), VP8_CASES)
def test_vp8_keyframe_start(payload: bytes, expected: bool) -> None:
    assert rtp.vp8_keyframe_start(payload) is expected
    assert rtp.vp8_keyframe_start(memoryview(payload)) is expected


def _video(packets: list[bytes], payload_type: int) -> list[tuple[rtp.Header, bytes]]:
    out = []
    for data in packets:
        h = rtp.parse(data)
        if h.payload_type == payload_type:
            out.append((h, data[h.payload_start : h.payload_end]))
    return out


def test_vp8_keyframes_in_captured_stream() -> None:
    """Against aiortc's VP8 depayloader: a keyframe start is a first packet of a frame whose
    VP8 frame header carries the keyframe start code (RFC 6386 9.1)."""
    video = _video(load("vp8_opus.rtpdump.json"), 97)
    assert video, "no VP8 in the fixture"
    starts = []
    for i, (h, payload) in enumerate(video):
        frame = vp8_depayload(payload)
        first = bool(payload[0] & 0x10) and payload[0] & 0x07 == 0
        truth = first and not frame[0] & 0x01 and frame[3:6] == b"\x9d\x01\x2a"
        assert rtp.vp8_keyframe_start(payload) == truth, f"packet {i} seq {h.seq}"
        if truth:
            starts.append(i)
    assert starts[0] == 0, "the stream starts with a keyframe"
    assert len(starts) >= 2, "the capture asks for a keyframe half way: regenerate the fixture"


# -- H.264 --------------------------------------------------------------------------------

SPS = bytes([0x67, 0x42, 0x00, 0x1F])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88, 0x84])
NON_IDR = bytes([0x41, 0x9A, 0x02])
SEI = bytes([0x06, 0x05, 0x01])


def stap_a(*nals: bytes) -> bytes:
    return bytes([0x78]) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu_a(nal_type: int, *, start: bool, end: bool = False) -> bytes:
    return bytes([0x7C, (0x80 if start else 0) | (0x40 if end else 0) | nal_type, 0xAB, 0xCD])


H264_CASES = [
    pytest.param(b"", False, id="empty"),
    pytest.param(IDR, True, id="single-IDR"),
    pytest.param(SPS, True, id="single-SPS"),
    pytest.param(PPS, False, id="single-PPS"),
    pytest.param(NON_IDR, False, id="single-non-IDR"),
    pytest.param(SEI, False, id="single-SEI"),
    pytest.param(stap_a(SPS, PPS), True, id="STAP-A-SPS-PPS"),
    pytest.param(stap_a(SEI, PPS, IDR), True, id="STAP-A-IDR-third"),
    pytest.param(stap_a(SEI, NON_IDR), False, id="STAP-A-non-IDR"),
    pytest.param(stap_a(PPS), False, id="STAP-A-PPS-only"),
    pytest.param(bytes([0x78, 0x00]), False, id="STAP-A-cut-size"),
    pytest.param(bytes([0x78, 0x00, 0x00, 0x67]), False, id="STAP-A-zero-size"),
    pytest.param(stap_a(SEI)[:-1] + bytes([0x00, 0x04]), False, id="STAP-A-cut-second-unit"),
    pytest.param(fu_a(5, start=True), True, id="FU-A-start-IDR"),
    pytest.param(fu_a(5, start=False), False, id="FU-A-middle-IDR"),
    pytest.param(fu_a(5, start=False, end=True), False, id="FU-A-end-IDR"),
    pytest.param(fu_a(1, start=True), False, id="FU-A-start-non-IDR"),
    pytest.param(bytes([0x7C]), False, id="FU-A-cut"),
    pytest.param(bytes([0x79, 0x00, 0x01, 0x02]), False, id="STAP-B-unsupported"),
]


@pytest.mark.parametrize(("payload", "expected"), H264_CASES)
def test_h264_keyframe_start(payload: bytes, expected: bool) -> None:
    assert rtp.h264_keyframe_start(payload) is expected
    assert rtp.h264_keyframe_start(memoryview(payload)) is expected


def _nal_types(annexb: bytes) -> list[int]:
    return [part[0] & 0x1F for part in annexb.split(b"\x00\x00\x00\x01") if part]


def test_h264_keyframes_in_captured_stream() -> None:
    """Against aiortc's H.264 depayloader: a keyframe start is a packet that starts an SPS
    or IDR NAL unit."""
    video = _video(load("h264.rtpdump.json"), 99)
    assert video, "no H.264 in the fixture"
    starts = []
    for i, (h, payload) in enumerate(video):
        nal = payload[0] & 0x1F
        starting = nal != 28 or bool(payload[1] & 0x80)  # not an FU-A continuation
        truth = starting and bool({5, 7} & set(_nal_types(h264_depayload(payload))))
        assert rtp.h264_keyframe_start(payload) == truth, f"packet {i} seq {h.seq}"
        if truth:
            starts.append(i)
    assert starts[0] == 0
    assert len(starts) >= 2, "the capture asks for a keyframe half way: regenerate the fixture"


@pytest.mark.parametrize(
    ("codec", "expected"),
    [
        ("video/VP8", rtp.vp8_keyframe_start),
        ("vp8", rtp.vp8_keyframe_start),
        ("video/H264", rtp.h264_keyframe_start),
        ("H264", rtp.h264_keyframe_start),
        ("audio/opus", None),
        ("video/VP9", None),
    ],
)
def test_keyframe_detector(codec: str, expected: object) -> None:
    assert rtp.keyframe_detector(codec) is expected


# -- RTX, sequence numbers, RTCP demux --------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(dict(payload=b"\x12\x34abc"), (0x1234, b"abc"), id="plain"),
        pytest.param(dict(payload=b"\xff\xff"), (0xFFFF, b""), id="osn-only"),
        pytest.param(dict(payload=b"\x00\x07xyz", padding=5), (7, b"xyz"), id="padding-excluded"),
        pytest.param(
            dict(payload=b"\x00\x08q", ext=ONE_BYTE_EXT, csrcs=(1,)), (8, b"q"), id="after-ext"
        ),
        pytest.param(dict(payload=b"\x01"), None, id="one-byte"),
        pytest.param(dict(payload=b""), None, id="empty-probe"),
        pytest.param(dict(payload=b"", padding=200), None, id="padding-only-probe"),
    ],
)
def test_rtx_unwrap(fields: dict, expected: tuple[int, bytes] | None) -> None:
    data = build(pt=98, **fields)
    assert rtp.rtx_unwrap(data, rtp.parse(data)) == expected


@pytest.mark.parametrize(
    ("a", "b", "newer"),
    [
        pytest.param(1, 0, True, id="next"),
        pytest.param(0, 1, False, id="previous"),
        pytest.param(5, 5, False, id="same"),
        pytest.param(0, 0xFFFF, True, id="wrap-next"),
        pytest.param(0xFFFF, 0, False, id="wrap-previous"),
        pytest.param(100, 65500, True, id="wrap-ahead-136"),
        pytest.param(65500, 100, False, id="wrap-behind-136"),
        pytest.param(0x7FFF, 0, True, id="half-minus-one-ahead"),
        pytest.param(0x8000, 0, False, id="exactly-half-is-not-newer"),
        pytest.param(0, 0x8001, True, id="half-minus-one-across-wrap"),
    ],
)
def test_seq_newer(a: int, b: int, newer: bool) -> None:
    assert rtp.seq_newer(a, b) is newer


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(bytes([0x80, 200]) + bytes(6), True, id="SR"),
        pytest.param(bytes([0x81, 201]) + bytes(6), True, id="RR"),
        pytest.param(bytes([0x81, 205]) + bytes(10), True, id="RTPFB"),
        pytest.param(bytes([0x81, 206]) + bytes(10), True, id="PSFB"),
        pytest.param(build(pt=96), False, id="RTP-pt96"),
        pytest.param(build(pt=96, marker=1), False, id="RTP-pt96-marker"),
        pytest.param(build(pt=63, marker=1), False, id="RTP-pt63-marker"),
        pytest.param(b"\x80", False, id="one-byte"),
    ],
)
def test_is_rtcp(data: bytes, expected: bool) -> None:
    assert rtp.is_rtcp(data) is expected
