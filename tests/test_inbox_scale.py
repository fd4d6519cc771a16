"""Idle inbox sockets at a small scale (issue #13, "Redis at city scale"): every socket of
a rung department gets the invitation in both modes with no error, a node's Redis
connections stay within its pool whatever the number of sockets, and a pool held up
answers JSON 503 ``store_unavailable`` and recovers by itself. Behaviour, not timing:
the figures are ``jointreview bench inbox``'s."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from signaling.auth import TokenService
from signaling.config import Config
from signaling.state import Store

from .conftest import SECRET, ServerProcess, auth
from .test_faults import Factory, RedisProcess

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(400)
def test_bench_inbox_rings_every_socket_in_both_modes() -> None:
    argv = ["bench", "inbox", "--sockets", "300", "--dept-sockets", "100", "--rings", "3"]
    argv += ["--clients", "2", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "jointreview.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {r["mode"]: r for r in summary["results"]}
    assert set(rows) == {"memory", "redis"}
    for row in rows.values():
        assert row["sockets_open"] == 300, row
        assert row["errors"] == 0, row["error_samples"]
        assert row["deliveries"] == 3 * 100, row  # every socket of the department, each ring
        assert row["node_log_problems"] == 0, row["node_log_samples"]
        for key in ("ring_ms_p50", "ring_ms_p95", "ring_ms_max", "kb_per_socket"):
            assert row[key] is not None and row[key] > 0, (key, row)


@pytest.fixture
def node_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisProcess(workdir)
    server.start()
    yield server
    server.stop()


def _tokens(tmp_path: Path) -> TokenService:
    return TokenService(Config(data_dir=tmp_path, jwt_secret=SECRET))


def _ws(url: str, token: str) -> str:
    return f"{url.replace('http', 'ws')}/ws?token={token}"


def _node_connections(url: str) -> int:
    """Connections Redis holds from anyone but this test's own client."""
    r = redis.Redis.from_url(url)
    try:
        return len(r.client_list()) - 1
    finally:
        r.close()


async def _open(http: aiohttp.ClientSession, url: str, tokens: list[str]) -> list[Any]:
    sockets = []
    for token in tokens:
        ws = await http.ws_connect(_ws(url, token))
        assert (await ws.receive_json(timeout=30))["type"] == "welcome"
        sockets.append(ws)
    return sockets


async def _invitations(ws: Any, want: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < want:
        msg = await ws.receive_json(timeout=30)
        if msg["type"] == "invitation":
            got.append(msg)
    return got


async def test_sockets_hold_no_redis_connections_and_a_held_pool_answers_json_503(
    server_factory: Factory, node_redis: RedisProcess, tmp_path: Path
) -> None:
    # No shared database: the session view then reads Redis, the pool under test (with
    # PostgreSQL it is answered from the record and never waits for the pool).
    env = {"JR_REDIS_POOL_SIZE": "4", "JR_REDIS_POOL_TIMEOUT_S": "0.3", "JR_DATABASE_URL": ""}
    node: ServerProcess = server_factory(redis_url=node_redis.url, env=env)
    t = _tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    reviewers = [
        t.issue(sub=f"rev-{i}", role="reviewer", dept="city-amr", level="city") for i in range(60)
    ]
    async with aiohttp.ClientSession() as http:
        sockets = await _open(http, node.url, reviewers)
        # 60 sockets, one pub/sub connection: the node's connections stay in its pool
        # (4 command connections, one pub/sub, a few spare for health checks).
        assert _node_connections(node_redis.url) <= 4 + 4
        async with http.post(
            f"{node.url}/api/cases/POOL-1/sessions", json={}, headers=auth(clerk)
        ) as res:
            assert res.status == 201
            sid = (await res.json())["session_id"]
        async with http.post(
            f"{node.url}/api/sessions/{sid}/invitations",
            json={"dept": "city-amr"},
            headers=auth(clerk),
        ) as res:
            assert res.status == 201
            iid = (await res.json())["invitation_id"]
        for ws in sockets:
            (msg,) = await _invitations(ws, 1)
            assert msg["invitation"]["invitation_id"] == iid
        assert _node_connections(node_redis.url) <= 4 + 4

        # Redis holds every command for 2 s: the pool's four connections wait, the
        # requests beyond them wait 0.3 s for one and are refused, as JSON.
        pauser = redis.Redis.from_url(node_redis.url)
        pauser.execute_command("CLIENT", "PAUSE", "2000", "ALL")
        try:

            async def one() -> tuple[int, str, Any]:
                async with http.get(f"{node.url}/api/sessions/{sid}", headers=auth(clerk)) as res:
                    return res.status, res.content_type, await res.json(content_type=None)

            answers = await asyncio.gather(*(one() for _ in range(20)))
        finally:
            pauser.close()
        refused = [a for a in answers if a[0] == 503]
        assert refused, [a[0] for a in answers]
        for status, ctype, body in answers:
            assert status in (200, 503), (status, body)
            assert ctype == "application/json"
        for _, _, body in refused:
            assert body["error"]["code"] == "store_unavailable"
            assert "redis_pool_size" in body["error"]["message"]
        # Nothing to clean up: the next requests are served.
        async with http.get(f"{node.url}/api/sessions/{sid}", headers=auth(clerk)) as res:
            assert res.status == 200
        async with http.post(
            f"{node.url}/api/sessions/{sid}/invitations",
            json={"dept": "city-amr"},
            headers=auth(clerk),
        ) as res:
            assert res.status == 201
        for ws in sockets:
            await _invitations(ws, 1)
            await ws.close()
    text = node.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


async def test_index_ranges_reads_several_whole_indexes_in_one_call(store: Store) -> None:
    await store.index_add("a", "a2", 2.0)
    await store.index_add("a", "a1", 1.0)
    await store.index_add("b", "b1", 5.0)
    assert await store.index_ranges(["a", "missing", "b"]) == [["a1", "a2"], [], ["b1"]]
