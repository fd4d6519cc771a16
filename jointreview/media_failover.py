"""Failover: a session whose media host died is placed again within seconds, its pages
rebuild their media connections by themselves, and its recording's gap is filed.

Two ways a host dies:

- **A media worker of this node** (the control process sees its channel close): the
  session's lease goes at once, its pages get ``media.state`` closed with reason
  ``media_worker_lost`` (the page answers with a new connection, whose offer places the
  session on a live host), and a recording gap opens.
- **A whole node** (Redis mode; kill -9, power): nobody hears it die. Its hosts' registry
  documents stop being renewed and expire (``media_host_ttl_s``). Any node that follows
  one of its sessions (a participant of it is connected there) checks the session's lease
  against the registry every heartbeat, and so does any node asked to negotiate for it: a
  lease naming a host that is gone is taken over at once instead of waiting for the lease
  to expire (``media_lease_s``). The first node to claim the takeover tells the pages
  (reason ``media_node_lost``) and opens the gap, dated at the dead host's last possible
  heartbeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from signaling.recording_control import RecordingControl
from signaling.state import Store

from .media_hosts import MediaHost
from .media_registry import host_key

log = logging.getLogger(__name__)

Emit = Callable[[str, str | None, dict[str, Any]], None]


def lease_key(session_id: str) -> str:
    return f"media-owner:{session_id}"


class Failover:
    def __init__(
        self,
        store: Store,
        node_id: str,
        hosts: list[MediaHost],
        recording: RecordingControl | None,
        emit: Emit,
        host_ttl_s: float,
        lease_s: float,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.hosts = hosts
        self.recording = recording
        self.emit = emit
        self.host_ttl_s = host_ttl_s
        self.lease_s = lease_s

    async def worker_lost(self, session_id: str, worker: int) -> None:
        """This node's worker ``worker`` died while hosting ``session_id``."""
        lease = await self.store.get_ephemeral(lease_key(session_id))
        if lease is not None and (lease.get("node"), lease.get("worker", 0)) == (
            self.node_id,
            worker,
        ):
            await self.store.delete_ephemeral(lease_key(session_id))
        await self._tell(session_id, "media_worker_lost", time.time())

    async def host_gone(self, lease: dict[str, Any]) -> bool:
        """Does the lease name another node's host whose heartbeat is gone? (This node's
        own workers are watched directly: their loss frees their leases at once.)"""
        node, worker = str(lease.get("node")), int(lease.get("worker", 0))
        if node == self.node_id:
            return False
        doc = await self.store.get_ephemeral(host_key(node, worker))
        if doc is None or not doc.get("alive", True):
            return True
        return time.time() - float(doc.get("seen_at", 0.0)) > self.host_ttl_s

    async def take_over(self, session_id: str, lease: dict[str, Any]) -> bool:
        """If the lease's host is gone: free the lease (the next offer places the session
        again); the first node to see it tells the pages and opens the gap. False: the
        host lives."""
        if not await self.host_gone(lease):
            return False
        node, worker = str(lease.get("node")), int(lease.get("worker", 0))
        current = await self.store.get_ephemeral(lease_key(session_id))
        if current is not None and (current.get("node"), current.get("worker", 0)) == (
            node,
            worker,
        ):
            await self.store.delete_ephemeral(lease_key(session_id))
        claim = f"media-takeover:{session_id}:{node}:{worker}"
        if await self.store.create_ephemeral(claim, {"node": self.node_id}, self.lease_s):
            log.warning("session %s: its media host %s/%s is gone; placing it again",
                        session_id, node, worker)  # fmt: skip
            # Its last heartbeat was at least a TTL ago: the recording stopped about then.
            await self._tell(session_id, "media_node_lost", time.time() - self.host_ttl_s)
        return True

    async def sweep(self, sessions: Iterable[str]) -> None:
        """Check the leases of these sessions (those this node follows) for dead hosts."""
        hosted = {sid for h in self.hosts for sid in h.rooms}
        for session_id in sessions:
            if session_id in hosted:
                continue
            lease = await self.store.get_ephemeral(lease_key(session_id))
            if lease is not None:
                await self.take_over(session_id, lease)

    async def _tell(self, session_id: str, reason: str, since: float) -> None:
        """The pages rebuild their media connections; the recording's gap opens."""
        if self.recording is not None:
            await self.recording.interrupted(session_id, reason, since)
        msg = {"type": "media.state", "state": "closed", "session_id": session_id}
        self.emit(session_id, None, {**msg, "reason": reason})
        none = {"type": "media.tracks", "session_id": session_id, "tracks": []}
        self.emit(session_id, None, none)
