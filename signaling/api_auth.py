"""The node's public routes (health, demo sign-in) and who the caller is: the identity
and the department directory. Registered into ``api.ROUTES`` when imported (app.py)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aiohttp import web

from . import __version__, health, policy, storage
from .api import Ctx, bearer_token, require_signing, route
from .appkeys import CONFIG, DIRECTORY, MEDIA, NODE_ID, STORE, TOKENS, WHO
from .auth import AuthError
from .config import is_loopback
from .errors import NotFound
from .models import ArchiveCheck, DemoLoginBody, Health, TokenResponse
from .socketcaps import signin_limited

# -- public ---------------------------------------------------------------------------


@route("GET", "/healthz", "Check the node", None, response=Health, tag="system", errors=("503",))
async def healthz(ctx: Ctx) -> Any:
    app = ctx.request.app
    config = app[CONFIG]
    store = app[STORE]
    checks = await health.checks(store, config.data_dir, config.disk_min_free_bytes, app.get(MEDIA))
    room = await storage.space(
        config.data_dir / "archive", config.archive_quota_bytes, config.disk_min_free_bytes
    )
    checks.archive = ArchiveCheck.model_validate(room.as_dict())  # reported; no 503 (#18)
    ok = checks.store.ok and checks.data_dir.ok and checks.media.ok
    body = Health(
        status="ok" if ok else "degraded",
        node=app[NODE_ID],
        state=store.kind,
        version=__version__,
        checks=checks,
    )
    if (token := bearer_token(ctx.request)) is not None:
        # Public for probes; an admin's token adds the process's figures (a bad or
        # lesser token: the public answer, as without one).
        with contextlib.suppress(AuthError):
            who = app[TOKENS].verify(token)
            if policy.may_read_process(who):
                ctx.request[WHO] = who  # the audit trail's actor
                body.process = health.process_figures()
    return web.json_response(body.model_dump(), status=200 if ok else 503)


@route("GET", "/api/auth/demo-users", "List the demo users", None, tag="auth")
async def demo_users(ctx: Ctx) -> Any:
    _demo_only(ctx)
    directory = ctx.request.app[DIRECTORY]
    config = ctx.request.app[CONFIG]
    return {
        "users": [u.model_dump() for u in directory.users],
        "departments": [d.model_dump() for d in directory.departments],
        # Reachable beyond this machine: the sign-in page says so, loudly.
        "exposed": not is_loopback(config.host),
    }


@route(
    "POST",
    "/api/auth/demo-login",
    "Sign in as a demo user",
    None,
    body=DemoLoginBody,
    response=TokenResponse,
    tag="auth",
    errors=("404", "429", "503"),
)
async def demo_login(ctx: Ctx) -> Any:
    _demo_only(ctx)
    if (limited := signin_limited(ctx.request)) is not None:
        return limited  # 429 rate_limited: signin_per_minute from this address
    require_signing(ctx)
    app = ctx.request.app
    user = app[DIRECTORY].user(ctx.body.sub)
    if user is None:
        raise NotFound("user_not_found", f"no demo user {ctx.body.sub}")
    tokens = app[TOKENS]
    level = app[DIRECTORY].level_of(user.dept)
    token = tokens.issue(sub=user.sub, role=user.role, name=user.name, dept=user.dept, level=level)
    who = ctx.request[WHO] = tokens.verify(token)  # the audit trail's actor
    return TokenResponse(token=token, expires_at=who.exp or 0, identity=who.as_dict())


@route("GET", "/ui/departments.json", "List departments for the pages", None, tag="system")
async def departments(ctx: Ctx) -> Any:
    # Department names for display on every screen (the applicant's too): public
    # information, unlike the directory's people (GET /api/directory, staff only).
    app = ctx.request.app
    return web.json_response(
        {
            "departments": [d.model_dump() for d in app[DIRECTORY].departments],
            # Whether /login exists: pages link to it only then.
            "demo": app[CONFIG].demo_on,
        },
        headers={"Cache-Control": "no-cache"},
        dumps=lambda obj: json.dumps(obj, ensure_ascii=False),
    )


def _demo_only(ctx: Ctx) -> None:
    if not ctx.request.app[CONFIG].demo_on:
        raise NotFound("demo_disabled", "the demo directory is turned off on this server")


# -- identity and directory -----------------------------------------------------------


@route("GET", "/api/me", "Tell who the token is for", policy.EVERYONE, tag="auth")
async def me(ctx: Ctx) -> Any:
    return {"identity": ctx.identity.as_dict()}


@route(
    "GET",
    "/api/directory",
    "List departments and reviewers",
    policy.DIRECTORY_READERS,
    tag="directory",
)
async def directory(ctx: Ctx) -> Any:
    d = ctx.request.app[DIRECTORY]
    return {
        "departments": [x.model_dump() for x in d.departments],
        "reviewers": [
            {"sub": u.sub, "name": u.name, "dept": u.dept, "level": d.level_of(u.dept)}
            for u in d.users
            if policy.may_be_invited(u.role)
        ],
    }
