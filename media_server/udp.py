"""The media path's UDP sockets on the asyncio side (nothing of aiortc's here).

The adapter (``aiortc_adapter``) hooks aioice's ICE sockets; what it then does with a
socket is plain asyncio and lives here: binding in the operator's port range, a receive
buffer big enough for bursts, and reading a burst per wakeup on asyncio's selector loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

RECEIVE_BUFFER = 4 * 1024 * 1024


class PortRange:
    """Binds UDP endpoints on ports ``low``..``high``, round robin, skipping ports in use."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self._next = low

    async def bind(self, address: str, loop: asyncio.AbstractEventLoop, factory: Any) -> Any:
        span = self.high - self.low + 1
        for _ in range(span):
            port = self._next
            self._next = self.low + (port - self.low + 1) % span
            try:
                return await loop.create_datagram_endpoint(factory, local_addr=(address, port))
            except OSError:
                continue
        raise OSError(f"no free UDP port in {self.low}-{self.high} on {address}")


def enlarge_receive_buffer(transport: Any) -> None:
    """aioice asks for 256 KiB; a busy loop (a burst of keyframes, a GC pause) overflows
    that and the kernel drops media. Ask for more (the kernel caps it at rmem_max)."""
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


def read_until_empty(protocol: Any) -> None:
    """asyncio's selector loop reads one datagram per wakeup; a media socket receives
    bursts (a video frame is several packets). Read until the socket is empty instead, so
    one wakeup serves the whole burst. (uvloop, the default loop, already reads up to 32
    datagrams per wakeup: its transports have no ``_sock`` and are left alone.) The
    transport keeps its own reader registration semantics: pausing or closing it removes
    ours, as it would its own."""
    transport = protocol.transport
    raw = getattr(transport, "_sock", None)  # asyncio's selector transport: the socket
    loop = getattr(transport, "_loop", None)
    if raw is None or loop is None or getattr(transport, "_closing", True):
        return
    fd = raw.fileno()

    def read_ready() -> None:
        for _ in range(64):  # bounded: other sockets get their turn
            try:
                data, addr = raw.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                protocol.error_received(exc)
                return
            protocol.datagram_received(data, addr)  # looked up: wrappers may stack

    # The transport's own (private) registration calls: the public ones refuse an fd
    # that a transport owns. Without them (another loop), keep asyncio's reader.
    remove, add = getattr(loop, "_remove_reader", None), getattr(loop, "_add_reader", None)
    if remove is None or add is None:
        return
    remove(fd)
    add(fd, read_ready)
