"""Signaling bad input: every malformed frame gets a precise error and the socket lives on."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from signaling.auth import TokenService

from .conftest import Tokens, auth, make_config

Client = TestClient[Any, Any]
Msg = dict[str, Any]

LIMIT = 64 * 1024  # config.max_message_bytes
HARD_LIMIT = 1 << 20  # aiohttp's max_msg_size for /ws: 16 × 64 KiB


async def connect(client: Client, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect(f"/ws?token={token}")
    welcome = await ws.receive_json(timeout=3)
    assert welcome["type"] == "welcome"
    assert welcome["max_message_bytes"] == LIMIT
    return ws


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> Msg:
    frame = await ws.receive(timeout=3)
    assert frame.type == aiohttp.WSMsgType.TEXT, (frame.type, frame.data, ws.close_code)
    msg: Msg = json.loads(frame.data)
    return msg


async def assert_alive(ws: aiohttp.ClientWebSocketResponse, ref: str = "p") -> None:
    await ws.send_json({"type": "ping", "ref": ref})
    pong = await next_json(ws)
    assert (pong["type"], pong["ref"]) == ("pong", ref)


async def new_session(client: Client, tok: Tokens) -> str:
    r = await client.post("/api/cases/WS-1/sessions", json={}, headers=auth(tok.clerk()))
    assert r.status == 201
    return str((await r.json())["session_id"])


def _chat(size: int) -> str:
    head = '{"type":"chat","ref":"big","text":"'
    return head + "x" * (size - len(head) - 2) + '"}'


# (frame, error code, echoed ref or None, a field the details must name or None)
BAD_FRAMES: dict[str, tuple[str | bytes, str, str | None, str | None]] = {
    "garbage": ("hello, server{", "bad_json", None, None),
    "truncated": ('{"type": "ping", "ref": "t"', "bad_json", None, None),
    "empty": ("", "bad_json", None, None),
    "deep nesting": ("[" * 50_000, "bad_json", None, None),
    "array": ('[{"type": "ping"}]', "not_an_object", None, None),
    "string": ('"ping"', "not_an_object", None, None),
    "number": ("42", "not_an_object", None, None),
    "no type": ('{"ref": "a1", "session_id": "s"}', "missing_type", "a1", None),
    "type not a string": ('{"type": ["ping"], "ref": "a2"}', "missing_type", "a2", None),
    "unknown type": ('{"type": "dance", "ref": "a3"}', "unknown_type", "a3", None),
    "server-only type": ('{"type": "welcome", "ref": "a4"}', "unknown_type", "a4", None),
    "wrong field type": (
        '{"type": "join", "session_id": 123, "ref": "a5"}',
        "invalid_message",
        "a5",
        "session_id",
    ),
    "missing field": ('{"type": "chat", "ref": "a6"}', "invalid_message", "a6", "text"),
    "blank field": ('{"type": "chat", "text": "  ", "ref": "a7"}', "invalid_message", "a7", "text"),
    "extra field": (
        '{"type": "ping", "ref": "a8", "admin": true}',
        "invalid_message",
        "a8",
        "admin",
    ),
    # A \u escape of a lone surrogate: no UTF-8 frame can carry it back (the reply died).
    "lone surrogate in ref": ('{"type": "ping", "ref": "\\ud800"}', "invalid_message", None, None),
    "lone surrogate in text": (
        '{"type": "chat", "text": "a\\udfff"}',
        "invalid_message",
        None,
        None,
    ),
    "ref not a string": ('{"type": "ping", "ref": 5}', "invalid_message", None, "ref"),
    "version 2": ('{"type": "ping", "v": 2, "ref": "a9"}', "unsupported_version", "a9", None),
    "version as string": (
        '{"type": "ping", "v": "1", "ref": "b1"}',
        "unsupported_version",
        "b1",
        None,
    ),
    "over 64 KiB": (_chat(LIMIT + 1), "message_too_large", None, None),
    "just under 1 MiB": (_chat(HARD_LIMIT - 1), "message_too_large", None, None),
    "multibyte over 64 KiB": (
        _chat(LIMIT // 3 + 100).replace("x", "中"),
        "message_too_large",
        None,
        None,
    ),
    "binary": (b'{"type": "ping", "ref": "bin"}', "binary_not_supported", None, None),
    "unknown session": (
        '{"type": "join", "session_id": "s_nosuch", "ref": "b2"}',
        "session_not_found",
        "b2",
        None,
    ),
    "chat before join": ('{"type": "chat", "text": "你好", "ref": "b3"}', "not_joined", "b3", None),
    "leave before join": ('{"type": "leave", "ref": "b4"}', "not_joined", "b4", None),
    "unknown invitation": (
        '{"type": "invitation.accept", "invitation_id": "i_nosuch", "ref": "b5"}',
        "invitation_not_found",
        "b5",
        None,
    ),
    "unknown resume token": (
        '{"type": "resume", "resume_token": "p_x.nope", "ref": "b6"}',
        "invalid_resume_token",
        "b6",
        None,
    ),
    "refresh with garbage token": (
        '{"type": "auth.refresh", "token": "not-a-jwt-at-all", "ref": "b7"}',
        "invalid_token",
        "b7",
        None,
    ),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_bad_frame_gets_an_error_and_the_socket_lives(
    client: Client, tok: Tokens, name: str
) -> None:
    frame, code, ref, field = BAD_FRAMES[name]
    ws = await connect(client, tok.clerk())
    if isinstance(frame, bytes):
        await ws.send_bytes(frame)
    else:
        await ws.send_str(frame)
    err = await next_json(ws)
    assert err["type"] == "error" and err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert err.get("ref") == ref
    if field is None:
        assert "details" not in err
    else:
        assert field in [d["field"] for d in err["details"]], err
        assert all(d["problem"] for d in err["details"])
    await assert_alive(ws)
    await ws.close()


async def test_a_socket_survives_every_bad_frame_and_still_joins(
    client: Client, tok: Tokens
) -> None:
    sid = await new_session(client, tok)
    ws = await connect(client, tok.clerk())
    for frame, code, ref, _ in BAD_FRAMES.values():
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        err = await next_json(ws)
        assert (err["code"], err.get("ref")) == (code, ref)
    await ws.send_json({"type": "join", "session_id": sid, "ref": "j"})
    joined = await next_json(ws)
    assert (joined["type"], joined["ref"]) == ("joined", "j")
    assert joined["session"]["session_id"] == sid
    await ws.send_json({"type": "chat", "text": "材料已收到", "ref": "c"})
    seen: dict[str, Msg] = {}
    while not {"ack", "chat"} <= set(seen):
        msg = await next_json(ws)
        seen.setdefault(msg["type"], msg)
    assert seen["ack"]["ref"] == "c"
    assert (seen["chat"]["text"], seen["chat"]["sender"]["sub"]) == ("材料已收到", "clerk-01")
    await ws.send_json({"type": "join", "session_id": sid, "ref": "again"})
    err = await next_json(ws)
    assert (err["code"], err["ref"]) == ("already_joined", "again")
    await assert_alive(ws)
    await ws.close()


async def test_join_refusal_keeps_the_socket(client: Client, tok: Tokens) -> None:
    sid = await new_session(client, tok)
    ws = await connect(client, tok.other_reviewer())
    await ws.send_json({"type": "join", "session_id": sid, "ref": "j"})
    err = await next_json(ws)
    assert (err["code"], err["ref"]) == ("session_not_found", "j")  # as an unknown one
    await assert_alive(ws)
    await ws.close()


async def test_join_of_an_ended_session(client: Client, tok: Tokens) -> None:
    sid = await new_session(client, tok)
    r = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
    assert r.status == 200
    ws = await connect(client, tok.clerk())
    await ws.send_json({"type": "join", "session_id": sid, "ref": "late"})
    err = await next_json(ws)
    assert (err["code"], err["ref"]) == ("session_ended", "late")
    await assert_alive(ws)
    await ws.close()


async def test_refresh_for_someone_else_is_refused(client: Client, tok: Tokens) -> None:
    ws = await connect(client, tok.clerk())
    await ws.send_json({"type": "auth.refresh", "token": tok.admin(), "ref": "r"})
    err = await next_json(ws)
    assert (err["code"], err["ref"]) == ("identity_changed", "r")
    await assert_alive(ws)
    await ws.close()


# -- the handshake -------------------------------------------------------------------

FORGED = TokenService(make_config(Path("/nonexistent"), jwt_secret="another-secret-" + "y" * 40))
BAD_TOKENS: dict[str, tuple[str | None, str]] = {
    "missing": (None, "missing_token"),
    "empty": ("", "missing_token"),
    "garbage": ("not.a.jwt", "invalid_token"),
    "forged": (FORGED.issue(sub="admin", role="admin"), "invalid_token"),
    "expired": ("EXPIRED", "token_expired"),
}


def _bad_token(tok: Tokens, kind: str) -> tuple[str, str]:
    token, code = BAD_TOKENS[kind]
    if token == "EXPIRED":
        token = tok.svc.issue(sub="clerk-01", role="clerk", now=time.time() - 100000, ttl=60)
    return ("/ws" if token is None else f"/ws?token={token}"), code


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_handshake_refuses_bad_token(client: Client, tok: Tokens, kind: str) -> None:
    url, code = _bad_token(tok, kind)
    r = await client.get(url)
    assert r.status == 401
    assert (await r.json())["error"]["code"] == code

    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(url)
    assert info.value.status == 401

    # Refusing one handshake does not hurt the next one.
    ws = await connect(client, tok.clerk())
    await assert_alive(ws)
    await ws.close()


# -- aiohttp's hard limit ------------------------------------------------------------


async def test_frame_over_the_hard_limit_closes_with_1009(client: Client, tok: Tokens) -> None:
    ws = await connect(client, tok.clerk())
    await ws.send_str(_chat(HARD_LIMIT + 1))
    frame = await ws.receive(timeout=5)
    assert frame.type == aiohttp.WSMsgType.CLOSE, (frame.type, frame.data)
    assert frame.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG == 1009
    assert ws.close_code == 1009
    assert (await ws.receive(timeout=3)).type == aiohttp.WSMsgType.CLOSED

    # The server is unharmed: a new connection works, and so does HTTP.
    ws = await connect(client, tok.clerk())
    await assert_alive(ws)
    await ws.close()
    r = await client.get("/healthz")
    assert r.status == 200
