"""The child processes of ``jointreview bench sfu`` and what it reads of them: each load
generator (``Generator``, a ``python -m bench.sfu_load`` process spoken to in JSON lines),
CPU time and dropped datagrams from ``/proc``, logs, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any, BinaryIO


class BenchError(Exception):
    pass


# The longest event line a load generator may write. asyncio's default (64 KiB) was too
# short: a window's result holds every subscribed track (a six-party session alone has
# 60), and its latencies grew with the window until ``bench sfu --seconds 240`` failed with
# "Separator is found, but chunk is longer than limit". The latencies are now a histogram
# (``sfu_load.latency_histogram``): the line grows with the tracks, not with time.
EVENT_LINE_LIMIT = 64 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, with reaped children) of a process and its live
    descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{entry}/stat").read_text()
                stats[int(entry)] = text[text.rindex(")") + 2 :].split()
    total = 0.0
    todo = [pid]
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen or p not in stats:
            continue
        seen.add(p)
        f = stats[p]  # fields from the 3rd (state) on
        total += sum(int(x) for x in f[11:15]) / tick  # utime stime cutime cstime
        todo.extend(q for q, g in stats.items() if int(g[1]) == p)  # children (ppid)
    return total


def udp_drops(pid: int) -> int:
    """Datagrams the kernel dropped (receive buffer full) on the UDP sockets of a process."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if len(f) > 12 and f[9] in inodes:
                    total += int(f[12])
    return total


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the benchmark dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def open_log(path: Path) -> BinaryIO:
    return open(path, "wb")


async def spawn_speaking(
    argv: list[str], env: dict[str, str], log: BinaryIO, **kw: Any
) -> asyncio.subprocess.Process:
    """A child whose stdout is a pipe of JSON event lines (up to ``EVENT_LINE_LIMIT``
    bytes each) and whose stderr goes to ``log``."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env=env,
        limit=EVENT_LINE_LIMIT,
        **kw,
    )


def from_histogram(hist: dict[str, int]) -> list[float]:
    """The values of a ``sfu_load.latency_histogram``, each as often as counted."""
    return [float(k) for k, n in hist.items() for _ in range(int(n))]


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class Generator:
    """One load-generator process: send it commands, read its events."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ready = 0
        self.total = 0
        self.reported = False  # has said how many of its subscribers receive video
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError as exc:  # a line beyond the stream's limit: say so, not hang
                await self.events.put({"event": "error", "message": f"an event line: {exc}"})
                return
            if not line:
                break
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if event.get("event") == "progress":
                    self.ready, self.total = int(event["ready"]), int(event["total"])
                    self.reported = True
                else:
                    await self.events.put(event)
        await self.events.put({"event": "exit"})

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(Exception):
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())

    async def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        try:
            event = await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            raise BenchError(f"a load generator did not say {kind!r} in {timeout:.0f}s") from None
        if event.get("event") != kind:
            detail = event.get("message") or f"it said {event.get('event')!r}"
            raise BenchError(f"a load generator failed ({detail}); its log ends:\n{tail(self.log)}")
        return event
