"""The one place that touches aiortc's and aioice's private internals.

aiortc keeps ICE, DTLS, SRTP and SDP; the SFU replaces its per-packet media path:

- ingress: each ICE socket's ``datagram_received`` is wrapped so SRTP/SRTCP packets
  are unprotected in place and handed to the SFU synchronously (no aioice STUN parse, no
  queue hop, no ``RtpPacket`` objects); STUN (consent checks) and DTLS still reach aioice.
- egress: ``Egress.send`` protects with the transport's SRTP session and writes to the
  nominated pair's socket directly.
- senders: aiortc's own RTCP for forwarded streams is silenced (the SFU sends sender
  reports translated from the publisher's), and the negotiated send and receive
  parameters are captured when aiortc starts each sender and receiver.
- host candidates: which addresses (loopback included) and ports the server binds.

aiortc is pinned (pyproject.toml); ``tests/test_aiortc_adapter.py`` fails loudly when an
upgrade moves any of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import aiortc
import pylibsrtp
from aiortc import RTCDtlsTransport, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters, RTCRtpSendParameters
from aiortc.rtp import RtpPacket
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

log = logging.getLogger(__name__)

PINNED_AIORTC = "1.16.0"
# Drop rather than queue when a subscriber's socket buffer is this full: a slow or
# vanished subscriber must never grow memory or delay anyone else.
MAX_SOCKET_BACKLOG = 256 * 1024
RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_PROTECTED = 1500 - 144  # libsrtp appends up to 144 bytes of tag and MKI

RtpHandler = Callable[[bytes], None]
RtcpHandler = Callable[[bytes], None]


def check_versions() -> None:
    if aiortc.__version__ != PINNED_AIORTC:
        raise RuntimeError(
            f"media_server.aiortc_adapter is written for aiortc {PINNED_AIORTC}, "
            f"found {aiortc.__version__}: re-check the internals it touches"
        )


# -- host candidates -------------------------------------------------------------------

_original_get_component_candidates = aioice.ice.Connection.get_component_candidates
_original_get_host_addresses = aioice.ice.get_host_addresses


def configure_host_candidates(addresses: list[str], port_range: tuple[int, int] | None) -> None:
    """Gather host candidates on exactly these addresses (loopback allowed), in a port range.

    aioice skips 127.0.0.1 and binds ephemeral ports; a server needs both under its
    operator's control. Process-wide, set once at start.
    """
    if addresses:
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)
    else:
        # Every interface, loopback too: a machine whose only network is loopback (a
        # laptop offline, a container) still connects to a browser on the same machine.
        def every_interface(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            found = _original_get_host_addresses(use_ipv4, use_ipv6)
            return [*found, "127.0.0.1"] if use_ipv4 and "127.0.0.1" not in found else found

        aioice.ice.get_host_addresses = every_interface
    if port_range is None:
        return
    low, high = port_range
    state = {"next": low}

    async def bind(address: str, loop: asyncio.AbstractEventLoop, factory: Any) -> Any:
        span = high - low + 1
        for _ in range(span):
            port = state["next"]
            state["next"] = low + (port - low + 1) % span
            try:
                return await loop.create_datagram_endpoint(factory, local_addr=(address, port))
            except OSError:
                continue
        raise OSError(f"no free UDP port in {low}-{high} on {address}")

    lock = asyncio.Lock()

    async def get_component_candidates(
        self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
    ) -> list[aioice.Candidate]:
        # One gathering at a time: each swaps the loop's method and puts it back.
        async with lock:
            return await gather_in_range(self, component, addresses, timeout)

    async def gather_in_range(
        self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int
    ) -> list[aioice.Candidate]:
        loop = asyncio.get_running_loop()
        original = loop.create_datagram_endpoint

        async def in_range(factory: Any, local_addr: Any = None, **kw: Any) -> Any:
            if local_addr is not None and local_addr[1] == 0 and not kw:
                return await bind(local_addr[0], loop, factory)
            return await original(factory, local_addr=local_addr, **kw)

        # aioice binds through the running loop; route only this call through the range.
        loop.create_datagram_endpoint = in_range  # type: ignore[method-assign, assignment]
        try:
            return await _original_get_component_candidates(self, component, addresses, timeout)
        finally:
            loop.create_datagram_endpoint = original  # type: ignore[method-assign]

    aioice.ice.Connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]


# -- per connection ---------------------------------------------------------------------


def dtls_transport(pc: RTCPeerConnection) -> RTCDtlsTransport | None:
    """The (bundled) DTLS transport of a connection, once it has one."""
    for transceiver in pc.getTransceivers():
        return transceiver.receiver.transport
    return None


class FastSrtp:
    """pylibsrtp's session without its per-call wrapper (a new length cell, a type check
    and two slice copies per packet, ~half the cost): the session's own buffer and one
    reused length cell. ``Egress.send`` protects in place with these fields (inlined: it
    runs once per subscriber per packet) and sends a view of the buffer at once (sendto
    copies it into the kernel) before the next call on the session reuses it."""

    __slots__ = ("_buf", "_cdata", "_ctx", "_len", "_view", "session")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self.session = session
        self._ctx = session._srtp[0]
        self._cdata = session._cdata
        self._buf = session._buffer
        self._view = memoryview(self._buf)
        self._len = _srtp_ffi.new("int *")

    def unprotect(self, packet: bytes) -> bytes | None:
        n = len(packet)
        if n > len(self._buf):
            return None
        self._buf[0:n] = packet
        self._len[0] = n
        if _srtp_lib.srtp_unprotect(self._ctx, self._cdata, self._len):
            return None  # replayed, forged or damaged
        return self._buf[0 : self._len[0]]


class Egress:
    """Protect and send on a connection's nominated ICE pair, without awaiting."""

    __slots__ = ("_addr", "_dtls", "_fast", "_ice", "_pair", "_transport", "dropped", "sent")

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self._dtls = dtls
        self._ice = dtls.transport._connection
        self._pair: Any = None
        self._transport: Any = None
        self._addr: Any = None
        self._fast: FastSrtp | None = None
        self.sent = 0
        self.dropped = 0

    def _route(self) -> bool:
        pair = self._ice._nominated.get(1)
        if pair is None:
            return False
        if pair is not self._pair:  # first send, or a new pair after an ICE restart
            self._pair = pair
            self._transport = pair.protocol.transport
            self._addr = pair.remote_addr  # a property that builds a tuple: cache it
        return True

    def send(self, packet: bytes) -> None:
        # The hot path of the SFU (once per subscriber per packet): checks inlined.
        fast = self._fast
        if fast is None or fast.session is not self._dtls._tx_srtp:
            srtp = self._dtls._tx_srtp
            if srtp is None:
                self.dropped += 1
                return
            fast = self._fast = FastSrtp(srtp)
        if self._ice._nominated.get(1) is not self._pair and not self._route():
            self.dropped += 1
            return
        transport = self._transport
        n = len(packet)
        if n > MAX_PROTECTED or transport.get_write_buffer_size() > MAX_SOCKET_BACKLOG:
            self.dropped += 1
            return
        fast._buf[0:n] = packet
        length = fast._len
        length[0] = n
        if _srtp_lib.srtp_protect(fast._ctx, fast._cdata, length):
            self.dropped += 1  # libsrtp refused (e.g. a repeated sequence number)
            return
        try:
            transport.sendto(fast._view[: length[0]], self._addr)
            self.sent += 1
        except OSError:
            self.dropped += 1

    def send_rtcp(self, packet: bytes) -> None:
        srtp = self._dtls._tx_srtp
        if srtp is None or not self._route():
            return
        with contextlib.suppress(pylibsrtp.Error, OSError):
            self._transport.sendto(srtp.protect_rtcp(packet), self._addr)


def install_ingress(dtls: RTCDtlsTransport, on_rtp: RtpHandler, on_rtcp: RtcpHandler) -> None:
    """Take SRTP/SRTCP straight from each ICE socket of this transport."""
    connection = dtls.transport._connection

    def wrap(protocol: Any) -> None:
        if getattr(protocol, "_jr_wrapped", False):
            return
        original = protocol.datagram_received

        fast: list[FastSrtp] = []

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            if len(data) < 2:
                # Nothing valid is this short. Anyone can send it to the port: it must not
                # raise here, nor reach aiortc, whose receive loop reads data[0] of it and
                # dies (an empty datagram would close the DTLS transport).
                return
            srtp = dtls._rx_srtp
            # 128-191: RTP/RTCP (RFC 7983). Everything else (STUN, DTLS) and anything
            # before DTLS is up goes the usual way.
            if srtp is None or not 127 < data[0] < 192:
                original(data, addr)
                return
            try:
                if 192 <= data[1] <= 223:
                    on_rtcp(srtp.unprotect_rtcp(data))
                    return
                if not fast or fast[0].session is not srtp:
                    fast[:] = [FastSrtp(srtp)]
                packet = fast[0].unprotect(data)
                if packet is not None:  # else replayed or forged: libsrtp said no
                    on_rtp(packet)
            except pylibsrtp.Error:
                pass
            except Exception:
                log.exception("media ingress failed")

        protocol.datagram_received = datagram_received
        protocol._jr_wrapped = True
        # aioice asks for 256 KiB; a busy loop (a burst of keyframes, a GC pause)
        # overflows that and the kernel drops media. Ask for more (capped at rmem_max).
        sock = protocol.transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        _read_until_empty(protocol)

    for protocol in connection._protocols:
        wrap(protocol)
    # Also neutralise the transport's own handlers: anything that still reaches them
    # (a packet queued before the wrap) must not hit aiortc's receivers.
    dtls._handle_rtp_data = _ignore_rtp  # type: ignore[method-assign]
    dtls._handle_rtcp_data = _ignore_rtcp  # type: ignore[method-assign]


def _read_until_empty(protocol: Any) -> None:
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


async def _ignore_rtp(data: bytes, arrival_time_ms: int) -> None:
    return None


async def _ignore_rtcp(data: bytes) -> None:
    return None


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """The media and RTX SSRCs aiortc chose for a sender (and put in the SDP)."""
    return sender._ssrc, sender._rtx_ssrc


def _after_first_call(obj: Any, name: str, callback: Callable[[Any], Any]) -> None:
    """Wrap ``obj.name(parameters)`` so ``callback(parameters)`` runs after its first call.

    aiortc calls a sender's ``send`` and a receiver's ``receive`` on every (re)negotiation
    but starts them only once; we want the parameters of that start, once."""
    original = getattr(obj, name)
    done = False

    async def wrapped(parameters: Any) -> None:
        nonlocal done
        await original(parameters)
        if not done:
            done = True
            result = callback(parameters)
            if result is not None:
                await result

    setattr(obj, name, wrapped)


def on_send_parameters(
    sender: RTCRtpSender, callback: Callable[[RTCRtpSendParameters], Awaitable[None] | None]
) -> None:
    """Call back with the negotiated parameters when aiortc starts the sender; silence
    aiortc's own RTCP for it (its sender reports would describe packets it never sent)."""

    async def no_rtcp(packets: Any) -> None:
        return None

    _after_first_call(sender, "send", callback)
    sender._send_rtcp = no_rtcp  # type: ignore[method-assign]
    quiet_rtcp(sender)


def quiet_rtcp(obj: RTCRtpSender | RTCRtpReceiver) -> None:
    """No RTCP timer task for a forwarded stream: aiortc's wakes every 0.5-1.5 s per
    sender and receiver to build reports the SFU does not send (it sends its own), and a
    wakeup costs more than the report. ``stop()`` still finds the events it waits for."""
    prefix = f"_{type(obj).__name__}__"
    started: asyncio.Event = getattr(obj, prefix + "rtcp_started")
    exited: asyncio.Event = getattr(obj, prefix + "rtcp_exited")

    async def idle() -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.get_running_loop().create_future()  # until stop() cancels it
        exited.set()

    obj._run_rtcp = idle  # type: ignore[method-assign]


def on_receive_parameters(
    receiver: RTCRtpReceiver,
    callback: Callable[[RTCRtpReceiveParameters], Awaitable[None] | None],
) -> None:
    _after_first_call(receiver, "receive", callback)


def on_received_packets(
    receiver: RTCRtpReceiver, callback: Callable[[RtpPacket, int], None], *, decode: bool = False
) -> None:
    """Client side, for load generation: see each received RTP packet (already parsed by
    aiortc). Without ``decode`` it replaces aiortc's handling (no depacketising, decoding
    or feedback); with it, aiortc handles the packet as usual afterwards."""
    original = receiver._handle_rtp_packet

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        callback(packet, arrival_time_ms)
        if decode:
            await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Client side: send the sender a PLI, as aiortc's receiver does when it sees a loss
    (for load generators that replaced aiortc's handling with their own)."""
    task = asyncio.ensure_future(receiver._send_rtcp_pli(media_ssrc))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


_pending: set[asyncio.Future[None]] = set()  # keep the tasks referenced until done


def impair_incoming(pc: RTCPeerConnection, loss: float, seed: int = 0) -> Callable[[], int]:
    """Drop this share of the RTP a connection receives (a lossy network, for tests and
    soak runs). Returns a function telling how many were dropped so far."""
    import random

    rng = random.Random(seed)
    dropped = 0
    dtls = dtls_transport(pc)
    assert dtls is not None
    for protocol in dtls.transport._connection._protocols:
        original = protocol.datagram_received

        def datagram_received(data: bytes, addr: Any, original: Any = original) -> None:
            nonlocal dropped
            if 127 < data[0] < 192 and not 192 <= data[1] <= 223 and rng.random() < loss:
                dropped += 1
                return
            original(data, addr)

        setattr(protocol, "datagram_received", datagram_received)  # noqa: B010
    return lambda: dropped


def stop_reading(pc: RTCPeerConnection) -> None:
    """Stop reading a connection's sockets: a frozen client (for tests)."""
    dtls = dtls_transport(pc)
    assert dtls is not None
    for protocol in dtls.transport._connection._protocols:
        transport: Any = protocol.transport
        if hasattr(transport, "pause_reading"):  # asyncio's selector loop
            transport.pause_reading()
        else:  # uvloop's UDP transport cannot pause: read and drop everything instead
            protocol.datagram_received = lambda data, addr: None  # type: ignore[method-assign]


def local_ports(pc: RTCPeerConnection) -> list[int]:
    """The UDP ports a connection's ICE sockets are bound to (for tests and diagnostics)."""
    dtls = dtls_transport(pc)
    if dtls is None:
        return []
    ports = []
    for protocol in dtls.transport._connection._protocols:
        sock: socket.socket | None = protocol.transport.get_extra_info("socket")
        if sock is not None:
            ports.append(sock.getsockname()[1])
    return ports


# -- for recording.live -------------------------------------------------------------------
# Live capture (``recording.live.track_capture``, on the recorder's writer thread) joins an
# H.264 frame's packets with aiortc's own depayloader (RFC 6184: single NAL units, STAP-A,
# FU-A), so an upgrade of aiortc has this one file to re-check. Public in aiortc, but in a
# submodule. (Imported here, not at the top, to keep this section apart.)

# (``as``: a re-export)
from aiortc.codecs.h264 import h264_depayload as h264_depayload  # noqa: E402
