"""A load-generator process for ``jointreview bench sfu`` (``python -m
media_server.bench_load``): some of the benchmark's participants, in their own process.

The orchestrator (``media_server.bench``) writes a JSON spec as the first line of stdin,
then commands, one JSON object a line: ``publish``, ``window`` (wall-clock start and end
of the measurement), ``stop``. The process answers with events on stdout, one JSON object
a line: ``joined``, ``published``, ``progress`` (how many subscribers receive every
video track they should), ``result``. End of stdin means the orchestrator is gone: stop.

Publishers send pre-encoded media (``media_server.encoded``). Most subscribers only count
what arrives (RTP packets; a video frame completes on the marker bit) through
``aiortc_adapter.on_received_packets``; probes decode a few video tracks with aiortc as a
browser would, read the pattern (right publisher, counter moving forward) and measure
end-to-end latency from the counter in the picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import aioice.turn
from aiortc import RTCRtpReceiver, RTCRtpTransceiver
from aiortc.codecs import CODECS
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from . import aiortc_adapter, encoded
from .participant import Participant, Remote
from .synthetic import read_pattern

log = logging.getLogger("jointreview.bench")

RTX_PAYLOAD_TYPES = frozenset(
    c.payloadType for c in CODECS["video"] if c.mimeType.lower().endswith("/rtx")
)
RECEIVE_BUFFER = 2 * 1024 * 1024  # bytes (the kernel caps it at net.core.rmem_max)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Window:
    """The measurement window (wall clock), shared by every track of the process."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")
        self.decode_errors = 0  # aiortc's own decoder failures inside the window

    def within(self, t: float) -> bool:
        return self.start <= t < self.end


class DecodeErrors(logging.Handler):
    """Counts aiortc's "failed to decode" warnings (the decoder thread logs them)."""

    def __init__(self, window: Window) -> None:
        super().__init__(logging.WARNING)
        self.window = window

    def emit(self, record: logging.LogRecord) -> None:
        if "decode" in record.getMessage() and self.window.within(time.time()):
            self.window.decode_errors += 1


class TrackStats:
    """What one subscriber received of one track."""

    def __init__(self, window: Window, kind: str, ident: int | None) -> None:
        self.window = window
        self.kind = kind
        self.ident = ident  # the publisher's id, as its pictures carry it
        self.decoded = False
        self.packets = 0
        self.frames = 0
        self.got_frame = False
        # the window
        self.p0 = self.f0 = 0
        self.w_last = 0.0
        self.w_gap = 0.0
        self.latencies: list[float] = []
        self.errors = 0
        self._prev: int | None = None

    def on_packet(self, packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        self.packets += 1
        if packet.marker and self.kind == "video" and not self.decoded:
            if packet.payload_type not in RTX_PAYLOAD_TYPES:
                self.on_frame(time.time())

    def on_frame(self, now: float) -> None:
        self.frames += 1
        self.got_frame = True
        if self.window.within(now):
            gap = now - self.w_last
            if gap > self.w_gap:
                self.w_gap = gap
            self.w_last = now

    def on_picture(self, ident: int, counter: int, now: float, t0: float) -> None:
        """A decoded picture: check it and measure its latency."""
        inside = self.window.within(now)
        bad = ident != self.ident or counter >= encoded.LOOP_FRAMES
        if not bad and self._prev is not None:
            step = (counter - self._prev) % encoded.LOOP_FRAMES
            bad = step == 0 or step > encoded.LOOP_FRAMES // 2  # repeated or went back
        if bad:
            if inside:
                self.errors += 1
            return
        self._prev = counter
        if inside:
            n = encoded.frame_index(counter, now, t0)
            self.latencies.append((now - (t0 + n / encoded.FPS)) * 1000)

    def open_window(self, start: float) -> None:
        self.p0, self.f0 = self.packets, self.frames
        self.w_last, self.w_gap = start, 0.0
        self.latencies.clear()
        self.errors = 0

    def close_window(self, end: float) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "decoded": self.decoded,
            "packets": self.packets - self.p0,
            "frames": self.frames - self.f0,
            "gap": max(self.w_gap, end - self.w_last),
            "errors": self.errors,
        }


def count_and_handle(receiver: RTCRtpReceiver, stats: TrackStats) -> None:
    """A probe's decoded track: count each RTP packet, then let aiortc handle it as usual."""

    def count(packet: RtpPacket, arrival_time_ms: int) -> None:
        stats.packets += 1

    aiortc_adapter.on_received_packets(receiver, count, decode=True)


class Member:
    """One participant of the benchmark."""

    def __init__(self, gen: Generator, spec: dict[str, Any]) -> None:
        self.gen = gen
        self.spec = spec
        self.probe = bool(spec.get("probe"))
        self.expect_video = int(spec.get("expect_video", 0))
        self.tracks: dict[str, TrackStats] = {}
        self.readers: list[asyncio.Task[None]] = []
        self.video_track: encoded.EncodedVideoTrack | None = None
        self.audio_track: encoded.EncodedAudioTrack | None = None
        self.p = Participant(
            gen.url,
            spec["token"],
            configure_receiver=self._configure,
            on_remote=self._on_remote,
        )

    def _configure(self, transceiver: RTCRtpTransceiver, info: dict[str, Any]) -> None:
        owner = info.get("owner") or {}
        ident = self.gen.idents.get(str(owner.get("sub")))
        stats = TrackStats(self.gen.window, str(info["kind"]), ident)
        self.tracks[str(info["track_id"])] = stats
        decoding = sum(1 for s in self.tracks.values() if s.decoded)
        if self.probe and stats.kind == "video" and decoding < self.gen.probe_tracks:
            stats.decoded = True
            count_and_handle(transceiver.receiver, stats)
        else:
            aiortc_adapter.on_received_packets(transceiver.receiver, stats.on_packet)

    def _on_remote(self, remote: Remote) -> None:
        stats = self.tracks.get(remote.track_id)
        if stats is not None and stats.decoded and remote.track is not None:
            self.readers.append(asyncio.create_task(self._read(remote, stats)))

    async def _read(self, remote: Remote, stats: TrackStats) -> None:
        assert remote.track is not None
        t0 = self.gen.t0
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await remote.track.recv()
                now = time.time()
                stats.on_frame(now)
                ident, counter = read_pattern(frame)  # type: ignore[arg-type]
                stats.on_picture(ident, counter, now, t0)

    @property
    def ready(self) -> bool:
        videos = [s for s in self.tracks.values() if s.kind == "video" and s.got_frame]
        return len(videos) >= self.expect_video

    async def start(self) -> None:
        await self.p.connect()
        await self.p.join(self.spec["session_id"])

    async def publish(self) -> None:
        if not self.spec.get("publish"):
            return
        video, _ = encoded.load_video(int(self.spec["ident"]), self.gen.media_dir)
        audio, _ = encoded.load_audio(self.gen.media_dir)
        self.video_track = encoded.EncodedVideoTrack(video, self.gen.t0)
        self.audio_track = encoded.EncodedAudioTrack(audio, self.gen.t0)
        await self.p.publish("camera", self.video_track)
        await self.p.publish("microphone", self.audio_track)

    async def packets_sent(self) -> int:
        if self.p.pc is None:
            return 0
        total = 0
        for transceiver in self.p.pc.getTransceivers():
            if transceiver.mid in self.p.published:
                report = await transceiver.sender.getStats()
                total += sum(
                    int(getattr(s, "packetsSent", 0) or 0)
                    for s in report.values()
                    if getattr(s, "type", "") == "outbound-rtp"
                )
        return total

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.p.leave(), 3)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.p.close(), 5)


class Generator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.url = str(spec["url"])
        self.t0 = float(spec["t0"])
        self.media_dir = Path(spec["media_dir"])
        self.idents: dict[str, int] = {str(k): int(v) for k, v in spec["idents"].items()}
        self.probe_tracks = int(spec.get("probe_tracks", 2))
        self.window = Window()
        self.members = [Member(self, m) for m in spec["participants"]]
        self._progress: asyncio.Task[None] | None = None

    async def join(self) -> None:
        await asyncio.gather(*(m.start() for m in self.members))

    async def publish(self) -> None:
        await asyncio.gather(*(m.publish() for m in self.members))
        self._progress = asyncio.create_task(self._report_progress())

    async def _report_progress(self) -> None:
        last = -1
        subscribers = [m for m in self.members if m.expect_video]
        while True:
            ready = sum(1 for m in subscribers if m.ready)
            if ready != last:
                emit("progress", ready=ready, total=len(subscribers))
                last = ready
            if ready == len(subscribers):
                return
            await asyncio.sleep(0.1)

    async def measure(self, start: float, end: float) -> None:
        await asyncio.sleep(max(0.0, start - time.time()))
        self.window.start, self.window.end = start, end
        sent0 = sum([await m.packets_sent() for m in self.members])
        for m in self.members:
            for stats in m.tracks.values():
                stats.open_window(start)
        self.window.decode_errors = 0
        await asyncio.sleep(max(0.0, end - time.time()))
        sent1 = sum([await m.packets_sent() for m in self.members])
        tracks: list[dict[str, Any]] = []
        latencies: list[float] = []
        for m in self.members:
            for stats in m.tracks.values():
                tracks.append({**stats.close_window(end), "probe": m.probe})
                latencies.extend(stats.latencies)
        late = [t.late_max for m in self.members for t in (m.video_track, m.audio_track) if t]
        emit(
            "result",
            tracks=tracks,
            latencies_ms=[round(x, 2) for x in latencies],
            packets_sent=sent1 - sent0,
            aiortc_decode_errors=self.window.decode_errors,
            publisher_late_max_s=max(late, default=0.0),
        )

    async def close(self) -> None:
        if self._progress is not None:
            self._progress.cancel()
        await asyncio.gather(*(m.close() for m in self.members), return_exceptions=True)


def big_socket_buffers(size: int = RECEIVE_BUFFER) -> None:
    """A larger receive buffer for every ICE socket this process opens (aioice sets
    ``turn.UDP_SOCKET_BUFFER_SIZE``, 256 KB, on each): the generators share the machine
    with the server they measure, and a scheduling hiccup should not overflow them."""
    aioice.turn.UDP_SOCKET_BUFFER_SIZE = size


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run() -> int:
    reader = await _stdin()
    line = await reader.readline()
    if not line:
        return 1
    spec = json.loads(line)
    # Gather host candidates on loopback only: the SFU listens there.
    aiortc_adapter.configure_host_candidates(["127.0.0.1"], None)
    big_socket_buffers()
    gen = Generator(spec)
    logging.getLogger("aiortc.rtcrtpreceiver").addHandler(DecodeErrors(gen.window))
    tasks: list[asyncio.Task[None]] = []
    try:
        await gen.join()
        emit("joined")
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            if cmd["cmd"] == "publish":
                await gen.publish()
                emit("published")
            elif cmd["cmd"] == "window":
                tasks.append(asyncio.create_task(gen.measure(cmd["start"], cmd["end"])))
            elif cmd["cmd"] == "stop":
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait_for(gen.close(), 15)
    return 0


def main() -> int:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.exception("load generator failed")
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
