"""The forwarding core: state and rules, time passed in, no I/O (sans-IO).

An ``Upstream`` is one published track; a ``Leg`` is one subscriber's copy of it. Each
received packet becomes the bytes each leg must send (new SSRC, payload type, sequence
number, timestamp, extension ids; payload untouched), and RTCP feedback what goes back
to the publisher (keyframe requests, NACKs, REMB, receiver reports). A thin shim sends.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import rtp
from .adaptation import LegAdaptation
from .aiortc_adapter import (  # RTCP's wire classes (building RTCP has no I/O)
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    pack_remb_fci,
)
from .bandwidth import LinkEstimate
from .health import TrackHealth
from .leg import Leg
from .pacing import PACE_BELOW_BPS
from .repair import CACHE_SIZE, LegRepair

KEYFRAME_MIN_INTERVAL = 0.3  # at most one upstream keyframe request per 300 ms...
KEYFRAME_RETRY = 1.0  # ...and again while a leg still waits for one
NACK_INTERVAL = 0.05
NACK_MAX_TRIES = 4
NACK_MAX_AGE = 1.0
MAX_MISSING = 256
RR_INTERVAL = 1.0
REMB_INTERVAL = 1.0

_FIXED = struct.Struct("!BBHII")

Out = list[tuple[Leg, bytes]]
__all__ = ["Bitrate", "Leg", "Out", "Upstream"]


@dataclass(slots=True)
class Bitrate:
    min_bps: int = 150_000
    max_bps: int = 2_500_000
    floor_bps: int = 0  # a video leg whose estimate stays under it is paused (0: never)
    pace_below_bps: int = PACE_BELOW_BPS  # a video leg under it is paced (0: none)


class Upstream(LegAdaptation, LegRepair):
    """One published track and the legs that receive it."""

    def __init__(
        self,
        track_id: str,
        kind: str,
        codec: str,
        *,
        clock_rate: int,
        rtcp_ssrc: int,
        audio_level_id: int = 0,
        abs_send_time_id: int = 0,
        nack: bool = False,
        bitrate: Bitrate | None = None,
    ) -> None:
        self.track_id = track_id
        self.kind = kind
        self.codec = codec
        self.clock_rate = clock_rate
        self.rtcp_ssrc = rtcp_ssrc  # our SSRC in RTCP sent to the publisher
        self.audio_level_id = audio_level_id
        self.abs_send_time_id = abs_send_time_id
        self.nack = nack
        self.bitrate = bitrate or Bitrate()
        self.is_keyframe: Callable[[Any], bool] | None = rtp.keyframe_detector(codec)
        self.legs: list[Leg] = []
        self.echoes: Out = []  # second copies for lossy legs, sent a moment later
        self.key_ts = -1  # the timestamp of the last keyframe seen (protecting, sizing)
        self.key_seq = -1  # ...and the sequence number of its first packet
        self.ssrc: int | None = None
        # retransmission cache: index seq % CACHE_SIZE -> (seq, packet, header)
        self._cache: list[tuple[int, bytes, rtp.Header] | None] = (
            [None] * CACHE_SIZE if nack else []
        )
        self.highest_seq: int | None = None
        self.cycles = 0
        self.base_seq = 0
        self.received = 0
        self.octets_in = 0  # payload bytes from the publisher (its rate: adaptation.py)
        self.incoming_bps = 0.0
        self._rate_mark = (0.0, 0)
        self._held: list[Leg] = []  # legs held for a keyframe since the last adapt
        self.pacing = False  # some leg is paced: the shim sends what is due
        self.protecting = False  # some leg gets second copies (repair.py)
        self.sizing = False  # a held leg waits for a keyframe that fits (adaptation.py)
        self._key_watch: list[int] | None = None  # (its timestamp, first seq, bytes)
        self.received_prior = 0
        self.expected_prior = 0
        self.jitter = 0.0
        self._transit: float | None = None
        self.missing: dict[int, list[float]] = {}  # seq -> [first_seen, last_nack, tries]
        self.last_sr: tuple[int, float] | None = None  # (middle 32 bits of NTP, arrival)
        self.last_keyframe_request = -1e9
        self.keyframe_pending = False
        self.last_rr = 0.0
        self.last_remb = 0.0
        self.last_remb_bps = 0
        self.audio_level: tuple[bool, int] | None = None
        self.health = TrackHealth()  # frames, freezes, loss: for the live overview

    # -- legs -------------------------------------------------------------------------
    def add_leg(self, leg: Leg, now: float) -> None:
        self.legs.append(leg)
        if self.kind == "video":
            leg.link = LinkEstimate(self.bitrate.floor_bps, self.bitrate.max_bps)
            leg.link.can_protect = leg.rtx_ssrc is not None and leg.rtx_payload_type is not None
            leg.keyframe_wanted = True
            self.request_keyframe(now)

    def remove_leg(self, leg: Leg) -> None:
        if leg in self.legs:
            self.legs.remove(leg)

    # -- media in -> media out ---------------------------------------------------------
    def on_rtp(self, data: bytes, h: rtp.Header, now: float) -> Out:
        if self.ssrc != h.ssrc:
            self._new_source(h)
        late = self._account(h, now)
        self.octets_in += h.payload_end - h.payload_start
        if h.marker and not late and self.kind == "video":
            self.health.frame(now)  # a frame's last packet
        if self.nack:
            self._cache[h.seq % CACHE_SIZE] = (h.seq, data, h)
            if self.missing:
                self.missing.pop(h.seq, None)
        if self.audio_level_id:
            self.audio_level = rtp.audio_level(rtp.find_extension(data, h, self.audio_level_id))
        elif (
            (self.protecting or self.sizing)
            and self.is_keyframe
            and self.is_keyframe(memoryview(data)[h.payload_start :])
        ):
            # (the packets of a keyframe share its timestamp; this is its first)
            self.key_ts, self.key_seq = h.timestamp, h.seq
        # The previous packet's second copies go after this one (spaced: one short
        # burst of loss takes not both).
        # A late packet is handled like a retransmission: it never starts a leg, and a
        # leg that started after it never gets it.
        if not self.echoes and not self.sizing:  # (the clean path: no list made per packet)
            return self._fan_out(data, h, now, late)
        pending, self.echoes = self.echoes, []
        out = self._fan_out(data, h, now, late) + pending
        return out + self.fit_keyframe(h, now) if self.sizing and not late else out

    def on_rtx(self, data: bytes, h: rtp.Header, now: float) -> Out:
        """A retransmission from the publisher (RTX stream): forward it as the original."""
        unwrapped = rtp.rtx_unwrap(data, h)
        if unwrapped is None or self.ssrc is None:
            return []  # padding used for bandwidth probing
        osn, payload = unwrapped
        if osn not in self.missing:
            return []  # not asked for, or already here
        del self.missing[osn]
        self.received += 1  # repaired: not lost, as our receiver reports must say
        original = bytearray(data[: h.payload_start]) + payload
        original[0] &= ~0x20  # the RTX packet's padding is not part of the original
        b1 = (original[1] & 0x80) | self._payload_type_hint
        _FIXED.pack_into(original, 0, original[0], b1, osn, h.timestamp, self.ssrc)
        packet = bytes(original)
        h2 = h._replace(
            seq=osn, ssrc=self.ssrc, payload_type=self._payload_type_hint, payload_end=len(packet)
        )
        if self.nack:
            self._cache[osn % CACHE_SIZE] = (osn, packet, h2)
        return self._fan_out(packet, h2, now, retransmission=True)

    _payload_type_hint = 0

    def _new_source(self, h: rtp.Header) -> None:
        """A new SSRC (first packet, or the publisher restarted): legs restart on a keyframe."""
        for leg in self.legs:
            if leg.started and self.highest_seq is not None:
                leg.resume_seq = (self.highest_seq + leg.seq_off + 1) & 0xFFFF
        self.ssrc = h.ssrc
        self._payload_type_hint = h.payload_type
        self.highest_seq = None
        # Receiver-report statistics are per source (RFC 3550 A.1): the old source's
        # packet count would hide the new one's loss.
        self.received = self.received_prior = self.expected_prior = 0
        self.jitter, self._transit = 0.0, None
        self.missing.clear()
        if self.nack:
            self._cache = [None] * CACHE_SIZE
        for leg in self.legs:
            leg.keep_ts = False  # a new source has a clock of its own
            if leg.started:
                leg.started = False
                leg.keyframe_wanted = self.kind == "video"

    def _fan_out(
        self, data: bytes, h: rtp.Header, now: float, retransmission: bool, only: Leg | None = None
    ) -> Out:
        out: Out = []
        if not self.legs:
            return out
        # Per packet, one body (extensions + payload) per extension-id layout; per leg
        # only the 12 fixed header bytes differ: one pack and one concatenation.
        bodies: dict[tuple[int, int], tuple[int, bytes]] = {}
        is_key = None
        # (second copies: only on legs with random loss, never of a retransmission)
        protecting = self.protecting and not retransmission
        for leg in self.legs if only is None else (only,):
            if leg.paused:
                continue
            if not leg.started:
                if self.kind == "video":
                    if retransmission or (
                        leg.refresh_since is not None
                        and not leg.keyframe_wanted
                        and (self.sizing or not leg.key_ok)
                    ):
                        continue  # (held: on a keyframe that fits its link, adaptation.py)
                    if is_key is None:
                        is_key = bool(
                            self.is_keyframe
                            and self.is_keyframe(memoryview(data)[h.payload_start : h.payload_end])
                        )
                    if not is_key:
                        continue
                self._start_leg(leg, h)
            elif retransmission and not rtp.seq_newer(h.seq, (leg.start_seq - 1) & 0xFFFF):
                continue  # from before this leg started
            key = leg.ext_key
            body = bodies.get(key)
            if body is None:
                body = bodies[key] = self._body(data, h, leg, now)
            packet = (
                _FIXED.pack(
                    body[0],
                    (h.marker << 7) | leg.payload_type,
                    (h.seq + leg.seq_off) & 0xFFFF,
                    (h.timestamp + leg.ts_off) & 0xFFFFFFFF,
                    leg.ssrc,
                )
                + body[1]
            )
            leg.packets += 1
            leg.octets += h.payload_end - h.payload_start
            if leg.pacer is None:
                out.append((leg, packet))
            else:  # (a thin leg: sent by the room's timer, adaptation.take_paced)
                leg.pacer.push(packet, now, leg.pace_rate)
            if protecting and leg.link is not None and leg.link.protect:
                self._echo(leg, body, h, now)
        return out

    def _start_leg(self, leg: Leg, h: rtp.Header) -> None:
        leg.started = True
        leg.keyframe_wanted = leg.key_ok = False
        leg.start_seq = h.seq
        # Continue the leg's own numbering if it ran before (publisher restart): the
        # subscriber sees one stream whose next packet simply starts a keyframe.
        next_seq = leg.resume_seq if leg.resume_seq is not None else random.randrange(1 << 15)
        leg.seq_off = (next_seq - h.seq) & 0xFFFF
        if not leg.keep_ts:  # (after a pause the same offset keeps the clock running)
            leg.ts_off = (random.randrange(1 << 32) - h.timestamp) & 0xFFFFFFFF
        leg.keep_ts = False

    def _body(self, data: bytes, h: rtp.Header, leg: Leg, now: float) -> tuple[int, bytes]:
        """(first header byte, extension block + payload) for this leg's extension ids."""
        elements: list[tuple[int, bytes]] = []
        if leg.audio_level_id and self.audio_level_id:
            level = rtp.find_extension(data, h, self.audio_level_id)
            if level:
                elements.append((leg.audio_level_id, level))
        if leg.abs_send_time_id:
            elements.append((leg.abs_send_time_id, rtp.abs_send_time(now)))
        ext = rtp.build_extensions(elements)
        b0 = 0x80 | (0x10 if ext else 0)  # version 2, no padding, no CSRC
        return b0, ext + data[h.payload_start : h.payload_end]

    def _account(self, h: rtp.Header, now: float) -> bool:
        """Count the packet for receiver reports and loss; True if it came late."""
        seq = h.seq
        self.received += 1
        late = False
        if self.highest_seq is None:
            self.highest_seq = self.base_seq = seq
            self.cycles = 0
        elif not rtp.seq_newer(seq, self.highest_seq):
            late = True
        else:
            gap = (seq - self.highest_seq) & 0xFFFF
            if seq < self.highest_seq:
                self.cycles += 1 << 16
            if self.nack and 1 < gap <= MAX_MISSING:
                for k in range(1, gap):
                    self.missing[(self.highest_seq + k) & 0xFFFF] = [now, 0.0, 0]
            self.highest_seq = seq
        # RFC 3550 interarrival jitter, in timestamp units
        transit = now * self.clock_rate - h.timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < self.clock_rate:  # ignore timestamp jumps (new source, long pauses)
                self.jitter += (d - self.jitter) / 16
        self._transit = transit
        return late

    # -- feedback from subscribers (NACKs: repair.py) -----------------------------------
    def on_keyframe_request(self, leg: Leg, now: float) -> None:
        if leg.started:
            self.request_keyframe(now)

    def request_keyframe(self, now: float) -> None:
        """Coalesced but deferred, never dropped: ``poll`` sends it when allowed."""
        self.keyframe_pending = True

    # -- what goes back to the publisher -----------------------------------------------
    def poll(self, now: float) -> list[bytes]:
        """RTCP for the publisher that is due now."""
        out: list[bytes] = []
        if self.ssrc is None:
            return out
        if self.kind == "video":
            waiting = any(leg.keyframe_wanted for leg in self.legs)
            due = now - self.last_keyframe_request
            if (self.keyframe_pending and due >= KEYFRAME_MIN_INTERVAL) or (
                waiting and due >= KEYFRAME_RETRY
            ):
                self.keyframe_pending = False
                self.last_keyframe_request = now
                out.append(
                    bytes(
                        RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self.rtcp_ssrc, media_ssrc=self.ssrc)
                    )
                )
            if self.missing:
                lost = self._due_nacks(now)
                if lost:
                    nack = RtcpRtpfbPacket(
                        fmt=RTCP_RTPFB_NACK, ssrc=self.rtcp_ssrc, media_ssrc=self.ssrc
                    )
                    nack.lost = lost
                    out.append(bytes(nack))
            if now - self.last_remb >= REMB_INTERVAL:
                self.last_remb = now
                self.last_remb_bps = self.target_bitrate()
                out.append(
                    bytes(
                        RtcpPsfbPacket(
                            fmt=RTCP_PSFB_APP,
                            ssrc=self.rtcp_ssrc,
                            media_ssrc=0,
                            fci=pack_remb_fci(self.last_remb_bps, [self.ssrc]),
                        )
                    )
                )
        if now - self.last_rr >= RR_INTERVAL:
            self.last_rr = now
            out.append(bytes(RtcpRrPacket(ssrc=self.rtcp_ssrc, reports=[self._report(now)])))
        return out

    def _due_nacks(self, now: float) -> list[int]:
        lost: list[int] = []
        for seq, state in list(self.missing.items()):
            first, last, tries = state
            if tries >= NACK_MAX_TRIES or now - first > NACK_MAX_AGE:
                del self.missing[seq]
            elif now - last >= NACK_INTERVAL * (tries + 1):
                state[1], state[2] = now, tries + 1
                lost.append(seq)
        return sorted(lost)

    def _report(self, now: float) -> RtcpReceiverInfo:
        assert self.highest_seq is not None
        extended = self.cycles + self.highest_seq
        lost_total, expected = self.unrepaired()
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior, self.received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        self.health.loss = fraction / 256
        lsr, dlsr = 0, 0
        if self.last_sr is not None:
            lsr = self.last_sr[0]
            dlsr = int((now - self.last_sr[1]) * 65536) & 0xFFFFFFFF
        return RtcpReceiverInfo(
            ssrc=self.ssrc or 0,
            fraction_lost=fraction,
            packets_lost=min(lost_total, 0x7FFFFF),
            highest_sequence=extended & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=lsr,
            dlsr=dlsr,
        )

    # -- sender reports ----------------------------------------------------------------
    def on_sender_report(self, ntp: int, rtp_ts: int, now: float) -> Out:
        """Remember it for our RR; translate it for every leg (A/V sync in players)."""
        self.last_sr = ((ntp >> 16) & 0xFFFFFFFF, now)
        out: Out = []
        for leg in self.legs:
            if leg.started:
                if leg.link is not None:
                    leg.link.sender_report_sent(self.last_sr[0], now)
                sr = RtcpSrPacket(
                    ssrc=leg.ssrc,
                    sender_info=RtcpSenderInfo(
                        ntp_timestamp=ntp,
                        rtp_timestamp=(rtp_ts + leg.ts_off) & 0xFFFFFFFF,
                        packet_count=leg.packets & 0xFFFFFFFF,
                        octet_count=leg.octets & 0xFFFFFFFF,
                    ),
                )
                out.append((leg, bytes(sr)))
        return out
