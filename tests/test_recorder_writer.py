"""The recorder's writer on its own: the WebM it writes cluster by cluster (decodable as
it grows, wherever a kill cuts it, final after ``repair``), the short path packets take
(the same file as ``feed``), and the writer thread's batches (what was received reaches
the OS within a batch, without any close: a kill -9 of a process recording loses at most
that)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av

from bench.pattern_media import read_pattern
from bench.rtp_streams import RtpSender, encode_audio, encode_video
from media_server.forwarder import Upstream
from recording import archive, track_index, webm
from recording.live import recorder, writer
from recording.live import track_capture as capture
from recording.live.room_tap import RoomRecording
from recording.repair import repair
from signaling import replay


def _frames(path: Path) -> list[Any]:
    with av.open(str(path)) as c:
        return list(c.decode(c.streams[0]))


def _packets(path: Path) -> list[tuple[int, bool]]:
    """(pts in ms, keyframe) of every packet a demuxer finds, up to a cut."""
    out = []
    with av.open(str(path)) as c:
        try:
            for p in c.demux(c.streams[0]):
                if p.size:
                    out.append((int(p.pts), bool(p.is_keyframe)))
        except (av.error.InvalidDataError, av.error.EOFError):
            pass
    return out


def test_live_webm_is_whole_after_every_flush_and_repairs_from_any_cut(tmp_path: Path) -> None:
    encoded = encode_video("video/VP8", 60)
    sender = RtpSender("video/VP8")
    path = tmp_path / "v.webm"
    cap = capture.TrackCapture(path, "video/VP8", 90_000)
    t = time.time()
    sizes = []
    for i, (data, pts, _) in enumerate(encoded):
        for raw, h in sender.packets(sender.payloads(data), pts):
            cap.feed_batch([(None, raw, h, t, sender.ssrc)])
        if i % 7 == 6:
            cap.flush()  # what the recorder does after each batch
            sizes.append(path.stat().st_size)
            # A kill right now keeps every frame so far, decodable, in order.
            seen = [read_pattern(f) for f in _frames(path)]
            assert [c for _, c in seen] == list(range(i + 1))
    cap.close()
    data = path.read_bytes()
    # Cut anywhere (a write the kill interrupted): repair keeps what came before the cut.
    for cut in (sizes[0] - 1, sizes[2] + 100, len(data) - 3):
        cutfile = tmp_path / f"cut{cut}.webm"
        cutfile.write_bytes(data[:cut])
        info = repair(cutfile)
        counters = [read_pattern(f)[1] for f in _frames(cutfile)]
        assert counters == list(range(len(counters))) and info["packets"] == len(counters)
        assert len(counters) >= sum(1 for s in sizes if s <= cut) * 7 - 1
    info = repair(path)
    assert [read_pattern(f)[1] for f in _frames(path)] == list(range(60))
    assert abs(info["duration_s"] - 59 / 30) < 0.05
    with av.open(str(path)) as c:  # final: duration and size in the container
        assert c.duration and abs(c.duration / 1e6 - 2.0) < 0.1
        assert (c.streams[0].codec_context.width, c.streams[0].codec_context.height) == (320, 240)


def test_live_webm_timestamps_keyframes_and_long_gaps(tmp_path: Path) -> None:
    """Each frame keeps its own time (ms), keyframes are marked and open a cluster, and a
    jump longer than a block's 16-bit offset opens a new cluster."""
    encoded = encode_video("video/VP8", 10)
    path = tmp_path / "v.webm"
    key = encoded[0][0]
    live = webm.LiveWebm(path, webm.webm_header("video/vp8", 320, 240), video=True)
    times = [0, 33, 67, 40_000, 40_033, 100_000]
    for n, ms in enumerate(times):
        live.add(ms, n in (0, 3), key if n in (0, 3) else encoded[min(n, 9)][0])
    live.close()
    assert _packets(path) == [(ms, n in (0, 3)) for n, ms in enumerate(times)]


def test_opus_in_live_webm(tmp_path: Path) -> None:
    sender = RtpSender("audio/opus")
    path = tmp_path / "a.webm"
    cap = capture.TrackCapture(path, "audio/opus", 48_000)
    t = time.time()
    for n, (data, pts) in enumerate(encode_audio(100)):
        cap.feed_batch([(None, raw, h, t, sender.ssrc) for raw, h in sender.packets([data], pts)])
        if n % 5 == 4:
            cap.flush()
    cap.close()
    assert [ms for ms, _ in _packets(path)] == [20 * n for n in range(100)]
    repair(path)
    assert sum(f.samples for f in _frames(path)) >= 99 * 960
    with av.open(str(path)) as c:
        assert c.streams[0].codec_context.extradata[:8] == b"OpusHead"


def test_feed_batch_and_feed_write_the_same_file(tmp_path: Path) -> None:
    """The batch path is only a shortcut: with loss, reordering and RTX mixed in, it
    writes what ``feed`` writes, byte for byte after the header."""
    encoded = encode_video("video/VP8", 90, width=640, height=480)
    sender = RtpSender("video/VP8")
    stream: list[tuple[bytes, Any]] = []
    for i, (d, pts, _) in enumerate(encoded):
        pkts = sender.packets(sender.payloads(d), pts)
        if i == 12 and len(pkts) > 1:
            pkts = [pkts[1], pkts[0], *pkts[2:]]  # reordered
        if i == 60:
            pkts = pkts[1:]  # lost for good: no frame is written after it (no keyframe)
        stream += pkts
    stream.insert(30, stream[29])  # a duplicate
    data, h = stream[40]
    rtx = sender.rtx(data, h, 777, 97, 5)
    stream.insert(43, (rtx, capture.rtp.parse(rtx)))  # and a needless retransmission
    data, h = stream[50]
    del stream[50]  # lost, then retransmitted in time
    rtx = sender.rtx(data, h, 777, 97, 6)
    stream.insert(55, (rtx, capture.rtp.parse(rtx)))
    files = []
    t = time.time()
    for how in ("feed", "batch"):
        path = tmp_path / f"{how}.webm"
        cap = capture.TrackCapture(path, "video/VP8", 90_000)
        items = [(None, raw, hdr, t + n * 0.01, sender.ssrc) for n, (raw, hdr) in enumerate(stream)]
        if how == "feed":
            for item in items:
                cap.feed(*item[1:])
        else:
            for k in range(0, len(items), 9):
                cap.feed_batch(items[k : k + 9])
        cap.close()
        files.append((path.read_bytes(), cap.frames, cap.gaps))
    header = len(webm.webm_header("video/vp8", 640, 480))
    assert files[0][1:] == files[1][1:] == (60, 1)
    assert files[0][0][header:] == files[1][0][header:]


async def _until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.01)):
        if cond() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert cond()


# -- the writer thread ---------------------------------------------------------------------


async def test_frames_reach_the_file_while_the_track_is_live(tmp_path: Path) -> None:
    """The hook only queues; within a batch or so the writer has the frames in the file,
    decodable, long before the track ends (what a kill -9 keeps). With nothing left to
    record the writer sleeps until woken instead of ticking."""
    encoded = encode_video("video/VP8", 45)
    sender = RtpSender("video/VP8")
    up = Upstream("p0.0", "video", "video/VP8", clock_rate=90_000, rtcp_ssrc=1, nack=True)
    up.ssrc = sender.ssrc
    peer = SimpleNamespace(participant_id="p0", owner={"sub": "u0", "role": "clerk"})
    room: Any = SimpleNamespace(
        session_id="s_w", tracks={up.track_id: (up, peer, SimpleNamespace(source="camera"))}
    )
    events: list[dict[str, Any]] = []
    rec_ = recorder.Recorder(tmp_path, lambda sid, msg: events.append(msg))
    assert rec_.writer_state() == "idle"  # (what /health reports) no thread before a recording
    rec = rec_.record(room, "W-1")
    assert rec_.writer_state() == "running"
    path = tmp_path / "W-1" / "s_w" / "tracks" / "p0_0.webm"
    try:
        for i, (d, pts, _) in enumerate(encoded):
            for raw, h in sender.packets(sender.payloads(d), pts):
                rec(up, raw, h)
            await asyncio.sleep(1 / 30)
            if i == 29:  # within a batch or so (2 s: a loaded test machine)
                await _until(lambda: path.exists() and len(_frames(path)) >= 30)
                assert [read_pattern(f)[1] for f in _frames(path)] == list(range(30))
        assert rec_.stats()["open_tracks"] == 1
        summary = await asyncio.wait_for(rec.stop(), 10)
        await _until(lambda: rec_._idle)  # asleep until woken, not ticking
    finally:
        rec_.close()
    assert rec_.writer_state() == "stopped"
    assert summary["files"] == ["tracks/p0_0.webm"] and not events
    assert [read_pattern(f)[1] for f in _frames(path)] == list(range(45))
    stats = rec_.stats()
    assert stats["packets"] >= 45 and stats["dropped"] == 0 and stats["frames"] == 45


async def test_a_disk_filling_up_mid_track_fails_that_track_and_is_reported(
    tmp_path: Path,
) -> None:
    encoded = encode_video("video/VP8", 30)
    senders = {kind: RtpSender(codec) for kind, codec in (("v", "video/VP8"), ("a", "audio/opus"))}
    uv = Upstream("p0.0", "video", "video/VP8", clock_rate=90_000, rtcp_ssrc=1, nack=True)
    ua = Upstream("p0.1", "audio", "audio/opus", clock_rate=48_000, rtcp_ssrc=1)
    uv.ssrc, ua.ssrc = senders["v"].ssrc, senders["a"].ssrc
    peer = SimpleNamespace(participant_id="p0", owner={"sub": "u0", "role": "clerk"})
    room: Any = SimpleNamespace(
        session_id="s_f",
        tracks={
            uv.track_id: (uv, peer, SimpleNamespace(source="camera")),
            ua.track_id: (ua, peer, SimpleNamespace(source="microphone")),
        },
    )
    events: list[dict[str, Any]] = []
    rec_ = recorder.Recorder(tmp_path, lambda sid, msg: events.append(msg))
    rec = rec_.record(room, "F-1")
    audio = iter(encode_audio(60))
    try:
        for i, (d, pts, _) in enumerate(encoded):
            for raw, h in senders["v"].packets(senders["v"].payloads(d), pts):
                rec(uv, raw, h)
            data, apts = next(audio)
            for raw, h in senders["a"].packets([data], apts):
                rec(ua, raw, h)
            await asyncio.sleep(1 / 30)
            if i == 10:  # the disk is full from now on, for the camera's file
                await _until(lambda: len(rec_.writer.tracks) == 2)
                cap = rec_.writer.tracks[rec.refs[uv]].capture
                assert cap is not None and cap.webm is not None
                full = os.open("/dev/full", os.O_WRONLY)
                os.dup2(full, cap.webm.fd)
                os.close(full)
        await _until(lambda: bool(events))
        summary = await asyncio.wait_for(rec.stop(), 10)
    finally:
        rec_.close()
    assert [(e["code"], e["track_id"]) for e in events] == [("disk_full", "p0.0")]
    assert summary["failed"] == 1 and summary["files"] == ["tracks/p0_1.webm"]
    index = json.loads((tmp_path / "F-1" / "s_f" / "recording.json").read_text())
    states = {t["track_id"]: (t["state"], bool(t["error"])) for t in index["tracks"]}
    assert states == {"p0.0": ("failed", True), "p0.1": ("closed", False)}


async def test_a_full_queue_drops_packets_never_control_messages(tmp_path: Path) -> None:
    up = Upstream("p0.1", "audio", "audio/opus", clock_rate=48_000, rtcp_ssrc=1)
    sender = RtpSender("audio/opus")
    up.ssrc = sender.ssrc
    peer = SimpleNamespace(participant_id="p0", owner={"sub": "u0", "role": "clerk"})
    room: Any = SimpleNamespace(
        session_id="s_q", tracks={up.track_id: (up, peer, SimpleNamespace(source="microphone"))}
    )
    events: list[dict[str, Any]] = []
    rec_ = recorder.Recorder(tmp_path, lambda sid, msg: events.append(msg), queue_packets=0)
    rec = rec_.record(room, "Q-1")
    try:
        for raw, h in sender.packets([b"\x78" + bytes(50)], 0):
            rec(up, raw, h)
        summary = await asyncio.wait_for(rec.stop(), 10)  # start, stop: never dropped
    finally:
        rec_.close()
    assert rec_.dropped == 1 and summary == {"tracks": 0, "failed": 0, "files": []}
    assert [e["code"] for e in events] == ["overloaded"]


# -- kill -9 ---------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import asyncio, sys, time
from pathlib import Path
from types import SimpleNamespace
from media_server.forwarder import Upstream
from bench.rtp_streams import RtpSender, encode_audio, encode_video
from recording.live.recorder import Recorder

async def main():
    video, audio = encode_video("video/VP8", 150), encode_audio(250)
    vs, as_ = RtpSender("video/VP8"), RtpSender("audio/opus")
    uv = Upstream("p0.0", "video", "video/VP8", clock_rate=90_000, rtcp_ssrc=1, nack=True)
    ua = Upstream("p0.1", "audio", "audio/opus", clock_rate=48_000, rtcp_ssrc=1)
    uv.ssrc, ua.ssrc = vs.ssrc, as_.ssrc
    peer = SimpleNamespace(participant_id="p0", owner={})
    tracks = {u.track_id: (u, peer, SimpleNamespace(source=s))
              for u, s in ((uv, "camera"), (ua, "microphone"))}
    room = SimpleNamespace(session_id="s_k", tracks=tracks)
    rec = Recorder(Path(sys.argv[1]), lambda sid, msg: None).record(room, "K-1")
    t0 = time.monotonic()
    v = a = 0
    while v < len(video):
        now = time.monotonic() - t0
        while v < len(video) and v / 30 <= now:
            d, pts, _ = video[v]
            for raw, h in vs.packets(vs.payloads(d), pts):
                rec(uv, raw, h)
            v += 1
        while a < len(audio) and a / 50 <= now:
            for raw, h in as_.packets([audio[a][0]], audio[a][1]):
                rec(ua, raw, h)
            a += 1
        print(v, a, flush=True)  # received so far (the recorder was handed them)
        await asyncio.sleep(0.005)

asyncio.run(main())
"""


def test_kill_9_loses_at_most_a_batch_of_what_was_received(tmp_path: Path) -> None:
    """Killed at a random moment, the writer has handed the OS everything it received up
    to one batch (``BATCH_S``) before: compared here with what its hook had been handed
    (not with what a sender made), so encoding and network delays do not count."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    kill_at = random.uniform(2.0, 3.5)
    start = None
    received = (0, 0)
    for line in proc.stdout:
        video, audio = map(int, line.split())
        received = (video, audio)
        start = start or time.monotonic()
        if time.monotonic() - start >= kill_at:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(10)
    tracks = tmp_path / "K-1" / "s_k" / "tracks"
    repair(tracks / "p0_0.webm")
    repair(tracks / "p0_1.webm")
    video_lost = received[0] - 1 - max(read_pattern(f)[1] for f in _frames(tracks / "p0_0.webm"))
    audio_lost = received[1] - sum(f.samples for f in _frames(tracks / "p0_1.webm")) // 960
    print(f"lost at SIGKILL: {video_lost} video frames, {audio_lost} audio packets")
    # Allowed: a batch and the time to write it; one frame either way because the child
    # may have fed one more (5 ms later) before the kill landed.
    budget_s = recorder.BATCH_S + 0.04
    assert -1 <= video_lost <= budget_s * 30 + 1
    assert -1 <= audio_lost <= budget_s * 50 + 1


def _asks(keyframe_every_s: float, tmp_path: Path) -> tuple[list[float], list[float]]:
    """Feed 400 frames at 15 fps whose publisher sends a keyframe at 0 s and 13.3 s only;
    return (arrivals at which the capture asked for a keyframe, keyframes' arrivals)."""
    fps = 15
    stream = encode_video("video/VP8", 200, width=160, height=120, fps=fps)
    again = encode_video("video/VP8", 200, ident=2, width=160, height=120, fps=fps)
    shift = 200 * 90_000 // fps
    stream += [(d, pts + shift, key) for d, pts, key in again]
    sender = RtpSender("video/VP8")
    asks: list[float] = []
    now = [0.0]
    path = tmp_path / f"every-{keyframe_every_s}.webm"
    cap = capture.TrackCapture(
        path, "video/VP8", 90_000, lambda: asks.append(now[0]), keyframe_every_s
    )
    keys = []
    for n, (d, pts, key) in enumerate(stream):
        now[0] = n / fps
        if key:
            keys.append(now[0])
        for raw, hdr in sender.packets(sender.payloads(d), pts):
            cap.feed(raw, hdr, now[0], sender.ssrc)
    cap.close()
    assert cap.frames == 400 and cap.keyframes == 2  # in the track index: the export splits
    return asks, keys


def test_a_recorded_video_track_gets_a_keyframe_asked_for_every_10_s(tmp_path: Path) -> None:
    """Browsers send keyframes only when asked: the recorder asks when a track went
    10 s without one, again every 2 s until one comes, then not for another 10 s."""
    asks, keys = _asks(10.0, tmp_path)
    assert keys == [0.0, 200 / 15]
    assert asks[0] == 0.0  # the track's start (a file opens on a keyframe)
    waiting = [a for a in asks if 0 < a < keys[1]]
    assert waiting == [10.0, 12.0]  # 10 s after the last keyframe, then every 2 s
    after = [a for a in asks if a > keys[1]]
    assert keys[1] + 10 <= after[0] < keys[1] + 10 + 1 / 15  # quiet for 10 s once it came
    off, _ = _asks(0.0, tmp_path)
    assert off == [0.0]  # 0: only at the start


# -- the track index as a kill finds it ------------------------------------------------------


def _placed(directory: Path) -> dict[str, Any]:
    """What a kill -9 right now leaves: each track file holding a frame, and whether
    recording.json (as saved) names it with its start."""
    index = track_index.load(directory) or {"tracks": []}
    starts = {t["file"]: t.get("started_at") for t in index["tracks"]}
    out = {}
    for path in sorted((directory / "tracks").glob("*.webm")):
        if _packets(path):
            out[f"tracks/{path.name}"] = starts.get(f"tracks/{path.name}")
    return out


def test_a_kill_after_any_batch_leaves_every_written_frame_placed(tmp_path: Path) -> None:
    """A session moved to a new worker and killed again within a second (the failover
    browser test does this three times): whatever batch the kill comes after, every track
    file holding a frame is named in recording.json with its start, so crash repair makes
    it a track of the replay. Before: the start was saved up to 0.2 s after the frames,
    and a track killed in between was repaired but left out of the replay (or, unnamed,
    overwritten by the next run's file of the same track)."""
    video, audio = encode_video("video/VP8", 8), encode_audio(12)
    vs, as_ = RtpSender("video/VP8"), RtpSender("audio/opus")
    uv = Upstream("p0.0", "video", "video/VP8", clock_rate=90_000, rtcp_ssrc=1, nack=True)
    ua = Upstream("p0.1", "audio", "audio/opus", clock_rate=48_000, rtcp_ssrc=1)
    uv.ssrc, ua.ssrc = vs.ssrc, as_.ssrc
    peer = SimpleNamespace(participant_id="p0", owner={"sub": "u0", "role": "clerk"})
    tracks = {
        u.track_id: (u, peer, SimpleNamespace(source=s))
        for u, s in ((uv, "camera"), (ua, "microphone"))
    }
    room: Any = SimpleNamespace(session_id="s_p", tracks=tracks)
    # The writer driven batch by batch in this thread (the recorder's thread does the same:
    # take the queue, hand each packet to its track, tick).
    queue: collections.deque[Any] = collections.deque()
    commands: list[Any] = []
    stub: Any = SimpleNamespace(queue=queue, limit=10_000, control=commands.append, dropped=0)
    loop = asyncio.new_event_loop()
    try:
        w = writer.Writer(
            lambda rec, msg: None, lambda track, path: None, keyframe_s=10.0, node="n"
        )
        w.loop = loop
        directory = tmp_path / "P-1" / "s_p"
        rec = RoomRecording(stub, room, "P-1", directory)
        w.start(rec)
        seen: list[dict[str, Any]] = []
        for n in range(8):
            t = time.time()
            for raw, h in vs.packets(vs.payloads(video[n][0]), video[n][1]):
                rec(uv, raw, h)
            for data, pts in audio[n : n + 1]:
                for raw, h in as_.packets([data], pts):
                    rec(ua, raw, h)
            while queue:
                item = queue.popleft()
                sink = item[0].sink
                w.first_packet(item) if sink is None else sink(item)
            w.tick(t)
            placed = _placed(directory)
            seen.append(placed)
            assert all(start is not None for start in placed.values()), (n, placed)
            if n == 0:
                killed = tmp_path / "killed"
                shutil.copytree(directory, killed)
    finally:
        loop.close()
    assert set(seen[0]) == {"tracks/p0_0.webm", "tracks/p0_1.webm"}  # frames in batch one
    # Crash repair of the first batch as the kill left it: both tracks play in the replay.
    index = track_index.load(killed)
    result = archive.recover_session(killed, index)
    assert sorted(result["recovered"]) == ["tracks/p0_0.webm", "tracks/p0_1.webm"]
    assert {name for name, _ in replay.playable(index)} == {"p0.0", "p0.1"}
    # An H.264 fragment reaches the OS as it is muxed, up to a batch before its start is
    # saved: such a file is placed at the track's first packet, and says it is estimated.
    ahead = tmp_path / "ahead"
    shutil.copytree(directory, ahead)
    index = track_index.load(ahead)
    index["tracks"][0].update(state="open", started_at=None)
    archive.recover_session(ahead, index)
    entry = index["tracks"][0]
    assert entry["started_at"] == entry["first_packet_at"] and entry["started_at_estimated"]
    assert len(replay.playable(index)) == 2
    # A file a crash left on disk before the index named it is never overwritten.
    assert track_index.file_name({"tracks": []}, "p0.0", "webm", killed) == "tracks/p0_0~2.webm"
