"""The one place that touches aiortc's and aioice's private internals (``PRIVATE_NAMES``),
and that imports their submodules (RTCP's wire classes, ``MediaRelay``: re-exported).

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
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import aioice.turn
import aiortc
import pylibsrtp
from aiortc import RTCDtlsTransport, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import CODECS
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.h264 import h264_depayload as h264_depayload  # re-exported: recording.live
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from aiortc.contrib.media import MediaRelay  # noqa: F401  (re-exported: room.py)
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters, RTCRtpSendParameters
from aiortc.rtp import (  # noqa: F401  (re-exported: RTCP on the wire, for forwarder and peer)
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

from . import udp

log = logging.getLogger(__name__)

PINNED_AIORTC = "1.16.0"
# Every private name of aiortc, aioice and pylibsrtp used below, as (module, attribute
# path): tests/test_aiortc_adapter.py checks each against the installed packages (an
# attribute an instance gets in ``__init__`` counts), and that no other private name
# appears in this file. A section added below keeps its own ``*_PRIVATE_NAMES`` tuple.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("aioice.ice", "Connection._nominated"),
    ("aioice.ice", "Connection._protocols"),
    ("aiortc.rtcicetransport", "RTCIceTransport._connection"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._tx_srtp"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._rx_srtp"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._handle_rtp_data"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._handle_rtcp_data"),
    ("aiortc.rtcrtpsender", "RTCRtpSender._ssrc"),
    ("aiortc.rtcrtpsender", "RTCRtpSender._rtx_ssrc"),
    ("aiortc.rtcrtpsender", "RTCRtpSender._send_rtcp"),
    ("aiortc.rtcrtpsender", "RTCRtpSender._run_rtcp"),
    ("aiortc.rtcrtpsender", "RTCRtpSender.__rtcp_started"),
    ("aiortc.rtcrtpsender", "RTCRtpSender.__rtcp_exited"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver._run_rtcp"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.__rtcp_started"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.__rtcp_exited"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver._handle_rtp_packet"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver._send_rtcp_pli"),
    ("pylibsrtp", "Session._srtp"),
    ("pylibsrtp", "Session._cdata"),
    ("pylibsrtp", "Session._buffer"),
    ("pylibsrtp._binding", "ffi"),
    ("pylibsrtp._binding", "lib.srtp_protect"),
    ("pylibsrtp._binding", "lib.srtp_unprotect"),
)
# Drop rather than queue when a subscriber's socket buffer is this full: a slow or
# vanished subscriber must never grow memory or delay anyone else.
MAX_SOCKET_BACKLOG = 256 * 1024
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
host_addresses = aioice.ice.get_host_addresses  # aioice's own: jointreview/host_check.py


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
            found = host_addresses(use_ipv4, use_ipv6)
            return [*found, "127.0.0.1"] if use_ipv4 and "127.0.0.1" not in found else found

        aioice.ice.get_host_addresses = every_interface
    if port_range is None:
        return
    ports = udp.PortRange(*port_range)
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
                return await ports.bind(local_addr[0], loop, factory)
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
        udp.enlarge_receive_buffer(protocol.transport)
        udp.read_until_empty(protocol)

    for protocol in connection._protocols:
        wrap(protocol)
    # Also neutralise the transport's own handlers: anything that still reaches them
    # (a packet queued before the wrap) must not hit aiortc's receivers.
    dtls._handle_rtp_data = _ignore  # type: ignore[method-assign]
    dtls._handle_rtcp_data = _ignore  # type: ignore[method-assign]


async def _ignore(*args: Any, **kwargs: Any) -> None:  # aiortc passes arrival_time_ms=
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
    started: asyncio.Event = _mangled(obj, "__rtcp_started")
    exited: asyncio.Event = _mangled(obj, "__rtcp_exited")

    async def idle() -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.get_running_loop().create_future()  # until stop() cancels it
        exited.set()

    obj._run_rtcp = idle  # type: ignore[method-assign]


def _mangled(obj: Any, name: str) -> Any:
    """``obj.__name`` as its class's code sees it (Python mangles it to ``_Class__name``)."""
    return getattr(obj, f"_{type(obj).__name__}{name}")


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


def _ice_protocols(pc: RTCPeerConnection) -> list[Any]:
    dtls = dtls_transport(pc)
    return list(dtls.transport._connection._protocols) if dtls is not None else []


def impair_incoming(pc: RTCPeerConnection, loss: float, seed: int = 0) -> Callable[[], int]:
    """Drop this share of the RTP a connection receives (a lossy network, for tests and
    soak runs). Returns a function telling how many were dropped so far."""
    import random

    rng = random.Random(seed)
    dropped = 0
    for protocol in _ice_protocols(pc):
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
    for protocol in _ice_protocols(pc):
        transport: Any = protocol.transport
        if hasattr(transport, "pause_reading"):  # asyncio's selector loop
            transport.pause_reading()
        else:  # uvloop's UDP transport cannot pause: read and drop everything instead
            protocol.datagram_received = lambda data, addr: None


def local_ports(pc: RTCPeerConnection) -> list[int]:
    """The UDP ports a connection's ICE sockets are bound to (for tests and diagnostics)."""
    socks = (p.transport.get_extra_info("socket") for p in _ice_protocols(pc))
    return [sock.getsockname()[1] for sock in socks if sock is not None]


# -- for bench/: load generation and synthetic media ---------------------------------------
# The server calls none of these; bench/ reaches into aiortc and aioice only through them.

BENCH_PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("aiortc.codecs.vpx", "Vp8Encoder._packetize"),
    ("aiortc.codecs.h264", "H264Encoder._packetize"),
    ("aiortc.codecs.h264", "H264Encoder._split_bitstream"),
    # Not underscored, but set from outside: aioice reads it each time it opens a socket.
    ("aioice.turn", "UDP_SOCKET_BUFFER_SIZE"),
)


def packetize_vp8(frame: bytes, picture_id: int) -> list[bytes]:
    """RTP payloads of one VP8 frame, as aiortc's sender cuts them (picture id 15 bits)."""
    return list(Vp8Encoder._packetize(frame, picture_id))


def packetize_h264(access_unit: bytes) -> list[bytes]:
    """RTP payloads of one H.264 access unit (Annex B), as aiortc's sender cuts them:
    single NAL units, STAP-A aggregates and FU-A fragments."""
    return list(H264Encoder._packetize(H264Encoder._split_bitstream(access_unit)))


def parse_vp8_payload(payload: bytes) -> tuple[bool, bytes]:
    """(does this packet start a VP8 frame, the VP8 data after the payload descriptor).

    A frame starts at the start of partition 0 (RFC 7741 4.2). Raises ``ValueError`` on a
    malformed descriptor."""
    descriptor, data = VpxPayloadDescriptor.parse(payload)
    return descriptor.partition_start == 1 and descriptor.partition_id == 0, data


def rtx_payload_types() -> frozenset[int]:
    """The payload types aiortc offers for video retransmission (RTX)."""
    return frozenset(
        c.payloadType
        for c in CODECS["video"]
        if c.payloadType is not None and c.mimeType.lower().endswith("/rtx")
    )


def set_turn_socket_buffer(size: int) -> None:
    """The receive buffer (bytes) of every ICE socket this process opens from now on
    (aioice sets ``SO_RCVBUF`` to ``turn.UDP_SOCKET_BUFFER_SIZE``, 256 KB, on each).
    Process-wide."""
    aioice.turn.UDP_SOCKET_BUFFER_SIZE = size
