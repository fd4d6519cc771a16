"""Media hosts in the shared store: each node's workers, their load and a heartbeat, so
that any node can place a new session on the least-loaded host of any node.

A host is ``media-host:<node>:<worker>``, an ephemeral document (TTL
``media_host_ttl_s``, renewed every ``media_heartbeat_s``: ``MediaTimings``): a node that
dies drops out within the TTL. The index
``media-hosts`` lists the hosts ever registered so that they can be found (the store has
no key scan); a member whose document is gone for long is removed by whoever reads it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from signaling.state import Store

from .placement import HostLoad

if TYPE_CHECKING:
    from .media_hosts import MediaHost

INDEX = "media-hosts"
REINDEX_S = 60.0  # a host renews its index entry this often (the entry is journaled)
FORGET_S = 600.0  # an index entry without its document this long is removed


@dataclasses.dataclass(frozen=True)
class MediaTimings:
    """What bounds failover (settings ``media_heartbeat_s`` etc., signaling/config.py)."""

    heartbeat_s: float = 1.0  # a host's registry entry (and load) is renewed this often
    host_ttl_s: float = 5.0  # an entry not renewed this long: the host is dead
    lease_s: float = 30.0  # a session's media lease (renewed every third of it)
    restart_min_s: float = 0.2  # a dead worker starts again after this, doubling to max
    restart_max_s: float = 10.0

    @classmethod
    def of(cls, config: Any) -> MediaTimings:
        return cls(
            config.media_heartbeat_s,
            config.media_host_ttl_s,
            config.media_lease_s,
            config.media_restart_min_s,
            config.media_restart_max_s,
        )


def host_key(node: str, worker: int) -> str:
    return f"media-host:{node}:{worker}"


class Registry:
    def __init__(self, store: Store, node_id: str, host_ttl_s: float = 5.0) -> None:
        self.store = store
        self.node_id = node_id
        self.host_ttl_s = host_ttl_s
        self._indexed: dict[int, float] = {}

    async def beat(self, loads: list[HostLoad]) -> None:
        now = time.time()
        for h in loads:
            await self.store.put_ephemeral(
                host_key(h.node, h.worker), dataclasses.asdict(h), self.host_ttl_s
            )
            if now - self._indexed.get(h.worker, 0.0) >= REINDEX_S:
                await self.store.index_add(INDEX, f"{h.node}:{h.worker}", now)
                self._indexed[h.worker] = now

    async def withdraw(self, workers: list[int]) -> None:
        for w in workers:
            await self.store.delete_ephemeral(host_key(self.node_id, w))
            await self.store.index_remove(INDEX, f"{self.node_id}:{w}")

    async def hosts(self) -> list[HostLoad]:
        """Every registered host whose heartbeat is still alive, on any node."""
        now = time.time()
        members = await self.store.index_range(INDEX)
        docs = await asyncio.gather(*(self.store.get_ephemeral(_key(m)) for m in members))
        found: list[HostLoad] = []
        stale = await self.store.index_range(INDEX, max_score=now - FORGET_S)
        for member, doc in zip(members, docs, strict=True):
            if doc is not None:
                found.append(_load(doc))
            elif member in stale:
                await self.store.index_remove(INDEX, member)
        return found


def _key(member: str) -> str:
    node, _, worker = member.rpartition(":")
    return host_key(node, int(worker))


def _load(doc: dict[str, Any]) -> HostLoad:
    fields = {f.name for f in dataclasses.fields(HostLoad)}
    return HostLoad(**{k: v for k, v in doc.items() if k in fields})


def sessions_of(hosts: list[MediaHost], node: str) -> list[dict[str, Any]]:
    """Where this node's sessions run (the admin's placement view)."""
    return [
        {"session_id": s, "node": node, "worker": h.index} for h in hosts for s in sorted(h.rooms)
    ]
