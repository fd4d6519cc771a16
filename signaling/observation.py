"""Observation: a supervisor watches a live session receive-only (issue #15).

An observer is not a participant: no slot, no presence, no resume token, nothing sent
into the media room, no chat or opinion; nobody counts them as "someone in" (the
broken-off rule reads participant slots only). Under the setting ``observation``:

- ``announced`` (default): the session hears ``observation`` messages (``started`` /
  ``ended``, with the observer) and ``joined`` is followed by one per observer watching,
  so every page can show "监督人员 观看中 / Supervisor watching";
- ``silent``: the session hears nothing of it;
- ``off``: ``observe`` is refused (``observation_disabled``).

Every start and end is in the case timeline (``observation.started`` /
``observation.ended``, the observer as actor) and so in the audit trail, whatever the
mode. An open observation is a store document ``observation:<id>`` listed in the
``observations`` index (by start time) and the session's ``session:<sid>:observers``;
its end is a compare-and-set on the document, so exactly one caller (the socket that
leaves or closes, the end of the session on any node, the node's restart) files it, and
the keys go with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from pydantic import BaseModel

from . import policy
from .audit import AuditTrail
from .auth import Identity
from .core import ServiceCore, _new_id, actor_of
from .models import Actor, Event
from .state import StoreUnavailable

log = logging.getLogger(__name__)

OPEN_INDEX = "observations"
Mode = Literal["announced", "silent", "off"]
EndReason = Literal["left", "connection_lost", "session_ended", "node_restart"]


def observers_index(session_id: str) -> str:
    return f"session:{session_id}:observers"


class Observation(BaseModel):
    observation_id: str
    session_id: str
    case_id: str
    observer: Actor
    mode: Literal["announced", "silent"]
    started_at: float
    node: str = ""  # the node whose socket watches (its restart ends what it left)

    def public(self) -> dict[str, Any]:
        return self.model_dump(exclude={"node"})


class Observations:
    """Start, end and list observations; one per node, beside the ``ReviewService``."""

    def __init__(
        self, service: ServiceCore, mode: Mode, node_id: str, trail: AuditTrail | None = None
    ) -> None:
        self.service = service
        self.trail = trail
        self.store = service.store
        self.mode = mode
        self.node_id = node_id
        self._tasks: set[asyncio.Task[Any]] = set()
        service.event_hooks.append(self._on_event)

    async def start(
        self, who: Identity, session_id: str, address: str | None = None
    ) -> Observation:
        session = await self.service.session(session_id)
        invitations = await self.service.invitations(session_id)
        policy.can_observe(who, session, invitations, self.mode)
        await self.service.require_active(session_id)
        assert self.mode != "off"
        obs = Observation(
            observation_id=_new_id("o_"),
            session_id=session_id,
            case_id=session.case_id,
            observer=actor_of(who),
            mode=self.mode,
            started_at=self.service.clock(),
            node=self.node_id,
        )
        await self.store.create(f"observation:{obs.observation_id}", obs.model_dump())
        await self.store.index_add(OPEN_INDEX, obs.observation_id, obs.started_at)
        await self.store.index_add(observers_index(session_id), obs.observation_id, obs.started_at)
        await self.service.record(
            obs.case_id,
            "observation.started",
            session_id=session_id,
            actor=obs.observer,
            observation_id=obs.observation_id,
            mode=obs.mode,
        )
        self._audit("observation.started", obs, address)
        await self._tell(obs, "started")
        return obs

    async def end(self, observation_id: str, reason: EndReason) -> bool:
        """File the end once (whoever calls first); False if it had ended already."""
        key = f"observation:{observation_id}"
        now = self.service.clock()

        def close(doc: dict[str, Any]) -> dict[str, Any] | None:
            return None if doc.get("ended_at") is not None else dict(doc, ended_at=now)

        doc, changed = await self.store.update(key, close)
        if doc is None or not changed:
            return False
        obs = Observation.model_validate(doc)
        await self.service.record(
            obs.case_id,
            "observation.ended",
            session_id=obs.session_id,
            actor=obs.observer,
            observation_id=observation_id,
            mode=obs.mode,
            reason=reason,
            duration_s=round(now - obs.started_at, 3),
        )
        self._audit("observation.ended", obs, None, reason=reason)
        await self._tell(obs, "ended", reason=reason)
        await self.store.index_remove(observers_index(obs.session_id), observation_id)
        await self.store.index_remove(OPEN_INDEX, observation_id)
        await self.store.delete([key])
        return True

    async def of_session(self, session_id: str) -> list[Observation]:
        """The session's observations going on now, oldest first."""
        ids = await self.store.index_range(observers_index(session_id))
        docs = await self.store.get_many([f"observation:{i}" for i in ids]) if ids else []
        return [
            Observation.model_validate(d)
            for d in docs
            if d is not None and d.get("ended_at") is None
        ]

    async def announced(self, session_id: str) -> list[Observation]:
        """Those the session's pages are told of (none of a silent one)."""
        return [o for o in await self.of_session(session_id) if o.mode == "announced"]

    async def recover(self, alone: bool) -> int:
        """At start: the observations this node's sockets held before it stopped (every
        one on a single node) end; their sockets are gone."""
        ended = 0
        for oid in await self.store.index_range(OPEN_INDEX):
            doc = await self.store.get(f"observation:{oid}")
            if doc is None:
                await self.store.index_remove(OPEN_INDEX, oid)
            elif alone or doc.get("node") == self.node_id:
                ended += await self.end(oid, "node_restart")
        return ended

    def _audit(self, action: str, obs: Observation, address: str | None, **detail: Any) -> None:
        if self.trail is not None:
            self.trail.put(
                action,
                actor=obs.observer.model_dump(exclude={"level"}),
                address=address,
                obj=f"case/{obs.case_id}/session/{obs.session_id}",
                detail={"observation_id": obs.observation_id, "mode": obs.mode, **detail},
            )

    async def _tell(self, obs: Observation, state: str, **extra: Any) -> None:
        if obs.mode != "announced":
            return  # silent: the session hears nothing
        await self.store.publish(
            f"session:{obs.session_id}",
            {
                "type": "observation",
                "v": 1,
                "state": state,
                "session_id": obs.session_id,
                "observation": obs.public(),
                **extra,
            },
        )

    async def _on_event(self, event: Event) -> None:
        """The session ended (on any node): its observations end with it. Not inside the
        hook (the end is being filed): a task of its own."""
        if event.type == "session.ended" and event.session_id:
            task = asyncio.create_task(self._end_all(event.session_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _end_all(self, session_id: str) -> None:
        try:
            for obs in await self.of_session(session_id):
                await self.end(obs.observation_id, "session_ended")
        except StoreUnavailable as exc:  # the observer's socket (or a restart) ends it
            log.warning("observations of %s not ended now: %s", session_id, exc.message)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
