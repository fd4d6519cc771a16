"""Each video leg adapted to its subscriber's link (sans-IO, part of ``Upstream``).

The subscriber's feedback about its leg (REMB, receiver reports; NACKs are counted in
``Upstream.on_nack``) feeds the leg's ``bandwidth.LinkEstimate``. Out come the
publisher's target bitrate, sent to it as REMB, and the legs whose video is paused or
resumed, which the room tells the subscriber's page.

Without simulcast the publisher sends one encoding to everyone: the target is the
lowest estimate among the legs that can carry the floor (``Bitrate.floor_bps``). A leg
under it is paused and probed again later, so one thin link never drags the others, nor
the recording, below the floor; the legs above the floor still set the pace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .pacing import PACE_FACTOR, Pacer, pace_bps

if TYPE_CHECKING:
    from .forwarder import Bitrate, Leg, Out
    from .health import TrackHealth

RATE_WINDOW_S = 0.5  # the publisher's rate, measured over at least this long
CAME_DOWN = 1.2  # the publisher sends at most this x what we asked: it has followed
HOLD_MIN_S = 1.0  # a held leg's keyframe: not before its queue drained (or 2 round trips)...
REFRESH_MAX_S = 3.0  # ...and after this long at the latest; its video shown again once it
HOLD_FPS = 8.0  # carried a window of reports and the publisher sends this frame rate
HOLD_MAX_S = 10.0  # (or after this long)


class LegAdaptation:
    """Mixed into ``forwarder.Upstream``: the bandwidth side of its legs."""

    if TYPE_CHECKING:
        legs: list[Leg]
        kind: str
        clock_rate: int
        bitrate: Bitrate
        highest_seq: int | None
        cycles: int
        base_seq: int
        received: int
        last_remb: float
        last_remb_bps: int
        octets_in: int
        incoming_bps: float
        _rate_mark: tuple[float, int]
        _held: list[Leg]
        health: TrackHealth
        pacing: bool
        protecting: bool

        def request_keyframe(self, now: float) -> None: ...

    def on_remb(self, leg: Leg, bps: int, now: float) -> None:
        if leg.link is not None:
            before = leg.link.bps
            leg.link.on_remb(bps)
            self._maybe_slower(before, leg.link.bps)

    def on_receiver_report(
        self, leg: Leg, lost: int, highest: int, jitter: int, lsr: int, dlsr: int, now: float
    ) -> None:
        """A report block of the subscriber about this leg (RFC 3550 fields: cumulative
        packets lost, extended highest sequence number, jitter, LSR, DLSR)."""
        link = leg.link
        if link is None or not leg.started:
            return
        before = link.bps
        link.on_report(
            now,
            lost,
            highest,
            jitter / self.clock_rate,
            lsr,
            dlsr,
            (leg.octets, leg.packets),
            self.unrepaired(),
        )
        self._maybe_slower(before, link.bps)
        self.protecting = self.protecting or bool(link.protect)
        if link.refresh:
            link.refresh = False
            self._hold(leg, now)

    def unrepaired(self) -> tuple[int, int]:
        """(lost, expected) from the publisher so far, retransmissions counted: what the
        SFU could not repair reaches every subscriber as loss too (and its receiver
        reports and the live overview say so)."""
        if self.highest_seq is None:
            return (0, 0)
        expected = self.cycles + self.highest_seq - self.base_seq + 1
        return (max(0, expected - self.received), expected)

    def _maybe_slower(self, before: int | None, after: int | None) -> None:
        if before is not None and after is not None and after < before * 0.9:
            self.last_remb = -1e9  # a subscriber got slower: tell the publisher now

    def target_bitrate(self) -> int:
        """The lowest estimate of the legs that carry the floor; the floor when every leg
        is under it; the maximum when no leg has an estimate yet."""
        estimates: list[int] = []
        thin = False
        for leg in self.legs:
            link = leg.link
            if link is None or link.bps is None:
                continue
            if link.counts():
                estimates.append(link.bps)
            else:
                thin = True
        b = self.bitrate
        target = min(estimates) if estimates else b.floor_bps if thin else b.max_bps
        return max(b.min_bps, min(b.max_bps, target))

    def _hold(self, leg: Leg, now: float) -> None:
        """The leg's link was far over capacity: most frames were lost, and none decodes
        until a keyframe. Its video is paused for a moment (the page says so; the audio
        goes on): nothing is sent to it, so its queue drains and no retransmission of
        what is lost for good fills it again. Its keyframe is asked for once the
        publisher has come down to the new target (at the old rate it would be too big
        for the link), and the page shows its video again once the publisher's encoder
        has settled at that rate (``_hold_over``)."""
        if leg.started and self.highest_seq is not None:
            leg.resume_seq = (self.highest_seq + leg.seq_off + 1) & 0xFFFF  # (no loss)
            leg.keep_ts = True
        leg.started = False
        leg.keyframe_wanted = False
        if leg.link is not None:
            leg.link.held()
        if leg.refresh_since is None:
            self._held.append(leg)
        leg.refresh_since = now

    def _hold_over(self, leg: Leg, now: float) -> bool:
        since, link = leg.refresh_since, leg.link
        if since is None or link is None:
            return False
        if not leg.started and not leg.keyframe_wanted:
            drained = now - since >= max(HOLD_MIN_S, 2 * (link.rtt or 0.0))
            came_down = self.incoming_bps <= CAME_DOWN * self.target_bitrate()
            if (drained and came_down) or now - since >= REFRESH_MAX_S:
                leg.keyframe_wanted = True
                self.request_keyframe(now)
            return False
        moving = leg.started and link.settled() and self.health.fps(now) >= HOLD_FPS
        if moving or now - since >= HOLD_MAX_S:
            leg.refresh_since = None
            return True
        return False

    def _measure(self, now: float) -> None:
        at, octets = self._rate_mark
        if now - at >= RATE_WINDOW_S:
            self.incoming_bps = (self.octets_in - octets) * 8 / (now - at) if at else 0.0
            self._rate_mark = (now, self.octets_in)

    def adapt(self, now: float) -> list[Leg]:
        """Pause the video of legs that stay too thin, resume them to probe, hold legs
        found far over capacity until a keyframe: the legs whose state as the page shows
        it changed now (``shown_paused``)."""
        changed, self._held = self._held, []
        self._measure(now)
        pacing = protecting = False
        for leg in self.legs:
            if leg.link is None:
                continue
            pacing = self._pace(leg) or pacing
            protecting = protecting or bool(leg.link.protect)
            if self._hold_over(leg, now):
                changed.append(leg)
            paused = leg.link.gate(now)
            if paused is None or paused == leg.paused:
                continue
            if paused:
                self._pause(leg)
            else:
                self._resume(leg, now)
            changed.append(leg)
        self.pacing, self.protecting = pacing, protecting
        return changed

    def _pace(self, leg: Leg) -> bool:
        """A thin leg is paced at a little over its estimate (pacing.py); whether it is."""
        assert leg.link is not None
        bps = leg.link.bps
        rate = None if leg.paused else pace_bps(bps, self.bitrate.pace_below_bps)
        if rate is None and leg.pacer is not None and leg.pacer.queue and bps:
            rate = PACE_FACTOR * bps  # (no longer thin: what waits leaves at its pace)
        if rate is not None:
            if leg.pacer is None:
                leg.pacer = Pacer()
            # Not under what the publisher is asked for, nor under what it sends: bursts
            # wait, the flow passes (a queue that only grows would drop, and the loss
            # would lower the estimate: the SFU's own doing, not the link's).
            leg.pace_rate = max(rate, PACE_FACTOR * self.last_remb_bps, self.incoming_bps)
        elif leg.pacer is not None and not leg.pacer.queue:
            leg.pacer = None
        return leg.pacer is not None

    def take_paced(self, now: float) -> Out:
        """The paced packets due now."""
        out: Out = []
        for leg in self.legs:
            if leg.pacer is not None and leg.pacer.queue:
                out += [(leg, packet) for packet in leg.pacer.due(now)]
        return out

    def next_paced(self) -> float | None:
        """When the next paced packet is due (None: none waits)."""
        times = [t for leg in self.legs if leg.pacer is not None and (t := leg.pacer.next_at())]
        return min(times) if times else None

    def _pause(self, leg: Leg) -> None:
        leg.paused = True
        leg.keyframe_wanted = False  # (a paused leg asks the publisher for nothing)
        leg.refresh_since = None
        self.last_remb = -1e9  # the target may change without it
        if leg.started and self.highest_seq is not None:
            # The next packet the subscriber gets follows the last one it got: the pause
            # is no loss to it, and the same timestamp offset keeps its clock right.
            leg.resume_seq = (self.highest_seq + leg.seq_off + 1) & 0xFFFF
            leg.keep_ts = True
        leg.started = False

    def _resume(self, leg: Leg, now: float) -> None:
        leg.paused = False
        leg.keyframe_wanted = True  # it starts again on a keyframe, asked for now
        self.request_keyframe(now)
        self.last_remb = -1e9  # the target may change with it


def shown_paused(leg: Leg) -> bool:
    """Whether the subscriber's page shows this leg's video as paused."""
    return leg.paused or leg.refresh_since is not None
