"""HTTP route of the supervisors' live overview (registered on import):
``GET /api/live``, the sessions in progress now (``live_overview.py``)."""

from __future__ import annotations

import time
import weakref
from typing import Any

from aiohttp import web

from . import paging, policy
from .api import Ctx, page, route
from .appkeys import DIRECTORY, MEDIA
from .audit import CURRENT
from .live_overview import POLL_S, LiveOverview, LiveView
from .observing import OBSERVATIONS

LIVE_DEFAULT = 50  # sessions a page shows unless asked (each costs a few store reads)
# A supervisor's requests are all audited; a page polling every 2 s would write 1,800
# entries an hour. The first poll of each person in a minute is audited, not the rest.
AUDIT_EVERY_S = 60.0
_audited: weakref.WeakKeyDictionary[web.Application, dict[str, float]] = weakref.WeakKeyDictionary()


def _audit_once_a_minute(ctx: Ctx) -> None:
    seen = _audited.setdefault(ctx.request.app, {})
    now, sub = time.monotonic(), ctx.identity.sub
    if now - seen.get(sub, -AUDIT_EVERY_S) < AUDIT_EVERY_S:
        scope = CURRENT.get()
        if scope is not None:
            scope["audited"] = True  # (the middleware writes no entry for this one)
        return
    if len(seen) > 10_000:  # bounded: forget the oldest
        del seen[min(seen, key=seen.__getitem__)]
    seen[sub] = now


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
    overview = await view.overview(ctx.identity, limit, cursor)
    _audit_once_a_minute(ctx)
    return overview
