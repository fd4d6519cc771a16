"""The operator's routes for media placement: every media host (node and worker) with its
load, where this node's sessions run, and the drain that stops new sessions being placed
on this node (also SIGUSR1 / SIGUSR2, and ``jointreview drain``). Registered on import."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from . import policy
from .api import Ctx, route
from .appkeys import MEDIA
from .errors import Unavailable


class MediaHostView(BaseModel):
    host: str  # node/worker
    node: str
    worker: int
    cpu: float  # a fraction of one core, over the last seconds
    streams: int
    rooms: int
    draining: bool
    alive: bool
    seen_at: float  # its last heartbeat (wall clock)


class SessionPlacement(BaseModel):
    session_id: str
    node: str
    worker: int


class MediaPlacement(BaseModel):
    node: str  # the node that answered
    draining: bool
    hosts: list[MediaHostView]  # every live media host, of every node
    sessions: list[SessionPlacement]  # the sessions this node's workers host


class DrainBody(BaseModel):
    draining: bool = True  # false: take new sessions again
    # With draining: also move the sessions hosted here (their pages rebuild their media
    # connections on another node; the recording goes on after a gap).
    move: bool = False


class DrainState(BaseModel):
    node: str
    draining: bool
    moved: int = 0  # sessions asked to move (``move``)


def _media(ctx: Ctx) -> Any:
    media = ctx.request.app.get(MEDIA)
    if media is None:
        raise Unavailable("media_unavailable", "the media layer is not running")
    return media


@route(
    "GET",
    "/api/admin/media",
    "List media hosts and this node's session placement",
    policy.OPERATORS,
    response=MediaPlacement,
    tag="system",
)
async def media_placement(ctx: Ctx) -> Any:
    return MediaPlacement.model_validate(await _media(ctx).placement())


@route(
    "POST",
    "/api/admin/drain",
    "Drain this node (no new sessions) or end the drain",
    policy.OPERATORS,
    body=DrainBody,
    response=DrainState,
    tag="system",
)
async def drain(ctx: Ctx) -> Any:
    media = _media(ctx)
    media.set_draining(bool(ctx.body.draining))
    moved = await media.move_sessions() if ctx.body.draining and ctx.body.move else []
    return DrainState(node=media.node_id, draining=media.draining, moved=len(moved))
