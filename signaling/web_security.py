"""Browser-facing hardening: security headers on every response, and an Origin allow-list
for the socket and for state-changing requests.

The headers are set from ``on_response_prepare``, which aiohttp fires for every response
that goes through routing: handlers' own, the JSON errors of ``error_middleware``,
aiohttp's 404/405/413, static and ``FileResponse`` files, the 101 of ``/ws``. (Only a
request too malformed to parse, answered 400 text/plain before routing, goes out without
them: aiohttp answers it with no hook at all.)

The Origin rule (pure ``origin_allowed``) applies to ``/ws`` before the upgrade and to
POST/PUT/PATCH/DELETE. A request without ``Origin`` (a non-browser client, an
integration) passes: Origin is a browser's statement about the page that sent the
request, and the API's credentials are Bearer tokens that a foreign page cannot attach by
itself, so this is a cheap consistent rule against cross-site use, not the access control.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from .appkeys import CONFIG
from .clientaddr import networks

# No inline script or style anywhere (web_client/static has none); blob: images are
# document stills fetched with the token; data: covers small inline images. Camera and
# screen streams go through srcObject, which CSP does not govern; replay media are
# same-origin grant URLs. 'self' in connect-src also covers ws:/wss: to this host (CSP 3).
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# Camera, microphone and screen sharing for our own pages only; the rest off.
PERMISSIONS = ", ".join(
    [
        "camera=(self)",
        "microphone=(self)",
        "display-capture=(self)",
        "fullscreen=(self)",
        "autoplay=(self)",
        "geolocation=()",
        "payment=()",
        "usb=()",
        "serial=()",
        "hid=()",
        "midi=()",
        "accelerometer=()",
        "gyroscope=()",
        "magnetometer=()",
    ]
)
HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The applicant's first page URL carries ?token=: never send it on as a Referer.
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": PERMISSIONS,
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}


async def add_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)


def normalize(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case, the scheme's default port dropped; None
    for anything that is not an http(s) origin (``null``, garbage)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    if parts.username is not None or parts.query or parts.fragment:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(origin: str | None, own: str | None, allowed: Iterable[str]) -> bool:
    """Sans-IO: may a request with this ``Origin`` header proceed? No header: yes."""
    if origin is None:
        return True
    got = normalize(origin)
    if got is None:
        return False
    return got == own or got in {normalize(a) for a in allowed}


def own_origin(
    public_url: str,
    scheme: str,
    host: str | None,
    peer: str | None,
    forwarded_proto: str | None,
    forwarded_host: str | None,
    trusted: tuple[str, ...],
) -> str | None:
    """The server's own origin: ``public_url`` when set; else the scheme and Host the
    request came with, or those a trusted proxy forwarded (``X-Forwarded-Proto/Host``)."""
    if public_url:
        return normalize(public_url)
    if trusted and peer and _from_proxy(peer, trusted):
        if forwarded_proto:
            scheme = forwarded_proto.split(",")[0].strip()
        if forwarded_host:
            host = forwarded_host.split(",")[0].strip()
    if not host:
        return None
    return normalize(f"{scheme}://{host}")


def _from_proxy(peer: str, trusted: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(ip in net for net in networks(trusted))


def request_origin_ok(request: web.Request) -> bool:
    config = request.app[CONFIG]
    trusted = tuple(config.trusted_proxies)
    own = own_origin(
        config.public_url,
        request.scheme,
        request.headers.get(hdrs.HOST),
        request.remote,
        request.headers.get("X-Forwarded-Proto"),
        request.headers.get("X-Forwarded-Host"),
        trusted,
    )
    return origin_allowed(request.headers.get(hdrs.ORIGIN), own, config.allowed_origins)


@web.middleware
async def origin_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    guarded = request.path == "/ws" or request.method in STATE_CHANGING
    if guarded and not request_origin_ok(request):
        from .api import json_error

        return json_error(
            403, "origin_not_allowed", "requests from this page's origin are not accepted"
        )
    return await handler(request)


def install(app: web.Application) -> None:
    """Register the headers and the Origin rule on ``app`` (from ``create_app``)."""
    app.middlewares.append(origin_middleware)
    app.on_response_prepare.append(add_headers)


# The socket's token travels as a subprotocol, ``bearer.<JWT>``, next to the protocol
# name the server answers with: a browser logs the socket's URL (a failed or closed
# connection, devtools), never its Sec-WebSocket-Protocol header. ``?token=`` still works
# for non-browser clients (deprecated; the access log never writes query strings).
WS_PROTOCOL = "jointreview.v1"
WS_PROTOCOLS = (WS_PROTOCOL,)
BEARER_PREFIX = "bearer."


def ws_token(request: web.BaseRequest) -> str | None:
    for header in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, []):
        for item in header.split(","):
            item = item.strip()
            if item.startswith(BEARER_PREFIX):
                return item[len(BEARER_PREFIX) :]
    return request.query.get("token")
