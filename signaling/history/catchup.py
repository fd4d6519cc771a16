"""Recording through an unreachable database: the action goes on, the record catches up.

The node files each case event in the store's log first (``signaling.core.append_event``)
and then in the record (the first event hook). When the database cannot take it (stopped,
restarting, unreachable), the action is still answered: the case is marked *behind* in the
store (the index ``history:behind``, as durable as the log itself), and a background task
copies every marked case's log into the record (idempotent on ``(case_id, seq)``) until the
database takes it, then drops the mark. A node that stops meanwhile leaves the marks in the
store: the next one to start (or any other node) catches up. See docs/history.md, "When the
database is unreachable".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ..core import UNSEALED
from ..inflight import InFlight
from ..models import Event
from ..state import Store
from .repo import History

BEHIND = "history:behind"  # cases whose log may hold events the record lacks
RETRY_S = 1.0  # between two attempts while the database is away
# An action waits this long for its event's commit, then goes on with its case marked
# behind (a database that hangs rather than refuses must not hang every action).
WAIT_S = 5.0
# Marks left by another node (killed while behind) are looked for this often.
SCAN_S = 30.0
CHUNK = 500  # session documents read at once

log = logging.getLogger(__name__)


class CatchUp:
    """``ServiceCore.event_hooks``' record hook, and the task that catches up after it."""

    def __init__(
        self,
        store: Store,
        history: History,
        retry_s: float = RETRY_S,
        wait_s: float = WAIT_S,
        in_flight: InFlight | None = None,
    ) -> None:
        self.store = store
        self.history = history
        # The node's events whose commit is pending (``ServiceCore.in_flight``).
        self.in_flight = in_flight or InFlight()
        # Called with a case once its mark is dropped (its sealed sessions can leave the
        # live store now, rather than at the next sweep: signaling/evict.py).
        self.caught_up: list[Callable[[str], Awaitable[None]]] = []
        self.retry_s = retry_s
        self.wait_s = wait_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.down = False  # one warning per outage, not a traceback per event

    async def hook(self, event: Event) -> None:
        """File the event in the record; when the database refuses, mark its case behind
        (the event is in the store's log already) instead of failing the action."""
        try:
            # Given up on, the event is still written when the database can (group commit).
            await asyncio.wait_for(self.history.hook(event), self.wait_s)
        except Exception as exc:
            self._failed(exc)
            await self._mark(event.case_id, event.ts)
            return
        finally:
            self.in_flight.recorded(event.case_id, event.seq)
        if event.type == "session.ended" and await self._lacks(event.case_id):
            # A node died between filing an event in the log and in the record: caught
            # up before the session's case file is sealed.
            await self._mark(event.case_id, event.ts)

    async def mark_unsealed(self) -> int:
        """Mark behind the cases of ended sessions not sealed yet whose log is longer than
        their record (at start, and at each sweep: a dead node's sessions are sealed by
        the sweepers); how many were marked."""
        sids = await self.store.index_range(UNSEALED)
        cases: set[str] = set()
        for i in range(0, len(sids), CHUNK):
            docs = await self.store.get_many([f"session:{s}" for s in sids[i : i + CHUNK]])
            cases |= {str(d["case_id"]) for d in docs if d is not None}
        marked = 0
        for case_id in sorted(cases):
            if await self._lacks(case_id):
                await self._mark(case_id, 0.0)
                marked += 1
        return marked

    async def _lacks(self, case_id: str) -> bool:
        """Whether the case's log holds events that the record lacks and that are not on
        their way there from this node: the log is longer than the record by more events
        than this node has in flight for the case (``signaling.inflight``) at some moment
        of the check. An event whose commit is pending is not the record falling behind
        (if its commit fails, its own hook marks the case)."""
        with self.in_flight.watching(case_id) as pending:
            try:
                have = await self.history.event_count(case_id)
            except Exception as exc:
                self._failed(exc)
                return True
            key = f"case:{case_id}:events"
            tail = await self.store.read_log(key, start=have, limit=pending() + 1)
            return len(tail) > pending()

    async def _mark(self, case_id: str, ts: float) -> None:
        # The score orders marks oldest first; a case marked again keeps one mark.
        await self.store.index_add(BEHIND, case_id, ts)
        self._wake.set()

    def start(self) -> None:
        self._wake.set()  # marks a previous run left behind are caught up at once
        self._task = asyncio.create_task(self._run(), name="history-catch-up")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def behind(self) -> list[str]:
        """The cases whose record may lack events of their log."""
        return await self.store.index_range(BEHIND)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SCAN_S)
            self._wake.clear()
            try:
                for case_id in await self.behind():
                    await self.catch_up(case_id)
            except Exception as exc:
                self._failed(exc)
                self._wake.set()  # try again after a pause
                await asyncio.sleep(self.retry_s)
            else:
                if self.down:
                    self.down = False
                    log.warning("record: the database is back and the record caught up")

    def _failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            log.warning(
                "record: the database is unavailable (%s); events stay in the store's log "
                "and are recorded when it returns",
                exc,
            )

    async def catch_up(self, case_id: str) -> None:
        """Copy the case's log into the record, then drop its mark.

        Copied again after the mark is dropped: an event whose recording failed while the
        first copy ran (its mark then dropped with the others) is in the log by then,
        since the log is written before the record. Should that copy fail, the case is
        marked again.
        """
        key = f"case:{case_id}:events"
        new = await self.history.record_many(await self.store.read_log(key))
        await self.store.index_remove(BEHIND, case_id)
        try:
            new += await self.history.record_many(await self.store.read_log(key))
        except BaseException:
            await self.store.index_add(BEHIND, case_id, 0.0)
            raise
        log.info("record caught up with case %s (%d late event(s))", case_id, new)
        for hook in self.caught_up:
            try:
                await hook(case_id)
            except Exception:  # the sweeper tries again
                log.exception("after catching up case %s", case_id)
