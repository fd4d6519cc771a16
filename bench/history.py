"""``jointreview bench history``: what a year of history costs the record and the node.

A fresh database (SQLite in a temporary directory, or the empty PostgreSQL database of
``--database-url``) is migrated, then filled with ``--sessions`` realistic sessions
(``bench.history_data``) through ``History.record_many`` (the batched path), except a
sample of sessions that are filed event by event with ``History.record`` from many
concurrent tasks, as a live node files them. Reported, each beside the target of issue
#12: the insert cost per event (batched, live), the process's RSS before and after
filling (the record is not in RAM: flat), p50/p95 of the supervisors' queries over
random cases, sessions, departments and windows, and the restart time (the start check,
opening the record and its first query) filled against empty.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .history_data import DAY, WINDOWS, YEAR_START, Year

INSERT_US = 200.0  # µs per event on SQLite
QUERY_P95_MS = 50.0
RESTART_S = 2.0
RSS_GROWTH_MB = 50.0
CHUNK = 20_000  # events generated, then filed: generation is not timed, memory bounded
LIVE_CONCURRENCY = 32  # sessions filed at once by record() (each in its own order)


def add_parser(targets: Any) -> None:
    p = targets.add_parser(
        "history", help="the record (SQL): insert cost, query p95, restart time, node RSS"
    )
    p.add_argument("--sessions", type=int, default=100_000, help="sessions over the year")
    p.add_argument(
        "--database-url",
        default="",
        help="an empty PostgreSQL database (postgresql+asyncpg://...); default: SQLite in a "
        "temporary directory",
    )
    p.add_argument("--queries", type=int, default=300, help="random calls per query")
    p.add_argument("--live", type=int, default=0, help="sessions filed by record() (default 2%%)")
    p.add_argument(
        "--only-live",
        action="store_true",
        help="file every session by record(), none batched: the live figure alone, quicker",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="a JSON summary as stdout's last line")


def rss_mb() -> float:
    """This process's resident set (MB), from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def restart_s(url: str) -> float:
    """A node's start against the record: the schema check, opening it, a first page."""
    from signaling.history import migrate
    from signaling.history.repo import History

    t0 = time.perf_counter()
    await migrate.check(url)
    history = await History.open(url)
    try:
        await history.sessions(limit=50)
        return time.perf_counter() - t0
    finally:
        await history.close()


async def _restart(url: str, runs: int = 3) -> float:
    return statistics.median([await restart_s(url) for _ in range(runs)])


class _Fill:
    """Files the year: most sessions batched, a sample live; keeps what queries pick."""

    def __init__(self, history: Any, year: Year, live: int, bar: Any) -> None:
        self.history = history
        self.year = year
        # Every n-th case is filed live: about ``live`` sessions
        self.live_every = max(1, round(year.sessions / live)) if live else 0
        self.bar = bar
        self.batched_s = self.live_s = 0.0
        self.batched_events = self.live_events = self.live_sessions = self.new = 0
        self.live_latency_ms: list[float] = []
        self.cases = 0
        self.rss_quarters: list[float] = []
        self.picks: list[tuple[str, str]] = []  # (case, session): a reservoir for queries
        self._seen = 0
        self._rng = random.Random(year.seed + 1)

    def _keep(self, case_id: str, session_id: str) -> None:
        self._seen += 1
        if len(self.picks) < 2000:
            self.picks.append((case_id, session_id))
        elif (j := self._rng.randrange(self._seen)) < 2000:
            self.picks[j] = (case_id, session_id)

    async def run(self) -> None:
        chunk: list[dict[str, Any]] = []
        live: list[list[dict[str, Any]]] = []
        sessions = 0
        for case_id, events in self.year.cases():
            self.cases += 1
            sids = list(dict.fromkeys(e["session_id"] for e in events))
            for sid in sids:
                self._keep(case_id, sid)
            if self.live_every and self.cases % self.live_every == 0:
                live.append(events)
            else:
                chunk += events
                sessions += len(sids)
            if len(chunk) >= CHUNK:
                await self._batched(chunk, sessions)
                chunk, sessions = [], 0
            if len(live) >= LIVE_CONCURRENCY:
                await self._live(live)
                live = []
        if chunk:
            await self._batched(chunk, sessions)
        if live:
            await self._live(live)

    async def _batched(self, events: list[dict[str, Any]], sessions: int) -> None:
        t0 = time.perf_counter()
        self.new += await self.history.record_many(events)
        self.batched_s += time.perf_counter() - t0
        self.batched_events += len(events)
        self.bar.update(sessions)
        self._rss()

    def _rss(self) -> None:
        """RSS when each quarter of the year is filed: flat, not growing with it."""
        now = round(rss_mb(), 1)
        while self.bar.n >= (len(self.rss_quarters) + 1) * self.year.sessions / 4:
            self.rss_quarters.append(now)

    async def _live(self, cases: list[list[dict[str, Any]]]) -> None:
        """Each case's events in order, the cases at once: the node's many sessions."""

        async def one(events: list[dict[str, Any]]) -> None:
            for event in events:
                t = time.perf_counter()
                await self.history.record(event)
                self.live_latency_ms.append((time.perf_counter() - t) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(events) for events in cases))
        self.live_s += time.perf_counter() - t0
        n = sum(len(events) for events in cases)
        self.live_events += n
        self.new += n
        sessions = len({e["session_id"] for events in cases for e in events})
        self.live_sessions += sessions
        self.bar.update(sessions)
        self._rss()


async def _timed(calls: int, call: Callable[[random.Random], Awaitable[Any]]) -> dict[str, Any]:
    rng = random.Random(calls)
    times: list[float] = []
    rows = 0
    for _ in range(calls):
        t0 = time.perf_counter()
        rows += await call(rng)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "calls": calls,
        "rows": rows,
        "p50_ms": round(_pct(times, 0.50), 3),
        "p95_ms": round(_pct(times, 0.95), 3),
    }


async def _queries(history: Any, picks: list[tuple[str, str]], calls: int) -> dict[str, Any]:
    """p50/p95 of the supervisors' queries, each over random cases, depts, windows."""
    depts = [d for d, _ in Year(1).depts]

    async def case_view(rng: random.Random) -> int:
        case_id, _ = rng.choice(picks)
        events = await history.case_events(case_id, limit=100)
        sessions = await history.sessions(case_id=case_id, limit=20)
        return len(events.items) + len(sessions.items)

    async def timeline(rng: random.Random) -> int:
        case_id, session_id = rng.choice(picks)
        page = await history.case_events(case_id, session_id=session_id, limit=200)
        return len(page.items)

    async def dept_month(rng: random.Random) -> int:
        since = YEAR_START + rng.uniform(0, 335) * DAY
        until = since + 30 * DAY
        page = await history.invitations(dept=rng.choice(depts), since=since, until=until)
        return len(page.items)

    async def window_week(rng: random.Random) -> int:
        since = YEAR_START + rng.uniform(0, 358) * DAY
        until = since + 7 * DAY
        page = await history.sessions(window=rng.choice(WINDOWS), since=since, until=until)
        return len(page.items)

    return {
        "case_view": await _timed(calls, case_view),
        "session_timeline": await _timed(calls, timeline),
        "dept_invitations_month": await _timed(calls, dept_month),
        "window_sessions_week": await _timed(calls, window_week),
    }


def _target(value: float, limit: float | None) -> dict[str, Any]:
    met = None if limit is None else value <= limit
    return {"value": value, "target": limit, "met": met}


def _db_bytes(url: str) -> int | None:
    from sqlalchemy import make_url

    database = make_url(url).database or ""
    if not url.startswith("sqlite"):
        return None
    return sum(os.path.getsize(p) for p in (database, database + "-wal") if os.path.exists(p))


async def bench(args: argparse.Namespace, url: str) -> dict[str, Any]:
    from tqdm import tqdm

    from signaling.history import migrate
    from signaling.history.repo import History

    kind = "sqlite" if url.startswith("sqlite") else "postgresql"
    await migrate.upgrade(url)
    history = await History.open(url)
    if (await history.counts())["events"]:
        await history.close()
        raise SystemExit(f"bench history: {url} is not empty: give it an empty database")
    await history.close()
    restart_empty = await _restart(url)
    gc.collect()
    rss_before = rss_mb()

    year = Year(args.sessions, args.seed)
    # 2% of the year (at least one round of concurrent sessions, at most a quarter)
    live = args.live or min(max(LIVE_CONCURRENCY, args.sessions // 50), args.sessions // 4)
    if args.only_live:
        live = args.sessions
    history = await History.open(url)
    bar = tqdm(total=args.sessions, unit="session", desc="filing", file=sys.stderr)
    fill = _Fill(history, year, live, bar)
    try:
        await fill.run()
        bar.close()
        counts = await history.counts()
        queries = await _queries(history, fill.picks, args.queries)
    finally:
        await history.close()
    del fill.picks[:]
    gc.collect()
    rss_after = rss_mb()
    restart_filled = await _restart(url)

    events = fill.batched_events + fill.live_events
    batched_us = round(fill.batched_s / max(1, fill.batched_events) * 1e6, 1)
    live_us = round(fill.live_s / max(1, fill.live_events) * 1e6, 1)
    insert_limit = INSERT_US if kind == "sqlite" else None
    targets = {
        "insert_us_per_event_live": _target(live_us, insert_limit),
        "rss_growth_mb": _target(round(rss_after - rss_before, 1), RSS_GROWTH_MB),
        "restart_s": _target(round(restart_filled, 3), RESTART_S),
    }
    for name, q in queries.items():
        targets[f"{name}_p95_ms"] = _target(q["p95_ms"], QUERY_P95_MS)
    if fill.batched_events:  # none with --only-live
        targets["insert_us_per_event_batched"] = _target(batched_us, insert_limit)
    return {
        "database": kind,
        "seed": args.seed,
        "sessions": args.sessions,
        "cases": fill.cases,
        "events": events,
        "events_new": fill.new,
        "filed": counts,
        "batched": {"events": fill.batched_events, "seconds": round(fill.batched_s, 2)},
        "live": {
            "sessions": fill.live_sessions,
            "events": fill.live_events,
            "seconds": round(fill.live_s, 2),
            "concurrency": LIVE_CONCURRENCY,
            "record_ms_p50": round(_pct(fill.live_latency_ms or [0.0], 0.5), 3),
            "record_ms_p95": round(_pct(fill.live_latency_ms or [0.0], 0.95), 3),
        },
        "insert_us_per_event_batched": batched_us if fill.batched_events else None,
        "insert_us_per_event_live": live_us,
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "rss_mb_quarters": fill.rss_quarters,  # when 1/4, 2/4, 3/4, all of it was filed
        "queries": queries,
        "restart_s_empty": round(restart_empty, 3),
        "restart_s_filled": round(restart_filled, 3),
        "db_bytes": _db_bytes(url),
        "targets": targets,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def _report(r: dict[str, Any], say: Callable[[str], None]) -> None:
    def mark(name: str) -> str:
        t = r["targets"][name]
        if t["met"] is None:
            return "(no target)"
        return f"(target <= {t['target']:g}: {'met' if t['met'] else 'NOT MET'})"

    say(
        f"{r['database']}: {r['sessions']} sessions in {r['cases']} cases, {r['events']} "
        f"events filed (record: {r['filed']['sessions']} sessions, {r['filed']['events']} events)"
    )
    if r["insert_us_per_event_batched"] is not None:
        say(
            f"insert, batched: {r['insert_us_per_event_batched']} µs/event "
            + mark("insert_us_per_event_batched")
        )
    live = r["live"]
    say(
        f"insert, live (record(), {live['concurrency']} sessions at once): "
        f"{r['insert_us_per_event_live']} µs/event, a call p50 {live['record_ms_p50']} ms "
        f"p95 {live['record_ms_p95']} ms " + mark("insert_us_per_event_live")
    )
    say(
        f"RSS: {r['rss_mb_before']} MB before filling, {r['rss_mb_after']} MB after: "
        f"{r['rss_growth_mb']:+} MB " + mark("rss_growth_mb") + "; as each quarter "
        f"of the year was filed: {r['rss_mb_quarters']} MB"
    )
    for name, q in r["queries"].items():
        say(f"{name}: p50 {q['p50_ms']} ms, p95 {q['p95_ms']} ms " + mark(f"{name}_p95_ms"))
    say(
        f"restart: {r['restart_s_filled']} s filled, {r['restart_s_empty']} s empty "
        + mark("restart_s")
    )
    if r["db_bytes"]:
        say(f"database file: {r['db_bytes'] / 2**20:.0f} MB")


def main(args: argparse.Namespace) -> int:
    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    if args.sessions < 1:
        say("bench history: --sessions must be at least 1")
        return 2
    from signaling.history.db import default_url, kind_of

    with tempfile.TemporaryDirectory(prefix="jr-bench-history-") as tmp:
        url = args.database_url or default_url(Path(tmp))
        kind_of(url)  # refuses any other driver
        result = asyncio.run(bench(args, url))
    _report(result, say)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    return 0
