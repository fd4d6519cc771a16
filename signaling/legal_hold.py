"""Legal hold: a supervisor or admin keeps a case from the retention purge until they
release it (``signaling.retention`` reads ``is_held`` before it deletes anything).

The hold is a document of the live store, ``hold:<case>`` (shared by every node, kept
for good: the eviction of sealed sessions never touches it), with who put it, why and
when, and who released it and when. Each change is filed in the case timeline
(``case.held``, ``case.released``, so the record has them) and, being a supervisor's or
an admin's request, in the audit trail.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from . import policy
from .auth import Identity
from .core import ServiceCore, actor_of
from .errors import Conflict
from .models import Actor, _Body
from .state import Store

REASON_MAX = 500


def hold_key(case_id: str) -> str:
    return f"hold:{case_id}"


class HoldBody(_Body):
    reason: str = Field(min_length=1, max_length=REASON_MAX)


class Hold(BaseModel):
    case_id: str
    held: bool
    reason: str | None = None
    held_by: Actor | None = None
    held_at: float | None = None
    released_by: Actor | None = None
    released_at: float | None = None


async def is_held(store: Store, case_id: str) -> bool:
    doc = await store.get(hold_key(case_id))
    return bool(doc and doc.get("held"))


async def last_hold_event(record: Any, case_id: str) -> dict[str, Any] | None:
    """The case's last ``case.held`` or ``case.released`` in the record (``History``'s
    ``event_docs``; a case holds a few hundred events at most), or None."""
    last, after = None, 0
    while True:
        page = await record.event_docs(case_id, after, 1000)
        for event in page:
            if event.get("type") in ("case.held", "case.released"):
                last = event
        if len(page) < 1000:
            return last
        after = int(page[-1]["seq"])


async def held_in_record(record: Any, case_id: str) -> bool:
    """Does the record say the case is on hold? The purge asks this too
    (``signaling.retention``): a hold survives a live store lost or restored from an
    older backup, since the record (kept for years) has its events."""
    last = await last_hold_event(record, case_id)
    return last is not None and last.get("type") == "case.held"


async def _resync(service: ServiceCore, case_id: str) -> None:
    """A hold the record has but the live store lost (no ``hold:<case>`` at all): put
    the document back from its event, so it reads, and releases, as it was put."""
    if service.archived is None or await service.store.get(hold_key(case_id)) is not None:
        return
    last = await last_hold_event(service.archived, case_id)
    if last is None or last.get("type") != "case.held":
        return
    data = last.get("data") or {}
    doc = {"case_id": case_id, "held": True, "reason": data.get("reason")}
    doc.update(held_by=last.get("actor"), held_at=data.get("held_at", last.get("ts")))
    await service.store.create(hold_key(case_id), doc)


async def hold_of(service: ServiceCore, who: Identity, case_id: str) -> Hold:
    policy.can_hold(who, case_id)
    await _exists(service, case_id)
    await _resync(service, case_id)
    doc = await service.store.get(hold_key(case_id))
    return Hold.model_validate(doc or {"case_id": case_id, "held": False})


async def put_hold(service: ServiceCore, who: Identity, case_id: str, reason: str) -> Hold:
    policy.can_hold(who, case_id)
    await _exists(service, case_id)
    await _resync(service, case_id)
    key, now, actor = hold_key(case_id), service.clock(), actor_of(who)
    await service.store.create(key, {"case_id": case_id, "held": False})

    def put(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc.get("held"):
            return None
        return {
            "case_id": case_id,
            "held": True,
            "reason": reason,
            "held_by": actor.model_dump(),
            "held_at": now,
        }

    doc, changed = await service.store.update(key, put)
    if not changed:
        raise Conflict("case_on_hold", f"case {case_id} is on hold already")
    await service.record(case_id, "case.held", actor=actor, reason=reason, held_at=now)
    return Hold.model_validate(doc)


async def release_hold(service: ServiceCore, who: Identity, case_id: str) -> Hold:
    policy.can_hold(who, case_id)
    await _exists(service, case_id)
    await _resync(service, case_id)
    key, now, actor = hold_key(case_id), service.clock(), actor_of(who)

    def release(doc: dict[str, Any]) -> dict[str, Any] | None:
        if not doc.get("held"):
            return None
        return dict(doc, held=False, released_by=actor.model_dump(), released_at=now)

    doc, changed = await service.store.update(key, release)
    if not changed or doc is None:
        raise Conflict("case_not_on_hold", f"case {case_id} is not on hold")
    await service.record(
        case_id, "case.released", actor=actor, reason=doc.get("reason"), released_at=now
    )
    return Hold.model_validate(doc)


async def _exists(service: ServiceCore, case_id: str) -> None:
    """Only a case that exists is held (an unknown one answers 404, as everywhere)."""
    if await service.store.get(f"case:{case_id}") is not None:
        return
    archived: Any = service.archived
    if archived is not None and await archived.case(case_id) is not None:
        return
    raise policy.case_missing(case_id)
