"""A composite export split in parts rendered on a process per core, then joined.

Threads in one interpreter take the export to about 1.8x on two cores and no further
(composing and the hand-overs hold the GIL); processes scale with the cores. Each part
is a stretch of output frames rendered into its own MP4 (video only, pts from 0) by a
worker process: its tiles start decoding at the keyframe before the part's start (the
recorder asks publishers for one every ``recording_keyframe_s``), so a part costs little
more than its own length. Meanwhile this process mixes and encodes the whole audio
(one AAC stream: no seam in the sound). Then the parts' packets are copied, shifted to
their place, and interleaved with the audio into the output: no frame is encoded twice.

Workers come from a ``forkserver`` (this process may run an event loop and threads,
which must not be forked) that has the export's modules loaded, so a worker starts in
milliseconds after the first export.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_EXCEPTION,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from . import compose
from .compose import AudioEncoder, Cancelled, Options, Progress, Session
from .sources import AUDIO_RATE, AudioMix

log = logging.getLogger(__name__)

POLL_S = 0.25


class Unavailable(Exception):
    """This system cannot run worker processes: render in this one instead."""


# Set in each worker by ``_start``: where it reports progress, and the stop flag.
_done: Any = None
_stop: Any = None


def parts(session: Session, options: Options) -> list[tuple[int, int]]:
    """The frame ranges rendered apart: one per core, each at least ``part_min_s``, and
    only as many as the tracks' keyframes allow: a part decodes each of its tiles from
    the keyframe before its start, so keyframes far apart (a recording made before the
    recorder asked for them) would cost more decoding than the part saves."""
    seconds = session.frames / options.fps
    n = min(options.threads, int(seconds // max(options.part_min_s, 1e-3)))
    # A keyframe every half part at least: a part then decodes ~1/4 more on average.
    while n > 1 and not _keyframes_every(session, seconds / n / 2):
        n -= 1
    n = max(1, n)
    bounds = [round(i * session.frames / n) for i in range(n + 1)]
    return list(itertools.pairwise(bounds))


def _keyframes_every(session: Session, interval_s: float) -> bool:
    """Whether every video track longer than ``interval_s`` has a keyframe every
    ``interval_s`` on average (``keyframes`` in the track index: counted by the recorder)."""
    for track in session.tracks:
        span = track.end_s - track.start_s
        if track.kind != "video" or span <= interval_s:
            continue
        count = track.entry.get("keyframes")
        if not isinstance(count, int) or count < 1 or span / count > interval_s:
            return False
    return True


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", "recording.compose", "recording.parallel"])
    return ctx


def prepare() -> None:
    """Start the forkserver now (a server that will export in parts calls this at its
    start): the first export then forks at once instead of starting a Python first.
    Where it cannot start, the exports will say so (and render in one process)."""
    try:
        _context()
        multiprocessing.forkserver.ensure_running()
    except (OSError, ImportError) as exc:
        log.warning("export workers unavailable here (%s): exports render in one process", exc)


def _start(done: Any, stop: Any, nice: int | None) -> None:
    global _done, _stop
    _done, _stop = done, stop
    if nice is not None:
        # As nice as the thread that asked (the server's export thread is niced so that
        # live media keeps its timing): the forkserver's children do not inherit it.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)


def _own_nice() -> int | None:
    """The calling thread's nice value (Linux), or None."""
    if not hasattr(os, "getpriority") or not hasattr(threading, "get_native_id"):
        return None
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except OSError:
        return None


def _part(
    directory: str, path: str, options: Options, index: int, first: int, stop: int
) -> dict[str, Any]:
    """In a worker: render frames ``first`` to ``stop``, video only."""
    cpu0 = time.process_time()

    def progress(seconds: float, _total: float) -> None:
        _done[index] = seconds

    result = compose.render_range(
        Path(directory), Path(path), options, first, stop, False, progress, _stop.is_set
    )
    result["cpu_s"] = round(time.process_time() - cpu0, 3)
    result["nice"] = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else None
    return result


def _audio(session: Session, path: Path, options: Options, cancelled: Callable[[], bool]) -> float:
    """The whole mixed audio into an MP4 of its own; returns the seconds it took."""
    total = session.audio_samples(options.fps)
    mix = AudioMix(session.tracks)
    try:
        with av.open(str(path), "w", format="mp4") as out:
            encoder = AudioEncoder(mix, compose.audio_stream(out, options), total)
            step = 10 * AUDIO_RATE  # ten seconds at a time: a cancel is heard soon
            for upto in range(step, total + step, step):
                if cancelled():
                    raise Cancelled()
                out.mux(encoder.until(min(upto, total), upto >= total))
            return encoder.busy_s
    finally:
        mix.close()


def render_parts(
    directory: Path,
    output: Path,
    options: Options,
    session: Session,
    ranges: list[tuple[int, int]],
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    cpu0 = time.process_time()
    fps = options.fps
    try:
        ctx = _context()
        done = ctx.Array("d", len(ranges), lock=False)
        stop = ctx.Event()
    except (OSError, ImportError) as exc:
        # No POSIX semaphores or shared memory here (some containers): one process.
        raise Unavailable(str(exc)) from exc
    work = output.with_name(f".{output.name}.parts")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # Each worker renders alone on its core; x264 and the decoders stay single-threaded.
    one = replace(options, threads=1, encode_threads=0, decode_threads=0)
    paths = [work / f"part{i}.mp4" for i in range(len(ranges))]
    sound = work / "audio.mp4"
    try:
        with (
            ProcessPoolExecutor(len(ranges), ctx, _start, (done, stop, _own_nice())) as pool,
            ThreadPoolExecutor(1) as here,
        ):
            futures: list[Future[Any]] = [
                pool.submit(_part, str(directory), str(path), one, i, a, b)
                for i, (path, (a, b)) in enumerate(zip(paths, ranges, strict=True))
            ]
            audio = here.submit(_audio, session, sound, options, stop.is_set)
            try:
                _follow([*futures, audio], done, session, progress, cancelled)
            except BaseException:
                stop.set()
                raise
            results = [f.result() for f in futures]
            audio_s = audio.result()
        m0 = time.perf_counter()
        join(paths, [a for a, _ in ranges], sound, output, fps)
        join_s = time.perf_counter() - m0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    profile = {k: round(sum(r["profile"][k] for r in results), 3) for k in results[0]["profile"]}
    profile["audio"] = round(audio_s, 3)
    profile["mux"] = round(profile["mux"] + join_s, 3)
    size = output.stat().st_size
    seconds = session.frames / fps
    return dict(
        results[0],
        duration_s=round(seconds, 3),
        frames=session.frames,
        threads=options.threads,
        parts=len(ranges),
        size=size,
        kbps=round(size * 8 / 1000 / max(seconds, 1e-9), 1),
        wall_s=round(time.perf_counter() - started, 3),
        cpu_s=round(time.process_time() - cpu0 + sum(r["cpu_s"] for r in results), 3),
        workers_nice=sorted({r["nice"] for r in results if r.get("nice") is not None}),
        profile=profile,
    )


def _follow(
    futures: list[Future[Any]],
    done: Any,
    session: Session,
    progress: Progress | None,
    cancelled: Callable[[], bool] | None,
) -> None:
    """Wait for every job; report the parts' progress; stop at a cancel or a failure."""
    while True:
        if cancelled is not None and cancelled():
            raise Cancelled()
        finished, pending = wait(futures, POLL_S, FIRST_EXCEPTION)
        for fut in finished:
            error = fut.exception()
            if error is not None:
                raise error
        if progress is not None:
            seconds = min(sum(done), session.duration) if pending else session.duration
            progress(seconds, session.duration)
        if not pending:
            return


def _ticks(frame: int, fps: int, stream: Any) -> int:
    """Frame ``frame``'s time in ``stream``'s time base."""
    return round(Fraction(frame, fps) / Fraction(stream.time_base))


def _packets(container: Any, stream: Any, shift: int = 0) -> Iterator[Any]:
    for packet in container.demux(stream):
        if packet.dts is None or packet.size == 0:
            continue  # the demuxer's flush packet
        if shift:
            packet.pts += shift
            packet.dts += shift
        yield packet


def join(parts: list[Path], firsts: list[int], sound: Path, output: Path, fps: int) -> None:
    """Copy the parts' video, each moved to its first frame's time, and the audio into
    ``output`` (``+faststart``), interleaved by time; nothing is decoded."""
    with contextlib.ExitStack() as stack:
        ins = [stack.enter_context(av.open(str(p))) for p in parts]
        audio_in = stack.enter_context(av.open(str(sound)))
        videos = [c.streams.video[0] for c in ins]
        header = videos[0].codec_context.extradata
        for path, stream in zip(parts, videos, strict=True):
            # One H.264 stream needs one set of parameter sets: the parts' encoders are
            # configured alike, so theirs are the same.
            if stream.codec_context.extradata != header:
                raise RuntimeError(f"{path.name}: its H.264 parameters differ from part 0's")
        out = stack.enter_context(
            av.open(str(output), "w", format="mp4", options={"movflags": "+faststart"})
        )
        vout = out.add_stream_from_template(videos[0])
        aout = out.add_stream_from_template(audio_in.streams.audio[0])
        video = (
            packet
            for c, s, first in zip(ins, videos, firsts, strict=True)
            for packet in _packets(c, s, _ticks(first, fps, s))
        )
        audio = _packets(audio_in, audio_in.streams.audio[0])

        def when(packet: Any) -> Fraction:
            return Fraction(packet.dts) * packet.time_base

        for packet in heapq.merge(video, audio, key=when):
            packet.stream = vout if packet.stream.type == "video" else aout
            out.mux_one(packet)
