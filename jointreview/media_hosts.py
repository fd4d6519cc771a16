"""A node's media hosts: where its sessions' media runs.

``media_workers = 1``: one ``LocalHost``, the SFU in the node's own process (as before).
More: a ``WorkerPool`` of ``WorkerHost``s, each a child process (``media_worker``) with
its own SFU, recorder and UDP ports, reached over a socketpair (``worker_channel``). The
pool notices a worker's death at once (end of its channel), hands the sessions it hosted
to ``on_lost`` and starts a new worker in its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jointreview
from media_server.errors import MediaError
from media_server.server import MediaServer
from media_server.settings import MediaSettings
from signaling.config import Config
from signaling.errors import ServiceError, Unavailable
from signaling.models import MediaCheck, MediaWorkerCheck

from .media_ops import CpuMeter, apply, load
from .pending_calls import PendingCalls
from .placement import HostLoad
from .worker_channel import read_msg, write_msg

log = logging.getLogger(__name__)

RPC_TIMEOUT_S = 15.0
ROOT = str(Path(jointreview.__file__).resolve().parent.parent)  # where our packages are
START_TIMEOUT_S = 30.0


class MediaHost(Protocol):
    index: int
    alive: bool
    pid: int
    restarts: int

    @property
    def rooms(self) -> set[str]: ...

    def stats(self) -> dict[str, Any]:
        """cpu (of one core), streams, recorder state."""
        ...

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]: ...


class LocalHost:
    """The SFU in this process (``media_workers = 1``)."""

    def __init__(self, media: MediaServer) -> None:
        self.media = media
        self.index = 0
        self.alive = True
        self.pid = os.getpid()
        self.restarts = 0
        self._meter = CpuMeter()

    @property
    def rooms(self) -> set[str]:
        return set(self.media.rooms)

    def stats(self) -> dict[str, Any]:
        return load(self.media, self._meter)

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            return await apply(self.media, op, args)
        except MediaError as exc:
            raise ServiceError(exc.code, exc.message) from None


def split_ports(ports: tuple[int, int] | None, count: int, index: int) -> tuple[int, int] | None:
    """Worker ``index``'s share of the node's UDP port range (None: any port)."""
    if ports is None:
        return None
    low, high = ports
    size = (high - low + 1) // count
    if size < 1:
        raise ValueError(f"media_port_min..max holds fewer ports than the {count} workers")
    start = low + index * size
    return (start, high if index == count - 1 else start + size - 1)


OnEvent = Callable[["WorkerHost", dict[str, Any]], None]


class WorkerHost:
    """One media worker process, seen from the control process."""

    def __init__(self, index: int, init: dict[str, Any], loop_kind: str, on_event: OnEvent) -> None:
        self.index = index
        self.init = init
        self.loop_kind = loop_kind
        self.on_event = on_event
        self.alive = False
        self.pid = 0
        self.restarts = 0
        self._rooms: set[str] = set()
        self._stats: dict[str, Any] = {"cpu": 0.0, "streams": 0, "recorder": "idle"}
        self.proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None
        self._calls = PendingCalls(RPC_TIMEOUT_S)
        self.exited: asyncio.Event = asyncio.Event()

    @property
    def rooms(self) -> set[str]:
        return self._rooms

    def stats(self) -> dict[str, Any]:
        return dict(self._stats)

    async def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        # The worker imports this very code (a worktree, a checkout), not an installed copy.
        root = ROOT
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "jointreview.media_worker",
                str(child.fileno()),
                self.loop_kind,
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
        finally:
            child.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        write_msg(self._writer, {**self.init, "worker": self.index})
        first = await asyncio.wait_for(read_msg(reader), START_TIMEOUT_S)
        if first is None or first.get("event") != "ready":
            raise RuntimeError(f"media worker {self.index} did not start")
        self.pid = int(first["pid"])
        self._rooms = set()
        self.exited = asyncio.Event()
        self.alive = True
        self._reader = asyncio.create_task(self._read(reader), name=f"media-worker-{self.index}")
        log.info("media worker %d started (pid %d)", self.index, self.pid)

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if not self.alive or self._writer is None:
            raise Unavailable("media_unavailable", f"media worker {self.index} is not running")
        writer = self._writer

        async def send(rid: str) -> None:
            write_msg(writer, {"id": rid, "op": op, "args": args})

        result = await self._calls.call(send, f"media worker {self.index} did not answer")
        sid = str(args.get("session_id"))
        if op == "negotiate":
            self._rooms.add(sid)  # before the next load report says so
        elif op == "end" or (op == "leave" and not result.get("hosted")):
            self._rooms.discard(sid)
        return result

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                msg = await read_msg(reader)
                if msg is None:
                    break
                if "id" in msg:
                    self._calls.answer(msg)
                elif msg.get("event") == "load":
                    self._rooms = set(msg.pop("rooms", []))
                    msg.pop("event")
                    self._stats = msg
                else:
                    self.on_event(self, msg)
        except Exception:
            log.exception("media worker %d sent what cannot be read", self.index)
        finally:
            self.alive = False
            self._calls.fail_all(
                Unavailable("media_unavailable", f"media worker {self.index} stopped")
            )
            if self.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()  # a worker that closed its channel is gone for us
                await self.proc.wait()
            self.exited.set()

    async def close(self) -> None:
        if self._writer is None:
            return
        if self.alive:
            with contextlib.suppress(ConnectionError):
                write_msg(self._writer, {"op": "close"})
                await self._writer.drain()
            # It ends its rooms (recordings final) and exits; a stuck one is killed.
            if self.proc is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), 10.0)
        self._writer.close()
        if self._reader is not None:
            await self._reader


OnLost = Callable[[WorkerHost, set[str]], None]


class WorkerPool:
    """N media workers, each started again when it dies."""

    def __init__(
        self,
        count: int,
        settings: MediaSettings,
        init: dict[str, Any],
        loop_kind: str,
        on_event: OnEvent,
        on_lost: OnLost,
        restart_s: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        self.on_lost = on_lost
        # A worker that died is started again after restart_s[0], doubling to [1].
        self.restart_min_s, self.restart_max_s = restart_s
        self.hosts: list[WorkerHost] = []
        for i in range(count):
            ports = split_ports(settings.port_range, count, i)
            own = dataclasses.replace(settings, port_range=ports)
            worker_init = {**init, "settings": dataclasses.asdict(own)}
            self.hosts.append(WorkerHost(i, worker_init, loop_kind, on_event))
        self._watchers: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        started = time.perf_counter()
        await asyncio.gather(*(h.start() for h in self.hosts))
        log.info("%d media workers in %.2f s", len(self.hosts), time.perf_counter() - started)
        self._watchers = [asyncio.create_task(self._watch(h)) for h in self.hosts]

    async def _watch(self, host: WorkerHost) -> None:
        delay = self.restart_min_s
        while not self._closing:
            await host.exited.wait()
            if self._closing:
                return
            lost = set(host.rooms)
            log.error(
                "media worker %d (pid %d) died; %d session(s) lost their media",
                host.index,
                host.pid,
                len(lost),
            )
            host.rooms.clear()
            self.on_lost(host, lost)
            while not self._closing:
                await asyncio.sleep(delay)
                delay = min(self.restart_max_s, delay * 2)
                try:
                    await host.start()
                except Exception:
                    log.exception("media worker %d did not start again", host.index)
                    continue
                host.restarts += 1
                delay = self.restart_min_s
                break

    async def close(self) -> None:
        self._closing = True
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*(h.close() for h in self.hosts), return_exceptions=True)


def health_of(hosts: list[MediaHost], workers: bool, draining: bool) -> MediaCheck:
    """``/healthz``'s media part: rooms, the recorder's writer, each worker."""
    checks = []
    for h in hosts:
        stats = h.stats()
        checks.append(
            MediaWorkerCheck(
                worker=h.index,
                pid=h.pid,
                alive=h.alive,
                rooms=len(h.rooms),
                streams=int(stats.get("streams", 0)),
                cpu=round(float(stats.get("cpu", 0.0)), 3),
                restarts=h.restarts,
                recorder=stats.get("recorder", "off"),
            )
        )
    states = {c.recorder for c in checks}
    recorder = next((s for s in ("stopped", "running", "idle") if s in states), "off")
    error = None
    if recorder == "stopped":
        error = "the recorder's writer thread has stopped: sessions are not being recorded"
    down = [c.worker for c in checks if not c.alive]
    if down:
        error = f"media worker(s) {down} down, being started again"
    return MediaCheck(
        ok=error is None,
        enabled=True,
        rooms=sum(c.rooms for c in checks),
        recorder=recorder,
        error=error,
        draining=draining,
        workers=checks if workers else [],
    )


def loads_of(hosts: list[MediaHost], node: str, draining: bool) -> list[HostLoad]:
    """This node's hosts as placement sees them (and the registry records them)."""
    now = time.time()
    out = []
    for h in hosts:
        stats = h.stats()
        out.append(
            HostLoad(
                node=node,
                worker=h.index,
                cpu=float(stats.get("cpu", 0.0)),
                streams=int(stats.get("streams", 0)),
                rooms=len(h.rooms),
                draining=draining,
                alive=h.alive,
                seen_at=now,
            )
        )
    return out


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
        video_floor_bitrate=config.media_video_floor_bitrate,
        mode=config.media_mode,
        quality_loss=config.exception_media_loss,
        quality_frozen_s=config.exception_media_frozen_s,
    )
