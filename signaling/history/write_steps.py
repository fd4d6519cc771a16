"""The steps of ``History``'s write path that are statements of their own: what the
record already holds of a batch (``known_of``), a case's time (``earlier``), a row's change
(``update_of``) and a case's advisory lock on PostgreSQL (``lock_key``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import schema as s
from .projection import Increment, Row, Update


def lock_key(case_id: str) -> int:
    """A case's advisory lock on PostgreSQL (a signed 64-bit key)."""
    digest = hashlib.sha256(f"jointreview-history:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass
class Known:
    """What the record holds already of a batch's sessions and cases."""

    last: dict[str, int]  # session -> its last recorded event's seq
    sessions: set[str]  # sessions with their row
    cases: dict[str, int]  # case -> its last recorded event's seq


async def known_of(conn: AsyncConnection, session_ids: set[str], case_ids: set[str]) -> Known:
    e, t = s.events, s.sessions
    sids, cids = sorted(session_ids), sorted(case_ids)
    last = sa.select(sa.literal("e"), e.c.session_id, sa.func.max(e.c.seq))
    last = last.where(e.c.session_id.in_(sids)).group_by(e.c.session_id)
    rows = sa.select(sa.literal("s"), t.c.session_id, sa.literal(0)).where(t.c.session_id.in_(sids))
    case = sa.select(sa.literal("c"), e.c.case_id, sa.func.max(e.c.seq))
    case = case.where(e.c.case_id.in_(cids)).group_by(e.c.case_id)
    known = Known({}, set(), {})
    for kind, key, seq in await conn.execute(sa.union_all(last, rows, case)):
        if kind == "e":
            known.last[key] = int(seq)
        elif kind == "s":
            known.sessions.add(key)
        else:
            known.cases[key] = int(seq)
    return known


async def earlier(conn: AsyncConnection, cases: list[Row]) -> None:
    """A case's time is its first event's, whatever the order they were recorded in."""
    c = s.cases.c
    stmt = sa.update(s.cases).where(
        c.case_id == sa.bindparam("c"), c.created_at > sa.bindparam("t")
    )
    params = [{"c": r["case_id"], "t": r["created_at"]} for r in cases]
    await conn.execute(stmt.values(created_at=sa.bindparam("t")), params)


def update_of(change: Update) -> Any:
    table = s.TABLES[change.table]
    values = {
        k: table.c[k] + v.by if isinstance(v, Increment) else v for k, v in change.values.items()
    }
    stmt = sa.update(table).values(values)
    for column, value in change.key.items():
        stmt = stmt.where(table.c[column] == value)
    for column, allowed in change.when.items():
        stmt = stmt.where(table.c[column].in_(allowed))
    return stmt
