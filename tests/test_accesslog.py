"""What a real server writes in its log: one line a request, no forged lines, no
credential (grant links, tokens, an oversized Authorization header), and the client a
trusted proxy names, not the one anybody names."""

from __future__ import annotations

import io
import logging
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from signaling.accesslog import RedactFilter, escape, loggable_path, redact
from signaling.auth import TokenService

from .conftest import SECRET, ServerProcess, make_config

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtdXNlciJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
GRANT = "eyJzIjoic18xIiwidCI6InRyMSJ9.R2FudC1zaWduYXR1cmUtdmFsdWU"
# (then the ids the line is about: request_id, client; docs/operations.md)
ACCESS = re.compile(r' INFO aiohttp\.access: (\S+) "(.*)" (\d{3}) [\d.]+ms( \[[^\]"]*\])?$')


def raw(port: int, request: bytes) -> bytes:
    """One request on its own connection, exactly these bytes; the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        out = b""
        while chunk := conn.recv(65536):
            out += chunk
    return out


def get(port: int, target: str, *headers: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    return raw(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def log_of(server: ServerProcess, lines_before: int, want: int) -> list[str]:
    """The server's log lines after ``lines_before``, once ``want`` access lines are in."""
    deadline = time.monotonic() + 10
    while True:
        lines = server.log.read_text(encoding="utf-8", errors="replace").splitlines()
        new = lines[lines_before:]
        if sum(1 for line in new if " aiohttp.access: " in line) >= want:
            return new
        if time.monotonic() > deadline:
            raise AssertionError(f"{want} access lines expected, log has: {new}")
        time.sleep(0.05)


def lines_now(server: ServerProcess) -> int:
    return len(server.log.read_text(encoding="utf-8", errors="replace").splitlines())


def assert_clean(lines: list[str]) -> None:
    text = "\n".join(lines)
    for secret in (TOKEN, GRANT, SECRET, "SECRETTOKEN", "R2FudC1zaWduYXR1cmU"):
        assert secret not in text, (secret, text)
    for line in lines:
        assert not any(ord(c) < 0x20 or c == "\x7f" for c in line), repr(line)


@pytest.fixture
def logged(server_factory: Callable[..., ServerProcess]) -> Callable[..., ServerProcess]:
    def make(**env: str) -> ServerProcess:
        return server_factory(env={"JR_LOG_LEVEL": "info", **env})

    return make


def test_one_honest_line_per_request(logged: Callable[..., Any]) -> None:
    server = logged()
    before = lines_now(server)
    forged = "/healthz%0A1.2.3.4%20%22GET%20/api/admin%22%20200%200.1ms%0D%1B[2J"
    get(server.port, forged)
    get(server.port, f"/api/replay/{GRANT}")
    get(server.port, f"/api/casefile/{GRANT}")
    get(server.port, f"/ws?token={TOKEN}")
    answer = get(server.port, "/healthz", "Authorization: Bearer " + "SECRETTOKEN" * 1000)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    get(server.port, "/healthz", f"Authorization: Bearer {TOKEN}")
    new = log_of(server, before, 6)
    assert_clean(new)
    access = [ACCESS.search(line) for line in new if " aiohttp.access: " in line]
    assert all(access), new
    requests = [(m.group(2), m.group(3)) for m in access if m]
    assert len(requests) == 6, requests  # one line each: nothing forged
    assert requests[0] == (
        "GET /healthz\\x0a1.2.3.4 \\x22GET /api/admin\\x22 200 0.1ms\\x0d\\x1b[2J",
        "404",
    )
    assert requests[1] == ("GET /api/replay/<grant>", "401")
    assert requests[2] == ("GET /api/casefile/<grant>", "401")
    assert requests[3][0] == "GET /ws"  # no query string
    assert requests[5] == ("GET /healthz", "200")
    # The unparsable request is named without its bytes.
    refused = [line for line in new if "aiohttp.server" in line]
    assert refused and all("LineTooLong" in line for line in refused), new


def test_the_client_address_comes_from_a_trusted_proxy_only(logged: Callable[..., Any]) -> None:
    untrusting = logged()
    before = lines_now(untrusting)
    get(untrusting.port, "/healthz", "X-Forwarded-For: 203.0.113.7")
    (line,) = [x for x in log_of(untrusting, before, 1) if " aiohttp.access: " in x]
    assert ACCESS.search(line).group(1) == "127.0.0.1"  # type: ignore[union-attr]

    behind_proxy = logged(JR_TRUSTED_PROXIES='["127.0.0.1"]')
    before = lines_now(behind_proxy)
    get(behind_proxy.port, "/healthz", "X-Forwarded-For: 198.51.100.1, 203.0.113.7")
    get(behind_proxy.port, "/healthz", "X-Forwarded-For: not-an-address")
    lines = [x for x in log_of(behind_proxy, before, 2) if " aiohttp.access: " in x]
    addresses = [ACCESS.search(x).group(1) for x in lines]  # type: ignore[union-attr]
    # The rightmost hop the proxy added; garbage: the peer.
    assert addresses == ["203.0.113.7", "127.0.0.1"]


@pytest.mark.parametrize(
    ("path", "logged_as"),
    [
        ("/healthz", "/healthz"),
        ("/a\nb", "/a\\x0ab"),
        ('/a"b\\c', "/a\\x22b\\x5cc"),
        ("/a\u2028b\x85", "/a\\u2028b\\x85"),
        ("/中文", "/中文"),
        (f"/api/replay/{GRANT}", "/api/replay/<grant>"),
        ("/api/casefile/anything.at.all", "/api/casefile/<grant>"),
        (
            "/api/sessions/s_1/casefile/files/manifest.json",
            "/api/sessions/s_1/casefile/files/manifest.json",
        ),
        (f"/x/{TOKEN}", "/x/<redacted>"),
    ],
)
def test_loggable_path(path: str, logged_as: str) -> None:
    assert loggable_path(path) == logged_as


def test_redact() -> None:
    assert redact(f"ws://h/ws?token={TOKEN}&x=1") == "ws://h/ws?token=<redacted>&x=1"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer <redacted>"
    assert redact(f"grant {GRANT} used") == "grant <redacted> used"
    assert redact("nothing here") == "nothing here"
    assert escape("\x00\t") == "\\x00\\x09"


def test_the_filter_keeps_every_record_to_one_clean_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("test.accesslog.filter")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("webhook %s failed: %s", f"https://x/hook?token={TOKEN}", "bad\nINFO forged")
        try:
            raise ValueError(f"Authorization: Bearer {TOKEN}")
        except ValueError:
            logger.exception("handling %s", GRANT)
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert TOKEN not in text and GRANT not in text, text
    lines = text.splitlines()
    assert lines[0] == "WARNING webhook https://x/hook?token=<redacted> failed: bad\\x0aINFO forged"
    assert lines[1] == "ERROR handling <redacted>"
    assert lines[-1] == "ValueError: Authorization: Bearer <redacted>"


def test_a_socket_offering_only_its_token_is_not_logged_with_it(
    logged: Callable[..., Any], tmp_path: Path
) -> None:
    server = logged()
    token = TokenService(make_config(tmp_path)).issue(sub="clerk-01", role="clerk", name="陈晓")
    before = lines_now(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(
            (
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Protocol: bearer.{token}\r\n\r\n"
            ).encode()
        )
        assert conn.recv(4096).startswith(b"HTTP/1.1 101")
    new = log_of(server, before, 1)
    # aiohttp warns that the offered protocols don't overlap ours, naming them: redacted.
    assert any("bearer.<redacted>" in line for line in new), new
    assert token not in "\n".join(new)


async def test_the_redis_password_is_never_logged(
    logged: Callable[..., Any], redis_url: str
) -> None:
    """A node on a Redis that wants a password: the start-up line names the Redis
    without it, and nothing else in the log carries it."""
    import redis.asyncio as aioredis

    password = "Redis-Password-9f3c"  # an ACL user of its own: the shared Redis is unchanged
    admin = aioredis.from_url(redis_url)
    await admin.acl_setuser(
        "jrlog",
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )
    await admin.aclose()
    url = redis_url.replace("redis://", f"redis://jrlog:{password}@")
    server = logged(JR_REDIS_URL=url)
    get(server.port, "/healthz")
    new = log_of(server, 0, 1)
    assert any(f"redis://jrlog:***@{url.split('@')[1]}" in line for line in new), new
    assert password not in server.log.read_text(), new
