"""A participant process of ``jointreview loadtest`` (``python -m bench.loadtest_media``):
some of the load test's session participants, each a ``Bot`` (aiortc) that joins its
session, publishes pre-encoded VP8 + Opus (``bench.preencoded``) and receives everyone
else's tracks.

The orchestrator (``bench.loadtest``) writes a JSON spec as the first line of stdin
(the server's URL, the media directory, the participants: token, session, picture id),
then commands, one JSON object a line: ``window`` (the wall-clock start and end of the
measurement) and ``stop``. The process answers on stdout, one JSON object a line:
``member`` (one participant joined or failed, with its timings), ``joined`` (every one
has tried), ``progress`` (how many receive every video track they should), ``result``
(after the window: every received track's figures, each participant's join timings).
End of stdin means the orchestrator is gone: leave and exit.

Per received track it counts what a browser's stats would show, from the RTP packets
aiortc parsed (``aiortc_adapter.on_received_packets``): packets and payload bytes
(bitrate), sequence-number gaps (loss), frames completed on the marker bit (frame rate)
and freezes: a gap between frames longer than max(3 × the mean interval, the mean + 150
ms), WebRTC's own definition.
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

import aiohttp
from aiortc import RTCRtpTransceiver

from media_server import aiortc_adapter
from media_server.aiortc_adapter import RtpPacket

from . import preencoded
from .bot import Bot, SignalingError
from .sfu_load import emit, run_child

log = logging.getLogger("jointreview.loadtest")
RTX_PAYLOAD_TYPES = aiortc_adapter.rtx_payload_types()
JOIN_TIMEOUT = 60.0
STOPPED_S = 3.0


class Window:
    """The measurement window (wall clock), shared by every track of the process."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")


class Received:
    """What one participant received of one remote track, inside the window."""

    def __init__(self, kind: str, window: Window) -> None:
        self.kind = kind
        self.window = window
        self.packets = self.bytes = self.frames = 0
        self.first_seq: int | None = None
        self.highest = 0  # extended sequence number
        self.last_frame = 0.0
        self.mean_interval = 0.0
        self.freezes = 0
        self.frozen_s = 0.0
        self.any_frame_at: float | None = None  # monotonic, whenever (for the join timing)

    def on_packet(self, packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        if packet.payload_type in RTX_PAYLOAD_TYPES:
            return
        now = time.time()
        if self.any_frame_at is None and (packet.marker or self.kind == "audio"):
            self.any_frame_at = time.monotonic()
        if not self.window.start <= now < self.window.end:
            return
        self.packets += 1
        self.bytes += len(packet.payload)
        seq = packet.sequence_number
        if self.first_seq is None:
            self.first_seq = self.highest = seq
        else:
            # unwrap the 16-bit counter against the highest seen so far
            delta = (seq - self.highest) & 0xFFFF
            if delta < 0x8000:
                self.highest += delta
        if packet.marker or self.kind == "audio":
            self.on_frame(now)

    def on_frame(self, now: float) -> None:
        if self.frames and self.last_frame:
            gap = now - self.last_frame
            if self.frames > 5 and gap > max(3 * self.mean_interval, self.mean_interval + 0.15):
                self.freezes += 1
                self.frozen_s += gap
            n = self.frames
            self.mean_interval += (gap - self.mean_interval) / n
        self.frames += 1
        self.last_frame = now

    def figures(self) -> dict[str, Any]:
        window = self.window.end - self.window.start
        expected = 0 if self.first_seq is None else self.highest - self.first_seq + 1
        tail = max(0.0, self.window.end - self.last_frame) if self.last_frame else window
        freezes, frozen = self.freezes, self.frozen_s
        if self.kind == "video" and tail > max(3 * self.mean_interval, self.mean_interval + 0.15):
            freezes, frozen = freezes + 1, frozen + tail  # frozen when the window closed
        return {
            "kind": self.kind,
            "packets": self.packets,
            "fps": round(self.frames / window, 2) if self.kind == "video" else None,
            "kbps": round(self.bytes * 8 / window / 1000, 1),
            "lost": max(0, expected - self.packets),
            "expected": expected,
            # Nothing for the window's last STOPPED_S: the track had stopped (a peer
            # connection closed: ICE consent expired, DTLS ended), not just stuttered.
            "stopped": self.kind == "video" and tail > STOPPED_S,
            "freezes": freezes if self.kind == "video" else 0,
            "frozen_s": round(frozen, 2) if self.kind == "video" else 0.0,
        }


class Member:
    """One participant: a Bot, its published tracks, what it receives."""

    def __init__(self, spec: dict[str, Any], run: dict[str, Any], window: Window) -> None:
        self.spec = spec
        self.run = run
        self.window = window
        self.tracks: dict[str, Received] = {}
        self.expect_video = int(spec["expect_video"])
        self.began = 0.0
        self.timings: dict[str, float | None] = {"join_ms": None, "media_ms": None}
        self.bot = Bot(run["url"], spec["token"], configure_receiver=self._configure)

    def _configure(self, transceiver: RTCRtpTransceiver, info: dict[str, Any]) -> None:
        track = Received(str(info["kind"]), self.window)
        self.tracks[str(info["track_id"])] = track
        aiortc_adapter.on_received_packets(transceiver.receiver, track.on_packet)

    @property
    def ready(self) -> bool:
        videos = [t for t in self.tracks.values() if t.kind == "video" and t.any_frame_at]
        if len(videos) < self.expect_video:
            return False
        if self.timings["media_ms"] is None:
            last = max((t.any_frame_at or 0.0) for t in videos) if videos else time.monotonic()
            self.timings["media_ms"] = round((last - self.began) * 1000, 1)
        return True

    async def start(self) -> None:
        """Connect, join, publish; say how it went (the failure's kind, if it failed)."""
        self.began = time.monotonic()
        sub = self.spec["sub"]
        try:
            await asyncio.wait_for(self._start(), JOIN_TIMEOUT)
        except SignalingError as exc:
            emit("member", sub=sub, ok=False, kind=f"join_{exc.code}", message=str(exc))
            return
        except aiohttp.WSServerHandshakeError as exc:  # 429: the address's socket cap
            emit("member", sub=sub, ok=False, kind=f"join_ws_{exc.status}", message=str(exc))
            return
        except TimeoutError:
            emit("member", sub=sub, ok=False, kind="join_timeout", message="no join in 60 s")
            return
        except Exception as exc:
            emit("member", sub=sub, ok=False, kind="join_" + type(exc).__name__, message=str(exc))
            return
        emit("member", sub=sub, ok=True, **self.timings)

    async def _start(self) -> None:
        await self.bot.connect()
        await self.bot.join(self.spec["session_id"])
        self.timings["join_ms"] = round((time.monotonic() - self.began) * 1000, 1)
        media = Path(self.run["media_dir"])
        video, _ = preencoded.load_video(int(self.spec["ident"]), media)
        audio, _ = preencoded.load_audio(media)
        t0 = float(self.run["t0"])
        await self.bot.publish("camera", preencoded.EncodedVideoTrack(video, t0))
        await self.bot.publish("microphone", preencoded.EncodedAudioTrack(audio, t0))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.bot.leave(), 3)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.bot.close(), 5)


async def progress(members: list[Member]) -> None:
    last = -1
    while True:
        ready = sum(1 for m in members if m.ready)
        if ready != last:
            emit("progress", ready=ready, total=len(members))
            last = ready
        if ready == len(members):
            return
        await asyncio.sleep(0.2)


async def measure(members: list[Member], window: Window, start: float, end: float) -> None:
    window.start, window.end = start, end
    await asyncio.sleep(max(0.0, end - time.time()) + 0.05)
    emit(
        "result",
        members=[
            {"sub": m.spec["sub"], "pc": m.bot.pc and m.bot.pc.connectionState, **m.timings}
            for m in members
        ],
        tracks=[
            {"sub": m.spec["sub"], "session_id": m.spec["session_id"], **t.figures()}
            for m in members
            for t in m.tracks.values()
        ],
    )


async def run() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = await reader.readline()
    if not line:
        return 1
    spec = json.loads(line)
    aiortc_adapter.configure_host_candidates(list(spec.get("host_candidates") or []), None)
    window = Window()
    members = [Member(p, spec, window) for p in spec["participants"]]
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.gather(*(m.start() for m in members))
        emit("joined")
        joined = [m for m in members if m.timings["join_ms"] is not None]
        tasks.append(asyncio.create_task(progress(joined)))
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd.get("cmd") == "window":
                start, end = float(cmd["start"]), float(cmd["end"])
                tasks.append(asyncio.create_task(measure(members, window, start, end)))
            elif cmd.get("cmd") == "stop":
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait_for(
            asyncio.gather(*(m.close() for m in members), return_exceptions=True), 15
        )
    return 0


def main() -> int:
    return run_child(run, log)


if __name__ == "__main__":
    sys.exit(main())
