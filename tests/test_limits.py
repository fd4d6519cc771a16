"""The rate-limit rules, fed numbers (signaling/limits.py, signaling/socketcaps.py)."""

from __future__ import annotations

from typing import Any

import pytest

from signaling.limits import KeyedBuckets, TokenBucket, retry_ms, window_retry, window_take
from signaling.socketcaps import SocketRegistry

# (capacity, rate, [(now, expected retry_after or None)], what it shows)
BUCKET_CASES: list[tuple[float, float, list[tuple[float, float | None]], str]] = [
    (2, 1.0, [(0, None), (0, None), (0, 1.0)], "a burst of capacity, then a wait"),
    (2, 1.0, [(0, None), (0, None), (0.5, 0.5), (1.0, None)], "refills at rate"),
    (1, 10.0, [(0, None), (0.05, 0.05), (0.1, None)], "fast refill"),
    (3, 1.0, [(0, None), (100, None), (100, None), (100, None), (100, 1.0)], "never past cap"),
    (1, 1.0, [(10, None), (5, 1.0), (11, None)], "a clock stepping back refills nothing"),
]


@pytest.mark.parametrize(("capacity", "rate", "steps", "why"), BUCKET_CASES)
def test_token_bucket(
    capacity: float, rate: float, steps: list[tuple[float, float | None]], why: str
) -> None:
    bucket = TokenBucket(capacity, rate)
    for now, expected in steps:
        got = bucket.take(now)
        assert (got is None) == (expected is None), (why, now, got)
        if expected is not None:
            assert got == pytest.approx(expected), (why, now)


def test_refused_take_spends_nothing() -> None:
    bucket = TokenBucket(1, 1.0)
    assert bucket.take(0) is None
    for _ in range(100):
        assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) is None  # the refusals did not push the next token away


@pytest.mark.parametrize(("capacity", "rate"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_bucket_rejects_nonsense(capacity: float, rate: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(capacity, rate)


def test_keyed_buckets_are_independent() -> None:
    buckets = KeyedBuckets(capacity=2, rate=1.0)
    assert buckets.take("a", 0) is None
    assert buckets.take("a", 0) is None
    assert buckets.take("a", 0) == pytest.approx(1.0)
    assert buckets.take("b", 0) is None  # another key has its own bucket


def test_keyed_buckets_forget_full_ones() -> None:
    buckets = KeyedBuckets(capacity=2, rate=1.0)
    for i in range(1000):
        buckets.take(f"k{i}", float(i))  # each key refills within 1 s
    assert len(buckets) <= 2


def test_keyed_buckets_stay_bounded_under_a_flood_of_distinct_keys() -> None:
    buckets = KeyedBuckets(capacity=5, rate=0.001, max_keys=100)
    for i in range(100_000):
        buckets.take(f"addr-{i}", 0.0)  # none ever refills: only the bound limits them
    assert len(buckets) == 100


def test_keyed_buckets_keep_the_busy_key_under_a_flood() -> None:
    buckets = KeyedBuckets(capacity=1, rate=0.001, max_keys=10)
    assert buckets.take("attacker", 0) is None
    for i in range(5):
        buckets.take(f"k{i}", 0)
        assert buckets.take("attacker", 0) is not None  # recently used: kept, still limited


def test_keyed_buckets_reject_zero_keys() -> None:
    with pytest.raises(ValueError):
        KeyedBuckets(1, 1.0, max_keys=0)


# (stored doc, now, cap, expected doc after one more use or None for refused)
WINDOW_CASES: list[tuple[dict[str, Any] | None, float, int, dict[str, Any] | None]] = [
    (None, 0.0, 3, {"w": 0, "n": 1}),
    ({"w": -1, "n": 0}, 30.0, 3, {"w": 0, "n": 1}),
    ({"w": 0, "n": 2}, 59.9, 3, {"w": 0, "n": 3}),
    ({"w": 0, "n": 3}, 59.9, 3, None),
    ({"w": 0, "n": 3}, 60.0, 3, {"w": 1, "n": 1}),
    ({"w": 5, "n": 3}, 60.0, 3, {"w": 1, "n": 1}),  # a counter from a skewed clock resets
]


@pytest.mark.parametrize(("doc", "now", "cap", "expected"), WINDOW_CASES)
def test_window_take(
    doc: dict[str, Any] | None, now: float, cap: int, expected: dict[str, Any] | None
) -> None:
    assert window_take(doc, now, cap, 60.0) == expected


@pytest.mark.parametrize(
    ("now", "expected"), [(0.0, 60.0), (59.5, 0.5), (60.0, 60.0), (125.0, 55.0)]
)
def test_window_retry(now: float, expected: float) -> None:
    assert window_retry(now, 60.0) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("seconds", "ms"), [(0.0, 1), (0.0001, 1), (0.05, 50), (0.0501, 51), (1.0, 1000)]
)
def test_retry_ms_rounds_up(seconds: float, ms: int) -> None:
    assert retry_ms(seconds) == ms


class FakeConn:
    def __init__(self) -> None:
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True


def test_registry_closes_the_oldest_over_the_identity_cap() -> None:
    reg = SocketRegistry(per_identity=2, per_address=100)
    conns = [FakeConn() for _ in range(4)]
    for c in conns:
        assert reg.admit("1.2.3.4")
        reg.attach("u", c)
    assert [c.evicted for c in conns] == [True, True, False, False]
    assert len(reg.by_identity["u"]) == 2
    for c in conns:
        reg.release("1.2.3.4", "u", c)
    assert reg.by_identity == {} and reg.by_address == {}


def test_registry_refuses_over_the_address_cap_and_counts_exactly() -> None:
    reg = SocketRegistry(per_identity=100, per_address=2)
    assert reg.admit("a") and reg.admit("a")
    assert not reg.admit("a")
    assert reg.admit("b")  # another address has its own count
    reg.release("a", None, None)  # released before it was attached (upgrade failed)
    assert reg.admit("a")
    assert not reg.admit("a")
    assert reg.by_address == {"a": 2, "b": 1}
