"""The statistics' counts kept as events are filed (signaling/history/tally.py) are the
rows' own: whatever the order the events come in, late, twice, in batches of any size,
they equal the counts made again from the rows (``tally.rebuild``) and the counts that
``stats.Stats`` reads from the rows themselves; SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from bench.history_data import DAY, WINDOWS, YEAR_START, Year
from bench.stats import supervised
from signaling.history import migrate, tally
from signaling.history import schema as s
from signaling.history.db import default_url
from signaling.history.raising import Rules
from signaling.history.repo import History
from signaling.history.stats import Filter, Stats, _day_bounds

TABLES = ("stats_sessions", "stats_invitations", "stats_opinions", "stats_hours", "stats_values")


@pytest.fixture(params=["sqlite", "postgres"])
async def history(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[History]:
    if request.param == "sqlite":
        url = default_url(tmp_path)
    else:
        url = str(request.getfixturevalue("fresh_postgres_url"))
    await migrate.upgrade(url)
    h = await History.open(url)
    yield h
    await h.close()


async def _tables(history: History) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of the tally (rows whose counts went back to 0 are no count)."""
    out: dict[str, set[tuple[Any, ...]]] = {}
    async with history.engine.connect() as conn:
        for name in TABLES:
            rows = await conn.execute(sa.select(s.TABLES[name]))
            counts = tally.COUNT_COLUMNS.get(name, ())
            out[name] = {tuple(r) for r in rows if not counts or any(r._mapping[c] for c in counts)}
    return out


def _sorted(rows: list[Any]) -> list[tuple[Any, ...]]:
    """Rows of counts, each (key..., n) summed by key and sorted."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for r in rows:
        *key, n = tuple(r)
        out.setdefault(tuple(key), [0])[0] += n
    return sorted((*k, v[0]) for k, v in out.items() if v[0])


async def test_counts_kept_as_filed_are_the_rows_counts(history: History) -> None:
    events = [e for case in supervised(Year(40, seed=3).cases()) for e in case]
    rng = random.Random(5)
    rng.shuffle(events)  # sessions' events late, before their session.created, ...
    start = 0
    while start < len(events):  # transactions of 1 to 300 events
        size = rng.choice((1, 7, 60, 300))
        await history.record_many(events[start : start + size])
        start += size
    await history.record_many(rng.sample(events, 200))  # again: changes nothing
    kept = await _tables(history)
    assert kept["stats_sessions"] and kept["stats_values"]

    async with history.engine.begin() as conn:
        await conn.run_sync(tally.rebuild)
    assert await _tables(history) == kept

    stats = Stats(history.engine)
    year = (YEAR_START - DAY, YEAR_START + 366 * DAY)
    # whole days and edges of an odd period; a department's share; a window's share
    for f in (
        Filter(YEAR_START + 0.3 * DAY, YEAR_START + 200.7 * DAY),
        Filter(*year, dept="city-tax"),
        Filter(*year, window=WINDOWS[1]),
    ):
        sessions, invitations, opinions = await stats._counts(f)
        raw = [
            (r.window, r.matter, r.total, r.ended, r.broken_off)
            for r in await stats._session_counts(f)
        ]
        mine = [(r.window, r.matter, r.total, r.ended, r.broken_off) for r in sessions]
        assert sorted(mine) == sorted(raw)
        # (the rows' pending and ringing are the tally's "open": in the totals only)
        raw_invitations = [
            (d, lv, "open" if o in ("pending", "ringing") else o, n)
            for d, lv, o, n in await stats._invitation_counts(f)
        ]
        assert _sorted(invitations) == _sorted(raw_invitations)
        raw_opinions = [(r.author_dept, r.decision, r.n) for r in await stats._opinions(f)]
        assert _sorted([(r.author_dept, r.decision, r.n) for r in opinions]) == _sorted(
            raw_opinions
        )
        # by_day: hours from the tally (summed by day in SQL, or hour by hour across a
        # change of offset), edges from the rows; against the rows alone
        for tz in (ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Berlin")):
            raw_days = await stats._days_filtered(f, _day_bounds(f, tz))
            days = await stats._days(f, tz)
            assert [{k: v for k, v in d.items() if k != "date"} for d in days] == [
                {"sessions": 0, "invitations": 0, "accepted": 0, "unanswered": 0}
                | raw_days.get(k, {})
                for k in range(len(days))
            ]


async def test_the_migration_fills_the_counts_of_the_rows_already_there(tmp_path: Path) -> None:
    """A record filed before revision 0003 (no counts kept) gets, upgraded, the counts
    that filing the same events at this revision keeps."""
    events = [e for case in supervised(Year(15, seed=4).cases()) for e in case]
    urls = [default_url(tmp_path / "old"), default_url(tmp_path / "new")]
    tables = []
    for url, at in zip(urls, ("0002", "head"), strict=True):
        await migrate.upgrade(url, target=at)
        h = await History.open(url, Rules(enabled=at == "head"))
        await h.record_many(events)
        await h.close()
        await migrate.upgrade(url)
        h = await History.open(url)
        tables.append(await _tables(h))
        await h.close()
    assert tables[0] == tables[1]
    assert tables[1]["stats_sessions"]


async def test_the_bench_fast_fill_files_what_the_record_path_files(tmp_path: Path) -> None:
    """``bench stats`` fills its year through the writer in 20,000-event transactions,
    with a throwaway database's pragmas: every table as ``record_many`` leaves it."""
    from bench.stats import fill

    fast_url, slow_url = default_url(tmp_path / "fast"), default_url(tmp_path / "slow")
    fast, _, filed = await fill(fast_url, 30, seed=6)
    await fast.close()
    await migrate.upgrade(slow_url)
    slow = await History.open(slow_url)
    assert (
        await slow.record_many(e for case in supervised(Year(30, seed=6).cases()) for e in case)
        == filed
    )
    await slow.close()
    dumps = []
    for url in (fast_url, slow_url):
        h = await History.open(url)
        async with h.engine.connect() as conn:
            dumps.append(
                {
                    name: sorted(map(tuple, await conn.execute(sa.select(t))), key=repr)
                    for name, t in s.TABLES.items()
                }
            )
        await h.close()
    assert dumps[0] == dumps[1]
    assert dumps[0]["events"] and dumps[0]["stats_sessions"] and dumps[0]["exceptions"]
