"""What this machine charges for the two things an SFU does per packet besides its own
work: waking its event loop, and a ``sendto`` on loopback, which also wakes the receiving
process when it sleeps. ``jointreview bench sfu`` measures both (a few seconds) and prints
them with its results, since on a virtual machine they can dwarf the forwarding itself
and they are what a loopback benchmark charges the SFU for its local subscribers.

Each figure is CPU time of this process per event (median of a few rounds), measured
against a child process that sends or receives.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import statistics
import time
from typing import Any

import uvloop

PACKET = b"\x80" * 1200
ROUNDS = 3


def _child(target: Any) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            target()
        finally:
            os._exit(0)
    return pid


def _pace(port: int, rate: float) -> None:
    """Child: one datagram to ``port`` every 1/rate s, until killed."""
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t = time.monotonic()
    while True:
        t += 1 / rate
        time.sleep(max(0.0, t - time.monotonic()))
        out.sendto(PACKET, ("127.0.0.1", port))


def _drain(sock: socket.socket) -> None:
    """Child: sleep in epoll until a datagram comes, read all there is, sleep again."""
    sock.setblocking(False)
    poll = select.epoll()
    poll.register(sock.fileno(), select.EPOLLIN)
    while True:
        poll.poll()
        try:
            while True:
                sock.recv(2048)
        except BlockingIOError:
            pass


def loop_wakeup_us(seconds: float = 1.0, rate: float = 200.0) -> float:
    """CPU per datagram of a uvloop endpoint woken for each one (doing nothing with it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    async def measure() -> float:
        got = 0

        class Counter(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                nonlocal got
                got += 1

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Counter, sock=sock)
        try:
            await asyncio.sleep(0.3)
            results = []
            for _ in range(ROUNDS):
                c0, n0 = time.process_time(), got
                await asyncio.sleep(seconds)
                if got > n0:
                    results.append((time.process_time() - c0) / (got - n0) * 1e6)
            return statistics.median(results) if results else float("nan")
        finally:
            transport.close()

    pid = _child(lambda: _pace(port, rate))
    try:
        return uvloop.run(measure())
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def sendto_us(seconds: float = 1.0, gap: float = 0.005) -> tuple[float, float]:
    """CPU per ``sendto`` to a process sleeping in epoll: the one that wakes it (one
    datagram every ``gap`` s), and the ones that find it awake (the rest of a burst)."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    address = sink.getsockname()
    pid = _child(lambda: _drain(sink))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        time.sleep(0.2)
        first: list[float] = []
        rest: list[float] = []
        end = time.monotonic() + seconds * ROUNDS
        while time.monotonic() < end:
            t0 = time.thread_time()
            out.sendto(PACKET, address)
            t1 = time.thread_time()
            for _ in range(7):
                out.sendto(PACKET, address)
            t2 = time.thread_time()
            first.append((t1 - t0) * 1e6)
            rest.append((t2 - t1) / 7 * 1e6)
            time.sleep(gap)
        return statistics.median(first), statistics.median(rest)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sink.close()
        out.close()


def measure() -> dict[str, float]:
    waking, awake = sendto_us()
    return {
        "loop_wakeup_us": round(loop_wakeup_us(), 1),
        "sendto_waking_us": round(waking, 1),
        "sendto_awake_us": round(awake, 1),
    }
