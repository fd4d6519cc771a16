"""Which media host runs a session's media: the ``media-owner:<session>`` lease
``{node, worker}``, read (and freed first if its host is lost: ``media_failover``) or
created by placing the session on the least-loaded live host of any node that is not
draining (``placement``; the first node to create the lease wins). Also this node's hosts
as the registry and placement see them, and the admin's view of every host."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from signaling.errors import Unavailable
from signaling.state import Store

from .media_failover import Failover, lease_key
from .media_hosts import MediaHost, loads_of
from .media_registry import MediaTimings, Registry, sessions_of
from .placement import HostLoad, choose

log = logging.getLogger(__name__)

PENDING_S = 3.0  # a placement counts against its host until its load reports show it


class Owners:
    def __init__(
        self,
        store: Store,
        node_id: str,
        hosts: list[MediaHost],
        registry: Registry,
        failover: Failover,
        timings: MediaTimings,
        draining: Callable[[], bool],
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.hosts = hosts
        self.registry = registry
        self.failover = failover
        self.timings = timings
        self.draining = draining
        self._placed: dict[str, list[float]] = defaultdict(list)

    def loads(self) -> list[HostLoad]:
        return loads_of(self.hosts, self.node_id, self.draining())

    async def view(self) -> dict[str, Any]:
        """The admin's view: every media host of every node, and where this node's
        sessions run."""
        hosts = await self.all_hosts()
        return {
            "node": self.node_id,
            "draining": self.draining(),
            "hosts": [{"host": h.host, **h.__dict__} for h in hosts],
            "sessions": sessions_of(self.hosts, self.node_id),
        }

    async def all_hosts(self) -> list[HostLoad]:
        others = [h for h in await self.registry.hosts() if h.node != self.node_id]
        return self.loads() + others  # this node's own: fresh, not a second old

    async def place(self) -> HostLoad | None:
        hosts = await self.all_hosts()
        # From here to the choice counted, no await: sessions placed at once spread.
        now = time.time()
        pending = {}
        for host, times in self._placed.items():
            times[:] = [t for t in times if now - t < PENDING_S]
            pending[host] = len(times)
        chosen = choose(hosts, now, self.timings.host_ttl_s, pending)
        if chosen is not None:
            self._placed[chosen.host].append(now)
        return chosen

    async def owner(self, session_id: str) -> tuple[str, int]:
        """The session's media host ``(node, worker)``, placing the session if none."""
        key = lease_key(session_id)
        for _ in range(3):
            lease = await self.store.get_ephemeral(key)
            if lease is not None and not await self.failover.take_over(session_id, lease):
                return str(lease["node"]), int(lease.get("worker", 0))
            if lease is not None:
                continue  # its host was gone: the lease is free now
            choice = await self.place()
            if choice is None:
                break
            doc = {"node": choice.node, "worker": choice.worker}
            if await self.store.create_ephemeral(key, doc, self.timings.lease_s):
                log.info("session %s placed on %s", session_id, choice.host)
                return choice.node, choice.worker
            placed = self._placed[choice.host]  # another node placed it first
            if placed:
                placed.pop()
        raise Unavailable("media_unavailable", "no media server hosts this session")
