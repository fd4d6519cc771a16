"""Odd input at every door: JSON bodies must say they are JSON, numbers and strings that
Python's decoder turns into exceptions, query parameters, socket frames. Each answers a
precise 4xx code (or a socket error message) and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.api import ROUTES
from signaling.auth import TokenService

from .conftest import Tokens, auth, flush_redis, make_config

Client = TestClient[Any, Any]
CASE = "IN-2024-0001"


@pytest.fixture(params=["memory", "redis"])
async def client(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Client, Tokens]]:
    extra: dict[str, Any] = {}
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        flush_redis(url)
        extra["redis_url"] = url
    config = make_config(tmp_path, **extra)
    async with TestClient(TestServer(create_app(config))) as c:
        yield c, Tokens(TokenService(config))


async def error_code(r: aiohttp.ClientResponse, status: int) -> str:
    assert r.status == status, await r.text()
    assert r.content_type == "application/json"
    return str((await r.json())["error"]["code"])


async def a_session(c: Client, tok: Tokens) -> str:
    r = await c.post(f"/api/cases/{CASE}/sessions", json={}, headers=auth(tok.clerk()))
    assert r.status == 201
    return str((await r.json())["session_id"])


# -- Content-Type of JSON bodies --------------------------------------------------------

BODY_ROUTES = {(r.method, r.path): r for r in ROUTES if r.body is not None}
# Each route with a JSON body, a token that may call it and a body it accepts.
CALLS: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "/api/auth/demo-login": ("/api/auth/demo-login", None, {"sub": "clerk-01"}),
    "/api/cases/{case_id}/sessions": (f"/api/cases/{CASE}/sessions", "clerk", {"matter": "x"}),
    "/api/sessions/{session_id}/invitations": (
        "/api/sessions/{sid}/invitations",
        "clerk",
        {"dept": "city-amr"},
    ),
    "/api/sessions/{session_id}/applicant-link": (
        "/api/sessions/{sid}/applicant-link",
        "clerk",
        {"name": "x"},
    ),
    "/api/invitations/{invitation_id}/decline": (
        "/api/invitations/i_nosuch/decline",
        "reviewer",
        {"reason": "busy"},
    ),
    "/api/sessions/{session_id}/opinions": (
        "/api/sessions/{sid}/opinions",
        "reviewer",
        {"decision": "note", "note": "x"},
    ),
    # Any role passes the route's gate; the body's type is refused before the rule (#16).
    "/api/sessions/{session_id}/consent": (
        "/api/sessions/{sid}/consent",
        "clerk",
        {"accepted": True},
    ),
    "/api/admin/drain": ("/api/admin/drain", "admin", {"draining": False}),
    "/api/cases/{case_id}/hold": (f"/api/cases/{CASE}/hold", "supervisor", {"reason": "x"}),
    "/api/exceptions/{exception_id}/handle": (
        "/api/exceptions/ex_nosuch/handle",
        "supervisor",
        {"note": "x"},
    ),
}

NOT_JSON = [
    pytest.param("text/plain", id="text-plain"),
    pytest.param("text/plain; charset=utf-8", id="text-plain-charset"),
    pytest.param("application/x-www-form-urlencoded", id="form"),
    pytest.param("multipart/form-data; boundary=x", id="multipart"),
    pytest.param("application/xml", id="xml"),
    pytest.param("application/jsonp", id="jsonp"),
    pytest.param("application/json; charset=latin-1", id="json-latin1"),
    pytest.param(None, id="no-content-type"),
]


def test_every_json_route_is_in_the_table() -> None:
    assert set(CALLS) == {path for _, path in BODY_ROUTES}


@pytest.mark.parametrize("route", sorted(CALLS))
@pytest.mark.parametrize("ctype", NOT_JSON)
async def test_json_routes_refuse_bodies_of_other_types(
    client: tuple[Client, Tokens], route: str, ctype: str | None
) -> None:
    c, tok = client
    sid = await a_session(c, tok)
    path, role, body = CALLS[route]
    headers = auth(getattr(tok, role)()) if role else {}
    skip: list[str] = []
    if ctype is None:
        skip = ["Content-Type"]
    else:
        headers["Content-Type"] = ctype
    r = await c.post(
        path.format(sid=sid), data=json.dumps(body), headers=headers, skip_auto_headers=skip
    )
    assert await error_code(r, 415) == "unsupported_media_type"
    assert (
        "application/json" in (await r.json())["error"]["message"]
        or "UTF-8" in (await r.json())["error"]["message"]
    )
    # Nothing happened: still one session (the one made above), no opinion.
    r = await c.get("/api/sessions", headers=auth(tok.clerk()))
    assert len((await r.json())["sessions"]) == 1


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json",
        "Application/JSON; charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/merge-patch+json",
    ],
)
async def test_json_content_types_are_accepted(client: tuple[Client, Tokens], ctype: str) -> None:
    c, tok = client
    r = await c.post(
        f"/api/cases/{CASE}/sessions",
        data=b'{"matter": "x"}',
        headers={**auth(tok.clerk()), "Content-Type": ctype},
    )
    assert r.status == 201, await r.text()


async def test_an_empty_body_needs_no_content_type(client: tuple[Client, Tokens]) -> None:
    """Every field optional: a POST without a body is an empty object, as before."""
    c, tok = client
    r = await c.post(
        f"/api/cases/{CASE}/sessions", headers=auth(tok.clerk()), skip_auto_headers=["Content-Type"]
    )
    assert r.status == 201, await r.text()
    # A body with a required field still says what is missing (not 415).
    r = await c.post("/api/invitations/i_nosuch/decline", headers=auth(tok.reviewer()))
    assert await error_code(r, 400) == "invalid_body"


# -- JSON that Python's decoder accepts or raises on in its own ways -----------------------

STRICT_JSON = [
    pytest.param(b'{"matter": ' + b"9" * 5000 + b"}", id="5000-digit-number"),
    pytest.param(b'{"matter": NaN}', id="nan"),
    pytest.param(b'{"matter": -Infinity}', id="infinity"),
    pytest.param(b'{"matter": "\\ud800"}', id="lone-surrogate"),
    pytest.param(b'{"\\udfff": "x"}', id="lone-surrogate-key"),
    pytest.param('{"matter": "x"}'.encode("utf-16"), id="utf-16"),
    pytest.param(b'\xef\xbb\xbf{"matter": "x"}', id="utf-8-bom"),
]


@pytest.mark.parametrize("raw", STRICT_JSON)
async def test_bodies_that_are_not_strict_json(client: tuple[Client, Tokens], raw: bytes) -> None:
    c, tok = client
    headers = {**auth(tok.clerk()), "Content-Type": "application/json"}
    r = await c.post(f"/api/cases/{CASE}/sessions", data=raw, headers=headers)
    assert await error_code(r, 400) == "bad_json"
    r = await c.post(f"/api/cases/{CASE}/sessions", json={"matter": "😀"}, headers=headers)
    assert r.status == 201  # a real surrogate pair (an emoji) is fine


# -- query parameters -------------------------------------------------------------------

ODD_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e999", "9" * 5000, "", "0x10", "1;2", "%00"]


@pytest.mark.parametrize("value", ODD_NUMBERS)
@pytest.mark.parametrize(
    ("path", "param", "role"),
    [
        ("/api/sessions", "since", "clerk"),
        ("/api/sessions", "until", "clerk"),
        ("/api/sessions", "limit", "clerk"),
        ("/api/webhooks/deliveries", "limit", "admin"),
    ],
)
async def test_odd_numbers_in_query_parameters(
    client: tuple[Client, Tokens], path: str, param: str, role: str, value: str
) -> None:
    c, tok = client
    await a_session(c, tok)
    r = await c.get(f"{path}?{param}={value}", headers=auth(getattr(tok, role)()))
    assert await error_code(r, 400) == "invalid_query"
    r = await c.get("/api/sessions", headers=auth(tok.clerk()))
    assert r.status == 200


# -- socket frames ----------------------------------------------------------------------

FRAMES = [
    pytest.param(
        '{"type": "ping", "ref": "a", "x": ' + "9" * 5000 + "}", "bad_json", id="huge-int"
    ),
    pytest.param('{"type": "ping", "ref": "a", "x": NaN}', "bad_json", id="nan"),
    pytest.param('{"type": "ping", "ref": "\\ud800"}', "invalid_message", id="surrogate-ref"),
    pytest.param('{"type": "\\udc00"}', "invalid_message", id="surrogate-type"),
    pytest.param('{"type": "chat", "text": "\\ud800"}', "invalid_message", id="surrogate-text"),
    pytest.param('{"\\ud800": 1, "type": "ping"}', "invalid_message", id="surrogate-key"),
    pytest.param(
        '{"type": "chat", "ref": "r1", "text": "x\\udfffy"}',
        "invalid_message",
        id="surrogate-ref-kept",
    ),
    pytest.param('{"type": "ping", "ref": "' + "r" * 5000 + '"}', "invalid_message", id="long-ref"),
]


@pytest.mark.parametrize(("frame", "code"), FRAMES)
async def test_frames_that_broke_the_socket(
    client: tuple[Client, Tokens], frame: str, code: str
) -> None:
    c, tok = client
    ws = await c.ws_connect(f"/ws?token={tok.clerk()}")
    assert (await ws.receive_json())["type"] == "welcome"
    await ws.send_str(frame)
    reply = await ws.receive_json(timeout=5)
    assert (reply["type"], reply["code"]) == ("error", code)
    assert "ref" not in reply or len(reply["ref"]) <= 64
    if '"ref": "r1"' in frame:
        assert reply["ref"] == "r1"  # the client can tell which request failed
    await ws.send_str('{"type": "ping", "ref": "after"}')
    reply = await ws.receive_json(timeout=5)
    assert (reply["type"], reply.get("ref")) == ("pong", "after")
    await ws.close()


async def test_the_openapi_document_names_the_415(client: tuple[Client, Tokens]) -> None:
    c, _ = client
    doc = await (await c.get("/api/openapi.json")).json()
    for r in ROUTES:
        responses = doc["paths"][r.path][r.method.lower()]["responses"]
        if r.body is not None or r.upload:
            assert "unsupported_media_type" in responses["415"]["description"], r.path
        for status in r.errors:
            assert status in responses, (r.path, status)
