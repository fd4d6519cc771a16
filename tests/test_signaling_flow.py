"""Signaling as people live it: ringing, answering, joining, dropping, resuming, ending."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.appkeys import SERVICE, TOKENS
from signaling.auth import TokenService

from .conftest import Tokens, auth, make_config
from .wsclient import Signal

Client = TestClient[Any, Any]


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[tuple[Client, Tokens]]:
    """An app with a short resume grace period."""
    config = make_config(tmp_path, resume_grace_s=0.5)
    async with TestClient(TestServer(create_app(config))) as c:
        yield c, Tokens(TokenService(config))


async def connect(client: Client, token: str) -> Signal:
    return await Signal.connect(client, f"/ws?token={token}")


async def start_session(client: Client, tok: Tokens, case: str = "GZ-2026-0001") -> str:
    res = await client.post(
        f"/api/cases/{case}/sessions",
        json={"applicant_name": "广州某贸易有限公司", "matter": "食品经营许可"},
        headers=auth(tok.clerk()),
    )
    assert res.status == 201
    return str((await res.json())["session_id"])


async def invite(client: Client, tok: Tokens, sid: str, **target: str) -> dict[str, Any]:
    res = await client.post(
        f"/api/sessions/{sid}/invitations", json=target, headers=auth(tok.clerk())
    )
    assert res.status == 201, await res.text()
    return dict(await res.json())


async def events(client: Client, tok: Tokens, case: str = "GZ-2026-0001") -> list[str]:
    res = await client.get(f"/api/cases/{case}", headers=auth(tok.supervisor()))
    return [e["type"] for e in (await res.json())["events"]]


async def test_department_invitation_rings_its_reviewers_only(client: Client, tok: Tokens) -> None:
    amr = await connect(client, tok.reviewer())
    tax = await connect(client, tok.other_reviewer())
    sid = await start_session(client, tok)
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    t0 = time.monotonic()
    inv = await invite(client, tok, sid, dept="city-amr")
    got = await amr.wait("invitation", timeout=2.0)
    assert time.monotonic() - t0 < 2.0
    assert got["invitation"]["invitation_id"] == inv["invitation_id"]
    assert got["session"]["case_id"] == "GZ-2026-0001"
    assert got["session"]["matter"] == "食品经营许可"
    # The clerk sees it ringing once it reached a reviewer's screen.
    ringing = await clerk.wait("presence", lambda m: m["state"] == "ringing")
    assert ringing["invitation_id"] == inv["invitation_id"]
    assert "invitation.rang" in await events(client, tok)
    with pytest.raises(AssertionError):
        await tax.wait("invitation", timeout=0.3)
    for s in (amr, tax, clerk):
        await s.close()


async def test_named_invitation_reaches_that_reviewer_only(client: Client, tok: Tokens) -> None:
    one = await connect(client, tok.reviewer("rev-district-amr-1", "district-amr", "district"))
    two = await connect(client, tok.reviewer("rev-district-amr-2", "district-amr", "district"))
    sid = await start_session(client, tok)
    await invite(client, tok, sid, reviewer="rev-district-amr-2")
    await two.wait("invitation", timeout=2.0)
    with pytest.raises(AssertionError):
        await one.wait("invitation", timeout=0.3)
    await one.close()
    await two.close()


async def test_a_reviewer_who_connects_later_finds_the_invitation(
    client: Client, tok: Tokens
) -> None:
    sid = await start_session(client, tok)
    inv = await invite(client, tok, sid, dept="city-amr")
    late = await connect(client, tok.reviewer())
    got = await late.wait("invitation")
    assert got["invitation"]["invitation_id"] == inv["invitation_id"]
    await late.close()


async def test_accept_join_chat_and_presence(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    clerk = await connect(client, tok.clerk())
    joined = await clerk.request("join", "joined", session_id=sid)
    assert joined["session"]["session_id"] == sid
    inv = await invite(client, tok, sid, dept="city-amr")
    rev = await connect(client, tok.reviewer())
    await rev.wait("invitation")
    ack = await rev.request("invitation.accept", "ack", invitation_id=inv["invitation_id"])
    assert ack["invitation"]["status"] == "accepted"
    accepted = await clerk.wait("presence", lambda m: m["state"] == "accepted")
    assert accepted["who"]["sub"] == "rev-city-amr-1"
    rjoin = await rev.request("join", "joined", session_id=sid)
    assert {p["identity"]["role"] for p in rjoin["participants"]} == {"clerk", "reviewer"}
    pj = await clerk.wait(
        "presence",
        lambda m: (
            m["state"] == "joined" and m["participant"]["identity"]["sub"] == "rev-city-amr-1"
        ),
    )
    assert pj["participant"]["identity"]["dept"] == "city-amr"

    await rev.request("chat", "ack", text="请补充营业场所证明")
    for s in (clerk, rev):
        chat = await s.wait("chat")
        assert chat["text"] == "请补充营业场所证明"
        assert chat["sender"]["sub"] == "rev-city-amr-1"
    types = await events(client, tok)
    for expected in (
        "session.created",
        "invitation.created",
        "invitation.accepted",
        "participant.joined",
        "chat.message",
    ):
        assert expected in types
    await clerk.close()
    await rev.close()


async def test_decline_with_reason_reaches_the_clerk(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    inv = await invite(client, tok, sid, dept="city-tax")
    rev = await connect(client, tok.other_reviewer())
    await rev.wait("invitation")
    await rev.request(
        "invitation.decline", "ack", invitation_id=inv["invitation_id"], reason="本部门不负责此事项"
    )
    declined = await clerk.wait("presence", lambda m: m["state"] == "declined")
    assert declined["invitation_id"] == inv["invitation_id"]
    updated = await clerk.wait(
        "invitation.updated", lambda m: m["invitation"]["status"] == "declined"
    )
    assert updated["invitation"]["reason"] == "本部门不负责此事项"
    # Declined means declined: that reviewer can no longer join.
    err = await rev.request("join", "error", session_id=sid)
    assert err["code"] == "forbidden"
    await clerk.close()
    await rev.close()


async def test_uninvited_department_cannot_join(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    await invite(client, tok, sid, dept="city-amr")
    outsider = await connect(client, tok.other_reviewer())
    err = await outsider.request("join", "error", session_id=sid)
    assert err["code"] == "session_not_found"  # as an unknown session: no oracle
    assert "city-tax" not in await events(client, tok)  # nothing recorded for them
    await outsider.close()


async def test_applicant_joins_by_link(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    res = await client.post(
        f"/api/sessions/{sid}/applicant-link", json={}, headers=auth(tok.clerk())
    )
    link = await res.json()
    applicant = await connect(client, link["token"])
    joined = await applicant.request("join", "joined", session_id=sid)
    assert joined["participant"]["identity"]["role"] == "applicant"
    assert joined["participant"]["identity"]["name"] == "广州某贸易有限公司"
    other = await start_session(client, tok, case="GZ-2026-0002")
    second_tab = await connect(client, link["token"])
    err = await second_tab.request("join", "error", session_id=other)
    assert err["code"] == "session_not_found"
    await second_tab.close()
    await applicant.close()


async def test_dropped_socket_resumes_into_the_same_slot(
    fast: tuple[Client, Tokens],
) -> None:
    client, tok = fast
    sid = await start_session(client, tok)
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    await invite(client, tok, sid, dept="city-amr")
    rev = await connect(client, tok.reviewer())
    joined = await rev.request("join", "joined", session_id=sid)
    pid = joined["participant"]["participant_id"]
    await rev.close()
    await clerk.wait("presence", lambda m: m["state"] == "reconnecting")
    again = await connect(client, tok.reviewer())
    resumed = await again.request("resume", "joined", resume_token=joined["resume_token"])
    assert resumed["participant"]["participant_id"] == pid
    assert resumed["resume_token"] != joined["resume_token"]
    back = await clerk.wait("presence", lambda m: m["state"] == "reconnected")
    assert back["participant"]["participant_id"] == pid
    # The grace timer of the dropped socket must not evict the resumed participant.
    await asyncio.sleep(0.8)
    with pytest.raises(AssertionError):
        await clerk.wait("presence", lambda m: m["state"] == "left", timeout=0.2)
    await again.close()
    await clerk.close()


async def test_resume_brings_the_chat_sent_meanwhile(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    other = await start_session(client, tok)  # same case, another session: not its chat
    clerk = await connect(client, tok.clerk())
    joined = await clerk.request("join", "joined", session_id=other)
    assert joined["chat"] == []
    await clerk.request("chat", "ack", text="另一场会办")
    await clerk.request("leave", "left")
    await clerk.request("join", "joined", session_id=sid)
    await invite(client, tok, sid, dept="city-amr")
    rev = await connect(client, tok.reviewer())
    joined = await rev.request("join", "joined", session_id=sid)
    assert joined["chat"] == []
    first = await clerk.request("chat", "ack", text="请准备营业执照")
    await rev.wait("chat")
    await rev.close()
    await clerk.wait("presence", lambda m: m["state"] == "reconnecting")
    missed = [await clerk.request("chat", "ack", text=t) for t in ("第一条", "第二条")]
    again = await connect(client, tok.reviewer())
    resumed = await again.request("resume", "joined", resume_token=joined["resume_token"])
    chat = resumed["chat"]
    assert [m["text"] for m in chat] == ["请准备营业执照", "第一条", "第二条"]
    assert [m["seq"] for m in chat] == [first["seq"], missed[0]["seq"], missed[1]["seq"]]
    assert chat[0]["seq"] < chat[1]["seq"] < chat[2]["seq"]
    clerk_pid = next(
        p["participant_id"] for p in resumed["participants"] if p["identity"]["sub"] == "clerk-01"
    )
    for m in chat:  # each in the shape of the live ``chat`` message
        assert m["session_id"] == sid and m["participant_id"] == clerk_pid
        assert m["sender"]["sub"] == "clerk-01" and isinstance(m["ts"], float)
    # Live chat goes on as before.
    ack = await clerk.request("chat", "ack", text="第三条")
    live = await again.wait("chat")
    assert live["seq"] == ack["seq"] > chat[-1]["seq"]
    await again.close()
    await clerk.close()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "always"),
        ({"recording_policy": "clerk"}, "clerk"),
        ({"recording_policy": "off"}, "off"),
        ({"recording_policy": "clerk", "media_enabled": False}, "off"),
    ],
)
async def test_joined_tells_the_recording_policy(
    tmp_path: Path, overrides: dict[str, Any], expected: str
) -> None:
    config = make_config(tmp_path, **overrides)
    async with TestClient(TestServer(create_app(config))) as c:
        tok = Tokens(TokenService(config))
        sid = await start_session(c, tok)
        clerk = await connect(c, tok.clerk())
        joined = await clerk.request("join", "joined", session_id=sid)
        assert joined["recording_policy"] == expected
        assert joined["recording"] is (expected == "always")
        await clerk.close()


async def test_no_resume_after_the_grace_period(fast: tuple[Client, Tokens]) -> None:
    client, tok = fast
    sid = await start_session(client, tok)
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    await invite(client, tok, sid, dept="city-amr")
    rev = await connect(client, tok.reviewer())
    joined = await rev.request("join", "joined", session_id=sid)
    await rev.close()
    left = await clerk.wait("presence", lambda m: m["state"] == "left", timeout=3.0)
    assert left["reason"] == "connection_lost"
    again = await connect(client, tok.reviewer())
    err = await again.request("resume", "error", resume_token=joined["resume_token"])
    assert err["code"] == "resume_expired"
    # Joining afresh still works: the invitation was accepted by this reviewer.
    await again.request("join", "joined", session_id=sid)
    await again.close()
    await clerk.close()


async def test_someone_elses_resume_token_is_refused(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    clerk = await connect(client, tok.clerk())
    joined = await clerk.request("join", "joined", session_id=sid)
    thief = await connect(client, tok.admin())
    err = await thief.request("resume", "error", resume_token=joined["resume_token"])
    assert err["code"] == "forbidden"
    err = await thief.request("resume", "error", resume_token="p_nope.secret")
    assert err["code"] == "invalid_resume_token"
    await thief.close()
    await clerk.close()


async def test_second_tab_supersedes_the_first(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    first = await connect(client, tok.clerk())
    one = await first.request("join", "joined", session_id=sid)
    second = await connect(client, tok.clerk())
    two = await second.request("join", "joined", session_id=sid)
    assert two["participant"]["participant_id"] == one["participant"]["participant_id"]
    err = await first.wait("error")
    assert err["code"] == "superseded"
    assert await first.closed() == 4409
    await second.request("chat", "ack", text="still here")
    await second.close()


async def test_ending_the_session_reaches_everyone(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    inv = await invite(client, tok, sid, dept="city-amr")
    waiting = await connect(client, tok.other_reviewer())
    await invite(client, tok, sid, dept="city-tax")
    await waiting.wait("invitation")
    rev = await connect(client, tok.reviewer())
    await rev.request("join", "joined", session_id=sid)
    res = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
    assert res.status == 200 and (await res.json())["status"] == "ended"
    for s in (clerk, rev):
        ended = await s.wait("session.ended")
        assert ended["session"]["status"] == "ended"
    # The unanswered invitation disappears from the waiting reviewer's inbox.
    cancelled = await waiting.wait("invitation.updated")
    assert cancelled["invitation"]["status"] == "cancelled"
    err = await rev.request("join", "error", session_id=sid)
    assert err["code"] == "session_ended"
    inbox = await client.get("/api/invitations", headers=auth(tok.other_reviewer()))
    assert (await inbox.json())["invitations"] == []
    types = await events(client, tok)
    # No media node held the session: its case file was sealed before the end was
    # answered (the nodes following it find it sealed and leave it).
    # (The reviewer who came filed no opinion: its exception is filed as it is raised.)
    assert [t for t in types if t != "exception.raised"][-2:] == ["session.ended", "archive.sealed"]
    assert types.count("participant.left") == 2
    assert inv["invitation_id"]
    for s in (clerk, rev, waiting):
        await s.close()


async def test_expired_token_closes_the_socket_and_refresh_keeps_it(
    client: Client, tokens: TokenService
) -> None:
    short = tokens.issue(sub="clerk-01", role="clerk", ttl=1)
    s = await connect(client, short)
    err = await s.wait("error", timeout=3.0)
    assert err["code"] == "token_expired"
    assert await s.closed() == 4401

    kept = await connect(client, tokens.issue(sub="clerk-01", role="clerk", ttl=1))
    ack = await kept.request(
        "auth.refresh", "ack", token=tokens.issue(sub="clerk-01", role="clerk", ttl=600)
    )
    assert ack["token_expires_at"] > time.time() + 500
    await asyncio.sleep(1.5)
    pong = await kept.request("ping", "pong")
    assert pong["type"] == "pong"
    err = await kept.request(
        "auth.refresh", "error", token=tokens.issue(sub="someone-else", role="clerk")
    )
    assert err["code"] == "identity_changed"
    await kept.close()


@pytest.fixture
async def ringing(tmp_path: Path) -> AsyncIterator[tuple[Client, Tokens]]:
    """An app whose invitations go unanswered after 0.3 s."""
    config = make_config(tmp_path, ring_timeout_s=0.3, resume_grace_s=0.4)
    async with TestClient(TestServer(create_app(config))) as c:
        yield c, Tokens(TokenService(config))


async def test_an_unanswered_invitation_is_flagged_and_can_still_be_accepted(
    ringing: tuple[Client, Tokens],
) -> None:
    client, tok = ringing
    sid = await start_session(client, tok)
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    inv = await invite(client, tok, sid, dept="district-planning")
    flagged = await clerk.wait("presence", lambda m: m["state"] == "unanswered", timeout=3.0)
    assert flagged["invitation_id"] == inv["invitation_id"]
    assert "invitation.unanswered" in await events(client, tok)
    late = await connect(
        client, tok.reviewer("rev-district-planning-1", "district-planning", "district")
    )
    got = await late.wait("invitation")
    assert got["invitation"]["status"] == "unanswered"
    ack = await late.request("invitation.accept", "ack", invitation_id=inv["invitation_id"])
    assert ack["invitation"]["status"] == "accepted"
    await late.close()
    await clerk.close()


async def test_a_slot_whose_timer_was_lost_is_swept(ringing: tuple[Client, Tokens]) -> None:
    """A node that died mid-grace leaves a disconnected slot; any node's sweeper ends it."""
    client, tok = ringing
    sid = await start_session(client, tok)
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    service = client.app[SERVICE]
    who = client.app[TOKENS].verify(tok.applicant(sid, "GZ-2026-0001"))
    p, _ = await service.join(who, sid)
    assert await service.disconnected(p.participant_id, p.epoch)  # no timer started
    left = await clerk.wait("presence", lambda m: m["state"] == "left", timeout=3.0)
    assert left["participant"]["participant_id"] == p.participant_id
    assert left["reason"] == "connection_lost"
    await clerk.close()


async def test_bus_messages_carry_the_version_and_one_never_hears_oneself(
    client: Client, tok: Tokens
) -> None:
    sid = await start_session(client, tok)
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    await invite(client, tok, sid, dept="city-amr")
    updated = await clerk.wait("invitation.updated")
    assert updated["v"] == 1
    with pytest.raises(AssertionError):
        await clerk.wait("presence", lambda m: m["state"] == "joined", timeout=0.3)
    await clerk.close()


async def test_refresh_cannot_change_department(client: Client, tok: Tokens) -> None:
    rev = await connect(client, tok.reviewer())
    err = await rev.request("auth.refresh", "error", token=tok.reviewer(dept="city-tax"))
    assert err["code"] == "identity_changed"
    await rev.close()
