"""``GET /api/live`` (issue #15): the sessions in progress now, who is in, their media
health as the SFU counts it (real aiortc peers), observers, and invitations ringing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from bench.bot import Bot
from bench.pattern_media import PatternVideoTrack, ToneAudioTrack
from jointreview.app import create_app
from signaling.auth import TokenService

from .calls import CLERK, Call, until
from .conftest import auth, flush_redis, make_config
from .test_observation import _observer


async def _live(call: Call, token: str, query: str = "", status: int = 200) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{call.url}/api/live{query}", headers=auth(token)) as r,
    ):
        assert r.status == status, await r.text()
        return await r.json()


async def _post(call: Call, path: str, body: Any = None, status: int = 201) -> Any:
    clerk = call.tokens.issue(sub=CLERK, role="clerk")
    async with (
        aiohttp.ClientSession() as http,
        http.post(call.url + path, json=body or {}, headers=auth(clerk)) as r,
    ):
        assert r.status == status, await r.text()
        return await r.json()


async def test_the_live_overview_shows_who_is_in_their_media_and_what_rings(
    tmp_path: Path,
) -> None:
    call = await Call.start(tmp_path, "LIVE-1")
    try:
        sup = call.tokens.issue(sub="sup-01", role="supervisor")
        clerk = await call.person(1)
        reviewer = await call.person(2, role="reviewer", dept="city-amr", level="city")
        await clerk.publish("camera", PatternVideoTrack(1))
        await clerk.publish("microphone", ToneAudioTrack(440))
        ringing = await _post(call, f"/api/sessions/{call.sid}/invitations", {"dept": "city-tax"})
        watcher = await _observer(call)
        observing = await watcher.observe(call.sid)
        await until(lambda: reviewer.receiving(2), what="the reviewer receiving")
        other = (await _post(call, "/api/cases/LIVE-2/sessions"))["session_id"]
        ended = (await _post(call, "/api/cases/LIVE-3/sessions"))["session_id"]
        await _post(call, f"/api/sessions/{ended}/end", status=200)

        async def camera_measured() -> dict[str, Any]:
            deadline = time.monotonic() + 10
            while True:
                live = await _live(call, sup)
                mine = next(s for s in live["sessions"] if s["session_id"] == call.sid)
                by_id = {p["participant_id"]: p for p in mine["participants"]}
                media = by_id[clerk.participant_id]["media"]
                if media and media["fps"] and media["fps"] > 5:
                    return live
                assert time.monotonic() < deadline, mine
                await asyncio.sleep(0.3)

        live = await camera_measured()
        assert live["observation"] == "announced" and live["poll_s"] > 0
        assert [s["session_id"] for s in live["sessions"]] == [other, call.sid]  # newest first
        mine = live["sessions"][1]
        assert mine["case_id"] == "LIVE-1" and mine["clerk"]["sub"] == CLERK
        assert mine["running_for_s"] > 0
        people = {p["participant_id"]: p for p in mine["participants"]}
        assert set(people) == {clerk.participant_id, reviewer.participant_id}
        rev = people[reviewer.participant_id]
        assert rev["identity"]["role"] == "reviewer" and rev["identity"]["dept"] == "city-amr"
        assert rev["in_for_s"] > 0 and rev["media"]["receiving"] == 2
        media = people[clerk.participant_id]["media"]
        assert media["connection"] == "connected"
        assert media["loss"] == 0.0 and media["frozen"] is False and media["freezes"] == 0
        assert {t["source"] for t in media["tracks"]} == {"camera", "microphone"}
        # The observer is not a participant; it is listed as what it is.
        assert [o["observation_id"] for o in mine["observers"]] == [
            observing["observation"]["observation_id"]
        ]
        assert mine["observers"][0]["observer"]["sub"] == "sup-01"
        # What rings now, and for how long.
        [open_] = mine["invitations"]
        assert open_["invitation_id"] == ringing["invitation_id"]
        assert open_["dept_name"] and open_["ringing_for_s"] > 0
        assert [i["invitation_id"] for i in live["ringing"]] == [ringing["invitation_id"]]
        # A page at a time.
        first = await _live(call, sup, "?limit=1")
        assert [s["session_id"] for s in first["sessions"]] == [other]
        second = await _live(call, sup, f"?limit=1&cursor={first['next_cursor']}")
        assert [s["session_id"] for s in second["sessions"]] == [call.sid]
        assert second["next_cursor"] is None
        # Supervisors and admins only, and not with a token limited to one case.
        await _live(call, call.tokens.issue(sub="admin", role="admin"))
        for token in (
            call.tokens.issue(sub=CLERK, role="clerk"),
            call.tokens.issue(sub="r", role="reviewer", dept="city-amr", level="city"),
            call.tokens.issue(sub="sup-01", role="supervisor", case="LIVE-1"),
        ):
            body = await _live(call, token, status=403)
            assert body["error"]["code"] == "forbidden"
    finally:
        await call.close()


async def test_media_health_comes_from_the_node_hosting_the_media(
    tmp_path: Path, redis_url: str
) -> None:
    """Two nodes on one Redis: the session's media runs on node A (its participant's
    offer placed it there); node B's overview asks node A over the bus."""
    flush_redis(redis_url)
    config = make_config(tmp_path, redis_url=redis_url, media_listen_ips=["127.0.0.1"])
    servers = [
        TestServer(create_app(config.model_copy(update={"node_id": n, "media_enabled": m})))
        for n, m in (("node-a", True), ("node-b", False))
    ]
    for s in servers:
        await s.start_server()
    a, b = (str(s.make_url("")).rstrip("/") for s in servers)
    tokens = TokenService(config)
    clerk_token = tokens.issue(sub=CLERK, role="clerk")
    bot = Bot(a, clerk_token)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{a}/api/cases/LIVE-N/sessions", json={}, headers=auth(clerk_token)) as r,
        ):
            sid = (await r.json())["session_id"]
        await bot.connect()
        await bot.join(sid)
        await bot.publish("camera", PatternVideoTrack(1))
        sup = tokens.issue(sub="sup-01", role="supervisor")
        deadline = time.monotonic() + 10
        while True:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{b}/api/live", headers=auth(sup)) as r,
            ):
                assert r.status == 200, await r.text()
                [live] = (await r.json())["sessions"]
            [me] = live["participants"]
            if me["media"] and me["media"]["fps"]:
                break
            assert time.monotonic() < deadline, live
            await asyncio.sleep(0.3)
        assert me["participant_id"] == bot.participant_id
        assert [t["source"] for t in me["media"]["tracks"]] == ["camera"]
    finally:
        await bot.leave()  # no grace period for the node's shutdown to wait out
        await bot.close()
        for s in servers:
            await s.close()
