"""The media server of one node: rooms by session. Imports nothing from signaling, and
nothing of recording: it records through the taps of ``tap`` it is handed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import InvalidStateError

from . import aiortc_adapter
from . import health as media_health
from . import sdp as sdp_check
from .counters import Totals
from .errors import MediaError
from .room import Room
from .settings import MediaSettings
from .tap import RecorderTap
from .tracks import SOURCES

log = logging.getLogger(__name__)

# (session id, target participant id or None for everyone in the session, message)
Emit = Callable[[str, str | None, dict[str, Any]], None]

MAX_TRANSCEIVERS = 64


def _mapping(items: Any, field: str, what: str) -> dict[str, str]:
    if not isinstance(items, list) or len(items) > MAX_TRANSCEIVERS:
        raise MediaError("invalid_message", f"{what} must be a list of at most {MAX_TRANSCEIVERS}")
    out: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("mid"), str):
            raise MediaError("invalid_message", f"each {what} entry needs a string 'mid'")
        value = item.get(field)
        if not isinstance(value, str):
            raise MediaError("invalid_message", f"each {what} entry needs a string '{field}'")
        out[item["mid"]] = value
    return out


class MediaServer:
    def __init__(
        self, settings: MediaSettings, emit: Emit, recorder: RecorderTap | None = None
    ) -> None:
        aiortc_adapter.check_versions()
        aiortc_adapter.configure_host_candidates(settings.listen_ips, settings.port_range)
        self.settings = settings
        self._emit = emit
        self.rooms: dict[str, Room] = {}
        self.totals = Totals()  # what this host forwarded, for the node's metrics
        self.recorder = recorder
        self._recording: dict[str, str] = {}  # session id -> case id, while recording
        # Rooms being closed (their recordings finishing): an end that comes meanwhile
        # waits for the files, so that whoever seals the case file finds them final.
        self._closing: dict[str, asyncio.Event] = {}

    def room(self, session_id: str) -> Room:
        room = self.rooms.get(session_id)
        if room is None:
            room = self.rooms[session_id] = Room(
                session_id,
                self.settings,
                lambda pid, msg: self._emit(session_id, pid, msg),
                self.totals,
            )
            self.totals.retired.rooms += 1
            case_id = self._recording.get(session_id)
            if case_id is not None:
                self._attach(room, case_id)
        return room

    def _attach(self, room: Room, case_id: str) -> None:
        """Recording problems never stop the media: they are reported instead."""
        if self.recorder is None or room.tap is not None:
            return
        try:
            room.tap = self.recorder.record(room, case_id)
        except (OSError, ValueError) as exc:
            log.error("cannot record %s: %s", room.session_id, exc)
            self.recorder.on_event(
                room.session_id,
                {
                    "type": "recording.error",
                    "session_id": room.session_id,
                    "case_id": case_id,
                    "code": "not_recordable",
                    "message": str(exc),
                },
            )

    # -- recording (the signaling side decides when; the case id comes from it) ----------
    def start_recording(self, session_id: str, case_id: str) -> None:
        if self.recorder is None:
            raise MediaError("recording_unavailable", "this media node does not record")
        self._recording[session_id] = case_id
        room = self.rooms.get(session_id)
        if room is not None:
            self._attach(room, case_id)

    async def stop_recording(self, session_id: str) -> dict[str, Any] | None:
        """Stop; returns once the files are closed and repaired (None: was not recording)."""
        self._recording.pop(session_id, None)
        room = self.rooms.get(session_id)
        rec = room.tap if room is not None else None
        if room is None or rec is None:
            return None
        room.tap = None
        return await rec.stop()

    def recording(self, session_id: str) -> bool:
        return session_id in self._recording

    async def negotiate(
        self,
        session_id: str,
        participant_id: str,
        owner: dict[str, Any],
        sdp: str,
        publish: list[dict[str, Any]],
        subscribe: list[dict[str, Any]],
    ) -> dict[str, Any]:
        pub = _mapping(publish, "source", "publish")
        for source in pub.values():
            if source not in SOURCES:
                raise MediaError(
                    "bad_source", f"unknown source {source!r}; use {', '.join(SOURCES)}"
                )
        sub = _mapping(subscribe, "track_id", "subscribe")
        # A malformed offer is refused before it opens a room, replaces a live
        # connection (a new ICE ufrag does) or reaches aiortc's parser.
        try:
            sdp_check.check_offer(sdp)
        except ValueError as exc:
            raise MediaError("bad_sdp", f"the offer is not usable SDP: {exc}") from None
        room = self.room(session_id)
        known = room.peers.get(participant_id)
        peer = await room.peer_for(participant_id, owner, sdp)
        try:
            answer = await peer.negotiate(sdp, pub, sub)
        except InvalidStateError:
            if not peer.closed:
                raise
            # Closed underneath the offer (ICE failed, the room ended): the client offers
            # anew on a new connection, as it does after media.state "closed".
            raise MediaError(
                "media_closed", "this media connection closed while the offer was handled"
            ) from None
        except MediaError:
            if peer is not known and room.peers.get(participant_id) is peer:
                await room.remove(participant_id)  # no half-made connection stays behind
            raise
        return {"sdp": answer, "tracks": room.describe()}

    def ready(self, session_id: str, participant_id: str) -> None:
        room = self.rooms.get(session_id)
        peer = room.peers.get(participant_id) if room else None
        if peer is None:
            raise MediaError("no_media", "no media connection to confirm: offer first")
        peer.ready()

    def tracks(self, session_id: str) -> list[dict[str, Any]]:
        room = self.rooms.get(session_id)
        return room.describe() if room else []

    def health(self, session_id: str) -> list[dict[str, Any]]:
        """Each peer's media health as this server counts it (``health.room``)."""
        room = self.rooms.get(session_id)
        return media_health.room(room, time.monotonic()) if room else []

    async def leave(self, session_id: str, participant_id: str) -> None:
        room = self.rooms.get(session_id)
        if room is not None:
            await room.remove(participant_id)
            if not room.peers:
                await self.end(session_id)

    async def end(self, session_id: str) -> dict[str, Any] | None:
        """Close the room; a recording stops with it (returned as in stop_recording)."""
        self._recording.pop(session_id, None)
        room = self.rooms.pop(session_id, None)
        if room is None:
            closing = self._closing.get(session_id)
            if closing is not None:
                await closing.wait()  # the last leave is closing it: files final after
            return None
        done = self._closing[session_id] = asyncio.Event()
        try:
            rec = room.tap
            await room.close()  # every track ends (and tells the recorder)
            room.tap = None
            return await rec.stop() if rec is not None else None
        finally:
            done.set()
            if self._closing.get(session_id) is done:
                del self._closing[session_id]

    async def close(self) -> None:
        for session_id in list(self.rooms):
            await self.end(session_id)
        if self.recorder is not None:
            self.recorder.close()
