"""Per-track recording: the capture itself on synthetic RTP, then through the SFU with
real aiortc participants (content, duration, indicator and policies, a full disk), and a
real server process killed with SIGKILL mid-session."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiortc.codecs.vpx import vp8_depayload

from bench.bot import Bot
from bench.pattern_media import PatternVideoTrack, ToneAudioTrack, read_pattern
from bench.rtp_streams import RtpSender, encode_audio, encode_video
from jointreview import cli
from recording.bitstream import annexb_nals, sps_dimensions, vp8_payload
from recording.live import track_capture as capture
from recording.repair import repair
from signaling.appkeys import MEDIA
from signaling.auth import TokenService

from .calls import Call, until
from .conftest import ServerProcess, auth, make_config

# -- the capture on synthetic RTP --------------------------------------------------------


def _decode(path: Path) -> tuple[list[Any], float]:
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams[0]))
        return frames, (c.duration or 0) / 1e6


def _feed(cap: capture.TrackCapture, packets: list[tuple[bytes, Any]], ssrc: int) -> None:
    t = time.time()
    for data, h in packets:
        cap.feed(data, h, t, ssrc)


@pytest.mark.parametrize("codec", ["video/VP8", "video/H264"])
def test_video_through_loss_reordering_retransmission_and_wrap(tmp_path: Path, codec: str) -> None:
    """Reordered packets are put back, a retransmitted one (RTX) fills its gap, a packet
    lost for good costs frames only until the next keyframe, and RTP timestamps wrap."""
    encoded = encode_video(codec, 90)
    sender = RtpSender(codec)
    sender.seq = 0xFFF0  # sequence numbers wrap early on
    base = 0xFFFFFFFF - 90_000  # so do timestamps, after a second
    frames = [(sender.packets(sender.payloads(d), base + pts), key) for d, pts, key in encoded]
    stream: list[tuple[bytes, Any]] = []
    rtx_seq = 100
    for i, (pkts, _) in enumerate(frames):
        if i == 20 and len(pkts) > 1:  # reordered within the frame
            pkts = [pkts[1], pkts[0], *pkts[2:]]
        if i == 30:  # its first packet arrives only as a retransmission, a frame later
            stream += pkts[1:]
            late = pkts[0]
            continue
        stream += pkts
        if i == 31:
            data, h = late
            rtx = sender.rtx(data, h, 4242, 97, rtx_seq)
            stream.append((rtx, capture.rtp.parse(rtx)))
    path = tmp_path / f"t.{capture.container_for(codec)[0]}"  # type: ignore[index]
    cap = capture.TrackCapture(path, codec, 90_000)
    _feed(cap, stream, sender.ssrc)
    cap.close()
    decoded, _ = _decode(path)
    seen = [read_pattern(f) for f in decoded]
    assert {ident for ident, _ in seen} == {1}
    assert [c for _, c in seen] == list(range(90))  # every frame, in order
    assert cap.gaps == 0 and cap.started_at is not None
    info = repair(path)
    assert abs(info["duration_s"] - 3.0) < 0.1


def test_a_lost_packet_drops_frames_until_a_keyframe(tmp_path: Path) -> None:
    encoded = encode_video("video/VP8", 40)
    sender = RtpSender("video/VP8")
    stream = []
    for i, (d, pts, _) in enumerate(encoded):
        pkts = sender.packets(sender.payloads(d), pts)
        stream += pkts[1:] if i == 10 else pkts  # a packet of frame 10 never arrives
    asked: list[int] = []
    cap = capture.TrackCapture(tmp_path / "v.webm", "video/VP8", 90_000, lambda: asked.append(1))
    t = time.time()
    for n, (data, h) in enumerate(stream):
        cap.feed(data, h, t + n * 0.01, sender.ssrc)  # time passes: the gap is given up
    cap.close()
    decoded, _ = _decode(tmp_path / "v.webm")
    assert [read_pattern(f)[1] for f in decoded] == list(range(10))  # no keyframe after
    assert cap.gaps == 1 and asked  # ...so it asked the publisher for one


def test_opus_packets_are_kept_as_sent(tmp_path: Path) -> None:
    sender = RtpSender("audio/opus")
    stream = []
    for data, pts in encode_audio(100):
        stream += sender.packets([data], pts)
    random.Random(1).shuffle(stream[40:45])  # jitter: reordered a little
    cap = capture.TrackCapture(tmp_path / "a.webm", "audio/opus", 48_000)
    _feed(cap, stream, sender.ssrc)
    cap.close()
    decoded, _ = _decode(tmp_path / "a.webm")
    assert sum(f.samples for f in decoded) >= 99 * 960
    with av.open(str(tmp_path / "a.webm")) as c:
        assert c.streams[0].codec_context.extradata[:8] == b"OpusHead"


def test_vp8_payload_matches_aiortc() -> None:
    sender = RtpSender("video/VP8")
    for data, _, _ in encode_video("video/VP8", 3):
        for payload in sender.payloads(data):
            assert vp8_payload(payload) == vp8_depayload(payload)


def test_sps_dimensions() -> None:
    data = next(d for d, _, key in encode_video("video/H264", 1, width=640, height=360) if key)
    sps = next(n for n in annexb_nals(data) if n[0] & 0x1F == 7)
    assert sps_dimensions(sps) == (640, 360)  # 360 is coded as 368, cropped


# -- through the SFU ---------------------------------------------------------------------


class Rec(Call):
    """A session whose recording lands in the case file of ``REC-1``."""

    @property
    def dir(self) -> Path:
        return self.root / "data" / "archive" / self.case_id / self.sid

    async def end(self) -> dict[str, Any]:
        await self.end_session()
        await until(lambda: (self.dir / "manifest.json").exists(), 15, "manifest")
        # The manifest is written before its archive.sealed event is filed: wait for both.
        for _ in range(250):
            if "archive.sealed" in await self.events():
                break
            await asyncio.sleep(0.02)
        return dict(json.loads((self.dir / "manifest.json").read_text()))

    def track_index(self) -> dict[str, Any]:
        return dict(json.loads((self.dir / "recording.json").read_text()))

    async def events(self) -> list[str]:
        service = self.server.app[MEDIA].recording.service
        return [e.type for e in await service.events(self.case_id)]


async def _server(tmp_path: Path, **overrides: Any) -> Rec:
    r: Rec = await Rec.start(tmp_path, "REC-1", **overrides)
    return r


@pytest.fixture
async def rec(tmp_path: Path) -> AsyncIterator[Rec]:
    r = await _server(tmp_path)
    yield r
    await r.close()


@pytest.fixture
async def clerk_rec(tmp_path: Path) -> AsyncIterator[Rec]:
    r = await _server(tmp_path, recording_policy="clerk")
    yield r
    await r.close()


def _track(index: dict[str, Any], source: str, codec: str) -> dict[str, Any]:
    return next(t for t in index["tracks"] if t["source"] == source and t["codec"] == codec)


async def test_every_track_is_recorded_as_sent(rec: Rec) -> None:
    """VP8, H.264 and Opus land in their files with their content and real duration;
    everyone sees the indicator; the case file is sealed and verifies."""
    a = await rec.person(1)
    b = await rec.person(2)
    assert a.joined["recording"] is True  # policy "always": said before any media
    cam = PatternVideoTrack(3)
    t0 = time.time()
    await a.publish("camera", cam)
    await a.publish("microphone", ToneAudioTrack(440))
    await b.publish("camera", PatternVideoTrack(4), codec="video/H264")
    on = await b.wait_for("recording", timeout=5)
    assert on["active"] is True
    await until(lambda: a.receiving(1) and b.receiving(2), what="subscriptions")
    await asyncio.sleep(3.0)
    counter_at_end = cam.counter
    t1 = time.time()
    manifest = await rec.end()
    index = rec.track_index()
    checks = [
        ("camera", "video/VP8", 3),
        ("camera", "video/H264", 4),
        ("microphone", "audio/opus", 0),
    ]
    for source, codec, ident in checks:
        entry = _track(index, source, codec)
        assert entry["state"] == "closed", entry
        decoded, duration = _decode(rec.dir / entry["file"])
        # Recorded: from its first frame's arrival to the end of the session.
        recorded = t1 - entry["started_at"]
        assert abs(duration - recorded) <= 0.5, (codec, duration, recorded)
        assert entry["owner"]["sub"] in ("user-1", "user-2") and entry["started_at"] >= t0
        if ident:
            seen = [read_pattern(f) for f in decoded]
            assert {i for i, _ in seen} == {ident}
            counters = [c for _, c in seen]
            assert counters == sorted(counters)
            if codec == "video/VP8":
                assert counters[-1] >= counter_at_end - 10  # up to the end
        else:
            assert sum(f.samples for f in decoded) / 48_000 >= duration - 0.2
    assert manifest["recording"]["crashes"] == 0
    listed = {f["path"] for f in manifest["files"]}
    assert {t["file"] for t in index["tracks"]} <= listed
    events = await rec.events()
    assert "recording.started" in events and "recording.stopped" in events
    assert events[-1] == "archive.sealed"
    data_dir = rec.dir.parents[2]
    verify = ["verify", "REC-1", rec.sid, "--data-dir", str(data_dir)]
    assert await asyncio.to_thread(cli.main, verify) == 0
    # A single byte changed in a recording is caught.
    track = rec.dir / index["tracks"][0]["file"]
    raw = bytearray(track.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    track.write_bytes(bytes(raw))
    assert await asyncio.to_thread(cli.main, verify) == 1


async def test_clerk_policy_starts_and_stops_on_request(clerk_rec: Rec) -> None:
    clerk = await clerk_rec.person(1)
    reviewer = await clerk_rec.person(2, role="reviewer", dept="city-amr", level="city")
    assert clerk.joined["recording"] is False and reviewer.joined["recording"] is False
    cam = PatternVideoTrack(6)
    await clerk.publish("camera", cam)
    await until(lambda: reviewer.receiving(1), what="subscription")
    await asyncio.sleep(0.5)
    assert not (clerk_rec.dir / "recording.json").exists()  # nothing before consent
    with pytest.raises(Exception, match="forbidden"):
        await reviewer.request({"type": "recording.start"})
    ack = await clerk.request({"type": "recording.start"})
    assert ack["recording"] is True
    assert (await reviewer.wait_for("recording"))["active"] is True
    started_at = cam.counter
    await asyncio.sleep(1.5)
    await clerk.request({"type": "recording.stop"})
    off = await reviewer.wait_for("recording", lambda m: m["active"] is False)
    assert off["by"]["sub"] == "user-1"
    stopped_at = cam.counter
    await until(lambda: clerk_rec.track_index()["runs"][-1]["state"] == "closed", what="closed")
    entry = _track(clerk_rec.track_index(), "camera", "video/VP8")
    decoded, _ = _decode(clerk_rec.dir / entry["file"])
    counters = [read_pattern(f)[1] for f in decoded]
    assert started_at <= counters[0] <= started_at + 15 and counters[-1] <= stopped_at
    events = await clerk_rec.events()
    assert events.count("recording.started") == 1 and events.count("recording.stopped") == 1


async def test_a_full_disk_is_reported_and_forwarding_goes_on(rec: Rec) -> None:
    clerk = await rec.person(1)
    other = await rec.person(2)
    sup = Bot(rec.url, rec.tokens.issue(sub="sup-01", role="supervisor"))
    rec.people.append(sup)
    await sup.connect()
    # The clerk's camera file will be written to /dev/full: every write fails (ENOSPC).
    tracks = rec.dir / "tracks"
    tracks.mkdir(parents=True)
    name = clerk.participant_id.replace(".", "_")
    os.symlink("/dev/full", tracks / f"{name}_1_0.webm")
    await clerk.publish("camera", PatternVideoTrack(7))
    error = await clerk.wait_for("recording.error", timeout=10)
    assert error["code"] == "disk_full" and error["track_id"] == f"{clerk.participant_id}.1.0"
    assert (await sup.wait_for("recording.error", timeout=5))["code"] == "disk_full"
    await until(lambda: other.receiving(1), what="subscription")
    remote = next(iter(other.remotes.values()))
    assert remote.track is not None
    seen = [read_pattern(await asyncio.wait_for(remote.track.recv(), 5)) for _ in range(30)]
    assert {i for i, _ in seen} == {7}  # the other participant still sees the clerk
    assert "recording.failed" in await rec.events()
    assert _track(rec.track_index(), "camera", "video/VP8")["state"] == "failed"


# -- a real process, killed --------------------------------------------------------------


async def test_kill_9_keeps_what_was_received_and_recovers_at_start(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "node"
    server = server_factory(data_dir=data, env={"JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]'})
    config = make_config(tmp_path)
    tokens = TokenService(config)
    clerk_token = tokens.issue(sub="clerk-01", role="clerk")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.url}/api/cases/KILL-1/sessions", json={}, headers=auth(clerk_token)
        ) as res,
    ):
        sid = (await res.json())["session_id"]
    a = Bot(server.url, tokens.issue(sub="u1", role="clerk"))
    b = Bot(server.url, tokens.issue(sub="u2", role="clerk"))
    vp8, h264 = PatternVideoTrack(1), PatternVideoTrack(2)
    try:
        for p in (a, b):
            await p.connect()
            await p.join(sid)
        await a.publish("camera", vp8)
        await a.publish("microphone", ToneAudioTrack(300))
        await b.publish("camera", h264, codec="video/H264")
        await until(lambda: a.receiving(1) and b.receiving(2), what="subscriptions")
        await asyncio.sleep(2.0)
        sent = {1: vp8.counter, 2: h264.counter}  # frames made up to the kill
        server.stop(signal.SIGKILL)
    finally:
        for p in (a, b):
            await p.close()
    directory = data / "archive" / "KILL-1" / sid
    assert json.loads((directory / "recording.json").read_text())["runs"][0]["state"] == "open"
    server.start()  # repairs what the crash left open, before it records again
    index = json.loads((directory / "recording.json").read_text())
    assert index["runs"][0]["state"] == "recovered_after_crash"
    losses = {}
    for entry in index["tracks"]:
        assert entry["state"] == "recovered_after_crash", entry
        decoded, duration = _decode(directory / entry["file"])
        assert duration > 1.0 and abs(duration - entry["duration_s"]) < 0.1
        if entry["kind"] == "video":
            seen = [read_pattern(f) for f in decoded]
            ident = seen[0][0]
            last = max(c for _, c in seen)
            losses[entry["codec"]] = (sent[ident] - 1 - last) / 30
            assert last >= sent[ident] - 1 - 6, f"{entry['codec']}: lost {losses[entry['codec']]}s"
    print("frames lost at SIGKILL (s, upper bound incl. encode+network):", losses)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.url}/api/sessions/{sid}/end", headers=auth(clerk_token)) as res,
    ):
        assert res.status == 200
    await until(lambda: (directory / "manifest.json").exists(), 10, "manifest")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["recording"]["crashes"] == 1
    assert len(manifest["recording"]["recovered_after_crash"]) == 3
    types = [e["type"] for e in map(json.loads, (directory / "timeline.jsonl").open())]
    assert "recording.recovered" in types
