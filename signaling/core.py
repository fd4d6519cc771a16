"""The base of the control plane's domain: events, sessions and invitations as records.

Everything goes through the ``Store`` interface, so one node or many behave the same.
Every state change is appended to the case's event log and published on the bus to the
topics of the people concerned (``session:<id>``, ``user:<sub>``, ``dept:<id>``).
Time comes from ``clock`` so tests can drive it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from . import outbox
from .auth import Identity
from .directory import Directory
from .errors import Conflict, NotFound
from .inflight import InFlight
from .models import Actor, Event, Invitation, Session
from .state import Store

OPEN = ("pending", "ringing", "unanswered")
# Ended sessions whose case file is not sealed yet, by end time (signaling.recording_control).
UNSEALED = "unsealed"
# The invitation's time each status change sets (any other: ``responded_at``); the event
# carries it, so the record holds the live document's own time.
STATUS_TIME = {"ringing": "rang_at", "unanswered": "unanswered_at"}

log = logging.getLogger(__name__)


def actor_of(who: Identity) -> Actor:
    return Actor(sub=who.sub, name=who.name, role=who.role, dept=who.dept, level=who.level)


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


EventHook = Callable[[Event], Awaitable[None]]
# The record's last seq of a case (``History.last_seq``): where a case's log the live
# store forgot whole (signaling/evict.py) goes on numbering.
Floor = Callable[[str], Awaitable[int]]
# A floor older than this is looked up again before it is used: the store forgets a
# case only once its last event is much older than that (evict.FORGET_AFTER_S), so a
# floor this fresh cannot predate numbers given (and forgotten) meanwhile.
FLOOR_FRESH_S = 10.0


class Archived(Protocol):
    """The record's answers about a session the live store has forgotten (sealed and
    evicted: signaling/evict.py), shaped as the store had them (``History``)."""

    async def session_doc(self, session_id: str) -> dict[str, Any] | None: ...

    async def invitation_docs(self, session_id: str) -> list[dict[str, Any]]: ...

    async def invitation_doc(self, invitation_id: str) -> dict[str, Any] | None: ...

    async def participant_doc(self, participant_id: str) -> dict[str, Any] | None: ...

    async def participant_docs(self, session_id: str) -> list[dict[str, Any]]: ...

    async def case_session_docs(self, case_id: str) -> list[dict[str, Any]]: ...

    async def snapshot_docs(
        self, session_id: str | None = None, snapshot_id: str | None = None
    ) -> list[dict[str, Any]]: ...

    async def opinion_docs(self, session_id: str) -> list[dict[str, Any]]: ...

    async def event_docs(
        self, case_id: str, after_seq: int, limit: int
    ) -> list[dict[str, Any]]: ...

    async def last_seq(self, case_id: str) -> int: ...


async def append_event(
    store: Store,
    case_id: str,
    type_: str,
    *,
    ts: float,
    session_id: str | None = None,
    actor: Actor | None = None,
    data: dict[str, Any],
    floor: Floor | None = None,
) -> Event:
    """File one event in the case's timeline (every writer uses this one shape).

    An event that becomes a webhook is announced in the outbox first: if this node dies
    before its hooks have run, another node (or this one, restarted) still queues it.
    """
    await outbox.announce(store, case_id, session_id, type_, ts)
    doc: dict[str, Any] = {
        "ts": ts,
        "type": type_,
        "case_id": case_id,
        "session_id": session_id,
        "actor": actor.model_dump() if actor else None,
        "data": data,
    }
    seq = await _append(store, f"case:{case_id}:events", doc, floor)
    return Event.model_validate(dict(doc, seq=seq))


async def _append(store: Store, key: str, doc: dict[str, Any], floor: Floor | None) -> int:
    """Append to the case's log; one the store forgot whole (or a new one) numbers on
    from the record's last ``seq`` (``floor``), so that no number is given twice."""
    if floor is None:
        return await store.append(key, doc)
    seq = await store.append(key, doc, floor=None)
    while seq == 0:
        began = time.monotonic()
        last = await floor(str(doc["case_id"]))
        if time.monotonic() - began <= FLOOR_FRESH_S:
            seq = await store.append(key, doc, floor=last)
    return seq


async def run_event_hooks(hooks: list[EventHook], event: Event) -> None:
    for hook in hooks:
        try:
            await hook(event)
        except Exception:
            # The event happened and is filed; a hook's failure must not undo the
            # caller's change or hide it behind an error.
            log.exception("event hook failed for %s of case %s", event.type, event.case_id)


class ServiceCore:
    def __init__(
        self,
        store: Store,
        directory: Directory,
        *,
        base_url: str,
        resume_grace_s: float = 30.0,
        ring_timeout_s: float = 120.0,
        archive_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ring_timeout_s = ring_timeout_s
        # The case file on disk (shared storage when several nodes serve): snapshots,
        # and later recordings, under <archive>/<case>/<session>/.
        self.archive_dir = archive_dir or Path("jointreview-data") / "archive"
        self.store = store
        self.directory = directory
        self.base_url = base_url
        self.resume_grace_s = resume_grace_s
        self.clock = clock
        # Called with every recorded event once it is in the log: webhooks queue their
        # deliveries here, before the action that caused the event is answered.
        self.event_hooks: list[EventHook] = []
        # Called with a session's id as it ends, before its ``session.ended`` is filed
        # (observation.py: observers go first, so their end is in the sealed timeline).
        self.end_hooks: list[Callable[[str], Awaitable[None]]] = []
        # Where an evicted session is still known (the record); None: nowhere else.
        self.archived: Archived | None = None
        # This node's events filed in the log but maybe not yet in the record.
        self.in_flight = InFlight()

    # -- events -----------------------------------------------------------------------
    async def record(
        self,
        case_id: str,
        type_: str,
        *,
        session_id: str | None = None,
        actor: Actor | None = None,
        **data: Any,
    ) -> Event:
        # In flight from before the append (its number may be given before the append
        # returns) until the record has it: the catch-up's checks discount it.
        with self.in_flight.filing(case_id) as ticket:
            event = await append_event(
                self.store,
                case_id,
                type_,
                ts=self.clock(),
                session_id=session_id,
                actor=actor,
                data=data,
                floor=self.archived.last_seq if self.archived is not None else None,
            )
            ticket.seq = event.seq
            await run_event_hooks(self.event_hooks, event)
        return event

    async def events(self, case_id: str, session_id: str | None = None) -> list[Event]:
        """The case's timeline, or one session's part of it, picked before validation
        (validating an event costs ~8 µs: 16 ms for a case of 2,000)."""
        docs = await self.store.read_log(f"case:{case_id}:events")
        return [
            Event.model_validate(d)
            for d in docs
            if session_id is None or d.get("session_id") == session_id
        ]

    async def read_events(self, case_id: str, start: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` of the case's events after seq ``start``, in order: from the
        record for the part of the log the store has forgotten (signaling/evict.py),
        then from the store's log."""
        key = f"case:{case_id}:events"
        trimmed = await self.store.log_trimmed(key) if self.archived is not None else 0
        docs: list[dict[str, Any]] = []
        if self.archived is not None and start < trimmed:
            docs = await self.archived.event_docs(case_id, start, limit)
            docs = [d for d in docs if int(d["seq"]) <= trimmed]
            start = int(docs[-1]["seq"]) if docs else trimmed
        if len(docs) < limit:
            docs += await self.store.read_log(key, start=start, limit=limit - len(docs))
        return docs

    async def _announce(self, topic: str, type_: str, **fields: Any) -> None:
        await self.store.publish(topic, {"type": type_, "v": 1, **fields})

    def join_url(self, session_id: str) -> str:
        return f"{self.base_url}/session/{session_id}"

    async def session(self, session_id: str) -> Session:
        doc = await self.store.get(f"session:{session_id}")
        if doc is None and self.archived is not None:
            doc = await self.archived.session_doc(session_id)
            if doc is not None and doc.get("status") != "ended":
                doc = None  # the record is ahead of the store only for a sealed session
        if doc is None:
            raise NotFound("session_not_found", f"no session {session_id}")
        return Session.model_validate(doc)

    async def require_active(self, session_id: str) -> Session:
        session = await self.session(session_id)
        if session.status != "active":
            raise Conflict("session_ended", f"session {session_id} has ended")
        return session

    # -- invitations ------------------------------------------------------------------
    async def invitation(self, invitation_id: str) -> Invitation:
        doc = await self.store.get(f"invitation:{invitation_id}")
        if doc is None and self.archived is not None:
            doc = await self.archived.invitation_doc(invitation_id)
            if doc is not None and await self.store.get(f"session:{doc['session_id']}"):
                doc = None  # the store's word while the session is live
        if doc is None:
            raise NotFound("invitation_not_found", f"no invitation {invitation_id}")
        return Invitation.model_validate(doc)

    async def invitations(self, session_id: str) -> list[Invitation]:
        ids = await self.store.index_range(f"session:{session_id}:invitations")
        docs: list[dict[str, Any] | None] = []
        if ids:
            docs = await self.store.get_many([f"invitation:{i}" for i in ids])
        elif self.archived is not None and await self.store.get(f"session:{session_id}") is None:
            docs = list(await self.archived.invitation_docs(session_id))  # evicted
        return [Invitation.model_validate(d) for d in docs if d is not None]

    async def _set_invitation(
        self,
        inv: Invitation,
        status: str,
        actor: Actor | None,
        reason: str | None,
        allowed_from: tuple[str, ...],
    ) -> tuple[Invitation, bool]:
        now = self.clock()

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc["status"] not in allowed_from:
                return None
            doc["status"] = status
            if status == "ringing":
                doc["rang_at"] = now
            elif status == "unanswered":
                doc["unanswered_at"] = now
            else:
                doc["responded_at"] = now
                doc["responded_by"] = actor.model_dump() if actor else None
                doc["reason"] = reason
            return doc

        doc, changed = await self.store.update(f"invitation:{inv.invitation_id}", change)
        # No document: its session left the store (signaling/evict.py), it is as it was.
        new = Invitation.model_validate(doc) if doc is not None else inv
        if changed:
            await self.record(
                new.case_id,
                f"invitation.{'rang' if status == 'ringing' else status}",
                session_id=new.session_id,
                actor=actor,
                invitation_id=new.invitation_id,
                reason=reason,
                **{STATUS_TIME.get(status, "responded_at"): now},
            )
            payload = new.model_dump()
            await self._announce(
                f"session:{new.session_id}", "invitation.updated", invitation=payload
            )
            inbox = f"user:{new.reviewer}" if new.reviewer else f"dept:{new.dept}"
            if status != "ringing":
                await self._announce(inbox, "invitation.updated", invitation=payload)
            if status not in OPEN:
                # Answered or cancelled: no reviewer's inbox needs to read it again.
                await self.store.index_remove(f"inbox:{inbox}", new.invitation_id)
            presence = {
                "ringing": "ringing",
                "declined": "declined",
                "accepted": "accepted",
                "unanswered": "unanswered",
            }
            if status in presence:
                await self._announce(
                    f"session:{new.session_id}",
                    "presence",
                    session_id=new.session_id,
                    state=presence[status],
                    invitation_id=new.invitation_id,
                    who=actor.model_dump() if actor else {"dept": new.dept, "sub": new.reviewer},
                )
        return new, changed
