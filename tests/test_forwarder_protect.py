"""Second copies for a leg with random loss (forwarder ``_echo``, bandwidth's
``protect``): what the subscriber receives, on real captured VP8, time passed in. The
level is the leg's estimate's decision (tests/test_bandwidth.py); here it is set."""

from __future__ import annotations

import struct
from itertools import pairwise

import pytest

from media_server import rtp
from media_server.forwarder import Bitrate, Leg, Upstream
from tests.test_forwarder import feed, leg, looped, video_up, vp8

RTX_SSRC, RTX_PT = 0xAB0002, 121


def _run(level: int, estimate: float = 2_500_000.0) -> tuple[Upstream, Leg, list[bytes]]:
    """The capture through a leg at this protection level: what the leg got, in order."""
    packets = vp8()
    up = video_up()
    lg = leg(rtx_ssrc=RTX_SSRC, rtx_payload_type=RTX_PT)
    up.add_leg(lg, packets[0].t)
    assert lg.link is not None and lg.link.can_protect
    lg.link.protect, lg.link.estimate = level, estimate
    up.protecting = level > 0  # (as adapt and the leg's reports set it)
    out = []
    for p in packets:
        out += up.on_rtp(p.data, p.h, p.t)
    out += up.take_echoes()  # (the room's timer sends what the last packet left)
    return up, lg, [d for who, d in out if who is lg]


def _split(got: list[bytes]) -> tuple[list[rtp.Header], list[tuple[int, int, bytes]]]:
    """(the media packets' headers, the copies as (position, OSN, payload after it))."""
    media, copies = [], []
    for i, data in enumerate(got):
        h = rtp.parse(data)
        if h.ssrc == RTX_SSRC:
            assert h.payload_type == RTX_PT
            payload = data[h.payload_start : h.payload_end]
            copies.append((i, struct.unpack("!H", payload[:2])[0], payload[2:]))
        else:
            media.append(h)
    return media, copies


def test_every_packet_twice_the_copy_after_the_next_packet() -> None:
    _, _, got = _run(level=2)
    media, copies = _split(got)
    assert media and sorted(osn for _, osn, _ in copies) == sorted(h.seq for h in media)
    where = {rtp.parse(d).seq: i for i, d in enumerate(got) if rtp.parse(d).ssrc != RTX_SSRC}
    by_seq = {rtp.parse(d).seq: d for d in got if rtp.parse(d).ssrc != RTX_SSRC}
    for i, osn, payload in copies:
        original = by_seq[osn]
        h = rtp.parse(original)
        assert payload == original[h.payload_start : h.payload_end]
        # spaced: the next original went first (one short burst of loss takes not both)
        following = (osn + 1) & 0xFFFF
        if following in where:
            assert i > where[following]
    rtx_seqs = [rtp.parse(got[i]).seq for i, _, _ in copies]
    assert all((b - a) & 0xFFFF == 1 for a, b in pairwise(rtx_seqs))


def test_some_loss_copies_each_frames_last_packet_and_keyframes() -> None:
    up, _, got = _run(level=1)
    media, copies = _split(got)
    assert up.is_keyframe is not None
    keys = {
        h.timestamp
        for h, d in zip(media, (x for x in got if rtp.parse(x).ssrc != RTX_SSRC), strict=True)
        if up.is_keyframe(d[h.payload_start : h.payload_end])
    }
    expected = {h.seq for h in media if h.marker or h.timestamp in keys}
    assert keys and {osn for _, osn, _ in copies} == expected
    assert len(expected) < len(media)


@pytest.mark.parametrize("estimate", [200_000.0, 400_000.0])
def test_copies_stay_within_their_budget(estimate: float) -> None:
    packets = vp8()
    _, _, got = _run(level=2, estimate=estimate)
    _, copies = _split(got)
    seconds = packets[-1].t - packets[0].t
    copied = sum(len(payload) + 2 + 12 for _, _, payload in copies)
    assert copied <= estimate / 8 * (seconds + 0.25) + 1500


def test_a_nack_on_a_protected_leg_is_answered_twice() -> None:
    up, lg, got = _run(level=2)
    media, _ = _split(got)
    want = [media[-5].seq]
    now = vp8()[-1].t + 0.1
    first = up.on_nack(lg, want, now)
    second = up.take_echoes()
    assert [w for w, _ in first] == [lg] and [w for w, _ in second] == [lg]
    for _, data in first + second:
        h = rtp.parse(data)
        assert h.ssrc == RTX_SSRC
        assert struct.unpack("!H", data[h.payload_start : h.payload_start + 2])[0] == want[0]
    assert lg.link is not None
    lg.link.protect = 0
    assert len(up.on_nack(lg, [media[-6].seq], now)) == 1 and not up.take_echoes()


def test_a_leg_reporting_random_loss_gets_copies_from_its_reports_on() -> None:
    """The whole path: the subscriber's receiver reports (8 % lost each second, no
    queue) make its leg protected, and the core then sends it second copies; none
    before, and none to a clean leg beside it."""
    packets = looped(vp8(), 8)
    up = video_up(bitrate=Bitrate(150_000, 2_500_000, 0, pace_below_bps=0))
    lossy = leg(rtx_ssrc=RTX_SSRC, rtx_payload_type=RTX_PT)
    clean = leg(rtx_ssrc=RTX_SSRC + 1, rtx_payload_type=RTX_PT)
    for lg in (lossy, clean):
        up.add_leg(lg, packets[0].t)
    first_copy = None
    next_report, lost, counted = packets[0].t + 1, 0, 0
    for p in packets:
        out = feed(up, [p]) + up.take_echoes()
        copies = [d for who, d in out if rtp.parse(d).ssrc == RTX_SSRC and who is lossy]
        if copies and first_copy is None:
            first_copy = p.t - packets[0].t
        assert not [d for who, d in out if who is clean and rtp.parse(d).ssrc != clean.ssrc]
        if p.t >= next_report:
            lost += round(0.08 * (lossy.packets - counted))
            counted = lossy.packets
            up.on_receiver_report(lossy, lost, counted, 90, 0, 0, p.t)
            up.on_receiver_report(clean, 0, clean.packets, 90, 0, 0, p.t)
            next_report += 1
        up.adapt(p.t)
    assert first_copy is not None and first_copy >= 1.0, first_copy
    assert lossy.echoed > 0 and clean.echoed == 0
