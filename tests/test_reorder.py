"""``recording.live.reorder``: sequence order back from arrival order, table-tested with
time passed in (what the recorder's capture relies on for every track)."""

from __future__ import annotations

from typing import Any

import pytest

from recording.live.reorder import GAP, MAX_HELD, Reorder

G = GAP  # shorter in the tables


def _run(
    arrivals: list[tuple[int, float]], max_wait: float = 0.3, end: float | None = None
) -> list[Any]:
    """Push (seq, time) in arrival order; items are the sequence numbers themselves.
    ``end``: expire at that time, then drain (the track closed)."""
    r, out = Reorder(max_wait), []
    for seq, now in arrivals:
        r.push(seq, seq, now, out)
    if end is not None:
        r.expire(end, out)
    r.drain(out)
    return out


@pytest.mark.parametrize(
    ("arrivals", "want"),
    [
        ([(1, 0.0), (2, 0.01), (3, 0.02)], [1, 2, 3]),  # in order
        ([(1, 0.0), (3, 0.01), (2, 0.02), (4, 0.03)], [1, 2, 3, 4]),  # put back in order
        ([(1, 0.0), (2, 0.01), (2, 0.02), (1, 0.03), (3, 0.04)], [1, 2, 3]),  # duplicates, late
        ([(65534, 0.0), (65535, 0.01), (0, 0.02), (1, 0.03)], [65534, 65535, 0, 1]),  # wrap
        ([(1, 0.0), (3, 0.01), (4, 0.02), (5, 0.5)], [1, G, 3, 4, 5]),  # 2 never came: given up
        ([(1, 0.0), (3, 0.01), (2, 0.2)], [1, 2, 3]),  # retransmitted in time
        ([(1, 0.0), (3, 0.01), (4, 0.5), (2, 0.51)], [1, G, 3, 4]),  # too late: dropped
        ([(1, 0.0), (9000, 0.01), (9001, 0.02)], [1, G, 9000, 9001]),  # a jump: start over
    ],
)
def test_order_is_restored_or_the_gap_given_up(
    arrivals: list[tuple[int, float]], want: list[Any]
) -> None:
    assert _run(arrivals) == want


def test_a_gap_is_given_up_on_time_even_when_nothing_follows() -> None:
    r, out = Reorder(0.3), []
    for seq, now in [(1, 0.0), (3, 0.01), (4, 0.02)]:
        r.push(seq, seq, now, out)
    assert out == [1]
    r.expire(0.2, out)
    assert out == [1]  # still waiting for 2
    r.expire(0.32, out)
    assert out == [1, G, 3, 4]


def test_too_much_behind_a_gap_gives_it_up_at_once() -> None:
    arrivals = [(1, 0.0)] + [(3 + i, 0.0) for i in range(MAX_HELD + 1)]
    out = _run(arrivals, max_wait=60.0)
    assert out[:2] == [1, G] and out[2:] == list(range(3, 3 + MAX_HELD + 1))


def test_a_closing_track_drains_what_is_held() -> None:
    assert _run([(1, 0.0), (3, 0.01), (5, 0.02)], end=0.05) == [1, G, 3, G, 5]
