"""Broken-off sessions end by themselves (issue #15): a session everyone left without
ending it, or that nobody joined, is ended by the system after ``abandoned_session_s``
with ``reason: "broken_off"``, once across nodes, and after a restart of a single node."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.config import Config

from .conftest import Tokens, auth, flush_redis, make_config
from .wsclient import Signal


async def _session(client: TestClient[Any, Any], tok: Tokens, case: str) -> str:
    res = await client.post(f"/api/cases/{case}/sessions", json={}, headers=auth(tok.clerk()))
    assert res.status == 201
    return str((await res.json())["session_id"])


async def _ended(client: TestClient[Any, Any], tok: Tokens, sid: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = await client.get(f"/api/sessions/{sid}", headers=auth(tok.supervisor()))
        body = await res.json()
        if body.get("session", body)["status"] == "ended":
            return
        assert time.monotonic() < deadline, f"{sid} was never ended"
        await asyncio.sleep(0.1)


async def _events(client: TestClient[Any, Any], tok: Tokens, case: str) -> list[dict[str, Any]]:
    res = await client.get(f"/api/cases/{case}/events", headers=auth(tok.supervisor()))
    assert res.status == 200, await res.text()
    return list((await res.json())["events"])


async def _join(client: TestClient[Any, Any], token: str, sid: str) -> Signal:
    ws = await Signal.connect(client.session, str(client.make_url(f"/ws?token={token}")))
    await ws.request("join", "joined", session_id=sid)
    return ws


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_sessions_everyone_left_or_nobody_joined_end_as_broken_off(
    tmp_path: Path, tok: Tokens, backend: str, request: pytest.FixtureRequest
) -> None:
    redis_url = ""
    if backend == "redis":
        redis_url = request.getfixturevalue("redis_url")
        flush_redis(redis_url)
    config = make_config(
        tmp_path, redis_url=redis_url, media_enabled=False, abandoned_session_s=0.6
    )
    nodes = ["node-a", "node-b"] if redis_url else ["node-a"]
    clients = [
        TestClient(TestServer(create_app(config.model_copy(update={"node_id": n})))) for n in nodes
    ]
    for c in clients:
        await c.start_server()
    a, b = clients[0], clients[-1]
    try:
        left = await _session(a, tok, "BO-1")
        nobody = await _session(a, tok, "BO-2")
        normal = await _session(a, tok, "BO-3")
        res = await a.post(
            f"/api/sessions/{left}/invitations",
            json={"dept": "city-amr"},
            headers=auth(tok.clerk()),
        )
        assert res.status == 201
        clerk = await _join(a, tok.clerk(), left)  # on one node...
        reviewer = await _join(b, tok.reviewer(), left)  # ...and the other
        for ws in (clerk, reviewer):
            await ws.request("leave", "left")
        res = await a.post(f"/api/sessions/{normal}/end", headers=auth(tok.clerk()))
        assert res.status == 200
        for sid in (left, nobody):
            await _ended(b, tok, sid, timeout=10)
        await asyncio.sleep(1.5)  # every node swept again: still one end each
        for case in ("BO-1", "BO-2", "BO-3"):
            ends = [e for e in await _events(a, tok, case) if e["type"] == "session.ended"]
            assert len(ends) == 1, ends
            if case == "BO-3":  # ended by the clerk: no reason
                assert ends[0]["actor"]["sub"] == "clerk-01"
                assert "reason" not in ends[0]["data"]
            else:
                assert ends[0]["actor"] is None and ends[0]["data"]["reason"] == "broken_off"
        for sid, case in ((left, "BO-1"), (nobody, "BO-2")):
            manifest = config.data_dir / "archive" / case / sid / "manifest.json"
            deadline = time.monotonic() + 10
            while not manifest.exists():  # sealed: replayable like any other end
                assert time.monotonic() < deadline, f"{sid} was never sealed"
                await asyncio.sleep(0.1)
        await clerk.close()
        await reviewer.close()
    finally:
        for c in clients:
            await c.close()


async def test_a_broken_off_session_ends_after_a_restart(tmp_path: Path, tok: Tokens) -> None:
    """The wait is in the journal: a node stopped after everyone left ends the session
    when it comes back, once the time is up."""
    config: Config = make_config(tmp_path, media_enabled=False, abandoned_session_s=1.0)
    slow = config.model_copy(update={"abandoned_session_s": 3600.0})
    async with TestClient(TestServer(create_app(slow))) as client:
        sid = await _session(client, tok, "BO-R")
        ws = await _join(client, tok.clerk(), sid)
        await ws.request("leave", "left")
        await ws.close()
    async with TestClient(TestServer(create_app(config))) as client:
        await _ended(client, tok, sid, timeout=10)
        ends = [e for e in await _events(client, tok, "BO-R") if e["type"] == "session.ended"]
        assert [e["data"]["reason"] for e in ends] == ["broken_off"]
