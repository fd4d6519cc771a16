"""The live store forgets a session once it is over: sealed, and all of it in the record.

A session's live documents and indexes (the session, its invitations, participant slots,
opinions, stills' facts, recording state, chat log, and its entries in the shared
listings) serve the people in it while it runs. Once its case file is sealed
(``archive.sealed`` filed) and the record (``signaling.history``) holds every event of
its case up to that one (nothing missing, the case not marked behind), they are deleted;
when no session of the case is live any more, the case's log is trimmed up to its last
event too (its numbering goes on: ``Store.trim_log``). From then on the record answers
for the session (``ServiceCore.archived``): a join or resume says ``session_ended``, and
replays, downloads and the case view read the record and the case file.

A session stays ``grace_s`` (a minute) after its end, for the sockets and media still
winding down in it; then the sweeper that every node runs evicts it, and so catches as
well the sessions sealed while the record was behind, or by a node that died. A session
sealed later than that (a long recording being closed) is evicted as it is sealed
(``RecordingControl.after_seal``). Every step is idempotent, and the session's
document goes last, so a node that dies midway leaves the session to be evicted again.
See docs/history.md, "What the live store keeps".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from aiohttp import web

from . import outbox
from .background import stopping
from .core import UNSEALED, ServiceCore
from .history.catchup import BEHIND, WAIT_S
from .models import Event
from .participants import IDLE, chat_log
from .state import Outage, StoreUnavailable

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 10.0
# Cases whose log had events filed after their last session left the store (a replay,
# a download, an export): the sweeper trims them again. Index: case -> time.
RETRIM = "evict:retrim"
# Sessions that got live keys again after they left (an opinion filed as they were being
# evicted): the sweeper deletes those. Index: session -> time.
AGAIN = "evict:again"
# Events that happen to sealed sessions (those of sessions being evicted do not matter:
# the case is trimmed as the last one leaves).
LATE = frozenset(
    {
        "replay.viewed",
        "replay.downloaded",
        "casefile.downloaded",
        "export.ready",
        "export.failed",
        "opinion.filed",  # (after the end too; not kept in the store for an evicted session)
    }
)
GRACE_S = 60.0  # after its end, a session stays this long
# Cases whose log is trimmed whole, by the time of their last event: once that is
# FORGET_AFTER_S old, the sweeper forgets the case (its document and its log's numbering).
FORGET = "evict:forget"
# Well above core.FLOOR_FRESH_S: a floor looked up for a forgotten case's next event is
# never older than numbers given after it (and the case forgotten again meanwhile).
FORGET_AFTER_S = 60.0
# A seal this old whose case's record still lacks an event up to it: no commit of it is
# pending any more (the hook gives up after WAIT_S and marks the case itself), so the
# node that filed it died in between; the case is marked behind to be caught up.
STALE_S = 2 * WAIT_S


class Record(Protocol):
    """What eviction asks the record (``signaling.history.repo.History``)."""

    async def events_upto(self, case_id: str, seq: int) -> int: ...


class Evictor:
    def __init__(self, service: ServiceCore, record: Record, grace_s: float = GRACE_S) -> None:
        self.service = service
        self.store = service.store
        self.record = record
        self.grace_s = grace_s
        self.forget_after_s = FORGET_AFTER_S
        self._task: asyncio.Task[None] | None = None

    # -- after sealing ------------------------------------------------------------------
    async def on_event(self, event: Event) -> None:
        """The event hook: an event filed for a session already gone from the store
        leaves an entry in its case's log; the sweeper trims it again."""
        if event.type in LATE and event.session_id is not None:
            if await self.store.get(f"session:{event.session_id}") is None:
                await self.store.index_add(RETRIM, event.case_id, event.ts)
                if event.type == "opinion.filed":
                    await self.store.index_add(AGAIN, event.session_id, event.ts)

    async def sealed(self, case_id: str, session_id: str, manifest: dict[str, Any]) -> None:
        """The sealing hook: evict the session now if the record is complete."""
        await self.evict(session_id)

    async def caught_up(self, case_id: str) -> None:
        """The catch-up hook: the case's record is complete again, so its sealed sessions
        leave now rather than at the next sweep."""
        for sid in await self.store.index_range(f"case:{case_id}:sessions"):
            await self.evict(sid)
        await self.trim_case(case_id)

    async def evict(self, session_id: str) -> bool:
        """Delete the sealed session from the live store if the record holds all of it;
        False when it must stay (still live, not sealed, the record behind)."""
        doc = await self.store.get(f"session:{session_id}")
        if doc is None:
            await self.store.index_remove("sessions", session_id)  # a death midway
            return False
        case_id = str(doc["case_id"])
        if doc.get("status") != "ended":
            return False
        if float(doc.get("ended_at") or 0.0) > self.service.clock() - self.grace_s:
            return False
        if not await self._recorded(case_id, session_id):
            return False
        await self._forget(session_id, case_id)
        await self.trim_case(case_id)
        return True

    async def _recorded(self, case_id: str, session_id: str) -> bool:
        """Sealed, and every event of the case up to the seal is in the record."""
        log_key = f"case:{case_id}:events"
        sealed = [
            d
            for d in await self.store.read_log(log_key)
            if d.get("type") == "archive.sealed" and d.get("session_id") == session_id
        ]
        if not sealed:
            return False
        if case_id in await self.store.index_range(BEHIND):
            return False
        seq = int(sealed[0]["seq"])
        if await self.record.events_upto(case_id, seq) >= seq:
            return True
        if float(sealed[0]["ts"]) < self.service.clock() - STALE_S:
            await self.store.index_add(BEHIND, case_id, 0.0)  # the catch-up's scan finds it
        return False

    async def _forget(self, session_id: str, case_id: str | None) -> None:
        store = self.store
        prefix = f"session:{session_id}"
        invitations = await store.index_range(f"{prefix}:invitations")
        docs = await store.get_many([f"invitation:{i}" for i in invitations])
        for iid, inv in zip(invitations, docs, strict=True):
            if inv is not None:
                inbox = f"user:{inv['reviewer']}" if inv.get("reviewer") else f"dept:{inv['dept']}"
                await store.index_remove(f"inbox:{inbox}", iid)
            await store.index_remove("ringing", iid)
        participants = await store.index_range(f"{prefix}:participants")
        for pid in participants:
            await store.index_remove("disconnected", pid)
        opinions = await store.index_range(f"{prefix}:opinions")
        snapshots = await store.index_range(f"{prefix}:snapshots")
        await store.delete(
            [f"invitation:{i}" for i in invitations]
            + [f"participant:{p}" for p in participants]
            + [f"opinion:{o}" for o in opinions]
            + [f"snapshot:{x}" for x in snapshots]
            + [f"recording:{session_id}", f"{prefix}:chat_rate"]
        )
        await store.delete_log(chat_log(session_id))
        for kind in ("invitations", "participants", "opinions", "snapshots"):
            await store.index_delete(f"{prefix}:{kind}")
        for index in (IDLE, UNSEALED, f"case:{case_id}:sessions" if case_id else ""):
            if index:
                await store.index_remove(index, session_id)
        # Last: while the document is there, the sweeper finds the session again.
        await store.delete([prefix])
        await store.index_remove("sessions", session_id)
        log.info("session %s of case %s left the live store (sealed)", session_id, case_id)

    async def trim_case(self, case_id: str) -> int:
        """With no session of the case live, drop its log's entries the record holds
        (every one up to the last); how many were dropped."""
        if not await self._settled(case_id):
            return 0
        key = f"case:{case_id}:events"
        tail = await self.store.read_log(key)
        if not tail:
            return 0
        last = int(tail[-1]["seq"])
        if await self.record.events_upto(case_id, last) < last:
            return 0
        dropped = await self.store.trim_log(key, last)
        await self.store.index_add(FORGET, case_id, float(tail[-1]["ts"]))
        return dropped

    async def _settled(self, case_id: str) -> bool:
        """No session of the case is live, nor its record behind, nor a webhook intent
        of it waiting for its event (``outbox.catch_up`` reads the log)."""
        if await self.store.index_range(f"case:{case_id}:sessions", limit=1):
            return False
        if case_id in await self.store.index_range(BEHIND):
            return False
        return not any(
            m.startswith(f'["{case_id}",') for m in await self.store.index_range(outbox.OUTBOX)
        )

    async def forget_case(self, case_id: str) -> bool:
        """Nothing of a settled case whose log is trimmed whole stays in the store: its
        ``case:`` document and its log's numbering go; its next event (a new session on
        it, a replay) numbers on from the record's last ``seq`` (``core.append_event``).
        False if it must stay (a new session, events since)."""
        key = f"case:{case_id}:events"
        if not await self._settled(case_id) or await self.store.read_log(key, limit=1):
            return False
        upto = await self.store.log_trimmed(key)
        if await self.record.events_upto(case_id, upto) < upto:
            return False
        # Atomic: nothing was appended since the checks, or nothing is forgotten.
        if not await self.store.forget_log(key, upto):
            return False
        await self.store.delete([f"case:{case_id}"])
        if await self.store.index_range(f"case:{case_id}:sessions", limit=1):
            # A session was started on it just now: its case document stays.
            await self.store.create(f"case:{case_id}", {"case_id": case_id, "created_at": 0.0})
        log.info("case %s left the live store (every event of it is in the record)", case_id)
        return True

    # -- the sweeper ----------------------------------------------------------------------
    async def sweep(self) -> int:
        """Evict every sealed session still in the store whose record is complete (sealed
        while the record was behind, or by a node that died); how many were evicted."""
        evicted = 0
        # Every session the store still has: the live ones, and the few left to evict.
        for sid in await self.store.index_range("sessions"):
            if stopping():
                break
            evicted += await self.evict(sid)
        for sid in await self.store.index_range(AGAIN):
            if await self.store.get(f"session:{sid}") is None:
                await self._forget(sid, None)
            await self.store.index_remove(AGAIN, sid)
        for case_id in await self.store.index_range(RETRIM):
            await self.trim_case(case_id)
            if not await self.store.read_log(f"case:{case_id}:events", limit=1):
                await self.store.index_remove(RETRIM, case_id)
        quiet = self.service.clock() - self.forget_after_s
        for case_id in await self.store.index_range(FORGET, max_score=quiet):
            if stopping():
                break
            # A case kept for a live session or later events is added again as it is
            # trimmed again; one kept for its record (behind) is tried at each sweep.
            if (
                await self.forget_case(case_id)
                or await self.store.index_range(f"case:{case_id}:sessions", limit=1)
                or await self.store.read_log(f"case:{case_id}:events", limit=1)
            ):
                await self.store.index_remove(FORGET, case_id)
        return evicted

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="evict-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        outage = Outage("eviction sweeper", log)
        while not stopping():
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                if count := await self.sweep():
                    log.info("evicted %d sealed session(s) from the live store", count)
            except StoreUnavailable as exc:
                outage.failed(exc)
                continue
            except Exception:
                log.exception("evicting sealed sessions failed")
            outage.ok()


EVICTOR = web.AppKey("evictor", Evictor)
