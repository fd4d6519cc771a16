"""Placement by load, as a pure function (jointreview/placement.py): table-tested."""

from __future__ import annotations

import pytest

from jointreview.media_hosts import split_ports
from jointreview.placement import CPU_HIGH, HostLoad, choose

NOW = 1000.0
TTL = 5.0


def h(node: str, worker: int = 0, **kw: object) -> HostLoad:
    return HostLoad(node=node, worker=worker, seen_at=kw.pop("seen_at", NOW), **kw)  # type: ignore[arg-type]


CASES: list[tuple[str, list[HostLoad], dict[str, int], str | None]] = [
    ("nobody", [], {}, None),
    ("the only one", [h("a")], {}, "a/0"),
    ("least CPU", [h("a", 0, cpu=0.5), h("a", 1, cpu=0.2)], {}, "a/1"),
    ("fewer streams", [h("a", 0, streams=60), h("b", 0, streams=30)], {}, "b/0"),
    (
        "streams outweigh a little CPU",
        [h("a", 0, cpu=0.1, streams=90), h("a", 1, cpu=0.2)],
        {},
        "a/1",
    ),
    ("a placement not yet reported counts", [h("a", 0), h("a", 1)], {"a/0": 1}, "a/1"),
    ("two pending outweigh one", [h("a", 0), h("a", 1)], {"a/0": 2, "a/1": 1}, "a/1"),
    ("ties go to the first by name", [h("b", 0), h("a", 1), h("a", 0)], {}, "a/0"),
    ("a draining node takes none", [h("a", 0, draining=True), h("b", 0, cpu=0.6)], {}, "b/0"),
    ("all draining: nowhere", [h("a", 0, draining=True), h("a", 1, draining=True)], {}, None),
    ("a dead worker takes none", [h("a", 0, alive=False), h("a", 1, cpu=0.7)], {}, "a/1"),
    (
        "a stale heartbeat takes none",
        [h("a", 0, seen_at=NOW - TTL - 1), h("b", 0, cpu=0.7)],
        {},
        "b/0",
    ),
    (
        "a heartbeat within the TTL counts",
        [h("a", 0, seen_at=NOW - TTL), h("b", 0, cpu=0.7)],
        {},
        "a/0",
    ),
    (
        "a hot host only when all are hot",
        [h("a", 0, cpu=CPU_HIGH + 0.1), h("b", 0, cpu=CPU_HIGH - 0.1, streams=120)],
        {},
        "b/0",
    ),
    ("all hot: the least hot", [h("a", 0, cpu=0.95), h("b", 0, cpu=0.9)], {}, "b/0"),
]


@pytest.mark.parametrize(
    ("hosts", "pending", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_choose(hosts: list[HostLoad], pending: dict[str, int], expected: str | None) -> None:
    chosen = choose(hosts, NOW, TTL, pending)
    assert (chosen.host if chosen else None) == expected


def test_a_burst_spreads_over_workers() -> None:
    """Sessions placed faster than load reports come spread over the hosts."""
    hosts = [h("a", 0), h("a", 1), h("b", 0)]
    pending: dict[str, int] = {}
    order = []
    for _ in range(6):
        chosen = choose(hosts, NOW, TTL, pending)
        assert chosen is not None
        pending[chosen.host] = pending.get(chosen.host, 0) + 1
        order.append(chosen.host)
    assert sorted(order) == ["a/0", "a/0", "a/1", "a/1", "b/0", "b/0"]


@pytest.mark.parametrize(
    ("ports", "count", "expected"),
    [
        (None, 2, [None, None]),
        ((40000, 40099), 1, [(40000, 40099)]),
        ((40000, 40099), 2, [(40000, 40049), (40050, 40099)]),
        ((40000, 40100), 3, [(40000, 40032), (40033, 40065), (40066, 40100)]),
    ],
)
def test_workers_share_the_port_range(
    ports: tuple[int, int] | None, count: int, expected: list[tuple[int, int] | None]
) -> None:
    assert [split_ports(ports, count, i) for i in range(count)] == expected


def test_a_port_range_smaller_than_the_workers_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer ports"):
        split_ports((40000, 40000), 2, 0)
