"""Starting a joint review and inviting in one call (``POST /api/cases/{case}/sessions``
with ``invite``), as the approval system calls it: good input, bad input, the wrong role
or scope, an unknown department — and nothing is created when the call is refused."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from signaling.models import START_INVITES_MAX

from .conftest import Tokens, auth

Client = TestClient[Any, Any]
CASE = "GZ-2026-1206"


async def post(client: Client, token: str, body: Any, case: str = CASE) -> tuple[int, Any]:
    r = await client.post(f"/api/cases/{case}/sessions", json=body, headers=auth(token))
    return r.status, await r.json()


async def sessions_of(client: Client, token: str) -> list[dict[str, Any]]:
    r = await client.get("/api/sessions", headers=auth(token))
    assert r.status == 200
    return list((await r.json())["sessions"])


async def test_one_call_starts_the_session_and_rings_the_departments(
    client: Client, tok: Tokens
) -> None:
    body = {
        "applicant_name": "广州示例贸易有限公司",
        "matter": "食品经营许可",
        "window": "琶洲 5 号窗口",
        "invite": ["city-amr", {"dept": "district-planning", "note": "请核对规划条件"}],
    }
    status, created = await post(client, tok.clerk(), body)
    assert status == 201, created
    sid = created["session_id"]
    assert created["session"]["window"] == "琶洲 5 号窗口"
    assert created["session"]["applicant_name"] == "广州示例贸易有限公司"
    invs = created["invitations"]
    assert [(i["dept"], i["level"], i["status"]) for i in invs] == [
        ("city-amr", "city", "pending"),
        ("district-planning", "district", "pending"),
    ]
    assert invs[1]["note"] == "请核对规划条件"
    assert all(i["session_id"] == sid for i in invs)

    # The invited department's reviewer finds it in their inbox, as any invitation.
    r = await client.get("/api/invitations", headers=auth(tok.reviewer()))
    inbox = (await r.json())["invitations"]
    assert [i["invitation_id"] for i in inbox] == [invs[0]["invitation_id"]]
    # ... and the session lists them.
    r = await client.get(f"/api/sessions/{sid}/invitations", headers=auth(tok.clerk()))
    assert {i["dept"] for i in (await r.json())["invitations"]} == {
        "city-amr",
        "district-planning",
    }

    # A named reviewer, and no list at all (the old call) still work.
    status, named = await post(client, tok.admin(), {"invite": [{"reviewer": "rev-city-tax-1"}]})
    assert status == 201 and named["invitations"][0]["reviewer_name"] == "李敏"
    status, plain = await post(client, tok.clerk(), {})
    assert status == 201 and plain["invitations"] == []


BAD_INVITES: list[Any] = [
    ["../etc"],  # not an id
    ["city amr"],
    [5],
    [{"dept": "city-amr", "reviewer": "rev-city-amr-1"}],  # one target per item
    [{"dept": "city-amr", "surprise": 1}],
    ["city-amr", "city-amr"],  # twice
    ["city-amr", {"dept": "city-amr", "note": "again"}],
    [f"d{i}" for i in range(START_INVITES_MAX + 1)],  # bounded
    "city-amr",  # a list, not a string
]


async def test_bad_input_is_refused_and_starts_nothing(client: Client, tok: Tokens) -> None:
    for invite in BAD_INVITES:  # one app for all: each case is one request
        status, err = await post(client, tok.clerk(), {"invite": invite})
        assert (status, err["error"]["code"]) == (400, "invalid_body"), (invite, err)
    assert await sessions_of(client, tok.clerk()) == []


async def test_unknown_departments_are_named_and_nothing_is_created(
    client: Client, tok: Tokens
) -> None:
    status, err = await post(client, tok.clerk(), {"invite": ["city-amr", "city-zoo", "moon"]})
    assert status == 422
    assert err["error"]["code"] == "unknown_department"
    assert [d["dept"] for d in err["error"]["details"]] == ["city-zoo", "moon"]
    status, err = await post(client, tok.clerk(), {"invite": [{"reviewer": "clerk-02"}]})
    assert (status, err["error"]["code"]) == (422, "not_a_reviewer")
    assert await sessions_of(client, tok.clerk()) == []
    r = await client.get("/api/invitations", headers=auth(tok.reviewer()))
    assert (await r.json())["invitations"] == []


async def test_wrong_role_or_scope_is_refused(client: Client, tok: Tokens) -> None:
    body = {"invite": ["city-amr"]}
    for token in (tok.reviewer(), tok.supervisor(), tok.applicant("s_x", CASE)):
        status, err = await post(client, token, body)
        assert (status, err["error"]["code"]) == (403, "forbidden"), token
    # A clerk's token limited to another case, or to one session, starts nothing here.
    status, _ = await post(client, tok.clerk(case="GZ-OTHER"), body)
    assert status == 403
    status, _ = await post(client, tok.clerk(session="s_other"), body)
    assert status == 403
    status, _ = await post(client, tok.clerk(), body, case="bad case")
    assert status in (400, 404)  # not a case number (the router may not match a space)
    assert await sessions_of(client, tok.clerk()) == []
    r = await client.post(f"/api/cases/{CASE}/sessions", json=body)
    assert r.status == 401


async def test_an_opinion_without_a_decision_is_refused(client: Client, tok: Tokens) -> None:
    """The form pre-selects nothing; the server files nothing that chose nothing."""
    _, created = await post(client, tok.clerk(), {"invite": ["city-amr"]})
    sid, inv = created["session_id"], created["invitations"][0]["invitation_id"]
    r = await client.post(f"/api/invitations/{inv}/accept", headers=auth(tok.reviewer()))
    assert r.status == 200, await r.text()
    url = f"/api/sessions/{sid}/opinions"
    for body in ({}, {"note": "同意"}, {"decision": None, "note": "同意"}, {"decision": ""}):
        r = await client.post(url, json=body, headers=auth(tok.reviewer()))
        err = await r.json()
        assert (r.status, err["error"]["code"]) == (400, "invalid_body"), body
    r = await client.get(url, headers=auth(tok.clerk()))
    assert (await r.json())["opinions"] == []
    r = await client.post(url, json={"decision": "approve"}, headers=auth(tok.reviewer()))
    assert r.status == 201, await r.text()
