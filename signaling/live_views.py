"""The API's record views read from the live store, for a node whose record is not every
node's: several nodes on Redis, each with its own SQLite file (no ``database_url``). Each
node's record then holds only the events it filed, so the views read the store, which is
shared, as before the record existed; the store keeps ended sessions then (nothing may
evict them). The supervisors' report still reads this node's record.

Same answers, same rules (``policy``), as ``record_views.RecordViews``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .auth import Identity
from .history.repo import History
from .models import Event, Invitation, Opinion, Participant, Session, Snapshot
from .policy import check_readable
from .record_views import RecordViews
from .service import ReviewService


class LiveViews(RecordViews):
    def __init__(self, history: History, service: ReviewService) -> None:
        super().__init__(history, service.join_url, service.archive_dir)
        self.service = service

    async def readable_session(
        self, who: Identity, session_id: str
    ) -> tuple[Session, list[Invitation]]:
        session = await self.service.session(session_id)
        invitations = await self.service.invitations(session_id)
        check_readable(who, session, invitations)
        return session, invitations

    async def participants(self, session_id: str) -> list[Participant]:
        return await self.service.participants(session_id)

    async def opinions(self, session_ids: Sequence[str]) -> list[Opinion]:
        return [o for sid in session_ids for o in await self.service.opinions(sid)]

    async def snapshots(self, session_ids: Sequence[str]) -> list[Snapshot]:
        return [s for sid in session_ids for s in await self.service.snapshots(sid)]

    async def snapshot_file(self, who: Identity, snapshot_id: str) -> tuple[Snapshot, Path]:
        return await self.service.snapshot_file(who, snapshot_id)

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
        return await self.service.list_sessions(
            who, since, until, limit, cursor, dept=dept, window=window, case=case
        )

    async def case_sessions(
        self, who: Identity, case_id: str, limit: int, cursor: str | None = None
    ) -> tuple[list[Session], list[Invitation], str | None]:
        return await self.service.case_sessions(who, case_id, limit, cursor)

    async def case_events(
        self,
        who: Identity,
        case_id: str,
        limit: int,
        cursor: str | None = None,
        session_id: str | None = None,
    ) -> tuple[list[Event], str | None]:
        return await self.service.case_events(who, case_id, limit, cursor, session_id)
