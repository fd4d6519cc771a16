"""Faults a node must survive and say so: Redis stopped and restarted, a full disk.

Real processes only: a redis-server this module starts and stops itself (on one port, so
the node reconnects to the same address), a real ``jointreview serve``, and a small
tmpfs mounted as the node's data dir and filled to the last byte.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.auth import TokenService
from signaling.config import Config
from signaling.state import StoreUnavailable

from .conftest import SECRET, ServerProcess, auth, free_port, make_config, wait_port
from .wsclient import Signal

Factory = Callable[..., ServerProcess]


class RedisProcess:
    """A redis-server that a test can stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run the README's test command")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        # Persistent, as a production Redis is: what was written is there after a restart.
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        args += ["--dir", str(self.workdir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisProcess(workdir)
    server.start()
    yield server
    server.stop()


def _tokens(tmp_path: Path) -> TokenService:
    return TokenService(Config(data_dir=tmp_path, jwt_secret=SECRET))


async def _json(res: aiohttp.ClientResponse) -> Any:
    assert res.content_type == "application/json", (res.status, await res.text())
    return await res.json()


async def _health(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(f"{url}/healthz") as res:
        return res.status, await _json(res)


async def _wait_health(http: aiohttp.ClientSession, url: str, status: int) -> Any:
    """Redis' restart takes a moment to be noticed: poll, bounded."""
    for _ in range(100):
        code, body = await _health(http, url)
        if code == status:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/healthz never answered {status}; last {code} {body}")


def _ws(url: str, token: str) -> str:
    return f"{url.replace('http', 'ws')}/ws?token={token}"


# -- Redis stopped, then back ----------------------------------------------------------


async def test_redis_outage_answers_json_503s_and_the_node_recovers(
    server_factory: Factory, own_redis: RedisProcess, tmp_path: Path
) -> None:
    # Every background loop busy during the outage: the sweeper every 0.25 s, webhooks
    # (to a port nobody listens on) polling every 0.1 s, the export worker.
    env = {
        "JR_RESUME_GRACE_S": "1",
        "JR_WEBHOOK_URLS": '["http://127.0.0.1:9/hook"]',
        "JR_WEBHOOK_SECRET": "s" * 32,
        "JR_WEBHOOK_POLL_S": "0.1",
    }
    node = server_factory(redis_url=own_redis.url, env=env)
    t = _tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    reviewer = t.issue(sub="rev-city-amr-1", role="reviewer", dept="city-amr", level="city")
    async with aiohttp.ClientSession() as http:
        code, body = await _health(http, node.url)
        assert code == 200 and body["status"] == "ok", body["checks"]
        assert body["checks"]["store"]["ok"] is True
        sock = await _clerk_in_session(http, node.url, clerk, "RD-1")

        own_redis.stop()

        body = await _wait_health(http, node.url, 503)
        await asyncio.sleep(1.0)  # the loops meet the outage many times over
        assert body["status"] == "degraded"
        assert body["checks"]["store"]["ok"] is False
        assert body["checks"]["data_dir"]["ok"] is True  # only the failing part is named
        # A case's view reads the store when each node keeps its own SQLite record, and
        # the record, which Redis's outage leaves alone, when they share PostgreSQL.
        async with http.get(f"{node.url}/api/cases/RD-1", headers=auth(clerk)) as res:
            if node.env["JR_DATABASE_URL"]:
                assert res.status == 200, await res.text()
            else:
                assert res.status == 503
                assert (await _json(res))["error"]["code"] == "store_unavailable"
        async with http.post(
            f"{node.url}/api/cases/RD-2/sessions", json={"matter": "m"}, headers=auth(clerk)
        ) as res:
            assert res.status == 503
            assert (await _json(res))["error"]["code"] == "store_unavailable"
        # The open socket: its message is answered with an error and the socket stays.
        err = await sock.request("chat", "error", text="Redis is down")
        assert err["code"] == "store_unavailable"
        pong = await sock.request("ping", "pong")
        assert pong["type"] == "pong"
        # A new socket: an error and a clean close, not a traceback and a dropped socket.
        async with http.ws_connect(_ws(node.url, reviewer)) as ws:
            msg = await ws.receive_json(timeout=30)
            assert msg["type"] == "error" and msg["code"] == "store_unavailable"
            closing = await ws.receive(timeout=30)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1013  # try again later
            assert closing.extra == "store_unavailable"

        own_redis.start()

        body = await _wait_health(http, node.url, 200)
        assert body["status"] == "ok" and body["checks"]["store"]["ok"] is True
        ack = await sock.request("chat", "ack", text="Redis is back")
        assert ack["seq"] >= 1
        # The bus is subscribed again: the session's chat reaches its sockets.
        chat = await sock.wait("chat", lambda m: m["text"] == "Redis is back", timeout=10)
        assert chat["seq"] == ack["seq"]
        async with http.post(
            f"{node.url}/api/cases/RD-2/sessions", json={"matter": "m"}, headers=auth(clerk)
        ) as res:
            assert res.status == 201
        rev = await Signal.connect(http, _ws(node.url, reviewer))
        await rev.close()
        await sock.close()
    # One warning per outage and loop, not a traceback per attempt.
    text = node.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    for loop in ("sweeper", "webhooks"):
        assert text.count(f"{loop}: the store is unavailable") == 1, text[-3000:]
        assert text.count(f"{loop}: the store is back") == 1, text[-3000:]


async def _clerk_in_session(http: aiohttp.ClientSession, url: str, clerk: str, case: str) -> Signal:
    """The clerk's socket, joined to a new session of ``case``."""
    async with http.post(
        f"{url}/api/cases/{case}/sessions", json={"matter": "m"}, headers=auth(clerk)
    ) as res:
        assert res.status == 201
        sid = str((await res.json())["session_id"])
    sock = await Signal.connect(http, _ws(url, clerk))
    await sock.request("join", "joined", session_id=sid)
    return sock


# -- a full disk ------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, mounted by the test (root) and unmounted after it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        # Not a skip: a full disk untested would pass for a full disk handled.
        pytest.fail("needs root and mount(8) to make a small filesystem (tmpfs)")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True
    )
    if made.returncode != 0:
        pytest.fail(f"mounting a tmpfs is not permitted here: {made.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(directory: Path) -> Path:
    """Write a filler file until the filesystem is full; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        chunk = b"\0" * 65536
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return filler


async def _case_chats(http: aiohttp.ClientSession, url: str, token: str, case: str) -> list[str]:
    texts: list[str] = []
    cursor = ""
    while True:  # the whole timeline, a page at a time
        query = f"?limit=500&cursor={cursor}" if cursor else "?limit=500"
        async with http.get(f"{url}/api/cases/{case}/events{query}", headers=auth(token)) as res:
            assert res.status == 200, await res.text()
            body = await res.json()
        texts += [e["data"]["text"] for e in body["events"] if e["type"] == "chat.message"]
        cursor = body["next_cursor"]
        if not cursor:
            return texts


async def test_a_full_disk_refuses_writes_and_keeps_memory_and_disk_the_same(
    server_factory: Factory, small_fs: Path, tmp_path: Path
) -> None:
    # The mount itself is the data dir: the server's log (next to it) is not on it.
    node = server_factory(
        data_dir=small_fs, env={"JR_MEDIA_ENABLED": "false", "JR_DISK_MIN_FREE_BYTES": "262144"}
    )
    t = _tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    sup = t.issue(sub="sup-01", role="supervisor")
    acked: list[str] = []
    refused: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        sock = await _clerk_in_session(http, node.url, clerk, "DF-1")
        for i in range(5):
            await sock.request("chat", "ack", text=f"before {i}")
            acked.append(f"before {i}")
        filler = _fill(small_fs)
        # The journal's last page may still hold a few lines: write until refused.
        for i in range(200):
            if len(refused) >= 20:
                break
            text = f"full {i} " + "x" * 200
            ref = f"c{i}"
            await sock.send(type="chat", ref=ref, text=text)
            reply = await _reply(sock, ref)
            if reply["type"] == "ack":
                acked.append(text)
            else:
                refused.append(reply)
        assert refused, "the disk never filled up"
        assert {r["code"] for r in refused} == {"store_unavailable"}
        code, body = await _health(http, node.url)
        assert code == 503 and body["status"] == "degraded"
        assert body["checks"]["data_dir"]["ok"] is False
        async with http.post(
            f"{node.url}/api/cases/DF-2/sessions", json={"matter": "m"}, headers=auth(clerk)
        ) as res:
            assert res.status == 503
            assert (await _json(res))["error"]["code"] == "store_unavailable"
        # The case view (the record) shows nothing that was not acknowledged; it may lag
        # behind while its database (SQLite, on this disk too) cannot write.
        live = await _case_chats(http, node.url, sup, "DF-1")
        assert live == [text for text in acked if text in live]
        # Space comes back: writes work again, without a restart, and the record catches
        # up with every acknowledged chat (docs/history.md).
        filler.unlink()
        await sock.request("chat", "ack", text="after")
        acked.append("after")
        assert (await _health(http, node.url))[0] == 200
        for _ in range(100):
            if await _case_chats(http, node.url, sup, "DF-1") == acked:
                break
            await asyncio.sleep(0.1)
        assert await _case_chats(http, node.url, sup, "DF-1") == acked
        await sock.close()
    node.stop()
    node.start()
    async with aiohttp.ClientSession() as http:
        assert await _case_chats(http, node.url, sup, "DF-1") == acked
    assert len(acked) > 6  # some went through after the filler, until the page was full
    text = node.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


async def _reply(sock: Signal, ref: str) -> dict[str, Any]:
    """The ack or the error that answers ``ref``."""
    for _ in range(2000):
        for i, msg in enumerate(sock.received):
            if msg.get("ref") == ref and msg.get("type") in ("ack", "error"):
                return sock.received.pop(i)
        await asyncio.sleep(0.005)
    raise AssertionError(f"no answer to {ref}; have {sock.received}")


def _png(width: int = 64, height: int = 64) -> bytes:
    """A real (decodable) PNG of noise, too big to fit in a full disk's last page."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    rows = b"".join(b"\0" + os.urandom(width * 3) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 0))
        + chunk(b"IEND", b"")
    )


async def test_a_still_that_cannot_be_written_is_a_507_and_never_filed(
    server_factory: Factory, small_fs: Path, tmp_path: Path
) -> None:
    env = {"JR_MEDIA_ENABLED": "false", "JR_DISK_MIN_FREE_BYTES": "262144"}
    node = server_factory(data_dir=small_fs, env=env)
    t = _tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    still = _png()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{node.url}/api/cases/ST-1/sessions", json={"matter": "m"}, headers=auth(clerk)
        ) as res:
            sid = (await res.json())["session_id"]
        url = f"{node.url}/api/sessions/{sid}/snapshots"
        headers = {**auth(clerk), "Content-Type": "image/png"}
        async with http.post(url, data=still, headers=headers) as res:
            assert res.status == 201, await res.text()
        filler = _fill(small_fs)
        async with http.post(url, data=still, headers=headers) as res:
            assert res.status == 507
            assert (await _json(res))["error"]["code"] == "insufficient_storage"
        async with http.get(f"{node.url}/api/cases/ST-1", headers=auth(clerk)) as res:
            events = (await res.json())["events"]
        assert [e["type"] for e in events].count("snapshot.taken") == 1
        shots = list((small_fs / "archive").rglob("snapshots/*"))
        assert len(shots) == 1, shots  # no half-written still left behind
        filler.unlink()
        async with http.post(url, data=still, headers=headers) as res:
            assert res.status == 201, await res.text()


# -- healthz and the error middleware, in process -----------------------------------------


async def test_healthz_names_every_check(tmp_path: Path) -> None:
    config = make_config(tmp_path, media_enabled=False, disk_min_free_bytes=0)
    async with TestClient(TestServer(create_app(config))) as client:
        res = await client.get("/healthz")
        assert res.status == 200
        body = await res.json()
    assert body["status"] == "ok" and body["state"] == "memory"
    checks = body["checks"]
    assert checks["store"] == {"ok": True, "kind": "memory", "error": None}
    assert checks["data_dir"]["ok"] is True and checks["data_dir"]["writable"] is True
    assert checks["data_dir"]["free_bytes"] > 0
    assert checks["media"]["ok"] is True and checks["media"]["enabled"] is False


async def test_healthz_is_degraded_below_the_free_space_setting(tmp_path: Path) -> None:
    config = make_config(tmp_path, media_enabled=False, disk_min_free_bytes=1 << 62)
    async with TestClient(TestServer(create_app(config))) as client:
        res = await client.get("/healthz")
        assert res.status == 503
        body = await res.json()
    assert body["status"] == "degraded"
    data_dir = body["checks"]["data_dir"]
    assert data_dir["ok"] is False and data_dir["writable"] is True
    assert "disk_min_free_bytes" in data_dir["error"]
    assert body["checks"]["store"]["ok"] is True  # only the failing part is named


async def test_unexpected_failures_and_outages_outside_the_api_are_json(tmp_path: Path) -> None:
    """aiohttp's own 500 page is text; ours is JSON, and a store outage is a 503."""
    app = create_app(make_config(tmp_path, media_enabled=False))

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    async def outage(request: web.Request) -> web.Response:
        raise StoreUnavailable("Redis is unavailable: test")

    app.router.add_get("/broken", broken)
    app.router.add_get("/outage", outage)
    async with TestClient(TestServer(app)) as client:
        res = await client.get("/broken")
        assert res.status == 500
        assert (await _json(res))["error"]["code"] == "internal_error"
        res = await client.get("/outage")
        assert res.status == 503
        assert (await _json(res))["error"]["code"] == "store_unavailable"
        assert res.headers["Retry-After"]
