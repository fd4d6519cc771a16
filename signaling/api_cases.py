"""HTTP routes that walk a case a page at a time (registered on import): its timeline
and its sessions, each only of the sessions the caller may read (``policy``)."""

from __future__ import annotations

from typing import Any

from . import paging, policy
from .api import PAGE_DEFAULT, PAGE_MAX, Ctx, page, route
from .models import CaseSessionPage, EventPage


@route(
    "GET",
    "/api/cases/{case_id}/events",
    "Read a case's timeline, a page at a time",
    policy.EVERYONE,
    response=EventPage,
    tag="cases",
    query={
        **paging.query_doc(PAGE_DEFAULT, PAGE_MAX),
        "session": "only this session's events",
    },
)
async def case_events(ctx: Ctx) -> Any:
    limit, cursor = page(ctx)
    case_id = ctx.path("case_id")
    events, next_cursor = await ctx.record.case_events(
        ctx.identity, case_id, limit, cursor, ctx.request.query.get("session") or None
    )
    return EventPage(case_id=case_id, events=events, next_cursor=next_cursor)


@route(
    "GET",
    "/api/cases/{case_id}/sessions",
    "List a case's sessions with their invitations, a page at a time",
    policy.EVERYONE,
    response=CaseSessionPage,
    tag="cases",
    query=paging.query_doc(PAGE_DEFAULT, PAGE_MAX),
)
async def case_sessions(ctx: Ctx) -> Any:
    limit, cursor = page(ctx)
    case_id = ctx.path("case_id")
    sessions, invitations, next_cursor = await ctx.record.case_sessions(
        ctx.identity, case_id, limit, cursor
    )
    return CaseSessionPage(
        case_id=case_id, sessions=sessions, invitations=invitations, next_cursor=next_cursor
    )
