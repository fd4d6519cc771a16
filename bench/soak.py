"""``jointreview bench soak``: S six-party sessions forwarded for a long time, and whether
the server grows.

It runs ``bench sfu``'s meeting scenario (a real ``jointreview serve`` process, forward
mode, load-generator processes of aiortc participants sending pre-encoded media) with one
window as long as the soak. Every ``--interval`` seconds it samples the server process:
resident memory, open file descriptors, threads and the event loop's asyncio tasks, as
the process itself reports them in ``/healthz`` (an admin's token adds them), and the
same first three summed over the server's process tree from /proc (media workers, when a
node has them). At the end each quantity gets its least-squares slope per hour, over the
whole soak and over its second half (after warm-up effects such as the allocator's first
growth), with its start and end values; the window's frame rate and freezes say whether
the media kept flowing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from .sfu import Bench
from .sfu_processes import BenchError, Generator
from .sfu_report import MEETING_SIZE, Case, Row

QUANTITIES = ("rss_bytes", "fds", "threads", "tasks", "tree_rss_bytes", "tree_fds", "tree_threads")
# A quantity is called flat when its settled slope stays under this share of its mean
# per hour (and, for counts, under this many per hour): growth a day of service would not
# notice. The figures are reported whatever the verdict.
FLAT_SHARE_PER_HOUR = 0.02
FLAT_COUNT_PER_HOUR = 2.0


def add_parser(targets: Any) -> None:
    p = targets.add_parser(
        "soak", help="S six-party sessions for a long time: server RSS, fds, tasks, threads"
    )
    p.add_argument("--seconds", type=float, default=1800.0, help="how long to soak")
    p.add_argument("--sessions", type=int, default=4, help="six-party sessions")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--json", action="store_true", help="a JSON summary as stdout's last line")


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mt) * (v - mv) for t, v in points)
    return cov / var * 3600


def _proc_tree(pid: int) -> list[int]:
    """The process and its live descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(text[text.rindex(")") + 2 :].split()[1])
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(q for q, parent in parents.items() if parent == p)
    return tree


def tree_figures(pid: int) -> dict[str, int]:
    """RSS, open descriptors and threads summed over a process tree, from /proc."""
    rss = fds = threads = 0
    pids = _proc_tree(pid)
    for p in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "VmRSS":
                    rss += int(value.split()[0]) * 1024
                elif key == "Threads":
                    threads += int(value)
        with contextlib.suppress(OSError):
            fds += len(os.listdir(f"/proc/{p}/fd"))
    return {"tree_rss_bytes": rss, "tree_fds": fds, "tree_threads": threads, "processes": len(pids)}


def trend(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    points = [(float(s["t"]), float(s[key])) for s in samples if s.get(key) is not None]
    if not points:
        return {"start": None, "end": None, "slope_per_hour": None, "settled_slope_per_hour": None}
    half = points[len(points) // 2 :]
    slope, settled = slope_per_hour(points), slope_per_hour(half)
    mean = sum(v for _, v in half) / len(half)
    bound = max(FLAT_SHARE_PER_HOUR * mean, 0.0 if key.endswith("bytes") else FLAT_COUNT_PER_HOUR)
    return {
        "start": points[0][1],
        "end": points[-1][1],
        "min": min(v for _, v in points),
        "max": max(v for _, v in points),
        "slope_per_hour": None if slope is None else round(slope, 2),
        "settled_slope_per_hour": None if settled is None else round(settled, 2),
        "flat": settled is not None and abs(settled) <= bound,
        # Only growth is a leak; a fall is load that went away (peers that ended).
        "grows": settled is not None and settled > bound,
    }


class Soak(Bench):
    """``bench sfu``'s meeting run whose one window is the soak, sampled as it goes."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        super().__init__(args, out)
        self.interval = float(args.interval)
        self.samples: list[dict[str, Any]] = []

    async def sample_once(self, http: aiohttp.ClientSession, pid: int, t: float) -> None:
        from signaling.auth import TokenService
        from signaling.config import Config

        tokens = TokenService(Config(data_dir=self.tmp, jwt_secret=self.secret))
        admin = tokens.issue(sub="bench-soak", role="admin", ttl=60)
        sample: dict[str, Any] = {"t": round(t, 1), **tree_figures(pid)}
        try:
            async with http.get(
                f"{self.url}/healthz", headers={"Authorization": f"Bearer {admin}"}
            ) as res:
                figures = (await res.json()).get("process") or {}
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            self.say(f"soak: /healthz did not answer ({exc})")
            figures = {}
        for key in ("rss_bytes", "fds", "threads", "tasks"):
            sample[key] = figures.get(key)
        self.samples.append(sample)
        rss = (sample["rss_bytes"] or 0) / 1e6
        self.say(
            f"soak {t:5.0f}s/{self.seconds:g}s: server RSS {rss:.1f} MB, fds {sample['fds']}, "
            f"tasks {sample['tasks']}, threads {sample['threads']} "
            f"(tree: {sample['processes']} processes, {sample['tree_rss_bytes'] / 1e6:.1f} MB)"
        )

    async def sampler(self, pid: int) -> None:
        began = time.monotonic()
        async with aiohttp.ClientSession() as http:
            while True:
                await self.sample_once(http, pid, time.monotonic() - began)
                await asyncio.sleep(self.interval - (time.monotonic() - began) % self.interval)

    async def measure(
        self, case: Case, server_pid: int, gens: list[Generator], notes: list[str], ready: str
    ) -> Row:
        task = asyncio.create_task(self.sampler(server_pid))
        try:
            return await super().measure(case, server_pid, gens, notes, ready)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def soak(self) -> dict[str, Any]:
        sessions = int(self.args.sessions)
        case = Case("meeting", "forward", sessions * MEETING_SIZE, sessions, sessions)
        self.say(
            f"soak: {sessions} six-party sessions for {self.seconds:g}s, a sample every "
            f"{self.interval:g}s; {os.cpu_count()} cores, load "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        self.prepare_media(MEETING_SIZE)
        row = await self.run_case(case)
        return {
            "sessions": sessions,
            "seconds": self.seconds,
            "interval_s": self.interval,
            "samples": len(self.samples),
            "trends": {k: trend(self.samples, k) for k in QUANTITIES},
            "media": asdict(row),
            "series": self.samples,
        }


def report(summary: dict[str, Any], out: TextIO) -> None:
    print(
        f"soak: {summary['sessions']} six-party sessions, {summary['seconds']:g}s, "
        f"{summary['samples']} samples",
        file=out,
    )
    print(f"{'quantity':16} {'start':>14} {'end':>14} {'slope/h':>12} {'2nd half/h':>12}", file=out)
    for key, t in summary["trends"].items():
        if t["start"] is None:
            continue
        verdict = "flat" if t["flat"] else "GROWS" if t["grows"] else "falls"
        scale, name = (1e6, key.replace("bytes", "MB")) if key.endswith("bytes") else (1, key)
        slope, settled = t["slope_per_hour"], t["settled_slope_per_hour"]
        print(
            f"{name:16} {t['start'] / scale:14.1f} {t['end'] / scale:14.1f} "
            f"{'-' if slope is None else f'{slope / scale:.2f}':>12} "
            f"{'-' if settled is None else f'{settled / scale:.2f}':>12}  {verdict}",
            file=out,
        )
    media = summary["media"]
    if media["delivered"] < 0.9:
        print(
            f"NOTE: only {media['delivered']:.0%} of the packets that should have been forwarded "
            "were: peer connections ended during the soak (the server's log says why; on a "
            "machine too loaded for the load generators, ICE consent expires)",
            file=out,
        )
    print(
        f"media over the soak: server {media['cpu_pct']}% of a core, fps min {media['fps_min']}, "
        f"frozen streams {media['frozen_streams']}, decode errors {media['decode_errors']}",
        file=out,
    )


def main(args: argparse.Namespace) -> int:
    human = sys.stderr if args.json else sys.stdout
    if args.seconds <= 0 or args.interval <= 0 or args.interval > args.seconds:
        print(
            "jointreview bench soak: give --seconds > 0 and 0 < --interval <= --seconds",
            file=sys.stderr,
        )
        return 2
    if not 1 <= args.sessions <= 50:
        print("jointreview bench soak: --sessions between 1 and 50", file=sys.stderr)
        return 2
    soak = Soak(args, human)
    try:
        summary = asyncio.run(soak.soak())
    except BenchError as exc:
        print(f"jointreview bench soak: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jointreview bench soak: interrupted; stopped everything", file=sys.stderr)
        return 130
    finally:
        soak.kill_all()
    print(file=human)
    report(summary, human)
    if args.json:
        print(json.dumps(summary), flush=True)
    return 0
