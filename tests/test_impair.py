"""The impairment relay's rules (bench/impair.py), sans I/O: time and draws passed in;
and the relay itself over loopback (UDP and TCP, a cut, a dead address)."""

from __future__ import annotations

import socket
import time

import pytest

from bench.impair import QUEUE_LIMIT_S, Impairment, Link, Relay

# (conditions, arrivals [(now, size, draw, spread)], expected delivery times or None)
CASES = [
    ("clean", Impairment(), [(1.0, 100, 0.5, 0.0)], [1.0]),
    ("delay", Impairment(delay_ms=50), [(1.0, 100, 0.5, 0.0)], [1.05]),
    (
        "jitter reorders",
        Impairment(delay_ms=50, jitter_ms=40),
        [(1.0, 100, 0.5, 1.0), (1.001, 100, 0.5, -1.0)],
        [1.09, 1.011],
    ),
    ("jitter never negative", Impairment(delay_ms=10, jitter_ms=40), [(1.0, 1, 0.5, -1.0)], [1.0]),
    (
        "loss by the draw",
        Impairment(loss=0.1),
        [(1.0, 100, 0.05, 0.0), (1.0, 100, 0.1, 0.0), (1.0, 100, 0.9, 0.0)],
        [None, 1.0, 1.0],
    ),
    ("cut drops all", Impairment(cut=True), [(1.0, 100, 0.9, 0.0)], [None]),
    (
        # 1000 bytes at 80 kbps: 0.1 s each; the queue drains in order.
        "rate queues",
        Impairment(rate_kbps=80),
        [(1.0, 1000, 0.5, 0.0), (1.0, 1000, 0.5, 0.0), (1.5, 1000, 0.5, 0.0)],
        [1.1, 1.2, 1.6],
    ),
    (
        "rate tail-drops past the queue bound",
        Impairment(rate_kbps=80),
        [(1.0, 1000, 0.5, 0.0)] * 7,
        [1.1, 1.2, 1.3, 1.4, 1.5, None, None],  # the 6th would wait 0.5 s
    ),
]


@pytest.mark.parametrize(
    ("conditions", "arrivals", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_link_rules(
    conditions: Impairment,
    arrivals: list[tuple[float, int, float, float]],
    expected: list[float | None],
) -> None:
    link = Link(conditions)
    got = [link.admit(*a) for a in arrivals]
    assert [None if g is None else round(g, 6) for g in got] == expected


def test_queue_bound_is_what_the_cases_assume() -> None:
    assert QUEUE_LIMIT_S == 0.5


def test_stream_chunks_queue_in_order_and_are_never_dropped() -> None:
    link = Link(Impairment(rate_kbps=80, delay_ms=20, loss=0.9))
    got = [round(link.admit_stream(1.0, 1000), 6) for _ in range(8)]
    assert got == [1.12, 1.22, 1.32, 1.42, 1.52, 1.62, 1.72, 1.82]
    link.impairment = Impairment()
    assert link.admit_stream(1.0, 10) == pytest.approx(1.82)  # never before the earlier ones


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_relay_over_loopback_passes_cuts_and_forgets() -> None:
    """127.0.0.2 → relay on 127.0.0.3 → echo servers on 127.0.0.1 (UDP and TCP)."""
    port = _free_udp_port()
    echo_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo_udp.bind(("127.0.0.1", port))
    echo_tcp = socket.create_server(("127.0.0.1", 0))
    relay = Relay("127.0.0.3", "127.0.0.1", "127.0.0.2/32").start()
    try:
        relay.udp(port)
        web = relay.tcp(echo_tcp.getsockname()[1])
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.2", 0))
        client.settimeout(2)

        def round_trip(payload: bytes) -> bytes | None:
            client.sendto(payload, ("127.0.0.3", port))
            echo_udp.settimeout(2)
            try:
                data, addr = echo_udp.recvfrom(100)
            except TimeoutError:
                return None
            echo_udp.sendto(data, addr)
            got, _ = client.recvfrom(100)
            return got

        assert round_trip(b"one") == b"one"
        relay.cut(True)
        client.sendto(b"lost", ("127.0.0.3", port))
        echo_udp.settimeout(0.3)
        with pytest.raises(TimeoutError):
            echo_udp.recvfrom(100)
        relay.cut(False)
        assert round_trip(b"two") == b"two"

        # TCP: held during a cut, delivered when it returns; a forgotten address is silent.
        conn = socket.create_connection(("127.0.0.3", web), source_address=("127.0.0.2", 0))
        conn.settimeout(3)
        server_side, _ = echo_tcp.accept()
        relay.cut(True)
        conn.sendall(b"held")
        time.sleep(0.3)
        relay.cut(False)
        server_side.settimeout(3)
        assert server_side.recv(10) == b"held"
        relay.forget("127.0.0.2")
        conn.sendall(b"gone")
        server_side.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server_side.recv(10)
        conn.close()
        server_side.close()
        client.close()
    finally:
        relay.close()
        echo_udp.close()
        echo_tcp.close()


def test_a_connection_opened_during_a_cut_arrives_only_if_its_client_still_waits() -> None:
    """As a lost SYN: one that gave up during the cut never reaches the server."""
    target = socket.create_server(("127.0.0.1", 0))
    relay = Relay("127.0.0.3", "127.0.0.1", "127.0.0.2/32").start()
    try:
        web = relay.tcp(target.getsockname()[1])
        relay.cut(True)
        gave_up = socket.create_connection(("127.0.0.3", web), source_address=("127.0.0.2", 0))
        gave_up.sendall(b"abandoned")
        waits = socket.create_connection(("127.0.0.3", web), source_address=("127.0.0.2", 0))
        waits.sendall(b"still here")
        time.sleep(0.2)
        gave_up.close()
        time.sleep(0.2)
        relay.cut(False)
        target.settimeout(3)
        server_side, _ = target.accept()
        server_side.settimeout(3)
        assert server_side.recv(20) == b"still here"
        target.settimeout(0.5)
        with pytest.raises(TimeoutError):
            target.accept()
        waits.close()
        server_side.close()
    finally:
        relay.close()
        target.close()
