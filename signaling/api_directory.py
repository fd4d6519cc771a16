"""The admin's routes for the department directory: what this node holds (every role,
not only the reviewers one may invite: ``GET /api/directory``), its users a page at a
time (sorted by ``sub``; ``limit``, ``cursor`` as every list that grows, and a search),
and its reload from ``directory_file`` without a restart
(signaling/directory_reload.py), which reaches every node. Registered into
``api.ROUTES`` when imported (app.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from . import paging, policy
from .api import PAGE_DEFAULT, PAGE_MAX, Ctx, page, route
from .appkeys import DIRECTORY
from .audit import actor_dict
from .config import ConfigError
from .directory import DirectoryUser
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
    state: DirectoryState  # its counts: the whole directory's
    departments: list[dict[str, Any]]  # all of them (tens to hundreds; the users name them)
    users: list[dict[str, Any]]  # one page, by sub
    matched: int  # the users the search matches, all pages
    next_cursor: str | None = None


USERS = "du"  # the cursor's kind: the directory's users, by sub


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
    "Show the department directory this node holds (its users a page at a time)",
    policy.DIRECTORY_ADMINS,
    response=DirectoryView,
    tag="directory",
    query={
        "q": "users whose sub, name, department (id or name) or window holds this text",
        "dept": "users of this department",
        "role": "users of this role",
        **paging.query_doc(PAGE_DEFAULT, PAGE_MAX),
    },
)
async def directory_view(ctx: Ctx) -> Any:
    d = ctx.request.app[DIRECTORY]
    limit, cursor = page(ctx)
    at = paging.decode(USERS, cursor, {"i": str})
    q = ctx.request.query
    text = (paging.filter_of(q, "q") or "").casefold()
    dept, role = paging.filter_of(q, "dept"), paging.filter_of(q, "role")
    names = {x.id: f"{x.name} {x.name_en or ''}" for x in d.departments}

    def match(u: DirectoryUser) -> bool:
        if (dept and u.dept != dept) or (role and u.role != role):
            return False
        hay = " ".join((u.sub, u.name, u.dept or "", names.get(u.dept or "", ""), u.window or ""))
        return not text or text in hay.casefold()

    found = sorted((u for u in d.users if match(u)), key=lambda u: u.sub)
    after = [u for u in found if at is None or u.sub > at["i"]]
    users = after[:limit]
    more = len(after) > limit
    return DirectoryView(
        state=DirectoryState.model_validate(_reloader(ctx).status()),
        departments=[x.model_dump() for x in d.departments],
        users=[u.model_dump() for u in users],
        matched=len(found),
        next_cursor=paging.encode(USERS, i=users[-1].sub) if more else None,
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
