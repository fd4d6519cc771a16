"""``jointreview bench record``: what per-track recording costs a media node.

A six-party session (six VP8 cameras at ~1 Mbps / 30 fps, six Opus microphones at
50 packets/s: ~1,000 packets/s) is synthesized in-process and fed, in real time, to
the same hook the SFU calls for every received packet (``RoomRecording.__call__``),
with the real writer thread behind it writing real files. So it measures the
recorder, not aiortc. Reported: CPU per packet on the event loop (the hook), the
writer thread's CPU, and both as % of one core; then the closing repair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from media_server.forwarder import Upstream
from recording.live.recorder import Recorder

from .rtp_streams import RtpSender, encode_video, fake_vp8_frames

VIDEO_BPS = 1_000_000
FPS = 30
AUDIO_BYTES = 120  # a 20 ms Opus packet of speech at ~48 kbps
TICK_S = 0.01
WARMUP_S = 2.0  # files opening, first frames: steady state is measured after this


class _Party:
    def __init__(self, n: int, keyframe: bytes) -> None:
        self.video = RtpSender("video/VP8")
        self.audio = RtpSender("audio/opus")
        frame_size = VIDEO_BPS // 8 // FPS
        frames = fake_vp8_frames(FPS, frame_size, keyframe)
        # Packetized once; headers (numbers, timestamps) are made as they are sent.
        self.video_frames = [self.video.payloads(f) for f in frames]
        self.audio_payload = bytes([0x78]) + bytes(AUDIO_BYTES - 1)
        self.up_video = Upstream(
            f"p{n}.0", "video", "video/VP8", clock_rate=90_000, rtcp_ssrc=1, nack=True
        )
        self.up_audio = Upstream(f"p{n}.1", "audio", "audio/opus", clock_rate=48_000, rtcp_ssrc=1)
        self.up_video.ssrc = self.video.ssrc
        self.up_audio.ssrc = self.audio.ssrc
        self.sent_video = self.sent_audio = 0

    def due(self, elapsed: float) -> list[tuple[Upstream, list[Any]]]:
        out: list[tuple[Upstream, list[Any]]] = []
        while self.sent_video <= elapsed * FPS:
            i = self.sent_video
            # Keyframe first, and when the recorder asks (as a browser answers a PLI);
            # the pool's inter frames repeat after it.
            payloads = self.video_frames[i % FPS if i < FPS else 1 + i % (FPS - 1)]
            if self.up_video.keyframe_pending and i >= FPS:
                self.up_video.keyframe_pending = False
                payloads = self.video_frames[0]
            out.append((self.up_video, self.video.packets(payloads, i * 90_000 // FPS)))
            self.sent_video += 1
        while self.sent_audio <= elapsed * 50:
            ts = self.sent_audio * 960
            out.append((self.up_audio, self.audio.packets([self.audio_payload], ts)))
            self.sent_audio += 1
        return out


async def run(seconds: float, parties: int, directory: Path, quiet: bool = False) -> dict[str, Any]:
    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    say(f"recording a {parties}-party session for {seconds:.0f} s into {directory}")
    keyframe = next(d for d, _, key in encode_video("video/vp8", 1, 1, 640, 480) if key)
    people = [_Party(n, keyframe) for n in range(parties)]
    tracks: dict[str, Any] = {}
    for n, p in enumerate(people):
        peer = SimpleNamespace(participant_id=f"p{n}", owner={"sub": f"user{n}", "role": "clerk"})
        for up, source in ((p.up_video, "camera"), (p.up_audio, "microphone")):
            tracks[up.track_id] = (up, peer, SimpleNamespace(source=source))
    room: Any = SimpleNamespace(session_id="s_bench", tracks=tracks)
    recorder = Recorder(directory, lambda sid, msg: print(f"  ! {msg}", file=sys.stderr))
    rec = recorder.record(room, "BENCH-1")
    hook_cpu_ns = hook_wall_ns = packets = 0
    start = time.monotonic()
    next_report = 1.0
    warm: tuple[float, int, int, float] | None = None  # (time, packets, hook ns, writer s)
    while (elapsed := time.monotonic() - start) < seconds:
        if warm is None and elapsed >= WARMUP_S:
            warm = (elapsed, packets, hook_cpu_ns, recorder.writer_cpu_s)
        # Made first, then handed to the hook back to back (as a busy loop does) inside
        # one pair of clock reads per tick: the thread CPU clock is a system call, and
        # read around every frame (~2 packets) it added ~0.2-0.3 µs a packet.
        due = [item for person in people for item in person.due(elapsed)]
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        for upstream, batch in due:
            for data, h in batch:
                rec(upstream, data, h)
        hook_cpu_ns += time.thread_time_ns() - c0
        hook_wall_ns += time.perf_counter_ns() - w0
        packets += sum(len(batch) for _, batch in due)
        if elapsed >= next_report:
            next_report += 1.0
            queued = recorder.stats()["queued"]
            say(
                f"  {elapsed:4.0f}/{seconds:.0f} s  packets {packets:6d}  "
                f"queued {queued:4d}  dropped {recorder.dropped}  "
                f"hook {hook_cpu_ns / 1000 / max(packets, 1):.2f} µs/packet  "
                f"writer {100 * recorder.writer_cpu_s / elapsed:.2f} % of a core"
            )
        await asyncio.sleep(TICK_S)
    elapsed = time.monotonic() - start
    writer_cpu = recorder.writer_cpu_s
    if warm is None:
        warm = (0.0, 0, 0, 0.0)
    steady_s = elapsed - warm[0]
    steady_packets = max(packets - warm[1], 1)
    steady_hook_s = (hook_cpu_ns - warm[2]) / 1e9
    steady_writer_s = writer_cpu - warm[3]
    say("closing: files closed and remuxed (repair) ...")
    t0 = time.monotonic()
    summary = await rec.stop()
    closing = time.monotonic() - t0
    recorder.close()
    files = sorted((directory / "BENCH-1" / "s_bench" / "tracks").glob("*"))
    size = sum(f.stat().st_size for f in files)
    hook_cpu_s = hook_cpu_ns / 1e9
    result = {
        "parties": parties,
        "seconds": round(elapsed, 2),
        "packets": packets,
        "packets_per_s": round(packets / elapsed, 1),
        "dropped": recorder.dropped,
        "frames": recorder.frames,
        "hook_cpu_us_per_packet": round(hook_cpu_ns / 1000 / max(packets, 1), 3),
        "hook_wall_us_per_packet": round(hook_wall_ns / 1000 / max(packets, 1), 3),
        "writer_cpu_us_per_packet": round(writer_cpu * 1e6 / max(packets, 1), 2),
        "hook_core_pct": round(100 * hook_cpu_s / elapsed, 3),
        "writer_core_pct": round(100 * writer_cpu / elapsed, 3),
        "total_core_pct": round(100 * (hook_cpu_s + writer_cpu) / elapsed, 3),
        "steady_window_s": round(steady_s, 2),
        "steady_hook_cpu_us_per_packet": round(steady_hook_s * 1e6 / steady_packets, 3),
        "steady_writer_cpu_us_per_packet": round(steady_writer_s * 1e6 / steady_packets, 2),
        "steady_total_core_pct": round(100 * (steady_hook_s + steady_writer_s) / steady_s, 3),
        "closing_s": round(closing, 3),
        "files": len(files),
        "bytes": size,
        "summary": summary,
    }
    say(
        f"{packets} packets in {elapsed:.1f} s ({result['packets_per_s']}/s), "
        f"{recorder.dropped} dropped, {len(files)} files, {size / 1e6:.1f} MB\n"
        f"event loop (the hook): {result['hook_cpu_us_per_packet']} µs CPU per packet "
        f"({result['hook_wall_us_per_packet']} µs wall) = {result['hook_core_pct']} % of a core\n"
        f"writer thread: {result['writer_cpu_us_per_packet']} µs per packet "
        f"= {result['writer_core_pct']} % of a core\n"
        f"six-party session total: {result['total_core_pct']} % of a core "
        f"(target <= 1 %); closing + repair {closing:.2f} s\n"
        f"steady state (after the first {WARMUP_S:.0f} s): hook "
        f"{result['steady_hook_cpu_us_per_packet']} µs + writer "
        f"{result['steady_writer_cpu_us_per_packet']} µs per packet = "
        f"{result['steady_total_core_pct']} % of a core"
    )
    return result


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="jr-bench-record-") as tmp:
        result = asyncio.run(run(args.seconds, args.parties, Path(tmp)))
    if args.json:
        print(json.dumps(result))
    return 0
