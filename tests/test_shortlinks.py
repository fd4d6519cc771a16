"""The applicant's short link (/j/<code>) and recording consent (issue #16, items 2 and 8).

The code store on both stores (expiry on the injected clock, one session per code,
malformed codes refused before the store); then the route as a phone and an API client
meet it, and the consent filed in the case timeline, bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.api_consent import MAX_ANSWERS
from signaling.appkeys import SERVICE
from signaling.auth import TokenService
from signaling.errors import NotFound
from signaling.shortlinks import CODE_RE, LinkGone, ShortLinks
from signaling.state import Store

from .conftest import Tokens, auth, make_config

Client = TestClient[Any, Any]
CASE = "GZ-2024-0815"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_codes_expire_with_the_token_and_name_one_session(store: Store) -> None:
    clock = Clock()
    links = ShortLinks(store, clock)
    a = await links.create(
        token="tok-a", session_id="s_a", case_id=CASE, expires_at=clock.now + 600
    )
    b = await links.create(token="tok-b", session_id="s_b", case_id=CASE, expires_at=clock.now + 60)
    assert a != b and CODE_RE.fullmatch(a) and CODE_RE.fullmatch(b)
    assert len(a) == 16  # 96 bits, url-safe
    first = await links.resolve(a)
    assert (first.session_id, first.token, first.case_id) == ("s_a", "tok-a", CASE)
    assert (await links.resolve(b)).session_id == "s_b"
    clock.now += 61  # b's token has expired, a's has not
    with pytest.raises(LinkGone) as gone:
        await links.resolve(b)
    assert gone.value.code == "link_expired"
    assert (await links.resolve(a)).token == "tok-a"


@pytest.mark.parametrize(
    "code",
    ["", "short", "A" * 17, "A" * 15 + "!", "../../etc/passwd", "AAAAAAAAAAAAAAA\n", "A" * 4000],
)
async def test_bad_and_unknown_codes(store: Store, code: str) -> None:
    links = ShortLinks(store, Clock())
    with pytest.raises(NotFound) as missing:
        await links.resolve(code)
    assert missing.value.code == "link_not_found"


async def test_unknown_well_formed_code(store: Store) -> None:
    with pytest.raises(NotFound):
        await ShortLinks(store, Clock()).resolve("A" * 16)


async def _session(client: Client, tok: Tokens) -> tuple[str, dict[str, Any]]:
    clerk = auth(tok.clerk())
    r = await client.post(
        f"/api/cases/{CASE}/sessions", json={"applicant_name": "张三"}, headers=clerk
    )
    assert r.status == 201, await r.text()
    sid = (await r.json())["session_id"]
    r = await client.post(f"/api/sessions/{sid}/applicant-link", json={}, headers=clerk)
    assert r.status == 201
    return sid, await r.json()


async def test_short_link_route(client: Client, tok: Tokens) -> None:
    sid, link = await _session(client, tok)
    path = "/j/" + link["short_url"].rsplit("/j/", 1)[1]
    assert len(link["short_url"]) < 80 and len(link["url"]) > 200
    # A phone follows it to the join page with the token; an API client reads JSON.
    r = await client.get(path, allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == f"/session/{sid}?token={link['token']}"
    r = await client.get(path, headers={"Accept": "application/json"})
    assert r.status == 200 and (await r.json())["session_id"] == sid
    # Unknown and malformed codes: a clear page in Chinese, or the JSON error.
    for bad in ("/j/" + "A" * 16, "/j/%00x", "/j/" + "x" * 300):
        r = await client.get(bad, allow_redirects=False)
        assert r.status == 404 and "链接无效" in await r.text()
        assert r.headers["Content-Type"].startswith("text/html")
    r = await client.get("/j/" + "A" * 16, headers={"Accept": "application/json"})
    assert r.status == 404 and (await r.json())["error"]["code"] == "link_not_found"
    # The session ends: the link has nothing more to open.
    await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
    r = await client.get(path, allow_redirects=False)
    assert r.status == 410 and "会办已结束" in await r.text()


async def test_consent_filed_and_bounded(client: Client, tok: Tokens) -> None:
    sid, _ = await _session(client, tok)
    me = auth(tok.applicant(sid, CASE))
    r = await client.get(f"/api/sessions/{sid}/consent", headers=me)
    assert (await r.json())["declined"] == "audio_only"
    r = await client.post(f"/api/sessions/{sid}/consent", json={"accepted": False}, headers=me)
    assert r.status == 201 and (await r.json())["then"] == "audio_only"
    r = await client.post(
        f"/api/sessions/{sid}/consent", json={"accepted": True, "camera": False}, headers=me
    )
    assert (await r.json())["then"] == "join"
    events = await client.app[SERVICE].events(CASE, sid)
    answers = [e for e in events if e.type.startswith("consent.")]
    assert [e.type for e in answers] == ["consent.declined", "consent.given"]
    assert answers[0].data["then"] == "audio_only" and answers[1].data["camera"] is False
    assert answers[1].actor is not None and answers[1].actor.role == "applicant"
    r = await client.post(f"/api/sessions/{sid}/consent", json={"accepted": "yes"}, headers=me)
    assert r.status == 400
    r = await client.post(
        f"/api/sessions/{sid}/consent", json={"accepted": True, "x": 1}, headers=me
    )
    assert r.status == 400
    for _ in range(MAX_ANSWERS - 2):
        r = await client.post(f"/api/sessions/{sid}/consent", json={"accepted": True}, headers=me)
        assert r.status == 201
    r = await client.post(f"/api/sessions/{sid}/consent", json={"accepted": True}, headers=me)
    assert r.status == 409 and (await r.json())["error"]["code"] == "consent_limit"
    # Another session's applicant, and staff, file nothing here.
    other = auth(tok.applicant("s_other", CASE))
    r = await client.post(f"/api/sessions/{sid}/consent", json={"accepted": True}, headers=other)
    assert r.status == 404
    r = await client.post(
        f"/api/sessions/{sid}/consent", json={"accepted": True}, headers=auth(tok.clerk())
    )
    assert r.status == 403


async def test_declining_means_leave_where_the_service_says_so(tmp_path: Path) -> None:
    config = make_config(tmp_path, applicant_consent_declined="leave")
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        sid, _ = await _session(client, tok)
        me = auth(tok.applicant(sid, CASE))
        r = await client.get(f"/api/sessions/{sid}/consent", headers=me)
        assert (await r.json())["declined"] == "leave"
        r = await client.post(f"/api/sessions/{sid}/consent", json={"accepted": False}, headers=me)
        assert (await r.json())["then"] == "leave"
        events = await client.app[SERVICE].events(CASE, sid)
        [event] = [e for e in events if e.type == "consent.declined"]
        assert event.data["then"] == "leave"
