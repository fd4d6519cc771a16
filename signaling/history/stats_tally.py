"""The statistics' counts of a period from the ``stats_*`` tables (``tally`` keeps them).

A period ``since ≤ t < until`` is its whole UTC days (or, for ``by_day``, whole hours),
read from the tables, and its edges, less than a day (an hour) on either side, which
``stats.Stats`` counts from the rows themselves (``split``). A department and a window
together have no scope of their own: those are counted from the rows (``scope_of``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from . import schema as s
from .tally import DAY_S as DAY_S
from .tally import HOUR_S as HOUR_S


@dataclass(frozen=True)
class Filter:
    """What ``GET /api/stats`` asks for: a period, a department's or a window's share."""

    since: float
    until: float
    dept: str | None = None
    window: str | None = None


@dataclass(frozen=True)
class SessionCount:
    """One (window, matter)'s sessions, as ``stats.Stats._session_counts`` gives them."""

    window: str | None
    matter: str | None
    total: int
    ended: int
    broken_off: int


@dataclass(frozen=True)
class OpinionCount:
    author_dept: str
    decision: str
    n: int


def scope_of(f: Filter) -> str | None:
    if f.dept is not None and f.window is not None:
        return None
    if f.dept is not None:
        return f"d:{f.dept}"
    return "" if f.window is None else f"w:{f.window}"


def split(f: Filter, unit: int) -> tuple[tuple[int, int] | None, list[Filter]]:
    """The whole units (days or hours: ``[first, end)``) of the period, and its edges."""
    first, end = math.ceil(f.since / unit), math.floor(f.until / unit)
    if first >= end:
        return None, [f]
    edges = []
    if f.since < first * unit:
        edges.append(replace(f, until=float(first * unit)))
    if end * unit < f.until:
        edges.append(replace(f, since=float(end * unit)))
    return (first, end), edges


def _none(value: str) -> str | None:
    return value or None


def _in(table: sa.Table, col: str, scope: str, units: tuple[int, int]) -> list[Any]:
    c = table.c
    return [c.scope == scope, c[col] >= units[0], c[col] < units[1]]


def sessions(scope: str, days: tuple[int, int]) -> tuple[Any, Any]:
    t = s.stats_sessions
    c = t.c
    sums = (sa.func.sum(c.sessions), sa.func.sum(c.ended), sa.func.sum(c.broken_off))
    stmt = sa.select(c.window, c.matter, *sums).where(*_in(t, "day", scope, days))

    def rows(result: Any) -> list[SessionCount]:
        return [
            SessionCount(_none(w), _none(m), int(n), int(e), int(b)) for w, m, n, e, b in result
        ]

    return stmt.group_by(c.window, c.matter), rows


def invitations(scope: str, days: tuple[int, int]) -> tuple[Any, Any]:
    t = s.stats_invitations
    c = t.c
    stmt = sa.select(c.dept, c.level, c.outcome, sa.func.sum(c.n))
    stmt = stmt.where(*_in(t, "day", scope, days)).group_by(c.dept, c.level, c.outcome)

    def rows(result: Any) -> list[tuple[str | None, str | None, str, int]]:
        return [(_none(d), _none(lv), o, int(n)) for d, lv, o, n in result]

    return stmt, rows


def opinions(scope: str, days: tuple[int, int]) -> tuple[Any, Any]:
    t = s.stats_opinions
    c = t.c
    stmt = sa.select(c.dept, c.decision, sa.func.sum(c.n))
    stmt = stmt.where(*_in(t, "day", scope, days)).group_by(c.dept, c.decision)

    def rows(result: Any) -> list[OpinionCount]:
        return [OpinionCount(d, dec, int(n)) for d, dec, n in result]

    return stmt, rows


def hours(scope: str, units: tuple[int, int], base: int | None) -> tuple[Any, Any]:
    """``by_day``'s measures by hour, or, given ``base`` (the first local midnight's
    hour, in a zone whose offset stays the same over the period), summed by local day
    here: each row's time is then its day's first hour."""
    t = s.stats_hours
    c = t.c
    measures = (c.sessions, c.invitations, c.accepted, c.unanswered)
    if base is None:
        stmt = sa.select(c.hour, *measures).where(*_in(t, "hour", scope, units))
    else:
        day = ((c.hour - base) // 24).label("day")
        stmt = sa.select(day * 24 + base, *(sa.func.sum(m) for m in measures))
        stmt = stmt.where(*_in(t, "hour", scope, units)).group_by(day)

    def rows(result: Any) -> list[tuple[float, dict[str, int]]]:
        keys = ("sessions", "invitations", "accepted", "unanswered")
        return [
            (float(r[0] * HOUR_S), dict(zip(keys, map(int, r[1:]), strict=True))) for r in result
        ]

    return stmt, rows
