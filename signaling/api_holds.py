"""HTTP routes of legal hold (registered on import): read, put and release a case's hold
(``signaling/legal_hold.py``; supervisors and admins, audited, in the case timeline)."""

from __future__ import annotations

from typing import Any

from . import policy
from .api import Ctx, route
from .legal_hold import Hold, HoldBody, hold_of, put_hold, release_hold


@route(
    "GET",
    "/api/cases/{case_id}/hold",
    "Read a case's legal hold (held or not; who, why, when)",
    policy.HOLDERS,
    response=Hold,
    tag="cases",
    errors=("404",),
)
async def read_hold(ctx: Ctx) -> Any:
    return await hold_of(ctx.service, ctx.identity, ctx.path("case_id"))


@route(
    "POST",
    "/api/cases/{case_id}/hold",
    "Put a case on legal hold: nothing of it is purged until released (audited)",
    policy.HOLDERS,
    body=HoldBody,
    response=Hold,
    tag="cases",
    errors=("404", "409"),
)
async def hold(ctx: Ctx) -> Any:
    return await put_hold(ctx.service, ctx.identity, ctx.path("case_id"), ctx.body.reason)


@route(
    "DELETE",
    "/api/cases/{case_id}/hold",
    "Release a case's legal hold: its retention applies again (audited)",
    policy.HOLDERS,
    response=Hold,
    tag="cases",
    errors=("404", "409"),
)
async def release(ctx: Ctx) -> Any:
    return await release_hold(ctx.service, ctx.identity, ctx.path("case_id"))
