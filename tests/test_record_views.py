"""The record views answer from the record (SQL), not from the live store: the same JSON
as the live documents give, and still the same once the live store has forgotten an
ended session (its documents and indexes, as the eviction step will), for a supervisor
and for a reviewer (only what their department may read); on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.appkeys import SERVICE, STORE, TOKENS, VIEWS_FROM_RECORD
from signaling.core import append_event
from signaling.history import migrate
from signaling.state import Store

from .conftest import Tokens, auth, flush_redis, make_config
from .images import tiny
from .test_api import expect_error
from .test_paging import walk
from .test_record import database_url

__all__ = ["database_url"]  # the fixture: '' (SQLite in data_dir) or a migrated PostgreSQL

CASE = "VIEW-2026-0001"
PNG = tiny("PNG")
Client = TestClient[Any, Any]
Json = Any


async def _call(client: Client, token: str, method: str, path: str, **kw: Any) -> Json:
    headers = {**auth(token), **kw.pop("headers", {})}
    r = await client.request(method, path, headers=headers, **kw)
    assert r.status in (200, 201), await r.text()
    return await r.json()


async def _play(client: Client, tok: Tokens) -> tuple[str, str]:
    """A case of two sessions: S1 held and ended (accepted, declined and cancelled
    invitations, a dropped and resumed clerk, chat, an opinion, a still), S2 still
    running, to which city-amr is not invited."""
    service, tokens = client.app[SERVICE], client.app[TOKENS]
    clerk, reviewer = tok.clerk(), tok.reviewer()
    body = {"applicant_name": "张三", "matter": "食品经营许可"}
    s1 = (await _call(client, clerk, "POST", f"/api/cases/{CASE}/sessions", json=body))[
        "session_id"
    ]
    invite = f"/api/sessions/{s1}/invitations"
    amr = await _call(client, clerk, "POST", invite, json={"dept": "city-amr", "note": "加急"})
    tax = await _call(client, clerk, "POST", invite, json={"dept": "city-tax"})
    await _call(client, clerk, "POST", invite, json={"reviewer": "rev-district-amr-1"})
    await _call(client, reviewer, "POST", f"/api/invitations/{amr['invitation_id']}/accept")
    decline = {"reason": "非本局事项"}
    path = f"/api/invitations/{tax['invitation_id']}/decline"
    await _call(client, tok.other_reviewer(), "POST", path, json=decline)
    clerk_slot, resume = await service.join(tokens.verify(clerk), s1)
    rev_slot, _ = await service.join(tokens.verify(reviewer), s1)
    await service.chat(rev_slot, "请补充营业场所证明")
    assert await service.disconnected(clerk_slot.participant_id, clerk_slot.epoch)
    await service.resume(tokens.verify(clerk), resume)
    opinion = {"decision": "materials_missing", "missing": ["营业场所证明"]}
    await _call(client, reviewer, "POST", f"/api/sessions/{s1}/opinions", json=opinion)
    await _call(
        client,
        clerk,
        "POST",
        f"/api/sessions/{s1}/snapshots",
        data=PNG,
        headers={"Content-Type": "image/png"},
    )
    await service.leave(rev_slot.participant_id, rev_slot.epoch)
    await _call(client, clerk, "POST", f"/api/sessions/{s1}/end")
    s2 = (await _call(client, clerk, "POST", f"/api/cases/{CASE}/sessions", json={}))["session_id"]
    await _call(client, clerk, "POST", f"/api/sessions/{s2}/invitations", json={"dept": "city-tax"})
    await service.join(tokens.verify(clerk), s2)
    return s1, s2


async def _views(client: Client, token: str, s1: str, s2: str) -> dict[str, Any]:
    """Every record view as this caller gets it: (status, body) by path."""
    paths = [
        f"/api/cases/{CASE}",
        f"/api/cases/{CASE}?limit=2",
        f"/api/cases/{CASE}/events?limit=500",
        f"/api/cases/{CASE}/events?limit=3",
        f"/api/cases/{CASE}/events?session={s1}",
        f"/api/cases/{CASE}/sessions",
        f"/api/cases/{CASE}/sessions?limit=1",
        "/api/sessions",
        "/api/sessions?dept=city-amr",
        "/api/sessions?window=琶洲 3 号窗口",
        f"/api/sessions?case={CASE}",
        "/api/sessions?case=NO-SUCH-CASE",
        "/api/reports/invitations",
        "/api/reports/invitations?dept=city-amr&status=accepted",
        "/api/reports/invitations?status=cancelled",
    ]
    for sid in (s1, s2):
        paths += [f"/api/sessions/{sid}{tail}" for tail in ("", "/invitations", "/opinions")]
        paths.append(f"/api/sessions/{sid}/snapshots")
    out: dict[str, Any] = {}
    for path in paths:
        r = await client.get(path, headers=auth(token))
        out[path] = (r.status, await r.json())
    # The next pages, where a first page had one.
    for path, (status, body) in list(out.items()):
        cursor = body.get("next_cursor") if status == 200 else None
        if cursor:
            r = await client.get(path, params={"cursor": cursor}, headers=auth(token))
            out[f"{path} (next)"] = (r.status, await r.json())
    status, snaps = out[f"/api/sessions/{s1}/snapshots"]
    for snap in snaps.get("snapshots", []) if status == 200 else []:
        r = await client.get(snap["url"], headers=auth(token))
        out[snap["url"]] = (r.status, hashlib.sha256(await r.read()).hexdigest())
    return out


def _dump(items: list[Any]) -> list[Any]:
    return [i.model_dump(mode="json") for i in items]


async def _live(client: Client, s1: str) -> dict[str, Any]:
    """What the live store's documents say of S1, as the API showed them until now."""
    service = client.app[SERVICE]
    return {
        "session": (await service.session(s1)).model_dump(mode="json"),
        "invitations": _dump(await service.invitations(s1)),
        "participants": _dump(await service.participants(s1)),
        "opinions": _dump(await service.opinions(s1)),
        "snapshots": _dump(await service.snapshots(s1)),
        "events": _dump(await service.events(CASE)),
    }


async def _forget(store: Store, case_id: str, session_id: str) -> int:
    """As the eviction step will: the ended session's documents and indexes go."""
    gone = 0
    for kind in ("invitation", "opinion", "snapshot", "participant"):
        index = f"session:{session_id}:{kind}s"
        for member in await store.index_range(index):
            gone += await store.get(f"{kind}:{member}") is not None
            await store.delete([f"{kind}:{member}"])
            await store.index_remove(index, member)
    gone += await store.get(f"session:{session_id}") is not None
    await store.delete([f"session:{session_id}"])
    await store.index_remove(f"case:{case_id}:sessions", session_id)
    await store.index_remove("sessions", session_id)
    return gone


async def _before_and_after(client: Client) -> None:
    """Play the case, read every view as five callers, make the store forget S1, read
    again: the same answers."""
    tok = Tokens(client.app[TOKENS])
    s1, s2 = await _play(client, tok)
    readers = {
        "supervisor": tok.supervisor(),
        "admin": tok.admin(),
        "reviewer": tok.reviewer(),
        "other reviewer": tok.other_reviewer(),
        "applicant": tok.applicant(s1, CASE),
    }
    before = {who: await _views(client, t, s1, s2) for who, t in readers.items()}

    # The record's JSON is the live documents' JSON, to the microsecond.
    live = await _live(client, s1)
    session = before["supervisor"][f"/api/sessions/{s1}"][1]
    assert session["session"] == live["session"]
    assert session["invitations"] == live["invitations"]
    assert session["participants"] == live["participants"]
    assert [p["epoch"] for p in session["participants"]] == [2, 1]  # resumed once
    opinions = before["supervisor"][f"/api/sessions/{s1}/opinions"][1]["opinions"]
    assert opinions == live["opinions"]
    snapshots = before["supervisor"][f"/api/sessions/{s1}/snapshots"][1]["snapshots"]
    assert snapshots == live["snapshots"] and len(snapshots) == 1
    events = before["supervisor"][f"/api/cases/{CASE}/events?limit=500"][1]["events"]
    assert events == live["events"]
    statuses = [i["status"] for i in live["invitations"]]
    assert statuses == ["accepted", "declined", "cancelled"]

    # Least privilege, as before: city-amr's reviewer reads S1 only.
    mine = before["reviewer"]
    assert [s["session_id"] for s in mine[f"/api/cases/{CASE}"][1]["sessions"]] == [s1]
    timeline = mine[f"/api/cases/{CASE}/events?limit=500"][1]["events"]
    assert {e["session_id"] for e in timeline} == {s1}
    assert mine[f"/api/sessions/{s2}"][0] == 404
    assert mine["/api/sessions"][0] == mine["/api/reports/invitations"][0] == 403
    assert before["applicant"][f"/api/cases/{CASE}"][0] == 404
    report = before["supervisor"]["/api/reports/invitations?dept=city-amr&status=accepted"]
    [accepted] = report[1]["invitations"]
    assert accepted["responded_by"]["sub"] == "rev-city-amr-1" and accepted["note"] == "加急"
    windows = before["supervisor"]["/api/sessions?window=琶洲 3 号窗口"][1]["sessions"]
    assert [s["session_id"] for s in windows] == [s2, s1]

    assert await _forget(client.app[STORE], CASE, s1) == 1 + 3 + 1 + 1 + 2
    assert await client.app[STORE].get(f"session:{s1}") is None
    after = {who: await _views(client, t, s1, s2) for who, t in readers.items()}
    for who in readers:
        assert after[who] == before[who], who


async def test_the_views_answer_from_the_record_once_the_store_forgot(
    database_url: str, tmp_path: Path
) -> None:
    config = make_config(tmp_path, media_enabled=False, database_url=database_url)
    async with TestClient(TestServer(create_app(config))) as client:
        assert client.app[VIEWS_FROM_RECORD]
        await _before_and_after(client)


async def test_with_redis_and_postgresql_the_views_read_the_record(
    tmp_path: Path, redis_url: str, request: pytest.FixtureRequest
) -> None:
    """Several nodes' configuration: the live state in Redis, one record in PostgreSQL."""
    database = str(request.getfixturevalue("fresh_postgres_url"))
    await migrate.upgrade(database)
    shared = redis_url[:-1] + "8"  # a database of its own: the server is the run's
    flush_redis(shared)
    config = make_config(tmp_path, media_enabled=False, redis_url=shared, database_url=database)
    async with TestClient(TestServer(create_app(config))) as client:
        assert client.app[VIEWS_FROM_RECORD]
        await _before_and_after(client)


async def test_nodes_each_with_their_own_sqlite_read_the_live_store(
    tmp_path: Path, redis_url: str
) -> None:
    """Redis without database_url: each node's record holds only its own events, so the
    views read the shared store (tests/test_nodes.py walks two such nodes)."""
    shared = redis_url[:-1] + "8"
    flush_redis(shared)
    # database_url="": the SQLite file in data_dir, whatever JR_TEST_DATABASE says.
    config = make_config(tmp_path, media_enabled=False, redis_url=shared, database_url="")
    async with TestClient(TestServer(create_app(config))) as client:
        assert not client.app[VIEWS_FROM_RECORD]
        tok = Tokens(client.app[TOKENS])
        s1, s2 = await _play(client, tok)
        views = await _views(client, tok.supervisor(), s1, s2)
        session = views[f"/api/sessions/{s1}"][1]
        assert session["participants"] == (await _live(client, s1))["participants"]
        amr = views["/api/sessions?dept=city-amr"][1]["sessions"]
        assert [s["session_id"] for s in amr] == [s1]


async def test_the_invitation_report_filters_and_pages(tmp_path: Path) -> None:
    config = make_config(tmp_path, media_enabled=False)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(client.app[TOKENS])
        s1, s2 = await _play(client, tok)
        sup = tok.supervisor()
        path = "/api/reports/invitations"
        every = (await _call(client, sup, "GET", path, params={"limit": "500"}))["invitations"]
        assert [i["session_id"] for i in every] == [s2, s1, s1, s1]  # newest first
        times = [i["created_at"] for i in every]
        assert times == sorted(times, reverse=True)
        assert await walk(client, path, "invitations", sup, limit=1) == every
        tax = await walk(client, path, "invitations", sup, dept="city-tax")
        assert [(i["session_id"], i["status"]) for i in tax] == [(s2, "pending"), (s1, "declined")]
        [declined] = await walk(client, path, "invitations", sup, status="declined")
        assert (
            declined["reason"] == "非本局事项"
            and declined["responded_at"] >= declined["created_at"]
        )
        newest = every[0]["created_at"]
        assert await walk(client, path, "invitations", sup, since=newest) == every[:1]
        assert await walk(client, path, "invitations", sup, until=newest - 1e-6) == every[1:]
        # A token limited to a session or a case reads within it.
        one = tok.supervisor(session=s2, case=CASE)
        assert await walk(client, path, "invitations", one) == every[:1]
        other = tok.supervisor(case="ANOTHER-1")
        assert await walk(client, path, "invitations", other) == []
        for query in ({"status": "maybe"}, {"since": "nan"}, {"until": "soon"}, {"limit": "0"}):
            r = await client.get(path, params=query, headers=auth(sup))
            await expect_error(r, 400, "invalid_query")
        r = await client.get(path, params={"cursor": "bnVsbA"}, headers=auth(sup))
        await expect_error(r, 400, "invalid_cursor")
        # The session list's filters, likewise.
        lists = "/api/sessions"
        got = await walk(client, lists, "sessions", sup, dept="city-tax")
        assert [s["session_id"] for s in got] == [s2, s1]
        got = await walk(client, lists, "sessions", sup, window="no such window")
        assert got == []


async def test_an_event_the_record_missed_is_filed_as_its_session_ends(tmp_path: Path) -> None:
    """A node that died between the store's append and the record (the event was never
    acknowledged, but the store and so the sealed case file hold it): the record takes it
    from the case's log when the session ends."""
    config = make_config(tmp_path, media_enabled=False)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(client.app[TOKENS])
        clerk = tok.clerk()
        sid = (await _call(client, clerk, "POST", f"/api/cases/{CASE}/sessions", json={}))[
            "session_id"
        ]
        # Filed in the store only, as by a node that died before its hooks ran.
        missed = await append_event(
            client.app[STORE],
            CASE,
            "chat.message",
            ts=time.time(),
            session_id=sid,
            data={"participant_id": None, "text": "filed, then the node died"},
        )
        path = f"/api/cases/{CASE}/events"
        seqs = [e["seq"] for e in (await _call(client, clerk, "GET", path))["events"]]
        assert missed.seq not in seqs
        await _call(client, clerk, "POST", f"/api/sessions/{sid}/end")
        events = (await _call(client, clerk, "GET", path))["events"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[missed.seq - 1]["data"]["text"] == "filed, then the node died"
