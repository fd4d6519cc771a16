"""The record's catch-up (``signaling.history.catchup``) on SQLite and PostgreSQL: a case
marked behind is copied from the store's log into the record, once, and its mark
dropped. (The outage itself, with real processes: tests/test_record_durability.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.core import append_event
from signaling.history import db, migrate
from signaling.history.catchup import BEHIND, CatchUp
from signaling.history.repo import History
from signaling.state import MemoryStore, Store


@pytest.fixture(params=["sqlite", "postgres"])
async def history(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[History]:
    if request.param == "sqlite":
        url = db.default_url(tmp_path)
    else:
        url = str(request.getfixturevalue("fresh_postgres_url"))
    await migrate.upgrade(url)
    h = await History.open(url)
    yield h
    await h.close()


async def file(store: Store, case_id: str, n: int) -> None:
    for i in range(n):
        await append_event(store, case_id, "chat.message", ts=float(i), data={"text": f"m{i}"})


async def test_a_case_behind_is_caught_up_once_and_its_mark_dropped(
    history: History, tmp_path: Path
) -> None:
    store = MemoryStore(tmp_path / "state")
    await file(store, "C-1", 30)
    await file(store, "C-2", 5)
    # The first ten were recorded as they happened; then the database was away.
    for event in (await store.read_log("case:C-1:events"))[:10]:
        await history.record(event)
    await store.index_add(BEHIND, "C-1", 0.0)
    catch_up = CatchUp(store, history, retry_s=0.05)
    catch_up.start()
    try:
        for _ in range(200):
            if not await catch_up.behind():
                break
            await asyncio.sleep(0.02)
        assert await catch_up.behind() == []
        page = await history.case_events("C-1", limit=1000)
        assert [e["seq"] for e in page.items] == list(range(1, 31))
        assert [e["data"]["text"] for e in page.items] == [f"m{i}" for i in range(30)]
        assert await history.event_count("C-2") == 0  # not marked: not touched
        # Caught up again (another node, a second mark): nothing changes.
        await catch_up.catch_up("C-1")
        assert await history.event_count("C-1") == 30
    finally:
        await catch_up.close()
        await store.close()
