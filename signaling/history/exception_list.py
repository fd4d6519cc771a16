"""The exceptions raised as events are filed (``raising``), page by page for
``GET /api/exceptions``: newest first, keyset on ``(at, exception_id)``, each with its
moment in the session (``offset_s``: joined to the session's creation)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from .. import paging
from . import schema as s

EXCEPTIONS = "hx"  # cursor kind


class ExceptionList:
    """Mixed into ``stats.Stats``, whose ``_all`` runs a statement."""

    _all: Callable[[Any], Awaitable[list[Any]]]

    async def exceptions(
        self,
        since: float | None,
        until: float | None,
        kind: str | None,
        status: str | None,
        dept: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of exceptions, newest first, and the next page's cursor."""
        at = paging.decode(EXCEPTIONS, cursor, {"t": float, "i": str})
        x = s.exceptions.c
        stmt = self._exception_select()
        for col, value in ((x.kind, kind), (x.status, status), (x.dept, dept)):
            if value is not None:
                stmt = stmt.where(col == value)
        if since is not None:
            stmt = stmt.where(x.at >= since)
        if until is not None:
            stmt = stmt.where(x.at <= until)
        if at is not None:
            stmt = stmt.where(
                sa.or_(x.at < at["t"], sa.and_(x.at == at["t"], x.exception_id < at["i"]))
            )
        stmt = stmt.order_by(x.at.desc(), x.exception_id.desc()).limit(limit + 1)
        rows = [_exception(r) for r in await self._all(stmt)]
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = None
        if more:
            nxt = paging.encode(EXCEPTIONS, t=rows[-1]["at"], i=rows[-1]["exception_id"])
        return rows, nxt

    async def exception(self, exception_id: str) -> dict[str, Any] | None:
        stmt = self._exception_select().where(s.exceptions.c.exception_id == exception_id)
        rows = await self._all(stmt)
        return _exception(rows[0]) if rows else None

    def _exception_select(self) -> sa.Select[Any]:
        x, t = s.exceptions, s.sessions
        started = t.c.created_at.label("session_created_at")
        joined = x.outerjoin(t, t.c.session_id == x.c.session_id)
        return sa.select(x, started).select_from(joined)


EXCEPTION_FIELDS = (
    "exception_id",
    "kind",
    "case_id",
    "session_id",
    "dept",
    "at",
    "offset_s",
    "detail",
    "status",
    "handled_by",
    "handled_at",
    "note",
)


def _exception(r: Any) -> dict[str, Any]:
    row = dict(r._mapping)
    started = row.pop("session_created_at")
    row["offset_s"] = max(0.0, row["at"] - started) if started is not None else None
    return {k: row[k] for k in EXCEPTION_FIELDS}
