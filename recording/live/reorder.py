"""Sequence order back from arrival order, for one recorded track (the writer thread's
``track_capture.TrackCapture``): packets held behind a gap until it is filled (a
retransmission) or given up (``GAP`` in the output), with time passed in. No I/O."""

from __future__ import annotations

from typing import Any

MAX_HELD = 512  # packets held behind a gap before we give it up anyway

GAP = None  # what Reorder yields where packets were given up


class Reorder:
    """Sequence order back from arrival order, waiting at most ``max_wait`` on a gap."""

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait
        self.next: int | None = None  # extended sequence number expected next
        self.held: dict[int, Any] = {}
        self.gap_since = 0.0

    def push(self, seq: int, item: Any, now: float, out: list[Any]) -> None:
        nxt = self.next
        if nxt is None:
            self.next = nxt = seq
        diff = (seq - nxt) & 0xFFFF
        if diff == 0 and not self.held:  # the usual case: the next one, nothing waiting
            self.next = nxt + 1
            out.append(item)
            return
        if diff >= 0x8000:
            return  # late (a retransmission given up on) or a duplicate
        if diff > 3000:  # a jump no reordering explains: start over from here
            self.held.clear()
            self.next = seq
            out.append(GAP)
            self.push(seq, item, now, out)
            return
        ext = nxt + diff
        if not self.held:
            self.gap_since = now
        self.held[ext] = item
        self._release(out)
        self.expire(now, out)

    def _release(self, out: list[Any]) -> None:
        assert self.next is not None
        while self.next in self.held:
            out.append(self.held.pop(self.next))
            self.next += 1

    def expire(self, now: float, out: list[Any]) -> None:
        """Give a gap up when it waited long enough (or too much piled up behind it)."""
        while self.held and (now - self.gap_since > self.max_wait or len(self.held) > MAX_HELD):
            self.next = min(self.held)
            out.append(GAP)
            self._release(out)
            self.gap_since = now

    def drain(self, out: list[Any]) -> None:
        while self.held:
            self.next = min(self.held)
            out.append(GAP)
            self._release(out)
