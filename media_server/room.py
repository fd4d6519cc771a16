"""A session's media: its peers, the tracks they publish, active speaker, RTCP timers.

Each ``Peer`` negotiates and forwards its own packets; the room is what they share: which
tracks are published by whom (a subscriber finds its upstream here), the timer that sends
RTCP and NACKs, the active speaker, and the recorder. Peers reach it through
``peer.PeerRoom``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack

from . import health, sdp
from .adaptation import shown_paused
from .aiortc_adapter import MediaRelay
from .counters import Totals
from .forwarder import Leg, Upstream
from .peer import Peer
from .quality import QualityWatch, Thresholds
from .settings import MediaSettings
from .speaker import SpeakerDetector
from .tap import RoomTap
from .tracks import Publication

log = logging.getLogger(__name__)

# RTCP timers. NACK retries need a tick every 50 ms, but only while packets are missing;
# otherwise receiver reports, REMB (1 s) and the active speaker (200 ms) set the pace:
# every tick is a wakeup of the process, which costs more than the tick's own work.
# Keyframe requests do not wait for a tick: they wake it at once (and are still
# coalesced to one per 300 ms).
TICK = 0.05
SPEAKER_EVERY = 0.2
IDLE_TICK = SPEAKER_EVERY
QUALITY_EVERY = 1.0  # a health sample of each participant for the trouble watch
# A gap in a publisher's sequence: NACK it this soon (a reordered packet may still come).
NACK_DELAY = 0.02

# (target participant id or None for everyone, message)
Emit = Callable[[str | None, dict[str, Any]], None]


class Room:
    """Satisfies ``peer.PeerRoom``: what each of its peers reaches it through."""

    def __init__(
        self, session_id: str, settings: MediaSettings, emit: Emit, totals: Totals | None = None
    ) -> None:
        self.session_id = session_id
        self.totals = totals or Totals()  # the host's running totals (metrics)
        self.settings = settings
        self.emit = emit
        self.peers: dict[str, Peer] = {}
        self.tracks: dict[str, tuple[Upstream, Peer, Publication]] = {}
        self.speaker = SpeakerDetector()
        self.tap: RoomTap | None = None  # while the room is recorded
        self.relay = MediaRelay() if settings.mode == "transcode" else None
        self._timer: asyncio.TimerHandle | None = None
        self._due = float("inf")  # loop time the timer fires at
        self.ticking_fast = False  # on the NACK pace (TICK): no need to wake for a gap
        self._next_speaker = 0.0
        self.quality = QualityWatch(Thresholds(settings.quality_loss, settings.quality_frozen_s))
        self._next_quality = 0.0
        self._next_paced = float("inf")
        self.closed = False
        self._connections: dict[str, int] = {}

    def connection_number(self, participant_id: str) -> int:
        """1 for a participant's first media connection in this room, 2 after a rebuild..."""
        n = self._connections.get(participant_id, 0) + 1
        self._connections[participant_id] = n
        return n

    # -- peers ------------------------------------------------------------------------
    async def peer_for(self, participant_id: str, owner: dict[str, Any], offer: str) -> Peer:
        """The participant's connection; a new one when the offer comes from a new
        client (a reloaded page offers with new ICE credentials)."""
        peer = self.peers.get(participant_id)
        ufrag = sdp.ice_ufrag(offer)
        if peer is not None and ufrag is not None and peer.remote_ufrag not in (None, ufrag):
            await self.remove(participant_id)
            peer = None
        if peer is None or peer.closed:
            serial = self.connection_number(participant_id)
            peer = Peer(self, participant_id, owner, self.settings, serial)
            peer.totals = self.totals
            self.peers[participant_id] = peer
            if self._timer is None:
                self._schedule(TICK)
        return peer

    async def remove(self, participant_id: str) -> None:
        peer = self.peers.pop(participant_id, None)
        if peer is not None:
            await self._drop(peer)

    async def peer_gone(self, peer: Peer, reason: str) -> None:
        """ICE failed or the connection closed underneath us: clean up and say so."""
        if self.peers.get(peer.participant_id) is peer:
            del self.peers[peer.participant_id]
        await self._drop(peer)
        if reason == "ice_failed":
            log.warning("media of %s in %s failed", peer.participant_id, self.session_id)
        self.emit(
            peer.participant_id,
            {
                "type": "media.state",
                "state": "failed" if reason == "ice_failed" else "closed",
                "session_id": self.session_id,
                "reason": reason,
            },
        )

    async def _drop(self, peer: Peer) -> None:
        changed = False
        for track_id, (upstream, owner, _) in list(self.tracks.items()):
            if owner is peer:
                del self.tracks[track_id]
                self._orphan(upstream)
                self._track_ended(upstream)
                changed = True
        self.speaker.forget(peer.participant_id)
        await peer.close()
        if changed:
            self.tracks_changed()

    def _orphan(self, upstream: Upstream) -> None:
        for other in self.peers.values():
            other.forget_upstream(upstream)
        upstream.legs.clear()

    # -- tracks -----------------------------------------------------------------------
    def publish(self, peer: Peer, pub: Publication) -> None:
        assert pub.upstream is not None
        self.tracks[pub.track_id] = (pub.upstream, peer, pub)
        self._observe_sender_reports(pub.upstream)
        self.tracks_changed()

    def unpublish(self, peer: Peer, pub: Publication) -> None:
        entry = self.tracks.pop(pub.track_id, None)
        if entry is not None:
            self._orphan(entry[0])
            self._track_ended(entry[0])
            self.tracks_changed()

    def _track_ended(self, upstream: Upstream) -> None:
        self.totals.retire_track(upstream)
        if self.tap is not None:
            self.tap.track_ended(upstream)

    def _observe_sender_reports(self, upstream: Upstream) -> None:
        """The recorder keeps (NTP, RTP) pairs for later sync. The peer hands sender
        reports straight to ``Upstream.on_sender_report``, so that method is wrapped for
        this one instance rather than adding a listener to the forwarding core."""
        original = upstream.on_sender_report

        def on_sender_report(ntp: int, rtp_ts: int, now: float) -> Any:
            if self.tap is not None:
                self.tap.sender_report(upstream, ntp, rtp_ts)
            return original(ntp, rtp_ts, now)

        upstream.on_sender_report = on_sender_report  # type: ignore[method-assign]

    def upstream(self, track_id: str) -> tuple[Upstream, Peer] | None:
        entry = self.tracks.get(track_id)
        return (entry[0], entry[1]) if entry else None

    def relayed(self, track_id: str) -> MediaStreamTrack | None:
        """Transcode mode: a subscriber's own copy of a published track (decoded and
        re-encoded by aiortc's relay)."""
        entry = self.tracks.get(track_id)
        source = entry[2].remote_track if entry else None
        if source is None or self.relay is None:
            return None
        return self.relay.subscribe(source, buffered=False)

    def describe(self) -> list[dict[str, Any]]:
        return [
            pub.describe({"participant_id": peer.participant_id, "owner": peer.owner})
            for _, peer, pub in self.tracks.values()
        ]

    def tracks_changed(self) -> None:
        self.emit(
            None, {"type": "media.tracks", "session_id": self.session_id, "tracks": self.describe()}
        )

    def heard(self, participant_id: str, level: int, now: float) -> None:
        self.speaker.observe(participant_id, level, now)

    # -- timers -----------------------------------------------------------------------
    def wake_for_nacks(self) -> None:
        if not self.ticking_fast:  # on the slow pace: NACK soon (on the fast one it will)
            self.wake(NACK_DELAY)

    def wake(self, within: float = 0.0) -> None:
        """Tick within this many seconds (at once by default)."""
        if not self.closed and asyncio.get_running_loop().time() + within < self._due:
            self._schedule(within)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self.ticking_fast = delay <= TICK
        self._due = loop.time() + delay
        self._timer = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        self._timer, self._due = None, float("inf")
        if self.closed:
            return
        busy = True
        now = time.monotonic()
        self._next_paced = float("inf")
        try:
            busy = self._poll(now)
        except Exception:
            log.exception("media timers of %s failed", self.session_id)
        if self._timer is None and not self.closed:  # (an emit may have woken us already)
            # (a thin leg's paced packets: when the next is due)
            self._schedule(min(TICK if busy else IDLE_TICK, max(0.0, self._next_paced - now)))

    def _poll(self, now: float) -> bool:
        """Send what is due; True while packets are missing (NACKs need the fast tick)."""
        busy = False
        for upstream, peer, pub in list(self.tracks.values()):
            for leg in upstream.adapt(now):
                self._video_paused(peer, pub, leg)
            packets = upstream.poll(now)
            if packets:
                peer.send_upstream_rtcp(packets)
            for leg, echo in upstream.take_echoes():
                leg.sink.send(echo)
            if upstream.pacing:
                for leg, packet in upstream.take_paced(now):
                    leg.sink.send(packet)
                due = upstream.next_paced()
                if due is not None:
                    self._next_paced = min(self._next_paced, due)
            busy = busy or bool(upstream.missing) or upstream.keyframe_pending
        if now >= self._next_speaker:
            self._next_speaker = now + SPEAKER_EVERY
            changed, active = self.speaker.poll(now)
            if changed:
                self.emit(
                    None,
                    {
                        "type": "speaking",
                        "session_id": self.session_id,
                        "participant_id": active,
                        "levels": self.speaker.levels(),
                    },
                )
        if now >= self._next_quality:
            self._next_quality = now + QUALITY_EVERY
            for report in self.quality.observe(health.room(self, now), now):
                # Not for the pages: the node files it in the case timeline.
                self.emit(None, {"type": "media.quality", "session_id": self.session_id, **report})
        return busy

    def _video_paused(self, publisher: Peer, pub: Publication, leg: Leg) -> None:
        """Tell the subscriber of ``leg`` that this video of the publisher is paused for
        it (its link is too thin), or flows again."""
        for peer in self.peers.values():
            if any(other is leg for _, other in peer.legs.values()):
                self.emit(
                    peer.participant_id,
                    {
                        "type": "video_paused",
                        "session_id": self.session_id,
                        "participant_id": publisher.participant_id,
                        "track_id": pub.track_id,
                        "source": pub.source,
                        "paused": shown_paused(leg),
                    },
                )
                return

    async def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for pid in list(self.peers):
            await self.remove(pid)
