"""The admin's routes for the department directory: the whole of it as this node holds
it (every role, not only the reviewers one may invite: ``GET /api/directory``), and its
reload from ``directory_file`` without a restart (signaling/directory_reload.py), which
reaches every node. Registered into ``api.ROUTES`` when imported (app.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from . import policy
from .api import Ctx, route
from .appkeys import DIRECTORY
from .audit import actor_dict
from .config import ConfigError
from .directory_reload import RELOADER
from .errors import Unavailable, Unprocessable


class DirectoryState(BaseModel):
    node: str  # the node that answered
    file: str | None  # directory_file; null: the packaged demo directory
    digest: str  # a fingerprint of the content: equal on nodes that loaded the same
    loaded_at: float  # wall clock
    via: str  # what loaded it last: start, SIGHUP, an admin, another node
    departments: int
    users: int


class DirectoryView(BaseModel):
    state: DirectoryState
    departments: list[dict[str, Any]]
    users: list[dict[str, Any]]


class DirectoryReloaded(DirectoryState):
    # Ids added, removed and changed, for departments and for users.
    changes: dict[str, dict[str, list[str]]]


def _reloader(ctx: Ctx) -> Any:
    reloader = ctx.request.app.get(RELOADER)
    if reloader is None:
        raise Unavailable("directory_unavailable", "the directory is not loaded on this node")
    return reloader


@route(
    "GET",
    "/api/admin/directory",
    "Show the department directory this node holds",
    policy.DIRECTORY_ADMINS,
    response=DirectoryView,
    tag="directory",
)
async def directory_view(ctx: Ctx) -> Any:
    d = ctx.request.app[DIRECTORY]
    return DirectoryView(
        state=DirectoryState.model_validate(_reloader(ctx).status()),
        departments=[x.model_dump() for x in d.departments],
        users=[u.model_dump() for u in d.users],
    )


@route(
    "POST",
    "/api/admin/directory/reload",
    "Reload the directory from directory_file, on every node",
    policy.DIRECTORY_ADMINS,
    response=DirectoryReloaded,
    tag="directory",
    errors=("422",),
)
async def directory_reload(ctx: Ctx) -> Any:
    reloader = _reloader(ctx)
    try:
        done = await reloader.reload(f"admin {ctx.identity.sub}", actor=actor_dict(ctx.identity))
    except ConfigError as exc:
        # The file is wrong, not the request: the node keeps the directory it had.
        named = f"directory_file: {reloader.path or 'packaged directory'}: "
        problems = str(exc).removeprefix(named).split("; ")
        raise Unprocessable(
            "directory_invalid",
            f"the directory file was not loaded (nothing changed): {exc}",
            [{"problem": p} for p in problems],
        ) from None
    return DirectoryReloaded.model_validate(done)
