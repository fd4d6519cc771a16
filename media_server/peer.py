"""One participant's connection to the SFU: negotiation, and the thin shim of the core.

The participant always offers (so there is never glare on the one connection): its
offer names which of its transceivers publish (and what: microphone, camera, document,
screen) and which receive which published track. The server answers, then runs the
packets: received RTP goes through ``Upstream.on_rtp`` and the resulting bytes are sent
as they come back; RTCP feedback goes to the core in the same way (``feedback.py``).
A peer reaches its room only through ``PeerRoom`` (what it needs of ``room.Room``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiortc import (
    MediaStreamError,
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from . import aiortc_adapter as adapter
from . import feedback, rtp, sdp
from .aiortc_adapter import RTCRtpReceiveParameters, RTCRtpSendParameters
from .counters import Totals
from .errors import MediaError
from .forwarder import Leg, Upstream
from .repair import ECHO_AFTER
from .settings import MediaSettings
from .tap import RoomTap
from .tracks import SOURCES, Publication, Subscription

log = logging.getLogger(__name__)

# What aiortc's SDP parser and answer raise on input it cannot use (its parser indexes,
# int()s and asserts; a StopIteration inside a coroutine surfaces as RuntimeError).
AIORTC_PARSE_ERRORS = (
    ValueError,
    AssertionError,
    KeyError,
    IndexError,
    AttributeError,
    TypeError,
    RuntimeError,
)


class SilentTrack(MediaStreamTrack):
    """Gives a forwarding sender its m-line and SSRC; yields no frames (we send RTP)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> Any:
        await self._never
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        if not self._never.done():
            self._never.set_result(None)


def _codec_preferences(kind: str, mime: list[str]) -> list[RTCRtpCodecCapability]:
    caps = RTCRtpReceiver.getCapabilities(kind)
    assert caps is not None
    chosen = [c for m in mime for c in caps.codecs if c.mimeType.lower() == m.lower()]
    return chosen + [c for c in caps.codecs if c.mimeType.lower().endswith("/rtx")]


def _ext_id(params: RTCRtpSendParameters | RTCRtpReceiveParameters, uri: str) -> int:
    return next((e.id for e in params.headerExtensions if e.uri == uri), 0)


def _rtx_payload_type(codecs: list[RTCRtpCodecParameters], apt: int) -> int | None:
    for c in codecs:
        if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == apt:
            return c.payloadType
    return None


class PeerRoom(Protocol):
    """The room a peer belongs to, as the peer sees it (``room.Room``): where tracks are
    published and found, the timers RTCP feedback wakes, the active speaker's ears, and
    where a connection that died underneath reports it."""

    def upstream(self, track_id: str) -> tuple[Upstream, Peer] | None: ...

    def publish(self, peer: Peer, pub: Publication) -> None: ...

    def unpublish(self, peer: Peer, pub: Publication) -> None: ...

    def tracks_changed(self) -> None: ...

    def relayed(self, track_id: str) -> MediaStreamTrack | None:
        """Transcode mode: a subscriber's own copy of a published track."""

    def wake(self, within: float = 0.0) -> None:
        """Run the timers now, or within this many seconds (a keyframe request, a new
        leg; second copies of packets for a lossy leg)."""

    def wake_for_nacks(self) -> None:
        """A publisher's packets are missing: run the timers soon enough to NACK them."""

    def heard(self, participant_id: str, level: int, now: float) -> None:
        """An audio level (RFC 6464) a participant's microphone packet carries."""

    async def peer_gone(self, peer: Peer, reason: str) -> None: ...

    @property
    def tap(self) -> RoomTap | None:
        """The room's recording while it is recorded: each received packet goes to it."""


class Peer:
    def __init__(
        self,
        room: PeerRoom,
        participant_id: str,
        owner: dict[str, Any],
        settings: MediaSettings,
        serial: int,
    ) -> None:
        self.room = room
        self.participant_id = participant_id
        self.owner = owner  # who this is, as other participants see it
        self.settings = settings
        ice = [RTCIceServer(**s) for s in settings.server_ice_servers()]
        # One transport for every m-line: with aiortc's default ("balanced"), a first
        # offer with two video m-lines leaves the second on a transport it then stops.
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=ice, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        # Track ids are unique per connection: a rebuilt connection (a reloaded page)
        # publishes new tracks, never the old ids again.
        self.serial = serial
        self.egress: adapter.Egress | None = None
        self.publications: dict[str, Publication] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.by_ssrc: dict[int, tuple[Upstream, bool]] = {}
        self.legs: dict[int, tuple[Upstream, Leg]] = {}
        self.closed = False
        self.remote_ufrag: str | None = None
        # Media flows on a new subscription only once the participant has applied the
        # answer that created it (``ready``): packets sent before are dropped by the
        # client as unknown, and a keyframe cut short leaves the picture broken.
        self.generation = 0
        self.ready_generation = 0
        self._lock = asyncio.Lock()
        self._clock: Callable[[], float] = time.monotonic
        self.transcoding = settings.mode == "transcode"
        self.pc.on("connectionstatechange", self._state_changed)
        # The shim's counts for the node's metrics (counters.py): what the core does not see.
        self.totals: Totals | None = None  # the host's, set by the room; gets these at close
        self.packets_in = self.bytes_in = self.packets_out = self.bytes_out = 0
        self.nacks_in = self.keyframe_requests_in = self.nacks_out = self.plis_out = 0
        self.keyframe_waits = self.tracks_published = self.rtx_retired = 0

    # -- negotiation ------------------------------------------------------------------
    async def negotiate(
        self, offer: str, publish: dict[str, str], subscribe: dict[str, str]
    ) -> str:
        async with self._lock:
            if self.closed:
                raise MediaError("media_closed", "this media connection has closed; offer anew")
            # Everything that can refuse the offer is checked before anything changes: a
            # refused offer leaves the connection exactly as it was.
            self._check(offer, publish, subscribe)
            try:
                await self.pc.setRemoteDescription(
                    RTCSessionDescription(sdp=sdp.drop_mdns_candidates(offer), type="offer")
                )
            except AIORTC_PARSE_ERRORS as exc:
                # A backstop: sdp.check_offer refuses what we know aiortc chokes on.
                log.warning("aiortc refused an offer that passed check_offer: %r", exc)
                raise MediaError("bad_sdp", f"the offer is not usable SDP: {exc!r}") from None
            self.remote_ufrag = sdp.ice_ufrag(offer)
            by_mid = {t.mid: t for t in self.pc.getTransceivers() if t.mid is not None}
            for mid in list(publish) + list(subscribe):
                if mid not in by_mid:
                    raise MediaError("unknown_mid", f"the offer has no m-line with mid {mid!r}")
            for mid, transceiver in by_mid.items():
                if mid in publish:
                    self._publish(transceiver, publish[mid])
                elif mid in subscribe:
                    self._subscribe(transceiver, subscribe[mid])
                else:
                    self._deactivate(transceiver)
            try:
                answer = await self.pc.createAnswer()
                await self.pc.setLocalDescription(answer)
            except AIORTC_PARSE_ERRORS as exc:
                log.warning("aiortc cannot answer an offer that passed check_offer: %r", exc)
                raise MediaError("bad_sdp", f"the offer cannot be answered: {exc!r}") from None
            self.generation += 1
            dtls = adapter.dtls_transport(self.pc)
            if dtls is not None and self.egress is None and not self.transcoding:
                self.egress = adapter.Egress(dtls)
                adapter.install_ingress(dtls, self.on_rtp, self.on_rtcp)
            return sdp.announce_address(self.pc.localDescription.sdp, self.settings.announced_ip)

    def _check(self, offer: str, publish: dict[str, str], subscribe: dict[str, str]) -> None:
        try:
            sdp.check_offer(offer)
        except ValueError as exc:
            raise MediaError("bad_sdp", f"the offer is not usable SDP: {exc}") from None
        kinds = sdp.media_kinds(offer)
        for mid in list(publish) + list(subscribe):
            if mid not in kinds:
                raise MediaError("unknown_mid", f"the offer has no m-line with mid {mid!r}")
        for mid, source in publish.items():
            kind = SOURCES.get(source)
            if kind is None:
                known = ", ".join(SOURCES)
                raise MediaError("bad_source", f"unknown source {source!r}; use {known}")
            if kind != kinds[mid]:
                raise MediaError(
                    "bad_source", f"a {source} is {kind}, m-line {mid} is {kinds[mid]}"
                )
        for mid, track_id in subscribe.items():
            current = self.subscriptions.get(mid)
            if current is not None and current.track_id != track_id:
                raise MediaError("mid_reused", f"m-line {mid} already receives {current.track_id}")
            found = self.room.upstream(track_id)
            if found is None:
                continue  # unpublished meanwhile: the m-line goes inactive
            upstream, owner = found
            if owner is self:
                raise MediaError("own_track", "a participant does not receive its own tracks")
            if upstream.kind != kinds[mid]:
                raise MediaError(
                    "bad_subscription",
                    f"{track_id} is {upstream.kind}, m-line {mid} is {kinds[mid]}",
                )

    def _publish(self, transceiver: RTCRtpTransceiver, source: str) -> None:
        mid = transceiver.mid
        assert mid is not None
        kind = SOURCES[source]  # checked in _check
        transceiver.direction = "recvonly"
        pub = self.publications.get(mid)
        if pub is not None:
            if pub.source != source:
                pub.source = source
                self.room.tracks_changed()
            return
        mimes = self.settings.video_codecs if kind == "video" else ["audio/opus"]
        transceiver.setCodecPreferences(_codec_preferences(kind, mimes))
        pub = Publication(f"{self.participant_id}.{self.serial}.{mid}", mid, kind, source)
        self.publications[mid] = pub
        adapter.on_receive_parameters(
            transceiver.receiver, lambda params: self._publication_ready(transceiver, pub, params)
        )
        if not self.transcoding:  # our ingress takes its packets: nothing for it to report
            adapter.quiet_rtcp(transceiver.receiver)

    def _publication_ready(
        self, transceiver: RTCRtpTransceiver, pub: Publication, params: RTCRtpReceiveParameters
    ) -> None:
        codec = params.codecs[0]
        up = Upstream(
            pub.track_id,
            pub.kind,
            codec.mimeType,
            clock_rate=codec.clockRate,
            rtcp_ssrc=adapter.sender_ssrcs(transceiver.sender)[0],
            audio_level_id=_ext_id(params, rtp.URI_AUDIO_LEVEL),
            abs_send_time_id=_ext_id(params, rtp.URI_ABS_SEND_TIME),
            nack=any(fb.type == "nack" for fb in codec.rtcpFeedback),
            bitrate=self.settings.bitrate(),
        )
        pub.mid_ext_id = _ext_id(params, rtp.URI_MID)
        pub.rtx_payload_type = (
            _rtx_payload_type(params.codecs, codec.payloadType)
            if codec.payloadType is not None
            else None
        )
        for enc in params.encodings:
            self.by_ssrc[enc.ssrc] = (up, False)
            if enc.rtx is not None:
                self.by_ssrc[enc.rtx.ssrc] = (up, True)
        pub.upstream = up
        pub.remote_track = transceiver.receiver.track
        self.tracks_published += 1
        if pub.mid in self.publications and not self.closed:
            self.room.publish(self, pub)

    def _subscribe(self, transceiver: RTCRtpTransceiver, track_id: str) -> None:
        mid = transceiver.mid
        assert mid is not None
        if mid in self.subscriptions:  # the same track as before (checked in _check)
            transceiver.direction = "sendonly"
            return
        found = self.room.upstream(track_id)
        if found is None:
            transceiver.direction = "inactive"  # unpublished meanwhile: nothing to send
            return
        upstream = found[0]
        transceiver.direction = "sendonly"
        transceiver.setCodecPreferences(_codec_preferences(upstream.kind, [upstream.codec]))
        sub = Subscription(mid, track_id, upstream, self.generation + 1)
        self.subscriptions[mid] = sub
        if self.transcoding:
            relayed = self.room.relayed(track_id)
            assert relayed is not None
            transceiver.sender.replaceTrack(relayed)
            return
        if transceiver.sender.track is None:
            transceiver.sender.replaceTrack(SilentTrack(transceiver.kind))
        adapter.on_send_parameters(
            transceiver.sender, lambda params: self._leg_ready(transceiver, sub, params)
        )

    def _leg_ready(
        self, transceiver: RTCRtpTransceiver, sub: Subscription, params: RTCRtpSendParameters
    ) -> None:
        if self.subscriptions.get(sub.mid) is not sub or self.egress is None:
            return
        codec = next(
            (c for c in params.codecs if c.mimeType.lower() == sub.upstream.codec.lower()), None
        )
        if codec is None or codec.payloadType is None:
            log.warning("%s cannot receive %s: no common codec", self.participant_id, sub.track_id)
            return
        ssrc, rtx_ssrc = adapter.sender_ssrcs(transceiver.sender)
        rtx_pt = _rtx_payload_type(params.codecs, codec.payloadType)
        leg = Leg(
            self.egress,
            ssrc,
            codec.payloadType,
            rtx_ssrc=rtx_ssrc if rtx_pt is not None else None,
            rtx_payload_type=rtx_pt,
            audio_level_id=_ext_id(params, rtp.URI_AUDIO_LEVEL),
            abs_send_time_id=_ext_id(params, rtp.URI_ABS_SEND_TIME),
        )
        sub.leg = leg
        self.legs[ssrc] = (sub.upstream, leg)
        self._start_flowing()

    def ready(self) -> None:
        """The participant applied our latest answer: its new receivers exist now."""
        self.ready_generation = self.generation
        self._start_flowing()

    def _start_flowing(self) -> None:
        now = self._clock()
        for sub in self.subscriptions.values():
            if sub.leg is not None and not sub.flowing and sub.generation <= self.ready_generation:
                sub.flowing = True
                sub.upstream.add_leg(sub.leg, now)  # asks the publisher for a keyframe
                self.keyframe_waits += sub.leg.keyframe_wanted
                self.room.wake()

    def _deactivate(self, transceiver: RTCRtpTransceiver) -> None:
        transceiver.direction = "inactive"
        mid = transceiver.mid
        pub = self.publications.pop(mid or "", None)
        if pub is not None:
            self.room.unpublish(self, pub)
        sub = self.subscriptions.pop(mid or "", None)
        if sub is not None:
            self.drop_subscription(sub)

    def drop_subscription(self, sub: Subscription) -> None:
        if sub.leg is not None:
            sub.upstream.remove_leg(sub.leg)
            if self.legs.pop(sub.leg.ssrc, None) is not None:
                self.rtx_retired += sub.leg.retransmitted
        sub.flowing = False

    def forget_upstream(self, upstream: Upstream) -> None:
        """A track we receive was unpublished: stop its leg (the client re-offers)."""
        for sub in list(self.subscriptions.values()):
            if sub.upstream is upstream:
                self.drop_subscription(sub)
                sub.leg = None

    # -- packets (synchronous: called from the socket) ---------------------------------
    def on_rtp(self, data: bytes) -> None:
        try:
            h = rtp.parse(data)
        except rtp.RtpError:
            return
        entry = self.by_ssrc.get(h.ssrc)
        if entry is None:
            entry = self._learn(data, h)
            if entry is None:
                return
        upstream, is_rtx = entry
        now = self._clock()
        self.packets_in += 1
        self.bytes_in += len(data)
        out = upstream.on_rtx(data, h, now) if is_rtx else upstream.on_rtp(data, h, now)
        size = 0
        for leg, packet in out:
            leg.sink.send(packet)
            size += len(packet)
        self.packets_out += len(out)
        self.bytes_out += size
        if upstream.missing:
            self.room.wake_for_nacks()
        if upstream.echoes:  # (the next packet sends them, or the timer: spaced)
            self.room.wake(ECHO_AFTER)
        if upstream.pacing:  # a thin leg: what is due now, the timer the rest
            for leg, packet in upstream.take_paced(now):
                leg.sink.send(packet)
            due = upstream.next_paced()
            if due is not None:
                self.room.wake(max(0.0, due - now))
        if upstream.audio_level is not None and not is_rtx:
            self.room.heard(self.participant_id, upstream.audio_level[1], now)
        if self.room.tap is not None:
            self.room.tap(upstream, data, h)

    def _learn(self, data: bytes, h: rtp.Header) -> tuple[Upstream, bool] | None:
        """An SSRC the SDP did not announce: find its track by the mid extension."""
        for pub in self.publications.values():
            up = pub.upstream
            if up is None or not pub.mid_ext_id:
                continue
            mid = rtp.find_extension(data, h, pub.mid_ext_id)
            if mid is not None and mid.decode(errors="replace") == pub.mid:
                entry = (up, h.payload_type == pub.rtx_payload_type)
                self.by_ssrc[h.ssrc] = entry
                return entry
        return None

    def on_rtcp(self, data: bytes) -> None:
        feedback.on_rtcp(self, data, self._clock())

    def send_upstream_rtcp(self, packets: list[bytes]) -> None:
        if self.egress is not None:
            for packet in packets:
                self.egress.send_rtcp(packet)
                # (the core's RTCP: PSFB 206 with FMT 1 is a PLI, RTPFB 205 FMT 1 a NACK)
                if packet[1] == 206 and packet[0] & 0x1F == 1:
                    self.plis_out += 1
                elif packet[1] == 205 and packet[0] & 0x1F == 1:
                    self.nacks_out += 1

    # -- lifetime ---------------------------------------------------------------------
    async def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed") and not self.closed:
            await self.room.peer_gone(self, "ice_failed" if state == "failed" else "closed")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sub in self.subscriptions.values():
            self.drop_subscription(sub)
        if self.totals is not None:
            self.totals.retire_peer(self)
        try:
            await self.pc.close()
        except AIORTC_PARSE_ERRORS:
            # aiortc's close() trips over a transceiver that a refused offer half-made
            # (a receiver without a transport): the connection is gone all the same.
            log.warning(
                "closing the media connection of %s failed", self.participant_id, exc_info=True
            )
