"""Observation (issue #15): a supervisor watches a live session receive-only, with real
aiortc peers; announced, silent and off; the timeline, the audit trail, the rules."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.bot import Bot, SignalingError
from bench.pattern_media import PatternVideoTrack, read_pattern

from .calls import CLERK, Call, until
from .conftest import auth


async def _get(call: Call, path: str, token: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(call.url + path, headers=auth(token)) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _events(call: Call) -> list[dict[str, Any]]:
    sup = call.tokens.issue(sub="sup-02", role="supervisor")
    return list((await _get(call, f"/api/cases/{call.case_id}/events", sup))["events"])


async def _observer(call: Call, sub: str = "sup-01", role: str = "supervisor") -> Bot:
    bot = Bot(call.url, call.tokens.issue(sub=sub, name="监督员", role=role))
    call.people.append(bot)
    await bot.connect()
    return bot


async def test_an_announced_observer_watches_and_is_told_to_everyone(tmp_path: Path) -> None:
    call = await Call.start(tmp_path, "OBS-1", abandoned_session_s=0.5)
    try:
        clerk = await call.person(1)
        await clerk.publish("camera", PatternVideoTrack(1))
        sup = await _observer(call)
        observing = await sup.observe(call.sid)
        assert observing["type"] == "observing"
        assert [p["participant_id"] for p in observing["participants"]] == [clerk.participant_id]
        assert observing["observation"]["observer"]["role"] == "supervisor"
        oid = observing["observation"]["observation_id"]
        told = await clerk.wait_for("observation", lambda m: m["state"] == "started")
        assert told["observation"]["observation_id"] == oid
        assert told["observation"]["observer"]["name"] == "监督员"
        # Someone who joins later hears of it right after joined.
        late = await call.person(2)
        again = await late.wait_for("observation")
        assert again["observation"]["observation_id"] == oid
        # The observer receives the clerk's video, receive-only.
        await sup.negotiate()
        await until(lambda: sup.receiving(1), what="the observer receiving the camera")
        remote = next(iter(sup.remotes.values()))
        assert remote.track is not None
        frame = await asyncio.wait_for(remote.track.recv(), 10)
        assert read_pattern(frame)[0] == 1
        # No slot: not in the session's participants, and no presence about it.
        session = await _get(
            call, f"/api/sessions/{call.sid}", call.tokens.issue(sub=CLERK, role="clerk")
        )
        ids = {p["participant_id"] for p in session["participants"]}
        assert oid not in ids and ids == {clerk.participant_id, late.participant_id}
        assert not [
            m
            for m in clerk.messages
            if m.get("type") == "presence" and m["participant"]["participant_id"] == oid
        ]
        # Server-enforced: no chat, no recording control, nothing published.
        for msg in ({"type": "chat", "text": "hi"}, {"type": "recording.start"}):
            with pytest.raises(SignalingError) as err:
                await sup.request(msg)
            assert err.value.code == "forbidden"
        assert sup.pc is not None
        with pytest.raises(SignalingError) as err:
            await sup.request(
                {
                    "type": "media.offer",
                    "sdp": sup.pc.localDescription.sdp,
                    "publish": [{"mid": "0", "source": "camera"}],
                    "subscribe": [],
                }
            )
        assert err.value.code == "forbidden"
        with pytest.raises(SignalingError) as err:
            await sup.request({"type": "join", "session_id": call.sid})
        assert err.value.code == "already_joined"
        # Everyone leaves while the supervisor watches: the session is broken off all
        # the same (an observer is nobody in it), and the observation ends with it.
        for p in (clerk, late):
            await p.leave()
        ended = await sup.wait_for("session.ended", timeout=10)
        assert ended["session"]["status"] == "ended"
        events = await _events(call)
        kinds = [
            (e["type"], e["data"].get("reason"))
            for e in events
            if e["type"].startswith(("observation", "session.ended"))
        ]
        assert kinds == [
            ("observation.started", None),
            ("session.ended", "broken_off"),
            ("observation.ended", "session_ended"),
        ], kinds
        started = next(e for e in events if e["type"] == "observation.started")
        assert started["actor"]["sub"] == "sup-01" and started["data"]["mode"] == "announced"
        # ...and in the audit trail.
        admin = call.tokens.issue(sub="admin", role="admin")
        deadline = time.monotonic() + 5
        while True:
            page = await _get(call, "/api/audit?action=observation.*", admin)
            acts = [(e["action"], e["actor"]["sub"]) for e in page["entries"]]
            if len(acts) == 2:
                break
            assert time.monotonic() < deadline, acts
            await asyncio.sleep(0.1)
        assert sorted(acts) == [("observation.ended", "sup-01"), ("observation.started", "sup-01")]
    finally:
        await call.close()


async def test_a_silent_observer_is_told_to_nobody(tmp_path: Path) -> None:
    call = await Call.start(tmp_path, "OBS-2", observation="silent")
    try:
        clerk = await call.person(1)
        sup = await _observer(call)
        observing = await sup.observe(call.sid)
        await sup.request({"type": "leave"})
        late = await call.person(2)
        await asyncio.sleep(0.3)  # what the bus would have carried has arrived
        for p in (clerk, late):
            assert not [m for m in p.messages if m.get("type") == "observation"]
        events = await _events(call)
        found = [
            (e["type"], e["data"]["mode"], e["data"].get("reason"))
            for e in events
            if e["type"].startswith("observation")
        ]
        assert found == [
            ("observation.started", "silent", None),
            ("observation.ended", "silent", "left"),
        ]
        assert observing["observation"]["mode"] == "silent"
    finally:
        await call.close()


async def test_observation_off_and_who_may_observe(tmp_path: Path) -> None:
    call = await Call.start(tmp_path, "OBS-3", observation="off")
    try:
        sup = await _observer(call)
        with pytest.raises(SignalingError) as err:
            await sup.observe(call.sid)
        assert err.value.code == "observation_disabled"
        clerk = await _observer(call, "clerk-02", "clerk")  # staff join; they do not observe
        with pytest.raises(SignalingError) as err:
            await clerk.observe(call.sid)
        assert err.value.code == "forbidden"
        assert [e["type"] for e in await _events(call)] == ["session.created"]
    finally:
        await call.close()


async def test_a_closed_observer_socket_ends_its_observation(tmp_path: Path) -> None:
    call = await Call.start(tmp_path, "OBS-4")
    try:
        clerk = await call.person(1)
        sup = await _observer(call)
        await sup.observe(call.sid)
        await clerk.wait_for("observation", lambda m: m["state"] == "started")
        await sup.close()
        gone = await clerk.wait_for("observation", lambda m: m["state"] == "ended")
        assert gone["reason"] == "connection_lost"
    finally:
        await call.close()
