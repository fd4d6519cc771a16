"""The supervisors' statistics and exceptions, read from the record (SQL, indexed).

``statistics`` answers ``GET /api/stats`` for a period with a few grouped queries over
indexes that cover them (``ix_sessions_stats``, ``ix_invitations_stats``,
``ix_opinions_stats``: no row is looked up), never a case's log. Counts are exact.
Percentiles are exact too: computed in SQL with window functions over the period's
values (``row_number`` and ``count`` per group), as linear interpolation between the
two closest ranks (PostgreSQL's ``percentile_cont``, numpy's default, Python's
``statistics.quantiles(method="inclusive")``); only those ranks leave the database.

The period is half-open, ``since ≤ t < until``: sessions by their creation, invitations
by theirs, opinions by their filing. Days (``by_day``) are local days of a time zone,
from hourly counts (so the zone's offset must be whole hours, as China's is).
``exceptions`` pages the exceptions newest first (keyset on ``(at, exception_id)``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .. import paging
from . import schema as s
from .raising import BROKEN_OFF

EXCEPTIONS = "hx"  # cursor kind
DECISIONS = ("approve", "materials_missing", "refer", "note")
INVITATION_STATUSES = ("accepted", "declined", "unanswered", "cancelled")
ANSWERED = ("accepted", "declined")
PCTS = (5, 9)  # tenths: p50, p90


@dataclass(frozen=True)
class Filter:
    since: float
    until: float
    dept: str | None = None
    window: str | None = None


def _pcts(ranks: dict[int, float], n: int) -> tuple[float | None, float | None]:
    """p50 and p90 from the values at the ranks ``_ranked`` kept (1-based)."""
    if n == 0:
        return None, None
    out = []
    for q in PCTS:
        lo = (n - 1) * q // 10 + 1
        frac = (n - 1) * q % 10 / 10
        x = ranks[lo]
        out.append(x + frac * (ranks[lo + 1] - x) if frac else x)
    return out[0], out[1]


def _ranked(values: sa.Select[Any]) -> sa.Select[Any]:
    """From ``(g, x)`` rows: ``(g, rn, n, x)`` for the ranks p50 and p90 need, per ``g``."""
    v = values.subquery("v")
    rn = sa.func.row_number().over(partition_by=v.c.g, order_by=v.c.x).label("rn")
    n = sa.func.count().over(partition_by=v.c.g).label("n")
    r = sa.select(v.c.g, v.c.x, rn, n).subquery("r")
    wanted = []
    for q in PCTS:
        lo = (r.c.n - 1) * q // 10 + 1
        wanted += [r.c.rn == lo, r.c.rn == lo + 1]
    return sa.select(r.c.g, r.c.rn, r.c.n, r.c.x).where(sa.or_(*wanted))


def _hour(col: Any, dialect: str) -> Any:
    """The UNIX hour of a time (times are positive: truncation is the floor)."""
    if dialect == "postgresql":
        return sa.cast(sa.func.floor(col / 3600), sa.BigInteger)
    return sa.cast(col / 3600, sa.Integer)


def _outcome() -> Any:
    """An invitation's outcome: answered (accepted, declined), else ``unanswered`` once it
    rang out (even if its session's end then cancelled it), else its status."""
    i = s.invitations.c
    return sa.case(
        (i.status.in_(ANSWERED), i.status),
        (i.unanswered_at.is_not(None), sa.literal("unanswered")),
        else_=i.status,
    )


def _count_if(cond: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)


class Stats:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    async def _all(self, stmt: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(stmt))

    # -- what the filter selects -----------------------------------------------------
    def _sessions_where(self, f: Filter) -> list[Any]:
        t = s.sessions.c
        where = [t.created_at >= f.since, t.created_at < f.until]
        if f.window is not None:
            where.append(t.window == f.window)
        if f.dept is not None:
            i = s.invitations.c
            where.append(t.session_id.in_(sa.select(i.session_id).where(i.dept == f.dept)))
        return where

    def _of_window(self, col: Any, f: Filter) -> list[Any]:
        if f.window is None:
            return []
        t = s.sessions.c
        return [col.in_(sa.select(t.session_id).where(t.window == f.window))]

    def _invitations_where(self, f: Filter) -> list[Any]:
        i = s.invitations.c
        where = [i.created_at >= f.since, i.created_at < f.until]
        if f.dept is not None:
            where.append(i.dept == f.dept)
        return where + self._of_window(i.session_id, f)

    # -- the queries -----------------------------------------------------------------
    async def _sessions(self, f: Filter) -> tuple[list[Any], list[Any], list[Any]]:
        t = s.sessions.c
        where = self._sessions_where(f)
        broken = t.end_reason.in_(BROKEN_OFF)
        counts = sa.select(
            t.window,
            t.matter,
            sa.func.count().label("total"),
            _count_if(t.ended_at.is_not(None)).label("ended"),
            _count_if(broken).label("broken_off"),
        ).where(*where)
        counts = counts.group_by(t.window, t.matter)
        dur = (t.ended_at - t.created_at).label("x")
        ended = [*where, t.ended_at.is_not(None)]
        overall = _ranked(sa.select(sa.literal("").label("g"), dur).where(*ended))
        per_window = _ranked(sa.select(t.window.label("g"), dur).where(*ended))
        return (
            await self._all(counts),
            await self._all(overall),
            await self._all(per_window),
        )

    async def _invitations(self, f: Filter) -> tuple[list[Any], list[Any]]:
        i = s.invitations.c
        where = self._invitations_where(f)
        outcome = _outcome().label("status")
        counts = sa.select(i.dept, i.level, outcome, sa.func.count().label("n")).where(*where)
        counts = counts.group_by(i.dept, i.level, outcome)
        answer = (i.responded_at - i.created_at).label("x")
        answered = [*where, i.status.in_(ANSWERED), i.dept.is_not(None)]
        ranks = _ranked(sa.select(i.dept.label("g"), answer).where(*answered))
        return await self._all(counts), await self._all(ranks)

    async def _opinions(self, f: Filter) -> list[Any]:
        o = s.opinions.c
        where = [o.created_at >= f.since, o.created_at < f.until, o.author_dept.is_not(None)]
        if f.dept is not None:
            where.append(o.author_dept == f.dept)
        where += self._of_window(o.session_id, f)
        stmt = sa.select(o.author_dept, o.decision, sa.func.count().label("n")).where(*where)
        return await self._all(stmt.group_by(o.author_dept, o.decision))

    async def _hourly(self, f: Filter) -> tuple[list[Any], list[Any]]:
        t, i = s.sessions.c, s.invitations.c
        h = _hour(t.created_at, self.dialect).label("h")
        sessions = sa.select(h, sa.func.count().label("n")).where(*self._sessions_where(f))
        hi = _hour(i.created_at, self.dialect).label("h")
        invitations = sa.select(
            hi,
            sa.func.count().label("n"),
            _count_if(i.status == "accepted").label("accepted"),
            _count_if(_outcome() == "unanswered").label("unanswered"),
        ).where(*self._invitations_where(f))
        return (
            await self._all(sessions.group_by(h)),
            await self._all(invitations.group_by(hi)),
        )

    async def statistics(self, f: Filter, tz: ZoneInfo) -> dict[str, Any]:
        """The figures of ``GET /api/stats`` (departments without their names: the
        caller adds them from the directory)."""
        counts, overall, per_window = await self._sessions(f)
        inv_counts, answer_ranks = await self._invitations(f)
        opinions = await self._opinions(f)
        s_hours, i_hours = await self._hourly(f)
        ranks = _by_group(overall)
        p50, p90 = _pcts(*ranks.get("", ({}, 0)))
        sessions = {
            "total": sum(r.total for r in counts),
            "ended": sum(r.ended for r in counts),
            "broken_off": sum(r.broken_off for r in counts),
            "duration_s_p50": p50,
            "duration_s_p90": p90,
        }
        return {
            "period": {"since": f.since, "until": f.until, "timezone": str(tz.key)},
            "sessions": sessions,
            "invitations": _invitation_totals(inv_counts),
            "departments": _departments(inv_counts, _by_group(answer_ranks), opinions),
            "by_day": _by_day(f, tz, s_hours, i_hours),
            "windows": _breakdown(counts, "window", _by_group(per_window)),
            "matters": _breakdown(counts, "matter", None),
        }

    # -- exceptions --------------------------------------------------------------------
    async def exceptions(
        self,
        since: float | None,
        until: float | None,
        kind: str | None,
        status: str | None,
        dept: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of exceptions, newest first, and the next page's cursor."""
        at = paging.decode(EXCEPTIONS, cursor, {"t": float, "i": str})
        x = s.exceptions.c
        stmt = self._exception_select()
        for col, value in ((x.kind, kind), (x.status, status), (x.dept, dept)):
            if value is not None:
                stmt = stmt.where(col == value)
        if since is not None:
            stmt = stmt.where(x.at >= since)
        if until is not None:
            stmt = stmt.where(x.at <= until)
        if at is not None:
            stmt = stmt.where(
                sa.or_(x.at < at["t"], sa.and_(x.at == at["t"], x.exception_id < at["i"]))
            )
        stmt = stmt.order_by(x.at.desc(), x.exception_id.desc()).limit(limit + 1)
        rows = [_exception(r) for r in await self._all(stmt)]
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = None
        if more:
            nxt = paging.encode(EXCEPTIONS, t=rows[-1]["at"], i=rows[-1]["exception_id"])
        return rows, nxt

    async def exception(self, exception_id: str) -> dict[str, Any] | None:
        stmt = self._exception_select().where(s.exceptions.c.exception_id == exception_id)
        rows = await self._all(stmt)
        return _exception(rows[0]) if rows else None

    def _exception_select(self) -> sa.Select[Any]:
        x, t = s.exceptions, s.sessions
        started = t.c.created_at.label("session_created_at")
        joined = x.outerjoin(t, t.c.session_id == x.c.session_id)
        return sa.select(x, started).select_from(joined)


EXCEPTION_FIELDS = (
    "exception_id",
    "kind",
    "case_id",
    "session_id",
    "dept",
    "at",
    "offset_s",
    "detail",
    "status",
    "handled_by",
    "handled_at",
    "note",
)


def _exception(r: Any) -> dict[str, Any]:
    row = dict(r._mapping)
    started = row.pop("session_created_at")
    row["offset_s"] = max(0.0, row["at"] - started) if started is not None else None
    return {k: row[k] for k in EXCEPTION_FIELDS}


def _by_group(rows: Iterable[Any]) -> dict[Any, tuple[dict[int, float], int]]:
    out: dict[Any, tuple[dict[int, float], int]] = {}
    for r in rows:
        ranks, _ = out.setdefault(r.g, ({}, int(r.n)))
        ranks[int(r.rn)] = float(r.x)
    return out


def _invitation_totals(rows: list[Any]) -> dict[str, int]:
    out = {"total": sum(r.n for r in rows)}
    for status in INVITATION_STATUSES:
        out[status] = sum(r.n for r in rows if r.status == status)
    return out


def _departments(
    counts: list[Any], ranks: dict[Any, tuple[dict[int, float], int]], opinions: list[Any]
) -> list[dict[str, Any]]:
    depts: dict[str, dict[str, Any]] = {}

    def dept(name: str) -> dict[str, Any]:
        if name not in depts:
            depts[name] = {
                "dept": name,
                "level": None,
                "invited": 0,
                **{k: 0 for k in ("accepted", "declined", "unanswered")},
                "answer_s_p50": None,
                "answer_s_p90": None,
                "opinions": {d: 0 for d in DECISIONS},
            }
        return depts[name]

    for r in counts:
        if r.dept is None:  # a named reviewer's invitation: in the totals only
            continue
        d = dept(r.dept)
        d["level"] = d["level"] or r.level
        d["invited"] += r.n
        if r.status in ("accepted", "declined", "unanswered"):
            d[r.status] += r.n
    for name, (got, n) in ranks.items():
        dept(name)["answer_s_p50"], dept(name)["answer_s_p90"] = _pcts(got, n)
    for r in opinions:
        if r.decision in DECISIONS:
            dept(r.author_dept)["opinions"][r.decision] += r.n
    return [depts[k] for k in sorted(depts)]


def _breakdown(
    counts: list[Any], key: str, ranks: dict[Any, tuple[dict[int, float], int]] | None
) -> list[dict[str, Any]]:
    """Sessions per window (with their durations' percentiles) or per matter, most first."""
    out: dict[Any, dict[str, Any]] = {}
    for r in counts:
        name = getattr(r, key)
        row = out.setdefault(name, {key: name, "sessions": 0, "ended": 0, "broken_off": 0})
        row["sessions"] += r.total
        row["ended"] += r.ended
        row["broken_off"] += r.broken_off
    if ranks is not None:
        for name, row in out.items():
            row["duration_s_p50"], row["duration_s_p90"] = _pcts(*ranks.get(name, ({}, 0)))
    return sorted(out.values(), key=lambda r: (-r["sessions"], str(r[key])))


def _by_day(f: Filter, tz: ZoneInfo, sessions: list[Any], invitations: list[Any]) -> list[Any]:
    """Every local day of the period, with the hourly counts folded into it."""
    days: dict[dt.date, dict[str, Any]] = {}
    first = dt.datetime.fromtimestamp(f.since, tz).date()
    last = dt.datetime.fromtimestamp(max(f.since, f.until - 1e-6), tz).date()
    day = first
    while day <= last:
        days[day] = {"date": day.isoformat(), "sessions": 0, "invitations": 0}
        days[day].update(accepted=0, unanswered=0)
        day += dt.timedelta(days=1)

    def at(hour: int) -> dict[str, Any]:
        return days[dt.datetime.fromtimestamp(int(hour) * 3600, tz).date()]

    for r in sessions:
        at(r.h)["sessions"] += r.n
    for r in invitations:
        row = at(r.h)
        row["invitations"] += r.n
        row["accepted"] += r.accepted
        row["unanswered"] += r.unanswered
    return list(days.values())
