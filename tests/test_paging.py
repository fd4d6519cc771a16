"""Pages of the lists that grow: walking a cursor returns every item exactly once, in
order; a page is bounded by ``page_max``; a cursor is opaque and checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.appkeys import SERVICE
from signaling.models import Actor

from .conftest import Tokens, auth, make_config
from .test_api import Client, create_session, expect_error, invite

CASE = "PAGE-2026-1"
BY = Actor(sub="clerk-01", name="陈晓", role="clerk")


async def walk(client: Client, path: str, key: str, token: str, **query: Any) -> list[Any]:
    """Every item of a paginated list, following next_cursor to its end."""
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(10_000):
        params = {k: str(v) for k, v in query.items()}
        if cursor is not None:
            params["cursor"] = cursor
        r = await client.get(path, params=params, headers=auth(token))
        assert r.status == 200, await r.text()
        body = await r.json()
        items += body[key]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the cursor never ended")


@pytest.fixture
async def busy(client: Client, tok: Tokens) -> tuple[str, str]:
    """A case of two sessions with 300 chat events between them (many pages)."""
    clerk = tok.clerk()
    s1 = (await create_session(client, clerk, CASE))["session_id"]
    s2 = (await create_session(client, clerk, CASE))["session_id"]
    await invite(client, clerk, s1, dept="district-amr")
    await invite(client, clerk, s2, dept="city-amr")
    service = client.app[SERVICE]
    for n in range(300):
        sid = s1 if n % 3 else s2  # S2 sparse: one in three
        await service.record(CASE, "chat.message", session_id=sid, actor=BY, text=f"m{n}")
    return s1, s2


async def test_walking_the_case_timeline_returns_every_event_once_in_order(
    client: Client, tok: Tokens, busy: tuple[str, str]
) -> None:
    s1, s2 = busy
    every = await client.app[SERVICE].events(CASE)
    assert len(every) > 300
    for limit in (7, 100, 500):
        got = await walk(client, f"/api/cases/{CASE}/events", "events", tok.clerk(), limit=limit)
        assert [e["seq"] for e in got] == [e.seq for e in every]
    # A reviewer of S2 walks S2's events only: each once, in order (some pages may be
    # empty where S1's chat fills the log; the walk still ends).
    got = await walk(client, f"/api/cases/{CASE}/events", "events", tok.reviewer(), limit=5)
    assert [e["seq"] for e in got] == [e.seq for e in every if e.session_id == s2]
    # One session's part, as a clerk.
    got = await walk(
        client, f"/api/cases/{CASE}/events", "events", tok.clerk(), limit=50, session=s1
    )
    assert [e["seq"] for e in got] == [e.seq for e in every if e.session_id == s1]


async def test_the_case_view_is_one_page_and_the_timeline_continues_from_it(
    client: Client, tok: Tokens, busy: tuple[str, str]
) -> None:
    r = await client.get(f"/api/cases/{CASE}", headers=auth(tok.clerk()))
    view = await r.json()
    assert len(view["events"]) == 100  # page_default
    assert view["sessions_next_cursor"] is None and len(view["sessions"]) == 2
    rest = []
    cursor = view["events_next_cursor"]
    while cursor is not None:
        r = await client.get(
            f"/api/cases/{CASE}/events", params={"cursor": cursor}, headers=auth(tok.clerk())
        )
        body = await r.json()
        rest += body["events"]
        cursor = body["next_cursor"]
    every = await client.app[SERVICE].events(CASE)
    assert [e["seq"] for e in view["events"] + rest] == [e.seq for e in every]


async def test_session_lists_walk_to_the_end(client: Client, tok: Tokens) -> None:
    made = []
    for _ in range(7):
        made.append((await create_session(client, tok.clerk(), CASE))["session_id"])
    got = await walk(client, "/api/sessions", "sessions", tok.supervisor(), limit=3)
    assert [s["session_id"] for s in got] == made[::-1]  # newest first, each once
    got = await walk(client, f"/api/cases/{CASE}/sessions", "sessions", tok.clerk(), limit=2)
    assert [s["session_id"] for s in got] == made  # oldest first


@pytest.fixture(params=["memory", "redis"])
async def both(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Client]:
    """A client on each store: their indexes order sessions of one time alike."""
    overrides: dict[str, Any] = {}
    if request.param == "redis":
        from .conftest import flush_redis

        overrides["redis_url"] = request.getfixturevalue("redis_url")
        flush_redis(overrides["redis_url"])
    async with TestClient(TestServer(create_app(make_config(tmp_path, **overrides)))) as c:
        yield c


async def test_sessions_created_at_the_same_moment_are_each_listed_once(
    both: Client, tok: Tokens
) -> None:
    client = both
    service = client.app[SERVICE]
    clock = service.clock
    service.clock = lambda: 1_700_000_000.0  # every session at the very same time
    try:
        made = {(await create_session(client, tok.clerk(), CASE))["session_id"] for _ in range(5)}
    finally:
        service.clock = clock
    got = await walk(client, "/api/sessions", "sessions", tok.clerk(), limit=2)
    ids = [s["session_id"] for s in got]
    assert len(ids) == len(set(ids)) == 5 and set(ids) == made
    got = await walk(client, f"/api/cases/{CASE}/sessions", "sessions", tok.clerk(), limit=2)
    assert {s["session_id"] for s in got} == made and len(got) == 5
    # And the timeline of a case walks alike on both.
    got = await walk(client, f"/api/cases/{CASE}/events", "events", tok.clerk(), limit=2)
    assert [e["seq"] for e in got] == list(range(1, 6))


async def test_replay_markers_walk_to_the_end(
    client: Client, tok: Tokens, busy: tuple[str, str]
) -> None:
    s1, _ = busy
    r = await client.get(
        f"/api/sessions/{s1}/recording", params={"limit": "10"}, headers=auth(tok.clerk())
    )
    first = await r.json()
    assert len(first["markers"]) <= 10 and first["markers_next_cursor"] is not None
    rest = await walk(
        client, f"/api/sessions/{s1}/recording/markers", "markers", tok.clerk(), limit=10
    )
    chats = [m["data"]["text"] for m in rest if m["type"] == "chat"]
    assert chats == [f"m{n}" for n in range(300) if n % 3]
    seqs = [m["seq"] for m in rest]
    assert seqs == sorted(set(seqs))


@pytest.mark.parametrize(
    "path",
    [
        f"/api/cases/{CASE}",
        f"/api/cases/{CASE}/events",
        f"/api/cases/{CASE}/sessions",
        "/api/sessions",
        "/api/sessions/{sid}/recording",
        "/api/sessions/{sid}/recording/markers",
        "/api/webhooks/deliveries",
    ],
)
async def test_limits_and_cursors_are_checked(
    client: Client, tok: Tokens, busy: tuple[str, str], path: str
) -> None:
    path = path.format(sid=busy[0])
    headers = auth(tok.admin())
    for limit in ("0", "501", "many", "-1"):
        r = await client.get(path, params={"limit": limit}, headers=headers)
        await expect_error(r, 400, "invalid_query")
    r = await client.get(path, params={"limit": "500"}, headers=headers)
    assert r.status == 200, await r.text()
    if path == f"/api/cases/{CASE}" or path.endswith("/recording"):
        return  # a first page only: no cursor
    for cursor in ("garbage!", "eyJrIjoiZXYifQ", "x" * 600, "bnVsbA"):
        r = await client.get(path, params={"cursor": cursor}, headers=headers)
        await expect_error(r, 400, "invalid_cursor")


async def test_a_cursor_of_one_list_is_refused_by_another(
    client: Client, tok: Tokens, busy: tuple[str, str]
) -> None:
    r = await client.get(
        f"/api/cases/{CASE}/events", params={"limit": "1"}, headers=auth(tok.clerk())
    )
    cursor = (await r.json())["next_cursor"]
    for path in ("/api/sessions", f"/api/cases/{CASE}/sessions", "/api/webhooks/deliveries"):
        r = await client.get(path, params={"cursor": cursor}, headers=auth(tok.admin()))
        await expect_error(r, 400, "invalid_cursor")


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = make_config(tmp_path, page_default=3, page_max=4)
    async with TestClient(TestServer(create_app(config))) as c:
        yield c


async def test_page_sizes_follow_the_settings(small: Client, tok: Tokens) -> None:
    sid = (await create_session(small, tok.clerk(), CASE))["session_id"]
    for _ in range(5):
        await invite(small, tok.clerk(), sid, dept="city-amr")
    r = await small.get(f"/api/cases/{CASE}", headers=auth(tok.clerk()))
    assert len((await r.json())["events"]) == 3
    r = await small.get(f"/api/cases/{CASE}/events?limit=5", headers=auth(tok.clerk()))
    await expect_error(r, 400, "invalid_query")
    r = await small.get(f"/api/cases/{CASE}/events?limit=4", headers=auth(tok.clerk()))
    assert len((await r.json())["events"]) == 4


async def test_webhook_deliveries_walk_to_the_end(client: Client, tok: Tokens) -> None:
    from signaling.webhooks import WEBHOOKS

    service = client.app[SERVICE]
    await create_session(client, tok.clerk(), CASE)
    started = (await service.events(CASE))[0]
    made = []
    for n in range(6):
        made += await client.app[WEBHOOKS].enqueue(started, [f"http://approval.invalid/h{n}"])
        await asyncio.sleep(0.002)
    got = await walk(client, "/api/webhooks/deliveries", "deliveries", tok.admin(), limit=4)
    assert [d["delivery_id"] for d in got] == made[::-1]
    got = await walk(
        client, "/api/webhooks/deliveries", "deliveries", tok.admin(), limit=4, status="pending"
    )
    assert [d["delivery_id"] for d in got] == made[::-1]


async def test_openapi_documents_the_pages(client: Client) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    for path in (
        "/api/cases/{case_id}/events",
        "/api/cases/{case_id}/sessions",
        "/api/sessions",
        "/api/sessions/{session_id}/recording/markers",
        "/api/webhooks/deliveries",
    ):
        names = {p["name"] for p in doc["paths"][path]["get"]["parameters"] if p["in"] == "query"}
        assert {"limit", "cursor"} <= names, path
    schemas = doc["components"]["schemas"]
    assert "events_next_cursor" in schemas["CaseView"]["properties"]
    assert "next_cursor" in schemas["SessionList"]["properties"]


# -- the cursor itself (pure) -------------------------------------------------------------


def test_cursors_round_trip_and_are_checked() -> None:
    from signaling import paging
    from signaling.errors import BadRequest

    c = paging.encode(paging.EVENTS, q=41)
    assert paging.decode(paging.EVENTS, c, {"q": int}) == {"q": 41}
    assert paging.decode(paging.EVENTS, None, {"q": int}) is None
    s = paging.encode(paging.SESSIONS, t=1.5, i="s_x")
    assert paging.decode(paging.SESSIONS, s, {"t": float, "i": str}) == {"t": 1.5, "i": "s_x"}
    for bad, kind in (
        (c, paging.SESSIONS),  # another list's
        (paging.encode(paging.EVENTS, q=-1), paging.EVENTS),
        (paging.encode(paging.EVENTS, q=True), paging.EVENTS),
        (paging.encode(paging.EVENTS, q="1"), paging.EVENTS),
        ("%%%", paging.EVENTS),
    ):
        with pytest.raises(BadRequest) as err:
            paging.decode(kind, bad, {"q": int})
        assert err.value.code == "invalid_cursor"
    assert paging.limit_of(None, 100, 500) == 100
    with pytest.raises(BadRequest):
        paging.limit_of("501", 100, 500)
