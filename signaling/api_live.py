"""HTTP route of the supervisors' live overview (registered on import):
``GET /api/live``, the sessions in progress now (``live_overview.py``)."""

from __future__ import annotations

from typing import Any

from . import paging, policy
from .api import Ctx, page, route
from .appkeys import DIRECTORY, MEDIA
from .live_overview import POLL_S, LiveOverview, LiveView
from .observing import OBSERVATIONS

LIVE_DEFAULT = 50  # sessions a page shows unless asked (each costs a few store reads)


@route(
    "GET",
    "/api/live",
    "The sessions in progress now: who is in, media health, observers; invitations "
    f"ringing now. Poll it (every {POLL_S:g} s, the answer's poll_s)",
    policy.LIVE_WATCHERS,
    response=LiveOverview,
    tag="supervision",
    query=paging.query_doc(LIVE_DEFAULT, paging.PAGE_MAX),
)
async def live_overview(ctx: Ctx) -> Any:
    app = ctx.request.app
    limit, cursor = page(ctx)
    if "limit" not in ctx.request.query:
        limit = min(limit, LIVE_DEFAULT)
    view = LiveView(ctx.service, app[MEDIA], app[OBSERVATIONS], app[DIRECTORY])
    return await view.overview(ctx.identity, limit, cursor)
