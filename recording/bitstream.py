"""Bits of codec syntax the recorder and the WebM writer need without decoding: the VP8
payload descriptor (RFC 7741), H.264 parameter sets (SPS size, RFC 6184 / ITU-T H.264)
and the Opus identification header (RFC 7845)."""

from __future__ import annotations

import struct


def opus_head(channels: int = 2) -> bytes:
    """RFC 7845 identification header: what WebM players need as CodecPrivate. WebRTC
    negotiates opus/48000/2 whether or not a sender is stereo; pre-skip 0 because RTP
    carries no encoder delay information."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, 0, 48_000, 0, 0)


def annexb_nals(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B access unit (start codes removed)."""
    out: list[bytes] = []
    starts: list[int] = []
    i = 0
    while (j := data.find(b"\x00\x00\x01", i)) >= 0:
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        while end > s and data[end - 1] == 0 and k + 1 < len(starts):
            end -= 1  # the leading zero of a 4-byte start code
        out.append(data[s:end])
    return out


class _Bits:
    def __init__(self, data: bytes) -> None:
        # Emulation prevention bytes (00 00 03) are not part of the syntax.
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]  # IndexError on a truncated SPS
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def sps_dimensions(sps: bytes) -> tuple[int, int]:
    """Display width and height from an H.264 SPS NAL unit (ITU-T H.264 7.3.2.1.1)."""
    b = _Bits(sps[1:])
    profile = b.u(8)
    b.u(16)  # constraint flags, level
    b.ue()  # seq_parameter_set_id
    chroma = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma = b.ue()
        if chroma == 3:
            b.u(1)  # separate_colour_plane_flag
        b.ue()
        b.ue()  # bit depths
        b.u(1)  # qpprime_y_zero_transform_bypass_flag
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    b.ue()  # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = b.ue() + 1
    height_units = b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)
    b.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_units * 16
    if b.u(1):  # frame_cropping_flag
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        unit_x = 1 if chroma in (0, 3) else 2
        unit_y = (2 - frame_mbs_only) * (2 if chroma == 1 else 1)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    return width, height


def vp8_payload(payload: bytes) -> bytes:
    """The VP8 data of an RTP payload (RFC 7741 4.2): what aiortc's ``vp8_depayload``
    returns, without building a descriptor object per packet (the recorder's hottest
    line; tests check both agree)."""
    b0 = payload[0]
    pos = 1
    if b0 & 0x80:  # X
        x = payload[1]
        pos = 2
        if x & 0x80:  # I: 7- or 15-bit picture id
            pos += 2 if payload[2] & 0x80 else 1
        if x & 0x40:  # L
            pos += 1
        if x & 0x30:  # T or K
            pos += 1
    if pos > len(payload):
        raise ValueError("VP8 payload descriptor is truncated")
    return payload[pos:]
