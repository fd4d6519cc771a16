"""The failover sweep at scale: every heartbeat a node checks the media leases of the
sessions it follows but does not host, against the registry of media hosts. Thousands of
such sessions must not cost thousands of store reads a beat: it is two (the leases in one
call, the distinct hosts they name in another). The dead host's sessions are freed and
their pages told; the live ones are left alone. Counted on a real redis-server
(``INFO commandstats``), the old per-session path measured beside it in the same run."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from jointreview.media_failover import Failover, lease_key
from jointreview.media_registry import host_key
from signaling.state import Store
from signaling.state.redis_store import RedisStore

FOLLOWED = 2000
DEAD = 3  # sessions whose lease names the dead node's host
GRACE = 0.05  # a silent host is lost if still silent this much later (a heartbeat)


async def _world(store: Store) -> tuple[Failover, list[dict[str, Any]], list[str]]:
    """Node ``b`` follows FOLLOWED sessions: most on node ``a``'s two live hosts, DEAD on
    node ``z``'s host, which stopped beating, and one on ``b``'s own worker."""
    now = time.time()
    for worker in (0, 1):
        doc = {"node": "a", "worker": worker, "alive": True, "seen_at": now}
        await store.put_ephemeral(host_key("a", worker), doc, 60)
    sessions = [f"s{i}" for i in range(FOLLOWED)]
    for i, sid in enumerate(sessions):
        lease = {"node": "a", "worker": i % 2}
        if i < DEAD:
            lease = {"node": "z", "worker": 0}
        elif i == DEAD:
            lease = {"node": "b", "worker": 0}
        await store.put_ephemeral(lease_key(sid), lease, 60)
    told: list[dict[str, Any]] = []
    failover = Failover(
        store,
        "b",
        [],
        None,
        lambda s, _to, msg: told.append(msg),
        host_ttl_s=5,
        lease_s=30,
        grace_s=GRACE,
    )
    return failover, told, sessions


def _closed(told: list[dict[str, Any]]) -> list[str]:
    return sorted(m["session_id"] for m in told if m["type"] == "media.state")


async def test_the_sweep_frees_only_the_dead_hosts_sessions(store: Store) -> None:
    failover, told, sessions = await _world(store)
    await failover.sweep(sessions)
    assert told == []  # silent at one check: suspect only (a starved node looks the same)
    await asyncio.sleep(GRACE)
    await failover.sweep(sessions)  # still silent a heartbeat later: lost
    assert _closed(told) == [f"s{i}" for i in range(DEAD)]
    assert all(m["reason"] == "media_node_lost" for m in told if m["type"] == "media.state")
    for i in range(DEAD):
        assert await store.get_ephemeral(lease_key(f"s{i}")) is None
    kept = await store.get_ephemeral_many([lease_key(f"s{i}") for i in range(DEAD, FOLLOWED)])
    assert all(lease is not None for lease in kept)
    told.clear()
    await failover.sweep(sessions)  # freed already: nothing more to tell
    assert told == []


async def test_a_host_silent_for_less_than_a_heartbeat_past_its_ttl_keeps_its_sessions(
    store: Store,
) -> None:
    """Node ``z`` missed its renewal (its loop was starved) and beats again before the
    second check: nothing is taken over. Silent again later, it is suspected anew."""
    failover, told, sessions = await _world(store)
    await failover.sweep(sessions)
    doc = {"node": "z", "worker": 0, "alive": True, "seen_at": time.time()}
    await store.put_ephemeral(host_key("z", 0), doc, 60)  # back
    await asyncio.sleep(GRACE)
    await failover.sweep(sessions)
    assert told == []
    await store.delete_ephemeral(host_key("z", 0))  # silent again: the count starts anew
    await failover.sweep(sessions)
    assert told == []
    await asyncio.sleep(GRACE)
    await failover.sweep(sessions)
    assert _closed(told) == [f"s{i}" for i in range(DEAD)]


async def test_asked_to_negotiate_a_node_checks_a_silent_host_again_a_heartbeat_later(
    store: Store,
) -> None:
    failover, told, _sessions = await _world(store)
    lease = await store.get_ephemeral(lease_key("s0"))
    assert lease is not None and await failover.take_over("s0", lease)  # gone at both checks
    assert _closed(told) == ["s0"] and await store.get_ephemeral(lease_key("s0")) is None
    lease = await store.get_ephemeral(lease_key("s5"))
    assert lease is not None and not await failover.take_over("s5", lease)  # alive


@pytest.fixture
async def counted(redis_url: str) -> AsyncIterator[tuple[RedisStore, aioredis.Redis]]:
    store = await RedisStore.connect(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    admin = aioredis.from_url(redis_url, decode_responses=True)
    yield store, admin
    await admin.aclose()
    await store.close()


async def _commands(admin: aioredis.Redis) -> dict[str, int]:
    stats = await admin.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): int(v["calls"])
        for k, v in stats.items()
        if not k.removeprefix("cmdstat_").startswith(("info", "config"))  # the counting
    }


async def test_a_beat_costs_two_store_reads_however_many_sessions_are_followed(
    counted: tuple[RedisStore, aioredis.Redis],
) -> None:
    store, admin = counted
    failover, _told, sessions = await _world(store)
    # Before: the per-session path (a lease GET, then its host's GET), in the same run.
    await admin.config_resetstat()
    started = time.perf_counter()
    for sid in sessions[DEAD:]:  # the live ones: what every later beat costs
        lease = await store.get_ephemeral(lease_key(sid))
        if lease is not None:
            await failover.take_over(sid, lease)
    before_s = time.perf_counter() - started
    before = await _commands(admin)
    # After: the batched sweep (its first two beats free DEAD sessions; the steady beat after).
    await failover.sweep(sessions)
    await asyncio.sleep(GRACE)
    await failover.sweep(sessions)
    await admin.config_resetstat()
    started = time.perf_counter()
    await failover.sweep(sessions)
    after_s = time.perf_counter() - started
    after = await _commands(admin)
    print(
        "SWEEP",
        json.dumps(
            {
                "followed": FOLLOWED,
                "before_calls": sum(before.values()),
                "after_calls": sum(after.values()),
                "before": before,
                "after": after,
                "before_ms": round(before_s * 1000, 1),
                "after_ms": round(after_s * 1000, 1),
            }
        ),
    )
    assert sum(before.values()) == 2 * (FOLLOWED - DEAD) - 1  # b's own lease: no host read
    assert after == {"mget": 2}
