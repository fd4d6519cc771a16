"""A case's process tracking (流程跟踪, registered on import): ``GET
/api/cases/{case_id}/track``, every session of the case in order, each with its
invitations and their answers (with times), its opinions, its stills, its exceptions and
its seal, a page of sessions at a time.

All of it is read from the record (``signaling.history``), by its indexes: the case's
sessions (``ix_sessions_case_id_created_at_session_id``), then for the page's sessions
their invitations, opinions and stills (each by ``session_id``) and the events that are
exceptions (``ix_events_session_id_seq``, kept by type): never a case log read whole.
Only the sessions the caller may read are listed (``policy.readable_sessions``), as for
the case view.

Exceptions are the events that say something went wrong: a recording that failed or had
a gap, a case file sealed without its opinion sheet, and any ``exception.*`` event (the
supervisors' exceptions, filed by their own module). Declined and unanswered
invitations are in the invitations, with their times.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from . import paging, policy
from .api import PAGE_DEFAULT, PAGE_MAX, Ctx, page, route
from .appkeys import HISTORY
from .history import schema
from .history.repo import History
from .models import Event, Invitation, Opinion, Session, Snapshot
from .opinion_sheet import FAILED as SHEET_FAILED

EXCEPTION_TYPES = ("recording.failed", "recording.gap", "recording.recovered", SHEET_FAILED)
EXCEPTION_PREFIX = "exception."


class TrackedSession(BaseModel):
    session: Session
    end_reason: str | None = None  # "idle": nobody ended it, the server did
    sealed_at: float | None = None  # when its case file was sealed (None: not yet)
    chain_head: str | None = None  # the sealed timeline's hash chain head
    manifest_sha256: str | None = None
    invitations: list[Invitation]
    opinions: list[Opinion]
    snapshots: list[Snapshot]
    exceptions: list[Event]
    sheet_url: str  # the opinion sheet (a draft before sealing)
    # The sealed case file holds it (made at every sealing since sheets exist; False: not
    # sealed yet, or sealed without one: opinion_sheet.failed is in its exceptions).
    sheet_filed: bool = False


class CaseTrack(BaseModel):
    case_id: str
    sessions: list[TrackedSession]  # oldest first
    next_cursor: str | None = None


async def exception_events(history: History, session_ids: Sequence[str]) -> list[Event]:
    """The exceptions of these sessions, in log order (by the session index)."""
    if not session_ids:
        return []
    t = schema.events
    kinds = sa.or_(t.c.type.in_(EXCEPTION_TYPES), t.c.type.startswith(EXCEPTION_PREFIX))
    stmt = sa.select(t).where(t.c.session_id.in_(sorted(session_ids)), kinds)
    async with history.engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(stmt.order_by(t.c.seq))]
    return [Event.model_validate(r) for r in rows]


async def sheet_failed(history: History, session_ids: Sequence[str]) -> set[str]:
    """Sessions whose case file was sealed without its opinion sheet."""
    if not session_ids:
        return set()
    t = schema.events
    stmt = sa.select(t.c.session_id).where(
        t.c.session_id.in_(sorted(session_ids)), t.c.type == SHEET_FAILED
    )
    async with history.engine.connect() as conn:
        return {r[0] for r in await conn.execute(stmt)}


@route(
    "GET",
    "/api/cases/{case_id}/track",
    "Track a case: its sessions in order with invitations, answers, opinions, stills and "
    "exceptions",
    policy.TRACKERS,
    response=CaseTrack,
    tag="cases",
    query=paging.query_doc(PAGE_DEFAULT, PAGE_MAX),
)
async def case_track(ctx: Ctx) -> Any:
    limit, cursor = page(ctx)
    case_id = ctx.path("case_id")
    views, history = ctx.record, ctx.request.app[HISTORY]
    if await history.case(case_id) is None:
        raise policy.case_missing(case_id)
    rows = {r["session_id"]: r for r in await history.case_sessions(case_id)}
    sessions = [Session.model_validate(r) for r in rows.values()]
    invitations = await views.invitations_of(list(rows))
    policy.can_read_case(ctx.identity, case_id, [i for v in invitations.values() for i in v])
    readable = policy.readable_sessions(ctx.identity, sessions, invitations)
    shown, next_cursor = paging.sessions_page(readable, cursor, limit)
    ids = [s.session_id for s in shown]
    opinions = await views.opinions(ids)
    snapshots = await views.snapshots(ids)
    exceptions = await exception_events(history, ids)
    failed = await sheet_failed(history, ids)
    out = []
    for s in shown:
        row, sid = rows[s.session_id], s.session_id
        out.append(
            TrackedSession(
                session=s,
                end_reason=row.get("end_reason"),
                sealed_at=row.get("sealed_at"),
                chain_head=row.get("chain_head"),
                manifest_sha256=row.get("manifest_sha256"),
                invitations=invitations[sid],
                opinions=[o for o in opinions if o.session_id == sid],
                snapshots=[p for p in snapshots if p.session_id == sid],
                exceptions=[e for e in exceptions if e.session_id == sid],
                sheet_url=f"/api/sessions/{sid}/opinion-sheet",
                sheet_filed=row.get("sealed_at") is not None and sid not in failed,
            )
        )
    return CaseTrack(case_id=case_id, sessions=out, next_cursor=next_cursor)
