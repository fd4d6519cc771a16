"""RTP wire format for the forwarding path: lean header parsing and rewriting.

No asyncio, no objects per packet beyond what the caller keeps: the hot path reads a few
fields with ``struct`` and writes a new header into a reused ``bytearray``. RTCP is rare
enough that aiortc's own RTCP classes serve for it (through ``aiortc_adapter``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

RTP_VERSION = 2
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000  # the low 4 bits are "appbits"; we never set them

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

_HDR = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_EXT_HDR = struct.Struct("!HH")
_U16 = struct.Struct("!H")


class RtpError(ValueError):
    pass


class Header(NamedTuple):
    marker: int
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload_start: int
    payload_end: int
    ext_start: int  # -1: no extension block; else offset of the elements
    ext_end: int
    ext_profile: int


def is_rtcp(data: bytes) -> bool:
    """RFC 5761: payload types 64-95 on the wire are RTCP packet types 192-223."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse(data: bytes) -> Header:
    n = len(data)
    if n < 12:
        raise RtpError("RTP packet shorter than 12 bytes")
    b0, b1, seq, ts, ssrc = _HDR.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError("not RTP version 2")
    pos = 12 + 4 * (b0 & 0x0F)
    ext_start = ext_end = -1
    profile = 0
    if b0 & 0x10:
        if pos + 4 > n:
            raise RtpError("truncated header extension")
        profile, words = _EXT_HDR.unpack_from(data, pos)
        ext_start = pos + 4
        ext_end = ext_start + 4 * words
        pos = ext_end
    end = n
    if b0 & 0x20:
        if n == 0 or data[-1] == 0:
            raise RtpError("bad padding")
        end -= data[-1]
    if pos > end:
        raise RtpError("header longer than packet")
    return Header(b1 >> 7, b1 & 0x7F, seq, ts, ssrc, pos, end, ext_start, ext_end, profile)


def extensions(data: bytes, h: Header) -> dict[int, bytes]:
    """The extension elements by id (RFC 8285, one- and two-byte forms)."""
    out: dict[int, bytes] = {}
    if h.ext_start < 0:
        return out
    pos, end = h.ext_start, h.ext_end
    if h.ext_profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            if b == 0:  # padding
                pos += 1
                continue
            ident, length = b >> 4, (b & 0x0F) + 1
            if ident == 15:
                break  # reserved: stop parsing, as RFC 8285 says
            out[ident] = bytes(data[pos + 1 : pos + 1 + length])
            pos += 1 + length
    elif h.ext_profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while pos + 1 < end:
            ident = data[pos]
            if ident == 0:
                pos += 1
                continue
            length = data[pos + 1]
            out[ident] = bytes(data[pos + 2 : pos + 2 + length])
            pos += 2 + length
    return out


def find_extension(data: bytes, h: Header, ident: int) -> bytes | None:
    """One element without building the dict (the audio level on every audio packet)."""
    if h.ext_start < 0 or ident <= 0:
        return None
    pos, end = h.ext_start, h.ext_end
    if h.ext_profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            if b == 0:
                pos += 1
                continue
            i, length = b >> 4, (b & 0x0F) + 1
            if i == 15:
                return None  # reserved: parsing stops here (RFC 8285), as in extensions()
            if i == ident:
                return bytes(data[pos + 1 : pos + 1 + length])
            pos += 1 + length
        return None
    return extensions(data, h).get(ident)


def build_extensions(elements: list[tuple[int, bytes]]) -> bytes:
    """An extension block (profile + length + elements, padded to 32 bits); b"" if none."""
    if not elements:
        return b""
    one_byte = all(0 < i < 15 and 0 < len(v) <= 16 for i, v in elements)
    body = bytearray()
    if one_byte:
        for ident, value in elements:
            body.append((ident << 4) | (len(value) - 1))
            body += value
        profile = ONE_BYTE_PROFILE
    else:
        for ident, value in elements:
            body.append(ident)
            body.append(len(value))
            body += value
        profile = TWO_BYTE_PROFILE
    body += b"\x00" * (-len(body) % 4)
    return _EXT_HDR.pack(profile, len(body) // 4) + bytes(body)


def audio_level(value: bytes | None) -> tuple[bool, int] | None:
    """RFC 6464: (voice activity, level in -dBov: 0 loudest, 127 silence)."""
    if not value:
        return None
    return bool(value[0] & 0x80), value[0] & 0x7F


def abs_send_time(now: float) -> bytes:
    """6.18 fixed-point seconds, 24 bits, as the abs-send-time extension carries."""
    return (int(now * (1 << 18)) & 0xFFFFFF).to_bytes(3, "big")


# -- codecs: where a decoder can start ---------------------------------------------------


def vp8_keyframe_start(payload: memoryview | bytes) -> bool:
    """Does this VP8 RTP payload (RFC 7741) start a keyframe?"""
    n = len(payload)
    if n < 1:
        return False
    b0 = payload[0]
    if not (b0 & 0x10) or (b0 & 0x07) != 0:  # S bit and partition index 0 (0x08: R, ignored)
        return False
    pos = 1
    if b0 & 0x80:  # X: extended control bits
        if n < 2:
            return False
        x = payload[1]
        pos = 2
        if x & 0x80:  # I: picture id, 7 or 15 bits
            if pos >= n:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    if pos >= n:
        return False
    return not payload[pos] & 0x01  # P bit of the VP8 payload header: 0 = keyframe


_H264_KEY_NALS = {5, 7}  # IDR slice, SPS


def h264_keyframe_start(payload: memoryview | bytes) -> bool:
    """Does this H.264 RTP payload (RFC 6184) start an IDR (or carry its SPS)?"""
    n = len(payload)
    if n < 1:
        return False
    nal = payload[0] & 0x1F
    if nal in _H264_KEY_NALS:
        return True
    if nal == 24:  # STAP-A: 16-bit sizes, then NAL units
        pos = 1
        while pos + 2 < n:
            size = (payload[pos] << 8) | payload[pos + 1]
            if size == 0 or pos + 2 >= n:
                return False
            if payload[pos + 2] & 0x1F in _H264_KEY_NALS:
                return True
            pos += 2 + size
        return False
    if nal == 28 and n >= 2:  # FU-A: the start fragment names the NAL type
        return bool(payload[1] & 0x80) and (payload[1] & 0x1F) in _H264_KEY_NALS
    return False


def keyframe_detector(codec: str) -> Callable[[memoryview | bytes], bool] | None:
    name = codec.lower()
    if name == "video/vp8" or name == "vp8":
        return vp8_keyframe_start
    if name in ("video/h264", "h264"):
        return h264_keyframe_start
    return None


# -- RTX (RFC 4588) --------------------------------------------------------------------


def rtx_unwrap(data: bytes, h: Header) -> tuple[int, bytes] | None:
    """The original sequence number and the payload of a retransmission."""
    if h.payload_end - h.payload_start < 2:
        return None  # an empty RTX packet is padding for bandwidth probing
    osn = _U16.unpack_from(data, h.payload_start)[0]
    return osn, bytes(data[h.payload_start + 2 : h.payload_end])


def rtx_wrap(
    b0: int,
    body: bytes,
    payload_len: int,
    marker: int,
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    osn: int,
) -> bytes:
    """An RTX packet (RFC 4588): the fixed header, ``body``'s extension block, the
    original sequence number ``osn``, then the payload (the last ``payload_len`` bytes)."""
    at = len(body) - payload_len
    return _HDR.pack(b0, (marker << 7) | pt, seq, ts, ssrc) + body[:at] + _U16.pack(osn) + body[at:]


def seq_newer(a: int, b: int) -> bool:
    """Is 16-bit sequence number ``a`` after ``b`` (with wrap-around)?"""
    return a != b and ((a - b) & 0xFFFF) < 0x8000
