"""The webhook outbox: a node that dies between filing an event in the timeline and
queueing its webhook deliveries loses nothing, and sends nothing twice. The crash window
is made by doing what ``ServiceCore.record`` does up to the moment of the crash (the
event filed; or filed and queued but not settled), then starting the node again (one
node on its journal) or two other nodes (Redis), against a real receiver."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling import outbox
from signaling.appkeys import STORE
from signaling.config import Config
from signaling.core import append_event
from signaling.models import Actor, Event
from signaling.state import Store, open_store
from signaling.webhooks import Webhooks

from .conftest import Tokens, auth, flush_redis, make_config
from .test_webhooks import Receiver, eventually, hook_config, start_session, verify

CASE = "OUTBOX-2026-01"
REVIEWER = Actor(sub="rev-city-amr-1", name="黄丽", role="reviewer", dept="city-amr", level="city")


async def _die_mid_record(config: Config, sid: str) -> tuple[Event, Event]:
    """The node that dies, as ``ServiceCore.record`` runs on it: an opinion filed, then
    the crash before any hook ran; the session's end filed and its deliveries queued,
    then the crash before the outbox was settled."""
    store = await open_store(config.redis_url, config.data_dir)
    try:
        opinion = await append_event(
            store,
            CASE,
            "opinion.filed",
            ts=time.time(),
            session_id=sid,
            actor=REVIEWER,
            data={"opinion_id": "o_1", "decision": "materials_missing", "missing": ["股东会决议"]},
        )
        ended = await append_event(
            store, CASE, "session.ended", ts=time.time(), session_id=sid, data={}
        )
        await Webhooks(store, config, "dying").enqueue(ended)
        return opinion, ended
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_an_event_filed_just_before_a_crash_is_delivered_once(
    tmp_path: Path, tok: Tokens, backend: str, request: pytest.FixtureRequest
) -> None:
    redis_url = ""
    if backend == "redis":
        redis_url = request.getfixturevalue("redis_url")
        flush_redis(redis_url)
    async with Receiver() as rx:
        config = hook_config(tmp_path, [rx.url], redis_url=redis_url, media_enabled=False)
        # Before the crash, the node works as usual: the session's start is sent.
        async with TestClient(TestServer(create_app(config))) as client:
            sid = await start_session(client, tok, CASE)
            await eventually(lambda: len(rx.delivered()) == 1, "session.started")
        opinion, ended = await _die_mid_record(config, sid)
        assert not [h for h in rx.hits if verify(h)["event"] == "opinion.filed"]

        # The node again (one store on disk), or two others sharing the Redis.
        names = ["node-b", "node-c"] if redis_url else ["node-a"]
        clients = [
            TestClient(TestServer(create_app(config.model_copy(update={"node_id": n}))))
            for n in names
        ]
        for c in clients:
            await c.start_server()
        try:
            await eventually(lambda: len(rx.delivered()) >= 3, "the lost webhooks", timeout=15)
            # Several catch-up passes of every node later, still one of each.
            await asyncio.sleep(3 * outbox.SETTLE_S)
            bodies = [verify(h) for h in rx.hits]  # each one signed
            assert all(200 <= h.status < 300 for h in rx.hits)
            assert Counter(b["event"] for b in bodies) == {
                "session.started": 1,
                "opinion.filed": 1,
                "session.ended": 1,
            }
            assert len({b["id"] for b in bodies}) == 3
            by_event = {b["event"]: b for b in bodies}
            filed = by_event["opinion.filed"]
            assert (filed["case_id"], filed["session_id"]) == (CASE, sid)
            assert filed["data"]["seq"] == opinion.seq and filed["data"]["missing"] == [
                "股东会决议"
            ]
            assert filed["data"]["actor"]["sub"] == "rev-city-amr-1"
            assert filed["created_at"] == opinion.ts
            assert by_event["session.ended"]["data"]["seq"] == ended.seq
            # The admin view lists one delivery per event, and the outbox is empty.
            r = await clients[0].get("/api/webhooks/deliveries", headers=auth(tok.admin()))
            listed = (await r.json())["deliveries"]
            assert sorted(d["event"] for d in listed) == sorted(by_event)
            assert all(d["status"] == "delivered" for d in listed)
            assert await clients[0].app[STORE].index_range(outbox.OUTBOX) == []
        finally:
            for c in clients:
                await c.close()


async def test_a_normal_event_is_settled_and_never_caught_up(tmp_path: Path, tok: Tokens) -> None:
    """Without a crash the event's own hook queues it and settles its intent."""
    async with Receiver() as rx:
        async with TestClient(TestServer(create_app(hook_config(tmp_path, [rx.url])))) as client:
            sid = await start_session(client, tok, CASE)
            r = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
            assert r.status == 200
            assert await client.app[STORE].index_range(outbox.OUTBOX) == []
            await eventually(lambda: len(rx.delivered()) >= 3, "three deliveries")
            await asyncio.sleep(2 * outbox.SETTLE_S)
            events = Counter(verify(h)["event"] for h in rx.hits)
            assert events == {"session.started": 1, "session.ended": 1, "recording.ready": 1}


async def test_intents_of_events_never_filed_are_dropped_late(store: Store) -> None:
    """A node that died after announcing an event but before filing it: the intent
    waits (the append may still land) and is dropped once it never can."""
    queued: list[Event] = []

    async def enqueue(event: Event) -> None:
        queued.append(event)

    now = time.time()
    await outbox.announce(store, CASE, "s_x", "opinion.filed", now - 10)
    await outbox.announce(store, CASE, "s_x", "chat.message", now - 10)  # never a webhook
    assert await outbox.catch_up(store, enqueue, now) == 0
    assert len(await store.index_range(outbox.OUTBOX)) == 1  # kept: it may still land
    assert await outbox.catch_up(store, enqueue, now + outbox.ABANDON_S) == 0
    assert await store.index_range(outbox.OUTBOX) == []
    assert queued == []

    # Filed after all, before the catch-up: queued once, settled.
    event = await append_event(store, CASE, "session.created", ts=now - 5, data={"x": 1})
    assert await outbox.catch_up(store, enqueue, now) == 1
    assert [e.seq for e in queued] == [event.seq]
    assert await outbox.catch_up(store, enqueue, now) == 0  # nothing left to catch up
    assert await store.index_range(outbox.OUTBOX) == []


async def test_deliveries_are_the_same_whoever_queues_them(store: Store) -> None:
    """Two nodes queueing one event (its own node and a catch-up) make one delivery per
    URL, with one event id; a lost index entry is put back."""
    config = make_config(Path("/nonexistent"))
    urls = ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
    event = Event(seq=7, ts=time.time(), type="opinion.filed", case_id=CASE, session_id="s_x")
    a, b = Webhooks(store, config, "a"), Webhooks(store, config, "b")
    first, second = await asyncio.gather(a.enqueue(event, urls), b.enqueue(event, urls))
    assert first == second and len(set(first)) == 2
    docs: list[dict[str, Any]] = [
        d for d in await store.get_many([f"webhook:{i}" for i in first]) if d
    ]
    assert len({d["event_id"] for d in docs}) == 1 and {d["url"] for d in docs} == set(urls)
    assert sorted(await store.index_range("webhooks:due")) == sorted(first)
    await store.index_remove("webhooks:due", first[0])  # a node died between the writes
    assert await a.enqueue(event, urls) == first
    assert sorted(await store.index_range("webhooks:due")) == sorted(first)
    assert sorted(await store.index_range("webhooks:all")) == sorted(first)
