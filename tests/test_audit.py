"""The audit trail: refusals, sign-ins, privileged requests, replays and downloads and the
settings at start land in a hash-chained trail with actor, client address, action,
object and result; ``jointreview verify --audit`` finds every kind of tampering and
tells a torn write from it; retention drops old days and the chain still verifies; a
flood neither blocks the node nor loses entries silently; only admins read it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from jointreview.cli import main as cli
from signaling.appkeys import AUDIT, CONFIG
from signaling.audit import AuditTrail, day_files
from signaling.auth import TokenService
from signaling.config import Config

from .conftest import SECRET, Tokens, auth, make_config

Client = TestClient[Any, Any]
CASE = "AUD-2026-001"
DAY = 86400.0
T0 = 1_796_000_000.0  # 2026-11-30, a fixed clock for the chains made here


def entries(config: Config) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for chain in sorted((config.data_dir / "audit").iterdir()):
        for path in day_files(chain):
            out += [json.loads(line) for line in path.read_bytes().splitlines()]
    return out


async def settled(client: Client) -> list[dict[str, Any]]:
    """The trail once the writer has caught up with everything queued so far."""
    trail = client.app[AUDIT]
    await trail.record_now("test.mark", result="ok")
    return entries(client.app[CONFIG])


def verify(data_dir: Path, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli(["verify", "--audit", "--data-dir", str(data_dir), *extra])
    return rc, out.getvalue()


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[Client]:
    config = make_config(
        tmp_path,
        media_enabled=False,
        trusted_proxies=["127.0.0.1"],
        webhook_urls=["https://user:pw@approval.example/hook?key=s3cret"],
        webhook_secret="w" * 40,
        turn_secret="turn-secret-value",
    )
    async with TestClient(TestServer(create_app(config))) as c:
        yield c


def one(found: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    hits = [e for e in found if all(e.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, [(e["action"], e["object"], e["result"]) for e in found])
    return hits[0]


async def test_refusals_sign_ins_and_privileged_requests_are_in_the_trail(
    app_client: Client,
) -> None:
    c, config = app_client, app_client.app[CONFIG]
    tok = Tokens(TokenService(config))
    fwd = {"X-Forwarded-For": "10.7.0.9"}  # the proxy (127.0.0.1) is trusted
    forged = TokenService(make_config(config.data_dir.parent / "x", jwt_secret="f" * 40))
    bad = forged.issue(sub="mallory", role="admin")
    r = await c.get("/api/sessions", headers={**auth(bad), **fwd})
    assert r.status == 401
    r = await c.get("/api/sessions", headers=auth(tok.reviewer()))
    assert r.status == 403
    r = await c.post("/api/auth/demo-login", json={"sub": "clerk-01"}, headers=fwd)
    assert r.status == 200
    r = await c.post("/api/auth/demo-login", json={"sub": "nobody"})
    assert r.status == 404
    admin = tok.admin()
    for _ in range(3):  # one sign-in per token, one entry per request
        assert (await c.get("/api/sessions", headers=auth(admin))).status == 200
    async with c.session.ws_connect(c.make_url(f"/ws?token={tok.clerk()}")) as ws:
        assert (await ws.receive_json())["type"] == "welcome"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await c.session.ws_connect(c.make_url("/ws?token=not.a.token"))
    assert refused.value.status == 401
    found = await settled(c)

    e = one(found, action="auth.token.refused", object="/api/sessions")
    assert (e["actor"], e["address"], e["result"], e["code"]) == (
        None,
        "10.7.0.9",
        "refused",
        "invalid_token",
    )
    assert e["detail"]["claimed_sub"] == "mallory" and e["detail"]["method"] == "GET"
    e = one(found, action="request.refused")
    assert e["actor"]["sub"] == "rev-city-amr-1" and e["code"] == "forbidden"
    assert e["address"] == "127.0.0.1" and "may not" in e["detail"]["message"]
    e = one(found, action="auth.signin.demo", result="ok")
    assert e["actor"]["sub"] == "clerk-01" and e["address"] == "10.7.0.9"
    e = one(found, action="auth.signin.demo", result="refused")
    assert (e["code"], e["detail"]["asked"]) == ("user_not_found", "nobody")
    e = one(found, action="auth.signin.token", object="/api/sessions")
    assert e["actor"]["sub"] == "admin"
    admin_requests = [e for e in found if e["action"] == "admin.request"]
    assert len(admin_requests) == 3
    assert admin_requests[0]["detail"] == {"method": "GET", "route": "/api/sessions", "status": 200}
    e = one(found, action="auth.connect")
    assert (e["actor"]["sub"], e["object"]) == ("clerk-01", "/ws")
    e = one(found, action="auth.token.refused", object="/ws")
    assert e["code"] == "invalid_token"
    # Every entry has them all; no token ever appears in the trail.
    keys = {"seq", "ts", "t", "node", "actor", "address", "action", "object", "result"}
    assert all(keys <= set(x) for x in found)
    text = "".join(json.dumps(x) for x in found)
    assert bad not in text and admin not in text and "not.a.token" not in text


async def test_replays_and_downloads_are_mirrored_with_the_viewers_address(
    app_client: Client,
) -> None:
    c, config = app_client, app_client.app[CONFIG]
    tok = Tokens(TokenService(config))
    r = await c.post(f"/api/cases/{CASE}/sessions", json={}, headers=auth(tok.clerk()))
    sid = (await r.json())["session_id"]
    assert (await c.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))).status == 200
    sup = auth(tok.supervisor())
    fwd = {"X-Forwarded-For": "10.1.2.3"}
    r = await c.get(f"/api/sessions/{sid}/recording", headers={**sup, **fwd})
    assert r.status == 200, await r.text()
    r = await c.get(f"/api/sessions/{sid}/casefile", headers=sup)
    assert r.status == 200, await r.text()
    timeline = next(f for f in (await r.json())["files"] if f["path"] == "timeline.jsonl")
    assert (await c.get(timeline["url"], headers=sup)).status == 200
    r = await c.get(timeline["src"].replace("/api/casefile/", "/api/casefile/x"))
    assert r.status == 401  # a forged grant
    found = await settled(c)

    e = one(found, action="replay.viewed")
    assert e["actor"]["sub"] == "sup-01" and e["address"] == "10.1.2.3"
    assert e["object"] == f"case/{CASE}/session/{sid}" and e["detail"]["case_seq"] > 0
    e = one(found, action="casefile.downloaded")
    assert e["detail"]["path"] == "timeline.jsonl" and e["address"] == "127.0.0.1"
    # The specific entry stands for the request: no second, generic one.
    routes = [x["object"] for x in found if x["action"] == "supervisor.request"]
    assert f"/api/sessions/{sid}/recording" not in routes
    assert f"/api/sessions/{sid}/casefile" in routes
    e = one(found, action="auth.grant.refused")
    assert e["object"] == "/api/casefile/{grant}" and e["code"] == "invalid_grant"
    assert timeline["src"].split("/")[-1] not in json.dumps(found)


async def test_the_settings_at_start_are_there_without_secrets(app_client: Client) -> None:
    config = app_client.app[CONFIG]
    found = await settled(app_client)
    e = found[0]
    assert (e["seq"], e["action"]) == (1, "config.loaded")
    settings = e["detail"]["settings"]
    assert settings["audit_retention_days"] == 180 and settings["port"] == config.port
    assert settings["jwt_secret"] == "***" and settings["turn_secret"] == "***"
    assert settings["webhook_urls"] == ["https://approval.example/hook"]
    raw = b"".join(p.read_bytes() for p in (config.data_dir / "audit").rglob("*.jsonl"))
    for secret in (SECRET, "w" * 40, "turn-secret-value", "s3cret", "user:pw"):
        assert secret.encode() not in raw
    chain = config.data_dir / "audit" / app_client.app[AUDIT].chain_name
    assert stat.S_IMODE((config.data_dir / "audit").stat().st_mode) == 0o700
    assert stat.S_IMODE(chain.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in chain.iterdir())
    rc, out = verify(config.data_dir)
    assert rc == 0 and out.startswith("OK   audit/"), out


async def test_only_admins_read_the_trail_page_by_page_and_reading_is_audited(
    app_client: Client,
) -> None:
    c, config = app_client, app_client.app[CONFIG]
    tok = Tokens(TokenService(config))
    for bad in ("a", "b", "c"):
        await c.get("/api/me", headers=auth(bad))
    r = await c.get("/api/audit", headers=auth(tok.supervisor()))
    assert r.status == 403
    r = await c.get("/api/audit", headers=auth(tok.admin(case=CASE)))
    assert r.status == 403
    await settled(c)
    admin = auth(tok.admin())
    seen: list[int] = []
    cursor = ""
    while True:
        r = await c.get(f"/api/audit?action=auth.*&limit=2{cursor}", headers=admin)
        assert r.status == 200, await r.text()
        page = await r.json()
        seen += [e["seq"] for e in page["entries"]]
        assert all(e["action"].startswith("auth.") for e in page["entries"])
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert len(seen) == 3 and seen == sorted(seen, reverse=True)  # newest first
    r = await c.get("/api/audit?limit=100000", headers=admin)
    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_query"
    found = await settled(c)
    reads = [e for e in found if e["action"] == "audit.read"]
    assert len(reads) == 2 and reads[0]["actor"]["sub"] == "admin"
    assert reads[0]["detail"]["query"] == {"action": "auth.*", "limit": "2"}
    refused = [e for e in found if e["action"] == "request.refused"]
    assert {e["actor"]["role"] for e in refused} == {"supervisor", "admin"}


# -- the chain on disk -----------------------------------------------------------------------


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def make_chain(root: Path, days: list[float], per_day: int = 5) -> AuditTrail:
    """A chain with ``per_day`` entries on each of ``days`` (seconds after T0); closed."""
    clock = Clock(T0)
    trail = AuditTrail(root, "n1", "n1", clock=clock)
    await trail.open()
    for d in days:
        clock.t = T0 + d
        for i in range(per_day):
            trail.put("test.entry", actor={"sub": f"u{i}"}, address="10.0.0.1", obj=f"o{i}")
        await trail.record_now("test.mark", result="ok")
    await trail.close()
    return trail


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


async def test_an_intact_chain_across_days_verifies(tmp_path: Path) -> None:
    await make_chain(tmp_path / "audit", [0, DAY, 2 * DAY])
    files = day_files(tmp_path / "audit" / "n1")
    assert [p.name for p in files] == ["2026-11-30.jsonl", "2026-12-01.jsonl", "2026-12-02.jsonl"]
    first_of_day2 = json.loads(lines_of(files[1])[0])
    last_of_day1 = json.loads(lines_of(files[0])[-1])
    assert first_of_day2["prev"] == last_of_day1["hash"]
    rc, out = verify(tmp_path)
    assert rc == 0 and "OK   audit/n1: 18 entries in 3 file(s), seq 1-18" in out, out


@pytest.mark.parametrize(
    "tamper, expected",
    [
        ("edit", "2026-12-01.jsonl line 2 (seq 8): hash mismatch (the entry was edited)"),
        ("rehash", "2026-12-01.jsonl line 3 (seq 9): broken link (prev is not the hash of"),
        ("delete", "2026-12-01.jsonl line 2 (seq 9): missing seq 8 (entries removed)"),
        ("reorder", "2026-12-01.jsonl line 2 (seq 9): out of order (seq 9 after seq 7)"),
        (
            "drop_day",
            "2026-12-02.jsonl line 1 (seq 13): missing seq 7-12 between 2026-11-30.jsonl and "
            "2026-12-02.jsonl (entries or a day file removed outside retention)",
        ),
        ("drop_first", "missing seq 1-6 before the oldest file (file(s) removed outside"),
        ("garbage", "2026-12-01.jsonl line 2: not an entry"),
    ],
)
async def test_tampering_is_reported_precisely(tmp_path: Path, tamper: str, expected: str) -> None:
    from signaling.audit import entry_hash

    await make_chain(tmp_path / "audit", [0, DAY, 2 * DAY], per_day=5)
    day1, day2, _ = day_files(tmp_path / "audit" / "n1")
    lines = lines_of(day2)  # seq 7..12
    if tamper in ("edit", "rehash"):
        e = json.loads(lines[1])
        e["actor"] = {"sub": "someone-else"}
        if tamper == "rehash":
            body = {k: v for k, v in e.items() if k not in ("prev", "hash")}
            e["hash"] = entry_hash(e["prev"], body)
        lines[1] = (json.dumps(e, ensure_ascii=False) + "\n").encode()
    elif tamper == "delete":
        del lines[1]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif tamper == "garbage":
        lines[1] = b"{not json\n"
    if tamper == "drop_day":
        day2.unlink()
    elif tamper == "drop_first":
        day1.unlink()
    else:
        day2.write_bytes(b"".join(lines))
    rc, out = verify(tmp_path, "--node", "n1")
    assert rc == 1 and "FAIL audit/n1" in out, out
    assert expected in out, out


async def test_a_torn_last_line_is_a_crash_not_tampering_and_the_next_start_names_it(
    tmp_path: Path,
) -> None:
    await make_chain(tmp_path / "audit", [0], per_day=3)
    path = day_files(tmp_path / "audit" / "n1")[-1]
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # a kill -9 (or power cut) in the middle of a write
    rc, out = verify(tmp_path)
    assert rc == 0 and "line 4: torn last line" in out, out
    # The next start ends the line, names it in the chain, and goes on from the last
    # whole entry.
    trail = AuditTrail(tmp_path / "audit", "n1", "n1", clock=Clock(T0 + 60))
    await trail.open()
    await trail.record_now("test.after", result="ok")
    await trail.close()
    rc, out = verify(tmp_path)
    assert rc == 0 and "line 4: a torn write, named at a restart" in out, out
    torn = [json.loads(x) for x in lines_of(path)[4:]]
    assert torn[0]["action"] == "audit.torn" and torn[0]["detail"]["line"] == 4
    assert torn[0]["seq"] == 4 and torn[1]["action"] == "test.after"


async def test_retention_drops_old_days_and_the_chain_still_verifies(tmp_path: Path) -> None:
    root = tmp_path / "audit"
    await make_chain(root, [0, DAY, 200 * DAY], per_day=2)
    clock = Clock(T0 + 200 * DAY + 60)
    trail = AuditTrail(root, "n1", "n1", retention_days=180, clock=clock)
    await trail.open()  # the retention job runs at start (and every hour)
    for _ in range(100):
        if len(day_files(root / "n1")) == 1:
            break
        await asyncio.sleep(0.02)
    await trail.close()
    assert [p.name for p in day_files(root / "n1")] == ["2027-06-18.jsonl"]
    found = [json.loads(x) for x in lines_of(day_files(root / "n1")[0])]
    retention = next(e for e in found if e["action"] == "audit.retention")
    deleted = retention["detail"]["deleted"]
    assert [d["file"] for d in deleted] == ["2026-11-30.jsonl", "2026-12-01.jsonl"]
    assert [d["entries"] for d in deleted] == [3, 3] and deleted[-1]["last_seq"] == 6
    rc, out = verify(tmp_path)
    assert rc == 0 and "seq 1-6 deleted by retention" in out, out
    # Removing a file the retention did not remove is still found.
    trail = AuditTrail(root, "n1", "n1", retention_days=180, clock=Clock(T0 + 201 * DAY))
    await trail.open()
    await trail.record_now("test.next_day", result="ok")
    await trail.close()
    (root / "n1" / "2027-06-18.jsonl").unlink()
    rc, out = verify(tmp_path)
    assert rc == 1, out
    assert "2027-06-19.jsonl line 1 (seq 11): missing seq 1-10 before the oldest file" in out


async def test_a_full_queue_drops_entries_visibly_and_the_chain_holds(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit", "n1", "n1", queue_max=10)
    await trail.open()
    # Many addresses at once (no one address over its burst), faster than the writer.
    accepted = [trail.put("test.flood", result="refused", address=f"10.0.0.{i}") for i in range(50)]
    assert accepted.count(True) == 10
    await trail.record_now("test.mark", result="ok")
    await trail.close()
    found = [json.loads(x) for p in day_files(tmp_path / "audit" / "n1") for x in lines_of(p)]
    dropped = [e for e in found if e["action"] == "audit.dropped"]
    assert len(dropped) == 1 and dropped[0]["detail"] == {"count": 40}
    assert sum(e["action"] == "test.flood" for e in found) == 10
    rc, out = verify(tmp_path)
    assert rc == 0, out


async def test_a_flood_of_refused_requests_neither_blocks_nor_loses_silently(
    app_client: Client,
) -> None:
    c = app_client
    total, workers = 10_000, 32
    health: list[int] = []

    async def flood(n: int) -> None:
        for _ in range(n):
            async with c.get("/api/me", headers=auth("x")) as r:
                assert r.status == 401

    async def probe() -> None:
        while True:
            async with c.get("/healthz") as r:
                health.append(r.status)
            await asyncio.sleep(0.05)

    prober = asyncio.create_task(probe())
    await asyncio.gather(*(flood(total // workers) for _ in range(workers)))
    await asyncio.gather(*(flood(1) for _ in range(total % workers)))
    prober.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await prober
    assert len(health) >= 2 and set(health) == {200}
    c.app[AUDIT].summarize()  # (the node does it when the minute is over, or at close)
    found = await settled(c)
    refused = sum(e["action"] == "auth.token.refused" for e in found)
    suppressed = [e for e in found if e["action"] == "audit.suppressed"]
    dropped = sum(e["detail"]["count"] for e in found if e["action"] == "audit.dropped")
    assert refused == 20 and dropped == 0  # the burst of one kind from one address
    [summary] = suppressed
    assert (summary["address"], summary["code"]) == ("127.0.0.1", "invalid_token")
    assert summary["detail"]["action"] == "auth.token.refused"
    assert summary["detail"]["count"] == total - 20
    # Who was refused how often stays on record, in a few kilobytes, not ~5 MB.
    data_dir = c.app[CONFIG].data_dir
    assert sum(p.stat().st_size for p in (data_dir / "audit").rglob("*.jsonl")) < 64 * 1024
    rc, out = verify(data_dir)
    assert rc == 0, out


async def test_a_second_live_process_gets_a_chain_of_its_own(tmp_path: Path) -> None:
    trails = [AuditTrail(tmp_path / "audit", f"n{i}", "host") for i in range(3)]
    for trail in trails:
        await trail.open()
    names = [t.chain_name for t in trails]
    for trail in trails:
        await trail.close()
    assert names == ["host", f"host-{os.getpid()}", f"host-{os.getpid()}-2"]


def test_refusals_past_the_burst_are_counted_per_address_and_kind() -> None:
    from signaling.audit_limit import Coalescer

    co = Coalescer(burst=2, window_s=60.0)
    a = ("auth.token.refused", "10.0.0.1", "invalid_token")
    b = ("auth.token.refused", "10.0.0.2", "invalid_token")
    assert [co.admit(a, 1000.0 + i)[0] for i in range(5)] == [True, True, False, False, False]
    assert co.admit(b, 1010.0) == (True, [])  # another address has a burst of its own
    written, due = co.admit(a, 1061.0)  # a new minute: the old one's count comes out
    assert written
    assert due == [
        {
            "address": "10.0.0.1",
            "code": "invalid_token",
            "detail": {
                "action": "auth.token.refused",
                "count": 3,
                "from": 1000.0,
                "until": 1004.0,
            },
        }
    ]
    assert co.due(1062.0, everything=True) == []  # nothing beyond a burst since


async def test_the_chain_survives_a_kill_and_goes_on_after_the_restart(
    tmp_path: Path, server_factory: Any
) -> None:
    data = tmp_path / "data"
    env = {"JR_MEDIA_ENABLED": "false"}
    tok = Tokens(TokenService(make_config(tmp_path)))
    server = server_factory(data, env=env)
    admin = auth(tok.admin())
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.get(f"{server.url}/api/sessions", headers=admin) as r:
                assert r.status == 200
        async with http.get(f"{server.url}/api/me", headers=auth("forged")) as r:
            assert r.status == 401
        # Written as soon as the writer's batch is (a flush per batch): what an auditor
        # reads while the node runs, and what a kill -9 cannot take back.
        for _ in range(200):
            rc, out = verify(data)
            if "entries" in out and int(out.split(": ")[1].split()[0]) >= 8:
                break
            await asyncio.sleep(0.05)
        server.stop(signal.SIGKILL)
        rc, out = verify(data)
        assert rc == 0 and "seq 1-8" in out, out  # config, a sign-in, 5 requests, a refusal
        head = out.split("head ")[1].split()[0]
        server = server_factory(data, env=env)
        async with http.get(f"{server.url}/api/me", headers=admin) as r:
            assert r.status == 200
    server.stop()
    [chain] = (data / "audit").iterdir()
    found = [json.loads(x) for p in day_files(chain) for x in lines_of(p)]
    restart = found[8]
    assert (restart["seq"], restart["action"], restart["prev"]) == (9, "config.loaded", head)
    # A new process: the same token is its first use here.
    assert [e["action"] for e in found[9:]] == ["auth.signin.token", "admin.request"]
    rc, out = verify(data)
    assert rc == 0 and "seq 1-11" in out, out


async def test_retention_of_many_days_at_once_still_anchors_the_chain(tmp_path: Path) -> None:
    root = tmp_path / "audit"
    await make_chain(root, [d * DAY for d in range(40)] + [300 * DAY], per_day=1)
    trail = AuditTrail(root, "n1", "n1", retention_days=180, clock=Clock(T0 + 300 * DAY))
    await trail.open()
    await trail.apply_retention()  # as the job at start does: one of them deletes
    await trail.close()
    [kept] = day_files(root / "n1")
    found = [json.loads(x) for x in lines_of(kept)]
    [retention] = [e for e in found if e["action"] == "audit.retention"]
    assert len(retention["detail"]["deleted"]) == 40
    rc, out = verify(tmp_path)
    assert rc == 0 and "seq 1-80 deleted by retention" in out, out


async def test_an_admins_acts_keep_their_own_entries_beside_the_mirrored_events(
    app_client: Client,
) -> None:
    c = app_client
    admin = auth(Tokens(TokenService(c.app[CONFIG])).admin())
    r = await c.post(f"/api/cases/{CASE}/sessions", json={}, headers=admin)
    sid = (await r.json())["session_id"]
    r = await c.post(f"/api/sessions/{sid}/applicant-link", json={"name": "张三"}, headers=admin)
    assert r.status == 201
    token = (await r.json())["token"]
    found = await settled(c)
    e = one(found, action="applicant_link.created")
    assert (e["actor"]["sub"], e["address"]) == ("admin", "127.0.0.1")
    e = one(found, action="admin.request", object=f"/api/sessions/{sid}/applicant-link")
    assert e["detail"] == {
        "method": "POST",
        "route": f"/api/sessions/{sid}/applicant-link",
        "status": 201,
    }
    assert token not in json.dumps(found)  # a credential minted is named, never written
