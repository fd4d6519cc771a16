"""How much video one subscriber's link carries, and when its video is paused (sans-IO).

aiortc offers no transport-wide congestion control, so a browser's only bitrate feedback
is REMB from its delay-based receive-side estimator. That estimator ignores random loss
and a tail-dropping rate limiter, and after a burst of jitter it falls to ~80 kbps and
climbs back over a minute and a half (issue #14). A ``LinkEstimate`` is the SFU's own
estimate of one subscriber leg, from what the subscriber tells us about that leg:

- receiver reports (cumulative loss, interarrival jitter, LSR/DLSR: the round-trip
  time of the sender reports we forwarded on the leg), the NACKs it sends, its REMB;
  taken once per ~1 s window (browsers send many tiny reports a second), less the loss
  the SFU could not repair from the publisher (not the subscriber link's doing);
- loss-based rules in the spirit of GCC: loss over 10 % that looks like congestion
  (a queue in the round trip, or over 20 %) lowers the estimate in proportion, and over
  20 % to what got through; loss over 10 % on a steady round trip lowers it no further
  than 3 x the floor; 2-10 % (or many NACKs, or a jump in jitter) holds it; under 2 %
  raises it, fast (x1.5 a second) back to the level the leg carried before a drop, then
  by 8 % a second;
- the REMB is a cap only while the leg's own signals say congestion (a grown round-trip
  time, or loss over 20 %), and no lower than 85 % of what the leg carried in its last
  window (a REMB measured while little came, after a hold, is 10-20 kbps); otherwise it
  can only raise the estimate. A jitter transient therefore no longer drags the
  publisher down for a minute;
- retransmissions get a fifth of the estimate.

The thin-link gate of the same object pauses the leg's video when its estimate stays
under the floor (audio keeps flowing), then probes again after 5 s, 10 s, 20 s ... (up
to a minute), pausing at once if a probe fails. Time is passed in; nothing here sends.
"""

from __future__ import annotations

from collections import deque

LOSS_LOW = 0.02  # under this a leg is clean
LOSS_HIGH = 0.10  # over this a leg loses too much...
LOSS_SEVERE = 0.20  # ...and over this it is congested whatever the delay says
RTT_GROWTH_S = 0.15  # the smoothed round trip this far over its minimum: a queue builds
RTT_GROWTH_RATIO = 0.5  # (or half the minimum, on long paths)
RTT_WINDOW_S = 30.0
RTT_SMOOTHING = 0.5  # per window
JITTER_HIGH_S = 0.03  # interarrival jitter over this and twice its low: hold, don't raise
JITTER_WINDOW_S = 10.0  # (its low over this long: a leg's jitter grows as its rate falls,
# a frame's packets spread over more of its interval; after a rate limit lifts, the low of
# 30 s ago, at full rate, held the ramp back for 10 s)
FAST_UP = 1.5  # per second, back to the level before a drop
SLOW_UP = 1.08  # per second, above it (GCC's rate)
MIN_ESTIMATE = 30_000
DECREASE_SETTLE_S = 1.8  # between decreases: the publisher follows and the queue drains
DELIVERED_MIN_PACKETS = 20
RTX_SHARE = 0.2  # of the estimate, for retransmissions...
RTX_PACKET_BYTES = 1200
RTX_BURST = 10  # ...and at least this many packets at once
RANDOM_LOSS_FLOOR = 3  # x the floor: where loss without a queue stops lowering it
PROTECT_ALL_LOSS = 0.05  # random loss over this (smoothed): every packet sent twice...
PROTECT_SHARE = 1.0  # ...the second copies within this share of the estimate...
PROTECT_BURST_S = 0.25  # ...and a burst of this long at it (a keyframe)
LOSS_SMOOTHING = 0.5  # per window, for the protection's level
PROTECT_BACKOFF_S = 30.0  # congested while protected: none for this long
LOSS_FAR = 0.5  # over this, most of what is sent never arrives: far over capacity...
HEADROOM = 0.85  # ...the estimate: this share of what got through (GCC's)...
FAR_HOLD_S = 10.0  # ...and the REMB, lagging, does not move it for this long
PACKET_OVERHEAD = 50  # IP, UDP, RTP header and extensions, SRTP tag: bytes per packet
WINDOW_S = 0.9  # the estimate moves once per window of reports (about a second)
STALE_WINDOW_S = 3.0  # no report for this long: a cut, not a window to judge
PAUSE_AFTER_S = 2.0  # under the floor this long: the leg's video is paused
PROBE_AFTER_S = 5.0  # first probe after a pause; doubled after each failed probe...
PROBE_MAX_S = 60.0
PROBE_TRIAL_S = 4.0  # ...a probe that stays over the floor this long has worked
BACKOFF_RESET_S = 30.0  # flowing this long: the next pause probes after 5 s again


class LinkEstimate:
    """One subscriber leg's bandwidth estimate and thin-link gate."""

    def __init__(self, floor_bps: int = 0, max_bps: int = 2_500_000) -> None:
        self.floor = floor_bps
        self.max = max_bps
        self.estimate: float | None = None  # set by the first receiver report
        self.remb: int | None = None
        self.congested = False
        self.reports = 0
        self._last_update: float | None = None
        self._last_decrease = -1e9
        self._good = 0.0  # the level carried before the last drop: ramp back fast
        self._far_until = 0.0  # found far over capacity: the REMB does not move it till
        self._remb_caps = True  # (False till then)
        self.refresh = False  # its picture is broken: restart it on a keyframe (adaptation)
        self._held_reports = 0
        self._fast = False  # the last raise was a fast one
        # The window the estimate moves on: (start, lost, highest, upstream, sent, nacked)
        self._win: tuple[float, int, int, tuple[int, int], tuple[int, int], int] | None = None
        self._win_rtt: float | None = None
        self._win_jitter = 0.0
        self.loss = 0.0  # the subscriber link's own loss over the last window
        self._sent_bps: float | None = None
        self._delivered_bps: float | None = None
        self._carried = 0.0  # the last window's delivered rate that had enough packets
        self._nacked = 0
        self._rtx_tokens, self._rtx_at = float(RTX_BURST), 0.0
        # Second copies ahead of NACKs on a leg with random loss (``forwarder._echo``):
        # 0 none, 1 each frame's last packet and keyframes, 2 every packet.
        self.can_protect = False  # (the leg has an RTX stream)
        self.protect = 0
        self._loss_avg = 0.0
        self._protect_after = 0.0
        self._echo_tokens, self._echo_at = 0.0, 0.0
        self._srs: dict[int, float] = {}  # middle 32 bits of a forwarded SR's NTP -> sent at
        self._rtts: deque[tuple[float, float]] = deque()  # (time, smoothed RTT)
        self.rtt: float | None = None
        self._jitters: deque[tuple[float, float]] = deque()  # (time, jitter in s)
        # the gate
        self.paused = False
        self.probing = False
        self._below_since: float | None = None
        self._resume_at = 0.0
        self._flowing_since = 0.0
        self._backoff = PROBE_AFTER_S

    # -- what the estimate is ------------------------------------------------------------
    @property
    def bps(self) -> int | None:
        """The leg's estimate; the REMB alone until its receiver reports start."""
        if self.estimate is None:
            return self.remb
        if self.congested and self.remb is not None and self._remb_caps:
            # (never under HEADROOM of what the leg just carried: a browser's REMB
            # after a hold or a pause measured an idle stream, 10-20 kbps, and would
            # pause a leg that carries 200)
            return int(min(self.estimate, max(self.remb, HEADROOM * self._carried)))
        return int(self.estimate)

    def counts(self) -> bool:
        """Whether the publisher's target should respect this leg (not thin, not on trial)."""
        bps = self.bps
        return bps is not None and not self.paused and not self.probing and bps >= self.floor

    # -- what the subscriber tells us -----------------------------------------------------
    def on_remb(self, bps: int) -> None:
        self.remb = bps

    def on_nack(self, count: int, now: float) -> int:
        """The subscriber asks for ``count`` packets again: how many of them to resend.
        Retransmissions get RTX_SHARE of the estimate: on a congested link, answering
        every NACK fills it with resent packets and loses yet more."""
        self._nacked += count
        rate = RTX_SHARE * (self.bps or self.max) / (8 * RTX_PACKET_BYTES)  # packets/s
        elapsed = max(0.0, now - self._rtx_at)
        self._rtx_at = now
        self._rtx_tokens = min(max(rate, RTX_BURST), self._rtx_tokens + elapsed * rate)
        allowed = min(count, int(self._rtx_tokens))
        self._rtx_tokens -= allowed
        return allowed

    def held(self) -> None:
        """The leg is held until a keyframe (adaptation): what it reports from its
        restart on is judged afresh, not with the losses of the queue it left."""
        self.refresh = False
        self._win, self._win_rtt = None, None
        self._held_reports = self.reports
        # (the browser's REMB fell with the queue the leg left: not a cap now)
        self.congested = False

    def settled(self) -> bool:
        """Since it was held, a window of reports with the leg carrying its video."""
        return self.reports > self._held_reports and self.loss < LOSS_HIGH

    def may_echo(self, size: int, now: float) -> bool:
        """Whether a second copy of ``size`` bytes fits the protection's budget now."""
        rate = PROTECT_SHARE * (self.bps or self.max) / 8  # bytes/s
        elapsed = max(0.0, now - self._echo_at)
        self._echo_at = now
        self._echo_tokens = min(rate * PROTECT_BURST_S, self._echo_tokens + elapsed * rate)
        if self._echo_tokens < size:
            return False
        self._echo_tokens -= size
        return True

    def sender_report_sent(self, ntp_middle: int, now: float) -> None:
        """We forwarded a sender report on the leg: its RR will echo it (round trip)."""
        self._srs[ntp_middle] = now
        if len(self._srs) > 8:
            del self._srs[next(iter(self._srs))]

    def on_report(
        self,
        now: float,
        lost: int,
        highest: int,
        jitter_s: float,
        lsr: int,
        dlsr: int,
        sent: tuple[int, int],
        upstream: tuple[int, int] = (0, 0),
    ) -> None:
        """A receiver report block about the leg: its cumulative ``lost`` and extended
        ``highest`` sequence number, jitter, LSR/DLSR; ``sent``: the leg's running totals
        (payload bytes, packets); ``upstream``: the publisher's (lost, expected) at the
        SFU, whose unrepaired loss the subscriber sees too and is not its link's doing.

        Browsers send a report with every feedback packet, many a second, each with a
        fraction lost over a few packets: the estimate moves once per WINDOW_S, on the
        loss over the window and the lowest round trip in it (a busy browser or server
        delays some reports; a queue delays them all)."""
        if self.paused:
            return  # no video flows: nothing to learn
        sample = self._round_trip(now, lsr, dlsr)
        if sample is not None:
            self._win_rtt = sample if self._win_rtt is None else min(self._win_rtt, sample)
        self._win_jitter = max(self._win_jitter, jitter_s)
        mark = (now, lost, highest, upstream, sent, self._nacked)
        if self._win is None:
            self._win = mark
            return
        t0, lost0, highest0, up0, sent0, nacked0 = self._win
        if now - t0 > STALE_WINDOW_S:
            # No report for that long: the link was cut (both ways). What it lost during
            # the cut says nothing of its capacity: judged afresh from here.
            self._win, self._win_rtt, self._win_jitter = mark, None, 0.0
            return
        if now - t0 < WINDOW_S:
            # Half lost already within the window: believe the REMB now (a link far over
            # capacity; random loss and reordering, whose late packets count as lost
            # until they come, stay well under it).
            expected = highest - highest0
            if expected >= 2 * DELIVERED_MIN_PACKETS and _ratio(lost - lost0, expected) > 0.5:
                self.congested = True
                self._carried = 0.0  # (what it carried before says nothing now)
            return
        self._win = mark
        dt = now - t0
        loss = max(
            0.0,
            _ratio(lost - lost0, highest - highest0)
            - _ratio(upstream[0] - up0[0], upstream[1] - up0[1]),
        )
        packets = sent[1] - sent0[1]
        sent_bytes = max(0, sent[0] - sent0[0] + PACKET_OVERHEAD * packets)
        self._sent_bps = sent_bytes * 8 / dt
        # What got through, as the subscriber counts it (a queue's drops show up a
        # window later than the packets were sent: the sent rate would mislead).
        received = max(0, (highest - highest0) - (lost - lost0))
        self._delivered_bps = None
        if packets >= DELIVERED_MIN_PACKETS:  # (a few packets say nothing of a rate)
            self._delivered_bps = self._carried = received * sent_bytes / packets * 8 / dt
        nack_ratio = (self._nacked - nacked0) / packets if packets > 0 else 0.0
        if self._win_rtt is not None:
            self._smooth_rtt(now, self._win_rtt)
        jitter, self._win_rtt, self._win_jitter = self._win_jitter, None, 0.0
        self._decide(now, min(1.0, dt), loss, nack_ratio, jitter)

    def _decide(self, now: float, dt: float, loss: float, nack_ratio: float, jitter: float) -> None:
        self.reports += 1
        self.loss = loss
        if self.estimate is None:
            # No limit until the link shows one: a browser's first REMB is low (its
            # estimator starts low) and would hold a fresh leg under the floor.
            self.estimate = float(self.max)
        growth = self._rtt_growth()
        jumpy = self._jitter_grew(now, jitter)
        # The REMB (delay-based) is believed when our own round trip shows a queue, or
        # the loss is heavy; random loss on a steady round trip is no reason.
        self.congested = growth or loss > LOSS_SEVERE
        self._remb_caps = now >= self._far_until
        self._protection(now, loss, growth)
        if loss > LOSS_HIGH and (growth or loss > LOSS_SEVERE):
            self._decrease(now, loss)
        elif loss > LOSS_HIGH and self.protect == 2:
            pass  # hold: the second copies repair most of it (both lost: loss squared)
        elif loss > LOSS_HIGH:
            # Loss without a queue (radio, a bad cable): fewer packets per frame freeze
            # less, but such loss does not go away with the rate: not below a level
            # that still gives a good picture.
            bound = max(RANDOM_LOSS_FLOOR * self.floor, 300_000)
            self._decrease(now, loss, bound, from_sent=True)
        elif loss >= LOSS_LOW or nack_ratio > LOSS_HIGH or growth or jumpy:
            pass  # hold
        else:
            self._increase(now, dt)

    def _protection(self, now: float, loss: float, queue: bool) -> None:
        """Random loss (no queue, not congested) on a leg that can resend: second copies.
        (Jitter alone does not end it: a busy machine's is no congestion.) A leg that
        lost heavily while protected (a policer that drops without a queue looks like
        random loss until the copies push it over) is not protected again for a while."""
        self._loss_avg += LOSS_SMOOTHING * (loss - self._loss_avg)
        if self.protect and loss > LOSS_SEVERE:
            self._protect_after = now + PROTECT_BACKOFF_S
        if not self.can_protect or self.congested or queue or now < self._protect_after:
            self.protect = 0
        elif self._loss_avg > PROTECT_ALL_LOSS:
            self.protect = 2
        elif self._loss_avg >= LOSS_LOW:
            self.protect = 1
        else:
            self.protect = 0

    def _decrease(
        self, now: float, loss: float, bound: float = MIN_ESTIMATE, from_sent: bool = False
    ) -> None:
        assert self.estimate is not None
        sent, delivered = self._sent_bps, self._delivered_bps
        # (far over capacity: at once, whenever it shows, the last decrease or not)
        far = bool(loss > LOSS_FAR and delivered and sent and delivered < 0.5 * sent)
        if not far and now - self._last_decrease < max(0.3 + (self.rtt or 0.0), DECREASE_SETTLE_S):
            return  # the previous decrease has not shown yet (nor the queue drained)
        before = float(self.bps or self.estimate)  # (what was asked for: the REMB may cap)
        if before <= bound:
            return
        self._last_decrease = now
        if far:
            assert delivered is not None
            # Far over capacity: what got through is the link; HEADROOM of it at once
            # (even while the publisher has not followed yet: no waiting a window). The
            # leg is held until a keyframe meanwhile (``refresh``; its queue drains).
            # (A link that carries less than the floor is thin: that, and it is paused.)
            drain = max(HEADROOM * delivered, min(float(self.floor), delivered), float(bound))
            self.estimate = min(self.estimate, before, drain)
            self._good, self._fast = drain, False
            self._far_until, self._remb_caps = now + FAR_HOLD_S, False
            # (most frames were broken: none decodes till a keyframe; a thin link is
            # paused instead, see ``gate``)
            self.refresh = drain >= self.floor
            return
        # Random loss: from what the publisher sends when its encoder sends less than
        # allowed (its own ceiling), unless much less (a still picture). (Under
        # congestion the sent rate swings while the publisher adapts: not from it.)
        base = sent if from_sent and sent and 0.5 * before <= sent < before else before
        new = base * (1 - 0.5 * loss)
        if sent and sent > 1.1 * before and self.counts():
            # The publisher has not followed our last decrease yet (it follows this leg:
            # the leg counts): this loss measures its excess over what we asked and the
            # queue it left, not our estimate (which comes down to what was asked).
            self.estimate = min(self.estimate, before)
            return
        elif loss > LOSS_SEVERE and delivered and sent and sent >= 0.5 * before:
            # Sending near the estimate, far over capacity: what got through is the best
            # measure of the link (not when the publisher sends much less, say a still).
            new = min(new, delivered)
        self.estimate = max(float(bound), new)
        # A fast ramp that ran into loss found the link narrower: no fast ramp again.
        self._good = 0.0 if self._fast else max(self._good, before)
        self._fast = False

    def _increase(self, now: float, dt: float) -> None:
        assert self.estimate is not None
        fast = self.estimate < self._good
        raised = self.estimate * (FAST_UP if fast else SLOW_UP) ** dt
        if fast:
            raised = min(raised, self._good)
        self._fast = fast
        # A clean leg carries what it was sent (a probe proves the publisher's rate), and
        # is not credited with much more than that (GCC's bound: 1.5 x what it got).
        sent = self._sent_bps
        if sent is not None:
            raised = min(raised, max(1.5 * sent + 10_000, float(self.floor)))
        # (not the REMB for a while after the link was found far over capacity: the
        # browser's estimate lags and would send the publisher back into the queue)
        remb = self.remb if now >= self._far_until else None
        carried = max(float(remb or 0), sent or 0.0)
        self.estimate = min(float(self.max), max(raised, carried, self.estimate))

    def _round_trip(self, now: float, lsr: int, dlsr: int) -> float | None:
        sent = self._srs.get(lsr) if lsr else None
        if sent is None:
            return None
        sample = now - sent - dlsr / 65536
        return sample if 0 <= sample < 10 else None

    def _smooth_rtt(self, now: float, sample: float) -> None:
        self.rtt = sample if self.rtt is None else self.rtt + RTT_SMOOTHING * (sample - self.rtt)
        self._rtts.append((now, self.rtt))
        while self._rtts and now - self._rtts[0][0] > RTT_WINDOW_S:
            self._rtts.popleft()

    def _jitter_grew(self, now: float, jitter_s: float) -> bool:
        """Jitter well over its low of the last 10 s (its level depends on the frames and
        the publisher's pacing, so only a rise says something)."""
        self._jitters.append((now, jitter_s))
        while now - self._jitters[0][0] > JITTER_WINDOW_S:
            self._jitters.popleft()
        low = min(j for _, j in self._jitters)
        return jitter_s > max(JITTER_HIGH_S, 2 * low)

    def _rtt_growth(self) -> bool:
        if self.rtt is None or not self._rtts:
            return False
        base = min(r for _, r in self._rtts)
        return self.rtt - base > max(RTT_GROWTH_S, RTT_GROWTH_RATIO * base)

    # -- the thin-link gate -------------------------------------------------------------
    def gate(self, now: float) -> bool | None:
        """The leg's new paused state when it changes now, else None."""
        if self.floor <= 0:
            return None
        if self.paused:
            if now < self._resume_at:
                return None
            self._resume(now)
            return False
        bps = self.bps
        if self.reports < 2 or bps is None or bps >= self.floor:
            self._below_since = None
            if self.probing and self.reports >= 2 and now - self._flowing_since >= PROBE_TRIAL_S:
                self.probing = False
            if now - self._flowing_since >= BACKOFF_RESET_S:
                self._backoff = PROBE_AFTER_S
            return None
        if self._below_since is None:
            self._below_since = now
        if self.probing or now - self._below_since >= PAUSE_AFTER_S:
            self._pause(now)
            return True
        return None

    def _pause(self, now: float) -> None:
        if self.probing:
            self._backoff = min(PROBE_MAX_S, self._backoff * 2)
        self.paused, self.probing = True, False
        self.protect = 0
        self._resume_at = now + self._backoff
        self._below_since = None

    def _resume(self, now: float) -> None:
        """Probe: video again at the floor, judged afresh."""
        self.paused, self.probing = False, True
        self._flowing_since = now
        self.estimate = float(self.floor)
        self.congested = False
        self.reports = 0
        self._win, self._win_rtt = None, None
        # What the subscriber measured while only audio came is stale.
        self.remb, self.rtt = None, None
        self._carried = 0.0
        self._rtts.clear()
        self._jitters.clear()
        self._good, self._fast = 0.0, False


def _ratio(part: int, whole: int) -> float:
    return min(1.0, max(0.0, part / whole)) if whole > 0 else 0.0
