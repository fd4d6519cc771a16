"""A media host's running totals for the node's metrics (no Prometheus here: plain numbers).

Nothing is counted twice on the forwarding path: the core already counts per leg
(``Leg.packets``, ``Leg.retransmitted``) and per track (``TrackHealth.freezes``,
``Upstream.unrepaired``); the peer's shim adds what the core does not see (packets and
bytes in and out, RTCP feedback). Those live in objects that go away with their peer or
track, so ``Totals`` keeps what the gone ones counted (``retire_*``, called as they go)
and ``read`` adds the live ones when the metrics are scraped (once a second at most:
the worker's load report), walking rooms, peers and tracks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .forwarder import Upstream
    from .peer import Peer
    from .room import Room


@dataclass(slots=True)
class Counts:
    """Monotonic counts of one media host (what ``read`` returns under ``counters``)."""

    packets_in: int = 0  # RTP from publishers (retransmissions included)
    bytes_in: int = 0
    packets_out: int = 0  # RTP handed to the senders (retransmissions included)
    bytes_out: int = 0
    dropped_out: int = 0  # refused by the sender: no route yet, socket backlog, SRTP
    nacks_in: int = 0  # NACK packets from subscribers
    keyframe_requests_in: int = 0  # PLI / FIR from subscribers
    nacks_out: int = 0  # NACK packets sent to publishers
    plis_out: int = 0  # keyframe requests sent to publishers
    rtx_out: int = 0  # retransmissions sent to subscribers
    lost: int = 0  # publishers' packets the SFU never got (after repair)
    freezes: int = 0  # video gaps over a second, as the SFU received it
    keyframe_waits: int = 0  # video legs that started waiting for their first keyframe
    peers: int = 0  # media connections opened
    rooms: int = 0  # rooms opened (a session's media on this host)
    tracks: int = 0  # tracks published


def _add(into: Counts, other: Counts) -> None:
    for f in fields(Counts):
        setattr(into, f.name, getattr(into, f.name) + getattr(other, f.name))


class Totals:
    """What the gone peers and tracks counted, and the live ones read on demand."""

    def __init__(self) -> None:
        self.retired = Counts()
        self._last = Counts()

    # -- as objects go ------------------------------------------------------------------
    def retire_peer(self, peer: Peer) -> None:
        _add(self.retired, _of_peer(peer))

    def retire_track(self, upstream: Upstream) -> None:
        self.retired.lost += upstream.unrepaired()[0]
        self.retired.freezes += upstream.health.freezes

    # -- at scrape time -----------------------------------------------------------------
    def read(self, rooms: dict[str, Room]) -> dict[str, dict[str, int]]:
        """``counters`` (never lower than last read: a publisher's restart resets its
        track's loss count) and ``gauges`` (now)."""
        now = Counts()
        _add(now, self.retired)
        gauges = {
            "rooms": len(rooms),
            "peers": 0,
            "audio_tracks": 0,
            "video_tracks": 0,
            "legs": 0,
            "keyframe_waiting": 0,
        }
        for room in rooms.values():
            gauges["peers"] += len(room.peers)
            for peer in room.peers.values():
                _add(now, _of_peer(peer))
                gauges["legs"] += len(peer.legs)
                gauges["keyframe_waiting"] += sum(
                    1 for _, leg in peer.legs.values() if leg.keyframe_wanted
                )
            for upstream, _, _ in room.tracks.values():
                gauges[f"{upstream.kind}_tracks"] = gauges.get(f"{upstream.kind}_tracks", 0) + 1
                now.lost += upstream.unrepaired()[0]
                now.freezes += upstream.health.freezes
        for f in fields(Counts):
            value = max(getattr(now, f.name), getattr(self._last, f.name))
            setattr(self._last, f.name, value)
        counters = {f.name: getattr(self._last, f.name) for f in fields(Counts)}
        return {"counters": counters, "gauges": gauges}


def _of_peer(peer: Peer) -> Counts:
    """One peer's counts: its shim's own plus its (live) legs' retransmissions."""
    c = Counts(
        packets_in=peer.packets_in,
        bytes_in=peer.bytes_in,
        packets_out=peer.packets_out,
        bytes_out=peer.bytes_out,
        nacks_in=peer.nacks_in,
        keyframe_requests_in=peer.keyframe_requests_in,
        nacks_out=peer.nacks_out,
        plis_out=peer.plis_out,
        keyframe_waits=peer.keyframe_waits,
        peers=1,
        tracks=peer.tracks_published,
    )
    c.rtx_out = peer.rtx_retired + sum(leg.retransmitted for _, leg in peer.legs.values())
    if peer.egress is not None:
        c.dropped_out = peer.egress.dropped
    return c
