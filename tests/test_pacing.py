"""media_server/pacing.py and a thin leg paced through the forwarding core: a keyframe's
burst leaves at the leg's pace, not at once (real captured VP8, time passed in)."""

from __future__ import annotations

import pytest

from media_server import rtp
from media_server.pacing import PACE_MAX_DELAY_S, Pacer, pace_bps
from tests.test_forwarder import leg, video_up, vp8


@pytest.mark.parametrize(
    ("estimate", "paced"),
    [(None, None), (2_000_000, None), (1_000_000, None), (300_000, 345_000.0)],
)
def test_only_thin_legs_are_paced(estimate: int | None, paced: float | None) -> None:
    assert pace_bps(estimate) == pytest.approx(paced) if paced else pace_bps(estimate) is None


def test_a_burst_leaves_at_the_pace_and_what_would_wait_too_long_is_dropped() -> None:
    pacer = Pacer()
    rate = 100_000.0  # 1000-byte packets: ~82 ms each (with IP and UDP)
    for _ in range(20):
        pacer.push(bytes(972), 10.0, rate)
    per = 1000 * 8 / rate
    assert len(pacer.queue) == int(PACE_MAX_DELAY_S / per) + 1 and pacer.dropped > 0
    assert pacer.due(10.0) == [bytes(972)]  # the first at once
    assert pacer.due(10.0 + per / 2) == []
    assert len(pacer.due(10.0 + 3 * per)) == 3
    assert pacer.next_at() == pytest.approx(10.0 + 4 * per)


def test_a_thin_legs_keyframe_is_spread_at_its_pace() -> None:
    packets = vp8()
    up = video_up()
    lg = leg()
    up.add_leg(lg, packets[0].t)
    assert lg.link is not None
    lg.link.estimate, lg.link.reports = 300_000.0, 2  # (as its reports would have set it)
    up.adapt(packets[0].t)
    assert up.pacing and lg.pacer is not None
    sent: list[tuple[float, bytes]] = []
    now = packets[0].t
    for p in packets:
        while (due := up.next_paced()) is not None and due <= p.t:  # the room's timer
            now = due
            sent += [(now, d) for w, d in up.take_paced(now) if w is lg]
        assert [w for w, _ in up.on_rtp(p.data, p.h, p.t)] == []  # (all through the pacer)
        sent += [(p.t, d) for w, d in up.take_paced(p.t) if w is lg]  # (the shim: due now)
    first = sent[0]
    assert up.is_keyframe is not None
    h = rtp.parse(first[1])
    assert up.is_keyframe(first[1][h.payload_start : h.payload_end])
    # Over any half second, no more than the pace (and a packet) went out.
    for t0, _ in sent:
        half = sum(len(d) + 28 for t, d in sent if t0 <= t < t0 + 0.5)
        assert half * 8 <= 1.15 * 300_000 * 0.5 + 1500 * 8
    seqs = [rtp.parse(d).seq for _, d in sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_leg_no_longer_thin_drains_its_queue_at_its_new_pace() -> None:
    """The estimate climbs over the pacing threshold while packets wait: what comes
    next is paced at the leg's new rate (not stuck at the old one, which would grow the
    queue until it drops), the queue drains, then the leg is no longer paced."""
    packets = vp8()
    up = video_up()
    lg = leg()
    up.add_leg(lg, packets[0].t)
    assert lg.link is not None
    lg.link.estimate, lg.link.reports = 300_000.0, 2
    up.adapt(packets[0].t)
    for p in packets[:60]:
        up.on_rtp(p.data, p.h, p.t)
    assert lg.pacer is not None and lg.pacer.queue
    old = lg.pace_rate
    lg.link.estimate = 1_500_000.0
    now = packets[59].t
    up.adapt(now)
    assert lg.pacer is not None and lg.pace_rate >= 1.15 * 1_500_000 > old
    while (due := up.next_paced()) is not None:
        up.take_paced(due)
        now = due
    up.adapt(now + 0.01)
    assert lg.pacer is None and not up.pacing
