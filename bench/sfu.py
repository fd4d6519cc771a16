"""``jointreview bench sfu``: the SFU against the transcoding relay, on this machine.

Every size runs a real server process (``jointreview serve``, ``media_mode`` forward or
transcode) and up to two load-generator processes (``bench.sfu_load``, see
``Bench.split``; ``bench.sfu_processes`` talks to them) that join its sessions as aiortc
participants sending pre-encoded VP8 + Opus (``bench.preencoded``). After a warm-up (until
every subscriber receives every video track it should), it measures a steady window: the
server process's CPU (from /proc/<pid>/stat), RTP packets in (sent by publishers) and out
(received by subscribers), the lowest subscriber frame rate, frozen video tracks, and,
from a few probe subscribers that decode, picture errors and end-to-end latency.

Scenarios: ``fanout`` (one publisher, K subscribers) and ``meeting`` (S six-party
sessions, everyone publishing and receiving the other five). ``bench.sfu_report`` turns
the rows into the table, the CPU ratio against the baseline and sessions per core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from . import machine
from .sfu_processes import (
    BenchError,
    Generator,
    cpu_seconds,
    die_with_parent,
    free_port,
    from_histogram,
    open_log,
    spawn_speaking,
    tail,
    udp_drops,
)
from .sfu_report import (
    MEETING_SIZE,
    Case,
    Row,
    load_notes,
    percentile,
    report,
    skipped_text,
    summarise,
)

MODES = ("forward", "transcode")
PROBES = 2  # probe subscribers per size (each decodes up to PROBE_TRACKS video tracks)
PROBE_TRACKS = 2
JOIN_TIMEOUT = 60.0
PUBLISH_TIMEOUT = 60.0
WARMUP_MAX = 10.0  # after publishing: every subscriber should receive video by then
SETTLE = 1.0  # once everyone receives video, before the window opens
RESULT_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
FROZEN_S = 1.0
ROOT = Path(__file__).resolve().parent.parent  # where the signaling and media_server packages are


def parse_sizes(text: str, what: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"{what}: give whole numbers separated by commas, not {text!r}") from None
    if not sizes or any(n < 1 for n in sizes):
        raise BenchError(f"{what}: give at least one size, each at least 1")
    return sorted(set(sizes))


class Bench:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.seconds = float(args.seconds)
        self.tmp = Path(tempfile.mkdtemp(prefix="jr-bench-"))
        self.secret = secrets.token_urlsafe(48)
        self.began = time.monotonic()
        self.pids: list[int] = []
        self.procs: list[asyncio.subprocess.Process] = []
        self.media_dir: Path | None = None
        self.runs = 0
        self.url = ""  # the server of the run under way

    def say(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JR_")}
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)
        return {**env, **extra}

    async def spawn(
        self, argv: list[str], env: dict[str, str], log: Path, events: bool = False
    ) -> Any:
        """Start a child; its stderr (and stdout unless it speaks ``events``) go to log."""
        # start_new_session: Ctrl-C reaches us only; we stop them in order
        kw: dict[str, Any] = {"start_new_session": True, "preexec_fn": die_with_parent}
        with open_log(log) as fh:
            if events:
                proc = await spawn_speaking(argv, env, fh, **kw)
            else:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.PIPE, stdout=fh, stderr=fh, env=env, **kw
                )
        self.procs.append(proc)
        self.pids.append(proc.pid)
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, grace: float = 0.0) -> None:
        """Give it ``grace`` seconds to exit by itself, then SIGTERM, then SIGKILL."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def kill_all(self) -> None:
        """Last resort (synchronous): nothing of ours outlives the benchmark."""
        for pid in self.pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- media ----------------------------------------------------------------------------
    def prepare_media(self, idents: int) -> None:
        from . import preencoded

        for directory in (preencoded.cache_dir(), self.tmp / "media"):
            try:
                took = time.monotonic()
                fresh = 0
                for ident in range(idents):
                    _, cached = preencoded.load_video(ident, directory)
                    fresh += not cached
                preencoded.load_audio(directory)
            except OSError as exc:
                self.say(f"cannot cache media in {directory} ({exc}); trying elsewhere")
                continue
            self.media_dir = directory
            how = f"encoded {fresh} in {time.monotonic() - took:.1f}s" if fresh else "cached"
            self.say(
                f"media: {idents} VP8 {preencoded.WIDTH}x{preencoded.HEIGHT} {preencoded.FPS} fps "
                f"~1 Mbps loops + Opus tone ({how}, {directory})"
            )
            return
        raise BenchError("cannot write the pre-encoded media anywhere")

    # -- one size -------------------------------------------------------------------------
    async def start_server(self, mode: str, run: Path) -> tuple[Any, str]:
        port = free_port()
        env = self.env(
            {
                "JR_JWT_SECRET": self.secret,
                "JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]',
                "JR_MEDIA_MODE": mode,
                "JR_MEDIA_WORKERS": str(getattr(self.args, "media_workers", 1)),
                # Forwarding alone: the recorder has its own benchmark (bench record).
                "JR_RECORDING_POLICY": "off",
                "JR_LOG_LEVEL": "warning",
                "JR_DEMO_ENABLED": "false",
            }
        )
        argv = [sys.executable, "-m", "jointreview.cli", "serve", "--port", str(port)]
        argv += ["--data-dir", str(run / "data")]
        log = run / "server.log"
        proc = await self.spawn(argv, env, log)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.returncode is not None:
                    raise BenchError(f"the server exited at start; its log ends:\n{tail(log)}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{url}/healthz") as res:
                        if res.status == 200:
                            return proc, url
                if time.monotonic() > deadline:
                    raise BenchError(f"the server did not answer in 30s:\n{tail(log)}")
                await asyncio.sleep(0.1)

    def plan(self, case: Case, sessions: list[str], tokens: Any) -> list[dict[str, Any]]:
        people: list[dict[str, Any]] = []

        def person(sub: str, sid: str, ident: int, publish: bool, expect: int) -> None:
            people.append(
                {
                    "sub": sub,
                    "token": tokens.issue(sub=sub, role="clerk", name=sub, ttl=3600),
                    "session_id": sid,
                    "ident": ident,
                    "publish": publish,
                    "expect_video": expect,
                    "probe": False,
                }
            )

        if case.scenario == "fanout":
            person("bench-pub", sessions[0], 0, True, 0)
            for k in range(case.size):
                person(f"bench-sub-{k}", sessions[0], 0, False, 1)
                people[-1]["probe"] = k < PROBES
        else:
            for s, sid in enumerate(sessions):
                for i in range(MEETING_SIZE):
                    person(f"bench-s{s}-p{i}", sid, i, True, MEETING_SIZE - 1)
            people[0]["probe"] = True
            people[-MEETING_SIZE + 3]["probe"] = True  # another process, the last session
        return people

    @staticmethod
    def split(case: Case, people: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Participants per load-generator process (two at most).

        A generator process the server's ``sendto`` wakes costs the server ~30-40 µs of
        CPU here (``bench.machine``), against ~3 µs when it is awake; real subscribers sit
        on other machines and cost it no wakeup. Fanout therefore puts every subscriber in
        one process (each packet wakes one, not two: 17 against 18-19 µs per copy out at
        K=16, measured alternately on a quiet machine) and the publisher in the other.
        In a meeting everyone publishes and each process is awake most of the time:
        there, alternating participants measured a little cheaper than keeping sessions
        together."""
        if case.scenario == "fanout":
            return [share for share in (people[:1], people[1:]) if share]
        count = min(2, len(people))
        return [people[i::count] for i in range(count)]

    async def run_case(self, case: Case) -> Row:
        from signaling.auth import TokenService
        from signaling.config import Config

        self.runs += 1
        run = self.tmp / f"run{self.runs}"
        run.mkdir()
        self.say(f"{case.label}: starting the server")
        server, url = await self.start_server(case.mode, run)
        self.url = url
        gens: list[Generator] = []
        try:
            tokens = TokenService(Config(data_dir=run / "data", jwt_secret=self.secret))
            clerk = tokens.issue(sub="bench-clerk", role="clerk")
            sessions = []
            async with aiohttp.ClientSession() as http:
                for s in range(case.sessions):
                    async with http.post(
                        f"{url}/api/cases/BENCH-{s + 1}/sessions",
                        json={"matter": "jointreview bench sfu"},
                        headers={"Authorization": f"Bearer {clerk}"},
                    ) as res:
                        if res.status != 201:
                            raise BenchError(f"creating a session: {res.status} {await res.text()}")
                        sessions.append((await res.json())["session_id"])
            people = self.plan(case, sessions, tokens)
            t0 = float(int(time.time()))
            idents = {p["sub"]: p["ident"] for p in people if p["publish"]}
            for n, share in enumerate(self.split(case, people)):
                spec = {
                    "url": url,
                    "t0": t0,
                    "media_dir": str(self.media_dir),
                    "idents": idents,
                    "probe_tracks": PROBE_TRACKS,
                    "participants": share,
                }
                argv = [sys.executable, "-m", "bench.sfu_load"]
                log = run / f"generator{n}.log"
                proc = await self.spawn(argv, self.env({}), log, events=True)
                gen = Generator(proc, log)
                gen.send(spec)
                gens.append(gen)
            await asyncio.gather(*(g.expect("joined", JOIN_TIMEOUT) for g in gens))
            self.say(f"{case.label}: {len(people)} participants joined; publishing")
            for g in gens:
                g.send({"cmd": "publish"})
            await asyncio.gather(*(g.expect("published", PUBLISH_TIMEOUT) for g in gens))
            notes: list[str] = []
            ready = await self.warm_up(case, gens, notes)
            row = await self.measure(case, server.pid, gens, notes, ready)
            if server.returncode is not None:
                raise BenchError("the server died during the window")
            return row
        except BenchError as exc:
            said = tail(run / "server.log", 25)
            if said:
                raise BenchError(f"{exc}\nthe server's log ends:\n{said}") from None
            raise
        finally:
            for g in gens:
                g.send({"cmd": "stop"})
            await asyncio.gather(
                *(self.stop(g.proc, grace=STOP_TIMEOUT) for g in gens), return_exceptions=True
            )
            await self.stop(server)
            shutil.rmtree(run, ignore_errors=True)

    async def warm_up(self, case: Case, gens: list[Generator], notes: list[str]) -> str:
        began = time.monotonic()
        shown = began
        while True:
            ready = sum(g.ready for g in gens)
            total = sum(g.total for g in gens)
            if time.monotonic() - shown >= 3:
                shown = time.monotonic()
                self.say(f"{case.label}: {ready} of {total} subscribers receive video")
            if ready == total and all(g.reported for g in gens):
                self.say(
                    f"{case.label}: all {total} subscribers receive video "
                    f"({time.monotonic() - began:.1f}s); measuring {self.seconds:g}s"
                )
                await asyncio.sleep(SETTLE)
                return f"{ready}/{total}"
            if time.monotonic() - began > WARMUP_MAX:
                note = f"only {ready} of {total} subscribers received all their video in warm-up"
                notes.append(note)
                self.say(f"{case.label}: {note}; measuring anyway")
                return f"{ready}/{total}"
            await asyncio.sleep(0.1)

    async def measure(
        self, case: Case, server_pid: int, gens: list[Generator], notes: list[str], ready: str
    ) -> Row:
        start = time.time() + 0.5
        end = start + self.seconds
        for g in gens:
            g.send({"cmd": "window", "start": start, "end": end})
        gen_pids = [g.proc.pid for g in gens]
        await asyncio.sleep(max(0.0, start - time.time()))
        pids = [server_pid, *gen_pids]
        cpu0, drops0 = [cpu_seconds(p) for p in pids], [udp_drops(p) for p in pids]
        await asyncio.sleep(max(0.0, end - time.time()))
        cpu1, drops1 = [cpu_seconds(p) for p in pids], [udp_drops(p) for p in pids]
        cpu = cpu1[0] - cpu0[0]
        gen_cpu = [(b - a) / (end - start) * 100 for a, b in zip(cpu0[1:], cpu1[1:], strict=True)]
        drops = [b - a for a, b in zip(drops0, drops1, strict=True)]
        window = end - start
        results = await asyncio.gather(*(g.expect("result", RESULT_TIMEOUT) for g in gens))
        tracks = [t for r in results for t in r["tracks"]]
        video = [t for t in tracks if t["kind"] == "video"]
        fanout = case.size if case.scenario == "fanout" else MEETING_SIZE - 1  # copies/packet
        expected = case.subscribers * (1 if case.scenario == "fanout" else MEETING_SIZE - 1)
        missing = max(0, expected - len(video))
        if missing:
            notes.append(f"{missing} video subscriptions never negotiated")
        latencies = [x for r in results for x in from_histogram(r["latency_hist_ms"])]
        packets_in = sum(int(r["packets_sent"]) for r in results)
        packets_out = sum(int(t["packets"]) for t in tracks)
        fps = [t["frames"] / window for t in video] + [0.0] * missing
        p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
        row = Row(
            scenario=case.scenario,
            mode=case.mode,
            subscribers=case.subscribers,
            sessions=case.sessions,
            cpu_pct=round(cpu / window * 100, 1),
            us_per_packet=round(cpu / packets_out * 1e6, 1) if packets_out else None,
            us_per_ingress_packet=round(cpu / packets_in * 1e6, 1) if packets_in else None,
            fps_min=round(min(fps, default=0.0), 1),
            latency_ms_p50=round(p50, 1) if p50 is not None else None,
            latency_ms_p95=round(p95, 1) if p95 is not None else None,
            decode_errors=sum(int(t["errors"]) for t in tracks)
            + sum(int(r["aiortc_decode_errors"]) for r in results),
            probe_frames_dropped=sum(
                int(t.get("incomplete", 0)) + int(t.get("skipped", 0)) for t in tracks
            ),
            frozen_streams=sum(1 for t in video if t["gap"] > FROZEN_S) + missing,
            packets_in_per_s=round(packets_in / window, 1),
            packets_out_per_s=round(packets_out / window, 1),
            subscriber_streams=case.streams,
            window_s=round(window, 2),
            generator_cpu_pct=round(sum(gen_cpu), 1),
            generator_cpu_max_pct=round(max(gen_cpu), 1),
            server_udp_drops=drops[0],
            generator_udp_drops=sum(drops[1:]),
            ready=ready,
            delivered=round(packets_out / (packets_in * fanout), 3) if packets_in else 0.0,
            publisher_late_max_ms=round(
                max(float(r["publisher_late_max_s"]) for r in results) * 1000, 1
            ),
            loadavg=round(os.getloadavg()[0], 2),
            notes=notes,
        )
        if not latencies:
            notes.append("no probe decoded a picture in the window")
        if row.probe_frames_dropped:
            incomplete = sum(int(t.get("incomplete", 0)) for t in tracks)
            notes.append(
                f"probes left {row.probe_frames_dropped} frames undecoded ({incomplete} "
                "missing packets, the rest complete but waiting for a keyframe)"
            )
        notes.extend(load_notes(row))
        self.say(
            f"{case.label}: server {row.cpu_pct}% of a core, fps min {row.fps_min}, "
            f"{row.packets_out_per_s:.0f} packets/s out"
        )
        return row

    # -- everything -----------------------------------------------------------------------
    def cases(self) -> tuple[list[Case], list[Case]]:
        scenarios = [s.strip() for s in str(self.args.scenarios).split(",") if s.strip()]
        for s in scenarios:
            if s not in ("fanout", "meeting"):
                raise BenchError(f"--scenarios: unknown scenario {s!r}; use fanout, meeting")
        todo: list[Case] = []
        skipped: list[Case] = []
        for scenario in scenarios:
            if scenario == "fanout":
                sizes = parse_sizes(self.args.subscribers, "--subscribers")
            else:
                sizes = parse_sizes(self.args.sessions, "--sessions")
            for size in sizes:
                for mode in MODES:
                    if scenario == "fanout":
                        case = Case(scenario, mode, size, 1, size)
                    else:
                        case = Case(scenario, mode, size * MEETING_SIZE, size, size)
                    if mode == "transcode" and case.streams > self.args.baseline_max_streams:
                        skipped.append(case)
                    else:
                        todo.append(case)
        return todo, skipped

    async def run(self) -> dict[str, Any]:
        todo, skipped = self.cases()
        meeting = any(c.scenario == "meeting" for c in todo)
        self.say(
            f"{len(todo)} runs, {self.seconds:g}s windows; {os.cpu_count()} cores, "
            f"load {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        if skipped:
            self.say("baseline skipped: " + skipped_text(skipped, self.args.baseline_max_streams))
        self.prepare_media(MEETING_SIZE if meeting else 1)
        rows = []
        failed = []
        for case in todo:
            try:
                rows.append(asdict(await self.run_case(case)))
            except BenchError as exc:  # that size is lost; the others still tell something
                self.say(f"{case.label}: FAILED: {exc}")
                failed.append({**asdict(case), "error": str(exc)})
        summary = summarise(rows, skipped, self.args.baseline_max_streams)
        summary["failed"] = failed
        return summary


def main(args: argparse.Namespace) -> int:
    human = sys.stderr if args.json else sys.stdout
    if args.seconds <= 0:
        print("jointreview bench: --seconds must be positive", file=sys.stderr)
        return 2
    bench = Bench(args, human)
    try:
        try:
            _, skipped = bench.cases()  # bad sizes stop us here, before anything starts
        except BenchError as exc:
            print(f"jointreview bench: {exc}", file=sys.stderr)
            return 2
        bench.say("measuring what this machine charges for a wakeup and a sendto")
        costs = machine.measure()
        summary = asyncio.run(bench.run())
        summary["machine"].update(costs)
    except BenchError as exc:
        print(f"jointreview bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jointreview bench: interrupted; stopped everything", file=sys.stderr)
        return 130
    finally:
        bench.kill_all()
    print(file=human)
    report(summary, skipped, args.baseline_max_streams, human)
    if args.json:
        print(json.dumps(summary), flush=True)
    return 1 if summary.get("failed") else 0
