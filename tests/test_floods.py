"""One link must not take a session or a node down (issue #10, finding 2): floods against
a real ``jointreview serve`` process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling.auth import TokenService
from signaling.config import Config

from .conftest import SECRET, ServerProcess, auth
from .wsclient import Signal

Factory = Callable[..., ServerProcess]
TEXT_4K = "字" * 1300 + "x" * 100  # about 4 KB of UTF-8, as in the issue


def tokens(tmp_path: Path) -> TokenService:
    return TokenService(Config(data_dir=tmp_path, jwt_secret=SECRET))


def ws_url(server: ServerProcess, token: str) -> str:
    return f"{server.url.replace('http', 'ws')}/ws?token={token}"


def rss_mib(server: ServerProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


async def open_session(
    http: aiohttp.ClientSession, server: ServerProcess, clerk: str, case: str
) -> tuple[str, str]:
    """A session of ``case`` and an applicant link's token for it."""
    async with http.post(
        f"{server.url}/api/cases/{case}/sessions", json={}, headers=auth(clerk)
    ) as res:
        assert res.status == 201, await res.text()
        sid = (await res.json())["session_id"]
    async with http.post(
        f"{server.url}/api/sessions/{sid}/applicant-link", json={}, headers=auth(clerk)
    ) as res:
        assert res.status == 201, await res.text()
        return sid, (await res.json())["token"]


async def chat_events(
    http: aiohttp.ClientSession, server: ServerProcess, clerk: str, case: str
) -> int:
    async with http.get(f"{server.url}/api/cases/{case}", headers=auth(clerk)) as res:
        assert res.status == 200
        events = (await res.json())["events"]
    return sum(1 for e in events if e["type"] == "chat.message")


def replies(sig: Signal, refs: set[str]) -> list[dict[str, Any]]:
    return [m for m in sig.received if m.get("ref") in refs]


async def test_chat_flood_from_an_applicant_link_is_cut(
    server_factory: Factory, tmp_path: Path
) -> None:
    cap = 30
    server = server_factory(env={"JR_CHAT_PER_MINUTE_PER_SESSION": str(cap)})
    clerk = tokens(tmp_path).issue(sub="clerk-01", role="clerk")
    async with aiohttp.ClientSession() as http:
        sid, applicant = await open_session(http, server, clerk, "FL-1")
        app = await Signal.connect(http, ws_url(server, applicant))
        await app.request("join", "joined", session_id=sid)
        rss_before = rss_mib(server)
        # A burst well over the per-socket rate (burst 40) and the session's chat cap,
        # but short of a sustained flood: refused messages are answered, the socket kept.
        refs = {f"c{i}" for i in range(300)}
        await asyncio.gather(*(app.send(type="chat", ref=r, text=TEXT_4K) for r in sorted(refs)))
        # A clerk's request is served during the flood.
        async with http.get(f"{server.url}/api/sessions/{sid}", headers=auth(clerk)) as res:
            assert res.status == 200
        for _ in range(100):
            if len(replies(app, refs)) == len(refs):
                break
            await asyncio.sleep(0.05)
        answers = replies(app, refs)
        assert len(answers) == len(refs)
        acked = [m for m in answers if m["type"] == "ack"]
        limited = [m for m in answers if m.get("code") == "rate_limited"]
        assert len(acked) <= cap
        assert len(acked) + len(limited) == len(refs)
        assert all(m["retry_after_ms"] > 0 for m in limited)
        assert await chat_events(http, server, clerk, "FL-1") == len(acked) <= cap
        # The socket is still there and answers once the rate allows.
        await asyncio.sleep(1.0)  # the socket's bucket refills at ws_rate_per_s (20)
        pong = await app.request("ping", "pong")
        assert pong["type"] == "pong"
        assert rss_mib(server) < rss_before + 64
        await app.close()


async def test_sustained_flood_closes_the_socket(server_factory: Factory, tmp_path: Path) -> None:
    server = server_factory()
    clerk = tokens(tmp_path).issue(sub="clerk-01", role="clerk")
    async with aiohttp.ClientSession() as http:
        sid, applicant = await open_session(http, server, clerk, "FL-2")
        app = await Signal.connect(http, ws_url(server, applicant))
        await app.request("join", "joined", session_id=sid)
        try:
            for i in range(5000):
                await app.send(type="ping", ref=f"p{i}")
                if i % 50 == 0:
                    await asyncio.sleep(0.001)  # read what came back meanwhile
        except ConnectionError:
            pass  # the server closed it while we were still sending
        # Closed by the server (4428 rate_limited; a client still sending when the server
        # hangs up may see its connection reset instead: 1006).
        assert await app.closed(timeout=10) in (4428, 1006)
        errors = [m for m in app.received if m.get("type") == "error"]
        assert errors and all(m["code"] == "rate_limited" for m in errors)
        assert sum(1 for m in app.received if m.get("type") == "pong") <= 100


async def test_one_token_many_sockets_keeps_the_newest(
    server_factory: Factory, tmp_path: Path
) -> None:
    server = server_factory(env={"JR_MAX_SOCKETS_PER_IDENTITY": "8"})
    clerk = tokens(tmp_path).issue(sub="clerk-01", role="clerk")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        _, applicant = await open_session(http, server, clerk, "FL-3")
        socks = [await Signal.connect(http, ws_url(server, applicant)) for _ in range(50)]
        for old in socks[:42]:
            assert await old.closed() == 4408
            err = await old.wait("error")
            assert err["code"] == "too_many_sockets"
        for new in socks[42:]:
            assert (await new.request("ping", "pong"))["type"] == "pong"
        # A clerk is served meanwhile.
        async with http.get(f"{server.url}/api/cases/FL-3", headers=auth(clerk)) as res:
            assert res.status == 200
        for s in socks:
            await s.close()


async def test_sockets_per_address_are_capped(server_factory: Factory, tmp_path: Path) -> None:
    server = server_factory(env={"JR_MAX_SOCKETS_PER_ADDRESS": "5"})
    t = tokens(tmp_path)
    people = [t.issue(sub=f"clerk-{i:02d}", role="clerk") for i in range(7)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        socks = [await Signal.connect(http, ws_url(server, people[i])) for i in range(5)]
        async with http.get(ws_url(server, people[5]).replace("ws", "http", 1)) as res:
            assert res.status == 429
            assert (await res.json())["error"]["code"] == "too_many_sockets"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(server, people[5]))
        assert refused.value.status == 429
        # Counting is exact: one closed, one admitted, and no more.
        await socks.pop().close()
        for _ in range(50):
            async with http.get(f"{server.url}/healthz"):
                pass
            try:
                socks.append(await Signal.connect(http, ws_url(server, people[6])))
                break
            except aiohttp.WSServerHandshakeError:
                await asyncio.sleep(0.05)
        assert len(socks) == 5
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(ws_url(server, people[5]))
        for s in socks:
            await s.close()


async def test_sign_in_flood_gets_429(server_factory: Factory) -> None:
    server = server_factory(env={"JR_SIGNIN_PER_MINUTE": "3"})
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(3):
            async with http.post(
                f"{server.url}/api/auth/demo-login", json={"sub": "clerk-01"}
            ) as res:
                statuses.append(res.status)
        assert statuses == [200, 200, 200]
        async with http.post(f"{server.url}/api/auth/demo-login", json={"sub": "clerk-01"}) as res:
            assert res.status == 429
            body = await res.json()
            assert body["error"]["code"] == "rate_limited"
            assert body["error"]["retry_after_ms"] > 0
            assert int(res.headers["Retry-After"]) >= 1


async def test_chat_too_long_is_refused_and_not_recorded(
    server_factory: Factory, tmp_path: Path
) -> None:
    server = server_factory(env={"JR_CHAT_MAX_CHARS": "100"})
    clerk = tokens(tmp_path).issue(sub="clerk-01", role="clerk")
    async with aiohttp.ClientSession() as http:
        sid, applicant = await open_session(http, server, clerk, "FL-4")
        app = await Signal.connect(http, ws_url(server, applicant))
        await app.request("join", "joined", session_id=sid)
        err = await app.request("chat", "error", text="x" * 101)
        assert err["code"] == "chat_too_long"
        assert "100" in err["message"]
        assert (await app.request("chat", "ack", text="x" * 100))["type"] == "ack"
        assert await chat_events(http, server, clerk, "FL-4") == 1
        await app.close()


async def test_session_chat_cap_holds_across_nodes(
    server_factory: Factory, redis_url: str, tmp_path: Path
) -> None:
    env = {"JR_CHAT_PER_MINUTE_PER_SESSION": "5"}
    a = server_factory(redis_url=redis_url, env=env)
    b = server_factory(redis_url=redis_url, env=env)
    clerk = tokens(tmp_path).issue(sub="clerk-01", role="clerk")
    async with aiohttp.ClientSession() as http:
        sid, applicant = await open_session(http, a, clerk, "FL-5")
        on_a = await Signal.connect(http, ws_url(a, clerk))
        on_b = await Signal.connect(http, ws_url(b, applicant))
        await on_a.request("join", "joined", session_id=sid)
        await on_b.request("join", "joined", session_id=sid)
        answers = []
        for i in range(6):
            sig = on_a if i % 2 else on_b
            ref = f"m{i}"
            await sig.send(type="chat", ref=ref, text=f"message {i}")
            answers.append(
                await sig.wait("ack", lambda m, r=ref: m.get("ref") == r)  # type: ignore[misc]
                if i < 5
                else await sig.wait("error", lambda m, r=ref: m.get("ref") == r)  # type: ignore[misc]
            )
        assert answers[-1]["code"] == "rate_limited"
        assert 0 < answers[-1]["retry_after_ms"] <= 60_000
        assert await chat_events(http, a, clerk, "FL-5") == 5
        await on_a.close()
        await on_b.close()


async def test_identity_rate_spans_its_sockets(server_factory: Factory, tmp_path: Path) -> None:
    env = {"JR_WS_BURST": "100", "JR_IDENTITY_BURST": "10", "JR_IDENTITY_RATE_PER_S": "0.5"}
    server = server_factory(env=env)
    clerk = tokens(tmp_path).issue(sub="clerk-01", role="clerk")
    async with aiohttp.ClientSession() as http:
        socks = [await Signal.connect(http, ws_url(server, clerk)) for _ in range(2)]
        refs = [{f"s{k}p{i}" for i in range(20)} for k in range(2)]
        for sig, mine in zip(socks, refs, strict=True):
            for ref in sorted(mine):
                await sig.send(type="ping", ref=ref)
        for sig, mine in zip(socks, refs, strict=True):
            for _ in range(100):
                if len(replies(sig, mine)) == len(mine):
                    break
                await asyncio.sleep(0.05)
        answers = [m for sig, mine in zip(socks, refs, strict=True) for m in replies(sig, mine)]
        pongs = [m for m in answers if m["type"] == "pong"]
        limited = [m for m in answers if m.get("code") == "rate_limited"]
        # Each socket alone is far under its own burst of 100; together they share 10.
        assert len(pongs) <= 12
        assert len(pongs) + len(limited) == 40
        assert all(m["retry_after_ms"] > 0 for m in limited)
        for s in socks:
            await s.close()
