"""What the live store filed and the record missed: a node that died between appending an
event to its case's log and recording it (the record is the first event hook, right
after the append), or an event the record refused (its disk full) after the store took
it. Such an event was never acknowledged, but the store holds it and so will the
session's sealed case file (its timeline is the store's log), so the record takes it
from the case's log by the time the session is sealed: when this node files a
``session.ended``, for every unsealed session at start (before the sweeper seals a dead
node's sessions) and at every sweep. Recording is idempotent and in any order
(``history.repo``): catching up while the node files events is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy as sa

from .core import UNSEALED
from .history.repo import History
from .models import Event
from .state import Store

log = logging.getLogger(__name__)
CHUNK = 500


class CatchUp:
    def __init__(self, store: Store, history: History) -> None:
        self.store = store
        self.history = history

    async def hook(self, event: Event) -> None:
        """An event hook (after the record's): a session's end brings its case up to date."""
        if event.type == "session.ended":
            await self.cases([event.case_id])

    async def unsealed(self) -> int:
        """Bring up to date the cases of the sessions whose case file is not sealed."""
        sids = await self.store.index_range(UNSEALED)
        cases: set[str] = set()
        for i in range(0, len(sids), CHUNK):
            docs = await self.store.get_many([f"session:{s}" for s in sids[i : i + CHUNK]])
            cases |= {str(d["case_id"]) for d in docs if d is not None}
        return await self.cases(cases)

    async def cases(self, case_ids: Iterable[str]) -> int:
        """File every event of these cases' logs the record lacks; how many were new."""
        filed = 0
        for case_id in sorted(set(case_ids)):
            key = f"case:{case_id}:events"
            try:
                have = await self.history.event_count(case_id)
                if not await self.store.read_log(key, start=have, limit=1):
                    continue  # the log is no longer than the record's part of it
                filed += await self.history.record_many(await self.store.read_log(key))
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                log.warning("the record cannot catch up case %s now: %s", case_id, exc)
        if filed:
            log.warning("%d event(s) in the store were missing from the record: filed", filed)
        return filed
