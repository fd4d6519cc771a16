"""``jointreview bench stats``: the supervisors' statistics and exceptions over a year.

For SQLite (a temporary directory) and, given ``--postgres-url`` (an empty database),
PostgreSQL:

1. **the cost per filed event**: a sample of the year (``--sample`` sessions) is filed
   twice, chunk by chunk alternately (the machine is shared and noisy), into two fresh
   databases: the baseline without what supervision adds to the write path (its indexes
   dropped, nothing raised, no counts kept) and this version's (the indexes, exceptions
   raised and the statistics' counts kept in the write transaction). Batched
   (``record_many``) and live (``record``, one event at a time, ``LIVE_CONCURRENCY``
   sessions at once). The added cost is the difference;
2. **a year of history**: ``--sessions`` sessions (``bench.history_data``, plus now and
   then a session everyone left, ended by the sweeper, and a failed recording) through
   the writer's own transaction (``Writer.apply``, as ``record_many`` files, in
   transactions of ``CHUNK`` events; SQLite without fsync and with a large page cache:
   a throwaway database; the rows are the same), exceptions raised and counts kept as
   they are filed. With ``--keep`` the year is kept (SQLite: in that directory;
   PostgreSQL: in ``--postgres-url``'s database) and later runs query it again;
3. **the queries**, each ``--queries`` times: ``GET /api/stats``'s work (the record's
   queries and the response model) over the whole year, the year for one department,
   the year for one window, a random month; ``GET /api/exceptions`` pages: the first,
   one deep in the list (by its cursor), one kind of one department, the open ones.

Reported: p50/p95 of each query against the target (p95 ≤ 300 ms), the added µs per
event against the target (≤ 50 µs), the exceptions raised by kind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .history_data import DAY, WINDOWS, YEAR_START, Year

QUERY_P95_MS = 300.0
ADDED_US = 50.0
CHUNK = 20_000  # events per record_many call while filling the year
SAMPLE_CHUNK = 2_000  # events per alternating turn of the cost measurement
LIVE_CONCURRENCY = 32
# What supervision adds to the write path besides raising and the counts (``tally``):
# the indexes of the percentiles (revision 0002) and of a period's edges (0003).
SUPERVISION_INDEXES = (
    "ix_sessions_duration",
    "ix_sessions_window_duration",
    "ix_invitations_answer",
    "ix_opinions_period",
)


def add_parser(targets: Any) -> None:
    p = targets.add_parser(
        "stats", help="statistics and exceptions over a year: query p95, cost per event"
    )
    p.add_argument("--sessions", type=int, default=100_000, help="sessions over the year")
    p.add_argument(
        "--postgres-url",
        default="",
        help="an empty PostgreSQL database (postgresql+asyncpg://...) to fill as well; "
        "its name + '_base' is created beside it for the baseline if it can be",
    )
    p.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help="which to fill (postgresql only with --postgres-url)",
    )
    p.add_argument("--sample", type=int, default=1000, help="sessions of the cost measurement")
    p.add_argument("--queries", type=int, default=20, help="calls of each query")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--keep",
        default="",
        help="a directory for SQLite's year: filled once, kept, and queried again by "
        "later runs (migrated to the current schema first); PostgreSQL's year is kept "
        "in --postgres-url's database alike",
    )
    p.add_argument("--no-cost", action="store_true", help="skip the cost per filed event")
    p.add_argument("--json", action="store_true", help="a JSON summary as stdout's last line")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def supervised(cases: Iterator[tuple[str, list[dict[str, Any]]]]) -> Iterator[list[Any]]:
    """The year's cases with what supervision looks for now and then: one session in 25
    ended by the sweeper after everyone left (``idle``), one in 50 with a failed track
    (its first chat message becomes ``recording.failed``)."""
    n = 0
    failed = True
    for _, events in cases:
        for e in events:
            if e["type"] == "session.created":
                n += 1
                failed = n % 50 != 1
            if e["type"] == "session.ended" and n % 25 == 0:
                e["actor"], e["data"] = None, {"reason": "idle"}
            if e["type"] == "chat.message" and not failed:
                failed = True
                e["type"] = "recording.failed"
                e["data"] = {"code": "disk_full", "track_id": "t1", "file": "t1.webm"}
                e["data"]["message"] = "No space left on device"
        yield events


async def _fresh(url: str, baseline: bool = False) -> Any:
    """A migrated, empty record; ``baseline``: without what supervision adds to the write
    path (its indexes dropped, nothing raised; the two time columns stay, a subtraction)."""
    import sqlalchemy as sa

    from signaling.history import migrate
    from signaling.history.raising import Rules
    from signaling.history.repo import History

    await migrate.upgrade(url)
    history = await History.open(url, Rules(enabled=not baseline))
    if baseline:
        async with history.engine.begin() as conn:
            for name in SUPERVISION_INDEXES:
                await conn.execute(sa.text(f"DROP INDEX {name}"))
    if await _any_event(history):
        await history.close()
        raise SystemExit(f"bench stats: {url} is not empty: give it an empty database")
    return history


async def _any_event(history: Any) -> bool:
    import sqlalchemy as sa

    from signaling.history import schema as s

    async with history.engine.connect() as conn:
        return (await conn.scalar(sa.select(s.events.c.seq).limit(1))) is not None


async def cost(base_url: str, url: str, sample: int, seed: int, say: Any) -> dict[str, Any]:
    """µs per event, the baseline against supervision, alternately."""
    base, new = await _fresh(base_url, baseline=True), await _fresh(url)
    cases = list(supervised(Year(sample, seed + 7).cases()))
    events = [e for c in cases for e in c]
    times: dict[str, list[float]] = {"base": [], "new": []}
    # This process's CPU time too (every thread: SQLite's writer has its own): steadier
    # than the wall clock on a shared machine, but without PostgreSQL's server.
    cpu: dict[str, list[float]] = {"base": [], "new": []}
    try:
        for i in range(0, len(events), SAMPLE_CHUNK):
            part = events[i : i + SAMPLE_CHUNK]
            turns = [("base", base), ("new", new)]
            for name, h in turns if (i // SAMPLE_CHUNK) % 2 == 0 else turns[::-1]:
                t0, c0 = time.perf_counter(), time.process_time()
                await h.record_many(part)
                times[name].append((time.perf_counter() - t0) / len(part) * 1e6)
                cpu[name].append((time.process_time() - c0) / len(part) * 1e6)
        live = {"base": 0.0, "new": 0.0}
        live_cases = cases[: LIVE_CONCURRENCY * 2]
        for name, h in (("base", base), ("new", new), ("new", new), ("base", base)):
            t0 = time.perf_counter()
            await _live(h, live_cases)
            n = sum(len(c) for c in live_cases)
            live[name] += (time.perf_counter() - t0) / n * 1e6 / 2
    finally:
        await base.close()
        await new.close()
    batched = {k: round(statistics.median(v), 1) for k, v in times.items()}
    batched_cpu = {k: round(statistics.median(v), 1) for k, v in cpu.items()}
    say(
        f"  cost per event, batched: {batched['base']} µs -> {batched['new']} µs "
        f"(this process's CPU: {batched_cpu['base']} -> {batched_cpu['new']} µs)"
    )
    return {
        "events": len(events),
        "batched_us": batched,
        "batched_added_us": round(batched["new"] - batched["base"], 1),
        "batched_cpu_us": batched_cpu,
        "batched_cpu_added_us": round(batched_cpu["new"] - batched_cpu["base"], 1),
        "live_us": {k: round(v, 1) for k, v in live.items()},
        "live_added_us": round(live["new"] - live["base"], 1),
    }


async def _live(history: Any, cases: list[list[dict[str, Any]]]) -> None:
    """Each case's events one by one, the cases at once (a node's live sessions). Filed
    again (the second round) they are all known already: idempotent, same statements."""

    async def one(events: list[dict[str, Any]]) -> None:
        for event in events:
            await history.record(dict(event, seq=event["seq"] + 1_000_000))

    for k in range(0, len(cases), LIVE_CONCURRENCY):
        await asyncio.gather(*(one(c) for c in cases[k : k + LIVE_CONCURRENCY]))


def _throwaway(history: Any) -> None:
    """SQLite's writer set up for a database that is filled once and thrown away: no
    fsync, a large page cache (the indexes of 4 M events do not fit the default 2 MB, and
    every insert then reads pages back from the file). The rows are the same."""
    import sqlalchemy as sa

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in ("synchronous=OFF", "cache_size=-1500000", "temp_store=MEMORY"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    writer = history._writer
    if writer._sync is not None:
        sa.event.listen(writer._sync, "connect", pragmas)


async def fill(url: str, sessions: int, seed: int) -> tuple[Any, float, int]:
    import sqlalchemy as sa
    from tqdm import tqdm

    from signaling.history.projection import project

    history = await _fresh(url)
    _throwaway(history)
    bar = tqdm(total=sessions, unit="session", desc="filing", file=sys.stderr)
    chunk: list[dict[str, Any]] = []
    spent, filed = 0.0, 0

    async def flush() -> None:
        nonlocal spent, filed, chunk
        t0 = time.perf_counter()
        # The writer's own transaction, a chunk at a time (record_many's are 1,000 events).
        await history._writer.apply([project(e) for e in chunk])
        spent += time.perf_counter() - t0
        filed += len(chunk)
        bar.update(len({e["session_id"] for e in chunk if e["type"] == "session.created"}))
        chunk = []

    for events in supervised(Year(sessions, seed).cases()):
        chunk += events
        if len(chunk) >= CHUNK:
            await flush()
    if chunk:
        await flush()
    bar.close()
    if history.kind == "postgresql":
        # What autovacuum does on a server after such growth (the test cluster runs
        # without it): statistics for the planner, the visibility map for index-only scans.
        async with history.engine.connect() as conn:  # outside a transaction, as it must
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(sa.text("VACUUM ANALYZE"))
    return history, spent, filed


async def _timed(calls: int, call: Callable[[random.Random], Awaitable[int]]) -> dict[str, Any]:
    rng = random.Random(calls)
    times: list[float] = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await call(rng)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "calls": calls,
        "p50_ms": round(_pct(times, 0.5), 1),
        "p95_ms": round(_pct(times, 0.95), 1),
    }


async def queries(history: Any, calls: int, say: Any) -> dict[str, Any]:
    from signaling.api_supervision import Statistics
    from signaling.directory import load_directory
    from signaling.history.stats import Filter, Stats
    from signaling.supervision import Supervision

    supervision = Supervision.__new__(Supervision)  # the handler's work, without a service
    supervision.stats, supervision.directory = Stats(history.engine), load_directory(None)
    stats = supervision.stats
    tz = ZoneInfo("Asia/Shanghai")
    depts = [d.id for d in supervision.directory.departments]
    year = (YEAR_START, YEAR_START + 365 * DAY)

    async def answer(f: Filter) -> int:
        body = Statistics.model_validate(await supervision.statistics(f, tz))
        return len(body.model_dump_json())

    async def month(rng: random.Random) -> int:
        since = YEAR_START + rng.uniform(0, 335) * DAY
        return await answer(Filter(since, since + 30 * DAY))

    deep: dict[str, Any] = {}

    async def exc_first(rng: random.Random) -> int:
        rows, deep["cursor"] = await stats.exceptions(None, None, None, None, None, None, 50)
        return len(rows)

    async def exc_deep(rng: random.Random) -> int:
        cursor = deep.get("cursor")
        for _ in range(rng.randint(1, 20)):  # 50-1,000 rows in
            rows, cursor = await stats.exceptions(None, None, None, None, None, cursor, 50)
        return len(rows)

    async def exc_kind_dept(rng: random.Random) -> int:
        kind = rng.choice(("invitation_declined", "long_wait", "invitation_unanswered"))
        args = (*year, kind, None, rng.choice(depts), None, 50)
        return len((await stats.exceptions(*args))[0])

    async def exc_open(rng: random.Random) -> int:
        since = YEAR_START + rng.uniform(0, 335) * DAY
        args = (since, since + 30 * DAY, None, "open", None, None, 50)
        return len((await stats.exceptions(*args))[0])

    out: dict[str, Any] = {}
    plan: list[tuple[str, Callable[[random.Random], Awaitable[int]]]] = [
        ("stats_year", lambda rng: answer(Filter(*year))),
        ("stats_year_dept", lambda rng: answer(Filter(*year, dept=rng.choice(depts)))),
        ("stats_year_window", lambda rng: answer(Filter(*year, window=rng.choice(WINDOWS)))),
        ("stats_month", month),
        ("exceptions_first_page", exc_first),
        ("exceptions_deep_page", exc_deep),
        ("exceptions_kind_dept_year", exc_kind_dept),
        ("exceptions_open_month", exc_open),
    ]
    for name, call in plan:
        out[name] = await _timed(calls, call)
        say(f"  {name}: p50 {out[name]['p50_ms']} ms, p95 {out[name]['p95_ms']} ms")
    return out


async def run(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    from signaling.history.db import default_url

    out: dict[str, Any] = {"sessions": args.sessions, "seed": args.seed, "databases": {}}
    with tempfile.TemporaryDirectory(prefix="jr-bench-stats-") as tmp:
        for d in ("year", "cost", "base"):
            (Path(tmp) / d).mkdir()
        # (database, the year's url, the cost's url, its baseline's url)
        sqlite = [default_url(Path(tmp) / d) for d in ("year", "cost", "base")]
        if args.keep:
            sqlite[0] = default_url(Path(args.keep))
        wanted = set(args.databases.split(","))
        targets = [("sqlite", *sqlite)] if "sqlite" in wanted else []
        if args.postgres_url and "postgresql" in wanted:
            targets.append(("postgresql", args.postgres_url, *await _pg_more(args.postgres_url)))
        for kind, url, cost_url, base_url in targets:
            per_event: dict[str, Any] = {"batched_added_us": float("nan")}
            if not args.no_cost:
                say(f"{kind}: the cost per filed event ({args.sample} sessions, each way)")
                per_event = await cost(base_url, cost_url, args.sample, args.seed, say)
            kept = await _kept(url) if args.keep else None
            if kept is not None:
                say(f"{kind}: the year kept in {args.keep} ({kept[2]} events)")
                history, spent, filed = kept
            else:
                say(f"{kind}: filing a year of {args.sessions} sessions")
                history, spent, filed = await fill(url, args.sessions, args.seed)
            try:
                raised = await _raised(history)
                say(f"  {filed} events at {spent / filed * 1e6:.0f} µs each; exceptions {raised}")
                found = await queries(history, args.queries, say)
            finally:
                await history.close()
            out["databases"][kind] = _summary(per_event, filed, spent, raised, found)
    return out


async def _kept(url: str) -> tuple[Any, float, int] | None:
    """A year filed by an earlier run (``--keep``), migrated to this schema; None if empty."""
    import sqlalchemy as sa

    from signaling.history import migrate
    from signaling.history import schema as s
    from signaling.history.repo import History

    await migrate.upgrade(url)
    history = await History.open(url)
    if not await _any_event(history):
        await history.close()
        return None
    async with history.engine.connect() as conn:
        filed = int(await conn.scalar(sa.select(sa.func.count()).select_from(s.events)) or 0)
    return history, 0.0, filed


async def _pg_more(url: str) -> tuple[str, str]:
    """Beside the given (empty) database, two more for the cost's measurement."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    made = sa.make_url(url)
    names = [f"{made.database}_{k}" for k in ("cost", "base")]
    admin = create_async_engine(made.set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        for name in names:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    cost_url, base_url = (made.set(database=n).render_as_string(hide_password=False) for n in names)
    return cost_url, base_url


async def _raised(history: Any) -> dict[str, int]:
    import sqlalchemy as sa

    from signaling.history import schema as s

    x = s.exceptions.c
    stmt = sa.select(x.kind, sa.func.count()).group_by(x.kind)
    async with history.engine.connect() as conn:
        return {k: int(n) for k, n in await conn.execute(stmt)}


def _target(value: float, limit: float) -> dict[str, Any]:
    return {"value": value, "target": limit, "met": value <= limit}


def _summary(per_event: Any, filed: int, spent: float, raised: Any, found: Any) -> Any:
    targets = {f"{k}_p95_ms": _target(v["p95_ms"], QUERY_P95_MS) for k, v in found.items()}
    targets["added_us_per_event_batched"] = _target(per_event["batched_added_us"], ADDED_US)
    return {
        "cost": per_event,
        "year": {"events": filed, "us_per_event": round(spent / max(1, filed) * 1e6, 1)},
        "exceptions": raised,
        "queries": found,
        "targets": targets,
    }


def main(args: argparse.Namespace) -> int:
    import os

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    if args.sessions < 1 or args.sample < 1:
        say("bench stats: --sessions and --sample are at least 1")
        return 2
    result = asyncio.run(run(args, say))
    result["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    for kind, r in result["databases"].items():
        missed = [k for k, t in r["targets"].items() if not t["met"]]
        say(f"{kind}: targets {'all met' if not missed else 'NOT MET: ' + ', '.join(missed)}")
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    return 0
