"""Web hardening: the security headers on every kind of response the node gives; the
Origin allow-list on /ws and on state-changing requests; the socket's token carried as a
subprotocol instead of in the URL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.web_security import HEADERS, normalize, origin_allowed, own_origin

from .conftest import Tokens, auth, make_config
from .images import tiny

Client = TestClient[Any, Any]
CASE = "WEB-2026-0001"
PNG = tiny("PNG")  # a still must really be an image
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def assert_hardened(r: aiohttp.ClientResponse, what: str) -> None:
    for name, value in HEADERS.items():
        assert r.headers.get(name) == value, (what, r.status, name, r.headers.get(name))
    csp = r.headers["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
        "form-action 'self'",
    ):
        assert directive in csp, (what, directive)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert "camera=(self)" in r.headers["Permissions-Policy"]
    assert "geolocation=()" in r.headers["Permissions-Policy"]
    assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"


async def _sealed_session(client: Client, tok: Tokens) -> tuple[str, dict[str, Any]]:
    """A session with a still, ended (so sealed): its id and its case-file index."""
    r = await client.post(
        f"/api/cases/{CASE}/sessions",
        json={"applicant_name": "某公司", "matter": "食品经营许可"},
        headers=auth(tok.clerk()),
    )
    assert r.status == 201, await r.text()
    sid = (await r.json())["session_id"]
    r = await client.post(
        f"/api/sessions/{sid}/snapshots",
        data=PNG,
        headers={**auth(tok.clerk()), "Content-Type": "image/png"},
    )
    assert r.status == 201, await r.text()
    r = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
    assert r.status == 200, await r.text()
    r = await client.get(f"/api/sessions/{sid}/casefile", headers=auth(tok.supervisor()))
    assert r.status == 200, await r.text()
    return sid, dict(await r.json())


@pytest.fixture
async def quiet(tmp_path: Path) -> Any:
    """An app without media (sealing still happens): every route kind, cheaply."""
    config = make_config(tmp_path, media_enabled=False, max_message_bytes=4096)
    async with TestClient(TestServer(create_app(config))) as c:
        yield c


async def test_every_kind_of_response_carries_the_security_headers(
    quiet: Client, tok: Tokens
) -> None:
    sid, index = await _sealed_session(quiet, tok)
    still = next(f for f in index["files"] if f["kind"] == "still")
    manifest = next(f for f in index["files"] if f["path"] == "manifest.json")
    clerk = auth(tok.clerk())
    checks: list[tuple[str, str, dict[str, str], int]] = [
        ("page /", "/", {}, 200),
        ("page /login", "/login", {}, 200),
        ("page /counter", "/counter", {}, 200),
        ("page /session", f"/session/{sid}", {}, 200),
        ("page /supervise", "/supervise", {}, 200),
        ("static js", "/static/session.js", {}, 200),
        ("static css", "/static/style.css", {}, 200),
        ("favicon", "/favicon.ico", {}, 200),
        ("departments", "/ui/departments.json", {}, 200),
        ("healthz", "/healthz", {}, 200),
        ("openapi", "/api/openapi.json", {}, 200),
        ("api json", "/api/sessions", clerk, 200),
        ("api 401", "/api/sessions", {}, 401),
        ("api 403", "/api/sessions", auth(tok.applicant(sid, CASE)), 403),
        ("aiohttp 404 api", "/api/nope", {}, 404),
        ("aiohttp 404 page", "/nope", {}, 404),
        ("static 404", "/static/nope.js", {}, 404),
        ("casefile by token", manifest["url"], auth(tok.supervisor()), 200),
        ("casefile by grant", manifest["src"], {}, 200),
        ("still by grant", still["src"], {}, 200),
        ("replay bad grant", "/api/replay/eyJzIjoieCJ9.bad", {}, 401),
        ("ws refused: no token", "/ws", UPGRADE, 401),
        ("ws refused: origin", "/ws", {**UPGRADE, "Origin": "http://evil.example"}, 403),
    ]
    for what, path, headers, status in checks:
        r = await quiet.get(path, headers=headers)
        assert r.status == status, (what, r.status, await r.text())
        assert_hardened(r, what)
    # aiohttp's own 405 and 413, and a JSON error of a POST.
    r = await quiet.delete("/healthz")
    assert r.status == 405
    assert_hardened(r, "405")
    r = await quiet.post(
        f"/api/cases/{CASE}/sessions", data=b"x" * 10_000, headers={**clerk, "Content-Type": "a/b"}
    )
    assert r.status == 413, await r.text()
    assert_hardened(r, "413")
    r = await quiet.post(f"/api/cases/{CASE}/sessions", json={"matter": 5}, headers=clerk)
    assert r.status == 400, await r.text()
    assert_hardened(r, "400")


async def test_the_socket_takes_its_token_as_a_subprotocol(quiet: Client, tok: Tokens) -> None:
    ws = await quiet.ws_connect("/ws", protocols=("jointreview.v1", "bearer." + tok.clerk()))
    try:
        # The server names our protocol, never echoes the token.
        assert ws.protocol == "jointreview.v1"
        msg = json.loads(await ws.receive_str(timeout=3))
        assert msg["type"] == "welcome" and msg["user"]["sub"] == "clerk-01"
    finally:
        await ws.close()
    # ?token= still works for non-browser clients (deprecated).
    ws = await quiet.ws_connect(f"/ws?token={tok.clerk()}")
    assert json.loads(await ws.receive_str(timeout=3))["type"] == "welcome"
    await ws.close()
    # A wrong token in the subprotocol is refused like a wrong one in the URL.
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await quiet.ws_connect("/ws", protocols=("jointreview.v1", "bearer.eyJnope.nope.nope"))
    assert err.value.status == 401


async def test_a_foreign_origin_cannot_open_the_socket(quiet: Client, tok: Tokens) -> None:
    token = tok.clerk()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await quiet.ws_connect(
            "/ws",
            protocols=("jointreview.v1", "bearer." + token),
            headers={"Origin": "http://evil.example"},
        )
    assert err.value.status == 403
    r = await quiet.get(f"/ws?token={token}", headers={**UPGRADE, "Origin": "null"})
    assert r.status == 403
    assert (await r.json())["error"]["code"] == "origin_not_allowed"
    # The page's own origin (the Host it was served from) is fine.
    own = f"http://{quiet.server.host}:{quiet.server.port}"
    ws = await quiet.ws_connect(f"/ws?token={token}", headers={"Origin": own})
    assert json.loads(await ws.receive_str(timeout=3))["type"] == "welcome"
    await ws.close()


async def test_a_foreign_origin_cannot_change_state(quiet: Client, tok: Tokens) -> None:
    body = {"applicant_name": "某公司", "matter": "食品经营许可"}
    headers = {**auth(tok.clerk()), "Origin": "https://evil.example"}
    r = await quiet.post(f"/api/cases/{CASE}/sessions", json=body, headers=headers)
    assert r.status == 403
    assert (await r.json())["error"]["code"] == "origin_not_allowed"
    r = await quiet.get("/api/sessions", headers=headers)  # reading: the token decides
    assert r.status == 200
    r = await quiet.post(f"/api/cases/{CASE}/sessions", json=body, headers=auth(tok.clerk()))
    assert r.status == 201  # no Origin: an integration, not a browser


async def test_allowed_origins_and_a_trusted_proxy(tmp_path: Path, tok: Tokens) -> None:
    config = make_config(
        tmp_path,
        media_enabled=False,
        allowed_origins=["https://portal.example.gov.cn"],
        trusted_proxies=["127.0.0.1"],
    )
    async with TestClient(TestServer(create_app(config))) as c:
        token = tok.clerk()
        for origin, forwarded, ok in [
            ("https://portal.example.gov.cn", {}, True),
            ("https://portal.example.gov.cn:443", {}, True),
            ("https://review.example.gov.cn", {}, False),
            (
                "https://review.example.gov.cn",
                {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "review.example.gov.cn"},
                True,
            ),
            (
                "http://review.example.gov.cn",
                {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "review.example.gov.cn"},
                False,
            ),
        ]:
            r = await c.get(
                f"/ws?token={token}", headers={**UPGRADE, "Origin": origin, **forwarded}
            )
            assert (r.status == 101) is ok, (origin, forwarded, r.status)
            r.close()


async def test_forwarded_host_counts_only_from_a_trusted_proxy(quiet: Client, tok: Tokens) -> None:
    # The test client is 127.0.0.1, not a trusted proxy here: its X-Forwarded-Host is ignored.
    headers = {
        **UPGRADE,
        "Origin": "https://evil.example",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
    }
    r = await quiet.get(f"/ws?token={tok.clerk()}", headers=headers)
    assert r.status == 403


ORIGINS = [
    # origin header, own origin, allowed, expected
    (None, "http://a:1", [], True),
    ("http://a:1", "http://a:1", [], True),
    ("HTTP://A:1", "http://a:1", [], True),
    ("http://a:80", "http://a", [], True),
    ("https://a", "http://a", [], False),
    ("http://a:2", "http://a:1", [], False),
    ("null", "http://a:1", [], False),
    ("", "http://a:1", [], False),
    ("http://b", "http://a", ["http://b"], True),
    ("http://b.evil", "http://a", ["http://b"], False),
    ("http://a:1@evil", "http://a:1", [], False),
    ("javascript://a", "http://a", [], False),
    ("http://[::1]:8480", "http://[::1]:8480", [], True),
    ("http://a", None, [], False),
]


@pytest.mark.parametrize(("origin", "own", "allowed", "ok"), ORIGINS)
def test_origin_rule(origin: str | None, own: str | None, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, own, allowed) is ok


def test_own_origin() -> None:
    fwd = ("https", "r.example")
    assert own_origin("https://r.example/", "http", "x:1", "127.0.0.1", None, None, ()) == (
        "https://r.example"
    )
    assert own_origin("", "http", "h:8480", "10.0.0.9", *fwd, ()) == "http://h:8480"
    assert own_origin("", "http", "h:8480", "10.0.0.9", *fwd, ("10.0.0.0/8",)) == (
        "https://r.example"
    )
    assert own_origin("", "http", None, "10.0.0.9", None, None, ()) is None
    assert normalize("https://R.example:443") == "https://r.example"
