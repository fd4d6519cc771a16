"""Where a new session's media goes: the least-loaded live media host, across nodes.

Sans-IO: the hosts' load reports (from the store's registry, ``media_registry``) and the
time come in, a choice goes out. A media host is one worker process of one node (or the
node's own process with ``media_workers = 1``). The shape follows LiveKit's node
selectors (pkg/routing/selector): hosts whose report is older than the heartbeat TTL or
whose node drains are out; hosts under a CPU threshold are preferred; the lowest score
wins. The score adds the measured CPU (a fraction of one core) and a cost per forwarded
stream and per room, so that sessions placed since the last report (``pending``: the
report does not show them yet) count at once and a burst of new sessions spreads.
"""

from __future__ import annotations

from dataclasses import dataclass

CPU_HIGH = 0.8  # a host above this much of its core takes new sessions only if all are
STREAM_COST = 0.003  # of a core per forwarded stream (a six-party session: 30 streams)
ROOM_COST = 0.05  # a room just placed: its streams will come within seconds


@dataclass(frozen=True)
class HostLoad:
    node: str
    worker: int
    cpu: float = 0.0  # fraction of one core, averaged over the last seconds
    streams: int = 0  # forwarded streams (published track x subscriber)
    rooms: int = 0
    draining: bool = False  # its node takes no new sessions
    alive: bool = True
    seen_at: float = 0.0  # when this report was made (wall clock, seconds)

    @property
    def host(self) -> str:
        return f"{self.node}/{self.worker}"


def score(h: HostLoad, pending: int = 0) -> float:
    return h.cpu + STREAM_COST * h.streams + ROOM_COST * (h.rooms + pending)


def live(h: HostLoad, now: float, ttl_s: float) -> bool:
    return h.alive and not h.draining and now - h.seen_at <= ttl_s


def choose(
    hosts: list[HostLoad],
    now: float,
    ttl_s: float,
    pending: dict[str, int] | None = None,
) -> HostLoad | None:
    """The host for a new session, or None if no live host takes new sessions."""
    pending = pending or {}
    candidates = [h for h in hosts if live(h, now, ttl_s)]
    if not candidates:
        return None
    cool = [h for h in candidates if h.cpu < CPU_HIGH]
    return min(
        cool or candidates,
        key=lambda h: (score(h, pending.get(h.host, 0)), h.node, h.worker),
    )
