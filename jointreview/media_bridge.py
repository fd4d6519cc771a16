"""Between signaling and the media server: which media host runs a session's media, and
how to reach it from any node.

A media host is one media worker process of a node (``media_hosts``; with
``media_workers = 1`` the node's own process). Every host registers in the store with its
load and a heartbeat (``media_registry``); a new session goes to the least-loaded live
host of any node that is not draining (``placement``), named by the
``media-owner:<session>`` lease ``{node, worker}`` (``media_owner``; renewed while the
room lives). A participant connected elsewhere reaches it through the bus: a request on
``node:<owner>``, the answer on ``reply:<asker>``; the owner node hands it to the worker.
The owner follows the session's topic to drop the media of those who left and to close
the room when the session ends. A worker that dies loses its sessions' media: their
leases go (the next offer places them again), their pages are told (``media.state``
closed) and a new worker takes its place (``media_failover``). Media events go out to
every node's sockets through ``media_events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from media_server.server import MediaServer
from media_server.settings import MediaSettings
from recording.live.recorder import Recorder
from signaling.background import stopping
from signaling.errors import ServiceError, Unavailable
from signaling.media_quality import file_report
from signaling.models import MediaCheck
from signaling.recording_control import RecordingControl
from signaling.state import Outage, Store, StoreUnavailable, Subscription

from .media_events import MediaEvents
from .media_failover import Failover
from .media_hosts import LocalHost, MediaHost, WorkerHost, WorkerPool, health_of
from .media_live import LiveMedia
from .media_owner import Owners
from .media_recovery import recover, repair_key, repaired
from .media_registry import MediaTimings, Registry
from .media_rpc import NodeRpc

log = logging.getLogger(__name__)


class MediaBridge(LiveMedia):
    def __init__(
        self,
        store: Store,
        node_id: str,
        settings: MediaSettings | None,
        recording: RecordingControl | None = None,
        recorder_queue: int = 8192,
        recorder_keyframe_s: float = 10.0,
        workers: int = 1,
        loop_kind: str = "asyncio",
        log_level: str = "info",
        log_format: str = "text",
        timings: MediaTimings | None = None,
    ) -> None:
        self.store = store
        self.timings = t = timings or MediaTimings()
        self.node_id = node_id
        self.settings = settings
        # Recording: the policy is signaling's; the writer (recording.live) runs where the
        # session's media runs and the media server feeds it through its tap.
        self.recording = recording
        self.records = settings is not None and recording is not None and recording.policy != "off"
        self.media: MediaServer | None = None  # the in-process SFU (media_workers = 1)
        self.pool: WorkerPool | None = None
        self.hosts: list[MediaHost] = []
        if settings is not None and workers <= 1:
            recorder = None
            if self.records:
                assert recording is not None
                recorder = Recorder(
                    recording.archive_dir,
                    self._recording_event,
                    queue_packets=recorder_queue,
                    keyframe_s=recorder_keyframe_s,
                    node=node_id,
                )
            self.media = MediaServer(settings, self._host_emit, recorder)
            self.hosts = [LocalHost(self.media)]
        elif settings is not None:
            init = {
                "node": node_id,
                "log_level": log_level,
                "log_format": log_format,
                "archive": str(recording.archive_dir) if self.records and recording else None,
                "recorder_queue": recorder_queue,
                "recorder_keyframe_s": recorder_keyframe_s,
            }
            self.pool = WorkerPool(
                workers,
                settings,
                init,
                loop_kind,
                self._worker_event,
                self._worker_lost,
                (t.restart_min_s, t.restart_max_s),
            )
            self.hosts = list(self.pool.hosts)
        self.draining = False
        self.events = MediaEvents(store)
        self.registry = Registry(store, node_id, t.host_ttl_s)
        self.rpc = NodeRpc(store, node_id)
        self.failover = Failover(
            store,
            node_id,
            self.hosts,
            recording,
            self.events.emit,
            t.host_ttl_s,
            t.lease_s,
            t.heartbeat_s,
        )
        self.owners = Owners(
            store, node_id, self.hosts, self.registry, self.failover, t, lambda: self.draining
        )
        self._subs: list[Subscription] = []
        self._rooms: dict[str, Subscription] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._renew: asyncio.Task[None] | None = None
        self._repair: asyncio.Task[None] | None = None  # of a dead worker's recordings

    @property
    def enabled(self) -> bool:
        return bool(self.hosts)

    async def start(self) -> None:
        if self.pool is not None:
            await self.pool.start()
        self._subs.append(await self.store.subscribe(f"node:{self.node_id}", self._on_request))
        self._subs.append(await self.store.subscribe(f"reply:{self.node_id}", self.rpc.on_reply))
        with contextlib.suppress(StoreUnavailable):  # a host already when the node serves
            await self.registry.beat(self.owners.loads())
        self._renew = asyncio.create_task(self._heartbeat(), name="media-heartbeat")
        self.events.start()
        if self.recording is not None:
            # Every node seals what ends without a media node, and sweeps for what a
            # dead node left unsealed (never a recording still open: the crash repair
            # below closes those first, then seals them itself).
            self.recording.start(self.node_id)
        if self.records:
            await self._recover()

    async def close(self) -> None:
        if self.recording is not None:
            await self.recording.close()
        if self._renew is not None:
            self._renew.cancel()
        self.events.close()
        for sub in self._subs + list(self._rooms.values()):
            await sub.close()
        for task in list(self._tasks):
            task.cancel()
        for host in self.hosts:
            for session_id in list(host.rooms):
                with contextlib.suppress(StoreUnavailable):
                    await self.store.delete_ephemeral(f"media-owner:{session_id}")
        with contextlib.suppress(StoreUnavailable):
            await self.registry.withdraw([h.index for h in self.hosts])
        if self.pool is not None:
            await self.pool.close()
        if self.media is not None:
            await self.media.close()

    # -- health, load, drain ----------------------------------------------------------
    def health(self) -> MediaCheck:
        if not self.enabled:
            return MediaCheck(ok=True, enabled=False)  # turned off: nothing to be unwell
        return health_of(self.hosts, self.pool is not None, self.draining)

    def set_draining(self, on: bool) -> None:
        """Draining: no new session is placed on this node; those it hosts go on."""
        if on != self.draining:
            log.warning("media: %s", "draining (no new sessions)" if on else "taking sessions")
        self.draining = on

    async def move_sessions(self) -> list[str]:
        """Drain that moves: the sessions hosted here go elsewhere (``Failover.move``)."""
        return await self.failover.move_all()

    async def placement(self) -> dict[str, Any]:
        """The admin's view: every media host of every node, and where this node's
        sessions run."""
        return await self.owners.view()

    async def _heartbeat(self) -> None:
        """Register this node's hosts (load, draining) and renew its sessions' leases."""
        outage = Outage("media heartbeat", log)
        renewed = 0.0
        while not stopping():
            await asyncio.sleep(self.timings.heartbeat_s)
            try:
                await self.registry.beat(self.owners.loads())
                await self.failover.sweep(list(self._rooms))  # dead nodes' sessions
                if time.monotonic() - renewed >= self.timings.lease_s / 3:
                    renewed = time.monotonic()
                    await self.failover.renew()
            except StoreUnavailable as exc:
                outage.failed(exc)
                continue
            except Exception:
                log.exception("media heartbeat failed")
            outage.ok()

    def ice_servers(self, user: str) -> list[dict[str, Any]]:
        return self.settings.client_ice_servers(user) if self.settings else []

    # -- asking -----------------------------------------------------------------------
    async def negotiate(
        self,
        session_id: str,
        participant_id: str,
        owner: dict[str, Any],
        sdp: str,
        publish: list[dict[str, Any]],
        subscribe: list[dict[str, Any]],
    ) -> dict[str, Any]:
        args = {
            "session_id": session_id,
            "participant_id": participant_id,
            "owner": owner,
            "sdp": sdp,
            "publish": publish,
            "subscribe": subscribe,
        }
        node, worker = await self.owners.owner(session_id)
        return await self._ask(node, "negotiate", {**args, "worker": worker})

    async def tracks(self, session_id: str) -> list[dict[str, Any]]:
        """What is published in the session now (empty if no media host runs it yet)."""
        lease = await self.store.get_ephemeral(f"media-owner:{session_id}")
        if lease is None:
            return []
        args = {"session_id": session_id, "worker": int(lease.get("worker", 0))}
        result = await self._ask(str(lease["node"]), "tracks", args)
        return list(result["tracks"])

    async def ready(self, session_id: str, participant_id: str) -> None:
        lease = await self.store.get_ephemeral(f"media-owner:{session_id}")
        if lease is None:
            raise ServiceError("no_media", "no media connection to confirm: offer first")
        args = {
            "session_id": session_id,
            "participant_id": participant_id,
            "worker": int(lease.get("worker", 0)),
        }
        await self._ask(str(lease["node"]), "ready", args)

    async def _ask(self, node: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if node == self.node_id:
            return await self._local(op, args)
        return await self.rpc.ask(node, op, args)

    # -- answering --------------------------------------------------------------------
    def _on_request(self, msg: dict[str, Any]) -> None:
        self._spawn(self._answer(msg))

    async def _answer(self, msg: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "media.rpc.result", "id": msg.get("id")}
        try:
            reply["result"] = await self._local(str(msg.get("op")), dict(msg.get("args", {})))
        except (ServiceError, StoreUnavailable) as exc:
            reply["error"] = {"code": exc.code, "message": exc.message}
        except Exception:
            # Answer anyway: an unanswered request would stall the asker until its timeout
            # and then blame an unreachable node.
            log.exception("media operation %r failed", msg.get("op"))
            reply["error"] = {"code": "internal_error", "message": "the media node failed"}
        try:
            await self.store.publish(f"reply:{msg.get('reply_to')}", reply)
        except StoreUnavailable as exc:  # the asker times out with media_unavailable
            log.warning("media answer to %s lost: %s", msg.get("reply_to"), exc)

    def _host(self, worker: int) -> MediaHost:
        if not self.enabled:
            raise Unavailable("media_unavailable", "media is turned off on this node")
        if not 0 <= worker < len(self.hosts):
            raise Unavailable("media_unavailable", f"this node has no media worker {worker}")
        return self.hosts[worker]

    def _hosting(self, session_id: str) -> MediaHost | None:
        return next((h for h in self.hosts if session_id in h.rooms), None)

    async def _local(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        host = self._host(int(args.pop("worker", 0)))
        if op in ("tracks", "ready", "health"):
            return await host.call(op, args)
        if op == "leave":  # an observer's media (LiveMedia.release)
            await self._leave(str(args["session_id"]), str(args["participant_id"]))
            return {}
        if op != "negotiate":
            raise ServiceError("unknown_operation", f"no media operation {op!r}")
        session_id = str(args["session_id"])
        await self._follow(session_id)
        if session_id not in host.rooms and self.recording is not None:
            # The room opens here now: record it if the policy (or a clerk) says so.
            case_id = await self.recording.room_opening(session_id)
            if case_id is not None and self.records:
                start = self._start_recording(host, session_id, case_id)
                lost = await self.store.get_ephemeral(repair_key(session_id))
                if lost is None and (self._repair is None or self._repair.done()):
                    await start
                else:  # media first; the recorder once a dead worker's files are repaired
                    self._spawn(start)
        return await host.call("negotiate", args)

    async def _start_recording(self, host: MediaHost, session_id: str, case_id: str) -> None:
        """(A new run in the session's track index: never while the crash repair of a
        dead worker rewrites that index.)"""
        if self._repair is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._repair)
        await repaired(self.store, session_id)  # a dead node's run, on a shared archive
        try:
            await host.call("start_recording", {"session_id": session_id, "case_id": case_id})
        except ServiceError as exc:
            log.warning("recording %s did not start: %s", session_id, exc.message)
            return
        assert self.recording is not None
        await self.recording.resumed(session_id, case_id)

    async def _follow(self, session_id: str) -> None:
        """Watch the session: media goes when its participant leaves or the session ends."""
        if session_id in self._rooms:
            return

        def on_event(msg: dict[str, Any]) -> None:
            kind = msg.get("type")
            if kind == "session.ended":
                self._spawn(self._end(session_id))
            elif kind == "recording":
                self._spawn(self._recording_changed(session_id, msg))
            elif kind == "presence" and msg.get("state") == "left":
                pid = (msg.get("participant") or {}).get("participant_id")
                if pid and self.enabled:
                    self._spawn(self._leave(session_id, pid))

        self._rooms[session_id] = await self.store.subscribe(f"session:{session_id}", on_event)

    async def _leave(self, session_id: str, participant_id: str) -> None:
        host = self._hosting(session_id)
        if host is None:
            return
        args = {"session_id": session_id, "participant_id": participant_id}
        result = await host.call("leave", args)
        if not result.get("hosted", True):
            # The room closed: another host may run it next. We keep following the
            # session so that its end is sealed into the case file.
            await self._release(session_id)

    async def watch(self, session_id: str) -> None:
        """Someone joined through this node: follow the session so that its case file
        is sealed when it ends, even if it never had media."""
        if self.recording is not None:
            await self._follow(session_id)

    async def _end(self, session_id: str) -> None:
        hosted = False
        # Every live host: the one running the room, or one closing it just now (its last
        # participant left), whose files are final only once that close is done.
        for host in [h for h in self.hosts if h.alive]:
            try:
                result = await host.call("end", {"session_id": session_id})
                hosted = hosted or bool(result.get("hosted"))
            except ServiceError as exc:  # its worker died: the crash repair has its files
                log.warning("ending the media of %s: %s", session_id, exc.message)
        await self._unfollow(session_id)
        if self.recording is None:
            return
        lease = await self.store.get_ephemeral(f"media-owner:{session_id}")
        if not hosted and lease is not None and lease.get("node") != self.node_id:
            return  # the node hosting the media seals it, once its files are final
        # One sealer per session, whichever nodes follow it (the node that ended it may
        # have sealed it already, if no media node held it).
        await self.recording.seal_once(session_id, files_final=hosted)

    # -- recording ----------------------------------------------------------------------
    async def recording_active(self, session_id: str) -> bool:
        return await self.recording.active(session_id) if self.recording is not None else False

    async def _recording_changed(self, session_id: str, msg: dict[str, Any]) -> None:
        """A clerk started or stopped recording (any node): act on the room hosted here."""
        host = self._hosting(session_id)
        if host is None or not self.records:
            return
        if msg.get("active") and msg.get("case_id"):
            args = {"session_id": session_id, "case_id": str(msg["case_id"])}
            await host.call("start_recording", args)
        elif not msg.get("active"):
            await host.call("stop_recording", {"session_id": session_id})

    def _recording_event(self, session_id: str, msg: dict[str, Any]) -> None:
        """From the recorder, on the loop: a recording error goes to the clerk, the
        supervisors and the timeline at once."""
        if self.recording is not None and msg.get("type") == "recording.error":
            self._spawn(self.recording.failed(session_id, msg))

    async def _recover(self) -> None:
        """Recordings a crash left open: repair them before they are recorded again."""
        assert self.recording is not None
        await recover(self.store, self.node_id, self.recording, self._follow)

    # -- media workers ------------------------------------------------------------------
    def _worker_event(self, host: WorkerHost, msg: dict[str, Any]) -> None:
        kind = msg.get("event")
        if kind == "emit":
            self._host_emit(str(msg["session_id"]), msg.get("participant_id"), dict(msg["msg"]))
        elif kind == "recording":
            self._recording_event(str(msg["session_id"]), dict(msg["msg"]))

    def _worker_lost(self, host: WorkerHost, sessions: set[str]) -> None:
        """Its sessions are placed again at their next offer; their pages are told now."""
        for session_id in sessions:
            self._spawn(self.failover.worker_lost(session_id, host.index))
        if self.records and sessions:
            self._repair = asyncio.create_task(self._recover())  # its open recordings
            self._tasks.add(self._repair)
            self._repair.add_done_callback(self._tasks.discard)

    async def _unfollow(self, session_id: str) -> None:
        sub = self._rooms.pop(session_id, None)
        if sub is not None:
            await sub.close()
        await self._release(session_id)

    async def _release(self, session_id: str) -> None:
        """Give the session's media lease up, if it is ours (never another node's)."""
        key = f"media-owner:{session_id}"
        lease = await self.store.get_ephemeral(key)
        if lease is not None and lease.get("node") != self.node_id:
            return
        await self.store.delete_ephemeral(key)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- media events out to the session's sockets ------------------------------------
    def _host_emit(self, session_id: str, participant_id: str | None, msg: dict[str, Any]) -> None:
        if session_id in self.failover.silenced:  # a room closing as it steps back
            return
        if msg.get("type") == "media.quality":  # for the timeline, not the pages
            if self.recording is not None:
                self._spawn(file_report(self.recording.service, session_id, msg))
            return
        self.events.emit(session_id, participant_id, msg)
