"""A userspace impairment relay: what ``sch_netem`` would do, for kernels without it.

Tests and ``jointreview bench network`` put a browser in a network namespace whose only
way to the server is this relay (UDP for media, TCP for the page and its WebSocket).
Each datagram or chunk from or to the namespace passes ``Link.admit``: the pure rules
(delay, jitter, loss, a rate limit with a bounded queue, a cut that drops everything),
with the time and the random draw passed in so that they are table-tested without I/O.
Flows from other addresses (a clerk on the host) pass unimpaired.

TCP carries no loss (a real link's TCP turns loss into delay); a cut holds TCP data (up
to a bound) and lets it through when the link returns, as retransmission would.
A connection opened during a cut reaches the server only if the client still waits for
it when the link returns (as a lost SYN would be retried), never if it gave up.
``forget(addr)`` kills every flow of an address: after an address change, the page's
old flows die as they would on a real network (nothing tells the page).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import cast

# Bounds: a queue longer than this is tail-dropped (UDP) or stalls (TCP).
QUEUE_LIMIT_S = 0.5
TCP_HOLD_S = 120.0  # a cut longer than this: the held data is let through
MAX_UDP_FLOWS = 256  # per port: a test's browser opens a handful


@dataclass
class Impairment:
    """One direction's conditions; all zero: a clean link."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0  # 0..1
    rate_kbps: float = 0.0  # 0: unlimited
    cut: bool = False


@dataclass
class Link:
    """One direction of the link: when each packet leaves, or None (dropped)."""

    impairment: Impairment = field(default_factory=Impairment)
    busy_until: float = 0.0  # the rate limiter's queue drains at this time
    last_out: float = 0.0  # in-order delivery for TCP (no reordering there)

    def admit(self, now: float, size: int, draw: float, spread: float) -> float | None:
        """The delivery time of a ``size``-byte packet arriving at ``now`` (seconds), or
        None when it is dropped. ``draw`` in [0, 1) decides loss; ``spread`` in [-1, 1]
        scales the jitter (so jitter can reorder datagrams, as on a real path)."""
        imp = self.impairment
        if imp.cut:
            return None
        if imp.loss > 0 and draw < imp.loss:
            return None
        leave = now
        if imp.rate_kbps > 0:
            start = max(now, self.busy_until)
            if start - now >= QUEUE_LIMIT_S - 1e-9:
                return None  # tail drop: a bounded queue, never a multi-second buffer
            self.busy_until = start + size * 8 / (imp.rate_kbps * 1000)
            leave = self.busy_until
        return leave + max(0.0, imp.delay_ms + imp.jitter_ms * spread) / 1000

    def admit_stream(self, now: float, size: int) -> float:
        """A TCP chunk: never lost, never reordered, queued rather than dropped (the
        caller holds it during a cut and waits while the queue is long)."""
        imp = self.impairment
        leave = now
        if imp.rate_kbps > 0:
            self.busy_until = max(now, self.busy_until) + size * 8 / (imp.rate_kbps * 1000)
            leave = self.busy_until
        self.last_out = max(self.last_out, leave + imp.delay_ms / 1000)
        return self.last_out


class Relay:
    """UDP and TCP relays from ``listen_ip`` to ``target_ip``, same ports; flows whose
    client address is in ``impaired`` get ``up`` (toward the server) and ``down``."""

    def __init__(self, listen_ip: str, target_ip: str, impaired: str, seed: int = 1) -> None:
        self.listen_ip = listen_ip
        self.target_ip = target_ip
        self.impaired = ipaddress.ip_network(impaired)
        self.up = Link()
        self.down = Link()
        self.random = random.Random(seed)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._flows: dict[str, list[Callable[[], None]]] = {}
        self.tcp_ports: dict[int, int] = {}

    # -- control (from the test's thread) ------------------------------------------------

    def start(self) -> Relay:
        self._thread.start()
        return self

    def set(self, up: Impairment | None = None, down: Impairment | None = None) -> None:
        """New conditions, both directions unless given one by one."""
        self.up.impairment = up or Impairment()
        self.down.impairment = down or replace(self.up.impairment)

    def cut(self, on: bool) -> None:
        self.up.impairment.cut = on
        self.down.impairment.cut = on

    def forget(self, addr: str) -> None:
        """Every flow of ``addr`` dies silently (its address is gone)."""
        self._call(self._forget, addr)

    def udp(self, port: int) -> None:
        self._call(self._udp, port)

    def tcp(self, target_port: int) -> int:
        """A TCP relay to ``target_port``; its listening port (any free one)."""
        return cast(int, self._call(self._tcp, target_port))

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close)
        self._call(self._cancel_tasks)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def _call(self, fn: Callable[..., object], *args: object) -> object:
        async def run() -> object:
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    # -- the relay (the loop's thread) ---------------------------------------------------

    def _is_impaired(self, host: str) -> bool:
        return ipaddress.ip_address(host) in self.impaired

    def _later(self, link: Link, size: int, send: Callable[[], None], stream: bool) -> bool:
        now = self.loop.time()
        if stream:
            at: float | None = link.admit_stream(now, size)
        else:
            at = link.admit(now, size, self.random.random(), self.random.uniform(-1, 1))
        if at is None:
            return False
        if at <= now:
            send()
        else:
            self.loop.call_at(at, send)
        return True

    def _forget(self, addr: str) -> None:
        for kill in self._flows.pop(addr, []):
            kill()

    async def _udp(self, port: int) -> None:
        relay = self

        class Upstream(asyncio.DatagramProtocol):
            def __init__(self, client: tuple[str, int], front: asyncio.DatagramTransport):
                self.client, self.front = client, front

            def datagram_received(self, data: bytes, _addr: tuple[str, int]) -> None:
                if not relay._is_impaired(self.client[0]):
                    self.front.sendto(data, self.client)
                    return
                relay._later(
                    relay.down, len(data), lambda: self.front.sendto(data, self.client), False
                )

        class Front(asyncio.DatagramProtocol):
            def __init__(self) -> None:
                self.flows: dict[tuple[str, int], asyncio.DatagramTransport] = {}
                # Datagrams of a flow whose upstream socket is being opened: one socket
                # per client address and port, whatever arrives meanwhile.
                self.opening: dict[tuple[str, int], list[bytes]] = {}
                self.transport: asyncio.DatagramTransport | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                flow = self.flows.get(addr)
                if flow is not None:
                    self._send(flow, data, addr)
                elif addr in self.opening:
                    self.opening[addr].append(data)
                elif len(self.flows) + len(self.opening) < MAX_UDP_FLOWS:
                    self.opening[addr] = [data]
                    relay.loop.create_task(self._open(addr))

            def _send(
                self, flow: asyncio.DatagramTransport, data: bytes, addr: tuple[str, int]
            ) -> None:
                if relay._is_impaired(addr[0]):
                    relay._later(relay.up, len(data), lambda: flow.sendto(data), False)
                else:
                    flow.sendto(data)

            async def _open(self, addr: tuple[str, int]) -> None:
                assert self.transport is not None
                try:
                    flow, _ = await relay.loop.create_datagram_endpoint(
                        lambda: Upstream(addr, self.transport),  # type: ignore[arg-type]
                        remote_addr=(relay.target_ip, port),
                    )
                except OSError:
                    self.opening.pop(addr, None)
                    return
                self.flows[addr] = flow
                relay._transports.append(flow)

                def kill(a: tuple[str, int] = addr) -> None:
                    dead = self.flows.pop(a, None)
                    if dead is not None:
                        dead.close()

                relay._flows.setdefault(addr[0], []).append(kill)
                for data in self.opening.pop(addr, []):
                    self._send(flow, data, addr)

        transport, _ = await self.loop.create_datagram_endpoint(
            Front, local_addr=(self.listen_ip, port)
        )
        self._transports.append(transport)

    async def _tcp(self, target_port: int) -> int:
        async def pipe(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            link: Link | None,
            alive: list[bool],
        ) -> None:
            try:
                while data := await reader.read(65_536):
                    if not alive[0]:
                        return  # a dead flow: nothing passes, nothing is closed
                    if link is None:
                        writer.write(data)
                        continue
                    until = self.loop.time() + TCP_HOLD_S
                    while link.impairment.cut and self.loop.time() < until:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)  # a cut: TCP retransmits until it returns

                    def write(d: bytes = data) -> None:
                        writer.write(d)

                    self._later(link, len(data), write, True)
                    backlog = link.busy_until - self.loop.time()
                    if backlog > 0.1:
                        await asyncio.sleep(backlog - 0.1)  # back-pressure, bounded queue
            except (ConnectionError, OSError):
                pass
            if alive[0]:
                writer.close()

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            host = writer.get_extra_info("peername")[0]
            impaired = self._is_impaired(host)
            sent: bytes | None = b""
            if impaired and self.up.impairment.cut:
                sent = await self._born_in_a_cut(reader)
            if sent is None:
                writer.transport.abort()
                return
            try:
                up_r, up_w = await asyncio.open_connection(self.target_ip, target_port)
            except OSError:
                writer.close()
                return
            up_w.write(sent)
            alive = [True]
            self._writers += [writer, up_w]

            def kill() -> None:
                # Silence, not a reset: the server and the page learn it only by timing out.
                alive[0] = False

            self._flows.setdefault(host, []).append(kill)
            await asyncio.gather(
                pipe(reader, up_w, self.up if impaired else None, alive),
                pipe(up_r, writer, self.down if impaired else None, alive),
                return_exceptions=True,
            )

        server = await asyncio.start_server(client, self.listen_ip, 0)
        self._servers.append(server)
        port = int(server.sockets[0].getsockname()[1])
        self.tcp_ports[target_port] = port
        return port

    async def _born_in_a_cut(self, reader: asyncio.StreamReader) -> bytes | None:
        """A connection opened during a cut: its SYN would have been lost, so it reaches
        the server only if the client still tries when the link returns (a client that
        gave up meanwhile never connected). What it sent so far, or None when it gave up."""
        until = self.loop.time() + TCP_HOLD_S
        while self.up.impairment.cut and self.loop.time() < until:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        sent = b""
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65_536), 0.05)
            except TimeoutError:
                return sent  # still there, waiting for an answer
            except (ConnectionError, OSError):
                return None
            if not data:
                return None  # closed while the link was down
            sent += data

    async def _cancel_tasks(self) -> None:
        """The flows' tasks end before the loop stops (not "destroyed but pending")."""
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _close(self) -> None:
        for flows in self._flows.values():
            for kill in flows:
                kill()
        self._flows.clear()
        for server in self._servers:
            server.close()
        for transport in self._transports:
            transport.close()
        for writer in self._writers:
            writer.transport.abort()
