"""``Bot``: a session participant written in Python (aiortc), doing what a browser does, for
tests, the benchmark's load generators and headless bots. It signs in with a token, joins a
session, publishes tracks and receives every other participant's tracks, renegotiating as
they come and go. (The domain's participants, who may join what, are
``signaling/participants.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

log = logging.getLogger(__name__)
Msg = dict[str, Any]
# media.state reasons: the host died, or its node drains and moves its sessions
LOST = ("media_worker_lost", "media_node_lost", "media_host_draining")


class SignalingError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class Remote:
    """A track received from another participant."""

    info: dict[str, Any]
    transceiver: RTCRtpTransceiver
    track: MediaStreamTrack | None = None

    @property
    def track_id(self) -> str:
        return str(self.info["track_id"])


@dataclass
class Bot:
    """One client connection to a node: signaling socket plus one aiortc peer connection."""

    url: str  # http(s)://host:port of any jointreview node
    token: str
    subscribe_filter: Callable[[dict[str, Any]], bool] = lambda info: True
    on_remote: Callable[[Remote], None] | None = None
    configure_receiver: Callable[[RTCRtpTransceiver, dict[str, Any]], None] | None = None
    messages: list[Msg] = field(default_factory=list)
    # As a page does: a fresh peer connection when the session's media host died.
    restart_on_loss: bool = False

    def __post_init__(self) -> None:
        self.pc: RTCPeerConnection | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.welcome: Msg = {}
        self.joined: Msg = {}
        self.participant_id = ""
        self.published: dict[str, tuple[str, MediaStreamTrack]] = {}  # mid -> (source, track)
        self._pending_publish: list[tuple[str, MediaStreamTrack, str | None]] = []
        self.remotes: dict[str, Remote] = {}  # track_id -> Remote
        self.tracks: list[dict[str, Any]] = []
        self._refs = itertools.count()
        self._waiters: dict[str, asyncio.Future[Msg]] = {}
        self._events = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._negotiating = asyncio.Lock()
        self._dirty = False
        self._renegotiate: asyncio.Task[None] | None = None
        self.speaking: str | None = None
        self._restart: asyncio.Task[None] | None = None
        self.restarts = 0  # fresh connections after a lost media host

    # -- signaling --------------------------------------------------------------------
    async def connect(self) -> None:
        self.http = aiohttp.ClientSession()
        ws_url = self.url.replace("http", "ws", 1) + f"/ws?token={self.token}"
        self.ws = await self.http.ws_connect(ws_url)
        self._reader = asyncio.create_task(self._read())
        self.welcome = await self.wait_for("welcome")

    async def _read(self) -> None:
        assert self.ws is not None
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            msg = json.loads(frame.data)
            ref = msg.get("ref")
            if ref in self._waiters and not self._waiters[ref].done():
                self._waiters[ref].set_result(msg)
                continue
            self.messages.append(msg)
            self._events.set()
            kind = msg.get("type")
            if kind == "media.tracks":
                self._tracks_update(msg["tracks"])
            elif kind == "speaking":
                self.speaking = msg.get("participant_id")
            elif kind == "media.state" and msg.get("reason") in LOST and self.restart_on_loss:
                old, self.pc = self.pc, None  # no renegotiation on the dead one meanwhile
                self._restart = asyncio.create_task(self._restart_media(old))

    async def request(self, msg: Msg, timeout: float = 15.0) -> Msg:
        assert self.ws is not None
        ref = f"q{next(self._refs)}"
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiters[ref] = fut
        try:
            await self.ws.send_str(json.dumps({**msg, "ref": ref}))
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.pop(ref, None)
        if reply.get("type") == "error":
            raise SignalingError(reply["code"], reply["message"])
        return reply

    async def wait_for(
        self, kind: str, where: Callable[[Msg], bool] = lambda m: True, timeout: float = 10.0
    ) -> Msg:
        async def find() -> Msg:
            while True:
                for i, msg in enumerate(self.messages):
                    if msg.get("type") == kind and where(msg):
                        return self.messages.pop(i)
                self._events.clear()
                await self._events.wait()

        return await asyncio.wait_for(find(), timeout)

    async def join(self, session_id: str) -> Msg:
        self.joined = await self.request({"type": "join", "session_id": session_id})
        self.participant_id = self.joined["participant"]["participant_id"]
        self.pc = self._new_pc()
        return self.joined

    async def observe(self, session_id: str) -> Msg:
        """Watch the session receive-only (a supervisor): ``negotiate`` then receives
        every track and publishes nothing."""
        self.joined = await self.request({"type": "observe", "session_id": session_id})
        self.participant_id = self.joined["observation"]["observation_id"]
        self.pc = self._new_pc()
        return self.joined

    def _new_pc(self) -> RTCPeerConnection:
        ice = [RTCIceServer(**s) for s in self.welcome.get("ice_servers", [])]
        # max-bundle, as the server. With aiortc's default (balanced), a receiver added by a
        # later negotiation sometimes kept a transport of its own that never connected, and
        # its packets went to another receiver of the same payload type (seen in about one
        # run in three of test_three_people_see_and_hear_each_other).
        return RTCPeerConnection(
            RTCConfiguration(iceServers=ice, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )

    async def _restart_media(self, old: RTCPeerConnection | None) -> None:
        """Same slot, a new connection: publish the same tracks again, subscribe anew."""
        try:
            async with self._negotiating:
                keep = [(source, track, None) for source, track in self.published.values()]
                self.published.clear()
                self.remotes.clear()
                self._pending_publish[:0] = keep
                self.pc = self._new_pc()
            if old is not None:
                await old.close()
            self.restarts += 1
            await self.negotiate()
        except (SignalingError, TimeoutError, ConnectionError) as exc:
            log.warning("restarting the media connection failed: %s", exc)

    # -- media ------------------------------------------------------------------------
    async def publish(self, source: str, track: MediaStreamTrack, codec: str | None = None) -> None:
        """Send a track; ``codec`` (e.g. "video/H264") restricts what it is sent as."""
        self._pending_publish.append((source, track, codec))
        await self.negotiate()

    async def unpublish(self, source: str) -> None:
        assert self.pc is not None
        for mid, (src, _) in list(self.published.items()):
            if src == source:
                for t in self.pc.getTransceivers():
                    if t.mid == mid:
                        t.direction = "inactive"
                del self.published[mid]
        await self.negotiate()

    def _tracks_update(self, tracks: list[dict[str, Any]]) -> None:
        self.tracks = tracks
        if self.pc is not None and self._wanted_changes():
            if self._renegotiate is None or self._renegotiate.done():
                self._renegotiate = asyncio.create_task(self._background_negotiate())
            else:
                self._dirty = True

    def _wanted(self) -> dict[str, dict[str, Any]]:
        return {
            t["track_id"]: t
            for t in self.tracks
            if t.get("participant_id") != self.participant_id and self.subscribe_filter(t)
        }

    def receiving(self, count: int) -> bool:
        """Are exactly ``count`` remote tracks negotiated and flowing into tracks?"""
        return len(self.remotes) == count and all(r.track for r in self.remotes.values())

    def _wanted_changes(self) -> bool:
        wanted = self._wanted()
        return set(wanted) != set(self.remotes)

    async def _background_negotiate(self) -> None:
        try:
            await self.negotiate()
        except (SignalingError, TimeoutError, ConnectionError) as exc:
            log.warning("renegotiation failed: %s", exc)
        except Exception:
            if self.pc is not None and self.pc.connectionState != "closed":
                log.exception("renegotiation failed")

    async def negotiate(self) -> Msg:
        """Offer what we publish and want to receive; apply the answer. One at a time."""
        assert self.pc is not None
        async with self._negotiating:
            while True:
                self._dirty = False
                reply = await self._negotiate_once()
                self.tracks = reply["tracks"]
                if not self._dirty and not self._wanted_changes():
                    return reply

    async def _negotiate_once(self) -> Msg:
        pc = self.pc
        assert pc is not None
        if not pc.getTransceivers() and not self._pending_publish:
            # Nothing to send yet: learn what there is to receive first.
            sync = await self.request({"type": "media.sync"})
            self.tracks = sync["tracks"]
            if not self._wanted():
                return {"tracks": self.tracks}
        new_pubs = []
        for source, track, codec in self._pending_publish:
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if codec is not None:
                caps = RTCRtpSender.getCapabilities(track.kind).codecs
                transceiver.setCodecPreferences(
                    [c for c in caps if c.mimeType.lower() in (codec.lower(), f"{track.kind}/rtx")]
                )
            new_pubs.append((source, transceiver))
        self._pending_publish.clear()
        wanted = self._wanted()
        for track_id in list(self.remotes):
            if track_id not in wanted:
                self.remotes.pop(track_id).transceiver.direction = "inactive"
        added = []
        for track_id, info in wanted.items():
            if track_id not in self.remotes:
                transceiver = pc.addTransceiver(info["kind"], direction="recvonly")
                if self.configure_receiver is not None:
                    self.configure_receiver(transceiver, info)
                remote = Remote(info, transceiver)
                self.remotes[track_id] = remote
                added.append(remote)
        await pc.setLocalDescription(await pc.createOffer())
        for source, transceiver in new_pubs:
            assert transceiver.mid is not None and transceiver.sender.track is not None
            self.published[transceiver.mid] = (source, transceiver.sender.track)
        offer = {
            "type": "media.offer",
            "sdp": pc.localDescription.sdp,
            "publish": [{"mid": m, "source": s} for m, (s, _) in self.published.items()],
            "subscribe": [
                {"mid": r.transceiver.mid, "track_id": tid} for tid, r in self.remotes.items()
            ],
        }
        reply = await self.request(offer)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        await self.request({"type": "media.ready"})
        for remote in added:
            # aiortc creates the receiving track when it applies the answer.
            remote.track = remote.transceiver.receiver.track
            if self.on_remote is not None:
                self.on_remote(remote)
        return reply

    async def leave(self) -> None:
        with contextlib.suppress(Exception):
            await self.request({"type": "leave"}, timeout=5)

    async def close(self) -> None:
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restart
        if self._renegotiate is not None:
            self._renegotiate.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renegotiate
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.http is not None:
            await self.http.close()
