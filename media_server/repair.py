"""Repairing a subscriber's losses (sans-IO, part of ``forwarder.Upstream``).

Answers to a subscriber's NACKs come from the upstream's packet cache, as RTX when the
leg negotiated it, within the share of the leg's estimate that retransmissions get
(``bandwidth.LinkEstimate.on_nack``). A leg whose estimate sees random loss (no queue:
radio, a bad line) also gets second copies ahead of any NACK (``LinkEstimate.protect``):
each frame's last packet, whose loss the subscriber notices only when the next frame
comes, and a keyframe's; every packet when the loss is high (then both copies are lost
only at the loss squared, and the answers to NACKs go twice too). A copy is sent a
moment after its original (after the next packet, or by the room's timer within
``ECHO_AFTER``), so one short burst of loss takes not both; the subscriber drops the copy
of a packet it has.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from . import rtp

if TYPE_CHECKING:
    from .forwarder import Leg, Out

CACHE_SIZE = 1024  # ~9 s of 1 Mbps video: answers NACKs well beyond any sane RTT
RTX_REPEAT_GUARD = 0.05  # don't resend one packet to one leg twice within 50 ms
ECHO_AFTER = 0.005  # a second copy goes at most this long after its original

_FIXED = struct.Struct("!BBHII")


class LegRepair:
    """Mixed into ``forwarder.Upstream``: retransmissions and second copies."""

    if TYPE_CHECKING:
        nack: bool
        _cache: list[tuple[int, bytes, rtp.Header] | None]
        echoes: Out
        key_ts: int

        def _body(self, data: bytes, h: rtp.Header, leg: Leg, now: float) -> tuple[int, bytes]: ...

    def on_nack(self, leg: Leg, lost: list[int], now: float) -> Out:
        """Answer a subscriber's NACK from the cache (as RTX when negotiated)."""
        out: Out = []
        if not self.nack or not leg.started:
            return out
        # (a video leg's retransmissions are bounded: a share of its link's estimate)
        allowed = leg.link.on_nack(len(lost), now) if leg.link is not None else len(lost)
        before_start = (leg.start_seq - 1) & 0xFFFF
        for out_seq in lost[:allowed]:
            in_seq = (out_seq - leg.seq_off) & 0xFFFF
            if not rtp.seq_newer(in_seq, before_start):
                continue  # sent before a pause: another packet had that number
            entry = self._cache[in_seq % CACHE_SIZE]
            if entry is None or entry[0] != in_seq:
                continue
            if now - leg.rtx_guard.get(out_seq, -1.0) < RTX_REPEAT_GUARD:
                continue
            leg.rtx_guard[out_seq] = now
            out.append((leg, self._again(leg, entry[1], entry[2], out_seq, now)))
            leg.retransmitted += 1
            if leg.link is not None and leg.link.protect == 2:  # (random loss: twice)
                self.echoes.append((leg, self._again(leg, entry[1], entry[2], out_seq, now)))
        if len(leg.rtx_guard) > 512:
            leg.rtx_guard = {s: t for s, t in leg.rtx_guard.items() if now - t < 1.0}
        return out

    def _again(self, leg: Leg, data: bytes, h: rtp.Header, out_seq: int, now: float) -> bytes:
        """A packet again for ``leg``: as RTX when negotiated, else as the original."""
        b0, body = self._body(data, h, leg, now)
        ts = (h.timestamp + leg.ts_off) & 0xFFFFFFFF
        pt, rtx_ssrc = leg.rtx_payload_type, leg.rtx_ssrc
        if pt is None or rtx_ssrc is None:
            return _FIXED.pack(b0, (h.marker << 7) | leg.payload_type, out_seq, ts, leg.ssrc) + body
        size = h.payload_end - h.payload_start
        packet = rtp.rtx_wrap(b0, body, size, h.marker, pt, leg.rtx_seq, ts, rtx_ssrc, out_seq)
        leg.rtx_seq = (leg.rtx_seq + 1) & 0xFFFF
        return packet

    def _echo(self, leg: Leg, body: tuple[int, bytes], h: rtp.Header, now: float) -> None:
        """A leg with random loss gets a second copy (as RTX, a moment later: ``echoes``)
        of the packets whose loss costs most: each frame's last (its loss shows only when
        the next frame comes), a keyframe's, or every packet when the loss is high. The
        subscriber drops the copy of a packet it has; a lost packet costs no round trip."""
        link = leg.link
        assert link is not None
        pt, rtx_ssrc = leg.rtx_payload_type, leg.rtx_ssrc
        if pt is None or rtx_ssrc is None:
            return
        if link.protect < 2 and not h.marker and h.timestamp != self.key_ts:
            return
        if not link.may_echo(len(body[1]) + 14, now):
            return
        ts = (h.timestamp + leg.ts_off) & 0xFFFFFFFF
        osn = (h.seq + leg.seq_off) & 0xFFFF
        size = h.payload_end - h.payload_start
        echo = rtp.rtx_wrap(body[0], body[1], size, h.marker, pt, leg.rtx_seq, ts, rtx_ssrc, osn)
        leg.rtx_seq = (leg.rtx_seq + 1) & 0xFFFF
        leg.echoed += 1
        self.echoes.append((leg, echo))

    def take_echoes(self) -> Out:
        """The second copies still to send (the room's timer sends them)."""
        out, self.echoes = self.echoes, []
        return out
