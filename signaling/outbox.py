"""The webhook outbox: an event that leaves the service is announced before it is filed,
so that a node dying between filing it and queueing its deliveries loses nothing.

The store has no transaction that spans the case timeline and the webhook queue, so
``append_event`` (``signaling.core``) first writes an **intent** for each event of a
type in ``TRIGGERS``: the member ``[case, session, type, ts]`` (compact JSON) of the
index ``outbox:events``, scored by ``ts``. Then it appends the event. The event hooks
queue the deliveries (``Webhooks.on_event``) and **settle** the intent, removing it.

If the node dies anywhere in between, the intent stays. Every node that sends webhooks
runs ``catch_up`` now and then: an intent older than ``SETTLE_S`` whose event is in the
case timeline has its deliveries queued again, and is settled. Delivery ids are derived
from the event (case, seq, ts) and the URL, and a delivery document is created once
only, so the dying node's deliveries, the catch-up's and another node's catch-up are
one and the same: the receiver gets each event once. An intent whose event is still not
in the timeline after ``ABANDON_S`` was never filed (the node died before appending, and
the action it belonged to failed): it is dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .models import Event
from .state import Store

log = logging.getLogger(__name__)

OUTBOX = "outbox:events"
# Timeline event type -> webhook event type.
TRIGGERS = {
    "session.created": "session.started",
    "session.ended": "session.ended",
    "archive.sealed": "recording.ready",
    "export.ready": "export.ready",
    "opinion.filed": "opinion.filed",
    "exception.raised": "exception.raised",
    "exception.handled": "exception.handled",
}
# The event's own node settles its intent within milliseconds; the catch-up leaves it
# that long so that it does not race every event's normal path for nothing.
SETTLE_S = 2.0
# An append that has not landed after this long never will (its node died before it).
ABANDON_S = 120.0
BATCH = 200


def intent(case_id: str, session_id: str | None, type_: str, ts: float) -> str:
    """The outbox member of one event: everything needed to find it in its timeline."""
    return json.dumps([case_id, session_id, type_, ts], separators=(",", ":"))


def intent_of(event: Event) -> str:
    return intent(event.case_id, event.session_id, event.type, event.ts)


def _parse(member: str) -> tuple[str, str | None, str, float] | None:
    try:
        case_id, session_id, type_, ts = json.loads(member)
    except (ValueError, TypeError):
        return None
    if not isinstance(case_id, str) or not isinstance(type_, str):
        return None
    if not isinstance(ts, int | float) or not (session_id is None or isinstance(session_id, str)):
        return None
    return case_id, session_id, type_, float(ts)


async def announce(
    store: Store, case_id: str, session_id: str | None, type_: str, ts: float
) -> None:
    """Before the event is appended: it will be queued even if this node dies next."""
    if type_ in TRIGGERS:
        await store.index_add(OUTBOX, intent(case_id, session_id, type_, ts), ts)


async def settle(store: Store, event: Event) -> None:
    """The event's deliveries are queued (or are none of this node's business)."""
    if event.type in TRIGGERS:
        await store.index_remove(OUTBOX, intent_of(event))


async def catch_up(store: Store, enqueue: Callable[[Event], Awaitable[Any]], now: float) -> int:
    """Queue the deliveries of events whose node died before queueing them; returns how
    many events were queued again. ``enqueue`` must be idempotent per event."""
    members = await store.index_range(OUTBOX, max_score=now - SETTLE_S, limit=BATCH)
    timelines: dict[str, list[dict[str, Any]]] = {}
    queued = 0
    for member in members:
        parsed = _parse(member)
        if parsed is None:
            await store.index_remove(OUTBOX, member)
            continue
        case_id, session_id, type_, ts = parsed
        if case_id not in timelines:
            timelines[case_id] = await store.read_log(f"case:{case_id}:events")
        found = [
            doc
            for doc in timelines[case_id]
            if doc.get("type") == type_
            and doc.get("ts") == ts
            and doc.get("session_id") == session_id
        ]
        if not found:
            if now - ts > ABANDON_S:
                log.warning("outbox: %s of case %s was never filed; dropped", type_, case_id)
                await store.index_remove(OUTBOX, member)
            continue
        for doc in found:  # two events alike to the microsecond: both, idempotently
            await enqueue(Event.model_validate(doc))
            queued += 1
        log.warning("outbox: queued %s of case %s after its node stopped", type_, case_id)
        await store.index_remove(OUTBOX, member)
    return queued
