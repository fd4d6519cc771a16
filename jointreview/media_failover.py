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

A node that only *looked* dead (its event loop starved past the TTL on a loaded machine)
must not lose its sessions to a second host: a silent host is first only suspect, and
lost when a check a heartbeat later still finds it silent (``liveness.judge``). Should it
be taken over all the same (silent longer than that), it finds out at its next heartbeat
(its lease names another host now, or nobody) and steps back: it closes its room, whose
events are silenced meanwhile, so that no two hosts forward one session.

A third way a session leaves its host, on purpose: ``jointreview drain --move`` (``move``)
closes the draining node's rooms and tells their pages (reason ``media_host_draining``) to
rebuild the same way, so that a rolling upgrade need not wait for its sessions to end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from signaling.errors import ServiceError
from signaling.recording_control import RecordingControl
from signaling.state import Store

from .liveness import Judgement, Verdict, judge
from .media_hosts import MediaHost
from .media_recovery import claim_repair, repair_lost
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
        grace_s: float,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.hosts = hosts
        self.recording = recording
        self.emit = emit
        self.host_ttl_s = host_ttl_s
        self.lease_s = lease_s
        self.grace_s = grace_s  # a silent host is lost only if still silent this much later
        self._suspects: dict[str, float] = {}  # registry key -> when first found silent
        self.silenced: set[str] = set()  # sessions whose room steps back: no events
        self._moving: set[str] = set()  # sessions being moved off this draining node
        self._tasks: set[asyncio.Task[None]] = set()

    async def worker_lost(self, session_id: str, worker: int) -> None:
        """This node's worker ``worker`` died while hosting ``session_id``."""
        lease = await self.store.get_ephemeral(lease_key(session_id))
        if lease is not None and (lease.get("node"), lease.get("worker", 0)) == (
            self.node_id,
            worker,
        ):
            await self.store.delete_ephemeral(lease_key(session_id))
        await self._tell(session_id, "media_worker_lost", time.time())

    def _host_of(self, lease: dict[str, Any]) -> str | None:
        """The registry key of the lease's host; None for this node's own workers."""
        node, worker = str(lease.get("node")), int(lease.get("worker", 0))
        return None if node == self.node_id else host_key(node, worker)

    def _judge(self, doc: dict[str, Any] | None, since: float | None) -> Judgement:
        seen = None if doc is None else float(doc.get("seen_at", 0.0))
        alive = doc is None or bool(doc.get("alive", True))
        return judge(seen, alive, since, time.time(), self.host_ttl_s, self.grace_s)

    async def take_over(self, session_id: str, lease: dict[str, Any]) -> bool:
        """If the lease's host is lost: free the lease (the next offer places the session
        again); the first node to see it tells the pages and opens the gap. False: the
        host lives. A silent host is checked again a grace later (``liveness``)."""
        key = self._host_of(lease)
        if key is None:
            return False  # this node's own workers are watched directly
        since = self._suspects.get(key)
        for _ in range(3):
            found = self._judge(await self.store.get_ephemeral(key), since)
            if found.verdict is Verdict.ALIVE:
                return False
            if found.verdict is Verdict.LOST:
                await self._free(session_id, lease)
                return True
            since = found.suspect_since
            await asyncio.sleep(self.grace_s)
        return False

    async def _free(self, session_id: str, lease: dict[str, Any]) -> None:
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
            repair = None
            if self.recording is not None:  # its open recording, on a shared archive
                repair = await claim_repair(self.store, self.recording, session_id, node)
            # Its last heartbeat was at least a TTL ago: the recording stopped about then.
            await self._tell(session_id, "media_node_lost", time.time() - self.host_ttl_s)
            if repair is not None and self.recording is not None:
                self._spawn(repair_lost(self.store, self.recording, session_id, node, repair))

    async def renew(self) -> None:
        """Renew the leases of the sessions hosted here (every third of their span), each
        only while it still names its host here: one that names another host now (taken
        over while this node was silent, or moved) is left alone, and the room steps back."""
        for h in self.hosts:
            for session_id in list(h.rooms):
                doc = {"node": self.node_id, "worker": h.index}
                if not await self.store.renew_ephemeral(lease_key(session_id), doc, self.lease_s):
                    await self.step_back(h, session_id)

    async def step_back(self, host: MediaHost, session_id: str) -> None:
        """The session's lease no longer names ``host``: close the room here, its events
        silenced (the pages are on the new host already). If nobody holds the lease and
        nobody told the pages (no takeover claim), tell them: they rebuild elsewhere."""
        self.silenced.add(session_id)
        try:
            result = await host.call("end", {"session_id": session_id})
        except ServiceError as exc:  # its worker died meanwhile: worker_lost tells them
            log.warning("stepping back from %s: %s", session_id, exc.message)
            return
        finally:
            self.silenced.discard(session_id)
        if not result.get("hosted"):
            return  # the room had closed already (a load report a moment old listed it)
        lease = await self.store.get_ephemeral(lease_key(session_id))
        log.warning("session %s: its media lease names %s now; stepping back from %s/%s",
                    session_id, lease, self.node_id, host.index)  # fmt: skip
        claim = f"media-takeover:{session_id}:{self.node_id}:{host.index}"
        if lease is None and await self.store.create_ephemeral(
            claim, {"node": self.node_id}, self.lease_s
        ):
            await self._tell(session_id, "media_node_lost", time.time())

    async def move_all(self) -> list[str]:
        """Drain that moves: each session hosted here goes to another host at its pages'
        next offer; a rolling upgrade need not wait for them to end."""
        moved = [(h, sid) for h in self.hosts if h.alive for sid in sorted(h.rooms)]
        for host, session_id in moved:
            await self.move(host, session_id)
        return [sid for _, sid in moved]

    async def move(self, host: MediaHost, session_id: str) -> None:
        """Drain that moves: free the lease (the next offer places the session on a node
        that is not draining), close the room here (its recording run ends cleanly), and
        tell the pages (reason ``media_host_draining``: they rebuild as on a lost host);
        the recording's gap runs until the new host records."""
        # The gap first: a page whose connection closes with the room offers again at
        # once, and the new host's recorder may start (and close the gap) before we tell.
        if self.recording is not None:
            await self.recording.interrupted(session_id, "media_host_draining", time.time())
        # Not silenced: a page's new offer may open the session here again at once (the
        # registry shows this node draining only from its next beat), and that room's
        # events must reach the pages.
        self._moving.add(session_id)  # the sweep must not take it for a step back
        try:
            await self.store.delete_ephemeral(lease_key(session_id))
            await host.call("end", {"session_id": session_id})
        except ServiceError as exc:  # its worker died meanwhile: worker_lost tells them
            log.warning("moving %s: %s", session_id, exc.message)
            return
        finally:
            self._moving.discard(session_id)
        log.warning("session %s: moved off this draining node", session_id)
        self._say(session_id, "media_host_draining")

    async def sweep(self, sessions: Iterable[str]) -> None:
        """Check the leases of these sessions (those this node follows) for lost hosts,
        and those of the sessions hosted here for another holder (this host then steps
        back). Two store reads a beat however many sessions: their leases in one call,
        then the registry documents of the distinct hosts those leases name in one more."""
        busy = self.silenced | self._moving  # stepping back or moving already
        hosted = {sid: h for h in self.hosts for sid in h.rooms if sid not in busy}
        followed = [sid for sid in sessions if sid not in hosted]
        checked = followed + sorted(hosted)
        if not checked:
            return
        leases = await self.store.get_ephemeral_many([lease_key(s) for s in checked])
        named: dict[str, tuple[dict[str, Any], str]] = {}
        for session_id, lease in zip(checked, leases, strict=True):
            host = hosted.get(session_id)
            if host is not None:
                if not self._names(lease, host):
                    await self.step_back(host, session_id)
                continue
            key = None if lease is None else self._host_of(lease)
            if lease is not None and key is not None:  # this node's own: watched directly
                named[session_id] = (lease, key)
        keys = sorted({key for _, key in named.values()})
        docs = dict(zip(keys, await self.store.get_ephemeral_many(keys), strict=True))
        found = {key: self._judge(docs[key], self._suspects.get(key)) for key in keys}
        self._suspects = {k: j.suspect_since for k, j in found.items() if j.suspect_since}
        for session_id, (lease, key) in named.items():
            if found[key].verdict is Verdict.LOST:
                await self._free(session_id, lease)

    def _names(self, lease: dict[str, Any] | None, host: MediaHost) -> bool:
        """Does the lease name this node's ``host``?"""
        if lease is None:
            return False
        return (lease.get("node"), int(lease.get("worker", 0))) == (self.node_id, host.index)

    async def _tell(self, session_id: str, reason: str, since: float) -> None:
        """The pages rebuild their media connections; the recording's gap opens."""
        if self.recording is not None:
            await self.recording.interrupted(session_id, reason, since)
        self._say(session_id, reason)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _say(self, session_id: str, reason: str) -> None:
        msg = {"type": "media.state", "state": "closed", "session_id": session_id}
        self.emit(session_id, None, {**msg, "reason": reason})
        none = {"type": "media.tracks", "session_id": session_id, "tracks": []}
        self.emit(session_id, None, none)
