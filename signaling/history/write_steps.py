"""The statements of ``History``'s write path, on a synchronous connection (run in the
SQLite writer's thread, or in ``AsyncConnection.run_sync`` on PostgreSQL): what the
record already holds of a batch (``known_of``), a case's time (``earlier``), a batch's
row changes as few statements as can be (``run_updates``) and the cases' advisory locks
on PostgreSQL (``lock_cases``, one statement for all of them)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from . import schema as s
from .projection import Elapsed, Increment, Row, Update


def lock_key(case_id: str) -> int:
    """A case's advisory lock on PostgreSQL (a signed 64-bit key)."""
    digest = hashlib.sha256(f"jointreview-history:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# The keys, sorted, as one array: unnest yields them in that order, so two transactions
# take their common locks in one order and never wait on each other.
_KEYS = sa.func.unnest(sa.bindparam("keys", type_=postgresql.ARRAY(sa.BigInteger)))
_LOCKS = sa.select(sa.func.pg_advisory_xact_lock(_KEYS.table_valued("k").render_derived().c.k))


def lock_cases(conn: sa.Connection, case_ids: Iterable[str]) -> None:
    """Hold these cases' advisory locks until the transaction ends (one round trip)."""
    keys = sorted({lock_key(c) for c in case_ids})
    conn.execute(_LOCKS, {"keys": keys}).all()


@dataclass
class Known:
    """What the record holds already of a batch's sessions and cases."""

    last: dict[str, int]  # session -> its last recorded event's seq
    sessions: set[str]  # sessions with their row
    cases: dict[str, int]  # case -> its last recorded event's seq


def _known() -> sa.CompoundSelect:
    e, t = s.events, s.sessions
    sids = sa.bindparam("sids", type_=s.ID, expanding=True)
    last = sa.select(sa.literal("e"), e.c.session_id, sa.func.max(e.c.seq))
    last = last.where(e.c.session_id.in_(sids)).group_by(e.c.session_id)
    rows = sa.select(sa.literal("s"), t.c.session_id, sa.literal(0)).where(t.c.session_id.in_(sids))
    case = sa.select(sa.literal("c"), e.c.case_id, sa.func.max(e.c.seq))
    case = case.where(e.c.case_id.in_(sa.bindparam("cids", type_=s.ID, expanding=True)))
    return sa.union_all(last, rows, case.group_by(e.c.case_id))


# Built once: a statement's cache key is computed once, not at each transaction.
_KNOWN = _known()


def known_of(conn: sa.Connection, session_ids: set[str], case_ids: set[str]) -> Known:
    known = Known({}, set(), {})
    params = {"sids": sorted(session_ids), "cids": sorted(case_ids)}
    for kind, key, seq in conn.execute(_KNOWN, params):
        if kind == "e":
            known.last[key] = int(seq)
        elif kind == "s":
            known.sessions.add(key)
        else:
            known.cases[key] = int(seq)
    return known


def earlier(conn: sa.Connection, cases: list[Row]) -> None:
    """A case's time is its first event's, whatever the order they were recorded in."""
    c = s.cases.c
    stmt = sa.update(s.cases).where(
        c.case_id == sa.bindparam("c"), c.created_at > sa.bindparam("t")
    )
    params = [{"c": r["case_id"], "t": r["created_at"]} for r in cases]
    conn.execute(stmt.values(created_at=sa.bindparam("t")), params)


# An update's shape: its table, key columns, changed columns (and which add) and the
# states it applies from. Updates of one shape are one statement with many parameter sets.
Shape = tuple[str, tuple[str, ...], tuple[tuple[str, str], ...], tuple[tuple[str, Any], ...]]


def _how(value: Any) -> str:
    """How an update sets a column: to the value, adding it, or as the time since another
    column (``since:<column>``)."""
    if isinstance(value, Increment):
        return "add"
    if isinstance(value, Elapsed):
        return f"since:{value.since}"
    return "set"


def shape_of(change: Update) -> Shape:
    values = tuple(sorted((k, _how(v)) for k, v in change.values.items()))
    when = tuple(sorted((k, tuple(v)) for k, v in change.when.items()))
    return change.table, tuple(sorted(change.key)), values, when


def group_updates(updates: list[Update]) -> list[tuple[Shape, list[Row]]]:
    """The updates as runs of one shape each, to execute in order, each run's parameter
    sets in order: a row's updates keep their order (a row's update joins the last run of
    its shape only when no later run changes that row); other rows' may move earlier."""
    runs: list[tuple[Shape, list[Row]]] = []
    last_run: dict[Shape, int] = {}  # shape -> index of its latest run
    row_at: dict[tuple[str, tuple[Any, ...]], int] = {}  # row -> its latest update's run
    for change in updates:
        shape = shape_of(change)
        row = (change.table, tuple(sorted(change.key.items())))
        at = last_run.get(shape, -1)
        if at < row_at.get(row, -1) or at < 0:
            runs.append((shape, []))
            at = last_run[shape] = len(runs) - 1
        params = {f"k_{k}": v for k, v in change.key.items()}
        for k, v in change.values.items():
            params[f"v_{k}"] = (
                v.by if isinstance(v, Increment) else v.at if isinstance(v, Elapsed) else v
            )
        runs[at][1].append(params)
        row_at[row] = at
    return runs


@functools.lru_cache(maxsize=256)
def _statement(shape: Shape) -> sa.Update:
    name, keys, values, when = shape
    table = s.TABLES[name]
    changed = {}
    for column, how in values:
        if how == "add":
            changed[column] = table.c[column] + sa.bindparam(f"v_{column}", type_=sa.Integer)
        elif how.startswith("since:"):
            at = sa.bindparam(f"v_{column}", type_=table.c[column].type)
            changed[column] = at - table.c[how.removeprefix("since:")]
        else:
            changed[column] = sa.bindparam(f"v_{column}", type_=table.c[column].type)
    stmt = sa.update(table).values(changed)
    for column in keys:
        key = sa.bindparam(f"k_{column}", type_=table.c[column].type)
        stmt = stmt.where(table.c[column] == key)
    for column, allowed in when:
        # literals, not an expanding IN: that cannot take many parameter sets
        stmt = stmt.where(sa.or_(*(table.c[column] == sa.literal(v) for v in allowed)))
    return stmt


def run_updates(conn: sa.Connection, updates: list[Update]) -> None:
    """Apply these row changes in order, one statement per run of one shape."""
    for shape, params in group_updates(updates):
        conn.execute(_statement(shape), params)
