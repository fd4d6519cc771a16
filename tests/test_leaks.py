"""No department sees another's work: role x route x case view.

One case holds two sessions: S1 (only district-amr invited) and S2 (only city-amr
invited). Each person must see exactly the sessions they may read, in every view that
lists more than one thing, and learn nothing of the others: not their chat, opinions,
applicant, matter, stills' hashes, events. A thing one may not read answers exactly as a
thing that does not exist (404).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import Tokens, auth
from .test_api import PNG, Client, create_session, expect_error, invite

CASE = "LEAK-2026-1"
S1_SECRETS = ("甲某秘密", "S1-matter-secret", "S1-chat-secret", "S1-opinion-secret")


@dataclass
class Two:
    s1: str
    s2: str
    snap1: str
    inv1: str
    inv2: str


async def _join_and_chat(client: Client, token: str, sid: str, text: str) -> None:
    ws = await client.ws_connect(f"/ws?token={token}")
    assert (await ws.receive_json(timeout=3))["type"] == "welcome"
    await ws.send_json({"type": "join", "session_id": sid, "ref": "j"})
    while (msg := await ws.receive_json(timeout=3))["type"] != "joined":
        assert msg["type"] != "error", msg
    await ws.send_json({"type": "chat", "text": text, "ref": "c"})
    while (msg := await ws.receive_json(timeout=3)).get("ref") != "c":
        pass
    assert msg["type"] == "ack", msg
    await ws.send_json({"type": "leave", "ref": "l"})
    while (msg := await ws.receive_json(timeout=3)).get("ref") != "l":
        pass
    await ws.close()


def district(tok: Tokens) -> str:
    return tok.reviewer("rev-district-amr-1", "district-amr", "district")


@pytest.fixture
async def two(client: Client, tok: Tokens) -> Two:
    clerk = tok.clerk()
    s1 = (
        await create_session(
            client, clerk, CASE, applicant_name="甲某秘密", matter="S1-matter-secret"
        )
    )["session_id"]
    s2 = (await create_session(client, clerk, CASE, applicant_name="乙某", matter="S2-matter"))[
        "session_id"
    ]
    inv1 = await invite(client, clerk, s1, dept="district-amr")
    inv2 = await invite(client, clerk, s2, dept="city-amr")
    r = await client.post(
        f"/api/sessions/{s1}/snapshots",
        data=PNG,
        headers={**auth(clerk), "Content-Type": "image/png"},
    )
    assert r.status == 201
    snap1 = (await r.json())["snapshot_id"]
    await _join_and_chat(client, district(tok), s1, "S1-chat-secret")
    await _join_and_chat(client, tok.reviewer(), s2, "S2 chat")
    r = await client.post(
        f"/api/sessions/{s1}/opinions",
        json={"decision": "note", "note": "S1-opinion-secret"},
        headers=auth(district(tok)),
    )
    assert r.status == 201, await r.text()
    r = await client.post(
        f"/api/sessions/{s2}/opinions", json={"decision": "approve"}, headers=auth(tok.reviewer())
    )
    assert r.status == 201, await r.text()
    return Two(s1, s2, snap1, inv1["invitation_id"], inv2["invitation_id"])


PEOPLE = (
    "clerk",
    "supervisor",
    "admin",
    "district_reviewer",  # invited to S1
    "city_reviewer",  # invited to S2 only (another session of the same case)
    "tax_reviewer",  # never invited
    "applicant_s2",
    "case_reviewer_s2",  # city-amr with a token limited to this case and S2
)


def token(tok: Tokens, who: str, w: Two) -> str:
    return {
        "clerk": lambda: tok.clerk(),
        "supervisor": lambda: tok.supervisor(),
        "admin": lambda: tok.admin(),
        "district_reviewer": lambda: district(tok),
        "city_reviewer": lambda: tok.reviewer(),
        "tax_reviewer": lambda: tok.other_reviewer(),
        "applicant_s2": lambda: tok.applicant(w.s2, CASE),
        "case_reviewer_s2": lambda: tok.reviewer(case=CASE, session=w.s2),
    }[who]()


def visible(who: str, w: Two) -> set[str]:
    """The sessions of the case this person may read."""
    if who in ("clerk", "supervisor", "admin"):
        return {w.s1, w.s2}
    if who == "district_reviewer":
        return {w.s1}
    if who in ("city_reviewer", "applicant_s2", "case_reviewer_s2"):
        return {w.s2}
    return set()


# Only these read a case as a whole (an applicant's or a session-limited token's scope is
# one session).
CASE_READERS = {"clerk", "supervisor", "admin", "district_reviewer", "city_reviewer"}


def _no_secrets(text: str, who: str, w: Two) -> None:
    if w.s1 in visible(who, w):
        return
    for secret in (*S1_SECRETS, w.s1, w.inv1, w.snap1):
        assert secret not in text, (who, secret)


@pytest.mark.parametrize("who", PEOPLE)
async def test_case_view_shows_only_readable_sessions(
    client: Client, tok: Tokens, two: Two, who: str
) -> None:
    w = two
    headers = auth(token(tok, who, w))
    r = await client.get(f"/api/cases/{CASE}", headers=headers)
    if who not in CASE_READERS:
        await expect_error(r, 404, "case_not_found")
        return
    text = await r.text()
    assert r.status == 200, text
    body = json.loads(text)
    mine = visible(who, w)
    assert {s["session_id"] for s in body["sessions"]} == mine
    assert {i["session_id"] for i in body["invitations"]} == mine
    assert {e["session_id"] for e in body["events"]} == mine
    assert {o["session_id"] for o in body["opinions"]} == mine
    assert {s["session_id"] for s in body["snapshots"]} <= mine
    _no_secrets(text, who, w)


@pytest.mark.parametrize("who", PEOPLE)
async def test_case_lists_show_only_readable_sessions(
    client: Client, tok: Tokens, two: Two, who: str
) -> None:
    w = two
    headers = auth(token(tok, who, w))
    for path, key in (
        (f"/api/cases/{CASE}/events", "events"),
        (f"/api/cases/{CASE}/sessions", "sessions"),
    ):
        r = await client.get(path, headers=headers)
        if who not in CASE_READERS:
            await expect_error(r, 404, "case_not_found")
            continue
        text = await r.text()
        assert r.status == 200, text
        seen = {x["session_id"] for x in json.loads(text)[key]}
        assert seen == visible(who, w), (path, who)
        _no_secrets(text, who, w)


SESSION_VIEWS = (
    "/api/sessions/{sid}",
    "/api/sessions/{sid}/invitations",
    "/api/sessions/{sid}/opinions",
    "/api/sessions/{sid}/snapshots",
    "/api/sessions/{sid}/recording",
    "/api/sessions/{sid}/recording/markers",
    "/api/sessions/{sid}/casefile",
)


@pytest.mark.parametrize("who", PEOPLE)
async def test_a_session_one_may_not_read_does_not_exist(
    client: Client, tok: Tokens, two: Two, who: str
) -> None:
    """The oracle: an unreadable session answers as an unknown one, on every route."""
    w = two
    headers = auth(token(tok, who, w))
    replayers = set(PEOPLE) - {"applicant_s2"}  # the roles the replay routes admit
    for template in SESSION_VIEWS:
        replay_route = "/recording" in template or "/casefile" in template
        for sid in (w.s1, w.s2, "s_nosuchsession"):
            r = await client.get(template.format(sid=sid), headers=headers)
            if replay_route and who not in replayers:
                await expect_error(r, 403, "forbidden")  # the role, whatever the id
            elif sid in visible(who, w):
                assert r.status in (200, 409), (template, who, await r.text())
            else:
                await expect_error(r, 404, "session_not_found")
    r = await client.get(f"/api/snapshots/{w.snap1}", headers=headers)
    if w.s1 in visible(who, w):
        assert r.status == 200
    else:
        await expect_error(r, 404, "snapshot_not_found")


@pytest.mark.parametrize("who", ["city_reviewer", "tax_reviewer", "applicant_s2"])
async def test_joining_an_unreadable_session_is_as_joining_none(
    client: Client, tok: Tokens, two: Two, who: str
) -> None:
    ws = await client.ws_connect(f"/ws?token={token(tok, who, two)}")
    assert (await ws.receive_json(timeout=3))["type"] == "welcome"
    for sid in (two.s1, "s_nosuchsession"):
        await ws.send_json({"type": "join", "session_id": sid, "ref": "j"})
        while (msg := await ws.receive_json(timeout=3))["type"] != "error":
            pass
        assert (msg["code"], msg["ref"]) == ("session_not_found", "j")
    await ws.close()


@pytest.mark.parametrize("who", ["city_reviewer", "tax_reviewer"])
async def test_answering_an_invitation_of_another_department_is_as_answering_none(
    client: Client, tok: Tokens, two: Two, who: str
) -> None:
    headers = auth(token(tok, who, two))
    for iid in (two.inv1, "i_nosuchinvitation"):
        r = await client.post(f"/api/invitations/{iid}/accept", headers=headers)
        await expect_error(r, 404, "invitation_not_found")


async def test_unknown_and_unreadable_case_answer_alike(
    client: Client, tok: Tokens, two: Two
) -> None:
    for who in ("tax_reviewer", "applicant_s2", "case_reviewer_s2"):
        headers = auth(token(tok, who, two))
        for case in (CASE, "NO-SUCH-CASE"):
            r = await client.get(f"/api/cases/{case}", headers=headers)
            err = await expect_error(r, 404, "case_not_found")
            assert case in err["message"]
    sup_other = auth(tok.supervisor(case="OTHER"))
    for case in (CASE, "NO-SUCH-CASE"):
        await expect_error(
            await client.get(f"/api/cases/{case}", headers=sup_other), 404, "case_not_found"
        )


async def test_session_list_respects_a_session_limited_token(
    client: Client, tok: Tokens, two: Two
) -> None:
    r = await client.get("/api/sessions", headers=auth(tok.clerk(case=CASE, session=two.s2)))
    assert r.status == 200
    assert [s["session_id"] for s in (await r.json())["sessions"]] == [two.s2]


async def test_inbox_respects_a_session_limited_token(client: Client, tok: Tokens) -> None:
    clerk = tok.clerk()
    s1 = (await create_session(client, clerk, CASE))["session_id"]
    s2 = (await create_session(client, clerk, CASE))["session_id"]
    await invite(client, clerk, s1, dept="city-amr")
    inv2 = await invite(client, clerk, s2, dept="city-amr")
    r = await client.get("/api/invitations", headers=auth(tok.reviewer(case=CASE, session=s2)))
    assert [i["invitation_id"] for i in (await r.json())["invitations"]] == [inv2["invitation_id"]]


async def test_replay_description_shows_only_its_session(
    client: Client, tok: Tokens, two: Two
) -> None:
    r = await client.get(f"/api/sessions/{two.s2}/recording", headers=auth(tok.reviewer()))
    text = await r.text()
    assert r.status == 200, text
    body: dict[str, Any] = json.loads(text)
    assert body["markers"] and all(m["seq"] for m in body["markers"])
    _no_secrets(text, "city_reviewer", two)


async def test_socket_inbox_respects_a_session_limited_token(client: Client, tok: Tokens) -> None:
    """The socket's ``invitation`` pushes follow the same rule as the inbox."""
    clerk = tok.clerk()
    s1 = (await create_session(client, clerk, CASE))["session_id"]
    s2 = (await create_session(client, clerk, CASE))["session_id"]
    ws = await client.ws_connect(f"/ws?token={tok.reviewer(case=CASE, session=s2)}")
    assert (await ws.receive_json(timeout=3))["type"] == "welcome"
    await invite(client, clerk, s1, dept="city-amr")
    inv2 = await invite(client, clerk, s2, dept="city-amr")
    while (msg := await ws.receive_json(timeout=3))["type"] != "invitation":
        pass
    # The invitation to S1 was published first: had it been forwarded, it would be here.
    assert msg["invitation"]["invitation_id"] == inv2["invitation_id"]
    await ws.close()
