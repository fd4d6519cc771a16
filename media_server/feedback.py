"""RTCP from a participant, routed to the forwarding core (the peer's shim for RTCP).

A publisher's sender reports go to its upstream (and, translated, to every leg); a
subscriber's NACKs, keyframe requests, REMB and receiver reports go to the upstream of
the leg they name. What the core answers (retransmissions, translated sender reports)
is sent here; the rest it keeps for its timers (``Upstream.poll``, ``adapt``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .aiortc_adapter import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)
from .repair import ECHO_AFTER

if TYPE_CHECKING:
    from .peer import Peer


def on_rtcp(peer: Peer, data: bytes, now: float) -> None:
    try:
        packets = RtcpPacket.parse(data)
    except ValueError:
        return
    for packet in packets:
        if isinstance(packet, RtcpSrPacket):
            entry = peer.by_ssrc.get(packet.ssrc)
            if entry is not None:
                info = packet.sender_info
                for leg, sr in entry[0].on_sender_report(
                    info.ntp_timestamp, info.rtp_timestamp, now
                ):
                    leg.sink.send_rtcp(sr)
            _reports(peer, packet.reports, now)  # a subscriber that also publishes
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            peer.nacks_in += 1
            found = peer.legs.get(packet.media_ssrc)
            if found is not None:
                for leg, resend in found[0].on_nack(found[1], packet.lost, now):
                    leg.sink.send(resend)
                if found[0].echoes:
                    peer.room.wake(ECHO_AFTER)
        elif isinstance(packet, RtcpPsfbPacket):
            _psfb(peer, packet, now)
        elif isinstance(packet, RtcpRrPacket):
            _reports(peer, packet.reports, now)


def _reports(peer: Peer, reports: list[RtcpReceiverInfo], now: float) -> None:
    """A subscriber's loss, jitter and round trip on each leg it receives."""
    for block in reports:
        found = peer.legs.get(block.ssrc)
        if found is not None:
            found[0].on_receiver_report(
                found[1],
                block.packets_lost,
                block.highest_sequence,
                block.jitter,
                block.lsr,
                block.dlsr,
                now,
            )


def _psfb(peer: Peer, packet: RtcpPsfbPacket, now: float) -> None:
    if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
        peer.keyframe_requests_in += 1
    if packet.fmt == RTCP_PSFB_PLI:
        found = peer.legs.get(packet.media_ssrc)
        if found is not None:
            found[0].on_keyframe_request(found[1], now)
            peer.room.wake()
    elif packet.fmt == RTCP_PSFB_FIR:
        for i in range(0, len(packet.fci) - 7, 8):
            found = peer.legs.get(int.from_bytes(packet.fci[i : i + 4], "big"))
            if found is not None:
                found[0].on_keyframe_request(found[1], now)
                peer.room.wake()
    elif packet.fmt == RTCP_PSFB_APP:
        try:
            bitrate, ssrcs = unpack_remb_fci(packet.fci)
        except ValueError:
            return
        for ssrc in ssrcs:
            found = peer.legs.get(ssrc)
            if found is not None:
                found[0].on_remb(found[1], bitrate, now)
