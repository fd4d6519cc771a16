"""This node's case events that are in the store's log but maybe not in the record yet.

An event is *in flight* from just before ``ServiceCore.record`` appends it to the case's
log until the record's hook (``signaling.history.catchup.CatchUp.hook``) has committed
it, or has marked its case behind because the database refused it. Until then, the log
holding an event the record lacks says nothing about the record falling behind: the
commit is on its way, and if it fails its own hook marks the case. The catch-up's check
for a case whose log is longer than its record (``CatchUp._lacks``: a node that died
between the two) discounts these, so that a check made while a commit is pending does
not mark a healthy case behind (which held its sealed sessions in the live store until
the next sweep).

A ticket is opened *before* the append, so an event whose number the store has given
but whose append has not yet returned here (a round trip to Redis) is counted too.
Events filed on other nodes are not known here; see docs/history.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class Ticket:
    """One event being filed: its ``seq`` once the store has given it."""

    __slots__ = ("seq",)

    def __init__(self) -> None:
        self.seq: int | None = None


class InFlight:
    def __init__(self) -> None:
        self._open: dict[str, list[Ticket]] = {}
        # Checks under way, per case: each box counts the tickets open when it began
        # plus every one opened since (closed meanwhile or not).
        self._watches: dict[str, list[list[int]]] = {}

    @contextlib.contextmanager
    def filing(self, case_id: str) -> Iterator[Ticket]:
        """Hold a ticket while the event is appended and its hooks run."""
        ticket = Ticket()
        self._open.setdefault(case_id, []).append(ticket)
        for box in self._watches.get(case_id, ()):
            box[0] += 1
        try:
            yield ticket
        finally:
            self._close(case_id, ticket)

    def recorded(self, case_id: str, seq: int) -> None:
        """The record holds the event now, or its case is marked behind."""
        for ticket in self._open.get(case_id, ()):
            if ticket.seq == seq:
                self._close(case_id, ticket)
                return

    def _close(self, case_id: str, ticket: Ticket) -> None:
        tickets = self._open.get(case_id)
        if tickets is not None and any(t is ticket for t in tickets):
            tickets[:] = [t for t in tickets if t is not ticket]
            if not tickets:
                del self._open[case_id]

    def count(self, case_id: str) -> int:
        return len(self._open.get(case_id, ()))

    @contextlib.contextmanager
    def watching(self, case_id: str) -> Iterator[Callable[[], int]]:
        """While the block runs: how many events of the case may be in flight at some
        moment of it (open at its start, or opened since)."""
        box = [self.count(case_id)]
        self._watches.setdefault(case_id, []).append(box)
        try:
            yield lambda: box[0]
        finally:
            boxes = self._watches[case_id]
            boxes[:] = [b for b in boxes if b is not box]
            if not boxes:
                del self._watches[case_id]
