"""Render a recorded session into one MP4: a grid of participants with their names, the
document large when there is one, every voice mixed; H.264 + AAC, ``+faststart``.

For each output frame at session time ``T`` every tile shows its track's last frame at
or before ``T`` (``sources.VideoReader``): black before the person's first frame and after
their track ended, the last frame held through a gap up to ``FREEZE_MAX_S``. Audio is
mixed on the same timeline (``sources.AudioMix``) and encoded in step with the video, so
both streams start at 0 and stay within a frame of each other.

Where the time goes (MEDIA_NOTES, "Composite export"): x264 and VP8 decoding. So the
canvas is yuv420p numpy planes the decoded planes are copied into (no RGB), wrapped by
``VideoFrame.from_numpy_buffer`` without a copy; a tile whose picture did not change since
the last output frame is not touched; and the output's size, rate and preset are options.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from . import track_index
from .layout import DOCUMENT_SOURCES, Label, Labeler, Rect, find_font, fit, plan
from .sources import AUDIO_RATE, EPS_S, AudioMix, Track, VideoReader, usable_tracks

log = logging.getLogger(__name__)

FREEZE_MAX_S = 10.0  # a picture held longer than this (no frame came) turns black
AAC_FRAME = 1024
BATCH = 8  # frames the decoding pool works ahead, per hand-over
BLACK_Y, BLACK_C = 16, 128  # limited range, as the cameras' pictures are
SOURCE_NAMES = {"document": "文件", "screen": "屏幕"}

Progress = Callable[[float, float], None]  # (seconds rendered, seconds in all)


class Cancelled(Exception):
    """The caller asked the render to stop (the worker is shutting down)."""


@dataclass
class Options:
    width: int = 1280
    height: int = 720
    fps: int = 15
    preset: str = "ultrafast"
    crf: int = 27
    video_kbps: int = 900  # a ceiling (VBV): quiet scenes take less
    audio_kbps: int = 64
    threads: int = 1  # x264's threads, and the pool decoding tiles when > 1
    encode_threads: int = 0  # 0: ``threads``
    decode_threads: int = 0  # 0: ``threads``
    keyframe_s: float = 4.0
    # With threads > 1, a session at least twice this long is rendered in parts, one
    # process per core (``parallel``): threads share one interpreter and stop at ~1.8x.
    part_min_s: float = 20.0
    names: bool = True
    font: str | None = None  # None: the first CJK font found on the system
    dept_names: dict[str, str] = field(default_factory=dict)  # dept id -> display name


@dataclass
class Profile:
    """Seconds of work per stage (wall time, summed over the threads doing it; what
    x264's own threads do besides the ``encode`` calls is not seen here)."""

    decode: float = 0.0
    compose: float = 0.0
    encode_video: float = 0.0
    audio: float = 0.0
    mux: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in vars(self).items()}


def describe(owner: dict[str, Any], source: str, dept_names: dict[str, str]) -> str:
    name = str(owner.get("name") or owner.get("sub") or "")
    dept = owner.get("dept")
    text = f"{name} · {dept_names.get(str(dept), str(dept))}" if dept else name
    if source in SOURCE_NAMES:
        text = f"{SOURCE_NAMES[source]} · {text}"
    return text


@dataclass
class Shot:
    """What a tile shows at one instant, ready to copy: ``changed`` False means the
    canvas already shows it (nothing was decoded anew, the name bar is as it was)."""

    changed: bool
    picture: av.VideoFrame | None = None  # already scaled to ``target``
    target: Rect | None = None
    label: bool = False


class Tile:
    """One person's camera (or one document) in its fixed place."""

    def __init__(self, rect: Rect, tracks: list[Track], spans: list[tuple[float, float]]) -> None:
        self.rect = rect
        self.tracks = sorted(tracks, key=lambda t: t.start_s)
        self.spans = spans  # when the person is there (any of their tracks): the name shows
        self.readers: dict[int, VideoReader] = {}
        self.label: Label | None = None
        self.shown: Any = "unset"  # what the last shot showed: (reader, serial, label)
        self.content: Rect | None = None  # where the last picture went
        self.scaler = VideoReformatter()
        self.decode_s = 0.0
        self.scale_s = 0.0

    def present(self, t: float) -> bool:
        return any(a - EPS_S <= t < b for a, b in self.spans)

    def picture(self, t: float) -> tuple[VideoReader, av.VideoFrame] | None:
        """The picture at ``t``; a track's reader starts at the first ``t`` asked for
        (from the keyframe before it: a part of a split export starts mid-track)."""
        active = None
        for i, track in enumerate(self.tracks):
            if track.start_s - EPS_S <= t < track.end_s:
                active = i  # the latest-started live track wins (a republish)
            elif t >= track.end_s and i in self.readers:
                self.readers.pop(i).close()
        if active is None:
            return None
        reader = self.readers.get(active)
        if reader is None:
            # One decoder thread: tiles are decoded in parallel instead.
            reader = self.readers[active] = VideoReader(self.tracks[active], 1, t)
        current = reader.advance(t)
        if current is None or t - current[0] > FREEZE_MAX_S:
            return None
        return reader, current[1]

    def shot(self, t: float, interpolation: Interpolation, threads: int) -> Shot:
        """Decode up to ``t`` and scale the picture to its place (on any thread, but one
        call per tile at a time, in time order)."""
        d0 = time.perf_counter()
        pic = self.picture(t)
        d1 = time.perf_counter()
        self.decode_s += d1 - d0
        label = self.label is not None and self.present(t)
        key = (id(pic[0]), pic[0].serial, label) if pic else (None, 0, label)
        if key == self.shown:
            return Shot(False)
        self.shown = key
        if pic is None:
            return Shot(True, label=label)
        picture = pic[1]
        target = fit(picture.width, picture.height, self.rect)
        if (picture.width, picture.height) != (target.w, target.h) or (
            picture.format.name != "yuv420p"
        ):
            picture = self.scaler.reformat(
                picture, target.w, target.h, "yuv420p", interpolation=interpolation, threads=1
            )
        self.scale_s += time.perf_counter() - d1
        return Shot(True, picture, target, label)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """Views (no copy) of a yuv420p frame's planes, without the row padding."""
    out = []
    for i, plane in enumerate(frame.planes):
        w = frame.width if i == 0 else (frame.width + 1) // 2
        h = frame.height if i == 0 else (frame.height + 1) // 2
        buf = np.frombuffer(memoryview(plane), np.uint8)
        out.append(buf[: plane.line_size * h].reshape(h, plane.line_size)[:, :w])
    return out


def build_tiles(
    tracks: list[Track], options: Options, labeler: Labeler
) -> tuple[list[Tile], list[str]]:
    """A tile per (person, source) that has video, and per person heard but never seen."""
    people: dict[tuple[str, str], list[Track]] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    owners: dict[str, dict[str, Any]] = {}
    for track in sorted(tracks, key=lambda t: t.start_s):
        owner = track.entry.get("owner") or {}
        person = str(owner.get("sub") or track.entry.get("participant_id") or "")
        owners.setdefault(person, owner)
        spans.setdefault(person, []).append((track.start_s, track.end_s))
        if track.kind == "video":
            people.setdefault((person, str(track.entry.get("source") or "camera")), []).append(
                track
            )
    for person in spans:
        if not any(p == person for p, _ in people):
            people[(person, "camera")] = []  # audio only: a black tile with the name
    keys = list(people)
    sources = [s for _, s in keys]
    rects = plan(sources, options.width, options.height)
    tiles = []
    for (person, source), rect in zip(keys, rects, strict=True):
        own = people[(person, source)]
        tile_spans = [(t.start_s, t.end_s) for t in own] if source in DOCUMENT_SOURCES else []
        tile = Tile(rect, own, tile_spans or spans[person])
        if options.names:
            tile.label = labeler.label(describe(owners[person], source, options.dept_names), rect)
        tiles.append(tile)
    return tiles, [describe(owners[p], s, options.dept_names) for p, s in keys]


def video_stream(out: Any, options: Options) -> Any:
    video = out.add_stream("libx264", rate=options.fps)
    video.width, video.height, video.pix_fmt = options.width, options.height, "yuv420p"
    ctx = video.codec_context
    ctx.time_base = Fraction(1, options.fps)
    ctx.gop_size = max(1, round(options.keyframe_s * options.fps))
    ctx.thread_count = options.encode_threads or options.threads
    # Frame threads: PyAV's default (slice) threading gains almost nothing (MEDIA_NOTES).
    ctx.thread_type = "AUTO" if ctx.thread_count > 1 else "SLICE"
    ctx.options = {
        "preset": options.preset,
        "crf": str(options.crf),
        "maxrate": f"{options.video_kbps}k",
        "bufsize": f"{options.video_kbps * 2}k",
    }
    return video


def audio_stream(out: Any, options: Options) -> Any:
    audio = out.add_stream("aac", rate=AUDIO_RATE)
    audio.layout = "mono"  # one mixed voice track: stereo would only double AAC's cost
    audio.bit_rate = options.audio_kbps * 1000
    # The "fast" coder costs half of the default two-loop search (0.22 against 0.44 ms
    # per 1024 samples here); for speech at 64 kbps the difference is not audible.
    audio.codec_context.options = {"aac_coder": "fast"}
    return audio


class AudioEncoder:
    """The mixed voice, encoded in step with the video (AAC frames of 1024 samples)."""

    def __init__(self, mix: AudioMix, stream: Any, total: int) -> None:
        self.mix, self.stream, self.total = mix, stream, total
        self.pos = 0
        self.busy_s = 0.0

    def until(self, upto: int, last: bool) -> list[Any]:
        """Encode whole AAC frames up to sample ``upto`` (``last``: everything left)."""
        t0 = time.perf_counter()
        stop = self.total if last else self.pos + (upto - self.pos) // AAC_FRAME * AAC_FRAME
        packets: list[Any] = []
        if stop > self.pos:
            # One mix for the whole stretch: per-1024-sample reads cost more in Python
            # than the mixing itself.
            pcm = self.mix.read(self.pos, stop - self.pos)
            for i in range(0, len(pcm), AAC_FRAME):
                chunk = pcm[i : i + AAC_FRAME].reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = AUDIO_RATE, self.pos + i
                frame.time_base = Fraction(1, AUDIO_RATE)
                packets += self.stream.encode(frame)
            self.pos = stop
        if last:
            packets += self.stream.encode(None)
        self.busy_s += time.perf_counter() - t0
        return packets


@dataclass
class Session:
    """A recorded session as the export sees it."""

    tracks: list[Track]
    zero: float  # wall clock of time 0
    duration: float
    frames: int  # output frames in all

    def audio_samples(self, fps: int) -> int:
        """The mixed audio's length, matching the frames' (48 kHz samples)."""
        return round(self.frames / fps * AUDIO_RATE)


def load(directory: Path, options: Options) -> Session:
    if options.width % 2 or options.height % 2:
        raise ValueError("the output width and height must be even")
    index = track_index.load(directory)
    if index is None:
        raise FileNotFoundError(f"{directory}: no {track_index.NAME}")
    tracks, zero = usable_tracks(directory, index)
    if not tracks:
        raise ValueError(f"{directory}: no recorded track to export")
    duration = max(t.end_s for t in tracks)
    return Session(tracks, zero, duration, max(1, math.ceil(duration * options.fps - 1e-6)))


def render(
    directory: Path,
    output: Path,
    options: Options | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Render the session recorded in ``directory`` into ``output`` (an MP4): in one
    process, or in parts on a process per core (``parallel``) when it is long enough."""
    from .parallel import Unavailable, parts, render_parts  # (it builds on this module)

    options = options or Options()
    session = load(directory, options)
    ranges = parts(session, options)
    if len(ranges) > 1:
        try:
            return render_parts(directory, output, options, session, ranges, progress, cancelled)
        except Unavailable as exc:
            log.warning("export of %s in one process: %s", directory.name, exc)
    return render_range(
        directory, output, options, 0, session.frames, True, progress, cancelled, session
    )


def render_range(
    directory: Path,
    output: Path,
    options: Options,
    first: int,
    stop: int,
    with_audio: bool = True,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
    session: Session | None = None,
) -> dict[str, Any]:
    """Output frames ``first`` to ``stop`` (pts from 0) into ``output``, with the mixed
    audio when ``with_audio`` (then the range must be the whole session). ``session``:
    as ``load`` gives it, when the caller has it already.

    With ``threads`` > 1, tiles are decoded and scaled, and the audio mixed and encoded,
    on a pool a batch of frames ahead, while this thread composes and hands frames to
    x264's own threads: decoding (the largest stage) would otherwise leave the second
    core idle half the time."""
    session = session or load(directory, options)
    tracks, duration, frames = session.tracks, session.duration, session.frames
    labeler = Labeler(find_font(options.font) if options.names else None)
    tiles, names = build_tiles(tracks, options, labeler)
    prof = Profile()
    w, h, fps = options.width, options.height, options.fps
    canvas = np.empty((h * 3 // 2, w), np.uint8)
    canvas[:h] = BLACK_Y
    canvas[h:] = BLACK_C
    planes = (
        canvas[:h],
        canvas[h : h + h // 4].reshape(h // 2, w // 2),
        canvas[h + h // 4 :].reshape(h // 2, w // 2),
    )
    span = min(duration, stop / fps) - first / fps
    interp = Interpolation.BILINEAR
    workers = options.decode_threads or options.threads
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    batch = BATCH if pool is not None else 1

    def ahead(k0: int) -> tuple[list[Future[list[Shot]]], Future[list[list[Any]]]]:
        """Frames ``k0`` to ``k0 + batch``: each tile's shots and the audio's packets, on
        the pool or done now. Each tile and the audio are one chain (the next batch is
        asked for only once this one was taken), so their order holds; batches keep the
        pool busy while this thread composes and encodes, with few hand-overs."""
        ks = range(k0, min(k0 + batch, stop))
        times = [k / fps for k in ks]

        def shots(tile: Tile) -> list[Shot]:
            return [tile.shot(t, interp, options.threads) for t in times]

        def sound() -> list[list[Any]]:
            """The batch's audio, muxed with its first frame (the muxer interleaves)."""
            end = ks[-1] + 1
            if audio is None:
                return [[] for _ in ks]
            packets = audio.until(round(end / fps * AUDIO_RATE), end == frames)
            return [packets] + [[] for _ in ks[1:]]

        if pool is not None:
            return [pool.submit(shots, tile) for tile in tiles], pool.submit(sound)
        done: list[Future[list[Shot]]] = []
        for tile in tiles:
            fut: Future[list[Shot]] = Future()
            fut.set_result(shots(tile))
            done.append(fut)
        mixed: Future[list[list[Any]]] = Future()
        mixed.set_result(sound())
        return done, mixed

    started = time.perf_counter()
    cpu0 = time.process_time()
    mix = AudioMix(tracks) if with_audio else None
    audio: AudioEncoder | None = None
    out = av.open(str(output), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        vstream = video_stream(out, options)
        if mix is not None:
            audio = AudioEncoder(mix, audio_stream(out, options), session.audio_samples(fps))
        last_report = 0.0
        pending = ahead(first)
        for k0 in range(first, stop, batch):
            current = [f.result() for f in pending[0]]
            sounds = pending[1].result()
            if k0 + batch < stop:
                pending = ahead(k0 + batch)  # decoded and mixed on the pool meanwhile
            for j, packets in enumerate(sounds):
                k = k0 + j
                t1 = time.perf_counter()
                for tile, shots in zip(tiles, current, strict=True):
                    if shots[j].changed:
                        _draw(tile, shots[j], planes)
                frame = av.VideoFrame.from_numpy_buffer(canvas, format="yuv420p")
                frame.pts = k - first
                frame.time_base = Fraction(1, fps)
                t2 = time.perf_counter()
                packets += vstream.encode(frame)
                if k + 1 == stop:
                    packets += vstream.encode(None)
                t3 = time.perf_counter()
                out.mux(packets)
                t4 = time.perf_counter()
                prof.compose += t2 - t1
                prof.encode_video += t3 - t2
                prof.mux += t4 - t3
                if cancelled is not None and cancelled():
                    raise Cancelled()
                if progress is not None and (t4 - last_report >= 0.25 or k + 1 == stop):
                    last_report = t4
                    progress(min(span, (k + 1 - first) / fps), span)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        c0 = time.perf_counter()
        out.close()  # faststart: the moov goes in front (one more pass over the file)
        prof.mux += time.perf_counter() - c0
        for tile in tiles:
            tile.close()
        if mix is not None:
            mix.close()
    prof.audio = audio.busy_s if audio is not None else 0.0
    prof.decode = sum(t.decode_s for t in tiles)
    prof.compose += sum(t.scale_s for t in tiles)
    wall = time.perf_counter() - started
    size = output.stat().st_size
    return {
        "duration_s": round((stop - first) / fps, 3),
        "frames": stop - first,
        "width": w,
        "height": h,
        "fps": fps,
        "preset": options.preset,
        "threads": options.threads,
        "parts": 1,
        "size": size,
        "kbps": round(size * 8 / 1000 / max((stop - first) / fps, 1e-9), 1),
        "wall_s": round(wall, 3),
        "cpu_s": round(time.process_time() - cpu0, 3),
        "tiles": names,
        "tracks": len(tracks),
        "zero": session.zero,
        "names_drawn": labeler.enabled and options.names,
        "profile": prof.as_dict(),
    }


def _draw(tile: Tile, shot: Shot, planes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ys, us, vs = planes
    r = tile.rect
    top = r.y
    if shot.target is not None and shot.target == tile.content:
        # Same place: the picture overwrites itself; only a name bar's rows (blended, so
        # not idempotent) must start from black again.
        top = tile.label.y if tile.label is not None else r.y + r.h
    ys[top : r.y + r.h, r.x : r.x + r.w] = BLACK_Y
    for plane in (us, vs):
        plane[top // 2 : (r.y + r.h) // 2, r.x // 2 : (r.x + r.w) // 2] = BLACK_C
    tile.content = shot.target
    target, picture = shot.target, shot.picture
    if picture is not None and target is not None:
        py, pu, pv = _planes(picture)
        ys[target.y : target.y + target.h, target.x : target.x + target.w] = py
        cy, cx, ch, cw = target.y // 2, target.x // 2, target.h // 2, target.w // 2
        us[cy : cy + ch, cx : cx + cw] = pu
        vs[cy : cy + ch, cx : cx + cw] = pv
    if shot.label and tile.label is not None:
        tile.label.draw(ys, us, vs)
