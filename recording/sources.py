"""A recorded session's tracks, placed on one timeline: what the composite shows and
plays at each instant.

Time 0 of the session is its first track's first frame. A frame (or audio sample) of a
track is at: the track's start (``started_at``, the wall-clock arrival of its first frame)
+ its file timestamp (the recorder's pts are the RTP timestamps since that frame, see
``recording.live.track_capture``). Over long sessions a sender's RTP clock drifts from real time
(a sound card's sample clock by up to a few hundred ppm, ~0.4 s an hour); where the
track index has RTCP sender reports, the RTP → sender-NTP map they give replaces the nominal
clock rate, anchored at the segment's start, so audio and video of a sender stay
together.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

AUDIO_RATE = 48_000
# Opus encoders look ahead 312 samples at 48 kHz (6.5 ms) and WebRTC carries no pre-skip
# (``bitstream.opus_head`` writes 0), so decoded audio runs this much late: shift it back.
OPUS_DELAY = 312
EPS_S = 1e-3  # float slack when comparing a frame's time with an output frame's
SEEK_AFTER_S = 1.0  # a reader starting later than this into its track seeks there
MAX_RATE_ERROR = 0.01  # sender reports implying a clock off by more than this are ignored


@dataclass
class _Segment:
    pts: int  # file pts (clock units) where this source starts
    rtp_ts: int
    start_s: float  # session time of ``pts``
    ntp: list[tuple[int, float]] = field(default_factory=list)  # (unwrapped RTP, NTP s)


class TrackClock:
    """File pts (seconds) → session seconds, for one track."""

    def __init__(self, entry: dict[str, Any], zero: float) -> None:
        self.rate = int(entry.get("clock_rate") or 90_000)
        self.start_s = float(entry["started_at"]) - zero
        segments = entry.get("segments") or []
        self.segments: list[_Segment] = []
        for seg in segments:
            self.segments.append(
                _Segment(
                    int(seg.get("pts", 0)),
                    int(seg.get("rtp_ts", 0)),
                    float(seg.get("wall", entry["started_at"])) - zero,
                )
            )
        if not self.segments:
            self.segments.append(_Segment(0, 0, self.start_s))
        self.segments[0].start_s = self.start_s  # the file's pts 0 is the track's start
        self._assign_reports(entry.get("sender_reports") or [], zero)
        self._starts = [s.pts for s in self.segments]

    def _assign_reports(self, reports: list[list[float]], zero: float) -> None:
        """Each report belongs to the segment (SSRC) that was live when it arrived."""
        walls = [s.start_s + zero for s in self.segments]
        for ntp, rtp_ts, arrival in reports:
            i = max(0, bisect.bisect_right(walls, float(arrival)) - 1)
            seg = self.segments[i]
            d = (int(rtp_ts) - seg.rtp_ts) & 0xFFFFFFFF
            d = d - (1 << 32) if d >= 1 << 31 else d
            seg.ntp.append((seg.rtp_ts + d, int(ntp) / 2**32))
        for seg in self.segments:
            seg.ntp.sort()
            pts = seg.ntp
            if len(pts) >= 2:
                rate = (pts[-1][0] - pts[0][0]) / max(pts[-1][1] - pts[0][1], 1e-9)
                if abs(rate / self.rate - 1) > MAX_RATE_ERROR:
                    seg.ntp = []  # a clock step or a bogus report: keep the nominal rate

    def _ntp(self, seg: _Segment, r: float) -> float:
        """Sender NTP seconds at RTP time ``r`` (piecewise linear, extrapolated)."""
        pts = seg.ntp
        i = bisect.bisect_right(pts, (r, float("inf")))
        i = min(max(i, 1), len(pts) - 1)
        (r0, n0), (r1, n1) = pts[i - 1], pts[i]
        return n0 + (r - r0) * (n1 - n0) / (r1 - r0) if r1 != r0 else n0

    def file_time(self, t: float) -> float:
        """The file time (s) whose session time is ``t`` (or the start): ``at`` inverted
        by bisection, as it only ever grows."""
        lo, hi = 0.0, max(1.0, t - self.start_s)
        for _ in range(64):
            if self.at(hi) > t:
                break
            hi *= 2
        for _ in range(48):
            mid = (lo + hi) / 2
            if self.at(mid) <= t:
                lo = mid
            else:
                hi = mid
        return lo

    def at(self, pts_s: float) -> float:
        clock = pts_s * self.rate
        i = max(0, bisect.bisect_right(self._starts, clock + 0.5) - 1)
        seg = self.segments[i]
        if len(seg.ntp) < 2:
            return seg.start_s + (clock - seg.pts) / self.rate
        r = seg.rtp_ts + (clock - seg.pts)
        return seg.start_s + self._ntp(seg, r) - self._ntp(seg, seg.rtp_ts)


@dataclass
class Track:
    """A recorded track usable by the export: its file, clock and span."""

    entry: dict[str, Any]
    path: Path
    clock: TrackClock
    start_s: float
    end_s: float

    @property
    def kind(self) -> str:
        return str(self.entry.get("kind"))


def usable_tracks(directory: Path, index: dict[str, Any]) -> tuple[list[Track], float]:
    """The track index's tracks that have a file to read, and the session's time 0."""
    entries = []
    for e in index.get("tracks", []):
        if e.get("state") not in ("closed", "recovered_after_crash") or not e.get("frames"):
            continue
        if e.get("started_at") is None or e.get("kind") not in ("audio", "video"):
            continue
        path = (directory / str(e.get("file", ""))).resolve()
        if path.is_relative_to(directory.resolve()) and path.is_file():
            entries.append((e, path))
    if not entries:
        return [], 0.0
    zero = min(float(e["started_at"]) for e, _ in entries)
    tracks = []
    for e, path in entries:
        clock = TrackClock(e, zero)
        duration = float(e.get("duration_s") or 0.0)
        ended = e.get("ended_at")
        end = float(ended) - zero if ended is not None else clock.start_s + duration
        # A file longer than the track index says (a crash, a clock step) still plays out.
        end = max(end, clock.at(duration)) if duration else end
        tracks.append(Track(e, path, clock, clock.start_s, end))
    return tracks, zero


# -- video --------------------------------------------------------------------------------


class VideoReader:
    """One video track's decoded frames with their session times, decoded on demand;
    from the last keyframe at or before ``start_s`` when given (an export split in
    parts starts its part there, not at the track's start)."""

    def __init__(self, track: Track, threads: int = 1, start_s: float | None = None) -> None:
        self.track = track
        self.threads = threads
        self.start_s = start_s
        self._container: Any = None
        self._frames: Iterator[tuple[float, av.VideoFrame]] | None = None
        self.current: tuple[float, av.VideoFrame] | None = None
        self.serial = 0  # counts frames taken: a tile redraws when it changes
        self._next: tuple[float, av.VideoFrame] | None = None
        self.exhausted = False

    def _decode(self) -> Iterator[tuple[float, av.VideoFrame]]:
        self._container = container = av.open(str(self.track.path))
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_count = self.threads
        ctx.thread_type = "AUTO" if self.threads > 1 else "SLICE"
        tb = stream.time_base or Fraction(1, 1000)
        if self.start_s is not None and self.start_s > self.track.start_s + SEEK_AFTER_S:
            target = self.track.clock.file_time(self.start_s)
            # backward: the keyframe at or before it, whatever the index holds.
            container.seek(int(target / tb), stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue  # a damaged frame (a crash cut it): the next keyframe recovers
            for frame in frames:
                if frame.pts is not None:
                    yield self.track.clock.at(float(frame.pts * tb)), frame

    def advance(self, t: float) -> tuple[float, av.VideoFrame] | None:
        """The last frame whose time is <= ``t`` (decoding up to it)."""
        if self._frames is None:
            self._frames = self._decode()
        while not self.exhausted:
            if self._next is None:
                try:
                    self._next = next(self._frames)
                except StopIteration:
                    self.exhausted = True
                    self.close()
                    break
            if self._next[0] > t + EPS_S:
                break
            self.current, self._next = self._next, None
            self.serial += 1
        return self.current

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()


# -- audio --------------------------------------------------------------------------------


class AudioReader:
    """One audio track as mono float32 samples at 48 kHz on the session's sample axis."""

    def __init__(self, track: Track) -> None:
        self.track = track
        self._container: Any = None
        self._frames: Iterator[tuple[int, np.ndarray]] | None = None
        # Decoded 20 ms frames waiting to be mixed: (session sample index, samples).
        self._segs: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._end = 0  # where the last one ends
        self.exhausted = False
        self._fresh = True
        self.delay = OPUS_DELAY if "opus" in str(track.entry.get("codec", "")) else 0

    def _decode(self) -> Iterator[tuple[int, np.ndarray]]:
        self._container = container = av.open(str(self.track.path))
        stream = container.streams.audio[0]
        tb = float(stream.time_base or Fraction(1, 1000))
        resampler = None
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue
            for frame in frames:
                if frame.pts is None:
                    continue
                at = self.track.clock.at(frame.pts * tb)
                planes = frame.planes
                if frame.sample_rate == AUDIO_RATE and frame.format.name == "fltp":
                    # Views of the decoder's planes (they keep the frame alive: no copy);
                    # stereo is averaged.
                    n = frame.samples
                    pcm = np.frombuffer(memoryview(planes[0]), np.float32, n)
                    if len(planes) > 1:
                        pcm = (pcm + np.frombuffer(memoryview(planes[1]), np.float32, n)) * 0.5
                else:
                    if resampler is None:
                        resampler = av.AudioResampler("fltp", "mono", AUDIO_RATE)
                    pcm = np.concatenate([f.to_ndarray()[0] for f in resampler.resample(frame)])
                yield round(at * AUDIO_RATE) - self.delay, pcm.astype(np.float32, copy=False)

    def _pull(self) -> bool:
        if self._frames is None:
            self._frames = self._decode()
        try:
            pos, pcm = next(self._frames)
        except StopIteration:
            self.exhausted = True
            self.close()
            return False
        end = self._end
        if self._fresh:
            at = pos
        elif abs(pos - end) <= 96:
            at = end  # contiguous within 2 ms: back to back (no rounding clicks)
        elif pos < end:  # overlaps (a new source re-anchored earlier): drop the overlap
            pcm, at = pcm[end - pos :], end
        else:  # a gap (lost packets, a muted sender): silence in between
            at = pos
        self._fresh = False
        if len(pcm):
            self._segs.append((at, pcm))
            self._end = at + len(pcm)
        return True

    def add_into(self, out: np.ndarray, start: int) -> None:
        """Mix samples [start, start + len(out)) into ``out``; what was read goes."""
        stop = start + len(out)
        while not self.exhausted and self._end < stop:
            self._pull()
        segs = self._segs
        for pos, pcm in segs:
            if pos >= stop:
                break
            lo, hi = max(start, pos), min(stop, pos + len(pcm))
            if hi > lo:
                out[lo - start : hi - start] += pcm[lo - pos : hi - pos]
        while segs and segs[0][0] + len(segs[0][1]) <= stop:
            segs.popleft()

    def finished(self, upto: int) -> bool:
        return self.exhausted and self._end <= upto

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()


class AudioMix:
    """Every audio track summed on the session timeline (silence where none plays)."""

    def __init__(self, tracks: list[Track]) -> None:
        self.pending = sorted((t for t in tracks if t.kind == "audio"), key=lambda t: t.start_s)
        self.live: list[AudioReader] = []

    def read(self, start: int, n: int) -> np.ndarray:
        t_end = (start + n) / AUDIO_RATE
        while self.pending and self.pending[0].start_s - 0.05 <= t_end:
            self.live.append(AudioReader(self.pending.pop(0)))
        out = np.zeros(n, np.float32)
        for reader in list(self.live):
            reader.add_into(out, start)
            if reader.finished(start + n):
                self.live.remove(reader)
        # Several loud voices at once would wrap around: clip instead.
        np.clip(out, -1.0, 1.0, out=out)
        return out

    def close(self) -> None:
        for reader in self.live:
            reader.close()
