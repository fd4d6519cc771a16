"""The supervisors' statistics and exceptions, read from the record (SQL, indexed).

``statistics`` answers ``GET /api/stats`` for a period with a few statements, never a
case's log. Counts are exact: the period's whole UTC days are summed from the tally
(``stats_*`` tables that ``tally`` keeps as events are filed: a year is a few thousand
rows), its edges (less than a day on either side) counted from the rows over the time
indexes (``stats_tally.split``); a department and a window together, from the rows.
Percentiles are exact too, as linear interpolation between the two closest ranks
(PostgreSQL's ``percentile_cont``, numpy's default, Python's ``statistics.quantiles(
method="inclusive")``): on SQLite over a long period the two values around each rank are
read from an index in value order (``answer_s``, ``duration_s``; a department's
sessions' durations and a window's answers from ``stats_values``) with ``LIMIT 2 OFFSET
rank - 1``, every group's in one statement; the ranks come from the counts.

The period is half-open, ``since ≤ t < until``: sessions by their creation, invitations
by theirs, opinions by their filing. Days (``by_day``) are local days of a time zone:
whole hours from ``stats_hours``, summed by day in SQL when the zone's offset stays the
same over the period (China's does); a zone whose days do not start on whole hours is
counted from the rows. ``exceptions`` pages the exceptions newest first (keyset on
``(at, exception_id)``).
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from . import schema as s
from . import stats_parts as parts
from . import stats_tally as tally
from .exception_list import ExceptionList
from .raising import BROKEN_OFF
from .stats_tally import Filter, OpinionCount, SessionCount

ANSWERED = ("accepted", "declined")
PCTS = (5, 9)  # tenths: p50, p90
LONG_S = 90 * 86400.0  # a period this long reads the indexes in value order (SQLite)


def _rank_of(n: int, q: int) -> tuple[int, float]:
    """Where the ``q``-tenths percentile of ``n`` sorted values lies: the 1-based rank of
    the lower value and the weight of the next one (linear interpolation)."""
    return (n - 1) * q // 10 + 1, (n - 1) * q % 10 / 10


def _pct(values: list[float], weight: float) -> float:
    """The percentile from the value at its rank and the next one (``weight`` of it)."""
    values = sorted(values)
    return values[0] + weight * (values[1] - values[0]) if weight else values[0]


def _count_if(cond: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)


class Stats(ExceptionList):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    async def _all(self, stmt: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(stmt))

    # -- what the filter selects -----------------------------------------------------
    def _time(self, col: Any, f: Filter) -> Any:
        """The period's column. Over a long period, SQLite is steered off the time index
        (``+ 0``: no index serves an expression) to the ones in value or group order, which
        need no sort; over a short one the period's range is smaller. PostgreSQL plans
        from its statistics."""
        return col + 0 if self._long(f) else col

    def _long(self, f: Filter) -> bool:
        return self.dialect == "sqlite" and f.until - f.since > LONG_S

    def _in_order(self, f: Filter, share: bool) -> bool:
        """Whether ranks are read in an index's value order (``LIMIT 2 OFFSET``): on
        SQLite the whole period's, or over a long period a ``share`` an index orders (a
        window's durations, a department's answers); on PostgreSQL those over a long
        period (shorter ones: ``percentile_cont`` over the period's rows)."""
        long = f.until - f.since > LONG_S
        if self.dialect == "sqlite":
            return _whole(f) or (share and long)
        return (_whole(f) or share) and long

    def _sessions_where(self, f: Filter) -> list[Any]:
        t = s.sessions.c
        at = self._time(t.created_at, f)
        where = [at >= f.since, at < f.until]
        if f.window is not None:
            where.append(t.window == f.window)
        if f.dept is not None and self.dialect == "sqlite":
            # Materialized once per statement; a join re-made it for each of _ranks' parts.
            i = s.invitations.c
            where.append(t.session_id.in_(sa.select(i.session_id).where(i.dept == f.dept)))
        return where

    def _sessions_from(self, f: Filter) -> Any:
        """The sessions, or on PostgreSQL (``dept``) those the department was invited to:
        joined to its invitations' distinct sessions (hashed once; its planner ran an
        ``IN`` as a scan of the department's invitations for each session)."""
        if f.dept is None or self.dialect == "sqlite":  # SQLite: the IN of _sessions_where
            return s.sessions
        i = s.invitations.c
        invited = sa.select(i.session_id).where(i.dept == f.dept).distinct().subquery("invited")
        return s.sessions.join(invited, invited.c.session_id == s.sessions.c.session_id)

    def _of_window(self, col: Any, f: Filter) -> list[Any]:
        if f.window is None:
            return []
        t = s.sessions.c
        return [col.in_(sa.select(t.session_id).where(t.window == f.window))]

    def _invitations_where(self, f: Filter, long: bool = True) -> list[Any]:
        i = s.invitations.c
        at = self._time(i.created_at, f) if long else i.created_at
        where = [at >= f.since, at < f.until]
        if f.dept is not None:
            where.append(i.dept == f.dept)
        return where + self._of_window(i.session_id, f)

    async def _ranks(
        self, base: sa.Select[Any], col: Any, group: Any, wanted: dict[Any, int], whole: bool
    ) -> dict[Any, tuple[float | None, float | None]]:
        """p50 and p90 of ``col`` per group (``wanted``: group -> how many values), each
        read as the two values at its rank in the index's order (``LIMIT 2 OFFSET``),
        all in one statement."""
        if not whole and self.dialect == "postgresql":
            return await self._ranks_pg(base, col, wanted)
        if not whole:
            return await self._ranks_sorted(base, col, wanted)
        parts = []
        for g, n in wanted.items():
            if n == 0:
                continue
            of_g = base.where(group.is_(None) if g is None else group == g)
            for q in PCTS:
                rank, _ = _rank_of(n, q)
                one = of_g.add_columns(sa.literal(q).label("q"), col.label("x"))
                one = one.where(col.is_not(None)).order_by(col).limit(2).offset(rank - 1)
                sub = one.subquery()
                parts.append(sa.select(sub.c.g, sub.c.q, sub.c.x))
        found: dict[tuple[Any, int], list[float]] = {}
        if parts:
            for r in await self._all(sa.union_all(*parts)):
                found.setdefault((r.g, int(r.q)), []).append(float(r.x))
        out: dict[Any, tuple[float | None, float | None]] = {}
        for g, n in wanted.items():
            got = [_pct(found[g, q], _rank_of(n, q)[1]) if (g, q) in found else None for q in PCTS]
            out[g] = (got[0], got[1])
        return out

    async def _ranks_sorted(
        self, base: sa.Select[Any], col: Any, wanted: dict[Any, int]
    ) -> dict[Any, tuple[float | None, float | None]]:
        """A department's or a window's share (SQLite): its rows sorted once, ranked by
        window functions, only the ranks needed returned (reading a whole value-ordered
        index for a fifth of it, once per group and rank, cost seconds)."""
        v = base.add_columns(col.label("x")).where(col.is_not(None)).subquery("v")
        rn = sa.func.row_number().over(partition_by=v.c.g, order_by=v.c.x).label("rn")
        n = sa.func.count().over(partition_by=v.c.g).label("n")
        r = sa.select(v.c.g, v.c.x, rn, n).subquery("r")
        at = []
        for q in PCTS:
            lo = (r.c.n - 1) * q // 10 + 1
            at += [r.c.rn == lo, r.c.rn == lo + 1]
        found: dict[tuple[Any, int], float] = {}
        for row in await self._all(sa.select(r.c.g, r.c.rn, r.c.x).where(sa.or_(*at))):
            found[row.g, int(row.rn)] = float(row.x)
        out: dict[Any, tuple[float | None, float | None]] = {}
        for g, count in wanted.items():
            got: list[float | None] = []
            for q in PCTS:
                rank, weight = _rank_of(count, q)
                if (g, rank) not in found:
                    got.append(None)
                    continue
                pair = [found[g, rank]] + ([found[g, rank + 1]] if weight else [])
                got.append(_pct(pair, weight))
            out[g] = (got[0], got[1])
        return out

    async def _ranks_pg(
        self, base: sa.Select[Any], col: Any, wanted: dict[Any, int]
    ) -> dict[Any, tuple[float | None, float | None]]:
        """PostgreSQL's own ``percentile_cont`` (the same interpolation), per group in one
        pass: its planner has no skip-scan to read each group's index range in order."""
        sub = base.add_columns(col.label("x")).where(col.is_not(None)).subquery()
        stmt = sa.select(
            sub.c.g,
            *(sa.func.percentile_cont(q / 10).within_group(sub.c.x).label(f"p{q}") for q in PCTS),
        ).group_by(sub.c.g)
        out: dict[Any, tuple[float | None, float | None]] = dict.fromkeys(wanted, (None, None))
        for r in await self._all(stmt):
            out[r.g] = (float(r.p5), float(r.p9))
        return out

    # -- the queries -----------------------------------------------------------------
    async def _session_counts(self, f: Filter) -> list[SessionCount]:
        """Sessions by window and matter: total, ended, broken off (from the rows)."""
        t = s.sessions.c
        counts = (
            sa.select(
                t.window,
                t.matter,
                sa.func.count().label("total"),
                _count_if(t.ended_at.is_not(None)).label("ended"),
                _count_if(t.end_reason.in_(BROKEN_OFF)).label("broken_off"),
            )
            .select_from(self._sessions_from(f))
            .where(*self._sessions_where(f))
        )
        rows = await self._all(counts.group_by(t.window, t.matter))
        return [SessionCount(r.window, r.matter, r.total, r.ended, r.broken_off) for r in rows]

    async def _durations(
        self, f: Filter, counts: list[SessionCount]
    ) -> tuple[dict[Any, Any], dict[Any, Any]]:
        """The durations' p50 and p90, overall and by window (``counts``: how many)."""
        t = s.sessions.c
        where = self._sessions_where(f)
        sessions = self._sessions_from(f)
        per_window: dict[Any, int] = {}
        for r in counts:
            per_window[r.window] = per_window.get(r.window, 0) + int(r.ended)
        ended = sum(per_window.values())
        if f.dept is not None and f.window is None:
            return await self._values(f, f"d:{f.dept}", "duration", per_window, ended)
        base = sa.select(sa.literal("").label("g")).select_from(sessions).where(*where)
        # A window's: in the order of its index (window, duration).
        whole = self._in_order(f, f.dept is None)
        windows = sa.select(t.window.label("g")).select_from(sessions).where(*where)
        # The two at once, on two connections (as the parts of ``statistics``).
        overall, by_window = await asyncio.gather(
            self._ranks(base, t.duration_s, sa.literal(""), {"": ended}, whole),
            self._ranks(windows, t.duration_s, t.window, per_window, whole),
        )
        return overall, by_window

    async def _invitation_counts(self, f: Filter) -> list[tuple[str | None, str | None, str, int]]:
        """(dept, level, outcome, count) from the rows."""
        i = s.invitations.c
        counts = sa.select(
            i.dept,
            i.level,
            i.status,
            sa.func.count().label("n"),
            _count_if(i.unanswered_at.is_not(None)).label("rang_out"),
        ).where(*self._invitations_where(f))
        return _outcomes(await self._all(counts.group_by(i.dept, i.level, i.status)))

    async def _answers(
        self, f: Filter, counts: list[tuple[str | None, str | None, str, int]]
    ) -> dict[Any, Any]:
        """The answers' p50 and p90 by department (``counts``: how many)."""
        i = s.invitations.c
        answered: dict[Any, int] = {}
        for dept, _, outcome, n in counts:
            if dept is not None and outcome in ANSWERED:
                answered[dept] = answered.get(dept, 0) + n
        if f.window is not None and f.dept is None:
            return (await self._values(f, f"w:{f.window}", "answer", answered, None))[1]
        base = sa.select(i.dept.label("g")).where(*self._invitations_where(f))
        # A department's: in the order of its index (dept, answer).
        whole = self._in_order(f, f.window is None)
        return await self._ranks(base, i.answer_s, i.dept, answered, whole)

    async def _values(
        self, f: Filter, scope: str, measure: str, per_group: dict[Any, int], total: int | None
    ) -> tuple[dict[Any, Any], dict[Any, Any]]:
        """The ranks of a department's sessions' durations, or of a window's answers, from
        ``stats_values`` in value order: overall (``total`` of them) and by group."""
        v = s.stats_values.c
        where = [v.scope == scope, v.measure == measure, v.at >= f.since, v.at < f.until]
        ordered = self.dialect == "sqlite" or f.until - f.since > LONG_S
        overall: dict[Any, Any] = {}
        wanted = {"" if g is None else g: n for g, n in per_group.items()}
        groups = sa.select(v.grp.label("g")).where(*where)
        if total is not None:
            base = sa.select(sa.literal("").label("g")).where(*where)
            overall, found = await asyncio.gather(
                self._ranks(base, v.value, sa.literal(""), {"": total}, ordered),
                self._ranks(groups, v.value, v.grp, wanted, ordered),
            )
        else:
            found = await self._ranks(groups, v.value, v.grp, wanted, ordered)
        by_group = {g: found["" if g is None else g] for g in per_group}
        return overall, by_group

    async def _opinions(self, f: Filter) -> list[OpinionCount]:
        o = s.opinions.c
        at = self._time(o.created_at, f)
        where = [at >= f.since, at < f.until, o.author_dept.is_not(None)]
        if f.dept is not None:
            where.append(o.author_dept == f.dept)
        where += self._of_window(o.session_id, f)
        stmt = sa.select(o.author_dept, o.decision, sa.func.count().label("n")).where(*where)
        rows = await self._all(stmt.group_by(o.author_dept, o.decision))
        return [OpinionCount(r.author_dept, r.decision, int(r.n)) for r in rows]

    async def _counts(
        self, f: Filter
    ) -> tuple[list[SessionCount], list[tuple[str | None, str | None, str, int]], list[Any]]:
        """The period's counts: its whole days from the ``stats_*`` tables, its edges (and
        a department's and window's share together) from the rows."""
        scope = tally.scope_of(f)
        days, edges = tally.split(f, tally.DAY_S) if scope is not None else (None, [f])
        sessions: list[SessionCount] = []
        invitations: list[tuple[str | None, str | None, str, int]] = []
        opinions: list[Any] = []
        if days is not None and scope is not None:
            async with self.engine.connect() as conn:
                for out, (stmt, rows) in (
                    (sessions, tally.sessions(scope, days)),
                    (invitations, tally.invitations(scope, days)),
                    (opinions, tally.opinions(scope, days)),
                ):
                    out += rows(await conn.execute(stmt))
        for edge in edges:
            sessions += await self._session_counts(edge)
            invitations += await self._invitation_counts(edge)
            opinions += await self._opinions(edge)
        return parts.merged(sessions), invitations, opinions

    async def _days(self, f: Filter, tz: ZoneInfo) -> list[dict[str, Any]]:
        """Every local day of the period with its counts: whole hours from the tally,
        the rest (and a zone whose days do not start on whole hours) from the rows."""
        bounds = _day_bounds(f, tz)
        scope = tally.scope_of(f)
        if scope is not None and all(a % tally.HOUR_S == 0 for _, a, _ in bounds[1:]):
            got = await self._days_tallied(f, scope, bounds)
        else:
            got = await self._days_filtered(f, bounds)
        return [
            {"date": date, "sessions": 0, "invitations": 0, "accepted": 0, "unanswered": 0}
            | got.get(k, {})
            for k, (date, _, _) in enumerate(bounds)
        ]

    async def _days_tallied(
        self, f: Filter, scope: str, bounds: list[tuple[str, float, float]]
    ) -> dict[int, dict[str, int]]:
        """Whole hours from ``stats_hours`` (a zone of whole hours: each in one local day),
        the edges (less than an hour) from the rows."""
        hours, edges = tally.split(f, tally.HOUR_S)
        out: dict[int, dict[str, int]] = {}
        for edge in edges:
            for k, row in (await self._days_filtered(edge, bounds)).items():
                parts.sum_into(out.setdefault(k, dict.fromkeys(row, 0)), row)
        if hours is None:
            return out
        starts = [a for _, a, _ in bounds]
        # Days of 24 hours each (no change of offset in the period): summed in SQL.
        base = int(starts[1]) - tally.DAY_S if len(starts) > 1 else None
        if base is not None and any(a != base + k * tally.DAY_S for k, a in enumerate(starts) if k):
            base = None
        first = None if base is None else base // tally.HOUR_S
        stmt, rows = tally.hours(scope, hours, first)
        async with self.engine.connect() as conn:
            found = rows(await conn.execute(stmt))
        for at, row in found:
            k = max(0, bisect.bisect_right(starts, at) - 1)  # the first day's may be cut
            parts.sum_into(out.setdefault(k, dict.fromkeys(row, 0)), row)
        return out

    async def _days_filtered(
        self, f: Filter, bounds: list[tuple[str, float, float]]
    ) -> dict[int, dict[str, int]]:
        """From the rows: their times read once and put in their days here."""
        t, i = s.sessions.c, s.invitations.c
        starts = [a for _, a, _ in bounds]
        out: dict[int, dict[str, int]] = {}

        def day(at: float) -> dict[str, int]:
            k = bisect.bisect_right(starts, at) - 1
            keys = ("sessions", "invitations", "accepted", "unanswered")
            return out.setdefault(k, dict.fromkeys(keys, 0))

        sessions = sa.select(t.created_at).select_from(self._sessions_from(f))
        for r in await self._all(sessions.where(*self._sessions_where(f))):
            day(r.created_at)["sessions"] += 1
        cols = (i.created_at, i.status, i.unanswered_at)
        for r in await self._all(sa.select(*cols).where(*self._invitations_where(f))):
            row = day(r.created_at)
            row["invitations"] += 1
            row["accepted"] += r.status == "accepted"
            row["unanswered"] += r.status not in ANSWERED and r.unanswered_at is not None
        return out

    async def statistics(self, f: Filter, tz: ZoneInfo) -> dict[str, Any]:
        """The figures of ``GET /api/stats`` (departments without their names: the
        caller adds them from the directory)."""
        counts, outcomes, opinions = await self._counts(f)
        # The ranks and the days are independent reads: at once, each on a connection of
        # its own (a database serves them on both cores, where one after another waits).
        (overall, per_window), answers, by_day = await asyncio.gather(
            self._durations(f, counts), self._answers(f, outcomes), self._days(f, tz)
        )
        p50, p90 = overall[""]
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
            "invitations": parts.invitation_totals(outcomes),
            "departments": parts.departments(outcomes, answers, opinions),
            "by_day": by_day,
            "windows": parts.breakdown(counts, "window", per_window),
            "matters": parts.breakdown(counts, "matter", None),
        }


def _outcomes(rows: list[Any]) -> list[tuple[str | None, str | None, str, int]]:
    """(dept, level, outcome, count): answered, else ``unanswered`` once rung out (even if
    the session's end cancelled it afterwards), else the status."""
    out = []
    for r in rows:
        n, rang_out = int(r.n), int(r.rang_out)
        if r.status in ANSWERED:
            out.append((r.dept, r.level, r.status, n))
        else:
            out += [
                (r.dept, r.level, "unanswered", rang_out),
                (r.dept, r.level, r.status, n - rang_out),
            ]
    return out


def _whole(f: Filter) -> bool:
    """No department or window filter: the whole period's rows."""
    return f.dept is None and f.window is None


def _day_bounds(f: Filter, tz: ZoneInfo) -> list[tuple[str, float, float]]:
    """(date, start, end) of every local day of the period, cut to the period."""
    out: list[tuple[str, float, float]] = []
    day = dt.datetime.fromtimestamp(f.since, tz).date()
    while True:
        start = dt.datetime.combine(day, dt.time(), tz).timestamp()
        if start >= f.until:
            return out
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).timestamp()
        out.append((day.isoformat(), max(start, f.since), min(end, f.until)))
        day += dt.timedelta(days=1)
