"""``jointreview bench export``: how fast the composite export runs on this machine.

A recorded session is synthesized once and cached: each participant a real VP8 640x480
30 fps track at ~1 Mbps of webcam-like pictures (a textured background, a moving head,
sensor noise) and an Opus track, written by the recorder's own capture code with its
track index. It is then exported with the configured output (default: what a server uses)
pinned to one CPU with one thread, then with every core, ``--runs`` times each.

Reported: seconds of content per second of CPU on one core (pinned, so CPU time and
wall time agree on an idle machine; the CPU figure is the one that stays honest when
other work shares the machine), content per wall second with all cores, the output's
bitrate, the per-stage profile (wall seconds of the main thread), and the load average,
since a busy machine slows every figure. Medians over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

CACHE_VERSION = 3  # 2: a keyframe every 10 s, as the recorder asks; 3: counted


def add_parser(targets: Any) -> None:
    p = targets.add_parser(
        "export", help="composite export: x real time on one core and on all, bitrate"
    )
    p.add_argument("--participants", type=int, default=4, help="parties (VP8 + Opus each)")
    p.add_argument("--seconds", type=float, default=120.0, help="length of the session")
    p.add_argument("--runs", type=int, default=1, help="runs per configuration (medians)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--preset", default="ultrafast")
    p.add_argument("--kbps", type=int, default=900, help="video bitrate ceiling")
    p.add_argument("--cache", help="where synthesized sessions are kept")
    p.add_argument("--json", action="store_true", help="a JSON summary as the last line")


def _cache_root(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jointreview" / "bench-export"


def session(root: Path, participants: int, seconds: float, say: Any) -> Path:
    """The synthesized session (made on first use, then reused)."""
    from recording import track_index

    from .recorded_sessions import Party, synthesize

    directory = root / f"v{CACHE_VERSION}-p{participants}-s{seconds:g}"
    index = track_index.load(directory) if directory.is_dir() else None
    if index is not None and all((directory / t["file"]).is_file() for t in index["tracks"]):
        say(f"synthesized session: {directory} (cached)")
        return directory
    names = ["陈晓", "李明", "王芳", "张伟", "刘洋", "赵敏", "孙丽", "周杰"]
    depts = [None, "city-amr", "city-tax", "district-amr"]
    parties = [
        Party(
            n + 1,
            names[n % len(names)],
            dept=depts[n % len(depts)],
            role="clerk" if n == 0 else "reviewer",
            width=640,
            height=480,
            content="camera",
            video_kbps=1000,
        )
        for n in range(participants)
    ]
    say(f"synthesizing a {participants}-party session of {seconds:g} s into {directory} ...")
    t0 = time.perf_counter()
    synthesize(
        directory,
        parties,
        seconds,
        case_id="BENCH-1",
        session_id="s_bench",
        on_party=lambda n: say(f"  party {n + 1}/{participants} encoded"),
    )
    say(f"  done in {time.perf_counter() - t0:.0f} s")
    return directory


def _run(directory: Path, options: Any, cpus: set[int] | None, label: str) -> dict[str, Any]:
    from tqdm import tqdm

    from recording.compose import render

    before = os.sched_getaffinity(0)
    bar: Any = None

    def progress(done: float, total: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=round(total, 1), unit="s", desc=label, leave=False)
        bar.n = round(done, 1)
        bar.refresh()

    out = directory.parent / f"{directory.name}-out.mp4"
    try:
        if cpus is not None:
            # Threads started from here on (the encoder's) inherit the pinning.
            os.sched_setaffinity(0, cpus)
        result = render(directory, out, options, progress)
    finally:
        os.sched_setaffinity(0, before)
        if bar is not None:
            bar.close()
    out.unlink(missing_ok=True)
    return result


def _median_profile(results: list[dict[str, Any]]) -> dict[str, float]:
    keys = results[0]["profile"].keys()
    return {k: round(statistics.median(r["profile"][k] for r in results), 3) for k in keys}


def main(args: argparse.Namespace) -> int:
    from recording.compose import Options

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    directory = session(_cache_root(args.cache), args.participants, args.seconds, say)
    cores = sorted(os.sched_getaffinity(0))
    load_before = os.getloadavg()
    base = dict(
        width=args.width,
        height=args.height,
        fps=args.fps,
        preset=args.preset,
        video_kbps=args.kbps,
    )
    one, every = [], []
    for run in range(args.runs):
        one.append(_run(directory, Options(**base, threads=1), {cores[-1]}, f"1 core #{run + 1}"))
        r = one[-1]
        say(f"  1 core, run {run + 1}: {r['duration_s'] / r['cpu_s']:.2f}x (per CPU second)")
        label = f"{len(cores)} cores #{run + 1}"
        every.append(_run(directory, Options(**base, threads=len(cores)), None, label))
        r = every[-1]
        say(f"  {len(cores)} cores, run {run + 1}: {r['duration_s'] / r['wall_s']:.2f}x (wall)")
    content = one[0]["duration_s"]
    x1_cpu = statistics.median(content / r["cpu_s"] for r in one)
    x1_wall = statistics.median(content / r["wall_s"] for r in one)
    xall = statistics.median(content / r["wall_s"] for r in every)
    result = {
        "participants": args.participants,
        "content_s": content,
        "output": f"{args.width}x{args.height}@{args.fps} {args.preset} <= {args.kbps} kbps",
        "runs": args.runs,
        "cores": len(cores),
        "x_realtime_1core": round(x1_cpu, 2),
        "x_realtime_1core_wall": round(x1_wall, 2),
        "x_realtime_all_cores": round(xall, 2),
        "all_cores_speedup": round(xall / x1_cpu, 2),
        "all_cores_parts": every[0].get("parts", 1),  # processes the export was split over
        "output_kbps": round(statistics.median(r["kbps"] for r in one), 1),
        "profile": _median_profile(one),
        "profile_all_cores": _median_profile(every),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    say(
        f"content {content:.0f} s, {args.participants} parties -> {result['output']}\n"
        f"one core:  {x1_cpu:.2f}x real time per CPU second ({x1_wall:.2f}x wall)\n"
        f"{len(cores)} cores: {xall:.2f}x real time ({result['all_cores_speedup']}x one core, "
        f"in {result['all_cores_parts']} parts)\n"
        f"output {result['output_kbps']} kbps; profile (s, one core): {result['profile']}\n"
        f"load average before {result['load_avg_before']}, after {result['load_avg_after']}"
    )
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    return 0
