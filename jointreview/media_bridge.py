"""Between signaling and the media server: which node hosts a session's media, and how to
reach it from any node.

A session's media lives on one node, the holder of the ``media-owner:<session>`` lease
in the store (taken by the first node that negotiates for it, renewed while the room
lives). A participant connected elsewhere reaches it through the bus: a request on
``node:<owner>``, the answer on ``reply:<asker>``. The owner follows the session's
topic to drop the media of those who left and to close the room when the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import Any, Literal

from media_server.errors import MediaError
from media_server.server import MediaServer
from media_server.settings import MediaSettings
from recording import archive
from recording.live.recorder import Recorder
from signaling.background import stopping
from signaling.config import Config
from signaling.errors import ServiceError, Unavailable
from signaling.models import MediaCheck
from signaling.recording_control import RecordingControl
from signaling.state import Outage, Store, StoreUnavailable, Subscription

log = logging.getLogger(__name__)

LEASE_S = 30.0
RPC_TIMEOUT_S = 15.0


def media_settings(config: Config) -> MediaSettings:
    ports = (config.media_port_min, config.media_port_max) if config.media_port_min else None
    return MediaSettings(
        listen_ips=list(config.media_listen_ips),
        announced_ip=config.media_announced_ip,
        port_range=ports,
        ice_servers=[s.model_dump(exclude_none=True) for s in config.ice_servers],
        turn_secret=config.turn_secret,
        turn_ttl_s=config.turn_ttl_s,
        video_codecs=[f"video/{c}" for c in config.media_video_codecs],
        min_bitrate=config.media_min_bitrate,
        max_bitrate=config.media_max_bitrate,
        mode=config.media_mode,
    )


class MediaBridge:
    def __init__(
        self,
        store: Store,
        node_id: str,
        settings: MediaSettings | None,
        recording: RecordingControl | None = None,
        recorder_queue: int = 8192,
        recorder_keyframe_s: float = 10.0,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.settings = settings
        # Recording: the policy is signaling's; the writer (recording.live) runs on this
        # node and the media server feeds it through its tap (media_server/tap.py).
        self.recording = recording
        recorder = None
        if settings is not None and recording is not None and recording.policy != "off":
            recorder = Recorder(
                recording.archive_dir,
                self._recording_event,
                queue_packets=recorder_queue,
                keyframe_s=recorder_keyframe_s,
                node=node_id,
            )
        self.media = MediaServer(settings, self._emit, recorder) if settings is not None else None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._subs: list[Subscription] = []
        self._rooms: dict[str, Subscription] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._renew: asyncio.Task[None] | None = None
        # Media events leave in the order they happened (one publisher task).
        self._out: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(4096)
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._subs.append(await self.store.subscribe(f"node:{self.node_id}", self._on_request))
        self._subs.append(await self.store.subscribe(f"reply:{self.node_id}", self._on_reply))
        self._renew = asyncio.create_task(self._renew_leases(), name="media-leases")
        self._publisher = asyncio.create_task(self._publish_events(), name="media-events")
        if self.recording is not None:
            # Every node seals what ends without a media node, and sweeps for what a
            # dead node left unsealed (never a recording still open: the crash repair
            # below closes those first, then seals them itself).
            self.recording.start(self.node_id)
        if self.media is not None and self.media.recorder is not None:
            await self._recover()

    async def close(self) -> None:
        if self.recording is not None:
            await self.recording.close()
        for task in (self._renew, self._publisher):
            if task is not None:
                task.cancel()
        for sub in self._subs + list(self._rooms.values()):
            await sub.close()
        for task in list(self._tasks):
            task.cancel()
        if self.media is not None:
            for session_id in list(self.media.rooms):
                await self.store.delete_ephemeral(f"media-owner:{session_id}")
            await self.media.close()

    def health(self) -> MediaCheck:
        media = self.media
        if media is None:
            return MediaCheck(ok=True, enabled=False)  # turned off: nothing to be unwell
        recorder = media.recorder
        state: Literal["off", "idle", "running", "stopped"] = "off"
        if recorder is not None:
            state = recorder.writer_state()  # its writer thread must live on once started
        error = None
        if state == "stopped":
            error = "the recorder's writer thread has stopped: sessions are not being recorded"
        return MediaCheck(
            ok=error is None, enabled=True, rooms=len(media.rooms), recorder=state, error=error
        )

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
        node = await self._owner(session_id)
        if node == self.node_id:
            return await self._local("negotiate", args)
        return await self._remote(node, "negotiate", args)

    async def tracks(self, session_id: str) -> list[dict[str, Any]]:
        """What is published in the session now (empty if no media node hosts it yet)."""
        lease = await self.store.get_ephemeral(f"media-owner:{session_id}")
        if lease is None:
            return []
        args = {"session_id": session_id}
        node = str(lease["node"])
        result = (
            await self._local("tracks", args)
            if node == self.node_id
            else await self._remote(node, "tracks", args)
        )
        return list(result["tracks"])

    async def ready(self, session_id: str, participant_id: str) -> None:
        lease = await self.store.get_ephemeral(f"media-owner:{session_id}")
        if lease is None:
            raise ServiceError("no_media", "no media connection to confirm: offer first")
        args = {"session_id": session_id, "participant_id": participant_id}
        node = str(lease["node"])
        if node == self.node_id:
            await self._local("ready", args)
        else:
            await self._remote(node, "ready", args)

    async def _owner(self, session_id: str) -> str:
        key = f"media-owner:{session_id}"
        for _ in range(3):
            lease = await self.store.get_ephemeral(key)
            if lease is not None:
                return str(lease["node"])
            if self.media is not None and await self.store.create_ephemeral(
                key, {"node": self.node_id}, LEASE_S
            ):
                return self.node_id
            if self.media is None:
                break
        raise Unavailable("media_unavailable", "no media server hosts this session")

    async def _remote(self, node: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        rid = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self.store.publish(
                f"node:{node}",
                {"type": "media.rpc", "id": rid, "op": op, "args": args, "reply_to": self.node_id},
            )
            reply = await asyncio.wait_for(fut, RPC_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(
                "media_unavailable", f"the media node {node} of this session did not answer"
            ) from None
        finally:
            self._pending.pop(rid, None)
        if "error" in reply:
            if reply["error"]["code"] == StoreUnavailable.code:
                raise StoreUnavailable(reply["error"]["message"])  # 503 here too
            raise ServiceError(reply["error"]["code"], reply["error"]["message"])
        return dict(reply["result"])

    def _on_reply(self, msg: dict[str, Any]) -> None:
        fut = self._pending.get(str(msg.get("id")))
        if fut is not None and not fut.done():
            fut.set_result(msg)

    # -- answering --------------------------------------------------------------------
    def _on_request(self, msg: dict[str, Any]) -> None:
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

    async def _local(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if self.media is None:
            raise Unavailable("media_unavailable", "media is turned off on this node")
        session_id = args["session_id"]
        try:
            if op == "tracks":
                return {"tracks": self.media.tracks(session_id)}
            if op == "ready":
                self.media.ready(session_id, args["participant_id"])
                return {}
        except MediaError as exc:
            raise ServiceError(exc.code, exc.message) from None
        if op != "negotiate":
            raise ServiceError("unknown_operation", f"no media operation {op!r}")
        await self._follow(session_id)
        if session_id not in self.media.rooms and self.recording is not None:
            # The room opens here now: record it if the policy (or a clerk) says so.
            case_id = await self.recording.room_opening(session_id)
            if case_id is not None and self.media.recorder is not None:
                self.media.start_recording(session_id, case_id)
        try:
            return await self.media.negotiate(
                session_id,
                args["participant_id"],
                args["owner"],
                args["sdp"],
                args["publish"],
                args["subscribe"],
            )
        except MediaError as exc:
            raise ServiceError(exc.code, exc.message) from None

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
                if pid and self.media is not None:
                    self._spawn(self._leave(session_id, pid))

        self._rooms[session_id] = await self.store.subscribe(f"session:{session_id}", on_event)

    async def _leave(self, session_id: str, participant_id: str) -> None:
        assert self.media is not None
        await self.media.leave(session_id, participant_id)
        if session_id not in self.media.rooms:
            # The room closed: another node may host it next. We keep following the
            # session so that its end is sealed into the case file.
            await self._release(session_id)

    async def watch(self, session_id: str) -> None:
        """Someone joined through this node: follow the session so that its case file
        is sealed when it ends, even if it never had media."""
        if self.recording is not None:
            await self._follow(session_id)

    async def _end(self, session_id: str) -> None:
        hosted = self.media is not None and session_id in self.media.rooms
        if self.media is not None:
            await self.media.end(session_id)  # returns once the track files are final
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
        if self.media is None or self.media.recorder is None:
            return
        if msg.get("active") and msg.get("case_id"):
            self.media.start_recording(session_id, str(msg["case_id"]))
        elif not msg.get("active"):
            await self.media.stop_recording(session_id)

    def _recording_event(self, session_id: str, msg: dict[str, Any]) -> None:
        """From the recorder, on the loop: a recording error goes to the clerk, the
        supervisors and the timeline at once."""
        if self.recording is not None and msg.get("type") == "recording.error":
            self._spawn(self.recording.failed(session_id, msg))

    async def _recover(self) -> None:
        """Recordings a crash left open: repair them before this node records again."""
        assert self.recording is not None
        found = await asyncio.to_thread(archive.open_track_indexes, self.recording.archive_dir)
        for directory, index in found:
            if await self._written_elsewhere(index):
                continue
            result = await asyncio.to_thread(archive.recover_session, directory, index)
            log.warning("recovered the recording of %s after a crash", result["session_id"])
            with contextlib.suppress(ServiceError):
                await self.recording.recovered(result)
                session_id = str(result["session_id"])
                # Seal it if it ended meanwhile (claimed: another node's sweeper may
                # find it at the same moment); else seal it here when it ends.
                if await self.recording.seal_once(session_id) is None:
                    await self._follow(session_id)

    async def _written_elsewhere(self, index: dict[str, Any]) -> bool:
        """Is a live process still writing this recording (shared archive, many nodes)?"""
        host = socket.gethostname()
        for run in index.get("runs", []):
            if run.get("state") != "open":
                continue
            if run.get("host") == host:
                pid = int(run.get("pid") or 0)
                if pid and pid != os.getpid() and _alive(pid):
                    return True
            else:
                lease = await self.store.get_ephemeral(f"media-owner:{index.get('session_id')}")
                if lease is not None and lease.get("node") != self.node_id:
                    return True
        return False

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

    async def _renew_leases(self) -> None:
        while not stopping():
            await asyncio.sleep(LEASE_S / 3)
            if self.media is None:
                continue
            for session_id in list(self.media.rooms):
                with contextlib.suppress(Exception):
                    await self.store.put_ephemeral(
                        f"media-owner:{session_id}", {"node": self.node_id}, LEASE_S
                    )

    # -- media events out to the session's sockets ------------------------------------
    def _emit(self, session_id: str, participant_id: str | None, msg: dict[str, Any]) -> None:
        topic = f"participant:{participant_id}" if participant_id else f"session:{session_id}"
        try:
            self._out.put_nowait((topic, {"v": 1, **msg}))
        except asyncio.QueueFull:
            log.warning("media event dropped: the store is not keeping up")

    async def _publish_events(self) -> None:
        outage = Outage("media events", log)
        while not stopping():
            topic, msg = await self._out.get()
            try:
                await self.store.publish(topic, msg)
            except StoreUnavailable as exc:
                outage.failed(exc)  # dropped, as a bus message may be
                continue
            except Exception:
                log.exception("publishing a media event failed")
            outage.ok()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
