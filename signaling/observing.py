"""The socket of someone who may observe: ``Connection`` plus ``observe`` (issue #15).

``observe`` puts the socket in a session as an observer (``signaling/observation.py``):
it hears what the session's pages hear, opens a media connection that only receives
(``media.offer`` with an empty ``publish``; anything else is ``forbidden``) and leaves
with ``leave``, by closing, or when the session ends. It holds no slot, so nothing of a
participant (chat, recording control, resume) applies: those answer ``forbidden``.
A participant's page gets the observers watching right after ``joined`` (announced
mode only), then each change, as ``observation`` messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from . import protocol
from .api_audit import address_of
from .appkeys import MEDIA, TASKS
from .auth import Identity
from .errors import Forbidden, ServiceError
from .models import Participant
from .observation import EndReason, Observation, Observations
from .state import StoreUnavailable
from .ws import STORE_RETRY_S, Connection

OBSERVATIONS = web.AppKey("observations", Observations)


def _no_slot(what: str) -> Forbidden:
    return Forbidden("forbidden", f"an observer watches only: no {what}")


class ObservingConnection(Connection):
    observation: Observation | None = None

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, who: Identity) -> None:
        super().__init__(request, ws, who)
        self.address = address_of(request)  # for the audit trail

    @property
    def observations(self) -> Observations:
        return self.app[OBSERVATIONS]

    async def on_observe(self, msg: protocol.Observe) -> None:
        self._not_joined()
        store = self.service.store
        obs = await self.observations.start(self.who, msg.session_id, self.address)
        self.observation = obs
        self.held = []
        try:
            self.session_subs = [
                await store.subscribe(f"session:{obs.session_id}", self.on_session),
                await store.subscribe(f"participant:{obs.observation_id}", self.on_participant),
            ]
            session = await self.service.session(obs.session_id)
            participants = await self.service.participants(obs.session_id)
            invitations = await self.service.invitations(obs.session_id)
            observers = await self.observations.of_session(obs.session_id)
            recording = await self.app[MEDIA].recording_active(obs.session_id)
        except BaseException:
            self.held = None
            raise
        self.send(
            {
                "type": "observing",
                "v": 1,
                "ref": msg.ref,
                "session": session.model_dump(),
                "observation": obs.public(),
                "participants": [p.model_dump() for p in participants if p.state != "left"],
                "invitations": [i.model_dump() for i in invitations],
                "observers": [o.public() for o in observers],
                "recording": recording,
            }
        )
        held, self.held = self.held, None
        for m in held:
            self.on_session(m)

    async def _enter(self, p: Participant, resume_token: str, ref: str | None) -> None:
        await super()._enter(p, resume_token, ref)
        # Who watches now (announced only); each later change comes as it happens.
        for obs in await self.observations.announced(p.session_id):
            self.send(
                {
                    "type": "observation",
                    "v": 1,
                    "state": "started",
                    "session_id": p.session_id,
                    "observation": obs.public(),
                }
            )

    def _not_joined(self) -> None:
        if self.observation is not None:
            raise ServiceError("already_joined", "this connection observes a session; leave first")
        super()._not_joined()

    def on_session(self, msg: dict[str, Any]) -> None:
        obs = self.observation
        if obs is None or self.held is not None:
            super().on_session(msg)
            return
        if msg.get("type") == "observation":
            if (msg.get("observation") or {}).get("observation_id") == obs.observation_id:
                return  # one's own: ``observing`` said it
        self.send(msg)
        if msg.get("type") == "session.ended":
            self.spawn(self._stop("session_ended"))

    async def _stop(self, reason: EndReason) -> None:
        obs, self.observation = self.observation, None
        if obs is None:
            return
        await self._drop_session_subs()
        try:
            await self.observations.end(obs.observation_id, reason)
        finally:
            await self._release_media(obs)

    async def _release_media(self, obs: Observation) -> None:
        try:
            await self.app[MEDIA].release(obs.session_id, obs.observation_id)
        except (ServiceError, StoreUnavailable):
            pass  # its connection fails on its own (ICE consent) and the room drops it

    async def on_leave(self, msg: protocol.Leave) -> None:
        obs = self.observation
        if obs is None:
            await super().on_leave(msg)
            return
        await self._stop("left")
        self.send({"type": "left", "v": 1, "ref": msg.ref, "session_id": obs.session_id})

    async def on_chat(self, msg: protocol.Chat) -> None:
        if self.observation is not None:
            raise _no_slot("chat")
        await super().on_chat(msg)

    async def on_recording_start(self, msg: protocol.RecordingStart) -> None:
        if self.observation is not None:
            raise _no_slot("recording control")
        await super().on_recording_start(msg)

    async def on_recording_stop(self, msg: protocol.RecordingStop) -> None:
        if self.observation is not None:
            raise _no_slot("recording control")
        await super().on_recording_stop(msg)

    # -- media: receive only ---------------------------------------------------------
    async def on_media_offer(self, msg: protocol.MediaOffer) -> None:
        obs = self.observation
        if obs is None:
            await super().on_media_offer(msg)
            return
        if msg.publish:
            raise _no_slot("published media (send an offer with an empty publish)")
        owner = {"participant_id": obs.observation_id, "observer": True, **self.who.public()}
        result = await self.app[MEDIA].negotiate(
            obs.session_id,
            obs.observation_id,
            owner,
            msg.sdp,
            [],
            [x.model_dump() for x in msg.subscribe],
        )
        self.send({"type": "media.answer", "v": 1, "ref": msg.ref, **result})

    async def on_media_sync(self, msg: protocol.MediaSync) -> None:
        obs = self.observation
        if obs is None:
            await super().on_media_sync(msg)
            return
        tracks = await self.app[MEDIA].tracks(obs.session_id)
        self.send(
            {
                "type": "media.tracks",
                "v": 1,
                "ref": msg.ref,
                "session_id": obs.session_id,
                "tracks": tracks,
            }
        )

    async def on_media_ready(self, msg: protocol.MediaReady) -> None:
        obs = self.observation
        if obs is None:
            await super().on_media_ready(msg)
            return
        await self.app[MEDIA].ready(obs.session_id, obs.observation_id)
        self.send({"type": "ack", "v": 1, "ref": msg.ref})

    # -- lifetime -----------------------------------------------------------------------
    async def finish(self) -> None:
        obs = self.observation
        await super().finish()
        if obs is None:
            return
        # As a slot's grace: the app's task, not this closing socket's.
        timers = self.app[TASKS]
        task = asyncio.create_task(self._closed(obs))
        timers.add(task)
        task.add_done_callback(timers.discard)

    async def _closed(self, obs: Observation) -> None:
        self.observation = None
        while True:
            try:
                await self.observations.end(obs.observation_id, "connection_lost")
                break
            except StoreUnavailable:
                await asyncio.sleep(STORE_RETRY_S)
        await self._release_media(obs)
