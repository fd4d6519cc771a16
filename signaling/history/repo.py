"""The record's one repository: ``History`` files case events into SQL and answers the
supervisors' queries, page by page.

``record`` applies ``projection.project`` in one transaction, and nothing when the event
(its ``(case_id, seq)``) is already there, so filing an event twice changes nothing.
Every statement is a SQLAlchemy Core expression with bound parameters. Lists are newest
first (sessions, invitations) or in log order (events), cut by ``limit`` with an opaque
cursor (``signaling.paging``) naming the last row of the page: rows inserted meanwhile
never shift a later page (keyset pagination, not offsets).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .. import paging
from ..models import Event
from . import schema as s
from .db import make_engine
from .group import GroupCommit
from .projection import Projection, project
from .raising import Rules
from .writer import Writer

EVENTS = "he"
SESSIONS = "hs"
INVITATIONS = "hi"
BATCH = 1000  # events per transaction in record_many

log = logging.getLogger(__name__)


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None = None


def _check(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"a page has at least one row, not {limit}")


def _keyset_before(time_col: Any, id_col: Any, t: float, i: str) -> Any:
    """Rows strictly after ``(t, i)`` in newest-first order."""
    return sa.or_(time_col < t, sa.and_(time_col == t, id_col < i))


class History:
    def __init__(self, engine: AsyncEngine, rules: Rules | None = None) -> None:
        self.engine = engine
        self.kind = engine.dialect.name
        self._writer = Writer(engine, rules)
        self._group: GroupCommit[Projection] = GroupCommit(self._writer.apply, BATCH)

    @classmethod
    async def open(cls, url: str, rules: Rules | None = None) -> History:
        """The record at ``url`` (its schema must be current: ``migrate.check``);
        ``rules``: the thresholds of the exceptions raised as events are filed."""
        return cls(make_engine(url), rules)

    @property
    def on_raised(self) -> Callable[[list[dict[str, Any]]], Awaitable[None]] | None:
        """Told, once committed, the exceptions a transaction raised (new to the record:
        one node hears of each), to push them (``signaling.supervision``)."""
        return self._writer.on_raised

    @on_raised.setter
    def on_raised(self, listener: Callable[[list[dict[str, Any]]], Awaitable[None]] | None) -> None:
        self._writer.on_raised = listener

    async def close(self) -> None:
        await self._group.drain()
        await self._writer.close()
        await self.engine.dispose()

    # -- writing ------------------------------------------------------------------------
    async def record(self, event: Mapping[str, Any]) -> None:
        """File one case event and its rows (idempotent); returns once committed. Events
        recorded meanwhile by other tasks share the transaction (``group.GroupCommit``)."""
        await self._group.submit(project(event))

    async def hook(self, event: Event) -> None:
        """File one event the node filed in its store (``catchup.CatchUp.hook`` calls this:
        when the record cannot take it, the case is marked behind and caught up later)."""
        await self.record(event.model_dump())

    async def record_many(self, events: Iterable[Mapping[str, Any]]) -> int:
        """File events in batches (one transaction each); how many were new."""
        new = 0
        batch: list[Projection] = []
        for event in events:
            batch.append(project(event))
            if len(batch) >= BATCH:
                new += await self._writer.apply(batch)
                batch = []
        if batch:
            new += await self._writer.apply(batch)
        return new

    # -- reading ------------------------------------------------------------------------
    async def _rows(self, stmt: Any) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(stmt)]

    async def case_events(
        self,
        case_id: str,
        session_id: str | None = None,
        after_seq: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """The case's timeline (or one session's part of it) in log order, after
        ``after_seq`` (or where ``cursor``, the previous page's, says)."""
        _check(limit)
        at = paging.decode(EVENTS, cursor, {"q": int})
        after = at["q"] if at is not None else (after_seq or 0)
        t = s.events
        stmt = sa.select(t).where(t.c.case_id == case_id, t.c.seq > after)
        if session_id is not None:
            stmt = stmt.where(t.c.session_id == session_id)
        rows = await self._rows(stmt.order_by(t.c.seq).limit(limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = paging.encode(EVENTS, q=rows[-1]["seq"]) if more else None
        return Page(rows, nxt)

    async def sessions(
        self,
        case_id: str | None = None,
        dept: str | None = None,
        window: str | None = None,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 100,
        session_id: str | None = None,
    ) -> Page:
        """Sessions newest first: of a case, a department (invited), a window, a period
        (``session_id``: that one only, for a token limited to it)."""
        t = s.sessions
        stmt = sa.select(t)
        if case_id is not None:
            stmt = stmt.where(t.c.case_id == case_id)
        if session_id is not None:
            stmt = stmt.where(t.c.session_id == session_id)
        if dept is not None:
            invited = sa.select(s.invitations.c.session_id).where(s.invitations.c.dept == dept)
            stmt = stmt.where(t.c.session_id.in_(invited))
        if window is not None:
            stmt = stmt.where(t.c.window == window)
        return await self._newest_first(
            stmt, SESSIONS, t.c.created_at, t.c.session_id, since, until, cursor, limit
        )

    async def invitations(
        self,
        dept: str | None = None,
        status: str | None = None,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 100,
        session_id: str | None = None,
        case_id: str | None = None,
    ) -> Page:
        """Invitations newest first, with when they rang and were answered, by whom."""
        t = s.invitations
        stmt = sa.select(t)
        for column, value in (("dept", dept), ("status", status), ("session_id", session_id)):
            if value is not None:
                stmt = stmt.where(t.c[column] == value)
        if case_id is not None:  # through the case's sessions: both indexed
            of_case = sa.select(s.sessions.c.session_id).where(s.sessions.c.case_id == case_id)
            stmt = stmt.where(t.c.session_id.in_(of_case))
        return await self._newest_first(
            stmt, INVITATIONS, t.c.created_at, t.c.invitation_id, since, until, cursor, limit
        )

    async def _newest_first(
        self,
        stmt: Any,
        kind: str,
        time_col: Any,
        id_col: Any,
        since: float | None,
        until: float | None,
        cursor: str | None,
        limit: int,
    ) -> Page:
        _check(limit)
        at = paging.decode(kind, cursor, {"t": float, "i": str})
        if since is not None:
            stmt = stmt.where(time_col >= since)
        if until is not None:
            stmt = stmt.where(time_col <= until)
        if at is not None:
            stmt = stmt.where(_keyset_before(time_col, id_col, at["t"], at["i"]))
        stmt = stmt.order_by(time_col.desc(), id_col.desc()).limit(limit + 1)
        rows = await self._rows(stmt)
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = None
        if more:
            last = rows[-1]
            nxt = paging.encode(kind, t=last[time_col.name], i=last[id_col.name])
        return Page(rows, nxt)

    async def session(self, session_id: str) -> dict[str, Any] | None:
        rows = await self._rows(sa.select(s.sessions).where(s.sessions.c.session_id == session_id))
        return rows[0] if rows else None

    async def participants(self, session_id: str) -> list[dict[str, Any]]:
        t = s.participants
        stmt = sa.select(t).where(t.c.session_id == session_id)
        rows = await self._rows(stmt.order_by(t.c.joined_at, t.c.participant_id))
        return [_participant(r) for r in rows]

    async def chat(self, session_id: str) -> list[dict[str, Any]]:
        t = s.chat
        return await self._rows(sa.select(t).where(t.c.session_id == session_id).order_by(t.c.seq))

    async def opinions(self, session_id: str) -> list[dict[str, Any]]:
        t = s.opinions
        stmt = sa.select(t).where(t.c.session_id == session_id)
        rows = await self._rows(stmt.order_by(t.c.created_at, t.c.opinion_id))
        for r in rows:
            r.pop("author_dept")
        return rows

    async def snapshots(self, session_id: str) -> list[dict[str, Any]]:
        t = s.snapshots
        stmt = sa.select(t).where(t.c.session_id == session_id)
        rows = await self._rows(stmt.order_by(t.c.created_at, t.c.snapshot_id))
        return [dict(r, url=f"/api/snapshots/{r['snapshot_id']}") for r in rows]

    # -- the API's views (signaling/record_views.py) ------------------------------------
    async def case(self, case_id: str) -> dict[str, Any] | None:
        rows = await self._rows(sa.select(s.cases).where(s.cases.c.case_id == case_id))
        return rows[0] if rows else None

    async def case_sessions(self, case_id: str) -> list[dict[str, Any]]:
        """Every session of the case, oldest first (a case holds a few)."""
        t = s.sessions
        stmt = sa.select(t).where(t.c.case_id == case_id)
        return await self._rows(stmt.order_by(t.c.created_at, t.c.session_id))

    async def session_invitations(self, session_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The invitations of these sessions, each session's oldest first."""
        t = s.invitations
        stmt = sa.select(t).where(t.c.session_id.in_(sorted(session_ids)))
        return await self._rows(stmt.order_by(t.c.session_id, t.c.created_at, t.c.invitation_id))

    async def session_opinions(self, session_ids: Sequence[str]) -> list[dict[str, Any]]:
        t = s.opinions
        stmt = sa.select(t).where(t.c.session_id.in_(sorted(session_ids)))
        rows = await self._rows(stmt.order_by(t.c.session_id, t.c.created_at, t.c.opinion_id))
        for r in rows:
            r.pop("author_dept")
        return rows

    async def session_snapshots(self, session_ids: Sequence[str]) -> list[dict[str, Any]]:
        t = s.snapshots
        stmt = sa.select(t).where(t.c.session_id.in_(sorted(session_ids)))
        rows = await self._rows(stmt.order_by(t.c.session_id, t.c.created_at, t.c.snapshot_id))
        return [dict(r, url=f"/api/snapshots/{r['snapshot_id']}") for r in rows]

    async def snapshot(self, snapshot_id: str) -> dict[str, Any] | None:
        t = s.snapshots
        rows = await self._rows(sa.select(t).where(t.c.snapshot_id == snapshot_id))
        return dict(rows[0], url=f"/api/snapshots/{snapshot_id}") if rows else None

    async def timeline(
        self,
        case_id: str,
        session_ids: Sequence[str],
        case_own: bool,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """The case's events of these sessions (and, ``case_own``, those of no session),
        in log order: one reader's part of the timeline (primary key range)."""
        _check(limit)
        at = paging.decode(EVENTS, cursor, {"q": int})
        t = s.events
        which = [t.c.session_id.in_(sorted(session_ids))] if session_ids else []
        if case_own:
            which.append(t.c.session_id.is_(None))
        if not which:
            return Page([], None)
        stmt = sa.select(t).where(t.c.case_id == case_id, sa.or_(*which))
        if at is not None:
            stmt = stmt.where(t.c.seq > at["q"])
        rows = await self._rows(stmt.order_by(t.c.seq).limit(limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, paging.encode(EVENTS, q=rows[-1]["seq"]) if more else None)

    async def event_count(self, case_id: str) -> int:
        """How many of the case's events are filed (to check a copy of existing data)."""
        t = s.events
        stmt = sa.select(sa.func.count()).select_from(t).where(t.c.case_id == case_id)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def counts(self) -> dict[str, int]:
        """Rows per table (to check a migration of existing data)."""
        async with self.engine.connect() as conn:
            return {
                name: int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
                for name, table in s.TABLES.items()
            }

    # -- for the live store's eviction (signaling/evict.py) ------------------------------
    # A session gone from the live store is read from here, shaped as the store had it.
    async def events_upto(self, case_id: str, seq: int) -> int:
        """How many of the case's events with ``seq`` ≤ ``seq`` are filed: ``seq`` when
        the record holds every one of them."""
        t = s.events
        stmt = sa.select(sa.func.count()).select_from(t)
        stmt = stmt.where(t.c.case_id == case_id, t.c.seq <= seq)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def last_seq(self, case_id: str) -> int:
        """The case's highest ``seq`` filed (0: none): where a case the live store forgot
        whole goes on numbering (``signaling.core.append_event``)."""
        t = s.events
        stmt = sa.select(sa.func.max(t.c.seq)).where(t.c.case_id == case_id)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def session_doc(self, session_id: str) -> dict[str, Any] | None:
        """The session as ``signaling.models.Session`` (None: not in the record)."""
        row = await self.session(session_id)
        if row is None:
            return None
        keep = ("session_id", "case_id", "status", "created_at", "created_by", "ended_at")
        doc = {k: row[k] for k in keep}
        doc.update(
            ended_by=row["ended_by"],
            applicant_name=row["applicant_name"],
            matter=row["matter"],
            window=row["window"],
        )
        return doc

    async def invitation_docs(self, session_id: str) -> list[dict[str, Any]]:
        """The session's invitations as ``signaling.models.Invitation``, oldest first."""
        t = s.invitations
        stmt = sa.select(t).where(t.c.session_id == session_id)
        rows = await self._rows(stmt.order_by(t.c.created_at, t.c.invitation_id))
        return [{k: v for k, v in r.items() if k != "answerer_sub"} for r in rows]

    async def case_session_docs(self, case_id: str) -> list[dict[str, Any]]:
        """The case's sessions, as ``session_doc`` gives them, oldest first."""
        t = s.sessions
        stmt = sa.select(t.c.session_id).where(t.c.case_id == case_id)
        ids = await self._rows(stmt.order_by(t.c.created_at, t.c.session_id))
        docs = [await self.session_doc(r["session_id"]) for r in ids]
        return [d for d in docs if d is not None]

    async def invitation_doc(self, invitation_id: str) -> dict[str, Any] | None:
        """One invitation as ``signaling.models.Invitation`` (None: unknown)."""
        t = s.invitations
        rows = await self._rows(sa.select(t).where(t.c.invitation_id == invitation_id))
        return {k: v for k, v in rows[0].items() if k != "answerer_sub"} if rows else None

    async def participant_doc(self, participant_id: str) -> dict[str, Any] | None:
        """The participant slot as ``signaling.models.Participant`` (None: unknown)."""
        t = s.participants
        rows = await self._rows(sa.select(t).where(t.c.participant_id == participant_id))
        return _participant(rows[0]) if rows else None

    async def participant_docs(self, session_id: str) -> list[dict[str, Any]]:
        return await self.participants(session_id)

    async def snapshot_docs(
        self, session_id: str | None = None, snapshot_id: str | None = None
    ) -> list[dict[str, Any]]:
        """A session's stills (or one still), as ``snapshots`` gives them."""
        t = s.snapshots
        stmt = sa.select(t)
        if session_id is not None:
            stmt = stmt.where(t.c.session_id == session_id)
        if snapshot_id is not None:
            stmt = stmt.where(t.c.snapshot_id == snapshot_id)
        rows = await self._rows(stmt.order_by(t.c.created_at, t.c.snapshot_id))
        return [dict(r, url=f"/api/snapshots/{r['snapshot_id']}") for r in rows]

    async def opinion_docs(self, session_id: str) -> list[dict[str, Any]]:
        return await self.opinions(session_id)

    async def event_docs(self, case_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` of the case's events after ``after_seq``, as the log had them."""
        return (await self.case_events(case_id, after_seq=after_seq, limit=limit)).items


IDENTITY = ("sub", "name", "role", "dept", "level")


def _participant(row: Mapping[str, Any]) -> dict[str, Any]:
    """A participant row shaped as ``signaling.models.Participant`` (plus its leave)."""
    out = {k: v for k, v in row.items() if k not in IDENTITY}
    out["identity"] = {k: row[k] for k in IDENTITY}
    return out
