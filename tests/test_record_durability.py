"""The record as a user would notice it: real ``jointreview serve`` processes, a real
PostgreSQL and Redis; kill -9 mid-session, two nodes, a database never migrated, a
database that goes away mid-session. What was acknowledged is in the record, once."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling.auth import TokenService
from signaling.config import Config
from signaling.history import migrate
from signaling.history.repo import History

from .conftest import SECRET, ServerProcess, auth, free_port
from .postgres import FAST_SETTINGS, Cluster, start_cluster
from .test_faults import RedisProcess
from .wsclient import Signal

Factory = Callable[..., ServerProcess]
REVIEWERS = (("rev-city-amr-1", "city-amr"), ("rev-city-tax-1", "city-tax"))
# Chat as fast as it is acknowledged: the per-session and per-socket limits would refuse
# most of it.
FAST = {
    "JR_CHAT_PER_MINUTE_PER_SESSION": "1000000",
    "JR_WS_RATE_PER_S": "100000",
    "JR_WS_BURST": "100000",
    "JR_IDENTITY_RATE_PER_S": "100000",
    "JR_IDENTITY_BURST": "100000",
}
BUSY = 150  # chat messages acknowledged before the kill


def tokens(tmp_path: Path) -> TokenService:
    return TokenService(Config(data_dir=tmp_path, jwt_secret=SECRET))


def ws_url(base: str, token: str) -> str:
    return f"{base.replace('http', 'ws')}/ws?token={token}"


async def post(http: aiohttp.ClientSession, url: str, token: str, body: Any) -> dict[str, Any]:
    async with http.post(url, json=body, headers=auth(token)) as res:
        assert res.status == 201, await res.text()
        return dict(await res.json())


async def record_of(url: str, case_id: str) -> list[dict[str, Any]]:
    """The case's events as the record holds them, read directly."""
    history = await History.open(url)
    try:
        page = await history.case_events(case_id, limit=100_000)
    finally:
        await history.close()
    return page.items


def store_log(data_dir: Path, case_id: str) -> list[dict[str, Any]]:
    """The case's log as a single node's live store has it: its journal on disk (the
    API's views read the record, which these tests check against the store)."""
    key = f"case:{case_id}:events"
    events: list[dict[str, Any]] = []
    with (data_dir / "state" / "journal.jsonl").open("rb") as fh:
        for line in fh:
            try:
                op = json.loads(line)
            except ValueError:
                break  # a line being written
            if op.get("op") == "append" and op.get("k") == key:
                events.append(op["d"])
    return events


async def timeline(base: str, t: TokenService, case_id: str) -> list[dict[str, Any]]:
    """The case's whole timeline as a node's API gives it, page by page."""
    sup = t.issue(sub="sup-01", role="supervisor")
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    async with aiohttp.ClientSession() as http:
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            url = f"{base}/api/cases/{case_id}/events"
            async with http.get(url, params=params, headers=auth(sup)) as res:
                assert res.status == 200, await res.text()
                body = await res.json()
            events += body["events"]
            cursor = body["next_cursor"]
            if cursor is None:
                return events


@dataclass
class Meeting:
    """A session with a clerk and two reviewers (invited, accepted, joined) on sockets."""

    session_id: str
    sockets: dict[str, Signal]
    invitations: list[str] = field(default_factory=list)


async def meet(
    http: aiohttp.ClientSession, t: TokenService, case_id: str, clerk_at: str, reviewers_at: str
) -> Meeting:
    clerk = t.issue(sub="clerk-01", role="clerk")
    created = await post(http, f"{clerk_at}/api/cases/{case_id}/sessions", clerk, {"matter": "m"})
    sid = created["session_id"]
    meeting = Meeting(sid, {"clerk-01": await Signal.connect(http, ws_url(clerk_at, clerk))})
    await meeting.sockets["clerk-01"].request("join", "joined", session_id=sid)
    for sub, dept in REVIEWERS:
        inv = await post(http, f"{clerk_at}/api/sessions/{sid}/invitations", clerk, {"dept": dept})
        meeting.invitations.append(inv["invitation_id"])
        token = t.issue(sub=sub, role="reviewer", dept=dept, level="city")
        ws = await Signal.connect(http, ws_url(reviewers_at, token))
        await ws.request("invitation.accept", "ack", invitation_id=inv["invitation_id"])
        await ws.request("join", "joined", session_id=sid)
        meeting.sockets[sub] = ws
    return meeting


async def close_all(meeting: Meeting) -> None:
    await asyncio.gather(*(ws.close() for ws in meeting.sockets.values()), return_exceptions=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """The record's URL and the node's environment for it: SQLite in the data dir (the
    default), or a migrated PostgreSQL database of its own."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{(tmp_path / 'node' / 'history.sqlite3').resolve()}"
        yield url, {"JR_DATABASE_URL": ""}  # whatever JR_TEST_DATABASE says
        return
    url = request.getfixturevalue("fresh_postgres_url")
    asyncio.run(migrate.upgrade(url))
    yield url, {"JR_DATABASE_URL": url}


# -- 1. kill -9 during a busy session -------------------------------------------------


@dataclass
class Acked:
    chat: dict[int, str] = field(default_factory=dict)  # seq -> text
    opinions: list[str] = field(default_factory=list)
    invitations: list[str] = field(default_factory=list)
    busy: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self) -> None:
        if len(self.chat) >= BUSY and self.opinions:
            self.busy.set()


async def chatter(ws: Signal, who: str, acked: Acked, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        text = f"{who} {n}"
        try:
            ack = await ws.request("chat", "ack", text=text)
        except (AssertionError, ConnectionError, aiohttp.ClientError):
            if stop.is_set():
                return  # the server is gone: this one was never acknowledged
            errors = [m for m in ws.received if m.get("type") == "error"]
            raise AssertionError(f"chat {text!r} not acknowledged: {errors}") from None
        acked.chat[int(ack["seq"])] = text
        acked.note()


async def paperwork(
    http: aiohttp.ClientSession,
    base: str,
    t: TokenService,
    sid: str,
    acked: Acked,
    stop: asyncio.Event,
) -> None:
    """Opinions from the reviewers and invitations from the clerk, over HTTP."""
    clerk = t.issue(sub="clerk-01", role="clerk")
    reviewers = [t.issue(sub=s, role="reviewer", dept=d, level="city") for s, d in REVIEWERS]
    n = 0
    while not stop.is_set():
        n += 1
        try:
            body = {"decision": "note", "note": f"note {n}"}
            url = f"{base}/api/sessions/{sid}/opinions"
            async with http.post(url, json=body, headers=auth(reviewers[n % 2])) as res:
                assert res.status == 201, await res.text()
                acked.opinions.append((await res.json())["opinion_id"])
            acked.note()
            body = {"dept": "district-planning"}
            url = f"{base}/api/sessions/{sid}/invitations"
            async with http.post(url, json=body, headers=auth(clerk)) as res:
                assert res.status == 201, await res.text()
                acked.invitations.append((await res.json())["invitation_id"])
        except (AssertionError, aiohttp.ClientError, ConnectionError):
            if stop.is_set():
                return
            raise


async def test_kill_9_during_a_busy_session_loses_no_acknowledged_event(
    server_factory: Factory, database: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = database
    data_dir = tmp_path / "node"
    server = server_factory(data_dir=data_dir, env={**env, **FAST})
    t = tokens(tmp_path)
    case_id = "KILL-1"
    acked = Acked()
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        meeting = await meet(http, t, case_id, server.url, server.url)
        sid = meeting.session_id
        flood = [
            asyncio.create_task(chatter(ws, who, acked, stop))
            for who, ws in meeting.sockets.items()
        ]
        flood.append(asyncio.create_task(paperwork(http, server.url, t, sid, acked, stop)))
        busy = asyncio.create_task(acked.busy.wait())
        await asyncio.wait([busy, *flood], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        for task in flood:
            if task.done():
                task.result()  # a failure before the kill: the test fails with it
        assert busy.done(), f"only {len(acked.chat)} chat messages in 30 s"
        assert server.proc is not None
        stop.set()  # from now on, failures are the kill's
        server.proc.send_signal(signal.SIGKILL)  # mid-flood
        server.proc.wait(10)
        server.proc = None
        await asyncio.wait_for(asyncio.gather(*flood), 15)
        await close_all(meeting)
    if url.startswith("sqlite"):
        wal = data_dir / "history.sqlite3-wal"
        assert wal.exists() and wal.stat().st_size > 0

    events = await record_of(url, case_id)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))  # in order, each once
    by_seq = {e["seq"]: e for e in events}
    for seq, text in acked.chat.items():
        assert by_seq[seq]["type"] == "chat.message" and by_seq[seq]["data"]["text"] == text
    # Filed one after the other: the acknowledged ones, then perhaps the one in flight.
    opinions = [e["data"]["opinion_id"] for e in events if e["type"] == "opinion.filed"]
    assert opinions[: len(acked.opinions)] == acked.opinions
    invited = [e["data"]["invitation_id"] for e in events if e["type"] == "invitation.created"]
    expected = meeting.invitations + acked.invitations
    assert invited[: len(expected)] == expected

    # The node starts again on the same data_dir and shows the case; every event of the
    # record is the store's own (same seq, type and data).
    server.start()
    sup = t.issue(sub="sup-01", role="supervisor")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}/api/cases/{case_id}", headers=auth(sup)) as res,
    ):
        assert res.status == 200, await res.text()
        assert [x["session_id"] for x in (await res.json())["sessions"]] == [sid]
    journal = {e["seq"]: e for e in store_log(data_dir, case_id)}
    for e in events:
        assert (journal[e["seq"]]["type"], journal[e["seq"]]["data"]) == (e["type"], e["data"])
    assert max(acked.chat) <= max(journal)


# -- 2. two nodes, one Redis, one PostgreSQL ------------------------------------------


async def test_two_nodes_on_redis_and_postgres_see_the_same_history(
    server_factory: Factory, redis_url: str, fresh_postgres_url: str, tmp_path: Path
) -> None:
    url = fresh_postgres_url
    await migrate.upgrade(url)
    env = {"JR_DATABASE_URL": url, **FAST}
    a = server_factory(redis_url=redis_url, env=env)
    b = server_factory(redis_url=redis_url, env=env)
    t = tokens(tmp_path)
    case_id = f"TWO-{uuid.uuid4().hex[:8]}"  # the Redis is shared with other tests
    async with aiohttp.ClientSession() as http:
        meeting = await meet(http, t, case_id, a.url, b.url)
        acked: dict[int, str] = {}

        async def talk(who: str, ws: Signal) -> None:
            for n in range(15):
                ack = await ws.request("chat", "ack", text=f"{who} {n}")
                acked[int(ack["seq"])] = f"{who} {n}"

        await asyncio.gather(*(talk(who, ws) for who, ws in meeting.sockets.items()))
        await close_all(meeting)

    # Leaving (the sockets closed) is filed as it happens on either node: wait until
    # both nodes' timelines stop growing and agree with the record.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        record = await record_of(url, case_id)
        on_a, on_b = await timeline(a.url, t, case_id), await timeline(b.url, t, case_id)
        seqs = [e["seq"] for e in record]
        same = [e["seq"] for e in on_a] == [e["seq"] for e in on_b] == seqs
        if same or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert seqs == list(range(1, len(seqs) + 1))  # every event once, in order, no gap
    assert [e["seq"] for e in on_a] == seqs and [e["seq"] for e in on_b] == seqs
    for mine, theirs in zip(record, on_a, strict=True):
        assert (mine["type"], mine["data"], mine["session_id"]) == (
            theirs["type"],
            theirs["data"],
            theirs["session_id"],
        )
    by_seq = {e["seq"]: e for e in record}
    assert {s: by_seq[s]["data"]["text"] for s in acked} == acked
    types = [e["type"] for e in record]
    assert types.count("participant.joined") == 3 and types.count("chat.message") == 45


# -- 3. the start check, as an operator meets it ---------------------------------------


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jointreview.cli", *args],
        env={**os.environ, "JR_JWT_SECRET": SECRET, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_node_on_a_postgres_never_migrated_says_to_migrate_and_exits(
    server_factory: Factory, fresh_postgres_url: str, tmp_path: Path
) -> None:
    url = fresh_postgres_url
    data_dir = tmp_path / "node"
    env = {"JR_DATABASE_URL": url}
    port = str(free_port())
    refused = await asyncio.to_thread(
        cli, "serve", "--port", port, "--data-dir", str(data_dir), env=env
    )
    assert refused.returncode != 0
    assert "jointreview migrate" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr  # a message for the operator, not a crash

    migrated = await asyncio.to_thread(
        cli, "migrate", "--database-url", url, "--data-dir", str(data_dir), env={}
    )
    assert migrated.returncode == 0, migrated.stderr
    server = server_factory(data_dir=data_dir, env=env)
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as res:
        assert res.status == 200, await res.text()


# -- 4. the database goes away mid-session --------------------------------------------


def stop(cluster: Cluster) -> None:
    """Stop the server as an operator does (``-m fast``: what it committed stays; the
    test cluster's ``synchronous_commit=off`` would lose its last commits in a crash)."""
    assert cluster.proc is not None
    done = cluster.run("pg_ctl", "stop", "-D", str(cluster.data), "-m", "fast", "-w")
    assert done.returncode == 0, done.stderr
    cluster.proc.wait(15)
    cluster.proc = None


def restart(cluster: Cluster) -> None:
    """Start a stopped cluster again on its own data (``Cluster.start`` makes a new one)."""
    args = [str(cluster.bindir / "postgres"), "-D", str(cluster.data), "-p", str(cluster.port)]
    args += ["-k", str(cluster.sockets)]
    for name, value in FAST_SETTINGS.items():
        args += ["-c", f"{name}={value}"]
    with cluster.log.open("ab") as log:
        cluster.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, **cluster._as_server_user()
        )
    cluster._wait_ready()


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A PostgreSQL of this test's own: it is stopped and started mid-test."""
    cluster = start_cluster(free_port())
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.mark.parametrize("node", ["lives_on", "killed_while_behind"])
async def test_an_action_while_postgres_is_down_is_acknowledged_and_recorded_when_it_returns(
    server_factory: Factory, own_cluster: Cluster, tmp_path: Path, node: str
) -> None:
    """Chat and opinions while the database is stopped are acknowledged (they are in the
    store's log) and reach the record when it returns; also when the node itself is
    killed meanwhile (the case's mark is in the store: the next start catches up)."""
    own_cluster.create_database("jointreview")
    url = own_cluster.url("jointreview")
    await migrate.upgrade(url)
    server = server_factory(data_dir=tmp_path / "node", env={"JR_DATABASE_URL": url, **FAST})
    t = tokens(tmp_path)
    case_id = "DOWN-1"
    chat: dict[int, str] = {}
    opinions: list[str] = []
    reviewer = t.issue(sub=REVIEWERS[0][0], role="reviewer", dept=REVIEWERS[0][1], level="city")
    async with aiohttp.ClientSession() as http:
        meeting = await meet(http, t, case_id, server.url, server.url)
        clerk = meeting.sockets["clerk-01"]

        async def act(n: int) -> None:
            ack = await clerk.request("chat", "ack", text=f"m{n}")
            chat[int(ack["seq"])] = f"m{n}"
            body = {"decision": "note", "note": f"n{n}"}
            url_ = f"{server.url}/api/sessions/{meeting.session_id}/opinions"
            async with http.post(url_, json=body, headers=auth(reviewer)) as res:
                assert res.status == 201, await res.text()
                opinions.append((await res.json())["opinion_id"])

        await act(0)
        await asyncio.to_thread(stop, own_cluster)
        for n in range(1, 4):
            await act(n)  # acknowledged: the event is in the store's log, its case behind
        if node == "killed_while_behind":
            server.stop(signal.SIGKILL)
            await close_all(meeting)
            await asyncio.to_thread(restart, own_cluster)
            server.start()
        else:
            await asyncio.to_thread(restart, own_cluster)
            await act(4)
            await close_all(meeting)

    # Caught up from the store's log once the database is back (a retry every second).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        record = await record_of(url, case_id)
        journal = store_log(tmp_path / "node", case_id)
        if len(record) == len(journal) or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    by_seq = {e["seq"]: e for e in record}
    assert {s: by_seq[s]["data"]["text"] for s in chat if s in by_seq} == chat
    filed = [e["data"]["opinion_id"] for e in record if e["type"] == "opinion.filed"]
    assert filed == opinions
    # Every event of the case, once, as the store's log has it.
    assert [(e["seq"], e["type"], e["data"]) for e in record] == [
        (e["seq"], e["type"], e["data"]) for e in journal
    ]


@pytest.fixture
def stoppable_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A persistent redis-server of this test's own, stopped and started mid-test."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisProcess(workdir)
    server.start()
    yield server
    server.stop()


async def test_an_action_while_redis_is_down_is_refused_and_never_in_the_record(
    server_factory: Factory, stoppable_redis: RedisProcess, fresh_postgres_url: str, tmp_path: Path
) -> None:
    """Redis holds the log: without it an action is refused (503 store_unavailable), is
    in neither the log nor the record, and what was acknowledged around it is in both."""
    url = fresh_postgres_url
    await migrate.upgrade(url)
    env = {"JR_DATABASE_URL": url, **FAST}
    server = server_factory(redis_url=stoppable_redis.url, env=env)
    t = tokens(tmp_path)
    case_id = f"REDIS-{uuid.uuid4().hex[:8]}"
    clerk = t.issue(sub="clerk-01", role="clerk")
    async with aiohttp.ClientSession() as http:
        meeting = await meet(http, t, case_id, server.url, server.url)
        sock = meeting.sockets["clerk-01"]
        before = await sock.request("chat", "ack", text="before")
        await asyncio.to_thread(stoppable_redis.stop)
        err = await sock.request("chat", "error", text="while Redis is down")
        assert err["code"] == "store_unavailable"
        url_ = f"{server.url}/api/sessions/{meeting.session_id}/invitations"
        async with http.post(url_, json={"dept": "city-customs"}, headers=auth(clerk)) as res:
            assert res.status == 503
            assert (await res.json())["error"]["code"] == "store_unavailable"
        await asyncio.to_thread(stoppable_redis.start)
        for _ in range(100):  # the node notices Redis is back within a moment
            async with http.get(f"{server.url}/healthz") as res:
                if res.status == 200:
                    break
            await asyncio.sleep(0.1)
        after = await sock.request("chat", "ack", text="after")
        await close_all(meeting)

    record = await record_of(url, case_id)
    journal = await timeline(server.url, t, case_id)
    assert [(e["seq"], e["type"], e["data"]) for e in record] == [
        (e["seq"], e["type"], e["data"]) for e in journal
    ][: len(record)]  # the sockets' leaving may still be on its way
    texts = {e["seq"]: e["data"]["text"] for e in record if e["type"] == "chat.message"}
    assert texts == {before["seq"]: "before", after["seq"]: "after"}
    invited = [e for e in record if e["type"] == "invitation.created"]
    assert [e["data"]["invitation_id"] for e in invited] == meeting.invitations
