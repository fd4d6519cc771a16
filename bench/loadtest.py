"""``jointreview loadtest``: load a running deployment as a city's people would, and say
how it held (in the manner of LiveKit's ``lk load-test``).

Against any node's URL, with the deployment's JWT secret (it signs its own identities)
or a file of tokens made for it (``jointreview token``, one a line), it:

1. opens M idle inbox sockets (``/ws``) of reviewers spread over the deployment's
   departments (``/ui/departments.json``), and keeps them open;
2. has S clerks each start a case session and invite five departments; every idle socket
   of an invited department should ring (an ``invitation`` message): ring latency is the
   time from the invitation's request to each ring;
3. fills each session with six participants (the clerk and a reviewer of each invited
   department): synthetic aiortc participants (``bench.bot.Bot``) in participant
   processes (``bench.loadtest_media``) sending pre-encoded VP8 + Opus, receiving the
   other five;
4. measures a window of T seconds: per received track frame rate, bitrate, loss and
   freezes; join times; then leaves, ends the sessions and closes the sockets.

The report (``bench.loadtest_report``) has join time p50/p95, per-track figures, ring
latency p50/p95/max and errors by kind; with a JWT secret also the server process's own
figures before and after (``/healthz`` for an admin). Sizes are bounded (``--max-*``) and
so is the time: setup, window and teardown each have a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .loadtest_idle import IdleSockets
from .loadtest_report import report, summarise
from .loadtest_tokens import Identities, TokenError
from .sfu_processes import BenchError, Generator, die_with_parent, open_log, spawn_speaking, tail

PARTY = 6  # a clerk and five reviewers
PER_PROCESS = 12  # participants per participant process
JOIN_TIMEOUT = 90.0
WARMUP_MAX = 20.0
RESULT_TIMEOUT = 30.0
SETTLE_S = 3.0  # after the teardown, before the server's figures are read again
ROOT = Path(__file__).resolve().parent.parent


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "loadtest", help="load a running deployment: six-party sessions, idle inbox sockets"
    )
    p.add_argument("--url", required=True, help="http(s)://host:port of a jointreview node")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--jwt-secret-file", help="the deployment's jwt_secret, to sign identities")
    who.add_argument("--token-file", help="tokens made for the deployment, one a line")
    p.add_argument("--sessions", type=int, default=1, help="six-party sessions")
    p.add_argument("--idle-sockets", type=int, default=0, help="idle reviewers' inbox sockets")
    p.add_argument("--seconds", type=float, default=30.0, help="the measured window")
    p.add_argument("--json", action="store_true", help="a JSON summary as stdout's last line")
    p.add_argument("--processes", type=int, default=0, help="participant processes (0: auto)")
    p.add_argument(
        "--bind",
        default="",
        help="source addresses to spread the idle sockets over, comma-separated (a node "
        "admits max_sockets_per_address sockets from one address)",
    )
    p.add_argument("--connect-concurrency", type=int, default=50, help="sockets opening at once")
    p.add_argument("--max-sessions", type=int, default=50, help="refuse more sessions than this")
    p.add_argument("--max-idle-sockets", type=int, default=20_000, help="refuse more sockets")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="refuse a longer window")


def check_sizes(args: argparse.Namespace) -> str | None:
    """Why these sizes are refused, or None."""
    if not 1 <= args.sessions <= args.max_sessions:
        return f"--sessions must be between 1 and --max-sessions ({args.max_sessions})"
    if not 0 <= args.idle_sockets <= args.max_idle_sockets:
        return f"--idle-sockets must be between 0 and --max-idle-sockets ({args.max_idle_sockets})"
    if not 0 < args.seconds <= args.max_seconds:
        return f"--seconds must be above 0 and at most --max-seconds ({args.max_seconds:g})"
    if not 1 <= args.connect_concurrency <= 1000:
        return "--connect-concurrency must be between 1 and 1000"
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--url must be http(s)://host[:port], not {args.url!r}"
    need = args.idle_sockets + args.sessions * PARTY * 4 + 256  # sockets, pipes, margin
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need > soft:
        if need > hard:
            return f"{need} file descriptors needed, the limit is {hard} (ulimit -n)"
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return None


class LoadTest:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = args.url.rstrip("/")
        self.began = time.monotonic()
        self.errors: Counter[str] = Counter()
        self.tmp = Path(tempfile.mkdtemp(prefix="jr-loadtest-"))
        self.tag = secrets.token_hex(3)  # this run's identities and case ids
        self.gens: list[Generator] = []
        self.sessions: list[str] = []
        self.members: list[dict[str, Any]] = []
        self.server: dict[str, Any] = {}
        self.loadavg_start = round(os.getloadavg()[0], 2)

    def say(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f}s] {msg}", file=sys.stderr, flush=True)

    # -- the deployment --------------------------------------------------------------------
    async def server_figures(self, http: aiohttp.ClientSession, ids: Identities) -> Any:
        admin = ids.admin()
        headers = {"Authorization": f"Bearer {admin}"} if admin else {}
        async with http.get(f"{self.url}/healthz", headers=headers) as res:
            if res.status not in (200, 503):
                raise BenchError(f"{self.url}/healthz answered {res.status}")
            body = await res.json()
            return body.get("process")

    async def departments(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        async with http.get(f"{self.url}/ui/departments.json") as res:
            if res.status != 200:
                raise BenchError(f"/ui/departments.json answered {res.status}")
            depts = list((await res.json())["departments"])
        if not depts:
            raise BenchError("the deployment has no departments to invite")
        return depts

    async def post(self, http: aiohttp.ClientSession, path: str, token: str, body: Any) -> Any:
        async with http.post(
            f"{self.url}{path}", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as res:
            if res.status not in (200, 201):
                self.errors[f"http_{res.status}"] += 1
                raise BenchError(f"POST {path}: {res.status} {(await res.text())[:300]}")
            return await res.json()

    async def start_sessions(
        self, http: aiohttp.ClientSession, ids: Identities, idle: IdleSockets
    ) -> None:
        """Each clerk starts a session and invites its departments; the invitations ring."""
        for s in range(self.args.sessions):
            clerk = ids.clerk(s)
            created = await self.post(
                http,
                f"/api/cases/LT-{self.tag}-{s + 1}/sessions",
                clerk,
                {"matter": "jointreview loadtest"},
            )
            sid = str(created["session_id"])
            self.sessions.append(sid)
            for dept in ids.session_departments(s):
                idle.expect_ring(sid, dept["id"])
                body = {"dept": dept["id"], "level": dept.get("level")}
                await self.post(http, f"/api/sessions/{sid}/invitations", clerk, body)
        self.say(f"{len(self.sessions)} sessions started, {idle.expected} rings expected")

    # -- participants ----------------------------------------------------------------------
    async def spawn_participants(self, ids: Identities, media_dir: Path) -> None:
        people = [
            {**p, "session_id": self.sessions[p["session"]], "expect_video": PARTY - 1}
            for p in ids.participants()
        ]
        count = self.args.processes or min(
            max(1, -(-len(people) // PER_PROCESS)), os.cpu_count() or 1
        )
        host = urlsplit(self.url).hostname or ""
        from signaling.config import is_loopback

        env = {k: v for k, v in os.environ.items() if not k.startswith("JR_")}
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)
        for n in range(count):
            spec = {
                "url": self.url,
                "t0": float(int(time.time())),
                "media_dir": str(media_dir),
                "host_candidates": ["127.0.0.1"] if is_loopback(host) else [],
                "participants": people[n::count],
            }
            log = self.tmp / f"participants{n}.log"
            with open_log(log) as fh:
                proc = await spawn_speaking(
                    [sys.executable, "-m", "bench.loadtest_media"],
                    env,
                    fh,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            gen = Generator(proc, log)
            gen.send(spec)
            self.gens.append(gen)
        self.say(f"{len(people)} participants joining from {count} processes")
        await asyncio.gather(*(self.collect_joins(g) for g in self.gens))
        ok = sum(1 for m in self.members if m["ok"])
        self.say(f"{ok} of {len(people)} participants joined")

    async def collect_joins(self, gen: Generator) -> None:
        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:
            try:
                event = await asyncio.wait_for(gen.events.get(), deadline - time.monotonic())
            except TimeoutError:
                raise BenchError(f"participants did not join in {JOIN_TIMEOUT:.0f}s") from None
            if event["event"] == "joined":
                return
            if event["event"] == "member":
                self.members.append(event)
                if len(self.members) % PER_PROCESS == 0:
                    self.say(f"{len(self.members)} participants have tried to join")
                if not event["ok"]:
                    self.errors[str(event["kind"])] += 1
                    self.say(f"{event['sub']} did not join: {event['message']}")
                continue
            raise BenchError(f"a participant process failed: {event}\n{tail(gen.log)}")

    async def warm_up(self) -> None:
        began = shown = time.monotonic()
        while True:
            ready, total = sum(g.ready for g in self.gens), sum(g.total for g in self.gens)
            if all(g.reported for g in self.gens) and ready == total:
                self.say(f"every participant receives its {PARTY - 1} videos")
                return
            if time.monotonic() - began > WARMUP_MAX:
                self.say(f"only {ready} of {total} receive every video; measuring anyway")
                return
            if time.monotonic() - shown >= 3:
                shown = time.monotonic()
                self.say(f"{ready} of {total} participants receive every video")
            await asyncio.sleep(0.2)

    async def window(self, idle: IdleSockets) -> list[dict[str, Any]]:
        start = time.time() + 0.5
        end = start + float(self.args.seconds)
        for g in self.gens:
            g.send({"cmd": "window", "start": start, "end": end})
        self.say(f"measuring {self.args.seconds:g}s")
        while (left := end - time.time()) > 0.5:
            await asyncio.sleep(min(5.0, left))
            self.say(
                f"window {min(self.args.seconds, time.time() - start):5.0f}s/"
                f"{self.args.seconds:g}s: {idle.open_count()} idle sockets open, "
                f"{len(idle.latencies)}/{idle.expected} rings"
            )
        results = await asyncio.gather(*(g.expect("result", RESULT_TIMEOUT) for g in self.gens))
        tracks = [t for r in results for t in r["tracks"]]
        timings = {m["sub"]: m for r in results for m in r["members"]}
        for m in self.members:  # the time to every video, known by the window's end
            if m["ok"] and m["sub"] in timings:
                m["media_ms"] = timings[m["sub"]].get("media_ms")
                state = timings[m["sub"]].get("pc")
                if state != "connected":  # its media ended before the window did
                    self.errors[f"peer_{state}"] += 1
        return tracks

    # -- the whole run ---------------------------------------------------------------------
    async def run(self, ids: Identities) -> dict[str, Any]:
        from . import preencoded

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            try:
                before = await self.server_figures(http, ids)
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise BenchError(f"{self.url} does not answer: {exc}") from None
            ids.set_departments(await self.departments(http))
            media_dir = preencoded.cache_dir()
            fresh = sum(not preencoded.load_video(i, media_dir)[1] for i in range(PARTY))
            preencoded.load_audio(media_dir)
            self.say(f"media: {PARTY} VP8 loops + Opus in {media_dir} ({fresh} encoded now)")
            idle = IdleSockets(self.url, ids.idle(), self.args, self.say, self.errors)
            try:
                await idle.open_all()
                await self.start_sessions(http, ids, idle)
                await self.spawn_participants(ids, media_dir)
                await self.warm_up()
                tracks = await self.window(idle)
                await idle.wait_rings(5.0)
                sockets = idle.figures()
                after = await self.server_figures(http, ids)
            finally:
                await self.stop_participants()
                await self.end_sessions(http, ids)
                await idle.close_all()
            # What the load left behind once it is gone (a leak stays): the sessions'
            # ends settle in the background, give them a moment.
            await asyncio.sleep(SETTLE_S)
            settled = await self.server_figures(http, ids)
        self.server = {"before": before, "after": after, "settled": settled}
        session_of = {p["sub"]: self.sessions[p["session"]] for p in ids.participants()}
        joined = Counter(session_of[m["sub"]] for m in self.members if m["ok"])
        return summarise(
            plan={
                "url": self.url,
                "sessions": self.args.sessions,
                "party": PARTY,
                "participants": self.args.sessions * PARTY,
                "idle_sockets": self.args.idle_sockets,
                "seconds": float(self.args.seconds),
                # The load generators share this machine: read the figures by its load.
                "machine": {
                    "cores": os.cpu_count(),
                    "loadavg_start": self.loadavg_start,
                    "loadavg_end": round(os.getloadavg()[0], 2),
                },
            },
            members=self.members,
            tracks=tracks,
            rings=idle.latencies,
            sockets=sockets,
            errors=self.errors,
            server=self.server,
            session_members={sid: joined.get(sid, 0) for sid in self.sessions},
        )

    async def stop_participants(self) -> None:
        for g in self.gens:
            g.send({"cmd": "stop"})
        await asyncio.gather(*(self._stop(g) for g in self.gens), return_exceptions=True)

    async def _stop(self, gen: Generator) -> None:
        try:
            await asyncio.wait_for(gen.proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                gen.proc.kill()
            await gen.proc.wait()

    async def end_sessions(self, http: aiohttp.ClientSession, ids: Identities) -> None:
        for s, sid in enumerate(self.sessions):
            with contextlib.suppress(BenchError, aiohttp.ClientError, OSError):
                await self.post(http, f"/api/sessions/{sid}/end", ids.clerk(s), {})

    def kill_all(self) -> None:
        for g in self.gens:
            with contextlib.suppress(ProcessLookupError):
                g.proc.kill()


def main(args: argparse.Namespace) -> int:
    human = sys.stderr if args.json else sys.stdout
    refused = check_sizes(args)
    if refused:
        print(f"jointreview loadtest: {refused}", file=sys.stderr)
        return 2
    try:
        ids = Identities.from_args(args, PARTY)
    except TokenError as exc:
        print(f"jointreview loadtest: {exc}", file=sys.stderr)
        return 2
    test = LoadTest(args)
    ids.tag = test.tag
    # Setup (sockets at the connect rate, joins), the window, teardown: bounded together.
    budget = args.seconds + 180 + args.idle_sockets / 20
    try:
        summary = asyncio.run(asyncio.wait_for(test.run(ids), budget))
    except TimeoutError:
        print(f"jointreview loadtest: not done in {budget:.0f}s; stopped", file=sys.stderr)
        return 1
    except BenchError as exc:
        print(f"jointreview loadtest: {exc}", file=sys.stderr)
        return 1
    except TokenError as exc:  # a token file short of some kind, found before any load
        print(f"jointreview loadtest: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jointreview loadtest: interrupted; stopped everything", file=sys.stderr)
        return 130
    finally:
        test.kill_all()
    print(file=human)
    report(summary, human)
    if args.json:
        print(json.dumps(summary), flush=True)
    return 1 if summary["error_count"] else 0
