"""The audit trail's HTTP side (registered on import): the middleware that writes who was
refused, signed in or acted with privilege, from where and why; the trail's context in
the app; and ``GET /api/audit`` for auditors (admins only: the trail records the
supervisors' own replays and downloads, and no role is narrower than admin).

The middleware is the outermost one, so it sees every answer as the client got it:
401 (``auth.token.refused``, or ``auth.grant.refused`` on a grant route), 403 and 429
(``request.refused``, with the route, the error code and message), a demo sign-in
(``auth.signin.demo``, ok or refused), a token's first use on this node
(``auth.signin.token``), and every request by an admin or supervisor
(``admin.request`` / ``supervisor.request``, unless a more specific entry was written
for it, such as a mirrored ``replay.viewed``). A socket's sign-in is ``auth.connect``
(``connected``, called by ``ws.py``). Nothing from a request's query string is written,
and a grant in a path stays ``{grant}``: both are credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from aiohttp import web
from pydantic import BaseModel

from . import paging, policy
from .api import Ctx, route
from .appkeys import AUDIT, CONFIG, NODE_ID, SERVICE, WHO
from .audit import (
    CURRENT,
    AuditTrail,
    actor_dict,
    clip,
    day_files,
    day_of,
)
from .auth import Identity
from .clientaddr import client_address
from .config import Config
from .errors import BadRequest

log = logging.getLogger(__name__)

SECRET_PARAMS = frozenset({"grant"})  # path parameters that are credentials
SECRET_SETTINGS = ("jwt_secret", "webhook_secret", "turn_secret")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redacted_settings(config: Config) -> dict[str, Any]:
    """The settings in force, secrets replaced by whether they are set."""
    out = config.model_dump(mode="json")
    for name in SECRET_SETTINGS:
        out[name] = "***" if out.get(name) else ""
    out["redis_url"] = _redact_url(config.redis_url) if config.redis_url else ""
    out["database_url"] = _redact_url(config.database_url) if config.database_url else ""
    out["webhook_urls"] = [_redact_url(u) for u in config.webhook_urls]
    for server in out.get("ice_servers") or []:
        if server.get("credential"):
            server["credential"] = "***"
    return out


# -- the trail in the app -------------------------------------------------------------------


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    """Opened first and closed last, so every other context can record."""
    config = app[CONFIG]
    trail = AuditTrail(
        config.data_dir / "audit",
        app[NODE_ID],
        config.node_id or socket.gethostname(),
        retention_days=config.audit_retention_days,
    )
    await trail.open()
    app[AUDIT] = trail
    trail.put(
        "config.loaded",
        obj=trail.chain_name,
        result="ok",
        detail={"settings": redacted_settings(config), "pid": os.getpid()},
        raw=True,
    )
    yield
    await trail.close()


def hook_events(app: web.Application) -> None:
    """Mirror the case timeline's audited acts (replays, downloads) into the trail."""
    app[SERVICE].event_hooks.append(app[AUDIT].on_event)


# -- who, from where ---------------------------------------------------------------------


def address_of(request: web.Request) -> str:
    config: Config = request.app[CONFIG]
    return client_address(request, tuple(config.trusted_proxies))


def object_of(request: web.Request) -> str:
    """The route with its parameters, credentials left as their placeholder."""
    resource = request.match_info.route.resource
    if resource is None:
        return str(clip(request.path))
    template = resource.canonical
    for key, value in request.match_info.items():
        if key not in SECRET_PARAMS:
            template = template.replace("{" + key + "}", value)
    return str(clip(template))


def claimed(token: str | None) -> dict[str, Any]:
    """What a refused token claims to be (unverified: a hint for the auditor only)."""
    if not token:
        return {}
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except Exception:
        return {"claimed": "an unreadable token"}
    if not isinstance(claims, dict):
        return {}
    return {f"claimed_{k}": clip(str(claims[k])) for k in ("sub", "role", "dept") if k in claims}


def _error(response: web.StreamResponse | None) -> tuple[str | None, str | None]:
    body = getattr(response, "body", None)
    if not isinstance(body, bytes | bytearray) or len(body) > 65536:
        return None, None
    try:
        err = json.loads(body).get("error") or {}
        return clip(err.get("code")), clip(err.get("message"))
    except (ValueError, AttributeError):
        return None, None


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token") if request.path == "/ws" else None


async def _asked_sub(request: web.Request) -> Any:
    """The ``sub`` a demo sign-in asked for (the body is already read: aiohttp keeps it)."""
    try:
        body = json.loads(await request.read())
    except Exception:
        return None
    return clip(str(body.get("sub"))) if isinstance(body, dict) and "sub" in body else None


def connected(request: web.Request, who: Identity) -> None:
    """A socket opened with a verified token: a sign-in (``auth.connect``)."""
    trail = request.app.get(AUDIT)
    if trail is not None:
        address = address_of(request)
        trail.put("auth.connect", actor=actor_dict(who), address=address, obj="/ws", result="ok")


def refused(request: web.Request, code: str, message: str) -> None:
    """A token refused other than by an HTTP 401 (a socket's first message, if the token
    moves there): the same ``auth.token.refused`` entry the middleware writes."""
    trail = request.app.get(AUDIT)
    if trail is not None:
        trail.put(
            "auth.token.refused",
            address=address_of(request),
            obj=object_of(request),
            result="refused",
            code=code,
            detail={"message": clip(message)},
        )


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    trail = request.app.get(AUDIT)
    if trail is None:
        return await handler(request)
    scope: dict[str, Any] = {"address": address_of(request)}
    reset = CURRENT.set(scope)
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        CURRENT.reset(reset)
        try:
            if request.method == "POST" and request.path == "/api/auth/demo-login":
                scope["asked"] = await _asked_sub(request)
            _after(trail, request, scope, status, response)
        except Exception:  # auditing must never fail a request; the log says why
            log.exception("audit: could not record a request")


def _after(
    trail: AuditTrail,
    request: web.Request,
    scope: dict[str, Any],
    status: int,
    response: web.StreamResponse | None,
) -> None:
    who: Identity | None = request.get(WHO)
    address = scope["address"]
    obj = object_of(request)
    route_ = {"method": request.method, "route": obj, "status": status}
    code, message = _error(response) if status >= 400 else (None, None)
    if obj == "/api/auth/demo-login" and request.method == "POST":
        actor = actor_dict(who) if status == 200 and who is not None else None
        result = "ok" if status == 200 else "refused"
        trail.put(
            "auth.signin.demo",
            actor=actor,
            address=address,
            obj=obj,
            result=result,
            code=code,
            detail={"asked": scope.get("asked"), "status": status, "message": message},
        )
        return
    if status == 401:
        action = "auth.grant.refused" if "{grant}" in obj else "auth.token.refused"
        detail = {**route_, "message": message, **claimed(_bearer(request))}
        trail.put(action, address=address, obj=obj, result="refused", code=code, detail=detail)
        return
    if status in (403, 429):
        detail = {**route_, "message": message}
        trail.put(
            "request.refused",
            actor=actor_dict(who),
            address=address,
            obj=obj,
            result="refused",
            code=code,
            detail=detail,
        )
        return
    if who is None or status == 101:  # a socket: its sign-in is ``auth.connect``
        return
    token = _bearer(request)
    if token and trail.first_use(token):
        detail = {"expires_at": who.exp}
        trail.put(
            "auth.signin.token", actor=actor_dict(who), address=address, obj=obj, detail=detail
        )
    if policy.is_audited(who) and not scope.get("audited"):
        trail.put(
            f"{who.role}.request",
            actor=actor_dict(who),
            address=address,
            obj=obj,
            result="ok" if status < 400 else "failed",
            code=code,
            detail=route_,
        )


# -- reading the trail ----------------------------------------------------------------------


class AuditEntry(BaseModel):
    seq: int
    ts: str
    t: float
    node: str
    actor: dict[str, Any] | None = None
    address: str | None = None
    action: str
    object: str | None = None
    result: str
    code: str | None = None
    detail: dict[str, Any] | None = None
    prev: str
    hash: str


class AuditPage(BaseModel):
    chain: str  # the chain read (a node's directory under <data_dir>/audit)
    chains: list[str]  # every chain in this data dir
    entries: list[AuditEntry]  # newest first
    next_cursor: str | None = None  # pass as ``cursor`` for the next (older) page


def read_page(
    directory: Path,
    *,
    since: float | None,
    until: float | None,
    action: str | None,
    actor: str | None,
    limit: int,
    cursor: int | None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first, entries with ``seq`` < ``cursor``. Blocking I/O."""
    out: list[dict[str, Any]] = []
    prefix = action[:-1] if action and action.endswith("*") else None
    for path in reversed(day_files(directory)):
        if since is not None and path.name[:10] < day_of(since):
            break
        for line in reversed(path.read_bytes().splitlines()):
            try:
                e = json.loads(line)
                seq, t = int(e["seq"]), float(e["t"])
            except (ValueError, KeyError, TypeError):
                continue  # torn or mangled: verify --audit says where
            if cursor is not None and seq >= cursor:
                continue
            if (since is not None and t < since) or (until is not None and t > until):
                continue
            name = str(e.get("action"))
            if action and not (name == action or (prefix and name.startswith(prefix))):
                continue
            if actor and (e.get("actor") or {}).get("sub") != actor:
                continue
            if len(out) == limit:
                return out, int(out[-1]["seq"])
            out.append(e)
    return out, None


@route(
    "GET",
    "/api/audit",
    "Read the audit trail, newest first",
    policy.AUDITORS,
    response=AuditPage,
    tag="audit",
    query={
        "since": "epoch seconds",
        "until": "epoch seconds",
        "action": "an action, or a prefix ending in * (auth.*)",
        "actor": "an actor's sub",
        "node": "a chain (default: this node's)",
        "limit": "1..page_max (default page_default)",
        "cursor": "next_cursor of the previous page",
    },
)
async def read_audit(ctx: Ctx) -> Any:
    who = ctx.identity
    policy.check_unscoped(who, "the audit trail")
    app, q = ctx.request.app, ctx.request.query
    config, trail = app[CONFIG], app[AUDIT]
    try:
        since = float(q["since"]) if "since" in q else None
        until = float(q["until"]) if "until" in q else None
    except ValueError:
        raise BadRequest("invalid_query", "since/until are numbers") from None
    # The same pages as every other list: limit checked, the cursor opaque.
    limit = paging.limit_of(q.get("limit"), config.page_default, config.page_max)
    position = paging.decode(paging.AUDIT, q.get("cursor"), {"q": int})
    cursor = position["q"] if position is not None else None
    chains = sorted(p.name for p in trail.root.iterdir() if p.is_dir())
    chain = q.get("node") or trail.chain_name
    if chain not in chains:
        raise BadRequest("invalid_query", f"no audit chain {chain[:80]!r}; there are {chains}")
    filters = {"action": q.get("action") or None, "actor": q.get("actor") or None}
    entries, next_cursor = await asyncio.to_thread(
        read_page,
        trail.root / chain,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
        **filters,
    )
    scope = CURRENT.get()
    if scope is not None:
        scope["audited"] = True
    asked = ("since", "until", "action", "actor", "node", "limit", "cursor")
    query = {k: q[k] for k in asked if k in q}
    await trail.record(
        "audit.read",
        actor=actor_dict(who),
        address=address_of(ctx.request),
        obj=chain,
        result="ok",
        detail={"query": query, "entries": len(entries)},
    )
    return AuditPage(
        chain=chain,
        chains=chains,
        entries=[AuditEntry.model_validate(e) for e in entries],
        next_cursor=None if next_cursor is None else paging.encode(paging.AUDIT, q=next_cursor),
    )
