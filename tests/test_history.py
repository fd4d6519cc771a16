"""The record (signaling/history): the same contract on SQLite and a real PostgreSQL.

A realistic session is played on the real service and its case log fed to the record;
then the supervisors' queries must answer what happened, page by page. Also: recording
twice changes nothing, cursors never skip or repeat, the start check, and the migrated
database matches the tables' metadata.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from jointreview import cli
from jointreview.app import create_app
from signaling.appkeys import STORE
from signaling.auth import TokenService
from signaling.history import migrate
from signaling.history.db import default_url, make_engine
from signaling.history.repo import History
from signaling.history.schema import cases, metadata

from .conftest import Tokens, auth, make_config
from .images import tiny
from .test_signaling_flow import connect, invite, start_session

CASE = "GZ-2026-0001"
CLERK = {"sub": "clerk-01", "name": "陈晓", "role": "clerk", "dept": None, "level": None}
REV = {"sub": "rev-1", "name": "李四", "role": "reviewer", "dept": "city-amr", "level": "city"}


@pytest.fixture(params=["sqlite", "postgres"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        return default_url(tmp_path / "db")
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
async def history(history_url: str) -> AsyncIterator[History]:
    await migrate.upgrade(history_url)
    h = await History.open(history_url)
    yield h
    await h.close()


def ev(seq: int, type_: str, sid: str | None, ts: float, case: str = CASE, **data: Any) -> dict:
    actor = data.pop("actor", CLERK)
    return {
        "seq": seq,
        "ts": ts,
        "type": type_,
        "case_id": case,
        "session_id": sid,
        "actor": actor,
        "data": data,
    }


def a_session(seq: int, sid: str, ts: float, dept: str, case: str = CASE) -> list[dict]:
    """session.created and one department invitation (seq, seq + 1)."""
    return [
        ev(seq, "session.created", sid, ts, case, applicant_name="某公司", window="W1"),
        ev(seq + 1, "invitation.created", sid, ts, case, invitation_id=f"i-{sid}", dept=dept),
    ]


# -- a real session, through the real service -------------------------------------------


async def play_a_session(tmp_path: Path, **config_kw: Any) -> tuple[str, list[dict[str, Any]]]:
    """Run a joint review on the real app; its session id and the case's whole log."""
    config = make_config(tmp_path, media_enabled=False, **config_kw)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        sid = await start_session(client, tok, CASE)
        clerk = await connect(client, tok.clerk())
        await clerk.request("join", "joined", session_id=sid)
        rev = await connect(client, tok.reviewer())
        amr = await invite(client, tok, sid, dept="city-amr")
        await clerk.wait("presence", lambda m: m["state"] == "ringing")
        tax = await invite(client, tok, sid, dept="city-tax")
        await invite(client, tok, sid, reviewer="rev-district-amr-1")
        await rev.request("invitation.accept", "ack", invitation_id=amr["invitation_id"])
        res = await client.post(
            f"/api/invitations/{tax['invitation_id']}/decline",
            json={"reason": "本部门不负责此事项"},
            headers=auth(tok.other_reviewer()),
        )
        assert res.status == 200, await res.text()
        await rev.request("join", "joined", session_id=sid)
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
        await rev.request("leave", "left")
        res = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
        assert res.status == 200, await res.text()
        for s in (clerk, rev):
            await s.close()
        log = await client.app[STORE].read_log(f"case:{CASE}:events")
    return sid, log


async def test_a_real_session_is_in_the_record(history: History, tmp_path: Path) -> None:
    sid, log = await play_a_session(tmp_path)
    types = [e["type"] for e in log]
    for expected in ("invitation.rang", "invitation.declined", "archive.sealed"):
        assert expected in types
    assert await history.record_many(log) == len(log)

    s = await history.session(sid)
    assert s is not None
    assert (s["status"], s["case_id"], s["applicant_name"]) == ("ended", CASE, "广州某贸易有限公司")
    assert s["ended_by"]["sub"] == "clerk-01" and s["created_by"]["name"] == "陈晓"
    sealed = next(e for e in log if e["type"] == "archive.sealed")
    assert s["manifest_sha256"] == sealed["data"]["manifest_sha256"]
    assert [x["session_id"] for x in (await history.sessions(case_id=CASE)).items] == [sid]
    assert [x["session_id"] for x in (await history.sessions(dept="city-tax")).items] == [sid]
    assert (await history.sessions(dept="city-finance")).items == []
    assert [x["session_id"] for x in (await history.sessions(window=s["window"])).items] == [sid]

    invs = {i["dept"] or i["reviewer"]: i for i in (await history.invitations()).items}
    assert {k: i["status"] for k, i in invs.items()} == {
        "city-amr": "accepted",
        "city-tax": "declined",
        "rev-district-amr-1": "cancelled",
    }
    amr = invs["city-amr"]
    assert amr["created_at"] <= amr["rang_at"] <= amr["responded_at"]
    assert amr["answerer_sub"] == "rev-city-amr-1"
    assert invs["city-tax"]["reason"] == "本部门不负责此事项"
    answered = await history.invitations(dept="city-amr", status="accepted")
    assert [i["invitation_id"] for i in answered.items] == [amr["invitation_id"]]

    people = {p["identity"]["sub"]: p for p in await history.participants(sid)}
    assert {k: (p["state"], p["left_reason"]) for k, p in people.items()} == {
        "clerk-01": ("left", "session_ended"),
        "rev-city-amr-1": ("left", "left"),
    }
    assert people["rev-city-amr-1"]["identity"]["dept"] == "city-amr"
    assert [c["text"] for c in await history.chat(sid)] == ["请补充营业场所证明"]
    [opinion] = await history.opinions(sid)
    assert (opinion["decision"], opinion["missing"]) == ("materials_missing", ["营业场所证明"])
    assert opinion["author"]["sub"] == "rev-city-amr-1"
    [still] = await history.snapshots(sid)
    assert still["sha256"] == hashlib.sha256(tiny("JPEG")).hexdigest()
    assert still["url"] == f"/api/snapshots/{still['snapshot_id']}" and "path" not in still

    timeline = await history.case_events(CASE, session_id=sid, limit=1000)
    assert [e["type"] for e in timeline.items] == [e["type"] for e in log if e["session_id"] == sid]
    assert [e["data"] for e in timeline.items] == [e["data"] for e in log if e["session_id"] == sid]
    counts = await history.counts()
    assert (counts["events"], counts["sessions"], counts["invitations"]) == (len(log), 1, 3)
    assert (counts["participants"], counts["chat"], counts["opinions"]) == (2, 1, 1)


# -- idempotence and order ----------------------------------------------------------------


async def test_recording_an_event_twice_changes_nothing(history: History) -> None:
    events = [
        *a_session(1, "s1", 10.0, "city-amr"),
        ev(3, "invitation.accepted", "s1", 11.0, invitation_id="i-s1"),
        ev(4, "participant.joined", "s1", 12.0, participant_id="p1"),
        ev(5, "chat.message", "s1", 13.0, participant_id="p1", text="你好"),
    ]
    assert await history.record_many(events) == 5
    before = await history.counts()
    page = await history.invitations()
    for e in events:
        await history.record(e)
    assert await history.record_many(events + events) == 0
    assert await history.counts() == before
    assert (await history.invitations()).items == page.items
    [p] = await history.participants("s1")
    assert p["connections"] == 1


def story(n: int) -> list[dict[str, Any]]:
    """A short session of case C<n>: session s<n>, invitation i-s<n>, participant p<n>."""
    sid, case, rev = f"s{n}", f"C{n}", {"actor": REV}
    joined = {"participant_id": f"p{n}", **rev}
    return [
        *a_session(1, sid, 10.0, "city-amr", case),
        ev(3, "invitation.rang", sid, 11.0, case, invitation_id=f"i-{sid}", **rev),
        ev(4, "invitation.accepted", sid, 12.0, case, invitation_id=f"i-{sid}", **rev),
        ev(5, "participant.joined", sid, 13.0, case, **joined),
        ev(6, "participant.disconnected", sid, 14.0, case, **joined),
        ev(7, "participant.resumed", sid, 15.0, case, **joined),
        ev(8, "chat.message", sid, 16.0, case, text="在", **joined),
        ev(9, "session.ended", sid, 17.0, case),
        ev(10, "participant.left", sid, 17.0, case, reason="session_ended", **joined),
    ]


async def test_recording_order_does_not_matter(history: History) -> None:
    """Two tasks (or nodes) may record a case's events out of log order: the rows come
    out as if recorded in order, whatever the order."""
    orders = [
        story(0)[::-1],
        story(1)[2:] + story(1)[:2],
        [story(2)[i] for i in (3, 0, 5, 2, 8, 1)],
    ]
    for order in orders:
        for e in order:
            await history.record(e)
    await history.record_many(story(9))
    for n in (0, 1, 9):
        [inv] = (await history.invitations(session_id=f"s{n}")).items
        assert (inv["status"], inv["rang_at"], inv["responded_at"]) == ("accepted", 11.0, 12.0)
        [p] = await history.participants(f"s{n}")
        assert (p["state"], p["left_reason"], p["connections"]) == ("left", "session_ended", 2)
        s = await history.session(f"s{n}")
        assert s is not None and (s["status"], s["ended_at"]) == ("ended", 17.0)
        assert len(await history.chat(f"s{n}")) == 1
    # Part of a session: what its events say, nothing more.
    [inv] = (await history.invitations(session_id="s2")).items
    assert (inv["status"], inv["rang_at"]) == ("accepted", 11.0)
    assert await history.participants("s2") == []
    async with history.engine.connect() as conn:
        first = await conn.scalar(sa.select(cases.c.created_at).where(cases.c.case_id == "C0"))
    assert first == 10.0  # the case's first event, though recorded last


# -- pages ----------------------------------------------------------------------------------


async def _all_pages(fetch: Any, limit: int) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        page = await fetch(cursor=cursor, limit=limit)
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return pages


async def test_pages_neither_repeat_nor_skip_even_while_rows_arrive(history: History) -> None:
    events: list[dict] = []
    for n in range(23):  # times repeat: the id breaks the ties
        events += a_session(2 * n + 1, f"s{n:02d}", 100.0 + n // 3, "city-amr")
    await history.record_many(events)
    pages = await _all_pages(history.sessions, 5)
    got = [s["session_id"] for page in pages for s in page]
    expected = sorted(
        (e for e in events if e["type"] == "session.created"),
        key=lambda e: (e["ts"], e["session_id"]),
        reverse=True,
    )
    assert got == [e["session_id"] for e in expected]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]

    first = await history.invitations(dept="city-amr", limit=4)
    seen = [i["invitation_id"] for i in first.items]
    # Newer and older invitations arrive between two pages.
    await history.record_many(a_session(100, "new", 999.0, "city-amr", case="C2"))
    await history.record_many(a_session(102, "old", 1.0, "city-amr", case="C2"))
    cursor = first.next_cursor
    while cursor is not None:
        page = await history.invitations(dept="city-amr", limit=4, cursor=cursor)
        seen += [i["invitation_id"] for i in page.items]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen))
    assert set(seen) == {f"i-s{n:02d}" for n in range(23)} | {"i-old"}

    timeline = await _all_pages(lambda **kw: history.case_events(CASE, **kw), 7)
    seqs = [e["seq"] for page in timeline for e in page]
    assert seqs == list(range(1, 47))
    later = await history.case_events(CASE, after_seq=40, limit=100)
    assert [e["seq"] for e in later.items] == list(range(41, 47))


async def test_queries_by_period_window_and_status(history: History) -> None:
    await history.record_many(a_session(1, "a", 100.0, "city-amr"))
    await history.record_many(a_session(3, "b", 200.0, "city-tax"))
    await history.record(ev(5, "invitation.declined", "b", 210.0, invitation_id="i-b", reason="x"))
    got = await history.sessions(since=150.0, until=250.0)
    assert [s["session_id"] for s in got.items] == ["b"]
    assert (await history.sessions(window="nowhere")).items == []
    declined = await history.invitations(status="declined", since=150.0)
    assert [(i["invitation_id"], i["responded_at"]) for i in declined.items] == [("i-b", 210.0)]
    assert (await history.invitations(dept="city-amr", status="declined")).items == []


# -- schema versions ---------------------------------------------------------------------


async def test_the_migrated_database_is_the_metadata(history_url: str) -> None:
    assert await migrate.current(history_url) is None
    assert await migrate.upgrade(history_url) == (None, migrate.head())
    engine = make_engine(history_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_the_start_check(history_url: str) -> None:
    if history_url.startswith("sqlite"):  # embedded: migrated at start, nothing by hand
        assert await migrate.check(history_url) == migrate.head()
    else:
        with pytest.raises(migrate.SchemaError, match=r"has no schema yet.*jointreview migrate"):
            await migrate.check(history_url)
        await migrate.upgrade(history_url)
        assert await migrate.check(history_url) == migrate.head()
    engine = make_engine(history_url)
    try:
        async with engine.begin() as conn:
            newer = sa.text("UPDATE alembic_version SET version_num = :v")
            await conn.execute(newer, {"v": "0099"})
    finally:
        await engine.dispose()
    for step in (migrate.check, migrate.upgrade):
        with pytest.raises(migrate.SchemaError) as refused:
            await step(history_url)
        message = str(refused.value)
        assert "revision 0099" in message and migrate.head() in message
        assert "jointreview migrate" in message


def test_jointreview_migrate(history_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", "--database-url", history_url]) == 0
    assert f"revision (empty) -> {migrate.head()}" in capsys.readouterr().out
    assert cli.main(["migrate", "--database-url", history_url]) == 0
    assert "already the newest" in capsys.readouterr().out
    assert asyncio.run(migrate.current(history_url)) == migrate.head()


async def test_concurrent_records_all_land(history: History) -> None:
    """Many tasks record at once (a busy node): none fails, none is lost."""
    events = [e for n in range(20) for e in story(100 + n)]
    await asyncio.gather(*(history.record(e) for e in events))
    counts = await history.counts()
    assert (counts["events"], counts["sessions"], counts["participants"]) == (200, 20, 20)
    for n in range(20):
        [p] = await history.participants(f"s{100 + n}")
        assert p["state"] == "left"


async def test_the_longest_identities_fit(history: History) -> None:
    """A token may carry a sub and a department of 128 characters (signaling.auth)."""
    long = {**REV, "sub": "u" * 128, "dept": "d" * 128, "name": "名" * 100}
    events = a_session(1, "s" * 64, 1.0, "d" * 128, case="c" * 64)
    events.append(
        ev(3, "participant.joined", "s" * 64, 2.0, "c" * 64, participant_id="p", actor=long)
    )
    await history.record_many(events)
    [p] = await history.participants("s" * 64)
    assert p["identity"] == long
    assert [i["dept"] for i in (await history.invitations(dept="d" * 128)).items] == ["d" * 128]


async def test_one_bad_event_fails_only_its_own_record(history: History) -> None:
    """Events recorded together share a transaction; one the database refuses (here a
    participant without a name) fails its caller alone."""
    good = story(300)[:5]
    bad = ev(6, "participant.joined", "s300", 14.0, "C300", participant_id="px")
    bad["actor"] = {"sub": "x", "name": None, "role": "reviewer"}
    results = await asyncio.gather(
        *(history.record(e) for e in [*good, bad]), return_exceptions=True
    )
    assert results[:5] == [None] * 5
    assert isinstance(results[5], sa.exc.IntegrityError)
    page = await history.case_events("C300")
    assert [e["seq"] for e in page.items] == [1, 2, 3, 4, 5]


async def test_one_batch_changes_a_row_several_times_in_order(history: History) -> None:
    """A batch's changes of rows an earlier batch made go as few statements as can be
    (one per kind of change): each row still gets its own changes in log order."""
    await history.record_many(
        [
            *a_session(1, "s1", 1.0, "city-amr"),
            ev(3, "invitation.created", "s1", 1.0, invitation_id="i-b", dept="city-tax"),
            ev(4, "participant.joined", "s1", 2.0, participant_id="p1"),
            ev(5, "participant.joined", "s1", 2.0, participant_id="p2", actor=REV),
        ]
    )
    later = [
        ev(6, "invitation.rang", "s1", 3.0, invitation_id="i-s1"),
        ev(7, "invitation.rang", "s1", 3.0, invitation_id="i-b"),
        ev(8, "invitation.accepted", "s1", 4.0, invitation_id="i-s1", actor=REV),
        ev(9, "participant.disconnected", "s1", 5.0, participant_id="p1"),
        ev(10, "participant.resumed", "s1", 6.0, participant_id="p1"),
        ev(11, "participant.disconnected", "s1", 7.0, participant_id="p1"),
        ev(12, "participant.resumed", "s1", 8.0, participant_id="p1"),
        ev(13, "invitation.declined", "s1", 9.0, invitation_id="i-b", reason="不负责"),
        ev(14, "invitation.rang", "s1", 9.5, invitation_id="i-s1"),  # too late: no change
        ev(15, "participant.left", "s1", 10.0, participant_id="p2", actor=REV),
        ev(16, "participant.resumed", "s1", 11.0, participant_id="p2"),  # left: no change
    ]
    assert await history.record_many(later) == len(later)
    invitations = {i["invitation_id"]: i for i in (await history.invitations()).items}
    amr, tax = invitations["i-s1"], invitations["i-b"]
    assert (amr["status"], amr["rang_at"], amr["responded_at"]) == ("accepted", 3.0, 4.0)
    assert (tax["status"], tax["rang_at"], tax["reason"]) == ("declined", 3.0, "不负责")
    p1, p2 = await history.participants("s1")
    assert (p1["state"], p1["connections"], p1["disconnected_at"]) == ("joined", 3, 7.0)
    assert (p2["state"], p2["connections"], p2["left_at"]) == ("left", 1, 10.0)
