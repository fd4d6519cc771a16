"""One contract, two stores: every test here runs on MemoryStore and on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from signaling.state import MemoryStore, Store, StoreUnavailable
from signaling.state.redis_store import RedisStore

from .test_faults import RedisProcess, _fill, own_redis, small_fs

__all__ = ["own_redis", "small_fs"]  # fixtures, shared with test_faults


async def test_create_is_once_only(store: Store) -> None:
    assert await store.create("a", {"n": 1})
    assert not await store.create("a", {"n": 2})
    assert await store.get("a") == {"n": 1}
    assert await store.get("missing") is None


async def test_delete_forgets_a_document(store: Store) -> None:
    await store.create("gone", {"n": 1})
    await store.delete(["gone"])
    assert await store.get("gone") is None
    await store.delete(["gone"])  # already gone: nothing to do
    assert await store.create("gone", {"n": 2})  # the key is free again


async def test_a_deleted_document_stays_deleted_after_a_restart(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "state")
    await store.create("kept", {"n": 1})
    await store.create("gone", {"n": 2})
    await store.delete(["gone"])
    await store.close()
    store = MemoryStore(tmp_path / "state")
    assert await store.get_many(["kept", "gone"]) == [{"n": 1}, None]
    await store.close()


async def test_get_many_keeps_order_and_gaps(store: Store) -> None:
    await store.create("x", {"v": "x"})
    await store.create("z", {"v": "z"})
    assert await store.get_many(["z", "y", "x"]) == [{"v": "z"}, None, {"v": "x"}]
    assert await store.get_many([]) == []


async def test_get_ephemeral_many_keeps_order_and_gaps(store: Store) -> None:
    await store.put_ephemeral("x", {"v": "x"}, 30)
    await store.put_ephemeral("z", {"v": "z"}, 30)
    await store.put_ephemeral("short", {"v": "s"}, 0.05)
    await asyncio.sleep(0.2)
    got = await store.get_ephemeral_many(["z", "y", "x", "short"])
    assert got == [{"v": "z"}, None, {"v": "x"}, None]
    assert await store.get_ephemeral_many([]) == []


async def test_update_applies_and_reports(store: Store) -> None:
    await store.create("doc", {"count": 0, "text": "中文"})
    doc, changed = await store.update("doc", lambda d: dict(d, count=d["count"] + 1))
    assert changed and doc == {"count": 1, "text": "中文"}
    doc, changed = await store.update("doc", lambda d: None)
    assert not changed and doc == {"count": 1, "text": "中文"}
    assert await store.update("nope", lambda d: d) == (None, False)


async def test_returned_docs_are_copies(store: Store) -> None:
    await store.create("doc", {"items": [1]})
    got = await store.get("doc")
    assert got is not None
    got["items"].append(2)
    assert await store.get("doc") == {"items": [1]}


async def test_concurrent_updates_lose_nothing(store: Store) -> None:
    await store.create("counter", {"n": 0})

    async def bump() -> None:
        await store.update("counter", lambda d: {"n": d["n"] + 1})

    await asyncio.gather(*(bump() for _ in range(50)))
    assert await store.get("counter") == {"n": 50}


async def test_compare_and_set_first_wins(store: Store) -> None:
    """Two nodes accepting the same invitation: exactly one succeeds."""
    await store.create("inv", {"status": "pending"})

    def accept(by: str) -> Any:
        return lambda d: dict(d, status="accepted", by=by) if d["status"] == "pending" else None

    results = await asyncio.gather(*(store.update("inv", accept(f"r{i}")) for i in range(10)))
    assert sum(changed for _, changed in results) == 1
    final = await store.get("inv")
    assert final is not None and final["status"] == "accepted"


async def test_log_appends_in_order_with_seq(store: Store) -> None:
    seqs = [await store.append("log", {"i": i}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    entries = await store.read_log("log")
    assert [e["i"] for e in entries] == [0, 1, 2, 3, 4]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert [e["i"] for e in await store.read_log("log", start=3)] == [3, 4]
    assert [e["i"] for e in await store.read_log("log", start=1, limit=2)] == [1, 2]
    assert await store.read_log("empty") == []


async def test_a_trimmed_log_keeps_counting(store: Store) -> None:
    for i in range(5):
        await store.append("log", {"i": i})
    assert await store.trim_log("log", 3) == 3
    assert await store.trim_log("log", 3) == 0  # idempotent
    assert await store.log_trimmed("log") == 3
    assert [e["seq"] for e in await store.read_log("log")] == [4, 5]
    # ``start`` is a seq already seen, whether or not it was trimmed.
    assert [e["seq"] for e in await store.read_log("log", start=1)] == [4, 5]
    assert [e["seq"] for e in await store.read_log("log", start=4)] == [5]
    assert [e["seq"] for e in await store.read_log("log", start=0, limit=1)] == [4]
    assert await store.read_log("log", start=5) == []
    assert await store.append("log", {"i": 5}) == 6
    # Trimming past the end drops what is there; the numbering is never given twice.
    assert await store.trim_log("log", 100) == 3
    assert await store.read_log("log") == []
    assert await store.log_trimmed("log") == 6
    assert await store.append("log", {"i": 6}) == 7
    assert await store.read_log("log") == [{"i": 6, "seq": 7}]
    assert await store.trim_log("never", 10) == 0 and await store.log_trimmed("never") == 0


async def test_concurrent_appends_and_a_trim_lose_no_number(store: Store) -> None:
    for i in range(10):
        await store.append("log", {"i": i})
    results = await asyncio.gather(
        store.trim_log("log", 10), *(store.append("log", {"i": i}) for i in range(10, 30))
    )
    assert sorted(results[1:]) == list(range(11, 31))
    assert [e["seq"] for e in await store.read_log("log")] == list(range(11, 31))


async def test_deletes(store: Store) -> None:
    await store.create("a", {"v": 1})
    await store.create("b", {"v": 2})
    await store.delete(["a", "missing"])
    await store.delete([])
    assert await store.get_many(["a", "b"]) == [None, {"v": 2}]
    assert await store.create("a", {"v": 3})
    await store.append("log", {"i": 0})
    await store.trim_log("log", 1)
    await store.append("log", {"i": 1})
    await store.delete_log("log")
    assert await store.read_log("log") == [] and await store.log_trimmed("log") == 0
    assert await store.append("log", {"i": 2}) == 1  # a new log
    await store.index_add("idx", "m", 1.0)
    await store.index_add("idx", "n", 2.0)
    await store.index_delete("idx")
    assert await store.index_range("idx") == []


async def test_memory_store_keeps_trims_and_deletes_across_a_restart(tmp_path: Path) -> None:
    s = MemoryStore(tmp_path / "state")
    for i in range(2000):
        await s.append("log", {"i": i, "pad": "x" * 50})
    await s.trim_log("log", 1998)
    await s.create("gone", {"v": 1})
    await s.delete(["gone"])
    await s.index_add("idx", "m", 1.0)
    await s.index_delete("idx")
    await s.append("old", {"i": 0})
    await s.delete_log("old")
    await s.close()
    journal = tmp_path / "state" / "journal.jsonl"
    before = journal.stat().st_size
    again = MemoryStore(tmp_path / "state")  # replayed, then compacted (mostly dead)
    assert [e["seq"] for e in await again.read_log("log")] == [1999, 2000]
    assert await again.get("gone") is None and await again.index_range("idx") == []
    assert await again.read_log("old") == []
    assert await again.append("log", {"i": 2000}) == 2001
    await again.close()
    assert journal.stat().st_size < before / 100  # the trimmed entries left the journal
    third = MemoryStore(tmp_path / "state")
    assert [e["seq"] for e in await third.read_log("log")] == [1999, 2000, 2001]
    assert await third.log_trimmed("log") == 1998
    assert await third.append("log", {}) == 2002
    await third.close()


async def test_a_forgotten_log_numbers_again_from_the_floor_it_is_given(store: Store) -> None:
    """A case the live store forgot whole (signaling/evict.py) goes on after the record's
    last number, which its next appender finds and passes."""
    assert await store.append("log", {"i": 0}, floor=None) == 0  # no numbering: say so
    assert await store.read_log("log") == []
    for i in range(3):
        await store.append("log", {"i": i}, floor=None if i else 0)
    assert not await store.forget_log("log", 3)  # entries left
    await store.trim_log("log", 3)
    assert not await store.forget_log("log", 2)  # not its last number: appended meanwhile
    assert await store.forget_log("log", 3)
    assert await store.log_trimmed("log") == 0 and await store.read_log("log") == []
    assert await store.append("log", {"i": 3}, floor=None) == 0
    # Two appenders found the floor at once: one starts the numbering, the other follows.
    seqs = await asyncio.gather(*(store.append("log", {"i": i}, floor=3) for i in (3, 4)))
    assert sorted(seqs) == [4, 5]
    assert [e["seq"] for e in await store.read_log("log")] == [4, 5]
    assert await store.append("log", {"i": 5}, floor=1) == 6  # numbered: the floor is moot
    assert await store.append("log", {"i": 6}, floor=None) == 7
    assert await store.log_trimmed("log") == 3
    assert [e["seq"] for e in await store.read_log("log", start=5)] == [6, 7]


async def test_memory_store_keeps_a_forgotten_logs_new_numbering_across_restarts(
    tmp_path: Path,
) -> None:
    s = MemoryStore(tmp_path / "state")
    for i in range(3):
        await s.append("log", {"i": i})
    await s.trim_log("log", 3)
    assert await s.forget_log("log", 3)
    await s.close()
    again = MemoryStore(tmp_path / "state")
    assert await again.append("log", {"i": 3}, floor=None) == 0  # forgotten, after a restart
    assert await again.append("log", {"i": 3}, floor=3) == 4
    await again.close()
    third = MemoryStore(tmp_path / "state")
    assert await third.read_log("log") == [{"i": 3, "seq": 4}]
    assert await third.log_trimmed("log") == 3
    assert await third.append("log", {"i": 4}, floor=None) == 5
    await third.close()


async def test_concurrent_appends_get_distinct_seqs(store: Store) -> None:
    seqs = await asyncio.gather(*(store.append("log", {"i": i}) for i in range(30)))
    assert sorted(seqs) == list(range(1, 31))


async def test_index_orders_by_score_and_filters(store: Store) -> None:
    for member, score in [("b", 20.0), ("a", 10.0), ("c", 30.0)]:
        await store.index_add("idx", member, score)
    assert await store.index_range("idx") == ["a", "b", "c"]
    assert await store.index_range("idx", reverse=True) == ["c", "b", "a"]
    assert await store.index_range("idx", min_score=15, max_score=30) == ["b", "c"]
    assert await store.index_range("idx", reverse=True, limit=2) == ["c", "b"]
    await store.index_add("idx", "a", 40.0)  # re-adding moves, never duplicates
    assert await store.index_range("idx") == ["b", "c", "a"]


async def test_ephemeral_values_expire(store: Store) -> None:
    await store.put_ephemeral("e", {"v": 1}, ttl_s=0.2)
    assert await store.get_ephemeral("e") == {"v": 1}
    await asyncio.sleep(0.35)
    assert await store.get_ephemeral("e") is None
    await store.put_ephemeral("f", {"v": 2}, ttl_s=10)
    await store.delete_ephemeral("f")
    assert await store.get_ephemeral("f") is None


async def test_memory_store_drops_expired_ephemeral_values_nobody_reads(
    tmp_path: Path,
) -> None:
    """One sealing claim a session, never read again once it expired: a year of them
    must not stay in memory."""
    s = MemoryStore(tmp_path / "state")
    for i in range(5000):
        await s.put_ephemeral(f"sealing:{i}", {"node": "n"}, 0.0 if i < 4990 else 60.0)
    assert len(s._ephemeral) < 2048
    assert await s.get_ephemeral("sealing:4999") == {"node": "n"}
    await s.close()


async def test_bus_delivers_to_every_subscriber_of_the_topic(store: Store) -> None:
    a: list[dict[str, Any]] = []
    b: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    sub_a = await store.subscribe("t", a.append)
    sub_b = await store.subscribe("t", b.append)
    sub_o = await store.subscribe("u", other.append)
    await store.publish("t", {"type": "hello", "text": "你好"})
    await _until(lambda: len(a) == 1 and len(b) == 1)
    assert a == b == [{"type": "hello", "text": "你好"}]
    assert other == []
    await sub_a.close()
    await sub_a.close()  # idempotent
    await store.publish("t", {"type": "again"})
    await _until(lambda: len(b) == 2)
    assert len(a) == 1
    await sub_b.close()
    await sub_o.close()


async def test_bus_keeps_order(store: Store) -> None:
    got: list[int] = []
    sub = await store.subscribe("ordered", lambda m: got.append(m["i"]))
    for i in range(100):
        await store.publish("ordered", {"i": i})
    await _until(lambda: len(got) == 100)
    assert got == list(range(100))
    await sub.close()


async def test_a_failing_handler_does_not_starve_others(store: Store) -> None:
    got: list[Any] = []

    def broken(_: Any) -> None:
        raise RuntimeError("boom")

    s1 = await store.subscribe("t2", broken)
    s2 = await store.subscribe("t2", got.append)
    await store.publish("t2", {"x": 1})
    await _until(lambda: got == [{"x": 1}])
    await s1.close()
    await s2.close()


async def test_ping(store: Store) -> None:
    assert await store.ping()


async def test_memory_store_survives_restart(tmp_path: Path) -> None:
    s = MemoryStore(tmp_path / "state")
    await s.create("doc", {"v": 1})
    await s.update("doc", lambda d: {"v": 2})
    await s.append("log", {"e": "x"})
    await s.index_add("idx", "m", 5.0)
    await s.put_ephemeral("eph", {"gone": True}, 60)
    await s.close()
    again = MemoryStore(tmp_path / "state")
    assert await again.get("doc") == {"v": 2}
    assert await again.read_log("log") == [{"e": "x", "seq": 1}]
    assert await again.index_range("idx") == ["m"]
    assert await again.get_ephemeral("eph") is None  # ephemeral by design
    await again.close()


async def test_memory_store_ignores_a_torn_last_line(tmp_path: Path) -> None:
    s = MemoryStore(tmp_path / "state")
    await s.create("doc", {"v": 1})
    await s.close()
    with (tmp_path / "state" / "journal.jsonl").open("a") as fh:
        fh.write('{"op":"put","k":"doc","d":{"v":')  # a crash mid-write
    again = MemoryStore(tmp_path / "state")
    assert await again.get("doc") == {"v": 1}
    await again.create("next", {"ok": True})
    await again.close()
    third = MemoryStore(tmp_path / "state")
    assert await third.get("next") == {"ok": True}
    await third.close()


async def test_memory_store_compacts_a_long_journal(tmp_path: Path) -> None:
    s = MemoryStore(tmp_path / "state")
    await s.create("doc", {"v": 0})
    for i in range(3000):
        await s.update("doc", lambda d, i=i: {"v": i + 1})
    await s.close()
    journal = tmp_path / "state" / "journal.jsonl"
    assert len(journal.read_text().splitlines()) > 3000
    again = MemoryStore(tmp_path / "state")
    assert await again.get("doc") == {"v": 3000}
    await again.close()
    assert len(journal.read_text().splitlines()) == 1


async def _until(cond: Any, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_index_remove(store: Store) -> None:
    await store.index_add("idx", "a", 1.0)
    await store.index_add("idx", "b", 2.0)
    await store.index_remove("idx", "a")
    await store.index_remove("idx", "missing")
    assert await store.index_range("idx") == ["b"]


async def test_create_ephemeral_is_a_lease(store: Store) -> None:
    assert await store.create_ephemeral("lease", {"node": "a"}, ttl_s=0.2)
    assert not await store.create_ephemeral("lease", {"node": "b"}, ttl_s=0.2)
    assert await store.get_ephemeral("lease") == {"node": "a"}
    await asyncio.sleep(0.35)
    assert await store.create_ephemeral("lease", {"node": "b"}, ttl_s=5)
    assert await store.get_ephemeral("lease") == {"node": "b"}


async def test_a_lease_is_renewed_only_while_it_names_its_holder(store: Store) -> None:
    mine = {"node": "a", "worker": 1}
    assert not await store.renew_ephemeral("lease", mine, ttl_s=5)  # none: not created
    assert await store.get_ephemeral("lease") is None
    assert await store.create_ephemeral("lease", mine, ttl_s=0.5)
    assert await store.renew_ephemeral("lease", {"worker": 1, "node": "a"}, ttl_s=5)
    await asyncio.sleep(0.7)  # past the first TTL: the renewal holds it
    assert await store.get_ephemeral("lease") == mine
    # Moved: the new holder's lease is never overwritten by the old holder's renewal.
    await store.put_ephemeral("lease", {"node": "b", "worker": 0}, ttl_s=5)
    for stale in (mine, {"node": "b"}, {"node": "b", "worker": 0, "x": 1}):
        assert not await store.renew_ephemeral("lease", stale, ttl_s=5)
    assert await store.get_ephemeral("lease") == {"node": "b", "worker": 0}
    await store.put_ephemeral("short", mine, ttl_s=0.2)
    await asyncio.sleep(0.35)
    assert not await store.renew_ephemeral("short", mine, ttl_s=5)  # expired: gone for good
    assert await store.get_ephemeral("short") is None


async def test_logs_keep_numbers_exact(store: Store) -> None:
    ts = 1795844183.9541495
    await store.append("log", {"ts": ts, "big": 2**53 + 1, "empty": [], "obj": {}})
    await store.append("log", {})
    entries = await store.read_log("log")
    assert entries[0]["ts"] == ts
    assert entries[0]["big"] == 2**53 + 1
    assert entries[0]["empty"] == [] and entries[0]["obj"] == {}
    assert entries[1] == {"seq": 2}


async def test_memory_index_remove_survives_restart(tmp_path: Path) -> None:
    s = MemoryStore(tmp_path / "state")
    await s.index_add("idx", "a", 1.0)
    await s.index_add("idx", "b", 2.0)
    await s.index_remove("idx", "a")
    await s.close()
    again = MemoryStore(tmp_path / "state")
    assert await again.index_range("idx") == ["b"]
    await again.close()


async def test_memory_store_survives_a_torn_multibyte_line(tmp_path: Path) -> None:
    s = MemoryStore(tmp_path / "state")
    await s.create("doc", {"name": "申请人"})
    await s.close()
    with (tmp_path / "state" / "journal.jsonl").open("ab") as fh:
        fh.write('{"op":"put","k":"x","d":{"name":"申'.encode()[:-1])  # cut inside a character
    again = MemoryStore(tmp_path / "state")
    assert await again.get("doc") == {"name": "申请人"}
    await again.close()


# -- job queues ---------------------------------------------------------------------------


async def test_jobs_are_handed_out_in_order_once_and_removed_when_acked(store: Store) -> None:
    ids = [await store.job_enqueue("q", {"n": i, "text": "导出"}) for i in range(3)]
    assert await store.job_count("q") == 3
    got = [await store.job_claim("q", "w1") for _ in range(3)]
    assert [j.id for j in got if j] == ids
    assert [j.data for j in got if j] == [{"n": i, "text": "导出"} for i in range(3)]
    assert all(j is not None and j.deliveries == 1 for j in got)
    assert await store.job_claim("q", "w2") is None  # all held: nothing for another
    for job_id in ids:
        await store.job_ack("q", job_id)
    assert await store.job_count("q") == 0
    assert await store.job_claim("q", "w1", reclaim_idle_s=0) is None
    assert await store.job_claim("empty", "w1") is None


async def test_a_silent_holders_job_is_reclaimed_and_the_holder_told(store: Store) -> None:
    job_id = await store.job_enqueue("q", {"n": 1})
    first = await store.job_claim("q", "dead", reclaim_idle_s=0.2)
    assert first is not None and first.id == job_id
    assert await store.job_claim("q", "other", reclaim_idle_s=0.2) is None
    await asyncio.sleep(0.3)
    again = await store.job_claim("q", "other", reclaim_idle_s=0.2)
    assert again is not None and again.id == job_id and again.deliveries == 2
    assert not await store.job_touch("q", "dead", job_id)  # it knows it lost the job
    assert await store.job_touch("q", "other", job_id)


async def test_touching_keeps_a_job_and_release_hands_it_on(store: Store) -> None:
    job_id = await store.job_enqueue("q", {"n": 1})
    assert await store.job_claim("q", "a", reclaim_idle_s=0.3) is not None
    for _ in range(4):
        await asyncio.sleep(0.15)
        assert await store.job_touch("q", "a", job_id)
        assert await store.job_claim("q", "b", reclaim_idle_s=0.3) is None
    await store.job_release("q", "a", job_id)
    taken = await store.job_claim("q", "b", reclaim_idle_s=60)
    assert taken is not None and taken.id == job_id
    await store.job_ack("q", job_id)
    assert not await store.job_touch("q", "b", job_id)


async def test_a_blocking_claim_wakes_on_a_new_job(store: Store) -> None:
    async def later() -> None:
        await asyncio.sleep(0.2)
        await store.job_enqueue("q", {"late": True})

    task = asyncio.create_task(later())
    t0 = asyncio.get_running_loop().time()
    job = await store.job_claim("q", "w", block_s=3.0)
    assert job is not None and job.data == {"late": True}
    assert asyncio.get_running_loop().time() - t0 < 2.0
    await task


async def test_memory_jobs_survive_a_restart_unless_acked(tmp_path: Path) -> None:
    s = MemoryStore(tmp_path / "state")
    done = await s.job_enqueue("q", {"n": 1})
    held = await s.job_enqueue("q", {"n": 2})
    assert (await s.job_claim("q", "w")) is not None
    assert (await s.job_claim("q", "w")) is not None
    await s.job_ack("q", done)
    await s.close()  # the process "dies" holding job 2
    again = MemoryStore(tmp_path / "state")
    assert await again.job_count("q") == 1
    job = await again.job_claim("q", "new")  # at once: nobody of the old process is alive
    assert job is not None and job.id == held and job.data == {"n": 2} and job.deliveries == 2
    fresh = await again.job_enqueue("q", {"n": 3})
    assert fresh not in (done, held)
    await again.close()


# -- outages: Redis stopped, the journal's disk full -------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def faulty(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]]:
    """A store and how to take its backing away (``down``) and give it back (``up``):
    a real redis-server stopped and started on its port, or a real tmpfs filled up."""
    if request.param == "redis":
        server: RedisProcess = request.getfixturevalue("own_redis")
        s: Store = await RedisStore.connect(server.url)

        async def down() -> None:
            server.stop()

        async def up() -> None:
            server.start()

    else:
        mnt: Path = request.getfixturevalue("small_fs")
        s = MemoryStore(mnt / "state")
        filler = mnt / "filler"

        async def down() -> None:
            _fill(mnt)
            # The journal's last page may hold a few more lines: use it up, down to
            # less than the shortest line below (30 bytes: {"op":"put","k":"s1","d":{}}).
            for i in range(1000):
                try:
                    await s.append("spare", {"pad": "x" * 100, "i": i})
                except StoreUnavailable:
                    break
            for i in range(10):  # (the longer line failed: under 70 bytes are left)
                try:
                    await s.create(f"s{i}", {})
                except StoreUnavailable:
                    return

        async def up() -> None:
            filler.unlink()

    yield s, down, up
    await s.close()


async def test_an_outage_raises_store_unavailable_and_changes_nothing(
    faulty: tuple[Store, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]],
) -> None:
    store, down, up = faulty
    await store.create("doc", {"v": 1})
    await store.append("log", {"i": 0})
    await store.index_add("idx", "a", 1.0)
    job = await store.job_enqueue("q", {"j": 1})
    await down()
    writes: list[Awaitable[Any]] = [
        store.create("new", {"v": 1}),
        store.update("doc", lambda d: {"v": 2}),
        store.append("log", {"i": 1}),
        store.index_add("idx", "b", 2.0),
        store.index_remove("idx", "a"),
        store.job_enqueue("q", {"j": 2}),
        store.job_ack("q", job),
    ]
    for write in writes:
        with pytest.raises(StoreUnavailable) as caught:
            await write
        assert caught.value.code == "store_unavailable" and caught.value.status == 503
    assert not await store.ping()
    health = await store.health()
    assert health["ok"] is False and health["error"]
    if store.kind == "redis":  # reads need Redis too; the memory store still reads
        for read in (store.get("doc"), store.read_log("log"), store.subscribe("t", print)):
            with pytest.raises(StoreUnavailable):
                await read
    await up()
    await _until_async(store.ping)
    assert await store.get("doc") == {"v": 1}
    assert await store.get("new") is None
    assert await store.read_log("log") == [{"i": 0, "seq": 1}]
    assert await store.index_range("idx") == ["a"]
    assert await store.job_count("q") == 1
    assert await store.append("log", {"i": 2}) == 2  # works again, no gap in the numbers
    assert (await store.health())["ok"] is True


async def test_memory_store_a_failed_write_leaves_no_half_line(small_fs: Path) -> None:
    s = MemoryStore(small_fs / "state")
    await s.create("doc", {"v": 1})
    journal = small_fs / "state" / "journal.jsonl"
    _fill(small_fs)
    good = 0
    with pytest.raises(StoreUnavailable):
        for i in range(1000):  # until the journal's last page is used up
            await s.append("log", {"i": i, "pad": "x" * 300})
            good += 1
    on_disk = journal.read_bytes()
    assert on_disk.endswith(b"\n") and len(on_disk.splitlines()) == 1 + good
    assert [e["i"] for e in await s.read_log("log")] == list(range(good))
    (small_fs / "filler").unlink()
    await s.append("log", {"i": "after"})
    await s.close()
    again = MemoryStore(small_fs / "state")  # what was shown is what is replayed
    assert [e["i"] for e in await again.read_log("log")] == [*range(good), "after"]
    await again.close()


async def test_memory_store_never_replays_a_line_without_its_newline(tmp_path: Path) -> None:
    s = MemoryStore(tmp_path / "state")
    await s.create("doc", {"v": 1})
    await s.close()
    with (tmp_path / "state" / "journal.jsonl").open("a") as fh:
        fh.write('{"op":"put","k":"doc","d":{"v":2}}')  # whole JSON, never acknowledged
    again = MemoryStore(tmp_path / "state")
    assert await again.get("doc") == {"v": 1}
    await again.create("next", {"ok": True})
    await again.close()
    third = MemoryStore(tmp_path / "state")
    assert await third.get("doc") == {"v": 1}
    assert await third.get("next") == {"ok": True}
    await third.close()


async def _until_async(cond: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_memory_store_opens_on_a_full_disk_and_cuts_a_torn_line(small_fs: Path) -> None:
    """A restart while the disk is still full: the node starts, and replays nothing torn."""
    s = MemoryStore(small_fs / "state")
    await s.create("doc", {"v": 1})
    await s.close()
    journal = small_fs / "state" / "journal.jsonl"
    with journal.open("a") as fh:
        fh.write('{"op":"put","k":"doc","d":{"v":')  # a crash mid-write
    _fill(small_fs)
    again = MemoryStore(small_fs / "state")
    assert await again.get("doc") == {"v": 1}
    assert journal.read_bytes().endswith(b"}\n")
    await again.close()
