"""Per-track recording of a node's sessions, without transcoding.

The event loop forwards packets; recording must cost it almost nothing. ``Room.tap``
(a ``room_tap.RoomRecording``) is called for every received RTP packet and only appends
a tuple to one bounded queue (when full the packet is counted and dropped, and the overload
reported). The queue is a ``collections.deque`` bounded by a ``len()`` check: the event
loop is its only packet producer, and ``append`` (atomic under the GIL) costs ~0.05 µs
where ``queue.Queue.put_nowait`` (a Python lock and condition) costs ~1.3-2 µs.

Nothing on the loop ever wakes the writer for a packet. ONE writer thread per node wakes
on its own clock, every ``BATCH_S``, takes everything queued, hands each packet to its
track's capture (``track_capture.TrackCapture``: depacketize, write the frames) and each
command (``commands``) to the ``writer.Writer``, then gives each track's new frames to
the OS in one ``write`` and keeps each session's ``recording.json``
(``recording.track_index``). With nothing to record it sleeps until a control message
(a recording starting) wakes it. Closed files are remuxed (``recording.repair``) on a
second thread so a long track's repair never stalls the live ones.

A write error (full disk, I/O error, an unwritable directory) fails that track only: it
is reported at once through ``on_event`` (on the event loop) and forwarding goes on.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

from media_server.tap import OnEvent, WriterState
from recording.paths import session_dir
from recording.repair import repair

from . import track_capture
from .commands import Command, End, Item, Repaired, SenderReport, Start, Stop, Wake
from .room_tap import RoomRecording, TrackRef
from .writer import Writer, WrittenTrack

__all__ = ["Recorder", "RoomRecording", "TrackRef"]

if TYPE_CHECKING:
    from media_server.room import Room

QUEUE_PACKETS = 8192  # ~8 s of a six-party session: rides out a slow disk for a while
# The writer wakes on its own clock this often, takes everything queued and writes it.
# Each batch has a fixed cost (the wakeup ~30 µs of CPU, one write per track ~10-15 µs)
# and the code runs 3-4x slower than when warm after every sleep (2-core VM, measured):
# a six-party session's writer costs ~10 µs a packet with 40 ms batches, ~7 µs with
# 60 ms, ~6 µs with 80 ms (the whole recorder: 1.09 / 0.99 % of a core at 60 / 80 ms).
# A kill -9 loses what is queued, and nothing else for WebM (each batch is written
# whole): <= 80 ms received. H.264 adds the one frame its MP4 muxer holds, so while an
# H.264 track is recorded the clock is 60 ms: <= ~95 ms.
BATCH_S = 0.08
BATCH_H264_S = 0.06
IDLE_WAIT_S = 1.0  # nothing to record: sleep until woken (this is only a safety net)


class Recorder:
    """The node's recorder: one bounded queue, one writer thread, one repair thread.

    ``media_server.tap.RecorderTap``: ``record`` gives a room its ``RoomTap``."""

    def __init__(
        self,
        archive: Path,
        on_event: OnEvent,
        *,
        queue_packets: int = QUEUE_PACKETS,
        keyframe_s: float = track_capture.KEYFRAME_EVERY_S,
        node: str = "",
    ) -> None:
        self.archive = archive
        self.on_event = on_event
        self.limit = queue_packets
        # Packets (bounded by the producer's len() check) and commands (never dropped,
        # so the queue may exceed the limit by a few), in the order they happened.
        self.queue: collections.deque[Item] = collections.deque()
        self._wake = threading.Event()
        self._idle = False  # the writer waits on _wake (nothing to record)
        self._thread: threading.Thread | None = None
        self._repairs = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rec-repair")
        # Everything the writer thread keeps (sessions, open tracks): its thread only.
        self.writer = Writer(self.emit, self._repair, keyframe_s=keyframe_s, node=node)
        # counters (read from any thread; plain ints under the GIL)
        self.packets = 0
        self.dropped = 0
        self.writer_cpu_s = 0.0
        self._stop = False

    # -- loop side --------------------------------------------------------------------
    def record(self, room: Room, case_id: str) -> RoomRecording:
        if self._thread is None:
            self.writer.loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()
        directory = session_dir(self.archive, case_id, room.session_id)
        return RoomRecording(self, room, case_id, directory)

    def control(self, command: Command) -> None:
        """Commands are never dropped (the limit is for packets) and keep their place
        after the packets before them. An idle writer is woken; a busy one takes them at
        its next batch (within ``BATCH_S``). Any thread."""
        self.queue.append(command)
        if self._idle:
            self._wake.set()

    def emit(self, rec: RoomRecording, msg: dict[str, Any]) -> None:
        self.on_event(rec.session_id, {"session_id": rec.session_id, "case_id": rec.case_id, **msg})

    @property
    def frames(self) -> int:
        """Frames written to the files of the tracks closed so far."""
        return self.writer.frames

    @property
    def errors(self) -> int:
        return self.writer.errors

    def stats(self) -> dict[str, Any]:
        tracks = list(self.writer.tracks.values())
        return {
            "queued": len(self.queue),
            "packets": self.packets,
            "dropped": self.dropped,
            "frames": self.writer.frames
            + sum(t.capture.frames for t in tracks if t.capture is not None),
            "errors": self.writer.errors,
            "bytes": self.writer.bytes,
            "open_tracks": len(tracks),
            "writer_cpu_s": round(self.writer_cpu_s, 4),
        }

    def writer_state(self) -> WriterState:
        """The writer thread starts with the first recording and must live on after it."""
        thread = self._thread
        return "idle" if thread is None else "running" if thread.is_alive() else "stopped"

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer once everything queued is written (rooms stopped first)."""
        self._stop = True
        self.control(Wake())
        if self._thread is not None:
            self._thread.join(timeout)
        self._repairs.shutdown(wait=True)

    # -- writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        q = self.queue
        writer = self.writer
        clock = time.monotonic
        due = clock()
        while True:
            if not q and not writer.sessions and not self._stop:
                # Nothing is being recorded: sleep until a command wakes us.
                self._idle = True
                if not q:  # re-checked after _idle is set: control() sees one or the other
                    self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                self._idle = False
                due = clock()
            else:
                # One wakeup per batch, on our own clock; never woken per packet.
                due += BATCH_H264_S if writer.held_frames else BATCH_S
                delay = due - clock()
                if delay > 0:
                    time.sleep(delay)
                else:
                    due = clock()  # behind (a slow disk): no burst of catch-up batches
            if q:
                self._drain(q)
            writer.tick(time.time())
            self.writer_cpu_s = time.thread_time()
            if self._stop and not q and not writer.busy():
                break

    def _drain(self, q: collections.deque[Item]) -> None:
        """Everything queued at this moment (what arrives meanwhile waits for the next
        batch), in order. A packet goes straight to its track's capture (``ref.sink``)."""
        popleft = q.popleft
        n = len(q)
        commands = 0
        for _ in range(n):
            item = popleft()
            if isinstance(item, tuple):  # a Packet: nearly always
                sink = item[0].sink
                if sink is None:
                    self.writer.first_packet(item)
                    continue
                try:
                    sink(item)
                except Exception as exc:
                    self.writer.fail(self.writer.tracks[item[0]], exc)
                continue
            commands += 1
            self._command(item)
        self.packets += n - commands

    def _command(self, command: Command) -> None:
        writer = self.writer
        match command:
            case Start(rec):
                writer.start(rec)
            case SenderReport(ref, ntp, rtp_ts, arrival):
                writer.sender_report(ref, ntp, rtp_ts, arrival)
            case End(ref):
                writer.end(ref)
            case Stop(rec, done):
                writer.stop(rec, done)
            case Repaired(track, result):
                writer.repaired(track, result)
            case Wake():
                pass
            case _:
                assert_never(command)

    # -- repair thread ----------------------------------------------------------------
    def _repair(self, track: WrittenTrack, path: Path) -> None:
        """(writer thread) A closed track's file, remuxed on the repair thread."""
        self._repairs.submit(self._repair_job, track, path)

    def _repair_job(self, track: WrittenTrack, path: Path) -> None:
        try:
            result: dict[str, Any] | BaseException = repair(path)
        except Exception as exc:
            result = exc
        self.control(Repaired(track, result))
