"""Real ``jointreview serve`` processes: two nodes on one Redis, and restarts that lose nothing."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from signaling.auth import TokenService
from signaling.config import Config

from .conftest import SECRET, ServerProcess, auth
from .wsclient import Signal

Factory = Callable[..., ServerProcess]


def tokens(tmp_path: Path) -> TokenService:
    return TokenService(Config(data_dir=tmp_path, jwt_secret=SECRET))


async def _post(http: aiohttp.ClientSession, url: str, token: str, body: Any) -> Any:
    async with http.post(url, json=body, headers=auth(token)) as res:
        assert res.status == 201, await res.text()
        return await res.json()


async def test_invitation_made_on_one_node_rings_on_the_other(
    server_factory: Factory, redis_url: str, tmp_path: Path
) -> None:
    a = server_factory(redis_url=redis_url)
    b = server_factory(redis_url=redis_url)
    t = tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    reviewer = t.issue(sub="rev-city-amr-1", role="reviewer", dept="city-amr", level="city")
    async with aiohttp.ClientSession() as http:
        rev = await Signal.connect(http, f"{b.url.replace('http', 'ws')}/ws?token={reviewer}")
        clerk_ws = await Signal.connect(http, f"{a.url.replace('http', 'ws')}/ws?token={clerk}")
        created = await _post(http, f"{a.url}/api/cases/MN-1/sessions", clerk, {"matter": "x"})
        sid = created["session_id"]
        await clerk_ws.request("join", "joined", session_id=sid)
        t0 = time.monotonic()
        inv = await _post(
            http, f"{a.url}/api/sessions/{sid}/invitations", clerk, {"dept": "city-amr"}
        )
        got = await rev.wait("invitation", timeout=2.0)
        elapsed = time.monotonic() - t0
        assert elapsed < 2.0
        assert got["invitation"]["invitation_id"] == inv["invitation_id"]
        # Ringing on node B reaches the clerk on node A; so do the answer and the join.
        await clerk_ws.wait("presence", lambda m: m["state"] == "ringing")
        await rev.request("invitation.accept", "ack", invitation_id=inv["invitation_id"])
        await clerk_ws.wait("presence", lambda m: m["state"] == "accepted")
        joined = await rev.request("join", "joined", session_id=sid)
        await clerk_ws.wait(
            "presence",
            lambda m: m["state"] == "joined" and m["participant"]["identity"]["role"] == "reviewer",
        )
        # A dropped socket resumes on the other node into the same slot.
        await rev.close()
        await clerk_ws.wait("presence", lambda m: m["state"] == "reconnecting")
        again = await Signal.connect(http, f"{a.url.replace('http', 'ws')}/ws?token={reviewer}")
        resumed = await again.request("resume", "joined", resume_token=joined["resume_token"])
        assert resumed["participant"]["participant_id"] == joined["participant"]["participant_id"]
        await again.request("chat", "ack", text="跨节点")
        chat = await clerk_ws.wait("chat")
        assert chat["text"] == "跨节点"
        # Both nodes read the same case file.
        async with http.get(f"{b.url}/api/cases/MN-1", headers=auth(clerk)) as res:
            case = await res.json()
        assert [s["session_id"] for s in case["sessions"]] == [sid]
        assert "participant.resumed" in [e["type"] for e in case["events"]]
        await again.close()
        await clerk_ws.close()


async def _write_case(url: str, t: TokenService, case: str) -> tuple[str, str]:
    clerk = t.issue(sub="clerk-01", role="clerk")
    async with aiohttp.ClientSession() as http:
        created = await _post(
            http,
            f"{url}/api/cases/{case}/sessions",
            clerk,
            {"applicant_name": "申请人甲", "matter": "变更登记"},
        )
        sid = created["session_id"]
        inv = await _post(
            http, f"{url}/api/sessions/{sid}/invitations", clerk, {"dept": "district-planning"}
        )
    return sid, inv["invitation_id"]


async def _read_case(url: str, t: TokenService, case: str) -> dict[str, Any]:
    sup = t.issue(sub="sup-01", role="supervisor")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/cases/{case}", headers=auth(sup)) as res,
    ):
        assert res.status == 200, await res.text()
        return dict(await res.json())


async def _check_restart(server: ServerProcess, t: TokenService, sig: int) -> None:
    sid, iid = await _write_case(server.url, t, "RS-1")
    before = await _read_case(server.url, t, "RS-1")
    server.stop(sig)
    server.start()
    after = await _read_case(server.url, t, "RS-1")
    assert after == before
    assert after["sessions"][0]["session_id"] == sid
    assert after["sessions"][0]["applicant_name"] == "申请人甲"
    assert after["invitations"][0]["invitation_id"] == iid
    assert [e["type"] for e in after["events"]] == ["session.created", "invitation.created"]


async def test_single_node_restart_loses_no_case_data(
    server_factory: Factory, tmp_path: Path
) -> None:
    server = server_factory(data_dir=tmp_path / "one")
    await _check_restart(server, tokens(tmp_path), signal.SIGTERM)


async def test_single_node_kill_9_loses_no_case_data(
    server_factory: Factory, tmp_path: Path
) -> None:
    server = server_factory(data_dir=tmp_path / "one")
    await _check_restart(server, tokens(tmp_path), signal.SIGKILL)


async def test_redis_node_restart_loses_no_case_data(
    server_factory: Factory, redis_url: str, tmp_path: Path
) -> None:
    server = server_factory(redis_url=redis_url)
    t = tokens(tmp_path)
    sid, _ = await _write_case(server.url, t, "RS-2")
    before = await _read_case(server.url, t, "RS-2")
    server.stop(signal.SIGKILL)
    server.start()
    assert await _read_case(server.url, t, "RS-2") == before
    assert before["sessions"][0]["session_id"] == sid


async def test_generated_secret_survives_restart(server_factory: Factory, tmp_path: Path) -> None:
    """With no configured secret, tokens minted before a restart stay valid after it."""
    data = tmp_path / "gen"
    server = server_factory(data_dir=data, env={"JR_JWT_SECRET": ""})
    secret = (data / "jwt_secret").read_text().strip()
    assert len(secret) >= 32 and (data / "jwt_secret").stat().st_mode & 0o777 == 0o600
    token = TokenService(Config(data_dir=data)).issue(sub="sup-01", role="supervisor")
    server.stop()
    server.start()
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}/api/me", headers=auth(token)) as res,
    ):
        assert res.status == 200


async def test_media_of_a_session_is_hosted_once_whichever_node_people_use(
    server_factory: Factory, redis_url: str, tmp_path: Path
) -> None:
    """Participants signal through different nodes; the session's media lives on one
    node (a lease in Redis) and the others relay the negotiation to it."""
    import asyncio

    from bench.bot import Bot
    from bench.pattern_media import PatternVideoTrack, read_pattern

    env = {"JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]'}
    a = server_factory(redis_url=redis_url, env=env)
    b = server_factory(redis_url=redis_url, env=env)
    t = tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    async with aiohttp.ClientSession() as http:
        created = await _post(http, f"{a.url}/api/cases/MN-2/sessions", clerk, {})
    sid = created["session_id"]
    one = Bot(a.url, t.issue(sub="u1", role="clerk"))
    two = Bot(b.url, t.issue(sub="u2", role="clerk"))
    try:
        for p in (one, two):
            await p.connect()
            await p.join(sid)
        await one.publish("camera", PatternVideoTrack(1))
        await two.publish("camera", PatternVideoTrack(2))
        deadline = asyncio.get_running_loop().time() + 10
        while not (one.receiving(1) and two.receiving(1)):
            assert asyncio.get_running_loop().time() < deadline, "no subscription"
            await asyncio.sleep(0.05)
        for me, other in ((one, 2), (two, 1)):
            remote = next(iter(me.remotes.values()))
            assert remote.track is not None
            frame = await asyncio.wait_for(remote.track.recv(), 5)
            assert read_pattern(frame)[0] == other
    finally:
        await one.close()
        await two.close()
