"""The node files the record as events happen: every event of a real joint review is in
the SQL database (SQLite by default, PostgreSQL with ``database_url``) by the time the
action that caused it is answered, with the rows it implies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from jointreview import cli
from jointreview.app import create_app
from signaling.appkeys import HISTORY, STORE
from signaling.auth import TokenService
from signaling.history import migrate
from signaling.history.catchup import BEHIND
from signaling.history.db import default_url, make_engine, url_of
from signaling.history.repo import History

from .conftest import Tokens, auth, make_config
from .test_history import CASE, play_a_session
from .test_signaling_flow import connect, start_session


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest) -> str:
    """'' (the embedded default: SQLite in data_dir, migrated at start) or a PostgreSQL
    database, migrated first as its operator does (``jointreview migrate``)."""
    if request.param == "sqlite":
        return ""
    url = str(request.getfixturevalue("fresh_postgres_url"))
    await migrate.upgrade(url)
    return url


async def test_every_event_of_a_joint_review_is_in_the_record(
    database_url: str, tmp_path: Path
) -> None:
    sid, log = await play_a_session(tmp_path, database_url=database_url)
    url = database_url or default_url(tmp_path / "data")
    history = await History.open(url)
    try:
        page = await history.case_events(CASE, limit=500)
        filed = [(e["seq"], e["type"], e["data"]) for e in page.items]
        assert filed[: len(log)] == [(e["seq"], e["type"], e["data"]) for e in log]
        session = await history.session(sid)
        assert session is not None and session["status"] == "ended"
        chat = await history.chat(sid)
        assert [c["text"] for c in chat] == ["请补充营业场所证明"]
        opinions = await history.opinions(sid)
        assert [o["decision"] for o in opinions] == ["materials_missing"]
        assert len(await history.snapshots(sid)) == 1
    finally:
        await history.close()


async def test_nul_characters_are_refused_before_they_reach_the_record(
    database_url: str, tmp_path: Path
) -> None:
    """PostgreSQL's text refuses U+0000 (SQLite keeps it): a NUL in a URL, a body, a
    socket message (a token's claims: test_auth.py) is the client's error on both databases, never a
    500 or an event that the record can't take (its case left behind for ever)."""
    config = make_config(tmp_path, media_enabled=False, database_url=database_url)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        sid = await start_session(client, tok, CASE)
        for path, code in ((f"/api/sessions/{sid}%00", 404), ("/api/sessions?dept=a%00", 400)):
            res = await client.get(path, headers=auth(tok.supervisor()))
            assert res.status == code, (path, await res.text())
        res = await client.post(
            f"/api/cases/{CASE}/sessions",
            data=b'{"applicant_name": "a\\u0000b"}',
            headers={**auth(tok.clerk()), "Content-Type": "application/json"},
        )
        assert (res.status, (await res.json())["error"]["code"]) == (400, "bad_json")
        clerk = await connect(client, tok.clerk())
        await clerk.request("join", "joined", session_id=sid)
        err = await clerk.request("chat", "error", text="a\x00b")
        assert err["code"] == "invalid_message"
        await clerk.request("chat", "ack", text="ab")
        await clerk.close()
        history = client.app[HISTORY]
        assert [c["text"] for c in await history.chat(sid)] == ["ab"]
        assert await client.app[STORE].index_range(BEHIND) == []


async def test_a_node_refuses_a_record_newer_than_itself(tmp_path: Path) -> None:
    config = make_config(tmp_path, media_enabled=False)
    url = url_of(config.database_url, config.data_dir)  # SQLite, or JR_TEST_DATABASE's
    await migrate.upgrade(url)
    engine = make_engine(url)
    async with engine.begin() as conn:  # as a newer jointreview would leave it
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfacefeed'"))
    await engine.dispose()
    with pytest.raises(migrate.SchemaError, match="f00dfacefeed"):
        async with TestClient(TestServer(create_app(config))):
            pass


# -- moving existing data: jointreview migrate --from-store ------------------------------


def _forget_the_record(data: Path) -> None:
    """As before the upgrade: the node's records are only in its live store."""
    for name in ("history.sqlite3", "history.sqlite3-wal", "history.sqlite3-shm"):
        (data / name).unlink(missing_ok=True)


async def _filed(url: str) -> list[tuple[int, str]]:
    history = await History.open(url)
    try:
        page = await history.case_events(CASE, limit=500)
        return [(e["seq"], e["type"]) for e in page.items]
    finally:
        await history.close()


@pytest.mark.parametrize("store", ["journal", "redis"])
async def test_migrate_from_store_copies_and_verifies_every_case(
    store: str,
    database_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shared = ""
    if store == "redis":  # a database of its own: the Redis server is shared by the run
        shared = str(request.getfixturevalue("redis_url"))[:-1] + "9"
        await _flush(shared)
    sid, log = await play_a_session(tmp_path, redis_url=shared)
    data = tmp_path / "data"
    _forget_the_record(data)
    argv = ["migrate", "--from-store", "--data-dir", str(data)]
    argv += ["--database-url", database_url] if database_url else []
    argv += ["--redis-url", shared] if shared else []
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert f"1 cases, {len(log)} events in the store; {len(log)} filed now" in out
    assert "1 sealed case files match" in out
    url = database_url or default_url(data)
    assert (await _filed(url))[: len(log)] == [(e["seq"], e["type"]) for e in log]
    # Again: nothing new, nothing lost (a copy can be re-run or resumed).
    assert await asyncio.to_thread(cli.main, argv) == 0
    assert f"{len(log)} events in the store; 0 filed now" in capsys.readouterr().out
    # A case file changed since it was sealed: said, and the command fails.
    manifest = data / "archive" / CASE / sid / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"}", b" }", 1))
    assert await asyncio.to_thread(cli.main, argv) == 1
    assert "manifest.json differs from the one sealed" in capsys.readouterr().err


async def _flush(url: str) -> None:
    r = redis.asyncio.from_url(url)
    try:
        await r.flushdb()
    finally:
        await r.aclose()
