"""Pacing a thin leg's video to its link (sans-IO, time passed in).

A publisher's encoder sends a keyframe as a burst: at 200-300 kbps a 640x360 keyframe
is 20-30 KB, more than a thin link's bottleneck queue holds (a 300 kbps link with half
a second of buffer: ~19 KB), so its tail is dropped, the keyframe never completes and
the subscriber's picture stays frozen for seconds while its retransmissions (a fifth of
the estimate) trickle in. A leg whose estimate is under ``PACE_BELOW_BPS`` is therefore
sent at a little over its estimate (``PACE_FACTOR``): bursts wait in the SFU (at most
``PACE_MAX_DELAY_S``, else dropped, as a full link would) rather than in the link.
Faster legs are sent as the packets come (the publisher's own pacer smooths them).
"""

from __future__ import annotations

from collections import deque

PACE_BELOW_BPS = 1_000_000
PACE_FACTOR = 1.15  # the estimate is ~85 % of what the link carried: under its capacity
PACE_MAX_DELAY_S = 1.0
LATE_OK_S = 0.002  # sent with the packets due now: a timer that fires this early


class Pacer:
    """One leg's queue of packets with their departure times."""

    __slots__ = ("dropped", "free_at", "queue")

    def __init__(self) -> None:
        self.queue: deque[tuple[float, bytes]] = deque()
        self.free_at = 0.0  # when the link is free of what was queued
        self.dropped = 0

    def push(self, packet: bytes, now: float, rate_bps: float) -> None:
        start = max(now, self.free_at)
        if start - now > PACE_MAX_DELAY_S:
            self.dropped += 1  # (as a full link would: the subscriber NACKs it)
            return
        self.free_at = start + (len(packet) + 28) * 8 / rate_bps  # (+ IP and UDP)
        self.queue.append((start, packet))

    def due(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        queue = self.queue
        while queue and queue[0][0] <= now + LATE_OK_S:
            out.append(queue.popleft()[1])
        return out

    def next_at(self) -> float | None:
        return self.queue[0][0] if self.queue else None


def pace_bps(estimate: int | None, below: int = PACE_BELOW_BPS) -> float | None:
    """The rate a leg with this estimate is paced at; None: not paced."""
    if estimate is None or estimate >= below:
        return None
    return PACE_FACTOR * estimate
