"""A sealed session leaves the live store; the record and the case file answer for it.

Played on the real app (memory store and a real Redis, SQLite and PostgreSQL), a joint
review ends, is sealed and evicted: none of its keys stay, the case's log is trimmed and
goes on counting, a join or a resume says ``session_ended``, the replay page, the case
file and the case view still serve it, and 200 sealed sessions leave the store as small
as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from jointreview import cli
from jointreview.app import create_app
from signaling.appkeys import CATCH_UP, HISTORY, SERVICE, STORE
from signaling.auth import TokenService
from signaling.evict import AGAIN, EVICTOR, RETRIM
from signaling.history import migrate
from signaling.history.catchup import BEHIND
from signaling.history.repo import History
from signaling.history.write_steps import lock_key
from signaling.models import Event
from signaling.state import MemoryStore, Store

from .conftest import Tokens, auth, make_config
from .images import tiny
from .test_signaling_flow import connect, invite, start_session

CASE = "GZ-2026-0001"
LOG = f"case:{CASE}:events"


@pytest.fixture(params=["memory", "redis"])
async def config_kw(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """The app's store: the journaled memory store, or a real Redis on a db of its own
    (the server is shared by the test run)."""
    if request.param == "memory":
        yield {}
        return
    url = str(request.getfixturevalue("redis_url"))[:-1] + "8"
    client = aioredis.from_url(url)
    await client.flushdb()
    # Nodes on Redis share one record (PostgreSQL); with a SQLite record per node they
    # keep every session live (the views read the live store then).
    record = str(request.getfixturevalue("fresh_postgres_url"))
    await migrate.upgrade(record)
    yield {"redis_url": url, "database_url": record}
    await client.flushdb()
    await client.aclose()


async def keys_of(store: Store) -> set[str]:
    """Every durable key the store holds (documents, logs, indexes, trim counts)."""
    if isinstance(store, MemoryStore):
        return (
            {f"doc:{k}" for k in store._docs}
            | {f"log:{k}" for k in store._logs}
            | {f"idx:{k}" for k in store._indexes}
            | {f"trimmed:{k}" for k in store._trimmed}
        )
    client = store._r  # type: ignore[attr-defined]
    return {k async for k in client.scan_iter("jr:*") if not str(k).startswith("jr:eph:")}


async def play(client: TestClient, tok: Tokens, case: str = CASE) -> tuple[str, str]:
    """A joint review with invitations, presence, chat, an opinion and a still, ended
    by the clerk; its session id and the reviewer's resume token."""
    sid = await start_session(client, tok, case)
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    rev = await connect(client, tok.reviewer())
    amr = await invite(client, tok, sid, dept="city-amr")
    await invite(client, tok, sid, dept="city-tax")  # left open: cancelled at the end
    await rev.request("invitation.accept", "ack", invitation_id=amr["invitation_id"])
    joined = await rev.request("join", "joined", session_id=sid)
    await rev.request("chat", "ack", text="请补充营业场所证明")
    res = await client.post(
        f"/api/sessions/{sid}/opinions",
        json={"decision": "materials_missing", "missing": ["营业场所证明"]},
        headers=auth(tok.reviewer()),
    )
    assert res.status == 201, await res.text()
    res = await client.post(
        f"/api/sessions/{sid}/snapshots",
        data=tiny("JPEG"),
        headers={**auth(tok.clerk()), "Content-Type": "image/jpeg"},
    )
    assert res.status == 201, await res.text()
    res = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
    assert res.status == 200, await res.text()
    for s in (clerk, rev):
        await s.close()
    return sid, str(joined["resume_token"])


async def evict_now(client: TestClient) -> int:
    evictor = client.app[EVICTOR]
    evictor.grace_s = 0.0
    return await evictor.sweep()


async def test_a_sealed_session_leaves_the_store(
    config_kw: dict[str, Any],
    tmp_path: Path,
    history_kw: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config(tmp_path, media_enabled=False, **{**history_kw, **config_kw})
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        store = client.app[STORE]
        empty = await keys_of(store)
        sid, resume = await play(client, tok)
        log = await store.read_log(LOG)
        assert "archive.sealed" in [e["type"] for e in log]
        last = log[-1]["seq"]
        assert await evict_now(client) == 1
        assert await evict_now(client) == 0  # idempotent

        left = await keys_of(store) - empty
        assert not [k for k in left if sid in k], left
        assert await store.read_log(LOG) == [] and await store.log_trimmed(LOG) == last
        # The record has every event; a new session of the case goes on numbering.
        assert await client.app[HISTORY].event_count(CASE) == last
        sid2 = await start_session(client, tok)
        assert [e["seq"] for e in await store.read_log(LOG)] == [last + 1]

        # Join and resume of the evicted session: ended, as the record says.
        rev = await connect(client, tok.reviewer())
        err = await rev.request("join", "error", session_id=sid)
        assert err["code"] == "session_ended", err
        err = await rev.request("resume", "error", resume_token=resume)
        assert err["code"] == "session_ended", err
        await rev.close()

        # Actions on it answer as for an ended session (never a server error).
        res = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
        assert res.status == 200, await res.text()
        assert (await res.json())["status"] == "ended"
        res = await client.post(
            f"/api/sessions/{sid}/invitations", json={"dept": "city-amr"}, headers=auth(tok.clerk())
        )
        assert (res.status, (await res.json())["error"]["code"]) == (409, "session_ended")
        # Its invitations are closed: cancelled at the end, accepted before.
        res = await client.get(f"/api/sessions/{sid}", headers=auth(tok.supervisor()))
        tax = next(i for i in (await res.json())["invitations"] if i["dept"] == "city-tax")
        assert tax["status"] == "cancelled"
        res = await client.post(
            f"/api/invitations/{tax['invitation_id']}/decline",
            json={"reason": "不负责"},
            headers=auth(tok.other_reviewer()),
        )
        assert (res.status, (await res.json())["error"]["code"]) == (409, "invitation_closed")
        # An opinion may follow the end: into the record (and the log) only.
        res = await client.post(
            f"/api/sessions/{sid}/opinions",
            json={"decision": "approve"},
            headers=auth(tok.reviewer()),
        )
        assert res.status == 201, await res.text()
        res = await client.post(
            f"/api/sessions/{sid}/snapshots",
            data=tiny("JPEG"),
            headers={**auth(tok.clerk()), "Content-Type": "image/jpeg"},
        )
        assert res.status < 500, await res.text()
        assert not [k for k in await keys_of(store) if sid in k]

        # Read from the record and the case file: the session, its timeline (replay
        # markers), its stills and opinions, its case file.
        sup = tok.supervisor()
        res = await client.get(f"/api/sessions/{sid}", headers=auth(sup))
        assert res.status == 200, await res.text()
        body = await res.json()
        assert body["session"]["status"] == "ended" and len(body["invitations"]) == 2
        assert {p["identity"]["sub"] for p in body["participants"]} == {
            "clerk-01",
            "rev-city-amr-1",
        }
        res = await client.get(f"/api/sessions/{sid}/recording/markers", headers=auth(sup))
        assert res.status == 200, await res.text()
        res = await client.get(f"/api/sessions/{sid}/snapshots", headers=auth(sup))
        assert res.status == 200, await res.text()
        stills = (await res.json())["snapshots"]
        assert len(stills) == 1
        res = await client.get(stills[0]["url"], headers=auth(sup))
        assert res.status == 200 and await res.read() == tiny("JPEG")
        res = await client.get(f"/api/sessions/{sid}/opinions", headers=auth(sup))
        assert res.status == 200
        assert [o["decision"] for o in (await res.json())["opinions"]] == [
            "materials_missing",
            "approve",
        ]
        res = await client.get(f"/api/sessions/{sid}/casefile", headers=auth(sup))
        assert res.status == 200, await res.text()
        files = (await res.json())["files"]
        assert files
        for f in files:
            got = await client.get(f["url"], headers=auth(sup))
            assert got.status == 200, (f, await got.text())
        res = await client.get(f"/api/cases/{CASE}", headers=auth(sup))
        assert res.status == 200, await res.text()
        seqs = [e["seq"] for e in (await res.json())["events"]]
        assert seqs[:3] == [1, 2, 3]

        # With no grace (as here now), a session leaves the store as it is sealed.
        res = await client.post(f"/api/sessions/{sid2}/end", headers=auth(tok.clerk()))
        assert res.status == 200
        assert not [k for k in await keys_of(store) if sid2 in k]
        assert await store.read_log(LOG) == []

        # An event filed for an evicted session (a download) is trimmed by the sweeper.
        got = await client.get(files[0]["url"], headers=auth(tok.clerk()))
        assert got.status == 200, await got.text()
        assert [e["type"] for e in await store.read_log(LOG)] == ["casefile.downloaded"]
        await evict_now(client)
        assert await store.read_log(LOG) == []
        assert await store.index_range(RETRIM) == []
    # verify compares the sealed files with the record's events where the log forgot.
    if config.database_url:
        monkeypatch.setenv("JR_DATABASE_URL", config.database_url)
    argv = ["verify", CASE, "--data-dir", str(config.data_dir), *_cli(config)]
    assert await asyncio.to_thread(cli.main, argv) == 0


async def test_a_case_forgotten_whole_numbers_on_for_a_new_session(
    config_kw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of a sealed case stays in the live store (not its document, nor its log's
    numbering); a second joint review of it, months later, numbers its events on from
    the record's last, and the case view shows both sessions."""
    config = make_config(tmp_path, media_enabled=False, **config_kw)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        store = client.app[STORE]
        sid, _ = await play(client, tok)
        last = (await store.read_log(LOG))[-1]["seq"]
        client.app[EVICTOR].forget_after_s = 0.0  # (a minute after its last event)
        assert await evict_now(client) == 1
        assert not [k for k in await keys_of(store) if CASE in k], await keys_of(store)
        assert await store.get(f"case:{CASE}") is None and await store.log_trimmed(LOG) == 0

        sid2 = await start_session(client, tok)
        assert [e["seq"] for e in await store.read_log(LOG)] == [last + 1]
        assert await store.get(f"case:{CASE}") is not None
        await client.post(f"/api/sessions/{sid2}/end", headers=auth(tok.clerk()))
        # (no grace left: evicted as it is sealed, just after the answer)
        await evict_now(client)
        assert not [k for k in await keys_of(store) if CASE in k]
        seqs = [e["seq"] for e in (await client.app[HISTORY].case_events(CASE, limit=500)).items]
        assert seqs == list(range(1, seqs[-1] + 1)) and seqs[-1] > last + 1

        res = await client.get(f"/api/cases/{CASE}?limit=500", headers=auth(tok.supervisor()))
        assert res.status == 200, await res.text()
        view = await res.json()
        assert [s["session_id"] for s in view["sessions"]] == [sid, sid2]
        assert [e["seq"] for e in view["events"]] == list(range(1, seqs[-1] + 1))
        assert await client.app[HISTORY].last_seq(CASE) == seqs[-1]
    # verify finds both sessions' events in the record.
    if config.database_url:
        monkeypatch.setenv("JR_DATABASE_URL", config.database_url)
    argv = ["verify", CASE, "--data-dir", str(config.data_dir), *_cli(config)]
    assert await asyncio.to_thread(cli.main, argv) == 0


def _cli(config: Any) -> list[str]:
    return ["--redis-url", config.redis_url] if config.redis_url else []


async def test_many_sealed_sessions_leave_the_store_flat(
    config_kw: dict[str, Any], tmp_path: Path
) -> None:
    config = make_config(tmp_path, media_enabled=False, **config_kw)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        store = client.app[STORE]
        cases = [f"GZ-2026-{n:04d}" for n in range(4)]
        sizes = []
        for round_ in range(4):
            for n in range(50):
                sid = await start_session(client, tok, cases[n % 4])
                await invite(client, tok, sid, dept="city-amr")
                res = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
                assert res.status == 200
            if round_ == 0:  # swept once they are over
                assert len(await store.index_range("sessions")) == 50
                assert await evict_now(client) == 50
            else:  # with no grace left, each as it is sealed (just after its end is answered)
                # (the eviction, then the case's trim, run just after: waited for too)
                for _ in range(100):
                    settled = len(await keys_of(store)) == sizes[0]
                    if settled and not await store.index_range("sessions"):
                        break
                    await asyncio.sleep(0.05)
                assert await store.index_range("sessions") == []
            sizes.append(len(await keys_of(store)))
            if isinstance(store, MemoryStore):
                assert sum(len(v) for v in store._logs.values()) == 0
                assert not store._docs.keys() - {f"case:{c}" for c in cases} - _others(store)
        assert sizes == [sizes[0]] * 4, sizes


def _others(store: MemoryStore) -> set[str]:
    """Documents that are no session's (the replay grant key, webhooks)."""
    return {k for k in store._docs if not k.startswith(("session:", "invitation:"))}


@pytest.fixture(params=["sqlite", "postgres"])
async def history_kw(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The record: SQLite in data_dir, or a fresh PostgreSQL database (migrated)."""
    if request.param == "sqlite":
        return {"database_url": ""}  # whatever JR_TEST_DATABASE says (Redis: its own)
    url = str(request.getfixturevalue("fresh_postgres_url"))
    await migrate.upgrade(url)
    return {"database_url": url}


async def test_a_session_stays_while_the_record_is_behind(
    config_kw: dict[str, Any], tmp_path: Path
) -> None:
    config = make_config(tmp_path, media_enabled=False, **config_kw)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        store = client.app[STORE]
        sid, _ = await play(client, tok)
        # As the catch-up marks a case whose events the database refused.
        await store.index_add(BEHIND, CASE, 0.0)
        assert await evict_now(client) == 0
        assert await store.get(f"session:{sid}") is not None
        assert await store.log_trimmed(LOG) == 0
        await store.index_remove(BEHIND, CASE)  # caught up
        assert await evict_now(client) == 1
        assert await store.get(f"session:{sid}") is None


async def test_a_case_caught_up_lets_its_sealed_sessions_go_at_once(
    config_kw: dict[str, Any], tmp_path: Path
) -> None:
    """A mark made for nothing (another node's commit pending as this one checked) is
    dropped by the catch-up, and the sealed session leaves then, not at the next sweep."""
    config = make_config(tmp_path, media_enabled=False, **config_kw)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        store = client.app[STORE]
        client.app[EVICTOR].grace_s = 0.0
        await client.app[CATCH_UP].close()  # its background task: caught up by hand here
        sid = await start_session(client, tok, CASE)
        await store.index_add(BEHIND, CASE, 0.0)
        res = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
        assert res.status == 200
        assert await store.get(f"session:{sid}") is not None  # sealed, held by the mark
        await client.app[CATCH_UP].catch_up(CASE)
        assert await store.index_range(BEHIND) == []
        assert await store.get(f"session:{sid}") is None
        assert await store.read_log(LOG) == []


async def test_a_trimmed_log_goes_on_counting_after_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path, media_enabled=False)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        await play(client, tok)
        await evict_now(client)
        last = await client.app[STORE].log_trimmed(LOG)
        assert last > 0 and await client.app[STORE].read_log(LOG) == []
    async with TestClient(TestServer(create_app(config))) as client:
        store = client.app[STORE]
        assert await store.log_trimmed(LOG) == last
        await start_session(client, Tokens(TokenService(config)))
        assert [e["seq"] for e in await store.read_log(LOG)] == [last + 1]
        assert await client.app[HISTORY].event_count(CASE) == last + 1


async def test_keys_written_as_a_session_left_are_swept(tmp_path: Path) -> None:
    """An opinion filed while its session was being evicted left live keys behind: the
    opinion.filed hook lists the session, the sweeper deletes them."""
    config = make_config(tmp_path, media_enabled=False)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        store = client.app[STORE]
        sid, _ = await play(client, tok)
        await evict_now(client)
        # As file_opinion would have written them had the session been there a moment ago.
        await store.create("opinion:o_late", {"opinion_id": "o_late"})
        await store.index_add(f"session:{sid}:opinions", "o_late", 1.0)
        event = await client.app[SERVICE].record(
            CASE, "opinion.filed", session_id=sid, opinion_id="o_late", decision="approve"
        )
        assert event.seq > await store.log_trimmed(LOG)
        await evict_now(client)
        assert not [k for k in await keys_of(store) if sid in k or "o_late" in k]
        assert await store.read_log(LOG) == [] and await store.index_range(AGAIN) == []


@contextlib.asynccontextmanager
async def record_held(history: History, case_id: str) -> AsyncIterator[None]:
    """While the block runs, the record's writer waits: for this node's writer lock on
    SQLite, for the case's advisory lock on PostgreSQL (the locks its commits take)."""
    writer_lock = history._writer._lock  # taken around every batch on SQLite
    if writer_lock is not None:
        async with writer_lock:
            yield
        return
    async with history.engine.connect() as conn:
        await conn.execute(sa.select(sa.func.pg_advisory_lock(lock_key(case_id))))
        try:
            yield
        finally:
            await conn.execute(sa.select(sa.func.pg_advisory_unlock(lock_key(case_id))))


async def test_a_commit_in_flight_does_not_mark_the_case_behind(
    config_kw: dict[str, Any], tmp_path: Path
) -> None:
    """CI once: the sweeper's check of unsealed sessions (``CatchUp.mark_unsealed``: is
    the case's log longer than its record?) ran while the end's first event was in the
    log and its commit still pending; it marked the case behind, so the session, sealed
    a moment later, stayed in the store until the next eviction sweep."""
    config = make_config(tmp_path, media_enabled=False, **config_kw)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        store = client.app[STORE]
        client.app[EVICTOR].grace_s = 0.0  # evicted as it is sealed
        sid = await start_session(client, tok, CASE)
        await invite(client, tok, sid, dept="city-amr")  # cancelled as the session ends
        filed = asyncio.Event()

        async def first(event: Event) -> None:  # before the record's hook
            if event.type == "invitation.cancelled":
                filed.set()

        client.app[SERVICE].event_hooks.insert(0, first)
        async with record_held(client.app[HISTORY], CASE):
            end = asyncio.ensure_future(
                client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
            )
            # The end's first event (the invitation's cancellation) is in the log; its
            # commit waits for the lock.
            await filed.wait()
            assert "invitation.cancelled" in [e["type"] for e in await store.read_log(LOG)]
            assert sid in await store.index_range("unsealed")
            assert await client.app[CATCH_UP].mark_unsealed() == 0
            assert await store.index_range(BEHIND) == []
        res = await end
        assert res.status == 200, await res.text()
        for _ in range(100):  # (sealed and evicted just after the answer)
            if await store.get(f"session:{sid}") is None:
                break
            await asyncio.sleep(0.05)
        assert await store.get(f"session:{sid}") is None
        assert await store.index_range("sessions") == []
