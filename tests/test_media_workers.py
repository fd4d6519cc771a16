"""Media workers (``media_workers = 2``) in real ``jointreview serve`` processes, with real
aiortc participants (bench/bot.py): sessions spread over workers and exchange media, a
worker's recording makes the case file, a worker killed with SIGKILL is replaced, and a
drained node places no new session (the next node does)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.bot import Bot
from bench.pattern_media import PatternVideoTrack, read_pattern
from signaling.auth import TokenService
from signaling.config import Config

from .conftest import SECRET, ServerProcess, auth

Factory = Callable[..., ServerProcess]
ENV = {"JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]'}
WORKERS = {**ENV, "JR_MEDIA_WORKERS": "2"}


def tokens(tmp_path: Path) -> TokenService:
    return TokenService(Config(data_dir=tmp_path, jwt_secret=SECRET))


async def _json(http: aiohttp.ClientSession, method: str, url: str, token: str) -> Any:
    async with http.request(method, url, json={}, headers=auth(token)) as res:
        assert res.status in (200, 201), await res.text()
        return await res.json()


async def _health(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/healthz") as res:
        return dict((await res.json())["checks"]["media"])


async def _until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.1)


async def _pair(url: str, t: TokenService, sid: str, idents: tuple[int, int]) -> list[Bot]:
    """Two participants in a session, each seeing the other's pattern."""
    bots = [Bot(url, t.issue(sub=f"u{i}", role="clerk")) for i in idents]
    for bot, ident in zip(bots, idents, strict=True):
        await bot.connect()
        await bot.join(sid)
        await bot.publish("camera", PatternVideoTrack(ident))

    async def both() -> bool:
        return all(b.receiving(1) for b in bots)

    await _until("each receives the other", both)
    for bot, other in ((bots[0], idents[1]), (bots[1], idents[0])):
        remote = next(iter(bot.remotes.values()))
        assert remote.track is not None
        frame = await asyncio.wait_for(remote.track.recv(), 5)
        assert read_pattern(frame)[0] == other
    return bots


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _cli(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


async def _placement(http: aiohttp.ClientSession, url: str, admin: str) -> dict[str, Any]:
    body = await _json(http, "GET", f"{url}/api/admin/media", admin)
    return {p["session_id"]: p for p in body["sessions"]} | {"_hosts": body["hosts"]}


async def test_sessions_spread_over_workers_exchange_media_and_are_recorded(
    server_factory: Factory, tmp_path: Path
) -> None:
    node = server_factory(env=WORKERS)
    t = tokens(tmp_path)
    clerk, admin = t.issue(sub="clerk-01", role="clerk"), t.issue(sub="admin", role="admin")
    bots: list[Bot] = []
    async with aiohttp.ClientSession() as http:
        media = await _health(http, node.url)
        assert [w["alive"] for w in media["workers"]] == [True, True]
        assert len({w["pid"] for w in media["workers"]} | {node.proc.pid if node.proc else 0}) == 3
        sids = [
            (await _json(http, "POST", f"{node.url}/api/cases/MW-{n}/sessions", clerk))[
                "session_id"
            ]
            for n in (1, 2)
        ]
        try:
            # At the same moment: placements not yet in any load report still spread.
            pairs = await asyncio.gather(
                _pair(node.url, t, sids[0], (1, 2)), _pair(node.url, t, sids[1], (3, 4))
            )
            bots += [bot for pair in pairs for bot in pair]
            placed = await _placement(http, node.url, admin)
            assert {placed[s]["worker"] for s in sids} == {0, 1}, placed
            assert len(placed["_hosts"]) == 2
            media = await _health(http, node.url)
            assert sorted(w["rooms"] for w in media["workers"]) == [1, 1]
            assert media["rooms"] == 2
        finally:
            for bot in bots:
                await bot.close()
        for n, sid in zip((1, 2), sids, strict=True):
            await _json(http, "POST", f"{node.url}/api/sessions/{sid}/end", clerk)
            manifest_path = node.data_dir / "archive" / f"MW-{n}" / sid / "manifest.json"

            async def sealed(p: Path = manifest_path) -> Any:
                return await asyncio.to_thread(_read_json, p)

            manifest = await _until("the case file is sealed", sealed, 30)
            tracks = manifest["recording"]["tracks"]
            assert sorted(t["source"] for t in tracks) == ["camera", "camera"], tracks
            assert all(t["state"] == "closed" and not t.get("error") for t in tracks), tracks
            for track in tracks:
                assert (manifest_path.parent / track["file"]).stat().st_size > 0


async def test_a_killed_worker_is_replaced_and_its_session_placed_again(
    server_factory: Factory, tmp_path: Path
) -> None:
    node = server_factory(env=WORKERS)
    t = tokens(tmp_path)
    clerk, admin = t.issue(sub="clerk-01", role="clerk"), t.issue(sub="admin", role="admin")
    bots: list[Bot] = []
    async with aiohttp.ClientSession() as http:
        sid = (await _json(http, "POST", f"{node.url}/api/cases/MW-9/sessions", clerk))[
            "session_id"
        ]
        try:
            bots += await _pair(node.url, t, sid, (1, 2))
            worker = (await _placement(http, node.url, admin))[sid]["worker"]
            before = (await _health(http, node.url))["workers"][worker]
            os.kill(before["pid"], signal.SIGKILL)
            # Its participants are told their media is gone (the "media lost" path).
            for bot in bots:
                lost = await bot.wait_for("media.state", lambda m: m["state"] == "closed")
                assert lost["reason"] == "media_worker_lost"

            async def replaced() -> Any:
                now = (await _health(http, node.url))["workers"][worker]
                return now if now["alive"] and now["pid"] != before["pid"] else None

            after = await _until("the worker is started again", replaced)
            assert after["restarts"] == 1 and after["rooms"] == 0
            media = await _health(http, node.url)
            assert media["ok"] and all(w["alive"] for w in media["workers"])
            # The session is placed again at its next offer: new participants meet there.
            bots += await _pair(node.url, t, sid, (5, 6))
            placed = await _placement(http, node.url, admin)
            assert sid in placed
            # A new session goes to a live worker and carries media too.
            other = (await _json(http, "POST", f"{node.url}/api/cases/MW-10/sessions", clerk))[
                "session_id"
            ]
            bots += await _pair(node.url, t, other, (7, 8))
        finally:
            for bot in bots:
                await bot.close()


async def test_a_drained_node_places_no_new_session(
    server_factory: Factory, redis_url: str, tmp_path: Path
) -> None:
    """``jointreview drain`` (and SIGUSR1/SIGUSR2) on node A: a session started through
    A gets its media on B; A's healthz says it drains."""
    env = {**ENV, "JR_NODE_ID": ""}
    a = server_factory(redis_url=redis_url, env={**env, "JR_NODE_ID": "node-a"})
    b = server_factory(redis_url=redis_url, env={**env, "JR_NODE_ID": "node-b"})
    t = tokens(tmp_path)
    clerk, admin = t.issue(sub="clerk-01", role="clerk"), t.issue(sub="admin", role="admin")
    drain = [sys.executable, "-m", "jointreview.cli", "drain", "--url", a.url]
    cli_env = {**os.environ, "JR_JWT_SECRET": SECRET, "JR_DATA_DIR": str(tmp_path / "cli")}
    done = await asyncio.to_thread(_cli, drain, cli_env)
    assert done.returncode == 0, done.stderr
    assert "node-a: draining" in done.stdout
    bots: list[Bot] = []
    async with aiohttp.ClientSession() as http:
        assert (await _health(http, a.url))["draining"] is True
        assert (await _health(http, b.url))["draining"] is False
        body = await _json(http, "GET", f"{a.url}/api/admin/media", admin)
        assert {(h["node"], h["draining"]) for h in body["hosts"]} == {
            ("node-a", True),
            ("node-b", False),
        }
        sid = (await _json(http, "POST", f"{a.url}/api/cases/MW-D/sessions", clerk))["session_id"]
        try:
            bots += await _pair(a.url, t, sid, (1, 2))  # signaling through A
            assert sid in await _placement(http, b.url, admin)  # media on B
            assert sid not in await _placement(http, a.url, admin)
        finally:
            for bot in bots:
                await bot.close()
        undo = await asyncio.to_thread(_cli, [*drain, "--undo"], cli_env)
        assert undo.returncode == 0 and "taking new sessions" in undo.stdout, undo.stderr
        assert (await _health(http, a.url))["draining"] is False
        assert a.proc is not None
        a.proc.send_signal(signal.SIGUSR1)

        async def draining() -> bool:
            return bool((await _health(http, a.url))["draining"])

        await _until("SIGUSR1 drains", draining)
        a.proc.send_signal(signal.SIGUSR2)

        async def taking() -> bool:
            return not (await _health(http, a.url))["draining"]

        await _until("SIGUSR2 ends the drain", taking)


async def test_a_clerk_starts_and_stops_the_recording_of_a_session_on_a_worker(
    server_factory: Factory, tmp_path: Path
) -> None:
    """recording_policy = "clerk": the start and the stop reach the session's worker,
    whose recorder writes the run and closes it."""
    node = server_factory(env={**WORKERS, "JR_RECORDING_POLICY": "clerk"})
    t = tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    bots: list[Bot] = []
    async with aiohttp.ClientSession() as http:
        sid = (await _json(http, "POST", f"{node.url}/api/cases/MW-R/sessions", clerk))[
            "session_id"
        ]
        index_path = node.data_dir / "archive" / "MW-R" / sid / "recording.json"
        try:
            bots += await _pair(node.url, t, sid, (1, 2))
            assert not await asyncio.to_thread(index_path.exists)  # nothing before consent
            ack = await bots[0].request({"type": "recording.start"})
            assert ack["recording"] is True

            async def run_state() -> Any:
                index = await asyncio.to_thread(_read_json, index_path)
                return index["runs"][-1]["state"] if index and index["runs"] else None

            await _until("the worker records", run_state)
            await asyncio.sleep(1.0)
            await bots[0].request({"type": "recording.stop"})

            async def closed() -> bool:
                return await run_state() == "closed"

            await _until("the worker closes the run", closed)
            index = await asyncio.to_thread(_read_json, index_path)
            [run] = index["runs"]
            health = await _health(http, node.url)
            assert run["pid"] in {w["pid"] for w in health["workers"]}  # written by a worker
            assert sorted(t["source"] for t in index["tracks"]) == ["camera", "camera"]
        finally:
            for bot in bots:
                await bot.close()
