"""HTTP routes of supervision (registered on import): the statistics of a period, the
exceptions page by page, and handling one (``signaling/supervision.py``)."""

from __future__ import annotations

import time
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, Field

from . import paging, policy
from .api import PAGE_DEFAULT, PAGE_MAX, Ctx, page, route
from .appkeys import CONFIG, VIEWS_FROM_RECORD
from .errors import BadRequest, NotFound, Unavailable
from .history.raising import KINDS
from .history.stats import Filter
from .models import _Body
from .supervision import NOTE_MAX, Supervision

SUPERVISION = web.AppKey("supervision", Supervision)
DAY = 86400.0
DEFAULT_DAYS = 30  # the period when neither since nor until is given
MAX_DAYS = 366  # a request's period at most (a year, leap day included)
STATUSES = ("open", "handled")


class Percentiles(BaseModel):
    duration_s_p50: float | None = None
    duration_s_p90: float | None = None


class SessionFigures(Percentiles):
    total: int
    ended: int
    broken_off: int


class InvitationFigures(BaseModel):
    total: int
    accepted: int
    declined: int
    unanswered: int
    cancelled: int


class OpinionCounts(BaseModel):
    approve: int
    materials_missing: int
    refer: int
    note: int


class DepartmentFigures(BaseModel):
    dept: str
    name: str
    level: str | None
    invited: int
    accepted: int
    declined: int
    unanswered: int
    answer_s_p50: float | None
    answer_s_p90: float | None
    opinions: OpinionCounts


class DayFigures(BaseModel):
    date: str
    sessions: int
    invitations: int
    accepted: int
    unanswered: int


class WindowFigures(Percentiles):
    window: str | None
    sessions: int
    ended: int
    broken_off: int


class MatterFigures(BaseModel):
    matter: str | None
    sessions: int
    ended: int
    broken_off: int


class Period(BaseModel):
    since: float
    until: float
    timezone: str


class Statistics(BaseModel):
    """A period's figures (``since ≤ t < until``); percentiles interpolated, exact."""

    period: Period
    sessions: SessionFigures
    invitations: InvitationFigures
    departments: list[DepartmentFigures]
    by_day: list[DayFigures]
    windows: list[WindowFigures]
    matters: list[MatterFigures]


class SupervisionException(BaseModel):
    exception_id: str
    kind: str
    case_id: str
    session_id: str
    dept: str | None
    at: float
    offset_s: float | None  # seconds into the session (the replay's moment)
    detail: dict[str, Any]
    status: Literal["open", "handled"]
    handled_by: dict[str, Any] | None
    handled_at: float | None
    note: str | None


class ExceptionPage(BaseModel):
    exceptions: list[SupervisionException]
    next_cursor: str | None = None


class HandleBody(_Body):
    note: str = Field(min_length=1, max_length=NOTE_MAX)


def _supervision(ctx: Ctx, what: str) -> Supervision:
    policy.can_supervise(ctx.identity, what)
    app = ctx.request.app
    if not app[VIEWS_FROM_RECORD]:
        raise Unavailable(
            "record_not_shared",
            "each node keeps its own record: set database_url (PostgreSQL) on every node",
        )
    return app[SUPERVISION]


def _period(ctx: Ctx) -> tuple[float, float]:
    since, until = paging.period_of(ctx.request.query)
    if until is None:
        until = since + DEFAULT_DAYS * DAY if since is not None else time.time()
    if since is None:
        since = until - DEFAULT_DAYS * DAY
    if until <= since:
        raise BadRequest("invalid_query", "until must be after since")
    if until - since > MAX_DAYS * DAY:
        raise BadRequest("invalid_query", f"a period is at most {MAX_DAYS} days")
    return since, until


@route(
    "GET",
    "/api/stats",
    "Read the statistics of a period: sessions, invitations, departments, days",
    policy.SUPERVISORS,
    response=Statistics,
    tag="supervision",
    query={
        "since": f"epoch seconds (from; default: {DEFAULT_DAYS} days before until)",
        "until": f"epoch seconds (before; default: now). At most {MAX_DAYS} days",
        "dept": "only this department's invitations, opinions and invited sessions",
        "window": "only the sessions of this window (and their invitations, opinions)",
    },
)
async def statistics(ctx: Ctx) -> Any:
    supervision = _supervision(ctx, "statistics")
    since, until = _period(ctx)
    q = ctx.request.query
    f = Filter(since, until, paging.filter_of(q, "dept"), paging.filter_of(q, "window"))
    tz = ZoneInfo(ctx.request.app[CONFIG].stats_timezone)
    return Statistics.model_validate(await supervision.statistics(f, tz))


@route(
    "GET",
    "/api/exceptions",
    "List exceptions, newest first",
    policy.SUPERVISORS,
    response=ExceptionPage,
    tag="supervision",
    query={
        "since": "epoch seconds (at or after)",
        "until": "epoch seconds (at or before)",
        "kind": " | ".join(KINDS),
        "status": " | ".join(STATUSES),
        "dept": "only this department's",
        **paging.query_doc(PAGE_DEFAULT, PAGE_MAX),
    },
)
async def exceptions(ctx: Ctx) -> Any:
    supervision = _supervision(ctx, "exceptions")
    q = ctx.request.query
    since, until = paging.period_of(q)
    kind, status = paging.filter_of(q, "kind"), paging.filter_of(q, "status")
    if kind is not None and kind not in KINDS:
        raise BadRequest("invalid_query", f"kind is one of {', '.join(KINDS)}")
    if status is not None and status not in STATUSES:
        raise BadRequest("invalid_query", "status is open or handled")
    limit, cursor = page(ctx)
    rows, nxt = await supervision.stats.exceptions(
        since, until, kind, status, paging.filter_of(q, "dept"), cursor, limit
    )
    return ExceptionPage.model_validate({"exceptions": rows, "next_cursor": nxt})


@route(
    "GET",
    "/api/exceptions/{exception_id}",
    "Read one exception",
    policy.SUPERVISORS,
    response=SupervisionException,
    tag="supervision",
)
async def exception(ctx: Ctx) -> Any:
    supervision = _supervision(ctx, "exceptions")
    exception_id = ctx.request.match_info["exception_id"]
    row = await supervision.stats.exception(exception_id) if len(exception_id) <= 64 else None
    if row is None:
        raise NotFound("exception_not_found", f"no exception {exception_id}")
    return SupervisionException.model_validate(row)


@route(
    "POST",
    "/api/exceptions/{exception_id}/handle",
    "Mark an exception handled, with a note (audited, in the case timeline)",
    policy.SUPERVISORS,
    body=HandleBody,
    response=SupervisionException,
    tag="supervision",
    errors=("404", "409"),
)
async def handle(ctx: Ctx) -> Any:
    supervision = _supervision(ctx, "exceptions")
    exception_id = ctx.request.match_info["exception_id"]
    if len(exception_id) > 64:
        raise NotFound("exception_not_found", f"no exception {exception_id[:64]}")
    row = await supervision.handle(ctx.identity, exception_id, ctx.body.note)
    return SupervisionException.model_validate(row)
