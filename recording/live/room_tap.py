"""The event-loop side of one room's recording: ``Room.tap`` while it is recorded
(a ``media_server.tap.RoomTap``).

Called for every received RTP packet, it only appends a tuple (a ``commands.Packet``) to
the node recorder's bounded queue (when full: counted, dropped and reported) and never
wakes anyone: the writer thread (``recorder.Recorder``) takes the queue on its own clock
and does everything else. A sender report, a track's end, the start and the stop are
commands on the same queue, in the order they happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media_server.forwarder import Upstream
from media_server.rtp import Header

from .commands import End, SenderReport, Start, Stop

if TYPE_CHECKING:
    from media_server.room import Room

    from .commands import Packet
    from .recorder import Recorder

log = logging.getLogger(__name__)

OVERLOAD_REPORT_EVERY_S = 10.0
_now = time.time


@dataclass(eq=False)
class TrackRef:
    """A published track as the writer knows it (created on the loop at its first packet)."""

    recording: RoomRecording
    upstream: Upstream
    track_id: str
    kind: str
    codec: str
    clock_rate: int
    participant_id: str
    owner: dict[str, Any]
    source: str
    dropped: int = 0
    # Set by the writer once the track's file is open: where its packets go.
    sink: Callable[[Packet], None] | None = None


class RoomRecording:
    """``Room.tap``: the event-loop side of one room's recording."""

    def __init__(self, recorder: Recorder, room: Room, case_id: str, directory: Path) -> None:
        self.recorder = recorder
        self.room = room
        self.session_id = room.session_id
        self.case_id = case_id
        self.directory = directory
        self.refs: dict[Upstream, TrackRef] = {}
        self.started_at = time.time()
        self.stopped = False
        self._last_overload = -1e9
        self._queue = recorder.queue
        self._put = recorder.queue.append
        self._limit = recorder.limit
        recorder.control(Start(self))

    # -- hot path (event loop, every received RTP packet) ------------------------------
    def __call__(self, upstream: Upstream, data: bytes, h: Header) -> None:
        ref = self.refs.get(upstream)
        if ref is None:
            ref = self._begin(upstream)
            if ref is None:
                return
        if len(self._queue) < self._limit:
            self._put((ref, data, h, _now(), upstream.ssrc))  # a commands.Packet
        else:
            ref.dropped += 1
            self.recorder.dropped += 1
            self._overloaded(ref)

    def _begin(self, upstream: Upstream) -> TrackRef | None:
        if self.stopped:
            return None
        entry = self.room.tracks.get(upstream.track_id)
        if entry is None or entry[0] is not upstream:
            return None  # not (or no longer) published
        _, peer, pub = entry
        ref = TrackRef(
            self,
            upstream,
            upstream.track_id,
            upstream.kind,
            upstream.codec,
            upstream.clock_rate,
            peer.participant_id,
            dict(peer.owner),
            pub.source,
        )
        self.refs[upstream] = ref
        if upstream.kind == "video":
            # aiortc publishers send keyframes only when asked: the file starts on one.
            upstream.request_keyframe(time.monotonic())
        return ref

    def _overloaded(self, ref: TrackRef) -> None:
        now = time.monotonic()
        if now - self._last_overload >= OVERLOAD_REPORT_EVERY_S:
            self._last_overload = now
            log.warning("recording of %s is behind: dropping packets", self.session_id)
            self.recorder.emit(
                self,
                {
                    "type": "recording.error",
                    "code": "overloaded",
                    "track_id": ref.track_id,
                    "message": "the recorder cannot keep up; packets are being dropped",
                },
            )

    # -- other hooks ----------------------------------------------------------------
    def sender_report(self, upstream: Upstream, ntp: int, rtp_ts: int) -> None:
        ref = self.refs.get(upstream)
        if ref is not None:
            self.recorder.control(SenderReport(ref, ntp, rtp_ts, time.time()))

    def track_ended(self, upstream: Upstream) -> None:
        ref = self.refs.pop(upstream, None)
        if ref is not None:
            self.recorder.control(End(ref))

    def stop(self) -> asyncio.Future[dict[str, Any]]:
        """End every track; the future resolves once the files are closed and repaired
        and ``recording.json`` says so (with a summary of this run)."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if not self.stopped:
            self.stopped = True
            for upstream in list(self.refs):
                self.track_ended(upstream)
            self.recorder.control(Stop(self, fut))
        else:
            fut.set_result({})
        return fut
