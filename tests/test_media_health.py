"""Media health as the forwarding core counts it (media_server/health.py): frames, frame
rate, freezes and loss, from a captured VP8 stream played through a real ``Upstream``."""

from __future__ import annotations

from media_server import health

from .test_forwarder import looped, rewrite, video_up, vp8


def test_frames_rate_freezes_and_loss_of_a_published_video() -> None:
    packets = looped(vp8(), 3)
    up = video_up()
    markers = 0
    for p in packets:
        up.on_rtp(p.data, p.h, p.t)
        markers += p.h.marker
    now = packets[-1].t
    seen = health.track(up, "camera", now)
    span = packets[-1].t - packets[0].t
    assert seen["frames"] == markers
    assert seen["freezes"] == 0 and not seen["frozen"]
    assert abs(seen["fps"] - markers / span) < 0.25 * markers / span
    assert seen["lost"] == 0 and seen["received"] == len(packets)
    # The picture stops for two seconds, then goes on with a packet in ten missing.
    later = [rewrite(p, seq_add=len(packets), ts_add=0, t_add=span + 2.0) for p in vp8()]
    assert health.track(up, "camera", now + 1.5)["frozen"] is True
    assert health.track(up, "camera", now + 1.5)["fps"] == 0.0
    kept = [p for i, p in enumerate(later) if i % 10 != 5]
    for p in kept:
        up.on_rtp(p.data, p.h, p.t)
        up.poll(p.t)  # the receiver reports to the publisher say the loss
    seen = health.track(up, "camera", kept[-1].t)
    assert seen["freezes"] == 1 and not seen["frozen"]
    # Retransmissions asked for never came (no publisher here): lost for good.
    assert seen["lost"] == len(later) - len(kept)
    assert 0.05 < seen["loss"] < 0.2


def test_the_frame_rate_from_the_first_second_and_a_freeze() -> None:
    clock = health.TrackHealth()
    for i in range(30):
        clock.frame(100.0 + i / 30)
    assert 25 < clock.fps(101.0) <= 31
    clock.frame(103.0)  # after a 2 s stop
    assert clock.freezes == 1
