"""The record's write path: one batch of projected events, one transaction.

``transaction`` is synchronous, on a ``sqlalchemy.Connection``, so that a whole batch
costs one hop off the event loop, not one per statement:

- SQLite (a file): in ``Writer``'s own thread, through the plain ``sqlite3`` driver
  (``db.make_writer_engine``). That thread is the node's only writer: batches queue on
  it in order (SQLite has one writer at a time anyway). aiosqlite would cost a round trip
  between the loop and its thread per statement, ~0.5-1 ms each on a busy machine.
- PostgreSQL: in ``AsyncConnection.run_sync`` (each statement still awaits asyncpg), with
  as few statements as can be: the batch's cases locked in one, a run of row changes of
  one shape in one ``executemany``.

Either way the statements are the same (``write_steps``), and so are the guarantees:
filing an event twice changes nothing (the event's ``(case_id, seq)``), and its rows do
not depend on the order the events were recorded in.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.visitors import InternalTraversal

from . import schema as s
from .db import make_writer_engine
from .projection import Projection, Row, fold, project
from .raising import Rules, raise_for
from .tally import Tally
from .write_steps import earlier, known_of, lock_cases, run_updates

CREATED = "session.created"
# Inserts of one batch go table by table in this order (a row's parents first).
INSERT_ORDER = ("sessions", "invitations", "participants", "chat", "opinions", "snapshots")


class Writer:
    """Applies batches, one transaction each, in the order they are given."""

    def __init__(self, engine: AsyncEngine, rules: Rules | None = None) -> None:
        self.engine = engine
        self.rules = rules or Rules()
        # Told the exceptions each committed batch raised (new to the record), in order.
        self.on_raised: Callable[[list[Row]], Awaitable[None]] | None = None
        database = engine.url.database
        own_thread = engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        self._sync = make_writer_engine(engine) if own_thread else None
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="history-writer") if own_thread else None
        )
        # Without a thread of its own (PostgreSQL, or SQLite in memory), SQLite's writers
        # queue here rather than on the database's lock.
        self._lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    async def apply(self, batch: list[Projection]) -> int:
        """File the batch in one transaction; how many of its events were new. Then
        (committed) tell ``on_raised`` the exceptions it raised."""
        raised: list[Row] = []
        if self._thread is not None:
            loop = asyncio.get_running_loop()
            new = await loop.run_in_executor(self._thread, self._in_thread, batch, raised)
        elif self._lock is None:
            new = await self._run_sync(batch, raised)
        else:
            async with self._lock:
                new = await self._run_sync(batch, raised)
        if raised and self.on_raised is not None:
            await self.on_raised(raised)
        return new

    def _in_thread(self, batch: list[Projection], raised: list[Row]) -> int:
        assert self._sync is not None
        with self._sync.begin() as conn:
            return transaction(conn, batch, self.rules, raised)

    async def _run_sync(self, batch: list[Projection], raised: list[Row]) -> int:
        async with self.engine.begin() as conn:
            return await conn.run_sync(transaction, batch, self.rules, raised)

    async def close(self) -> None:
        if self._thread is not None and self._sync is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._thread, self._sync.dispose)
            self._thread.shutdown(wait=True)


# ON CONFLICT DO NOTHING without a target: nothing tells one from another.
_NO_TARGET: list[tuple[str, InternalTraversal]] = []


class _SQLiteDoNothing(sqlite.dml.OnConflictDoNothing):
    _traverse_internals = _NO_TARGET
    inherit_cache = True


class _SQLiteInsertIgnoring(sqlite.Insert):
    inherit_cache = True

    def __init__(self, table: sa.Table) -> None:
        super().__init__(table)
        self._post_values_clause = _SQLiteDoNothing()


class _PostgresDoNothing(postgresql.dml.OnConflictDoNothing):
    _traverse_internals = _NO_TARGET
    inherit_cache = True


class _PostgresInsertIgnoring(postgresql.Insert):
    inherit_cache = True

    def __init__(self, table: sa.Table) -> None:
        super().__init__(table)
        self._post_values_clause = _PostgresDoNothing()


@functools.cache
def _insert_of(kind: str, table: str, returning: bool = False) -> sa.Insert:
    """``INSERT ... ON CONFLICT DO NOTHING``: nothing for a row whose key is there (only
    then: SQLite's ``INSERT OR IGNORE`` would also drop a row that breaks NOT NULL).

    The dialects' ``insert().on_conflict_do_nothing()`` is never cached: compiled again at
    each execution, a fifth of the writer's time. These subclasses are cached: each of
    their instances has exactly this clause (no target), so their cache key (the class,
    the table, the columns, ``RETURNING``) says all there is. One statement per table,
    made once: its cache key is computed once too."""
    t = s.TABLES[table]
    stmt = _PostgresInsertIgnoring(t) if kind == "postgresql" else _SQLiteInsertIgnoring(t)
    return stmt.returning(t.c.case_id, t.c.seq) if returning else stmt


def _insert(conn: sa.Connection, table: str) -> sa.Insert:
    return _insert_of(conn.dialect.name, table)


def transaction(
    conn: sa.Connection,
    batch: list[Projection],
    rules: Rules | None = None,
    raised: list[Row] | None = None,
) -> int:
    """The batch's statements, in the caller's transaction; how many events were new.
    The exceptions the batch raised (new to the record) are added to ``raised``."""
    rules = rules or Rules()
    raised = [] if raised is None else raised
    unique = {(p.event["case_id"], p.event["seq"]): p for p in batch}
    if conn.dialect.name == "postgresql":
        # One writer per case at a time, across nodes: what a transaction reads (the
        # session's last event, whether its row exists) stays true until it commits.
        lock_cases(conn, (c for c, _ in unique))
    cases = _cases(conn, unique.values())
    sids = {p.event["session_id"] for p in unique.values()} - {None}
    known = known_of(conn, sids, {c for c, _ in unique})
    stmt = _insert_of(conn.dialect.name, "events", returning=True)
    result = conn.execute(stmt, [p.event for p in unique.values()])
    inserted = {(r.case_id, r.seq) for r in result}
    fresh = [p for k, p in sorted(unique.items()) if k in inserted]
    # An event older than one already recorded for its session (two nodes, or two tasks,
    # filed in one order and recorded in the other): its session's rows are rebuilt from
    # its events in log order, so recording order never matters.
    late = {
        p.event["session_id"]
        for p in fresh
        if p.event["seq"] < known.last.get(p.event["session_id"], 0)
    }
    # Events of a session whose session.created is not recorded yet make no rows: when
    # it comes (an older event), the session is rebuilt, as above.
    born = {p.event["session_id"] for p in fresh if p.event["type"] == CREATED}
    waiting = sids - born - known.sessions
    # The statistics' counts before the rows change (``tally``), unless turned off.
    tally = Tally(conn, [p.event for p in fresh] if rules.enabled else [], known.sessions)
    _changes(conn, [p for p in fresh if p.event["session_id"] not in late | waiting], rules, raised)
    for sid in sorted(late):
        _rebuild(conn, sid, rules, raised)
    tally.commit()
    if any(p.event["seq"] < known.cases.get(p.event["case_id"], 0) for p in fresh):
        earlier(conn, cases)  # a case's first event may be late too
    return len(inserted)


def _cases(conn: sa.Connection, batch: Iterable[Projection]) -> list[Row]:
    first: dict[str, float] = {}
    for p in batch:
        case_id, ts = p.case["case_id"], p.case["created_at"]
        first[case_id] = min(ts, first.get(case_id, ts))
    rows = [{"case_id": c, "created_at": t} for c, t in first.items()]
    conn.execute(_insert(conn, "cases"), rows)
    return rows


def _changes(conn: sa.Connection, batch: list[Projection], rules: Rules, raised: list[Row]) -> None:
    """The rows of these events (in log order): creations first, then changes, then the
    exceptions they raise (which read those rows), then what handles them."""
    inserts, updates = fold([c for p in batch for c in p.changes])
    for name in INSERT_ORDER:
        if name in inserts:
            conn.execute(_insert(conn, name), inserts[name])
    run_updates(conn, [u for u in updates if u.table != "exceptions"])
    raised += raise_for(conn, [p.event for p in batch], rules)
    run_updates(conn, [u for u in updates if u.table == "exceptions"])


def _rebuild(conn: sa.Connection, session_id: str, rules: Rules, raised: list[Row]) -> None:
    for name in reversed(INSERT_ORDER):  # children before the session's own row
        table = s.TABLES[name]
        conn.execute(sa.delete(table).where(table.c.session_id == session_id))
    t = s.events
    stmt = sa.select(t).where(t.c.session_id == session_id).order_by(t.c.seq)
    events = [dict(r._mapping) for r in conn.execute(stmt)]
    if any(e["type"] == CREATED for e in events):  # else: rebuilt when it comes
        _changes(conn, [project(e) for e in events], rules, raised)
