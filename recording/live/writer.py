"""What the recorder's writer thread does with what it takes off the queue: each session
directory's ``recording.json`` (``recording.track_index``) and each track's file (a
``track_capture.TrackCapture``), from a track's first packet to its repaired file.

Writer thread only, except where a method says otherwise: nothing here is locked. The
thread, the queue and the clock are ``recorder.Recorder``'s; it calls this for every
command and every first packet of a track, and ``tick`` after every batch.

A write error (full disk, I/O error, an unwritable directory) fails that track only: it
is reported at once (on the event loop) and the other tracks go on.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recording import track_index

from . import track_capture
from .room_tap import RoomRecording, TrackRef

if TYPE_CHECKING:
    from .commands import Packet

log = logging.getLogger(__name__)

SR_KEEP_EVERY_S = 5.0  # sender reports kept in the track index: enough to re-anchor drift
SR_SAVE_EVERY_S = 5.0
SOON_S = 0.2  # a track's start reaches recording.json within this (coalesced across tracks)

# (the recording, a message for its session): on the event loop
Emit = Callable[[RoomRecording, dict[str, Any]], None]


@dataclass(eq=False)
class WrittenTrack:
    """Writer side of one recorded track: its track index entry and its capture."""

    ref: TrackRef
    entry: dict[str, Any]
    session: WrittenSession
    capture: track_capture.TrackCapture | None = None
    failed: bool = False
    holds: bool = False  # its muxer keeps a frame back (H.264 in MP4)


@dataclass(eq=False)
class WrittenSession:
    """Writer side of one session directory: its track index and what is being written."""

    directory: Path
    index: dict[str, Any]  # recording.json
    runs: dict[RoomRecording, int] = field(default_factory=dict)
    pending: dict[RoomRecording, int] = field(default_factory=dict)  # repairs in flight
    stopping: dict[RoomRecording, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    dirty: bool = False
    soon: float = 0.0  # when a coalesced save is due (0: none)
    saved_at: float = 0.0
    save_failed: bool = False


class Writer:
    """The sessions and tracks being written, and what each command does to them."""

    def __init__(
        self,
        emit: Emit,
        repair: Callable[[WrittenTrack, Path], None],
        *,
        keyframe_s: float,
        node: str,
    ) -> None:
        self.emit = emit  # called on the event loop
        self.repair = repair  # a closed track's file: remux it on the repair thread
        self.keyframe_s = keyframe_s
        self.node = node
        self.loop: asyncio.AbstractEventLoop | None = None  # set with the first recording
        self.sessions: dict[Path, WrittenSession] = {}
        self.tracks: dict[TrackRef, WrittenTrack] = {}
        self.held_frames = 0  # open tracks whose muxer holds a frame back (H.264 in MP4)
        # counters (read from any thread; plain ints under the GIL)
        self.frames = 0  # of the closed tracks
        self.errors = 0
        self.bytes = 0  # the final sizes of the track files made final

    def busy(self) -> bool:
        """Repairs still in flight."""
        return any(s.pending for s in self.sessions.values())

    def session(self, rec: RoomRecording) -> WrittenSession:
        session = self.sessions.get(rec.directory)
        if session is None:
            index = None
            try:
                rec.directory.mkdir(parents=True, exist_ok=True)
                index = track_index.load(rec.directory)
            except (OSError, ValueError) as exc:
                # "journal_failed": the wire code (protocol.md) keeps the track index's old name
                self.report(rec, "journal_failed", None, None, exc)
            session = WrittenSession(
                rec.directory, index or track_index.new(rec.case_id, rec.session_id)
            )
            self.sessions[rec.directory] = session
        return session

    # -- commands ---------------------------------------------------------------------
    def start(self, rec: RoomRecording) -> None:
        session = self.session(rec)
        run = {
            "started_at": rec.started_at,
            "stopped_at": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "node": self.node,
            "state": "open",
        }
        session.index["runs"].append(run)
        session.runs[rec] = len(session.index["runs"]) - 1
        session.pending.setdefault(rec, 0)
        self.save(session, force=True)

    def sender_report(self, ref: TrackRef, ntp: int, rtp_ts: int, arrival: float) -> None:
        track = self.tracks.get(ref)
        if track is None or track.failed:
            return
        reports = track.entry["sender_reports"]
        if not reports or arrival - reports[-1][2] >= SR_KEEP_EVERY_S:
            reports.append([ntp, rtp_ts, arrival])
            track.session.dirty = True

    def end(self, ref: TrackRef) -> None:
        track = self.tracks.pop(ref, None)
        if track is None:
            return
        self.held_frames -= track.holds
        ref.sink = None
        entry, session, rec = track.entry, track.session, ref.recording
        entry["ended_at"] = time.time()
        if track.failed or track.capture is None:
            self.save(session, force=True)
            return
        try:
            track.capture.close()
        except Exception as exc:
            self.fail(track, exc)
            return
        self.describe(track)
        self.frames += track.capture.frames
        if track.capture.frames == 0:
            # Nothing usable arrived (no keyframe before the end): no file to keep.
            entry["state"] = "closed"
            entry["error"] = "no frame was received"
            self.save(session, force=True)
            return
        session.pending[rec] = session.pending.get(rec, 0) + 1
        self.save(session, force=True)
        self.repair(track, rec.directory / entry["file"])

    def repaired(self, track: WrittenTrack, result: dict[str, Any] | BaseException) -> None:
        session, rec, entry = track.session, track.ref.recording, track.entry
        if isinstance(result, BaseException):
            log.error("repairing %s failed: %s", entry["file"], result)
            entry["repair_error"] = str(result)
        else:
            entry["duration_s"] = result["duration_s"]
            entry["size"] = result["size"]
            self.bytes += int(result["size"] or 0)
        if entry["state"] == "open":
            entry["state"] = "closed"
        session.pending[rec] -= 1
        self.save(session, force=True)
        self._maybe_finish(session, rec)

    def stop(self, rec: RoomRecording, fut: asyncio.Future[dict[str, Any]]) -> None:
        session = self.session(rec)
        session.stopping[rec] = fut
        self._maybe_finish(session, rec)

    def _maybe_finish(self, session: WrittenSession, rec: RoomRecording) -> None:
        if rec not in session.stopping or session.pending.get(rec, 0) > 0:
            return
        fut = session.stopping.pop(rec)
        run_no = session.runs.pop(rec, None)
        session.pending.pop(rec, None)
        tracks = [t for t in session.index["tracks"] if t.get("run") == run_no]
        if run_no is not None:
            run = session.index["runs"][run_no]
            run["stopped_at"] = time.time()
            run["state"] = "closed"
        self.save(session, force=True)
        if not session.runs:
            del self.sessions[session.directory]
        summary = {
            "tracks": len(tracks),
            "failed": sum(1 for t in tracks if t.get("state") == "failed"),
            "files": [t["file"] for t in tracks if t.get("state") == "closed" and t.get("size")],
        }
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, fut, summary)

    # -- a track's first packet -------------------------------------------------------
    def first_packet(self, item: Packet) -> None:
        """A packet of a track without a sink: its first (open the track), or one of a
        failed or unrecorded track (ignored)."""
        ref = item[0]
        track = self.tracks.get(ref)
        if track is None:
            track = self._open_track(ref, item[3])
        cap = track.capture
        if cap is None or track.failed:
            return
        ref.sink = cap.push
        try:
            cap.push(item)
        except Exception as exc:
            self.fail(track, exc)

    def _open_track(self, ref: TrackRef, arrival: float) -> WrittenTrack:
        rec = ref.recording
        session = self.session(rec)
        found = track_capture.container_for(ref.codec)
        ext = found[0] if found else "bin"
        name = track_index.file_name(session.index, ref.track_id, ext, rec.directory)
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
        session.index["tracks"].append(entry)
        track = WrittenTrack(ref, entry, session)
        self.tracks[ref] = track
        track.holds = found is not None and found[1] == "mp4"  # PyAV's MP4 muxer
        self.held_frames += track.holds
        if found is None:
            track.failed = True
            entry["state"] = "failed"
            entry["error"] = f"{ref.codec} is not recorded"
        else:
            try:
                track.capture = self._capture(ref, rec.directory / name)
            except Exception as exc:
                self.fail(track, exc)
                return track
        self._soon(session)
        return track

    def _capture(self, ref: TrackRef, path: Path) -> track_capture.TrackCapture:
        loop, upstream = self.loop, ref.upstream
        assert loop is not None

        def ask() -> None:  # (on this thread: the request is made on the loop)
            loop.call_soon_threadsafe(upstream.request_keyframe, time.monotonic())

        path.parent.mkdir(parents=True, exist_ok=True)
        return track_capture.TrackCapture(path, ref.codec, ref.clock_rate, ask, self.keyframe_s)

    # -- track index facts and failures -----------------------------------------------
    def describe(self, track: WrittenTrack) -> None:
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

    def fail(self, track: WrittenTrack, exc: BaseException) -> None:
        track.failed = True
        track.ref.sink = None
        self.errors += 1
        if track.capture is not None:
            track.capture.abandon()
        self.describe(track)
        track.entry["state"] = "failed"
        track.entry["error"] = str(exc) or type(exc).__name__
        track.entry["ended_at"] = time.time()
        code = "disk_full" if getattr(exc, "errno", None) == errno.ENOSPC else "write_failed"
        log.error("recording %s failed: %s", track.entry["file"], exc)
        self.report(track.ref.recording, code, track.ref.track_id, track.entry["file"], exc)
        self.save(track.session, force=True)

    def report(
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
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.emit, rec, msg)

    # -- after each batch -------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Gaps that waited long enough are given up, and every track's new frames go
        to the OS (one write per track: what a kill -9 keeps); track indexes due are saved.

        A source that started in this batch is in recording.json (where it begins: its
        first frame's arrival and RTP time) BEFORE its frames go to the OS: a kill -9 at
        any moment leaves no file holding frames that the index cannot place (recovery
        would repair the file, and the replay could not show it). (An H.264 fragment goes
        to the OS as it is muxed, up to a batch ahead: ``archive.recover_session``.)"""
        for track in list(self.tracks.values()):
            cap = track.capture
            if cap is None or track.failed:
                continue
            try:
                if cap.reorder.held:
                    cap.tick(now)
                if cap.changed:  # (a track's start: seldom) saved before its frames
                    cap.changed = False
                    self.describe(track)
                    self.save(track.session, force=True)
                cap.flush()
            except Exception as exc:
                self.fail(track, exc)
        for session in self.sessions.values():
            if session.soon and now >= session.soon:
                self.save(session, force=True)
            elif session.dirty and now - session.saved_at >= SR_SAVE_EVERY_S:
                self.save(session)

    def _soon(self, session: WrittenSession) -> None:
        """Save within SOON_S: several tracks starting together make one write."""
        session.dirty = True
        if not session.soon:
            session.soon = time.time() + SOON_S

    def save(self, session: WrittenSession, force: bool = False) -> None:
        session.dirty = True
        now = time.time()
        if not force and now - session.saved_at < SR_SAVE_EVERY_S:
            return
        session.soon = 0.0
        try:
            track_index.save(session.directory, session.index)
        except OSError as exc:
            if not session.save_failed:
                session.save_failed = True
                log.error("writing %s failed: %s", session.directory / track_index.NAME, exc)
                rec = next(iter(session.runs), None)
                if rec is not None:
                    self.report(rec, "journal_failed", None, track_index.NAME, exc)
            return
        session.dirty = False
        session.saved_at = now


def _resolve(fut: asyncio.Future[dict[str, Any]], value: dict[str, Any]) -> None:
    if not fut.done():
        fut.set_result(value)
