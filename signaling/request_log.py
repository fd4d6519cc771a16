"""Per request and per event, for the node's log (``logs``): the middleware that gives
every request an id and names its client, and one ``info`` line per lifecycle step an
operator asks about (``lifecycle_hook``: session start and end, join and leave,
recording start, stop, failure and gap, case file sealed, export done or failed; ids
only, never names or tokens)."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from .clientaddr import client_address
from .logs import CLIENT, REQUEST_ID, new_id
from .models import Event

# A request id a proxy sent along (X-Request-Id) is kept when it looks like one.
REQUEST_ID_SHAPE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request id (the proxy's ``X-Request-Id`` when it looks like one) and the client's
    address for every line the request writes; the id is sent back in ``X-Request-Id``."""
    given = request.headers.get("X-Request-Id", "")
    rid = given if REQUEST_ID_SHAPE.match(given) else new_id("r-")
    request[REQUEST_KEY] = rid
    REQUEST_ID.set(rid)
    trusted = request.app.get(TRUSTED, ())
    CLIENT.set(client_address(request, trusted))
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = rid
        raise
    if not response.prepared:
        response.headers["X-Request-Id"] = rid
    return response


TRUSTED = web.AppKey("log_trusted_proxies", tuple)
REQUEST_KEY = web.RequestKey("request_id", str)  # the access log's (accesslog.py)

# -- one line per lifecycle step -------------------------------------------------------

lifecycle_log = logging.getLogger("jointreview.lifecycle")

# event type -> the line's words; what the data adds is named below
LIFECYCLE = {
    "session.created": "session started",
    "session.ended": "session ended",
    "participant.joined": "participant joined",
    "participant.rejoined": "participant rejoined",
    "participant.resumed": "participant resumed",
    "participant.disconnected": "participant disconnected",
    "participant.left": "participant left",
    "recording.started": "recording started",
    "recording.stopped": "recording stopped",
    "recording.failed": "recording failed",
    "recording.gap": "recording gap",
    "archive.sealed": "case file sealed",
    "export.ready": "export done",
    "export.failed": "export failed",
    "observation.started": "observation started",
    "observation.ended": "observation ended",
}
WARNINGS = {"recording.failed", "recording.gap", "export.failed"}
DETAILS = ("participant_id", "reason", "policy", "code", "files", "events", "observation_id")


async def lifecycle_hook(event: Event) -> None:
    """Event hook: the lifecycle line of an event (a no-op for the others)."""
    words = LIFECYCLE.get(event.type)
    if words is None:
        return
    data = event.data
    detail = " ".join(f"{k}={data[k]}" for k in DETAILS if data.get(k) not in (None, ""))
    role = event.actor.role if event.actor is not None else None
    if role and event.type.startswith("participant."):
        detail = f"{detail} role={role}".strip()
    level = logging.WARNING if event.type in WARNINGS else logging.INFO
    lifecycle_log.log(
        level,
        "%s%s",
        words,
        f": {detail}" if detail else "",
        extra={
            "event": event.type,
            "case_id": event.case_id,
            "session_id": event.session_id,
            "participant_id": data.get("participant_id"),
            "reason": data.get("reason"),
        },
    )
