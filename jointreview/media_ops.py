"""The operations a media host answers, applied to a ``MediaServer``: the same code in the
node's own process (``media_workers = 1``) and in a media worker process, so that both
answer alike. Also what a host reports of its load."""

from __future__ import annotations

import time
from typing import Any

from media_server.errors import MediaError
from media_server.server import MediaServer
from recording.live.recorder import Recorder


async def apply(media: MediaServer, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one operation; a ``MediaError`` is the caller's to turn into an answer."""
    sid = str(args["session_id"])
    if op == "negotiate":
        return await media.negotiate(
            sid,
            args["participant_id"],
            args["owner"],
            args["sdp"],
            args["publish"],
            args["subscribe"],
        )
    if op == "tracks":
        return {"tracks": media.tracks(sid)}
    if op == "health":
        return {"participants": media.health(sid)}
    if op == "ready":
        media.ready(sid, args["participant_id"])
        return {}
    if op == "leave":
        await media.leave(sid, args["participant_id"])
        return {"hosted": sid in media.rooms}
    if op == "end":
        hosted = sid in media.rooms
        await media.end(sid)  # returns once the track files are final (a closing room's too)
        return {"hosted": hosted}
    if op == "start_recording":
        if media.recorder is not None:
            media.start_recording(sid, str(args["case_id"]))
        return {}
    if op == "stop_recording":
        if media.recorder is not None:
            await media.stop_recording(sid)
        return {}
    raise MediaError("unknown_operation", f"no media operation {op!r}")


def streams(media: MediaServer) -> int:
    """Forwarded streams: each published track times the other peers of its room."""
    return sum(len(r.tracks) * max(0, len(r.peers) - 1) for r in media.rooms.values())


class CpuMeter:
    """This process's CPU as a fraction of one core, smoothed over the last seconds."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._at = time.monotonic()
        self.value = 0.0

    def sample(self) -> float:
        cpu, at = time.process_time(), time.monotonic()
        if at - self._at >= 0.2:
            used = (cpu - self._cpu) / (at - self._at)
            self.value = used if self.value == 0.0 else 0.5 * self.value + 0.5 * used
            self._cpu, self._at = cpu, at
        return self.value


def load(media: MediaServer, meter: CpuMeter) -> dict[str, Any]:
    recorder = media.recorder.writer_state() if media.recorder is not None else "off"
    return {
        "cpu": round(meter.sample(), 4),
        "streams": streams(media),
        "rooms": sorted(media.rooms),
        "recorder": recorder,
        "metrics": figures(media),
    }


def figures(media: MediaServer) -> dict[str, Any]:
    """What the node's ``/metrics`` shows of this host (``jointreview/metrics.py``): the
    forwarding totals and gauges (``media_server.counters``), the recorder's counts and
    this process's CPU seconds (a worker's: its forwarding; the node's own otherwise)."""
    out: dict[str, Any] = media.totals.read(media.rooms)
    out["cpu_seconds"] = time.process_time()
    if isinstance(media.recorder, Recorder):
        stats = media.recorder.stats()
        out["recorder"] = {k: stats[k] for k in ("queued", "packets", "dropped", "errors", "bytes")}
    return out
