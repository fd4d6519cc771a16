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
    from . import rtp
    from .forwarder import Bitrate, Leg, Out
    from .health import TrackHealth

RATE_WINDOW_S = 0.5  # the publisher's rate, measured over at least this long
CAME_DOWN = 1.2  # the publisher sends at most this x what we asked: it has followed
HOLD_MIN_S = 1.0  # a held leg restarts on a keyframe: not before its queue drained (or 2
REFRESH_MAX_S = 3.0  # round trips) and the publisher came down, or after this long...
KEY_FIT_S = 0.6  # ...on one that crosses its link in this long at its estimate...
HOLD_FPS = 8.0  # ...asked for while the publisher's encoder sends this frame rate...
ASK_EVERY_S = 2.0  # ...at most this often...
ASK_MAX_S = 6.0  # ...and after this long on any keyframe. Its video is shown again once
HOLD_MAX_S = 10.0  # it carried a window of reports and the publisher sends HOLD_FPS


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
        _key_watch: list[int] | None
        _cache: list[tuple[int, bytes, rtp.Header] | None]
        key_seq: int
        sizing: bool
        health: TrackHealth
        pacing: bool
        protecting: bool

        def request_keyframe(self, now: float) -> None: ...
        def _start_leg(self, leg: Leg, h: rtp.Header) -> None: ...
        def _fan_out(
            self, data: bytes, h: rtp.Header, now: float, retransmission: bool, only: Leg | None
        ) -> Out: ...

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
        what is lost for good fills it again. Once the publisher has come down to the
        new target it restarts on a keyframe small enough for its link (``fit_keyframe``),
        and the page shows its video again once the publisher's encoder has settled at
        that rate (``_hold_over``)."""
        if leg.started and self.highest_seq is not None:
            leg.resume_seq = (self.highest_seq + leg.seq_off + 1) & 0xFFFF  # (no loss)
            leg.keep_ts = True
        leg.started = False
        leg.keyframe_wanted = leg.key_ok = False
        leg.frames_mark, leg.key_asked = (now, self.health.frames), -1e9
        if leg.link is not None:
            leg.link.held()
        if leg.refresh_since is None:
            self._held.append(leg)
        leg.refresh_since = now

    def _hold_over(self, leg: Leg, now: float) -> bool:
        since, link = leg.refresh_since, leg.link
        if since is None or link is None:
            return False
        if not leg.started:
            if not leg.key_ok:
                drained = now - since >= max(HOLD_MIN_S, 2 * (link.rtt or 0.0))
                came_down = self.incoming_bps <= CAME_DOWN * self.target_bitrate()
                leg.key_ok = (drained and came_down) or now - since >= REFRESH_MAX_S
            at, frames = leg.frames_mark
            if leg.keyframe_wanted or now - at < 1.0:
                return False
            leg.frames_mark = (now, self.health.frames)
            if now - since >= ASK_MAX_S:
                # None small enough came: the next one, whatever its size.
                leg.keyframe_wanted = True
                self.request_keyframe(now)
            elif (
                leg.key_ok
                and (self.health.frames - frames) / (now - at) >= HOLD_FPS
                and now - leg.key_asked >= ASK_EVERY_S
            ):
                # While the encoder drops frames (its rate control over its new budget,
                # 1-3 a second for seconds after a steep drop) a keyframe asked for comes
                # at the old resolution, too big; it starts its lower resolution with one
                # of its own, which ``fit_keyframe`` takes.
                leg.key_asked = now
                self.request_keyframe(now)
            return False
        moving = leg.started and link.settled() and self.health.fps(now) >= HOLD_FPS
        if moving or now - since >= HOLD_MAX_S:
            leg.refresh_since = None
            return True
        return False

    def fit_keyframe(self, h: rtp.Header, now: float) -> Out:
        """Per packet while a held leg waits (``sizing``): once a keyframe is complete,
        the held legs whose link it crosses within KEY_FIT_S restart on it, its packets
        replayed from the retransmission cache. (A keyframe made at the old resolution,
        30-80 KB, takes 1-2 s of a 300 kbps link: a jitter buffer as long, and the frames
        behind it wait.)"""
        watch = self._key_watch
        if h.seq == self.key_seq:  # (``on_rtp`` finds the keyframes while sizing)
            watch = self._key_watch = [h.timestamp, h.seq, 0]
        elif watch is None or watch[0] != h.timestamp:
            return []
        watch[2] += h.payload_end - h.payload_start
        if not h.marker:
            return []
        self._key_watch = None
        out: Out = []
        for leg in self.legs:
            link = leg.link
            if leg.started or not leg.key_ok or leg.refresh_since is None or link is None:
                continue
            if watch[2] * 8 <= KEY_FIT_S * (link.bps or 0):
                out += self._replay(leg, watch[1], h.seq, now)
        return out

    def _replay(self, leg: Leg, first: int, last: int, now: float) -> Out:
        cached = []
        seq = first
        while True:
            entry = self._cache[seq % len(self._cache)]
            if entry is None or entry[0] != seq:
                return []  # (a packet of it is missing: the next one)
            cached.append(entry)
            if seq == last:
                break
            seq = (seq + 1) & 0xFFFF
        self._start_leg(leg, cached[0][2])
        out: Out = []
        for _, data, h in cached:
            out += self._fan_out(data, h, now, False, leg)
        return out

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
        pacing = protecting = sizing = False
        for leg in self.legs:
            if leg.link is None:
                continue
            pacing = self._pace(leg) or pacing
            protecting = protecting or bool(leg.link.protect)
            if self._hold_over(leg, now):
                changed.append(leg)
            sizing = sizing or (
                leg.key_ok
                and leg.refresh_since is not None
                and not leg.started
                and not leg.keyframe_wanted
            )
            paused = leg.link.gate(now)
            if paused is None or paused == leg.paused:
                continue
            if paused:
                self._pause(leg)
            else:
                self._resume(leg, now)
            changed.append(leg)
        self.pacing, self.protecting, self.sizing = pacing, protecting, sizing and bool(self._cache)
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
        leg.keyframe_wanted = leg.key_ok = False  # (a paused leg asks for nothing)
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
