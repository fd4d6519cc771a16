"""Short applicant links: ``/j/<code>`` instead of a 400-character URL with a token, so
the QR code the clerk shows is sparse enough to scan from a screen.

A code is 96 random bits (``secrets.token_urlsafe(12)``: 16 url-safe characters). It
stands for one applicant link of one session: the store keeps, under the code, that
link's token, its session and case and when it expires (the token's own expiry). Resolving
it sends the browser to the applicant's join page with the token; nothing else can be
reached through it. An expired code is still known for ``KEEP_EXPIRED_S`` so that the
applicant is told "expired" rather than "unknown"; after that it is gone. A malformed
code is refused before the store is asked.

The codes live in the store's ephemeral values (shared by every node with Redis; kept
in the process only with the memory store: a restart of a single node forgets them and
the clerk makes a new link, the long URL in ``url`` still works until it expires).
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from .appkeys import SERVICE, STORE
from .errors import NotFound, ServiceError
from .state import Store

CODE_BYTES = 12  # 96 bits of randomness (>= 64 asked for)
CODE_RE = re.compile(r"[A-Za-z0-9_-]{16}")  # what token_urlsafe(12) makes, nothing else
KEEP_EXPIRED_S = 3600.0  # an expired code answers "expired" this long, then "unknown"
PREFIX = "shortlink:"


class LinkGone(ServiceError):
    status = 410


UNKNOWN = ("link_not_found", "this link is unknown: ask the service window for a new one")
EXPIRED = ("link_expired", "this link has expired: ask the service window for a new one")
ENDED = ("session_ended", "this joint review has ended")


@dataclass(frozen=True)
class ShortLink:
    code: str
    session_id: str
    case_id: str
    token: str
    expires_at: float


class ShortLinks:
    """Codes in ``store`` (ephemeral values); ``clock`` gives Unix seconds."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    async def create(self, *, token: str, session_id: str, case_id: str, expires_at: float) -> str:
        """A new code for this token (one session), valid until ``expires_at``."""
        ttl = max(1.0, expires_at - self.clock()) + KEEP_EXPIRED_S
        doc = {"t": token, "s": session_id, "c": case_id, "e": expires_at}
        while True:  # 96 bits: a collision is as good as impossible, but never overwrite
            code = secrets.token_urlsafe(CODE_BYTES)
            if await self.store.create_ephemeral(PREFIX + code, doc, ttl):
                return code

    async def resolve(self, code: str) -> ShortLink:
        """The link a code stands for; ``NotFound`` (unknown or malformed) or
        ``LinkGone`` (expired)."""
        if not CODE_RE.fullmatch(code):
            raise NotFound(*UNKNOWN)
        doc = await self.store.get_ephemeral(PREFIX + code)
        if doc is None:
            raise NotFound(*UNKNOWN)
        link = ShortLink(code, str(doc["s"]), str(doc["c"]), str(doc["t"]), float(doc["e"]))
        if self.clock() >= link.expires_at:
            raise LinkGone(*EXPIRED)
        return link


def short_url(base_url: str, code: str) -> str:
    return f"{base_url}/j/{code}"


# -- the route: a browser gets a page, an API client JSON ------------------------------

PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/static/style.css"></head>
<body class="page-link"><main class="card notice-page" data-testid="link-error" data-code="{code}">
<h1>{title}</h1><p>{text}</p><p class="muted" lang="en">{english}</p></main></body></html>
"""
TEXTS = {
    "link_not_found": ("链接无效", "这个会办链接无效或已失效。请联系窗口工作人员重新发送链接。"),
    "link_expired": ("链接已过期", "这个会办链接已过期。请联系窗口工作人员重新发送链接。"),
    "session_ended": ("会办已结束", "本次联审会办已经结束，无需再加入。"),
}


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _refusal(request: web.Request, exc: ServiceError) -> web.Response:
    if _wants_json(request):
        return web.json_response(exc.body(), status=exc.status)
    title, text = TEXTS.get(exc.code, TEXTS["link_not_found"])
    page = PAGE.format(
        title=html.escape(title),
        text=html.escape(text),
        english=html.escape(exc.message),
        code=html.escape(exc.code),
    )
    return web.Response(
        text=page,
        status=exc.status,
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


async def follow(request: web.Request) -> web.StreamResponse:
    """``GET /j/{code}``: 303 to the applicant's join page (with the link's token)."""
    service = request.app[SERVICE]
    code = request.match_info["code"]
    try:
        link = await ShortLinks(request.app[STORE], service.clock).resolve(code)
        session = await service.session(link.session_id)
        if session.status == "ended":
            raise LinkGone(*ENDED)
    except ServiceError as exc:
        return _refusal(request, exc)
    target = f"/session/{quote(link.session_id, safe='')}?token={quote(link.token, safe='')}"
    if _wants_json(request):
        body = {"session_id": link.session_id, "case_id": link.case_id, "url": target}
        return web.json_response(body, headers={"Cache-Control": "no-store"})
    raise web.HTTPSeeOther(target, headers={"Cache-Control": "no-store"})


def add_short_link_route(app: web.Application) -> None:
    app.router.add_get("/j/{code}", follow)
