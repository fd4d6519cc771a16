"""The HTTP API: one route table drives both the aiohttp routes and the OpenAPI document.

Each route names the roles that may call it (a role set of ``policy``); the wrapper
authenticates (401), checks the role (403), validates the body (400) and turns
``ServiceError`` into its status. Finer rules (scope, invitations) live in ``policy``
too and are applied by the service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import segno
from aiohttp import web
from pydantic import BaseModel, ValidationError

from . import paging, policy, protocol, session_start
from .appkeys import CONFIG, HISTORY, MEDIA, SERVICE, STORE, TOKENS, VIEWS_FROM_RECORD, WHO
from .auth import AuthError, Identity
from .errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ServiceError,
    Unavailable,
    UnsupportedMediaType,
)
from .live_views import LiveViews
from .models import (
    CASE_ID_PATTERN,
    ApplicantLink,
    ApplicantLinkBody,
    CaseView,
    CreatedSession,
    CreateInvitationBody,
    CreateSessionBody,
    DeclineBody,
    Invitation,
    InvitationList,
    Session,
    SessionList,
    SessionResponse,
)
from .record_views import RecordViews
from .shortlinks import ShortLinks, short_url
from .state import StoreUnavailable

log = logging.getLogger(__name__)


@dataclass
class Ctx:
    request: web.Request
    who: Identity | None
    body: Any

    @property
    def service(self) -> Any:
        return self.request.app[SERVICE]

    @property
    def record(self) -> RecordViews:
        """What happened, read from the record (SQL), not from the live store; from the
        store when this node's record is not every node's (``live_views``)."""
        app = self.request.app
        service = app[SERVICE]
        if not app[VIEWS_FROM_RECORD]:
            return LiveViews(app[HISTORY], service)
        return RecordViews(app[HISTORY], service.join_url, service.archive_dir)

    @property
    def identity(self) -> Identity:
        assert self.who is not None
        return self.who

    def path(self, name: str) -> str:
        value = self.request.match_info[name]
        # fullmatch: with re.match, ``$`` also matches before a trailing newline ("A\n").
        if name == "case_id" and not re.fullmatch(CASE_ID_PATTERN, value):
            raise BadRequest("invalid_case_id", f"{value[:80]!r} is not a case number")
        return value


Handler = Callable[[Ctx], Awaitable[Any]]


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    roles: frozenset[str] | None  # None: no token needed
    response: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    status: int = 200
    tag: str = "sessions"
    query: dict[str, str] = field(default_factory=dict)
    errors: tuple[str, ...] = ()  # statuses beyond those every route of its kind has
    upload: tuple[str, ...] = ()  # raw request body of these types (read by the handler)
    produces: tuple[str, ...] = ()  # a non-JSON response of these types
    no_content: str = ""  # when it may answer 204 instead: what that means


ROUTES: list[Route] = []


def route(method: str, path: str, summary: str, roles: frozenset[str] | None, **kw: Any) -> Any:
    def register(fn: Handler) -> Handler:
        ROUTES.append(Route(method, path, fn, summary, roles, **kw))
        return fn

    return register


def json_error(status: int, code: str, message: str, details: Any = None) -> web.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return web.json_response({"error": err}, status=status)


def _dump(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return result


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def _wrap(r: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            # No id or filter holds U+0000, and PostgreSQL (the record) refuses it in a
            # query: the same answer on either database, before any query.
            if "\x00" in request.path:
                raise NotFound("not_found", "nothing is named with a NUL character (%00)")
            if "\x00" in request.query_string:
                raise BadRequest("invalid_query", "a query parameter holds a NUL (%00)")
            who = None
            if r.roles is not None:
                try:
                    who = request[WHO] = request.app[TOKENS].verify(bearer_token(request))
                except AuthError as exc:
                    return json_error(401, exc.code, exc.message)
                if who.role not in r.roles:
                    raise Forbidden(
                        "forbidden", f"a {who.role} may not {r.summary[0].lower()}{r.summary[1:]}"
                    )
            body = None
            if r.body is not None:
                body = await _read_body(request, r.body)
            result = await r.handler(Ctx(request, who, body))
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response(
                _dump(result), status=r.status, dumps=lambda o: json.dumps(o, ensure_ascii=False)
            )
        except ServiceError as exc:
            return web.json_response(exc.body(), status=exc.status)
        except StoreUnavailable as exc:
            return store_unavailable(exc)

    return handler


def store_unavailable(exc: StoreUnavailable) -> web.Response:
    """A store outage, on any route: 503 with a stable code, and a hint to retry."""
    log.warning("%s %s", exc.code, exc.message)
    response = json_error(exc.status, exc.code, exc.message)
    response.headers["Retry-After"] = "5"
    return response


# A JSON body must say so: "text/plain" and form types are what a foreign page may send
# cross-origin without a preflight. The +json suffix (RFC 6839) is JSON as well.
_JSON_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json")


def _check_json_type(request: web.Request) -> None:
    header = request.headers.get("Content-Type")
    if header is None:
        raise UnsupportedMediaType(
            "unsupported_media_type", "a request body needs Content-Type: application/json"
        )
    mime, _, params = header.partition(";")
    if not _JSON_TYPE.fullmatch(mime.strip().lower()):
        raise UnsupportedMediaType(
            "unsupported_media_type",
            f"the body must be application/json, not {mime.strip()[:60]!r}",
        )
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise UnsupportedMediaType(
                "unsupported_media_type", "JSON bodies are UTF-8 (RFC 8259): charset=utf-8"
            )


async def _read_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    raw = await request.read()
    if not raw.strip():
        # No body (or only whitespace) is an empty object whatever it is labelled: clients
        # POST without one where every field is optional (fetch without body, curl -X POST).
        data: Any = {}
    else:
        _check_json_type(request)
        try:
            data = protocol.loads(raw.decode("utf-8"))  # RFC 8259: UTF-8, no sniffing
        except (ValueError, RecursionError) as exc:
            # ValueError: not JSON, not UTF-8, NaN, a 5000-digit number, a lone surrogate;
            # RecursionError: nesting too deep for the decoder ("[[[[..."). Not our fault.
            raise BadRequest("bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("invalid_body", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(x) for x in e["loc"]) or "(body)", "problem": e["msg"]}
            for e in exc.errors()
        ]
        first = details[0]
        raise BadRequest("invalid_body", f"{first['field']}: {first['problem']}", details) from None


def require_signing(ctx: Ctx) -> None:
    if not ctx.request.app[TOKENS].can_sign:
        raise Unavailable(
            "signing_unavailable",
            "this server verifies tokens with a public key only; configure "
            "jwt_private_key_file to let it issue tokens",
        )


# -- cases and sessions ---------------------------------------------------------------


@route(
    "POST",
    "/api/cases/{case_id}/sessions",
    "Start a joint review for a case (and invite departments: ``invite``)",
    policy.STAFF,
    body=CreateSessionBody,
    response=CreatedSession,
    status=201,
    errors=("422", "507"),
)
async def create_session(ctx: Ctx) -> Any:
    recording = ctx.request.app[MEDIA].recording
    if recording is not None and recording.policy == "always" and policy.is_staff(ctx.identity):
        await recording.check_room()  # recorded from its first media: the disk must hold it
    session, invitations = await session_start.start_session(
        ctx.service, ctx.identity, ctx.path("case_id"), ctx.body
    )
    return CreatedSession(
        session_id=session.session_id,
        session=session,
        join_url=ctx.service.join_url(session.session_id),
        invitations=invitations,
    )


PAGE_DEFAULT, PAGE_MAX = paging.PAGE_DEFAULT, paging.PAGE_MAX  # for the route table


def page(ctx: Ctx) -> tuple[int, str | None]:
    """The page asked for: ``limit`` (``page_default``..``page_max``) and ``cursor``."""
    config = ctx.request.app[CONFIG]
    q = ctx.request.query
    return paging.limit_of(q.get("limit"), config.page_default, config.page_max), q.get("cursor")


@route(
    "GET",
    "/api/cases/{case_id}",
    "Read a case's sessions, invitations and events (first page)",
    policy.EVERYONE,
    response=CaseView,
    tag="cases",
    query={"limit": f"1..{PAGE_MAX} (default {PAGE_DEFAULT}): sessions and events each"},
)
async def get_case(ctx: Ctx) -> Any:
    limit, _ = page(ctx)
    return await ctx.record.case_view(ctx.identity, ctx.path("case_id"), limit)


@route(
    "GET",
    "/api/sessions",
    "List sessions, newest first",
    policy.READERS,
    response=SessionList,
    query={
        "dept": "only sessions this department was invited to",
        "window": "only sessions of this service window",
        "case": "only sessions of this case (none, not 404, for a case never seen)",
        "since": "epoch seconds (created at or after)",
        "until": "epoch seconds (created at or before)",
        **paging.query_doc(PAGE_DEFAULT, PAGE_MAX),
    },
)
async def list_sessions(ctx: Ctx) -> Any:
    q = ctx.request.query
    since, until = paging.period_of(q)
    limit, cursor = page(ctx)
    sessions, next_cursor = await ctx.record.list_sessions(
        ctx.identity,
        since,
        until,
        limit,
        cursor,
        dept=paging.filter_of(q, "dept"),
        window=paging.filter_of(q, "window"),
        case=paging.filter_of(q, "case"),
    )
    return SessionList(sessions=sessions, next_cursor=next_cursor)


async def readable_session(ctx: Ctx) -> tuple[Session, list[Invitation]]:
    """The session in the path (from the record), if the caller may read it; else the
    unknown session's 404 (an unreadable session is as an unknown one: policy)."""
    return await ctx.record.readable_session(ctx.identity, ctx.path("session_id"))


@route(
    "GET", "/api/sessions/{session_id}", "Read a session", policy.EVERYONE, response=SessionResponse
)
async def get_session(ctx: Ctx) -> Any:
    session, invitations = await readable_session(ctx)
    participants = await ctx.record.participants(session.session_id)
    return SessionResponse(session=session, invitations=invitations, participants=participants)


@route("POST", "/api/sessions/{session_id}/end", "End a session", policy.STAFF, response=Session)
async def end_session(ctx: Ctx) -> Any:
    return await ctx.service.end_session(ctx.identity, ctx.path("session_id"))


@route(
    "POST",
    "/api/sessions/{session_id}/invitations",
    "Invite a department or reviewer",
    policy.STAFF,
    body=CreateInvitationBody,
    response=Invitation,
    status=201,
    tag="invitations",
    errors=("422",),
)
async def invite(ctx: Ctx) -> Any:
    return await ctx.service.invite(ctx.identity, ctx.path("session_id"), ctx.body)


@route(
    "GET",
    "/api/sessions/{session_id}/invitations",
    "List a session's invitations",
    policy.EVERYONE,
    response=InvitationList,
    tag="invitations",
)
async def session_invitations(ctx: Ctx) -> Any:
    _, invitations = await readable_session(ctx)
    return InvitationList(invitations=invitations)


@route(
    "POST",
    "/api/sessions/{session_id}/applicant-link",
    "Make an applicant join link",
    policy.STAFF,
    body=ApplicantLinkBody,
    response=ApplicantLink,
    status=201,
    tag="invitations",
    errors=("503",),
)
async def applicant_link(ctx: Ctx) -> Any:
    app = ctx.request.app
    sid = ctx.path("session_id")
    require_signing(ctx)
    claims = await ctx.service.applicant_token_claims(ctx.identity, sid, ctx.body.name)
    ttl = app[CONFIG].applicant_link_ttl_s
    token = app[TOKENS].issue(ttl=ttl, **claims)
    url = f"{ctx.service.join_url(sid)}?token={token}"
    expires_at = int(time.time()) + ttl
    # The QR code carries the short link (/j/<code>, shortlinks.py): sparse, scannable.
    code = await ShortLinks(app[STORE], ctx.service.clock).create(
        token=token, session_id=sid, case_id=claims["case"], expires_at=expires_at
    )
    short = short_url(ctx.service.base_url, code)
    # ~80 ms of drawing: off the event loop that forwards media and answers sockets.
    qr = await asyncio.to_thread(_qr_svg, short)
    return ApplicantLink(url=url, short_url=short, token=token, expires_at=expires_at, qr_svg=qr)


# -- a reviewer's invitations ---------------------------------------------------------


@route(
    "GET",
    "/api/invitations",
    "List my open invitations",
    policy.REVIEWERS,
    response=InvitationList,
    tag="invitations",
)
async def inbox(ctx: Ctx) -> Any:
    return InvitationList(invitations=await ctx.service.inbox(ctx.identity))


@route(
    "POST",
    "/api/invitations/{invitation_id}/accept",
    "Accept an invitation",
    policy.REVIEWERS,
    response=Invitation,
    tag="invitations",
)
async def accept(ctx: Ctx) -> Any:
    return await ctx.service.respond(ctx.identity, ctx.path("invitation_id"), True)


@route(
    "POST",
    "/api/invitations/{invitation_id}/decline",
    "Decline an invitation",
    policy.REVIEWERS,
    body=DeclineBody,
    response=Invitation,
    tag="invitations",
)
async def decline(ctx: Ctx) -> Any:
    return await ctx.service.respond(
        ctx.identity, ctx.path("invitation_id"), False, ctx.body.reason
    )


def _qr_svg(url: str) -> str:
    return str(segno.make(url, error="m").svg_inline(scale=4, border=2))


def add_routes(app: web.Application) -> None:
    for r in ROUTES:
        app.router.add_route(r.method, r.path, _wrap(r))


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, 413) in the API's JSON error shape; a store
    outage anywhere is a 503, and anything unexpected a JSON 500, never a text page."""
    try:
        return await handler(request)
    except StoreUnavailable as exc:
        return store_unavailable(exc)
    except ServiceError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPRequestEntityTooLarge as exc:
        return json_error(413, "payload_too_large", exc.text or "the body is too large")
    except web.HTTPNotFound:
        if request.path.startswith("/api/") or request.path == "/ws":
            return json_error(404, "not_found", f"no such endpoint: {request.path}")
        raise
    except web.HTTPMethodNotAllowed as exc:
        return json_error(405, "method_not_allowed", f"{exc.method} is not allowed here")
    except (web.HTTPException, ConnectionResetError):
        raise  # a response of its own (redirects, static files' 304/404); a client gone
    except Exception:
        if getattr(request.writer, "output_size", 0) > 0:
            raise  # a response is on its way already (a socket, a download): aiohttp's
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal_error", "the server failed on this request")
