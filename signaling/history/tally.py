"""The statistics' counts, kept as the events that change them are filed (``stats_*``).

A projection of the record's rows, not of the events: a session's **contribution** is
what its row, its invitations and its opinions add to the counts (``contribution``).
The write transaction (``writer.transaction``) reads the contributions of the sessions
its events touch before it changes their rows and again after, and adds the difference
(``Tally.begin`` / ``Tally.commit``): whatever the order the events arrive in, twice or
late (a session's rows rebuilt), the counts stay what the rows say. ``rebuild`` fills
them from the rows (migration 0003, or to repair).

Only the event types that change a count touch anything (``COUNTED``); a batch of chat
messages, joins and stills costs nothing here.

Keys (``schema``): the UTC day (``floor(t / 86400)``) or hour, and the scope: ``""``
(everything), ``d:<dept>`` (the sessions the department was invited to, its invitations,
its opinions), ``w:<window>`` (the window's sessions, their invitations and opinions).
An invitation's outcome is ``_outcome``'s; ``open`` (pending, ringing) counts in totals.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from . import schema as s
from .projection import Row
from .raising import BROKEN_OFF

ANSWERED = ("accepted", "declined")
COUNTED = frozenset(
    {
        "session.created",
        "session.ended",
        "invitation.created",
        "invitation.unanswered",
        "invitation.accepted",
        "invitation.declined",
        "invitation.cancelled",
        "opinion.filed",
    }
)
DAY_S = 86_400
HOUR_S = 3_600

# (table, key) -> the counts it adds, in the table's count columns' order
Counts = dict[tuple[str, tuple[Any, ...]], list[int]]
# (scope, measure, ref) -> (group, value, at): a row of stats_values
Values = dict[tuple[str, str, str], tuple[str, float, float]]

# In like columns' order (``_rows_of``): text, time, text, text, text, time, time, text.
SESSION_COLS = (
    "session_id",
    "created_at",
    "window",
    "matter",
    "end_reason",
    "ended_at",
    "duration_s",
)
INVITATION_COLS = (
    "session_id",
    "created_at",
    "dept",
    "level",
    "status",
    "unanswered_at",
    "answer_s",
    "invitation_id",
)
OPINION_COLS = ("session_id", "created_at", "author_dept", "decision")
COUNT_COLUMNS = {
    t.name: tuple(c.name for c in t.columns if not c.primary_key)
    for t in (s.stats_sessions, s.stats_invitations, s.stats_opinions, s.stats_hours)
}


def outcome(status: str, unanswered_at: float | None) -> str:
    """Answered, else ``unanswered`` once it rang out (even if the session's end then
    cancelled it), else cancelled, else ``open``."""
    if status in ANSWERED:
        return status
    if unanswered_at is not None:
        return "unanswered"
    return "cancelled" if status == "cancelled" else "open"


def _add(out: Counts, table: str, key: tuple[Any, ...], counts: Sequence[int]) -> None:
    have = out.get((table, key))
    if have is None:
        out[table, key] = list(counts)
    else:
        for k, n in enumerate(counts):
            have[k] += n


def day_of(t: float) -> int:
    return math.floor(t / DAY_S)


def hour_of(t: float) -> int:
    return math.floor(t / HOUR_S)


def contribution(
    out: Counts, values: Values, session: Row, invitations: Iterable[Row], opinions: Iterable[Row]
) -> None:
    """Add what one session (its row, its invitations and opinions) counts to ``out``,
    and the values it ranks to ``values``."""
    invitations = list(invitations)
    window = session["window"] or ""
    depts = sorted({i["dept"] for i in invitations if i["dept"] is not None})
    scopes = ["", f"w:{window}", *(f"d:{d}" for d in depts)]
    at = float(session["created_at"])
    day, hour = day_of(at), hour_of(at)
    ended = int(session["ended_at"] is not None)
    broken = int(session["end_reason"] in BROKEN_OFF)
    key = (window, session["matter"] or "")
    for scope in scopes:
        _add(out, "stats_sessions", (scope, day, *key), (1, ended, broken))
        _add(out, "stats_hours", (scope, hour), (1, 0, 0, 0))
    if session["duration_s"] is not None:
        for d in depts:
            ref = (f"d:{d}", "duration", session["session_id"])
            values[ref] = (window, float(session["duration_s"]), at)
    for i in invitations:
        at = float(i["created_at"])
        how = outcome(i["status"], i["unanswered_at"])
        dept = i["dept"] or ""
        what = (dept, i["level"] or "", how)
        hourly = (0, 1, int(how == "accepted"), int(how == "unanswered"))
        for scope in ("", f"w:{window}", *((f"d:{dept}",) if dept else ())):
            _add(out, "stats_invitations", (scope, day_of(at), *what), (1,))
            _add(out, "stats_hours", (scope, hour_of(at)), hourly)
        if dept and i["answer_s"] is not None and how in ANSWERED:
            ref = (f"w:{window}", "answer", i["invitation_id"])
            values[ref] = (dept, float(i["answer_s"]), at)
    for o in opinions:
        dept = o["author_dept"]
        if dept is None:
            continue
        at = float(o["created_at"])
        for scope in ("", f"w:{window}", f"d:{dept}"):
            _add(out, "stats_opinions", (scope, day_of(at), dept, o["decision"]), (1,))


def _rows_of(one: bool) -> sa.CompoundSelect:
    """A set of sessions' rows, invitations and opinions in one statement (one round trip
    where three cost three): each row tagged with its table, in like columns. ``one``:
    of one session (``= :ids``: an expanding ``IN`` is rendered again at each call, a
    third of a live transaction's reading)."""
    ids = sa.bindparam("ids", type_=s.ID, expanding=not one)
    text, time = (lambda: sa.cast(sa.null(), sa.Text)), (lambda: sa.cast(sa.null(), s.TIME))
    parts = []
    for tag, table, columns in (
        ("s", s.sessions, SESSION_COLS),
        ("i", s.invitations, INVITATION_COLS),
        ("o", s.opinions, OPINION_COLS),
    ):
        cols: list[Any] = [table.c[c] for c in columns]
        cols += [time() if k in (5, 6) else text() for k in range(len(cols), 8)]
        tagged = sa.select(sa.literal(tag, sa.String), *cols)
        of = table.c.session_id == ids if one else table.c.session_id.in_(ids)
        parts.append(tagged.where(of))
    return sa.union_all(*parts)


# Built once (a statement's cache key is computed once).
_ROWS, _ROWS_OF_ONE = _rows_of(False), _rows_of(True)
COLUMNS = {"s": SESSION_COLS, "i": INVITATION_COLS, "o": OPINION_COLS}


# A session's rows as read: its own, its invitations', its opinions' (sorted: comparable)
Rows = tuple[tuple[Any, ...], tuple[tuple[Any, ...], ...], tuple[tuple[Any, ...], ...]]


def rows_of(conn: sa.Connection, session_ids: Iterable[str]) -> dict[str, Rows]:
    """These sessions' rows (sessions without a row: absent), in one statement a 500."""
    out: dict[str, Rows] = {}
    ids = sorted(set(session_ids))
    for k in range(0, len(ids), 500):
        found: dict[str, dict[str, list[tuple[Any, ...]]]] = {"s": {}, "i": {}, "o": {}}
        part = ids[k : k + 500]
        stmt, params = (_ROWS_OF_ONE, part[0]) if len(part) == 1 else (_ROWS, part)
        for tag, *r in conn.execute(stmt, {"ids": params}):
            found[tag].setdefault(r[0], []).append(tuple(r[: len(COLUMNS[tag])]))
        for sid, (row,) in found["s"].items():
            invitations = tuple(sorted(found["i"].get(sid, ()), key=repr))
            out[sid] = (row, invitations, tuple(sorted(found["o"].get(sid, ()), key=repr)))
    return out


def counts_from(rows: Iterable[Rows]) -> tuple[Counts, Values]:
    """What sessions with these rows count and rank."""
    out: Counts = {}
    values: Values = {}
    for session, invitations, opinions in rows:
        contribution(
            out,
            values,
            dict(zip(SESSION_COLS, session, strict=True)),
            (dict(zip(INVITATION_COLS, i, strict=True)) for i in invitations),
            (dict(zip(OPINION_COLS, o, strict=True)) for o in opinions),
        )
    return out, values


def _difference(before: Counts, after: Counts) -> Counts:
    out: Counts = {}
    for key in before.keys() | after.keys():
        new, old = after.get(key), before.get(key)
        if new is None:
            assert old is not None
            delta = [-n for n in old]
        else:
            delta = [a - b for a, b in zip(new, old or [0] * len(new), strict=True)]
        if any(delta):
            out[key] = delta
    return out


def _columns(table: str) -> tuple[list[str], tuple[str, ...]]:
    """The key's columns and the counts' (stats_values: the other columns, no counts)."""
    keys = [c.name for c in s.TABLES[table].primary_key.columns]
    return keys, COUNT_COLUMNS.get(table, ())


def _names(table: str) -> tuple[str, ...]:
    return tuple(c.name for c in s.TABLES[table].columns)


def _pg_type(column: sa.Column[Any]) -> str:
    return {sa.Integer: "integer", sa.BigInteger: "bigint", sa.Double: "float8"}.get(
        type(column.type), "text"
    )


@functools.cache
def _upsert(table: str, dialect: str) -> sa.TextClause:
    """Add to rows' counts, or make them. SQLite: one row per parameter set (it runs in
    the process); PostgreSQL: every row in one statement, each column as an array
    (``unnest``: one round trip, where many parameter sets cost one each)."""
    keys, counts = _columns(table)
    names = _names(table)
    listed = ", ".join(f'"{c}"' for c in names)
    if dialect == "postgresql":
        t = s.TABLES[table]
        arrays = ", ".join(f"CAST(:{c} AS {_pg_type(t.c[c])}[])" for c in names)
        source = f"SELECT * FROM unnest({arrays})"
    else:
        source = "VALUES (" + ", ".join(f":{c}" for c in names) + ")"
    add = ", ".join(f'"{c}" = {table}."{c}" + excluded."{c}"' for c in counts)
    on = ", ".join(f'"{c}"' for c in keys)
    what = f"DO UPDATE SET {add}" if counts else "DO NOTHING"
    return sa.text(f"INSERT INTO {table} ({listed}) {source} ON CONFLICT ({on}) {what}")


def _write(conn: sa.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """``_upsert`` these rows: as parameter sets, or (PostgreSQL) as columns."""
    dialect = conn.dialect.name
    stmt = _upsert(table, dialect)
    if dialect == "postgresql":
        conn.execute(stmt, {c: [r[c] for r in rows] for c in _names(table)})
    else:
        conn.execute(stmt, rows)


_VALUE_KEY = [
    s.stats_values.c[c] == sa.bindparam(f"k_{c}", type_=s.stats_values.c[c].type)
    for c in ("scope", "measure", "ref")
]
_DROP_VALUE = sa.delete(s.stats_values).where(*_VALUE_KEY)


def apply_values(conn: sa.Connection, before: Values, after: Values) -> None:
    """Make ``stats_values`` hold ``after`` where it held ``before``."""
    gone = [k for k, v in before.items() if after.get(k) != v]
    new = [k for k, v in after.items() if before.get(k) != v]
    if gone:
        keys = [dict(zip(("k_scope", "k_measure", "k_ref"), k, strict=True)) for k in gone]
        conn.execute(_DROP_VALUE, keys)
    if new:
        names = ("scope", "measure", "ref", "grp", "value", "at")
        _write(conn, "stats_values", [dict(zip(names, (*k, *after[k]), strict=True)) for k in new])


def apply(conn: sa.Connection, delta: Counts) -> None:
    """Add these counts, one statement per table (many parameter sets)."""
    by_table: dict[str, list[Row]] = defaultdict(list)
    for (table, key), counts in sorted(delta.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        t = s.TABLES[table]
        names = [c.name for c in t.primary_key.columns]
        row = dict(zip(names, key, strict=True))
        row.update(zip(COUNT_COLUMNS[table], counts, strict=True))
        by_table[table].append(row)
    for table, rows in by_table.items():
        _write(conn, table, rows)


class Tally:
    """One write transaction's change to the counts: ``begin`` with the sessions its
    events touch (before their rows change), ``commit`` after."""

    def __init__(self, conn: sa.Connection, events: Iterable[Row], rows: set[str]) -> None:
        """``rows``: which sessions have their row already (the others count nothing
        yet: their counts before are not read)."""
        self.conn = conn
        self.sessions = sorted(
            {e["session_id"] for e in events if e["type"] in COUNTED and e["session_id"]}
        )
        had = [sid for sid in self.sessions if sid in rows]
        self.before = rows_of(conn, had) if had else {}

    def commit(self) -> None:
        if not self.sessions:
            return
        after = rows_of(self.conn, self.sessions)
        # Only the sessions whose rows changed (an event filed again changes none).
        changed = [sid for sid in self.sessions if self.before.get(sid) != after.get(sid)]
        if not changed:
            return
        old = counts_from(self.before[sid] for sid in changed if sid in self.before)
        new = counts_from(after[sid] for sid in changed if sid in after)
        apply(self.conn, _difference(old[0], new[0]))
        apply_values(self.conn, old[1], new[1])


def _all_sessions(conn: sa.Connection, chunk: int) -> Iterator[list[str]]:
    t = s.sessions.c
    last = ""
    while True:
        stmt = sa.select(t.session_id).where(t.session_id > last).order_by(t.session_id)
        ids = list(conn.execute(stmt.limit(chunk)).scalars())
        if not ids:
            return
        yield ids
        last = ids[-1]


def rebuild(conn: sa.Connection, chunk: int = 5000) -> None:
    """The counts made again from the rows (in the caller's transaction)."""
    for table in (*COUNT_COLUMNS, "stats_values"):
        conn.execute(sa.delete(s.TABLES[table]))
    total: Counts = {}
    for ids in _all_sessions(conn, chunk):
        counts, values = counts_from(rows_of(conn, ids).values())
        for key, n in counts.items():
            _add(total, key[0], key[1], n)
        apply_values(conn, {}, values)
    apply(conn, total)
