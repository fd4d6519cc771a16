"""media_server/bandwidth.py: one subscriber leg's estimate and thin-link gate, driven by
the receiver reports, NACKs and REMB a browser would send for links of the issue's table
(#14), with time passed in. The leg's link is simulated: what the publisher sends at the
leg's estimate, what gets through a rate limit, random loss, a queue's round trip."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import pytest

from media_server.bandwidth import (
    PAUSE_AFTER_S,
    PROBE_AFTER_S,
    PROBE_MAX_S,
    LinkEstimate,
)

T0 = 1000.0
FULL = 1_700_000  # what the clerk's 640x360 camera sends at most
FLOOR = 150_000


@dataclass
class Path:
    """A subscriber's link: a rate limit (0: none), random loss, base round trip, a
    queue (delay while over the limit), jitter; the publisher sends min(estimate, FULL)."""

    limit_bps: float = 0.0
    loss: float = 0.0
    rtt_s: float = 0.05
    jitter_s: float = 0.005
    remb: int | None = None
    lag: bool = True  # the publisher follows the estimate a second late
    sending: float = FULL
    octets: int = 0
    packets: int = 0
    lost: int = 0
    srs: int = 0
    log: list[tuple[float, int]] = field(default_factory=list)

    def second(self, link: LinkEstimate, t: float) -> None:
        """One second on the leg, then the subscriber's receiver report."""
        target = 0 if link.paused else min(FULL, link.bps or FULL)
        sending = min(self.sending, target) if self.lag else target
        self.sending = target
        packets = int(sending / 8 / 1100)
        self.packets += packets
        self.octets += packets * 1100
        lost = self.loss
        rtt = self.rtt_s
        if self.limit_bps and sending > self.limit_bps:
            lost = max(lost, 1 - self.limit_bps / sending)
            rtt += 0.45  # the bottleneck's queue is full
        self.srs += 1
        link.sender_report_sent(self.srs, t - 0.9)
        if self.remb is not None:
            link.on_remb(self.remb)
        link.on_nack(int(packets * lost), t)
        self.lost += round(packets * lost)
        link.on_report(
            t,
            self.lost,
            self.packets,
            self.jitter_s,
            self.srs,
            int(65536 * (0.9 - rtt)),
            (self.octets, self.packets),
        )
        self.log.append((round(t - T0), link.bps or 0))


def run(
    link: LinkEstimate, path: Path, seconds: int, start: float = T0, change: Callable | None = None
) -> float:
    t = start
    for k in range(seconds):
        t = start + k + 1
        if change is not None:
            change(k, path)
        path.second(link, t)
        link.gate(t)
    return t


def warm(path: Path | None = None, seconds: int = 5) -> tuple[LinkEstimate, Path, float]:
    link = LinkEstimate(FLOOR, 2_500_000)
    path = path or Path()
    path.remb = FULL
    t = run(link, path, seconds)
    return link, path, t


def test_before_any_report_the_remb_is_the_estimate() -> None:
    link = LinkEstimate(FLOOR)
    assert link.bps is None
    link.on_remb(800_000)
    assert link.bps == 800_000


def test_a_clean_leg_stays_at_full_rate() -> None:
    link, _, _ = warm(seconds=20)
    assert link.bps is not None and link.bps >= FULL
    assert not link.congested and not link.paused


@pytest.mark.parametrize("limit", [300_000, 1_000_000])
def test_a_rate_limit_is_found_within_a_few_reports(limit: int) -> None:
    link, path, t = warm()
    path.limit_bps = limit
    run(link, path, 4, start=t)
    bps = link.bps
    # (what got through, packet overhead included; 85 % of it, then 8 % a second up)
    assert bps is not None and 0.7 * limit <= bps <= 1.15 * limit, path.log
    # ...and it stays near the limit rather than overshooting into the queue for long.
    run(link, path, 30, start=t + 4)
    late = [bps for _, bps in path.log[-30:]]
    assert sum(late) / len(late) <= 1.15 * limit, path.log
    assert min(late) >= 0.5 * limit, path.log


def test_random_loss_without_a_queue_lowers_it_to_a_good_picture_not_to_nothing() -> None:
    """12 % random loss, round trip steady: fewer packets per frame freeze less, so it
    comes down (GCC's rule) but stops at 3 x the floor: no drift to a pause."""
    link, path, t = warm()
    path.loss = 0.12
    run(link, path, 60, start=t)
    assert link.estimate == 3 * FLOOR, path.log
    assert not link.paused and not link.congested  # (a low REMB would not cap it)


def test_loss_with_a_growing_round_trip_lowers_in_proportion() -> None:
    link, path, t = warm()
    path.remb = None
    before = link.estimate
    assert before is not None
    path.loss, path.rtt_s = 0.15, 0.5
    run(link, path, 1, start=t)
    # (from what was asked: the browser's last REMB, FULL, caps it once congested)
    assert link.estimate == pytest.approx(FULL * (1 - 0.5 * 0.15), rel=0.01)


@pytest.mark.parametrize(
    ("signal", "value"),
    [("loss", 0.05), ("rtt_s", 0.6), ("jitter_s", 0.08)],
)
def test_moderate_trouble_holds(signal: str, value: float) -> None:
    link, path, t = warm()
    link.estimate = 800_000.0
    path.remb = None
    setattr(path, signal, value)
    run(link, path, 5, start=t)
    assert link.estimate == 800_000.0


def test_remb_caps_only_while_the_leg_is_congested() -> None:
    link, path, t = warm()
    path.remb = 200_000
    run(link, path, 3, start=t)
    assert link.bps is not None and link.bps >= FULL, "clean leg: a low REMB is ignored"
    path.rtt_s = 0.4  # a queue builds: the browser's delay estimate now counts...
    t = run(link, path, 2, start=t + 3)
    assert link.bps is not None and link.bps < FULL
    # ...stepping down as GCC does, to 85 % of what the leg carried a window (a REMB far
    # under that measured an idle stream, see below), then to the REMB.
    steps = [bps for _, bps in path.log[-2:]]
    t = run(link, path, 20, start=t)
    steps += [bps for _, bps in path.log[-20:]]
    assert link.bps == 200_000, steps
    assert all(b >= 0.8 * a for a, b in pairwise(steps)), steps


def test_a_remb_measured_on_an_idle_stream_does_not_pause_a_leg() -> None:
    """After a hold or a pause the browser's delay estimator measured a stream that
    hardly came (10-20 kbps): while its round trip still shows the queue it left, the
    leg is judged by what it carries (200 kbps here), not paused as a thin link."""
    link, path, t = warm(Path(limit_bps=300_000))
    t = run(link, path, 6, start=t)
    assert 150_000 <= (link.bps or 0) <= 345_000, path.log
    path.remb = 10_500
    path.rtt_s = 0.4
    paused = []
    for _ in range(8):
        t = run(link, path, 1, start=t)
        paused.append(link.paused)
    assert not any(paused) and (link.bps or 0) >= FLOOR, path.log


def test_a_jitter_transient_does_not_drag_the_rate_down() -> None:
    """The 96 s case: jitter and reordering make the browser's REMB fall to ~80 kbps
    and climb back slowly. The leg itself lost nothing: the rate stays up."""
    link, path, t = warm()
    path.jitter_s, path.remb = 0.06, 80_000
    t = run(link, path, 10, start=t)
    assert link.bps is not None and link.bps >= FULL
    path.jitter_s = 0.005
    for k in range(60):
        path.remb = min(FULL, 80_000 + 20_000 * k)  # the REMB's slow climb
        path.second(link, t + k + 1)
        link.gate(t + k + 1)
    assert min(bps for _, bps in path.log[-70:]) >= FULL


def test_after_a_drop_the_rate_comes_back_in_seconds() -> None:
    link, path, t = warm()
    path.limit_bps = 300_000
    t = run(link, path, 5, start=t)
    path.limit_bps = 0
    path.remb = None  # (no help from the REMB)
    run(link, path, 8, start=t)
    back = next(s for s, bps in path.log[-8:] if bps >= 0.9 * FULL)
    assert back - (t - T0) <= 6, path.log


def test_the_jitter_of_a_lower_rate_does_not_hold_the_ramp_back() -> None:
    """At a lower rate a frame's packets spread over more of its interval: the
    interarrival jitter rises (5 -> 45 ms, measured at 1 Mbps) and stays up while the
    rate climbs back. Only a rise over the last few seconds holds the estimate; the
    low of half a minute ago, at full rate, no longer does (it held it 10 s)."""
    link, path, t = warm()
    path.limit_bps, path.jitter_s = 1_000_000, 0.045
    t = run(link, path, 20, start=t)
    path.limit_bps = 0
    path.remb = None
    run(link, path, 14, start=t)
    back = next((s for s, bps in path.log[-14:] if bps >= 0.8 * FULL), None)
    assert back is not None and back - (t - T0) <= 10, path.log


def test_a_failed_fast_ramp_ramps_slowly_after() -> None:
    link, path, t = warm()
    path.limit_bps = 500_000
    run(link, path, 40, start=t)
    # It found the limit: after the first failed fast ramp, at most 8 % a second above it.
    late = [bps for _, bps in path.log[-20:]]
    assert max(late) <= 1.2 * 500_000, path.log


# -- the thin-link gate --------------------------------------------------------------------


def test_a_thin_leg_is_paused_after_a_while_and_probed_with_back_off() -> None:
    link, path, t = warm()
    path.limit_bps = 90_000
    events: list[tuple[float, bool]] = []

    def tick(now: float) -> None:
        changed = link.gate(now)
        if changed is not None:
            events.append((round(now - t, 1), changed))

    # Reports every second, the gate every 0.2 s, for 3 minutes.
    for k in range(1, 180 * 5 + 1):
        now = t + k * 0.2
        if k % 5 == 0:
            path.second(link, now)
        tick(now)
    pauses = [at for at, paused in events if paused]
    resumes = [at for at, paused in events if not paused]
    assert pauses and pauses[0] <= 3 + PAUSE_AFTER_S + 1, events
    # Each probe fails (the link cannot carry the floor) and waits twice as long again.
    waits = [round(r - p) for p, r in zip(pauses, resumes, strict=False)]
    assert waits[:4] == [5, 10, 20, 40], events
    assert all(w <= PROBE_MAX_S for w in waits)
    assert all(r - p < 3 for r, p in zip(resumes, pauses[1:], strict=False)), "probe fails fast"


def test_a_probe_that_holds_the_floor_ends_the_pause() -> None:
    link, path, t = warm()
    path.limit_bps = 90_000
    t = run(link, path, 6, start=t)
    assert link.paused
    path.limit_bps = 0  # the link is back; the REMB is what audio alone gave
    path.remb = 40_000
    t2 = t
    while link.paused:
        t2 += 0.5
        link.gate(t2)
    assert t2 - t <= PROBE_AFTER_S + 0.5
    assert link.probing and not link.counts()
    run(link, path, 6, start=t2)
    assert not link.paused and not link.probing and link.counts()
    assert link.bps is not None and link.bps >= FLOOR


def test_no_floor_no_gate() -> None:
    link = LinkEstimate(0)
    path = Path(limit_bps=20_000, remb=FULL)
    run(link, path, 30)
    assert not link.paused


def test_a_fresh_leg_with_a_low_first_remb_is_not_held_down() -> None:
    """A browser's estimator starts low: its first REMBs must not pause a fresh leg nor
    hold the publisher at the floor."""
    link = LinkEstimate(FLOOR, 2_500_000)
    path = Path(remb=60_000)
    run(link, path, 10)
    assert not link.paused and link.counts()
    assert link.bps is not None and link.bps >= FULL


def test_loss_upstream_of_the_sfu_is_not_the_subscribers_link() -> None:
    """The publisher's own link loses 30 %: every subscriber sees that loss, but their
    links carry what they are sent: no estimate comes down for it."""
    link, path, t = warm()
    before = link.estimate
    lost = expected = 0
    for k in range(1, 11):
        expected += 150
        lost += 45
        path.lost += 45
        path.packets += 150
        path.octets += 150 * 1100
        link.on_report(
            t + k,
            path.lost,
            path.packets,
            0.005,
            0,
            0,
            (path.octets, path.packets),
            (lost, expected),
        )
    assert link.loss == 0 and link.estimate == before


def test_many_reports_a_second_move_the_estimate_once_a_window() -> None:
    """Browsers attach a report to every NACK and REMB: a fraction lost over 2 packets
    (50 %) is noise; the window's loss decides."""
    link, path, t = warm()
    before = link.estimate
    for k in range(1, 41):  # 20 reports a second, 1 lost packet in 40
        path.packets += 8
        path.octets += 8 * 1100
        path.lost += 1 if k % 5 == 0 else 0
        link.on_report(
            t + k * 0.05, path.lost, path.packets, 0.005, 0, 0, (path.octets, path.packets)
        )
    assert link.reports <= 5 + 2 and link.estimate == before


def test_retransmissions_get_a_share_of_the_estimate() -> None:
    """On a congested link, answering every NACK would fill it with resent packets."""
    link, _, t = warm()
    link.estimate = 300_000.0
    link.congested = False
    sent = sum(link.on_nack(50, t + k * 0.1) for k in range(1, 101))  # 10 s, 500/s asked
    per_s = 0.2 * 300_000 / 8 / 1200
    assert 8 * per_s <= sent <= 10 * per_s + 10


def test_heavy_loss_believes_the_remb_within_the_window() -> None:
    """A link far over capacity: the browser's REMB falls at once, and so does the
    estimate, before the window ends (the publisher learns within a report)."""
    link, path, t = warm()
    link.on_remb(220_000)
    path.packets += 100
    path.lost += 80
    path.octets += 100 * 1100
    link.on_report(t + 0.3, path.lost, path.packets, 0.005, 0, 0, (path.octets, path.packets))
    assert link.bps == 220_000


def _protected(path: Path | None = None) -> tuple[LinkEstimate, Path, float]:
    """A warm leg that has an RTX stream (it can be sent second copies)."""
    link = LinkEstimate(FLOOR, 2_500_000)
    link.can_protect = True
    path = path or Path()
    path.remb = FULL
    return link, path, run(link, path, 5)


@pytest.mark.parametrize(
    ("loss", "rtt_s", "level"),
    [
        pytest.param(0.0, 0.05, 0, id="clean-none"),
        pytest.param(0.03, 0.05, 1, id="3pct-frames-last-packets"),
        pytest.param(0.10, 0.05, 2, id="10pct-every-packet"),
        pytest.param(0.15, 0.6, 0, id="with-a-queue-none"),
    ],
)
def test_random_loss_gets_second_copies_by_how_much_is_lost(
    loss: float, rtt_s: float, level: int
) -> None:
    """Loss on a steady round trip (radio, a bad line) is not congestion: a second copy
    of the packets whose loss costs most (or of every packet) saves a NACK round trip.
    With a queue, more packets would only make it worse."""
    link, path, t = _protected()
    path.loss, path.rtt_s = loss, rtt_s
    run(link, path, 4, start=t)
    assert link.protect == level, path.log


def test_protected_random_loss_keeps_the_rate() -> None:
    """With every packet sent twice, what is lost for good is the loss squared (~1 %):
    the publisher keeps its rate. A leg without RTX is lowered as before."""
    link, path, t = _protected()
    path.loss = 0.12
    run(link, path, 30, start=t)
    assert link.protect == 2 and link.bps is not None and link.bps >= FULL, path.log
    plain, path, t = warm()
    path.loss = 0.12
    run(plain, path, 30, start=t)
    assert plain.protect == 0 and plain.estimate is not None and plain.estimate < FULL


def test_second_copies_have_a_budget() -> None:
    link, _, t = _protected()
    link.estimate = 800_000.0
    sent = sum(link.may_echo(1000, t + k * 0.001) for k in range(1, 2001))  # 2 s, 8 Mbps
    # the estimate's worth a second (and a quarter of a second's burst), not more
    assert 2 * 100 <= sent <= 2 * 100 + 25 + 1


def test_a_link_far_over_capacity_drains_then_comes_back_to_most_of_it() -> None:
    """1.7 Mbps into 300 kbps: most packets are lost and a queue stands. The estimate
    goes to ~85 % of what got through at once (the publisher need not be followed for
    a window first), and the leg is to be restarted on a keyframe (``refresh``); the
    browser's lagging REMB does not send it back over. A link that carries less than
    the floor is thin: no restart, it is paused."""
    link, path, t = warm()
    path.limit_bps = 300_000
    run(link, path, 1, start=t)
    assert link.bps is not None and 0.75 * 300_000 <= link.bps <= 0.9 * 300_000, path.log
    assert link.refresh
    run(link, path, 8, start=t + 1)
    assert link.bps is not None and 0.75 * 300_000 <= link.bps <= 1.15 * 300_000, path.log
    assert not link.paused
    thin, path, t = warm()
    path.limit_bps = 100_000
    run(thin, path, 1, start=t)
    assert not thin.refresh and thin.bps is not None and thin.bps < FLOOR


def test_a_protected_leg_that_gets_congested_is_not_protected_for_a_while() -> None:
    """A policer drops without a queue: it looks like random loss until the second
    copies push the leg over it. Then no copies for a while."""
    link, path, t = _protected()
    path.loss = 0.08
    t = run(link, path, 4, start=t)
    assert link.protect == 2
    path.loss = 0.3  # the copies made it worse
    t = run(link, path, 2, start=t)
    assert link.protect == 0
    path.loss = 0.08
    t = run(link, path, 10, start=t)
    assert link.protect == 0, "not again at once"
    run(link, path, 30, start=t)
    assert link.protect == 2, "but after a while"


def test_a_cut_is_not_a_capacity() -> None:
    """No report for 5 s (the link was cut both ways), then the subscriber counts every
    packet of the cut as lost: that says nothing of what the link carries."""
    link, path, t = warm()
    before = link.bps
    path.packets += 5 * 190  # sent during the cut, none arrived
    path.octets += 5 * 190 * 1100
    path.lost += 5 * 190
    run(link, path, 4, start=t + 5)
    assert link.bps == before and not link.refresh and not link.paused, path.log
