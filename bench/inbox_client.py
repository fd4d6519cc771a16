"""One client process of ``jointreview bench inbox``: holds a share of the idle inbox
sockets and stamps when each invitation reaches each of them.

Run by ``bench.inbox`` as ``python -m bench.inbox_client``. It reads one JSON line on
stdin (``{"url": ..., "tokens": [...]}``), opens the sockets (at most ``OPEN_AT_ONCE``
handshakes at a time), says ``{"ready": n, "errors": e}``, then answers each ``report``
line on stdin with what arrived since the last one: ``{"recv": {invitation_id: [unix
times]}, "errors": e, "open": n}``. Several of these share the client work, so the
latency measured is the server's, not one client loop's queue.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import sys
import time
from typing import Any

import aiohttp

OPEN_AT_ONCE = 32  # handshakes in flight per client: under the server's accept backlog (128)


def raise_fd_limit() -> int:
    """As many descriptors as the hard limit allows (each socket is one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Holder:
    def __init__(self, url: str) -> None:
        self.ws_url = url.replace("http", "ws", 1).rstrip("/") + "/ws"
        self.recv: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.open = 0
        self.settled = 0  # handshakes done, whether they succeeded or not
        self.tasks: set[asyncio.Task[None]] = set()

    def error(self, what: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(what)
        else:
            self.errors[-1] = f"... and more: {what}"

    async def hold(self, http: aiohttp.ClientSession, token: str, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                ws = await http.ws_connect(
                    self.ws_url,
                    protocols=("jointreview.v1", f"bearer.{token}"),
                    heartbeat=None,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
                )
                first = await ws.receive()
            except (aiohttp.ClientError, OSError) as exc:
                self.settled += 1
                self.error(f"connect: {exc!r}")
                return
            self.settled += 1
            if first.type != aiohttp.WSMsgType.TEXT or json.loads(first.data)["type"] != "welcome":
                self.error(f"no welcome: {first.data!r}"[:200])
                await ws.close()
                return
        self.open += 1
        try:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                msg = json.loads(frame.data)
                if msg["type"] == "invitation":
                    inv = msg["invitation"]["invitation_id"]
                    self.recv.setdefault(inv, []).append(time.time())
                elif msg["type"] == "error":
                    self.error(f"error message: {frame.data[:200]}")
        finally:
            self.open -= 1
            if not ws.closed or ws.close_code not in (None, 1000, 1001):
                self.error(f"socket closed: {ws.close_code}")

    def report(self) -> dict[str, Any]:
        recv, self.recv = self.recv, {}
        errors, self.errors = self.errors, []
        return {"recv": recv, "errors": errors, "open": self.open}


def out(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def run() -> None:
    loop = asyncio.get_running_loop()
    spec = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    holder = Holder(spec["url"])
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    conn = aiohttp.TCPConnector(limit=0)
    # A node busy accepting thousands may take a while to take one more: not an error.
    patient = aiohttp.ClientTimeout(total=None, sock_connect=120)
    async with aiohttp.ClientSession(connector=conn, timeout=patient) as http:
        for token in spec["tokens"]:
            task = asyncio.create_task(holder.hold(http, token, gate))
            holder.tasks.add(task)
        said = time.monotonic()
        while holder.settled < len(spec["tokens"]):
            await asyncio.sleep(0.2)
            if time.monotonic() - said > 2.0:
                said = time.monotonic()
                out({"progress": holder.settled})
        # Thousands of long-lived sockets: the GC's full passes over them stalled this
        # client for seconds (timestamps late by as much); they are frozen out of it.
        gc.collect()
        gc.freeze()
        out({"ready": holder.open, "errors": holder.errors})
        holder.errors = []
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "quit":
                break
            out(holder.report())
        for task in holder.tasks:
            task.cancel()
        await asyncio.gather(*holder.tasks, return_exceptions=True)


def main() -> None:
    raise_fd_limit()
    try:
        import uvloop

        uvloop.run(run())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(run())


if __name__ == "__main__":
    main()
