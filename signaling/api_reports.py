"""HTTP routes of the supervisors' reports over the record (registered on import):
invitations by department and status over a period, with their answer times."""

from __future__ import annotations

from typing import Any, get_args

from . import paging, policy
from .api import PAGE_DEFAULT, PAGE_MAX, Ctx, page, route
from .errors import BadRequest
from .models import InvitationPage, InvitationStatus

STATUSES = get_args(InvitationStatus)


@route(
    "GET",
    "/api/reports/invitations",
    "Report invitations with their answer times, newest first",
    policy.REPORTERS,
    response=InvitationPage,
    tag="reports",
    query={
        "dept": "only this department's invitations",
        "status": " | ".join(STATUSES),
        "since": "epoch seconds (created at or after)",
        "until": "epoch seconds (created at or before)",
        **paging.query_doc(PAGE_DEFAULT, PAGE_MAX),
    },
)
async def invitation_report(ctx: Ctx) -> Any:
    q = ctx.request.query
    status = paging.filter_of(q, "status")
    if status is not None and status not in STATUSES:
        raise BadRequest("invalid_query", f"status is one of {', '.join(STATUSES)}")
    since, until = paging.period_of(q)
    limit, cursor = page(ctx)
    invitations, next_cursor = await ctx.record.invitation_report(
        ctx.identity, paging.filter_of(q, "dept"), status, since, until, limit, cursor
    )
    return InvitationPage(invitations=invitations, next_cursor=next_cursor)
