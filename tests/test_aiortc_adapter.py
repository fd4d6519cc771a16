"""media_server/aiortc_adapter.py: the aiortc/aioice internals it relies on, checked so an
upgrade fails here, loudly and by name, instead of silently in production; and the hooks
themselves on two real aiortc peers over loopback.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import random
import re
import socket
import struct
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aioice
import aioice.ice
import aiortc
import pylibsrtp
import pytest
from aiortc import (
    RTCConfiguration,
    RTCDtlsTransport,
    RTCIceTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, RtcpSrPacket

from bench.pattern_media import PatternVideoTrack
from media_server import aiortc_adapter as adapter
from media_server import rtp, udp
from tests.test_packaging import lock_pins

# -- the pin and the private API, statically ---------------------------------------------------


def test_aiortc_version_is_the_pinned_one() -> None:
    assert aiortc.__version__ == adapter.PINNED_AIORTC, (
        f"aiortc {aiortc.__version__} is installed, media_server.aiortc_adapter is written "
        f"for {adapter.PINNED_AIORTC}: re-check every internal it touches, then move the pin"
    )
    adapter.check_versions()


def test_pyproject_pins_the_version_the_adapter_is_written_for() -> None:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    pins = [d for d in project["project"]["dependencies"] if re.match(r"aiortc\b", d)]
    assert pins == [f"aiortc=={adapter.PINNED_AIORTC}"], (
        f"pyproject.toml has {pins}; media_server.aiortc_adapter.PINNED_AIORTC is "
        f"{adapter.PINNED_AIORTC}: an exact pin, the same in both"
    )


def test_the_lock_files_pin_the_versions_these_internals_are_checked_on() -> None:
    """Sites install requirements.lock (scripts/setup, deploy/README.md): the aiortc, aioice
    and pylibsrtp whose private names this module finds are the ones they get."""
    for lock in ("requirements.lock", "requirements-test.lock"):
        pins = lock_pins(lock)
        assert pins["aiortc"] == adapter.PINNED_AIORTC, lock
        for name in ("aiortc", "aioice", "pylibsrtp"):
            assert pins[name] == metadata.version(name), (
                f"{lock} pins {name} {pins[name]}, {metadata.version(name)} is installed: "
                "the internals were checked on another version than sites install"
            )


def registered_private_names() -> list[tuple[str, str]]:
    """Every section's registry: ``PRIVATE_NAMES`` and any other ``*_PRIVATE_NAMES``."""
    return [
        entry
        for name, names in vars(adapter).items()
        if name.endswith("PRIVATE_NAMES")
        for entry in names
    ]


def _assigned_in(cls: type, name: str) -> bool:
    """An attribute an instance gets in the code of its class (``self._x = ...``)."""
    pattern = re.compile(rf"\bself\.{re.escape(name)}\s*(:[^=\n]*)?=[^=]")
    for klass in cls.__mro__:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if pattern.search(source):
            return True
    return False


def _exists(module: str, path: str) -> bool:
    obj: Any = importlib.import_module(module)
    parts = path.split(".")
    for i, part in enumerate(parts):
        mangled = part
        if part.startswith("__") and isinstance(obj, type):  # as the class's code spells it
            mangled = f"_{obj.__name__}{part}"
        if hasattr(obj, mangled):
            obj = getattr(obj, mangled)
        elif isinstance(obj, type) and i == len(parts) - 1:
            return _assigned_in(obj, part)
        else:
            return False
    return True


def test_every_registered_private_name_still_exists() -> None:
    """An upgrade that moves any private name the adapter touches fails here, by name."""
    registry = registered_private_names()
    assert registry, "media_server.aiortc_adapter.PRIVATE_NAMES is empty"
    gone = [f"{module}.{path}" for module, path in registry if not _exists(module, path)]
    assert not gone, (
        f"aiortc {aiortc.__version__}: private names media_server/aiortc_adapter.py relies on "
        "are gone:\n  " + "\n  ".join(gone)
    )


# Underscore names the adapter gives itself (its classes' slots and fields are found in
# its source); a mark it leaves on aioice's objects starts with ``_jr_``.
OWN_MARK = "_jr_"


def _private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    return len(name) > 1 and name.startswith("_") and not dunder


def _adapter_private_uses(tree: ast.Module) -> tuple[set[str], set[tuple[str, str]]]:
    """Underscore attributes (``x._y``, ``getattr(x, "_y")``, a mangled ``"__y"``) and
    imports of private modules or names, each with the line it is on."""
    attrs: set[str] = set()
    imports: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            attrs.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.isidentifier() and _private(node.value):
                attrs.add(node.value)
        elif isinstance(node, ast.ImportFrom) and node.module:
            private_module = any(_private(part) for part in node.module.split("."))
            for alias in node.names:
                if private_module or _private(alias.name):
                    imports.add((node.module, alias.name))
    return attrs, imports


def _own_attributes(tree: ast.Module) -> set[str]:
    """What the adapter's own classes have: methods, ``__slots__``, ``self.x = ...``."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            methods = (ast.FunctionDef, ast.AsyncFunctionDef)
            own |= {f.name for f in node.body if isinstance(f, methods)}
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "__slots__":
                    own |= {e.value for e in ast.walk(node.value) if isinstance(e, ast.Constant)}
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    own.add(target.attr)
    return own


def test_the_registry_covers_every_private_name_in_the_adapter() -> None:
    tree = ast.parse(inspect.getsource(adapter))
    attrs, imports = _adapter_private_uses(tree)
    registry = registered_private_names()
    registered_attrs = {path.rsplit(".", 1)[-1] for _, path in registry}
    registered_imports = {(module, path.split(".")[0]) for module, path in registry}
    own = _own_attributes(tree)
    missing = sorted(
        name for name in attrs - own - registered_attrs if not name.startswith(OWN_MARK)
    )
    missing += sorted(f"from {m} import {n}" for m, n in imports - registered_imports)
    assert not missing, (
        "media_server/aiortc_adapter.py uses private names its *_PRIVATE_NAMES registry "
        "does not list (add them, as (module, attribute path)): " + ", ".join(missing)
    )


CORO, FUNC = "coroutine function", "function"

PRIVATE_METHODS = [
    # owner, attribute, kind, parameter names after self
    (RTCDtlsTransport, "_handle_rtp_data", CORO, ["data", "arrival_time_ms"]),
    (RTCDtlsTransport, "_handle_rtcp_data", CORO, ["data"]),
    (RTCRtpSender, "_send_rtcp", CORO, ["packets"]),
    (RTCRtpSender, "send", CORO, ["parameters"]),
    (RTCRtpReceiver, "receive", CORO, ["parameters"]),
    (RTCRtpReceiver, "_handle_rtp_packet", CORO, ["packet", "arrival_time_ms"]),
    (RTCRtpReceiver, "_send_rtcp_pli", CORO, ["media_ssrc"]),
    (RTCRtpSender, "_run_rtcp", CORO, []),
    (RTCRtpReceiver, "_run_rtcp", CORO, []),
    (aioice.ice.StunProtocol, "datagram_received", FUNC, ["data", "addr"]),
    (aioice.ice.StunProtocol, "connection_made", FUNC, ["transport"]),
]


@pytest.mark.parametrize(
    ("owner", "name", "kind", "params"),
    PRIVATE_METHODS,
    ids=[f"{o.__name__}.{n}" for o, n, _, _ in PRIVATE_METHODS],
)
def test_private_method(owner: type, name: str, kind: str, params: list[str]) -> None:
    where = f"{owner.__module__}.{owner.__name__}.{name}"
    assert hasattr(owner, name), f"{where} is gone: the adapter replaces or wraps it"
    attr = inspect.getattr_static(owner, name)
    assert inspect.isfunction(attr), f"{where} is no longer a plain method ({type(attr)})"
    is_coro = inspect.iscoroutinefunction(attr)
    assert is_coro == (kind == CORO), f"{where} should be a {kind}, the adapter awaits it so"
    names = list(inspect.signature(attr).parameters)[1:]
    assert names[: len(params)] == params, f"{where} now takes {names}, the adapter passes {params}"


def test_aioice_get_component_candidates_binds_the_way_the_port_range_expects() -> None:
    original = adapter._original_get_component_candidates
    assert inspect.iscoroutinefunction(original), "aioice Connection.get_component_candidates"
    assert list(inspect.signature(original).parameters)[:4] == [
        "self",
        "component",
        "addresses",
        "timeout",
    ], "aioice Connection.get_component_candidates changed its signature"
    source = inspect.getsource(original)
    binds = (
        r"loop\.create_datagram_endpoint\(\s*"
        r"lambda: StunProtocol\(self\), local_addr=\(address, 0\)\s*\)"
    )
    assert re.search(binds, source), (
        "aioice no longer binds host candidates with create_datagram_endpoint(f, "
        "local_addr=(a, 0)): configure_host_candidates' port range would silently stop applying"
    )
    assert "self._protocols" in source, "aioice no longer keeps its sockets in _protocols"


def test_aioice_get_host_addresses_is_looked_up_at_gathering() -> None:
    module_source = inspect.getsource(aioice.ice)
    assert re.search(
        r"^def get_host_addresses\(use_ipv4: bool, use_ipv6: bool\)", module_source, re.M
    ), "aioice.ice.get_host_addresses(use_ipv4, use_ipv6) is gone or changed"
    gather = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "get_host_addresses(" in gather, (
        "aioice's gather_candidates no longer calls the module-level get_host_addresses: "
        "configure_host_candidates' address list would be ignored"
    )


def test_aioice_candidate_pair_has_what_egress_uses() -> None:
    pair = aioice.ice.CandidatePair
    assert isinstance(inspect.getattr_static(pair, "remote_addr"), property), (
        "aioice CandidatePair.remote_addr is no longer a property"
    )
    assert "self.protocol = protocol" in inspect.getsource(pair.__init__), (
        "aioice CandidatePair no longer keeps .protocol"
    )


async def test_sender_ssrcs_exist_before_negotiation() -> None:
    pc = RTCPeerConnection()
    try:
        sender = pc.addTransceiver("video").sender
        ssrc, rtx = adapter.sender_ssrcs(sender)
        assert isinstance(ssrc, int) and isinstance(rtx, int) and ssrc != rtx, (
            "RTCRtpSender._ssrc/_rtx_ssrc are gone or not ints"
        )
    finally:
        await pc.close()


# -- live: two aiortc peers on loopback --------------------------------------------------------


@pytest.fixture
def host_candidates(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """configure_host_candidates, undone after the test (it patches aioice process-wide)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    monkeypatch.setattr(
        aioice.ice.Connection,
        "get_component_candidates",
        inspect.getattr_static(aioice.ice.Connection, "get_component_candidates"),
    )
    return adapter.configure_host_candidates


@pytest.fixture
def fast_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    """STUN consent checks every ~0.2 s and fatal after 3 misses: if the ingress hook
    swallowed STUN, the connection would die within the test instead of after 30 s."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)


@dataclass
class Pair:
    sender: RTCPeerConnection
    receiver: RTCPeerConnection
    video: Any  # the sender's transceiver
    states: list[tuple[str, str]] = field(default_factory=list)

    def dtls(self, pc: RTCPeerConnection) -> RTCDtlsTransport:
        dtls = adapter.dtls_transport(pc)
        assert dtls is not None
        return dtls

    def connected(self) -> bool:
        return self.sender.connectionState == self.receiver.connectionState == "connected"


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def connect(send_video: bool = True) -> Pair:
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = sender.addTransceiver(
        PatternVideoTrack(3, 160, 120) if send_video else "video", direction="sendonly"
    )
    pair = Pair(sender, receiver, video)
    for name, pc in (("sender", sender), ("receiver", receiver)):
        pc.on(
            "connectionstatechange", lambda n=name, p=pc: pair.states.append((n, p.connectionState))
        )
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    await until(pair.connected, 20, "both peers connected")
    return pair


@pytest.fixture
async def pair(host_candidates: Callable[..., None], fast_consent: None) -> AsyncIterator[Pair]:
    host_candidates(["127.0.0.1"], None)
    p = await connect()
    try:
        yield p
    finally:
        await p.sender.close()
        await p.receiver.close()


async def test_private_attributes_of_a_live_connection(pair: Pair) -> None:
    problems = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    for name, pc in (("sender", pair.sender), ("receiver", pair.receiver)):
        dtls = pair.dtls(pc)
        check(
            isinstance(getattr(dtls, "_tx_srtp", None), pylibsrtp.Session),
            f"{name}: RTCDtlsTransport._tx_srtp is not a pylibsrtp.Session once connected",
        )
        check(
            isinstance(getattr(dtls, "_rx_srtp", None), pylibsrtp.Session),
            f"{name}: RTCDtlsTransport._rx_srtp is not a pylibsrtp.Session once connected",
        )
        check(
            "_handle_rtp_data" not in vars(dtls) and "_handle_rtcp_data" not in vars(dtls),
            f"{name}: the handlers became instance attributes: replacing them may not stick",
        )
        ice = dtls.transport
        check(isinstance(ice, RTCIceTransport), f"{name}: RTCDtlsTransport.transport")
        conn = getattr(ice, "_connection", None)
        check(
            isinstance(conn, aioice.Connection),
            f"{name}: RTCIceTransport._connection is not an aioice.Connection",
        )
        if not isinstance(conn, aioice.Connection):
            continue
        nominated = getattr(conn, "_nominated", None)
        check(
            isinstance(nominated, dict) and 1 in nominated,
            f"{name}: aioice Connection._nominated has no pair for component 1",
        )
        protocols = getattr(conn, "_protocols", None)
        check(
            isinstance(protocols, list) and protocols,
            f"{name}: aioice Connection._protocols is not a non-empty list",
        )
        for protocol in protocols or []:
            check(
                isinstance(protocol, aioice.ice.StunProtocol),
                f"{name}: _protocols holds {type(protocol)}, not StunProtocol",
            )
            transport = getattr(protocol, "transport", None)
            for method in ("sendto", "get_write_buffer_size", "get_extra_info"):
                check(
                    callable(getattr(transport, method, None)),
                    f"{name}: StunProtocol.transport has no {method}() (Egress/local_ports)",
                )
        if isinstance(nominated, dict) and 1 in nominated:
            p = nominated[1]
            check(p.protocol in protocols, f"{name}: the nominated pair's .protocol is unknown")
            check(
                isinstance(p.remote_addr, tuple) and len(p.remote_addr) == 2,
                f"{name}: CandidatePair.remote_addr is not an (address, port) tuple",
            )
    ssrc, rtx = adapter.sender_ssrcs(pair.video.sender)
    check(
        isinstance(ssrc, int) and isinstance(rtx, int), "RTCRtpSender._ssrc/_rtx_ssrc are not ints"
    )
    assert not problems, "aiortc/aioice internals moved:\n  " + "\n  ".join(problems)


@dataclass
class Taps:
    rtp: list[bytes] = field(default_factory=list)
    rtcp: list[bytes] = field(default_factory=list)
    stun_to_aioice: int = 0


def tap(pair: Pair, pc: RTCPeerConnection) -> Taps:
    """install_ingress, with a counter of what it still hands to aioice (STUN)."""
    taps = Taps()
    dtls = pair.dtls(pc)
    for protocol in dtls.transport._connection._protocols:
        original = protocol.datagram_received

        def counting(data: bytes, addr: Any, original: Any = original) -> None:
            if data and data[0] < 2:  # STUN (RFC 7983)
                taps.stun_to_aioice += 1
            original(data, addr)

        protocol.datagram_received = counting
    adapter.install_ingress(dtls, taps.rtp.append, taps.rtcp.append)
    return taps


async def test_ingress_gets_decrypted_rtp_and_consent_keeps_flowing(pair: Pair) -> None:
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    taps = tap(pair, pair.receiver)
    start = time.monotonic()
    while time.monotonic() - start < 3.0:
        assert pair.connected(), f"connection dropped with the ingress hook: {pair.states}"
        await asyncio.sleep(0.1)

    assert len(taps.rtp) > 20, f"only {len(taps.rtp)} RTP packets reached the hook in 3 s"
    ssrc, _ = adapter.sender_ssrcs(pair.video.sender)
    headers = [rtp.parse(data) for data in taps.rtp]  # plain RTP: SRTP is already removed
    assert {h.ssrc for h in headers} == {ssrc}
    assert {h.payload_type for h in headers} == {97}, "VP8, as aiortc negotiated it"
    assert all(h.payload_end > h.payload_start for h in headers)
    assert sum(h.marker for h in headers) >= 20, "whole frames (~30 fps) keep coming"
    srs = [p for data in taps.rtcp for p in RtcpPacket.parse(data) if isinstance(p, RtcpSrPacket)]
    assert srs and {sr.ssrc for sr in srs} == {ssrc}, "SRTCP unprotected and handed over too"
    assert taps.stun_to_aioice > 0, "STUN (consent) must still reach aioice"
    assert not errors, errors


def rmem_max() -> int:
    with open("/proc/sys/net/core/rmem_max") as fh:
        return int(fh.read())


async def test_ingress_raises_the_receive_buffer(pair: Pair) -> None:
    """aioice's 256 KiB overflows under a burst of keyframes while the loop is busy: the
    kernel would drop media. On either event loop the ingress asks for 4 MiB (the kernel
    caps it at net.core.rmem_max and reports twice what it grants)."""
    dtls = pair.dtls(pair.receiver)
    sockets = [p.transport.get_extra_info("socket") for p in dtls.transport._connection._protocols]
    before = [s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for s in sockets]
    tap(pair, pair.receiver)
    cap = 2 * rmem_max()
    wanted = min(2 * udp.RECEIVE_BUFFER, cap)
    after = [s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for s in sockets]
    assert all(a >= wanted for a in after), f"receive buffers {before} -> {after}"


async def test_ingress_survives_runt_datagrams(pair: Pair) -> None:
    """Anyone can send anything to the ICE port: an empty or one-byte datagram must not
    raise in the socket callback, nor reach aiortc (whose receive loop indexes data[0])."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
    taps = tap(pair, pair.receiver)
    (port,) = adapter.local_ports(pair.receiver)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        for junk in (b"", b"\x80", b"\x00", b"\x16"):
            attacker.sendto(junk, ("127.0.0.1", port))
    before = len(taps.rtp)
    await asyncio.sleep(1.0)
    assert not errors, [str(e.get("exception") or e.get("message")) for e in errors]
    assert pair.connected(), pair.states
    assert len(taps.rtp) > before, "media still flows"


async def test_what_still_reaches_aiortcs_own_handlers_is_dropped(pair: Pair) -> None:
    """A packet aiortc read before the wrap reaches the transport's own handlers, called
    as aiortc calls them (rtcdtlstransport.py, ``_recv_next``): ignored, and the DTLS
    transport lives on (a handler that raised there closed the connection)."""
    taps = tap(pair, pair.receiver)
    dtls = pair.dtls(pair.receiver)
    rtp = struct.pack("!BBHII", 0x80, 97, 1, 0, 0x0DDBA11) + bytes(20)
    await dtls._handle_rtp_data(rtp, arrival_time_ms=0)
    await dtls._handle_rtcp_data(b"\x81\xc9" + bytes(6))
    before = len(taps.rtp)
    await asyncio.sleep(0.5)
    assert pair.connected(), pair.states
    assert len(taps.rtp) > before, "media still flows"


async def test_egress_delivers_to_the_other_side(pair: Pair) -> None:
    received = tap(pair, pair.sender)  # the sender side's own ingress sees what we send
    egress = adapter.Egress(pair.dtls(pair.receiver))
    packets = [
        struct.pack("!BBHII", 0x80, 0x80 | 97, 4000 + i, 90_000 * i, 0x0DDBA11) + bytes([i]) * 300
        for i in range(5)
    ]
    for packet in packets:
        egress.send(packet)
    pli = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=0x0DDBA11, media_ssrc=0x1234))
    egress.send_rtcp(pli)
    await until(lambda: len(received.rtp) >= 5 and pli in received.rtcp, 3, "egress packets")
    assert received.rtp[:5] == packets, "bytes arrive as sent (protected, then unprotected)"
    assert (egress.sent, egress.dropped) == (5, 0)
    assert pair.connected()


async def test_egress_drops_before_dtls(host_candidates: Callable[..., None]) -> None:
    host_candidates(["127.0.0.1"], None)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video")
        await pc.setLocalDescription(await pc.createOffer())
        egress = adapter.Egress(pair_dtls(pc))
        egress.send(b"\x80" + bytes(20))
        egress.send_rtcp(b"\x81\xc9" + bytes(6))
        assert (egress.sent, egress.dropped) == (0, 1)
    finally:
        await pc.close()


def pair_dtls(pc: RTCPeerConnection) -> RTCDtlsTransport:
    dtls = adapter.dtls_transport(pc)
    assert dtls is not None
    return dtls


# -- host candidates ---------------------------------------------------------------------------


def _free_range(size: int) -> tuple[int, int]:
    for _ in range(50):
        low = random.randrange(20_000, 60_000 - size)
        socks = []
        try:
            for port in range(low, low + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return low, low + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range")


async def test_port_range_binds_inside_it(
    host_candidates: Callable[..., None], fast_consent: None
) -> None:
    low, high = _free_range(6)
    host_candidates(["127.0.0.1"], (low, high))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", low))  # taken by someone else: skipped
        p = await connect(send_video=False)
        try:
            ports = adapter.local_ports(p.sender) + adapter.local_ports(p.receiver)
            assert len(ports) == 2 and len(set(ports)) == 2, ports
            assert all(low < port <= high for port in ports), (ports, (low, high))
            candidates = [
                c
                for pc in (p.sender, p.receiver)
                for c in pair_dtls(pc).transport.iceGatherer.getLocalCandidates()
            ]
            assert {c.ip for c in candidates} == {"127.0.0.1"}, "loopback only, as configured"
        finally:
            await p.sender.close()
            await p.receiver.close()


async def test_without_port_range_binds_ephemeral(host_candidates: Callable[..., None]) -> None:
    original = inspect.getattr_static(aioice.ice.Connection, "get_component_candidates")
    host_candidates(["127.0.0.1"], None)
    assert inspect.getattr_static(aioice.ice.Connection, "get_component_candidates") is original
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]


@pytest.mark.parametrize("kind", ["sender", "receiver"])
async def test_quiet_rtcp_keeps_stop_working(kind: str) -> None:
    """quiet_rtcp replaces aiortc's RTCP timer task; the events stop() waits for (private,
    name-mangled) must still be set, or closing a connection would hang."""
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video")
    obj: Any = transceiver.sender if kind == "sender" else transceiver.receiver
    owner = type(obj).__name__
    for event in ("rtcp_started", "rtcp_exited"):
        assert isinstance(getattr(obj, f"_{owner}__{event}", None), asyncio.Event), (
            f"aiortc {owner}.__{event} moved: media_server.aiortc_adapter.quiet_rtcp needs it"
        )
    adapter.quiet_rtcp(obj)
    task = asyncio.ensure_future(obj._run_rtcp())
    await asyncio.sleep(0)
    assert getattr(obj, f"_{owner}__rtcp_started").is_set()
    task.cancel()
    await asyncio.wait_for(getattr(obj, f"_{owner}__rtcp_exited").wait(), 1)
    await pc.close()


# -- for bench/ ---------------------------------------------------------------------------------


def test_every_internal_bench_uses_is_there() -> None:
    missing = []
    for module_name, dotted in adapter.BENCH_PRIVATE_NAMES:
        obj: Any = importlib.import_module(module_name)
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                missing.append(f"{module_name}.{dotted}")
                break
    assert not missing, (
        f"aiortc/aioice no longer have {missing}: the bench/ section of "
        "media_server/aiortc_adapter.py uses them (synthetic RTP, the load generator)"
    )
    # The buffer size is set on aioice.turn and must be read from there per socket.
    assert "turn.UDP_SOCKET_BUFFER_SIZE" in inspect.getsource(aioice.ice), (
        "aioice.ice no longer reads turn.UDP_SOCKET_BUFFER_SIZE when it opens a socket: "
        "set_turn_socket_buffer would silently do nothing"
    )
    # And the packetizers still cut frames as the callers expect: a list of payloads.
    assert adapter.packetize_vp8(bytes(3000), 7)[0][:1] == b"\x90"  # X=1, S=1, PID=0
    assert len(adapter.packetize_h264(b"\x00\x00\x00\x01\x65" + bytes(3000))) > 1
