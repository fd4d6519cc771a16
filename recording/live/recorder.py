"""Per-track recording of a node's sessions, without transcoding.

The event loop forwards packets; recording must cost it almost nothing. ``Room.recorder``
(a ``RoomRecording``) is called for every received RTP packet and only appends a tuple to
one bounded queue (when full the packet is counted and dropped, and the overload
reported). The queue is a ``collections.deque`` bounded by a ``len()`` check: the event
loop is its only packet producer, and ``append`` (atomic under the GIL) costs ~0.05 µs
where ``queue.Queue.put_nowait`` (a Python lock and condition) costs ~1.3-2 µs.

Nothing on the loop ever wakes the writer for a packet. ONE writer thread per node wakes
on its own clock, every ``BATCH_S``, takes everything queued, hands each packet to its
track's capture (``capture.TrackCapture``: depacketize, write the frames), then gives each
track's new frames to the OS in one ``write`` and keeps each session's ``recording.json``
(``recording.track_journal``). With nothing to record it sleeps until a control message
(a recording starting) wakes it. Closed files are remuxed (``recording.repair``) on a
second thread so a long track's repair never stalls the live ones.

A write error (full disk, I/O error, an unwritable directory) fails that track only: it
is reported at once through ``on_event`` (on the event loop) and forwarding goes on.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media_server.tap import OnEvent, WriterState
from recording import track_journal
from recording.paths import session_dir
from recording.repair import repair

from . import track_capture as capture
from .room_tap import RoomRecording, TrackRef

__all__ = ["RoomRecording", "TrackRef"]

if TYPE_CHECKING:
    from media_server.room import Room

log = logging.getLogger(__name__)

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
SR_KEEP_EVERY_S = 5.0  # sender reports kept in the journal: enough to re-anchor drift
SR_SAVE_EVERY_S = 5.0
SOON_S = 0.2  # a track's start reaches recording.json within this (coalesced across tracks)


@dataclass(eq=False)
class _Track:
    ref: TrackRef
    entry: dict[str, Any]
    session: _Session
    capture: capture.TrackCapture | None = None
    failed: bool = False
    holds: bool = False  # its muxer keeps a frame back (H.264 in MP4)


@dataclass(eq=False)
class _Session:
    """Writer side of one session directory: its journal and what is being written."""

    directory: Path
    doc: dict[str, Any]
    runs: dict[RoomRecording, int] = field(default_factory=dict)
    pending: dict[RoomRecording, int] = field(default_factory=dict)  # repairs in flight
    stopping: dict[RoomRecording, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    dirty: bool = False
    soon: float = 0.0  # when a coalesced save is due (0: none)
    saved_at: float = 0.0
    save_failed: bool = False


class Recorder:
    """The node's recorder: one bounded queue, one writer thread, one repair thread."""

    def __init__(
        self,
        archive: Path,
        on_event: OnEvent,
        *,
        queue_packets: int = QUEUE_PACKETS,
        keyframe_s: float = capture.KEYFRAME_EVERY_S,
        node: str = "",
    ) -> None:
        self.archive = archive
        self.keyframe_s = keyframe_s
        self.on_event = on_event
        self.node = node
        self.limit = queue_packets
        # Packets (bounded by the producer's len() check) and control messages (never
        # dropped, so the queue may exceed the limit by a few), in the order they happened.
        self.queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Event()
        self._idle = False  # the writer waits on _wake (nothing to record)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._repairs = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rec-repair")
        self._sessions: dict[Path, _Session] = {}
        self._tracks: dict[TrackRef, _Track] = {}
        self._held_frames = 0  # open tracks whose muxer holds a frame back (H.264 in MP4)
        # counters (read from any thread; plain ints under the GIL)
        self.packets = 0
        self.dropped = 0
        self.frames = 0
        self.errors = 0
        self.writer_cpu_s = 0.0
        self._stop = False

    # -- loop side --------------------------------------------------------------------
    def record(self, room: Room, case_id: str) -> RoomRecording:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()
        directory = session_dir(self.archive, case_id, room.session_id)
        return RoomRecording(self, room, case_id, directory)

    def control(self, item: tuple[Any, ...]) -> None:
        """Control messages are never dropped (the limit is for packets) and keep their
        place after the packets before them. An idle writer is woken; a busy one takes
        them at its next batch (within ``BATCH_S``)."""
        self.queue.append(item)
        if self._idle:
            self._wake.set()

    def emit(self, rec: RoomRecording, msg: dict[str, Any]) -> None:
        self.on_event(rec.session_id, {"session_id": rec.session_id, "case_id": rec.case_id, **msg})

    def stats(self) -> dict[str, Any]:
        return {
            "queued": len(self.queue),
            "packets": self.packets,
            "dropped": self.dropped,
            "frames": self.frames
            + sum(t.capture.frames for t in list(self._tracks.values()) if t.capture is not None),
            "errors": self.errors,
            "open_tracks": len(self._tracks),
            "writer_cpu_s": round(self.writer_cpu_s, 4),
        }

    def writer_state(self) -> WriterState:
        """The writer thread starts with the first recording and must live on after it."""
        thread = self._thread
        return "idle" if thread is None else "running" if thread.is_alive() else "stopped"

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer once everything queued is written (rooms stopped first)."""
        self._stop = True
        self.control(("wake",))
        if self._thread is not None:
            self._thread.join(timeout)
        self._repairs.shutdown(wait=True)

    # -- writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        q = self.queue
        clock = time.monotonic
        due = clock()
        while True:
            if not q and not self._sessions and not self._stop:
                # Nothing is being recorded: sleep until a control message wakes us.
                self._idle = True
                if not q:  # re-checked after _idle is set: control() sees one or the other
                    self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                self._idle = False
                due = clock()
            else:
                # One wakeup per batch, on our own clock; never woken per packet.
                due += BATCH_H264_S if self._held_frames else BATCH_S
                delay = due - clock()
                if delay > 0:
                    time.sleep(delay)
                else:
                    due = clock()  # behind (a slow disk): no burst of catch-up batches
            if q:
                self._drain(q)
            self._tick(time.time())
            self.writer_cpu_s = time.thread_time()
            if self._stop and not q and not self._busy():
                break

    def _drain(self, q: collections.deque[tuple[Any, ...]]) -> None:
        """Everything queued at this moment (what arrives meanwhile waits for the next
        batch), in order. A packet goes straight to its track's capture (``ref.sink``)."""
        popleft = q.popleft
        n = len(q)
        controls = 0
        for _ in range(n):
            item = popleft()
            head = item[0]
            if head.__class__ is TrackRef:
                sink = head.sink
                if sink is None:
                    self._first(item)
                    continue
                try:
                    sink(item)
                except Exception as exc:
                    self._fail(self._tracks[head], exc)
                continue
            controls += 1
            op = getattr(self, "_op_" + head, None)
            if op is not None:
                op(*item[1:])
        self.packets += n - controls

    def _first(self, item: tuple[Any, ...]) -> None:
        """A packet of a track without a sink: its first (open the track), or one of a
        failed or unrecorded track (ignored)."""
        ref: TrackRef = item[0]
        track = self._tracks.get(ref)
        if track is None:
            track = self._open_track(ref, item[3])
        cap = track.capture
        if cap is None or track.failed:
            return
        ref.sink = cap.push
        try:
            cap.push(item)
        except Exception as exc:
            self._fail(track, exc)

    def _busy(self) -> bool:
        return any(s.pending for s in self._sessions.values())

    def _session(self, rec: RoomRecording) -> _Session:
        session = self._sessions.get(rec.directory)
        if session is None:
            doc = None
            try:
                rec.directory.mkdir(parents=True, exist_ok=True)
                doc = track_journal.load(rec.directory)
            except (OSError, ValueError) as exc:
                self._report(rec, "journal_failed", None, None, exc)
            session = _Session(rec.directory, doc or track_journal.new(rec.case_id, rec.session_id))
            self._sessions[rec.directory] = session
        return session

    def _op_start(self, rec: RoomRecording) -> None:
        session = self._session(rec)
        run = {
            "started_at": rec.started_at,
            "stopped_at": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "node": self.node,
            "state": "open",
        }
        session.doc["runs"].append(run)
        session.runs[rec] = len(session.doc["runs"]) - 1
        session.pending.setdefault(rec, 0)
        self._save(session, force=True)

    def _open_track(self, ref: TrackRef, arrival: float) -> _Track:
        rec = ref.recording
        session = self._session(rec)
        found = capture.container_for(ref.codec)
        ext = found[0] if found else "bin"
        name = track_journal.file_name(session.doc, ref.track_id, ext)
        entry: dict[str, Any] = {
            "file": name,
            "track_id": ref.track_id,
            "kind": ref.kind,
            "codec": ref.codec,
            "clock_rate": ref.clock_rate,
            "container": found[1] if found else None,
            "participant_id": ref.participant_id,
            "owner": ref.owner,
            "source": ref.source,
            "run": session.runs.get(rec, 0),
            "state": "open",
            "first_packet_at": arrival,
            "started_at": None,
            "first_rtp_ts": None,
            "ended_at": None,
            "segments": [],
            "sender_reports": [],
            "error": None,
        }
        session.doc["tracks"].append(entry)
        track = _Track(ref, entry, session)
        self._tracks[ref] = track
        track.holds = found is not None and found[1] == "mp4"  # PyAV's MP4 muxer
        self._held_frames += track.holds
        if found is None:
            track.failed = True
            entry["state"] = "failed"
            entry["error"] = f"{ref.codec} is not recorded"
        else:
            loop, upstream = self._loop, ref.upstream
            assert loop is not None

            def ask() -> None:
                loop.call_soon_threadsafe(upstream.request_keyframe, time.monotonic())

            path = rec.directory / name
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                track.capture = capture.TrackCapture(
                    path, ref.codec, ref.clock_rate, ask, self.keyframe_s
                )
            except Exception as exc:
                self._fail(track, exc)
                return track
        self._soon(session)
        return track

    def _describe(self, track: _Track) -> None:
        cap, entry = track.capture, track.entry
        if cap is None:
            return
        entry.update(
            started_at=cap.started_at,
            first_rtp_ts=cap.first_rtp_ts,
            segments=cap.segments,
            width=cap.width or None,
            height=cap.height or None,
            frames=cap.frames,
            keyframes=cap.keyframes,
            gaps=cap.gaps,
            dropped=track.ref.dropped,
        )

    def _fail(self, track: _Track, exc: BaseException) -> None:
        track.failed = True
        track.ref.sink = None
        self.errors += 1
        if track.capture is not None:
            track.capture.abandon()
        self._describe(track)
        track.entry["state"] = "failed"
        track.entry["error"] = str(exc) or type(exc).__name__
        track.entry["ended_at"] = time.time()
        code = "disk_full" if getattr(exc, "errno", None) == errno.ENOSPC else "write_failed"
        log.error("recording %s failed: %s", track.entry["file"], exc)
        self._report(track.ref.recording, code, track.ref.track_id, track.entry["file"], exc)
        self._save(track.session, force=True)

    def _report(
        self,
        rec: RoomRecording,
        code: str,
        track_id: str | None,
        file: str | None,
        exc: BaseException,
    ) -> None:
        msg = {
            "type": "recording.error",
            "code": code,
            "track_id": track_id,
            "file": file,
            "message": str(exc) or type(exc).__name__,
        }
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.emit, rec, msg)

    def _op_sr(self, ref: TrackRef, ntp: int, rtp_ts: int, arrival: float) -> None:
        track = self._tracks.get(ref)
        if track is None or track.failed:
            return
        reports = track.entry["sender_reports"]
        if not reports or arrival - reports[-1][2] >= SR_KEEP_EVERY_S:
            reports.append([ntp, rtp_ts, arrival])
            track.session.dirty = True

    def _op_end(self, ref: TrackRef) -> None:
        track = self._tracks.pop(ref, None)
        if track is None:
            return
        self._held_frames -= track.holds
        ref.sink = None
        entry, session, rec = track.entry, track.session, ref.recording
        entry["ended_at"] = time.time()
        if track.failed or track.capture is None:
            self._save(session, force=True)
            return
        try:
            track.capture.close()
        except Exception as exc:
            self._fail(track, exc)
            return
        self._describe(track)
        self.frames += track.capture.frames
        if track.capture.frames == 0:
            # Nothing usable arrived (no keyframe before the end): no file to keep.
            entry["state"] = "closed"
            entry["error"] = "no frame was received"
            self._save(session, force=True)
            return
        session.pending[rec] = session.pending.get(rec, 0) + 1
        self._save(session, force=True)
        path = rec.directory / entry["file"]
        self._repairs.submit(self._repair_job, track, path)

    def _repair_job(self, track: _Track, path: Path) -> None:
        try:
            result: dict[str, Any] | BaseException = repair(path)
        except Exception as exc:
            result = exc
        self.control(("repaired", track, result))

    def _op_repaired(self, track: _Track, result: dict[str, Any] | BaseException) -> None:
        session, rec, entry = track.session, track.ref.recording, track.entry
        if isinstance(result, BaseException):
            log.error("repairing %s failed: %s", entry["file"], result)
            entry["repair_error"] = str(result)
        else:
            entry["duration_s"] = result["duration_s"]
            entry["size"] = result["size"]
        if entry["state"] == "open":
            entry["state"] = "closed"
        session.pending[rec] -= 1
        self._save(session, force=True)
        self._maybe_finish(session, rec)

    def _op_stop(self, rec: RoomRecording, fut: asyncio.Future[dict[str, Any]]) -> None:
        session = self._session(rec)
        session.stopping[rec] = fut
        self._maybe_finish(session, rec)

    def _maybe_finish(self, session: _Session, rec: RoomRecording) -> None:
        if rec not in session.stopping or session.pending.get(rec, 0) > 0:
            return
        fut = session.stopping.pop(rec)
        index = session.runs.pop(rec, None)
        session.pending.pop(rec, None)
        tracks = [t for t in session.doc["tracks"] if t.get("run") == index]
        if index is not None:
            run = session.doc["runs"][index]
            run["stopped_at"] = time.time()
            run["state"] = "closed"
        self._save(session, force=True)
        if not session.runs:
            del self._sessions[session.directory]
        summary = {
            "tracks": len(tracks),
            "failed": sum(1 for t in tracks if t.get("state") == "failed"),
            "files": [t["file"] for t in tracks if t.get("state") == "closed" and t.get("size")],
        }
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, fut, summary)

    def _op_wake(self) -> None:
        pass

    def _tick(self, now: float) -> None:
        """After each batch: gaps that waited long enough are given up, and every
        track's new frames go to the OS (one write per track: what a kill -9 keeps)."""
        for track in list(self._tracks.values()):
            cap = track.capture
            if cap is None or track.failed:
                continue
            try:
                if cap.reorder.held:
                    cap.tick(now)
                cap.flush()
            except Exception as exc:
                self._fail(track, exc)
                continue
            if cap.changed:  # a source started: recording.json says where it begins
                cap.changed = False
                self._describe(track)
                self._soon(track.session)
        for session in self._sessions.values():
            if session.soon and now >= session.soon:
                self._save(session, force=True)
            elif session.dirty and now - session.saved_at >= SR_SAVE_EVERY_S:
                self._save(session)

    def _soon(self, session: _Session) -> None:
        """Save within SOON_S: several tracks starting together make one write."""
        session.dirty = True
        if not session.soon:
            session.soon = time.time() + SOON_S

    def _save(self, session: _Session, force: bool = False) -> None:
        session.dirty = True
        now = time.time()
        if not force and now - session.saved_at < SR_SAVE_EVERY_S:
            return
        session.soon = 0.0
        try:
            track_journal.save(session.directory, session.doc)
        except OSError as exc:
            if not session.save_failed:
                session.save_failed = True
                log.error("writing %s failed: %s", session.directory / track_journal.NAME, exc)
                rec = next(iter(session.runs), None)
                if rec is not None:
                    self._report(rec, "journal_failed", None, track_journal.NAME, exc)
            return
        session.dirty = False
        session.saved_at = now


def _resolve(fut: asyncio.Future[dict[str, Any]], value: dict[str, Any]) -> None:
    if not fut.done():
        fut.set_result(value)
