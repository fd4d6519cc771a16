"""The API's views of what happened, read from the record (SQL, ``signaling.history``),
not from the live store: a case, its timeline and sessions, a session with its
invitations, participants, opinions and stills, the session list and the supervisors'
invitation report. The live store may then forget an ended session; these answer the
same JSON whether it still holds it or not.

Every view goes through ``policy`` for the caller exactly as the live store's did (the
rules take the record's rows as the same pydantic records); a thing the caller may not
read answers as an unknown one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paging, policy
from .auth import Identity
from .casefile import IMAGE_TYPES
from .errors import NotFound
from .history.repo import History
from .models import CaseView, Event, Invitation, Opinion, Participant, Session, Snapshot

Row = dict[str, Any]


@dataclass
class ReadableCase:
    sessions: list[Session]  # those the caller may read, oldest first
    invitations: dict[str, list[Invitation]]  # every session's, by session


def snapshot_path(row: Row) -> str:
    """Where a still lies in the archive: named by ``CaseFileMixin.add_snapshot`` from
    its ids and type alone, so the record needs no path."""
    _, ext = IMAGE_TYPES[row["content_type"]]
    return f"{row['case_id']}/{row['session_id']}/snapshots/{row['snapshot_id']}.{ext}"


def _by_session(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r["session_id"], []).append(r)
    return out


class RecordViews:
    def __init__(self, history: History, join_url: Callable[[str], str], archive_dir: Path) -> None:
        self.history = history
        self.join_url = join_url
        self.archive_dir = archive_dir

    # -- rows as the API's records ------------------------------------------------------
    def _invitation(self, row: Row) -> Invitation:
        return Invitation.model_validate(dict(row, join_url=self.join_url(row["session_id"])))

    async def invitations_of(self, session_ids: Sequence[str]) -> dict[str, list[Invitation]]:
        rows = await self.history.session_invitations(session_ids) if session_ids else []
        by = _by_session(rows)
        return {sid: [self._invitation(r) for r in by.get(sid, [])] for sid in session_ids}

    # -- one session --------------------------------------------------------------------
    async def session(self, session_id: str) -> Session:
        row = await self.history.session(session_id)
        if row is None:
            raise policy.session_missing(session_id)
        return Session.model_validate(row)

    async def readable_session(
        self, who: Identity, session_id: str
    ) -> tuple[Session, list[Invitation]]:
        """The session, if the caller may read it; else the unknown session's 404."""
        session = await self.session(session_id)
        invitations = (await self.invitations_of([session_id]))[session_id]
        policy.check_readable(who, session, invitations)
        return session, invitations

    async def participants(self, session_id: str) -> list[Participant]:
        # A slot's epoch grows with each (re)connection: the record counts them.
        rows = await self.history.participants(session_id)
        return [Participant.model_validate(dict(r, epoch=r["connections"])) for r in rows]

    async def opinions(self, session_ids: Sequence[str]) -> list[Opinion]:
        """Opinions of these sessions, session by session in the order given."""
        by = _by_session(await self.history.session_opinions(session_ids) if session_ids else [])
        return [Opinion.model_validate(r) for sid in session_ids for r in by.get(sid, [])]

    async def snapshots(self, session_ids: Sequence[str]) -> list[Snapshot]:
        by = _by_session(await self.history.session_snapshots(session_ids) if session_ids else [])
        return [
            Snapshot.model_validate(dict(r, path=snapshot_path(r)))
            for sid in session_ids
            for r in by.get(sid, [])
        ]

    async def snapshot_file(self, who: Identity, snapshot_id: str) -> tuple[Snapshot, Path]:
        """A still the caller may read and its file (the bytes stay in the case file)."""
        row = await self.history.snapshot(snapshot_id)
        if row is None:
            raise NotFound("snapshot_not_found", f"no snapshot {snapshot_id}")
        snap = Snapshot.model_validate(dict(row, path=snapshot_path(row)))
        session = await self.session(snap.session_id)
        invitations = (await self.invitations_of([snap.session_id]))[snap.session_id]
        if not policy.may_read_session(who, session, invitations):
            # As an unknown still: nothing tells another department it exists.
            raise NotFound("snapshot_not_found", f"no snapshot {snapshot_id}")
        path = (self.archive_dir / snap.path).resolve()
        if not path.is_relative_to(self.archive_dir.resolve()) or not path.is_file():
            raise NotFound("snapshot_not_found", f"the file of snapshot {snapshot_id} is missing")
        return snap, path

    # -- lists ------------------------------------------------------------------------
    async def list_sessions(
        self,
        who: Identity,
        since: float | None,
        until: float | None,
        limit: int,
        cursor: str | None = None,
        dept: str | None = None,
        window: str | None = None,
        case: str | None = None,
    ) -> tuple[list[Session], str | None]:
        """Newest first, within the token's scope (and of ``case``, if given); a page and
        the next one's cursor."""
        policy.can_list_sessions(who)
        if case is not None and who.case is not None and case != who.case:
            return [], None  # a case beyond the token's: none of its sessions
        page = await self.history.sessions(
            case_id=case or who.case,
            session_id=who.session,
            dept=dept,
            window=window,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
        )
        sessions = [Session.model_validate(r) for r in page.items]
        # The query holds the scope already; the rule stays the judge.
        kept = [s for s in sessions if policy.in_scope(who, s.case_id, s.session_id)]
        return kept, page.next_cursor

    async def invitation_report(
        self,
        who: Identity,
        dept: str | None,
        status: str | None,
        since: float | None,
        until: float | None,
        limit: int,
        cursor: str | None = None,
    ) -> tuple[list[Invitation], str | None]:
        """Invitations newest first with when they rang and were answered, by whom:
        within the token's scope (the route admits the supervisors' roles)."""
        page = await self.history.invitations(
            dept=dept,
            status=status,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
            session_id=who.session,
            case_id=who.case,
        )
        rows = [self._invitation(r) for r in page.items]
        kept = [i for i in rows if policy.in_scope(who, i.case_id, i.session_id)]
        return kept, page.next_cursor

    # -- a case -------------------------------------------------------------------------
    async def readable_case(self, who: Identity, case_id: str) -> ReadableCase:
        """The case's sessions the caller may read (oldest first) and every session's
        invitations. A case the caller may not read answers as an unknown one."""
        if await self.history.case(case_id) is None:
            raise policy.case_missing(case_id)
        sessions = [Session.model_validate(r) for r in await self.history.case_sessions(case_id)]
        by_session = await self.invitations_of([s.session_id for s in sessions])
        policy.can_read_case(who, case_id, [i for v in by_session.values() for i in v])
        return ReadableCase(policy.readable_sessions(who, sessions, by_session), by_session)

    async def case_sessions(
        self, who: Identity, case_id: str, limit: int, cursor: str | None = None
    ) -> tuple[list[Session], list[Invitation], str | None]:
        """A page of the case's readable sessions (oldest first) with their invitations."""
        case = await self.readable_case(who, case_id)
        page, next_cursor = paging.sessions_page(case.sessions, cursor, limit)
        invitations = [i for s in page for i in case.invitations[s.session_id]]
        return page, invitations, next_cursor

    async def case_events(
        self,
        who: Identity,
        case_id: str,
        limit: int,
        cursor: str | None = None,
        session_id: str | None = None,
    ) -> tuple[list[Event], str | None]:
        """A page of the case's timeline, in order, only of sessions the caller may read
        (and of ``session_id`` only, if given)."""
        case = await self.readable_case(who, case_id)
        ids = frozenset(s.session_id for s in case.sessions)
        if session_id is not None:
            ids = ids & {session_id}
        own = session_id is None and policy.can_read_event(who, None, ids)
        page = await self.history.timeline(case_id, sorted(ids), own, cursor, limit)
        return [Event.model_validate(e) for e in page.items], page.next_cursor

    async def case_view(self, who: Identity, case_id: str, limit: int) -> CaseView:
        """The first page of the case: its readable sessions with their invitations,
        opinions and stills, and the first page of their events."""
        sessions, invitations, sessions_next = await self.case_sessions(who, case_id, limit)
        events, events_next = await self.case_events(who, case_id, limit)
        ids = [s.session_id for s in sessions]
        return CaseView(
            case_id=case_id,
            sessions=sessions,
            invitations=invitations,
            events=events,
            opinions=await self.opinions(ids),
            snapshots=await self.snapshots(ids),
            events_next_cursor=events_next,
            sessions_next_cursor=sessions_next,
        )
