"""The idle inbox sockets of ``jointreview loadtest``: reviewers with the web page open
and nothing to do until an invitation rings. Each is a ``/ws`` socket that reads and
never writes; a ring is an ``invitation`` message for one of the run's (session,
department) pairs, timed from the moment the clerk's request for it left."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

WELCOME_TIMEOUT = 30.0
CLOSE_TOO_MANY_SOCKETS = 4408  # signaling.socketcaps: the identity's oldest socket


class Idle:
    def __init__(self, dept: str) -> None:
        self.dept = dept
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.rang: set[tuple[str, str]] = set()
        self.reader: asyncio.Task[None] | None = None


class IdleSockets:
    def __init__(
        self,
        url: str,
        idle: list[tuple[str, str]],
        args: argparse.Namespace,
        say: Callable[[str], None],
        errors: Counter[str],
    ) -> None:
        self.ws_url = url.replace("http", "ws", 1) + "/ws"
        self.idle = idle
        self.binds = [a.strip() for a in str(args.bind).split(",") if a.strip()]
        self.concurrency = int(args.connect_concurrency)
        self.say = say
        self.errors = errors
        self.sockets: list[Idle] = []
        self.sent: dict[tuple[str, str], float] = {}  # (session, dept) -> monotonic
        self.latencies: list[float] = []
        self.expected = 0
        self.closing = False
        self.https: list[aiohttp.ClientSession] = []
        self.rung = asyncio.Event()

    def open_count(self) -> int:
        return sum(1 for s in self.sockets if s.ws is not None and not s.ws.closed)

    async def open_all(self) -> None:
        if not self.idle:
            return
        for addr in self.binds or [""]:
            connector = aiohttp.TCPConnector(limit=0, local_addr=(addr, 0) if addr else None)
            self.https.append(aiohttp.ClientSession(connector=connector))
        gate = asyncio.Semaphore(self.concurrency)
        began = time.monotonic()
        opening = [
            asyncio.create_task(self._open(k, token, dept, gate))
            for k, (token, dept) in enumerate(self.idle)
        ]
        while not all(t.done() for t in opening):
            await asyncio.wait(opening, timeout=2.0)
            self.say(f"idle sockets: {self.open_count()} of {len(self.idle)} open")
        took = time.monotonic() - began
        self.say(f"idle sockets: {self.open_count()} open in {took:.1f}s")
        if self.errors.get("ws_429") or self.errors.get("ws_503"):
            self.say(
                "some sockets were turned away: a node admits max_sockets_per_address sockets "
                "from one address (--bind spreads them over several)"
            )

    async def _open(self, k: int, token: str, dept: str, gate: asyncio.Semaphore) -> None:
        idle = Idle(dept)
        http = self.https[k % len(self.https)]
        async with gate:
            try:
                ws = await http.ws_connect(
                    f"{self.ws_url}?token={token}", timeout=aiohttp.ClientWSTimeout(ws_close=5)
                )
                first = await ws.receive(WELCOME_TIMEOUT)
            except aiohttp.WSServerHandshakeError as exc:
                self.errors[f"ws_{exc.status}"] += 1
                return
            except TimeoutError:
                self.errors["ws_timeout"] += 1
                return
            except (aiohttp.ClientError, OSError) as exc:
                self.errors[f"ws_{type(exc).__name__}"] += 1
                return
        if first.type != aiohttp.WSMsgType.TEXT or json.loads(first.data).get("type") != "welcome":
            self.errors["ws_no_welcome"] += 1
            await ws.close()
            return
        idle.ws = ws
        idle.reader = asyncio.create_task(self._read(idle))
        self.sockets.append(idle)

    async def _read(self, idle: Idle) -> None:
        assert idle.ws is not None
        async for frame in idle.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            msg = json.loads(frame.data)
            if msg.get("type") != "invitation":
                continue
            inv = msg.get("invitation") or {}
            key = (str(inv.get("session_id")), str(inv.get("dept")))
            sent = self.sent.get(key)
            if sent is None or key in idle.rang:
                continue  # someone else's invitation, or a repeat
            idle.rang.add(key)
            self.latencies.append((time.monotonic() - sent) * 1000)
            if len(self.latencies) >= self.expected:
                self.rung.set()
        if not self.closing:
            code = idle.ws.close_code
            kind = "socket_cap" if code == CLOSE_TOO_MANY_SOCKETS else f"closed_{code}"
            self.errors[f"idle_socket_{kind}"] += 1

    def expect_ring(self, session_id: str, dept: str) -> None:
        """The clerk is about to invite ``dept`` to ``session_id``: its sockets should ring."""
        self.sent[(session_id, dept)] = time.monotonic()
        self.expected += sum(1 for s in self.sockets if s.dept == dept)
        self.rung.clear()

    async def wait_rings(self, timeout: float) -> None:
        if len(self.latencies) < self.expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.rung.wait(), timeout)
        missing = self.expected - len(self.latencies)
        if missing > 0:
            self.errors["ring_missing"] += missing

    def figures(self) -> dict[str, Any]:
        wanted: dict[str, int] = Counter(dept for _, dept in self.sent)
        return {
            "sockets": len(self.idle),
            "open": len(self.sockets),
            "open_at_end": self.open_count(),
            "expected": self.expected,
            "rang_all": sum(1 for s in self.sockets if len(s.rang) == wanted.get(s.dept, 0)),
        }

    async def close_all(self) -> None:
        self.closing = True
        gate = asyncio.Semaphore(200)

        async def close(idle: Idle) -> None:
            async with gate:
                if idle.ws is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(idle.ws.close(), 5)
            if idle.reader is not None:
                idle.reader.cancel()

        await asyncio.gather(*(close(s) for s in self.sockets))
        for http in self.https:
            await http.close()
