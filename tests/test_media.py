"""The SFU with real aiortc participants: what each person sees and hears."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.bot import Bot, Remote, SignalingError
from bench.pattern_media import PatternVideoTrack, ToneAudioTrack, read_pattern

from .calls import Call, until


@pytest.fixture
async def call(tmp_path: Path) -> AsyncIterator[Call]:
    c = await Call.start(tmp_path, "MEDIA-1", resume_grace_s=1.0)
    yield c
    await c.close()


async def frames(remote: Remote, n: int, timeout: float = 10.0) -> list[tuple[int, int]]:
    """The (publisher id, counter) of the next n decoded frames."""
    assert remote.track is not None
    out = []
    for _ in range(n):
        frame = await asyncio.wait_for(remote.track.recv(), timeout)
        out.append(read_pattern(frame))
    return out


def remote_of(p: Bot, other: Bot, source: str = "camera") -> Remote:
    for remote in p.remotes.values():
        if remote.info["participant_id"] == other.participant_id and (
            remote.info["source"] == source
        ):
            return remote
    raise AssertionError(f"{p.participant_id} has no {source} of {other.participant_id}")


async def test_three_people_see_and_hear_each_other(call: Call) -> None:
    people = [await call.person(i) for i in (1, 2, 3)]
    for i, p in enumerate(people, start=1):
        await p.publish("camera", PatternVideoTrack(i))
        await p.publish("microphone", ToneAudioTrack(300 + 100 * i))
    await until(lambda: all(p.receiving(4) for p in people), what="4 remote tracks each")
    for i, p in enumerate(people, start=1):
        for j, other in enumerate(people, start=1):
            if other is p:
                continue
            seen = await frames(remote_of(p, other), 5)
            assert {ident for ident, _ in seen} == {j}, f"{i} sees {seen} from {j}"
            counters = [c for _, c in seen]
            assert counters == sorted(counters)  # in order, from one live source
            audio = remote_of(p, other, "microphone")
            assert audio.track is not None
            frame = await asyncio.wait_for(audio.track.recv(), 5)
            assert frame.sample_rate == 48000
    # Who each track belongs to travels with it.
    info = remote_of(people[0], people[1]).info
    assert info["owner"]["name"] == "用户2" and info["owner"]["role"] == "clerk"
    assert info["codec"] == "video/VP8"


async def test_h264_is_forwarded_as_sent(call: Call) -> None:
    pub = await call.person(1)
    sub = await call.person(2)
    await pub.publish("camera", PatternVideoTrack(5), codec="video/H264")
    await until(lambda: sub.receiving(1), what="subscription")
    remote = remote_of(sub, pub)
    assert remote.info["codec"] == "video/H264"
    assert {i for i, _ in await frames(remote, 10)} == {5}


async def test_a_late_joiner_sees_video_within_a_second(call: Call) -> None:
    first = await call.person(1)
    await first.publish("camera", PatternVideoTrack(1))
    await until(lambda: bool(call.media.tracks(call.sid)), what="published track")
    await asyncio.sleep(2.0)  # the publisher is well past its first keyframe
    late = await call.person(2)
    t0 = time.monotonic()
    await late.negotiate()
    remote = remote_of(late, first)
    ident, _ = (await frames(remote, 1, timeout=3.0))[0]
    elapsed = time.monotonic() - t0
    assert ident == 1
    assert elapsed < 1.0, f"first frame after {elapsed:.2f}s"


async def test_leaving_removes_the_tracks_for_the_others(call: Call) -> None:
    a, b, c = [await call.person(i) for i in (1, 2, 3)]
    for i, p in enumerate((a, b, c), start=1):
        await p.publish("camera", PatternVideoTrack(i))
    await until(lambda: a.receiving(2) and c.receiving(2), what="subscriptions")
    await b.leave()
    await until(
        lambda: all(t["participant_id"] != b.participant_id for t in a.tracks),
        what="b's tracks gone",
    )
    await until(lambda: a.receiving(1) and c.receiving(1), what="renegotiated")
    assert b.participant_id not in {r.info["participant_id"] for r in a.remotes.values()}
    # and the rest still flows
    assert (await frames(remote_of(a, c), 3))[0][0] == 3


async def test_the_document_camera_arrives_labelled(call: Call) -> None:
    clerk = await call.person(1)
    reviewer = await call.person(2, role="reviewer", dept="city-amr", level="city")
    await clerk.publish("camera", PatternVideoTrack(1))
    await clerk.publish("document", PatternVideoTrack(9, width=640, height=480))
    await until(lambda: reviewer.receiving(2), what="two video tracks")
    doc = remote_of(reviewer, clerk, "document")
    cam = remote_of(reviewer, clerk, "camera")
    assert doc.info["kind"] == "video" and doc.info["owner"]["role"] == "clerk"
    assert {i for i, _ in await frames(doc, 3)} == {9}
    assert {i for i, _ in await frames(cam, 3)} == {1}
    frame = await asyncio.wait_for(doc.track.recv(), 5)  # type: ignore[union-attr]
    assert (frame.width, frame.height) == (640, 480)  # full resolution, never rescaled
    # Unpublishing the document takes it away from the others.
    await clerk.unpublish("document")
    await until(lambda: len(reviewer.remotes) == 1, what="document gone")


async def test_the_speaker_is_announced(call: Call) -> None:
    talker = await call.person(1)
    listener = await call.person(2)
    await talker.publish("microphone", ToneAudioTrack(440, amplitude=0.5))
    msg = await listener.wait_for(
        "speaking", lambda m: m["participant_id"] == talker.participant_id, timeout=5
    )
    assert msg["levels"][talker.participant_id] > 0


async def test_loss_on_one_link_is_repaired(call: Call) -> None:
    from media_server import aiortc_adapter

    pub = await call.person(1)
    sub = await call.person(2)
    await pub.publish("camera", PatternVideoTrack(1, width=640, height=480))
    await until(lambda: sub.receiving(1), what="subscription")
    assert sub.pc is not None
    dropped = aiortc_adapter.impair_incoming(sub.pc, loss=0.05, seed=7)
    remote = remote_of(sub, pub)
    seen = await frames(remote, 150, timeout=5)  # ~5 s of video through 5 % loss
    assert {i for i, _ in seen} == {1}
    counters = [c for _, c in seen]
    assert counters == sorted(counters)
    assert dropped() >= 3  # loss really happened (static pictures: few packets)...
    room = call.media.rooms[call.sid]
    legs = [leg for up, _, _ in room.tracks.values() for leg in up.legs]
    assert legs and max(leg.retransmitted for leg in legs) > 0  # ...and was repaired


async def test_a_stalled_subscriber_does_not_slow_the_others(call: Call) -> None:
    from media_server import aiortc_adapter

    pub = await call.person(1)
    stalled = await call.person(2)
    healthy = await call.person(3)
    await pub.publish("camera", PatternVideoTrack(1))
    await until(lambda: stalled.receiving(1) and healthy.receiving(1), what="subscriptions")
    await frames(remote_of(healthy, pub), 3)
    assert stalled.pc is not None
    aiortc_adapter.stop_reading(stalled.pc)  # its socket is never read again
    remote = remote_of(healthy, pub)
    t0 = time.monotonic()
    seen = await frames(remote, 60, timeout=5)
    fps = len(seen) / (time.monotonic() - t0)
    assert fps > 24, f"healthy subscriber fell to {fps:.1f} fps"


async def test_a_vanished_participant_is_cleaned_up(call: Call) -> None:
    stays = await call.person(1)
    goes = await call.person(2)
    await goes.publish("camera", PatternVideoTrack(2))
    await until(lambda: stays.receiving(1), what="subscription")
    assert goes.pc is not None
    await goes.pc.close()  # the browser tab died: no leave
    await until(lambda: len(stays.remotes) == 0, timeout=15, what="cleanup")
    assert call.media.tracks(call.sid) == []


async def test_bad_offers_get_precise_errors(call: Call) -> None:
    p = await call.person(1)
    with pytest.raises(SignalingError) as err:
        await p.request({"type": "media.offer", "sdp": "v=0\r\nnot really sdp"})
    assert err.value.code == "bad_sdp"
    with pytest.raises(SignalingError) as err:
        await p.request(
            {
                "type": "media.offer",
                "sdp": "v=0\r\n" * 3,
                "publish": [{"mid": "0", "source": "hologram"}],
            }
        )
    assert err.value.code == "invalid_message"
    await p.publish("camera", PatternVideoTrack(1))  # the connection still works
    outsider = Bot(call.url, call.tokens.issue(sub="x", role="clerk"))
    await outsider.connect()
    call.people.append(outsider)
    with pytest.raises(SignalingError) as err:
        await outsider.request({"type": "media.offer", "sdp": "v=0\r\n" * 3})
    assert err.value.code == "not_joined"


async def test_a_refused_offer_changes_nothing(call: Call) -> None:
    """A bad offer from a live participant must not cost them their call."""
    pub = await call.person(1)
    sub = await call.person(2)
    await pub.publish("camera", PatternVideoTrack(1))
    await until(lambda: sub.receiving(1), what="subscription")
    assert pub.pc is not None and pub.pc.localDescription is not None
    live = pub.pc.localDescription.sdp
    [(mid, _)] = list(pub.published.items())
    for bad, code in (
        ({"sdp": "v=0\r\nno media here"}, "bad_sdp"),
        ({"sdp": live, "publish": [{"mid": mid, "source": "microphone"}]}, "bad_source"),
        ({"sdp": live, "publish": [{"mid": "99", "source": "camera"}]}, "unknown_mid"),
    ):
        with pytest.raises(SignalingError) as err:
            await pub.request({"type": "media.offer", **bad})
        assert err.value.code == code
    remote = remote_of(sub, pub)
    assert {i for i, _ in await frames(remote, 10)} == {1}  # still flowing
    assert [t["source"] for t in call.media.tracks(call.sid)] == ["camera"]
