"""A load-generator process for ``jointreview bench sfu`` (``python -m bench.sfu_load``):
some of the benchmark's participants, in their own process.

The orchestrator (``bench.sfu``) writes a JSON spec as the first line of stdin,
then commands, one JSON object a line: ``publish``, ``window`` (wall-clock start and end
of the measurement), ``stop``. The process answers with events on stdout, one JSON object
a line: ``joined``, ``published``, ``progress`` (how many subscribers receive every
video track they should), ``result``. End of stdin means the orchestrator is gone: stop.

Publishers send pre-encoded media (``bench.preencoded``). Every subscriber takes the
RTP packets aiortc has parsed through ``aiortc_adapter.on_received_packets``, in place of
aiortc's own receiver (no jitter buffer, no NACK, PLI or receiver reports). Most only
count what arrives (RTP packets; a video frame completes on the marker bit). Probes
decode a few video tracks as a browser would: ``vp8_framer.Vp8Framer`` completes each VP8
frame on its marker packet (aiortc's jitter buffer would hold it until the next frame's
first packet, one frame interval more) and drops damaged frames until the next keyframe;
a thread per probe track decodes with PyAV, stamps the wall clock as each picture comes
out of the decoder, and reads the pattern (right publisher, counter moving forward); the
event loop turns the stamp into end-to-end latency from the counter in the picture.
Frames the framer dropped are reported per track (``incomplete``, ``skipped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import av
import uvloop
from aiortc import RTCRtpReceiver, RTCRtpTransceiver

from media_server import aiortc_adapter
from media_server.aiortc_adapter import RtpPacket

from . import preencoded
from .bot import Bot
from .pattern_media import read_pattern
from .vp8_framer import Vp8Frame, Vp8Framer

log = logging.getLogger("jointreview.bench")

RTX_PAYLOAD_TYPES = aiortc_adapter.rtx_payload_types()
KEYFRAME_ASK_INTERVAL = 0.5  # seconds between a probe's keyframe requests after a loss
RECEIVE_BUFFER = 2 * 1024 * 1024  # bytes (the kernel caps it at net.core.rmem_max)
# Encoded frames waiting for a probe's decoder: 1 s of video. A decoder further behind
# than that measures the machine, not the server; frames beyond it are dropped (and
# counted) until the next keyframe.
DECODE_QUEUE = 30


def latency_histogram(values: list[float]) -> dict[str, int]:
    """Latencies as {milliseconds to 0.1: count}: as many entries as distinct values,
    however long the window (a list grew by 120 a second and overflowed the line)."""
    hist: dict[str, int] = {}
    for x in values:
        key = f"{x:.1f}"
        hist[key] = hist.get(key, 0) + 1
    return hist


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Window:
    """The measurement window (wall clock), shared by every track of the process."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")
        self.decode_errors = 0  # the probes' decoder failures inside the window

    def within(self, t: float) -> bool:
        return self.start <= t < self.end


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
        self.framer: Vp8Framer | None = None  # a probe's
        self.unqueued = 0  # frames a probe's decoder had no room for
        self._i0 = self._s0 = 0

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

    def on_decoded(self, ident: int, counter: int, now: float, t0: float) -> None:
        """A probe's picture, decoded at ``now`` (runs on the event loop)."""
        self.on_frame(now)
        self.on_picture(ident, counter, now, t0)

    def on_decode_error(self, now: float) -> None:
        if self.window.within(now):
            self.window.decode_errors += 1

    def _dropped(self) -> tuple[int, int]:
        """Frames a probe never decoded: (incomplete, skipped for want of a keyframe)."""
        if self.framer is None:
            return 0, 0
        return self.framer.incomplete, self.framer.skipped + self.unqueued

    def on_picture(self, ident: int, counter: int, now: float, t0: float) -> None:
        """A decoded picture: check it and measure its latency."""
        inside = self.window.within(now)
        bad = ident != self.ident or counter >= preencoded.LOOP_FRAMES
        if not bad and self._prev is not None:
            step = (counter - self._prev) % preencoded.LOOP_FRAMES
            bad = step == 0 or step > preencoded.LOOP_FRAMES // 2  # repeated or went back
        if bad:
            if inside:
                self.errors += 1
            return
        self._prev = counter
        if inside:
            n = preencoded.frame_index(counter, now, t0)
            self.latencies.append((now - (t0 + n / preencoded.FPS)) * 1000)

    def open_window(self, start: float) -> None:
        self.p0, self.f0 = self.packets, self.frames
        self._i0, self._s0 = self._dropped()
        self.w_last, self.w_gap = start, 0.0
        self.latencies.clear()
        self.errors = 0

    def close_window(self, end: float) -> dict[str, Any]:
        incomplete, skipped = self._dropped()
        return {
            "kind": self.kind,
            "decoded": self.decoded,
            "packets": self.packets - self.p0,
            "frames": self.frames - self.f0,
            "gap": max(self.w_gap, end - self.w_last),
            "errors": self.errors,
            "incomplete": incomplete - self._i0,
            "skipped": skipped - self._s0,
        }


class ProbeDecoder:
    """A probe's video track: frames completed on the marker bit, decoded in a thread.

    The event loop only frames (cheap); decoding (milliseconds per picture) runs in this
    track's own thread so it neither delays the loop's packets nor waits behind them.
    Results go back to the loop with the time each picture left the decoder."""

    def __init__(
        self,
        stats: TrackStats,
        t0: float,
        loop: asyncio.AbstractEventLoop,
        receiver: RTCRtpReceiver,
    ) -> None:
        self.stats = stats
        self.receiver = receiver
        self._asked = -1e9  # when we last asked the publisher for a keyframe
        self.t0 = t0
        self.loop = loop
        self.framer = stats.framer = Vp8Framer()
        self.queue: queue.Queue[Vp8Frame | None] = queue.Queue(maxsize=DECODE_QUEUE)
        self._resync = False  # a frame was dropped for want of room: wait for a keyframe
        self._closed = False
        self.thread = threading.Thread(target=self._run, name="probe-decoder", daemon=True)
        self.thread.start()

    def on_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.stats.packets += 1
        if packet.payload_type in RTX_PAYLOAD_TYPES:
            return  # nobody asked for retransmissions; aiortc would not depacketise these
        frame = self.framer.push(
            packet.sequence_number, packet.timestamp, bool(packet.marker), packet.payload
        )
        if self.framer.waiting_for_keyframe and self.framer.emitted:
            # A loss: the SFU asks for a keyframe for new subscribers only, and the
            # baseline's encoder makes one only when asked. Ask, as a browser does.
            now = time.monotonic()
            if now - self._asked >= KEYFRAME_ASK_INTERVAL:
                self._asked = now
                aiortc_adapter.request_keyframe(self.receiver, packet.ssrc)
        if frame is None:
            return
        if self._resync and not frame.keyframe:
            self.stats.unqueued += 1
            return
        try:
            self.queue.put_nowait(frame)
            self._resync = False
        except queue.Full:
            self.stats.unqueued += 1
            self._resync = True

    def _run(self) -> None:
        codec = av.CodecContext.create("vp8", "r")
        codec.thread_count = 1  # one core's worth per track: the machine is shared
        while (frame := self.queue.get()) is not None:
            try:
                pictures = codec.decode(av.Packet(frame.data))
            except av.FFmpegError:
                self._report(self.stats.on_decode_error, time.time())
                continue
            for picture in pictures:
                now = time.time()  # the picture exists now: that is when it is shown
                ident, counter = read_pattern(picture)
                self._report(self.stats.on_decoded, ident, counter, now, self.t0)

    def _report(self, callback: Callable[..., None], *args: Any) -> None:
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            self.loop.call_soon_threadsafe(callback, *args)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)


class Member:
    """One participant of the benchmark."""

    def __init__(self, gen: Generator, spec: dict[str, Any]) -> None:
        self.gen = gen
        self.spec = spec
        self.probe = bool(spec.get("probe"))
        self.expect_video = int(spec.get("expect_video", 0))
        self.tracks: dict[str, TrackStats] = {}
        self.decoders: list[ProbeDecoder] = []
        self.video_track: preencoded.EncodedVideoTrack | None = None
        self.audio_track: preencoded.EncodedAudioTrack | None = None
        self.p = Bot(
            gen.url,
            spec["token"],
            configure_receiver=self._configure,
        )

    def _configure(self, transceiver: RTCRtpTransceiver, info: dict[str, Any]) -> None:
        owner = info.get("owner") or {}
        ident = self.gen.idents.get(str(owner.get("sub")))
        stats = TrackStats(self.gen.window, str(info["kind"]), ident)
        self.tracks[str(info["track_id"])] = stats
        decoding = sum(1 for s in self.tracks.values() if s.decoded)
        if self.probe and stats.kind == "video" and decoding < self.gen.probe_tracks:
            stats.decoded = True
            decoder = ProbeDecoder(
                stats, self.gen.t0, asyncio.get_running_loop(), transceiver.receiver
            )
            self.decoders.append(decoder)
            aiortc_adapter.on_received_packets(transceiver.receiver, decoder.on_packet)
        else:
            aiortc_adapter.on_received_packets(transceiver.receiver, stats.on_packet)

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
        video, _ = preencoded.load_video(int(self.spec["ident"]), self.gen.media_dir)
        audio, _ = preencoded.load_audio(self.gen.media_dir)
        self.video_track = preencoded.EncodedVideoTrack(video, self.gen.t0)
        self.audio_track = preencoded.EncodedAudioTrack(audio, self.gen.t0)
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
        for decoder in self.decoders:
            decoder.close()
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
            latency_hist_ms=latency_histogram(latencies),
            packets_sent=sent1 - sent0,
            aiortc_decode_errors=self.window.decode_errors,  # (the key predates PyAV probes)
            publisher_late_max_s=max(late, default=0.0),
        )

    async def close(self) -> None:
        if self._progress is not None:
            self._progress.cancel()
        await asyncio.gather(*(m.close() for m in self.members), return_exceptions=True)


def big_socket_buffers(size: int = RECEIVE_BUFFER) -> None:
    """A larger receive buffer for every ICE socket this process opens (aioice's is
    256 KB): the generators share the machine with the server they measure, and a
    scheduling hiccup should not overflow them."""
    aiortc_adapter.set_turn_socket_buffer(size)


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


def run_child(run: Callable[[], Coroutine[Any, Any, int]], logger: logging.Logger) -> int:
    """A load process's entry: ``run`` on uvloop, as the server (the generators share the
    machine with what they measure); a failure ends as an ``error`` event line."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        return uvloop.run(run())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        logger.exception("failed")
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1


def main() -> int:
    return run_child(run, log)


if __name__ == "__main__":
    sys.exit(main())
