"""Supervision (#15): statistics and exceptions, over the record.

The record raises exceptions as it files the events that show them
(``signaling/history/raising.py``, in the same transaction) and tells ``Supervision``
the new ones once committed (``History.on_raised``: only the node whose transaction
inserted an exception hears of it). For each, this node then

- pushes ``{"type": "exception", "exception": {...}}`` to every supervisor's and admin's
  socket (the bus topic ``supervisors``, which ``ws.py`` forwards to them, on any node);
- files ``exception.raised`` in the case timeline, which the webhooks send
  (``signaling/outbox.py`` ``TRIGGERS``) and the case page shows.

A supervisor handles an exception (``handle``): ``exception.handled`` in the case
timeline (the record marks the row from it, the audit trail mirrors it, webhooks send
it); a second handling answers 409 ``exception_handled``. The push and the timeline event
run in a task of their own (the record's writer must not wait on a write of its own); a
node that dies in between loses that push and event, never the exception's row.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from zoneinfo import ZoneInfo

from .auth import Identity
from .core import ServiceCore, actor_of
from .directory import Directory
from .errors import Conflict, NotFound
from .history.repo import History
from .history.stats import Filter, Stats
from .recording_control import SUPERVISORS

log = logging.getLogger(__name__)

NOTE_MAX = 1000  # characters of a handling note
# A handling is claimed in the store first, so that two at once make one event; by the
# time the claim expires the record has the event (or its case is caught up).
CLAIM_TTL_S = 24 * 3600.0


class Supervision:
    def __init__(self, service: ServiceCore, history: History, directory: Directory) -> None:
        self.service = service
        self.history = history
        self.directory = directory
        self.stats = Stats(history.engine)
        self._tasks: set[asyncio.Task[None]] = set()
        history.on_raised = self._on_raised

    async def close(self) -> None:
        self.history.on_raised = None
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- raised -------------------------------------------------------------------------
    async def _on_raised(self, rows: list[dict[str, Any]]) -> None:
        task = asyncio.create_task(self._announce(rows), name="exceptions-raised")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            try:
                full = await self.stats.exception(row["exception_id"]) or row
                await self.service.store.publish(
                    SUPERVISORS, {"type": "exception", "v": 1, "exception": full}
                )
                await self.service.record(
                    row["case_id"],
                    "exception.raised",
                    session_id=row["session_id"],
                    **{k: row[k] for k in ("exception_id", "kind", "dept", "at", "detail")},
                )
            except Exception:
                log.exception("exception %s: not pushed or filed", row["exception_id"])

    # -- read -------------------------------------------------------------------------
    async def statistics(self, f: Filter, tz: ZoneInfo) -> dict[str, Any]:
        figures = await self.stats.statistics(f, tz)
        known = {d.id: d for d in self.directory.departments}
        rows = {d["dept"]: d for d in figures["departments"]}
        if f.dept is None:  # every department of the directory, invited or not
            for dept_id in known:
                rows.setdefault(dept_id, _empty(dept_id))
        elif f.dept in known:
            rows.setdefault(f.dept, _empty(f.dept))
        for dept_id, row in rows.items():
            d = known.get(dept_id)
            row["name"] = d.name if d is not None else dept_id
            row["level"] = d.level if d is not None else row["level"]
        figures["departments"] = [_ordered(rows[k]) for k in sorted(rows)]
        return figures

    # -- handle -----------------------------------------------------------------------
    async def handle(self, who: Identity, exception_id: str, note: str) -> dict[str, Any]:
        row = await self.stats.exception(exception_id)
        if row is None:
            raise NotFound("exception_not_found", f"no exception {exception_id}")
        if row["status"] == "handled" or not await self.service.store.create_ephemeral(
            f"exception-handled:{exception_id}", {"by": who.sub}, CLAIM_TTL_S
        ):
            raise Conflict("exception_handled", f"exception {exception_id} is handled already")
        event = await self.service.record(
            row["case_id"],
            "exception.handled",
            session_id=row["session_id"],
            actor=actor_of(who),
            exception_id=exception_id,
            kind=row["kind"],
            note=note,
        )
        # From the record, which has the event once it is answered (unless it is behind:
        # then as the event says).
        after = await self.stats.exception(exception_id) or row
        if after["status"] != "handled":
            by = event.actor.model_dump() if event.actor else None
            after = dict(after, status="handled", handled_by=by, handled_at=event.ts, note=note)
        await self.service.store.publish(
            SUPERVISORS, {"type": "exception.updated", "v": 1, "exception": after}
        )
        return after


def _empty(dept: str) -> dict[str, Any]:
    return {
        "dept": dept,
        "level": None,
        "invited": 0,
        "accepted": 0,
        "declined": 0,
        "unanswered": 0,
        "answer_s_p50": None,
        "answer_s_p90": None,
        "opinions": {"approve": 0, "materials_missing": 0, "refer": 0, "note": 0},
    }


ORDER = ("dept", "name", "level", "invited", "accepted", "declined", "unanswered")


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    return {**{k: row[k] for k in ORDER}, **row}
