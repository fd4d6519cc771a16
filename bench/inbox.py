"""``jointreview bench inbox``: thousands of reviewers idle on their inbox, one department
rung (issue #13, "Redis at city scale").

For each mode (memory; Redis, with a redis-server of its own unless ``--redis-url``) a
real ``jointreview serve`` node is started, ``--sockets`` idle ``/ws`` sockets are opened
with reviewer tokens spread over the directory's departments (``--dept-sockets`` of them
in the rung one) by ``--clients`` client processes (``bench.inbox_client``), and an
invitation to that department is posted ``--rings`` times. Reported per mode: ring
latency p50/p95/max (from the POST to each socket of the department receiving it),
errors (refused sockets, error frames, closed sockets, sockets never rung, failed
POSTs), the node's RSS per socket (RSS delta / sockets), its CPU while the sockets idle,
and, as the same-run baseline, the POST's own time on the node before any socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import aiohttp

from signaling.auth import TokenService
from signaling.config import Config

from .inbox_client import raise_fd_limit

RING_P95_MS = 250.0
KB_PER_SOCKET = 30.0
SECRET = "bench-inbox-secret-" + "x" * 16
RING_WAIT_S = 15.0  # a socket not rung by then counts as an error
ROOT = Path(__file__).resolve().parent.parent


def add_parser(targets: Any) -> None:
    p = targets.add_parser(
        "inbox", help="idle inbox sockets: ring latency to a department, RSS per socket"
    )
    p.add_argument("--sockets", type=int, default=10_000, help="idle reviewer sockets")
    p.add_argument("--dept-sockets", type=int, default=2_000, help="of them, in the rung dept")
    p.add_argument("--rings", type=int, default=10, help="invitations rung to that department")
    p.add_argument("--modes", default="memory,redis", help="memory, redis or both")
    p.add_argument("--redis-url", default="", help="a Redis to use (default: one of its own)")
    p.add_argument("--clients", type=int, default=4, help="client processes holding sockets")
    p.add_argument("--json", action="store_true", help="a JSON summary as stdout's last line")


def say(text: str) -> None:
    print(f"bench inbox: {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench inbox: redis-server is not installed (scripts/setup --test)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    args += ["no", "--dir", str(workdir), "--maxclients", "20000"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_node(workdir: Path, redis_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "JR_JWT_SECRET": SECRET,
        "JR_LOG_LEVEL": "warning",
        "JR_MAX_SOCKETS_PER_ADDRESS": "100000",  # every bench socket comes from 127.0.0.1
        "JR_DISK_MIN_FREE_BYTES": str(16 * 1024 * 1024),
        "JR_NODE_ID": "bench-inbox",
    }
    args = [sys.executable, "-m", "jointreview.cli", "serve", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--data-dir", str(workdir / "data")]
    if redis_url:
        args += ["--redis-url", redis_url]
    log = (workdir / "node.log").open("ab")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=log, cwd=ROOT)
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def departments() -> list[tuple[str, str]]:
    with (ROOT / "signaling" / "directory.toml").open("rb") as f:
        return [(d["id"], d["level"]) for d in tomllib.load(f)["departments"]]


def reviewer_tokens(sockets: int, dept_sockets: int, workdir: Path) -> list[str]:
    """The rung department first (``dept_sockets``), the rest round the others."""
    tokens = TokenService(Config(jwt_secret=SECRET, data_dir=workdir / "keys"))
    depts = departments()
    rung, others = depts[0], depts[1:]
    out = []
    for i in range(sockets):
        dept, level = rung if i < dept_sockets else others[i % len(others)]
        out.append(
            tokens.issue(sub=f"bench-rev-{i}", role="reviewer", dept=dept, level=level, ttl=86400)
        )
    return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


class Clients:
    """The client processes and their share of the sockets."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, url: str, tokens: list[str], n: int) -> tuple[int, list[str]]:
        shares = [tokens[i::n] for i in range(n)]
        for share in shares:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.inbox_client",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
                limit=64 << 20,  # a report of many receipts is one long line
            )
            assert proc.stdin is not None
            proc.stdin.write((json.dumps({"url": url, "tokens": share}) + "\n").encode())
            await proc.stdin.drain()
            self.procs.append(proc)
        ready, errors = 0, []
        progress = [0] * n
        for i, proc in enumerate(self.procs):
            while True:
                doc = await self._line(proc)
                if "progress" in doc:
                    progress[i] = doc["progress"]
                    say(f"  opening sockets: {sum(progress)}/{len(tokens)}")
                    continue
                ready += doc["ready"]
                errors += doc["errors"]
                progress[i] = len(shares[i])
                break
        return ready, errors

    async def _line(self, proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError("a client process ended early")
        doc: dict[str, Any] = json.loads(line)
        return doc

    async def report(self) -> tuple[dict[str, list[float]], list[str], int]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"report\n")
        recv: dict[str, list[float]] = {}
        errors: list[str] = []
        open_ = 0
        for proc in self.procs:
            doc = await self._line(proc)
            for inv, times in doc["recv"].items():
                recv.setdefault(inv, []).extend(times)
            errors += doc["errors"]
            open_ += doc["open"]
        return recv, errors, open_

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.write(b"quit\n")
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def post(http: aiohttp.ClientSession, url: str, token: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as res:
        return res.status, await res.json(content_type=None)


async def ring_all(
    args: argparse.Namespace, url: str, clients: Clients, clerk: str
) -> tuple[list[float], list[float], list[str]]:
    """Every delivery's latency (ms), each ring's p95, and the errors."""
    latencies: list[float] = []
    ring_p95: list[float] = []
    errors: list[str] = []
    dept = departments()[0][0]
    async with aiohttp.ClientSession() as http:
        status, body = await post(http, f"{url}/api/cases/BENCH-INBOX/sessions", clerk, {})
        if status != 201:
            return [], [], [f"session: {status} {body}"]
        sid = body["session_id"]
        for n in range(args.rings):
            t0 = time.time()
            status, body = await post(
                http, f"{url}/api/sessions/{sid}/invitations", clerk, {"dept": dept}
            )
            if status != 201:
                errors.append(f"invitation: {status} {body}")
                continue
            inv = body["invitation_id"]
            got: list[float] = []
            deadline = time.monotonic() + RING_WAIT_S
            while len(got) < args.dept_sockets and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                recv, errs, _ = await clients.report()
                got += recv.get(inv, [])
                errors += errs
            if len(got) < args.dept_sockets:
                errors.append(f"ring {n}: {args.dept_sockets - len(got)} socket(s) never rang")
            ms = [(t - t0) * 1000 for t in got]
            latencies += ms
            ring_p95.append(pct(ms, 0.95) or 0.0)
            say(f"  ring {n + 1}/{args.rings}: {len(got)} rang, p95 {pct(ms, 0.95)} ms")
            await asyncio.sleep(0.5)
    return latencies, ring_p95, errors


async def run_mode(args: argparse.Namespace, mode: str, workdir: Path) -> dict[str, Any]:
    redis_proc = None
    redis_url = ""
    if mode == "redis":
        redis_url = args.redis_url
        if not redis_url:
            redis_proc, redis_url = start_redis(workdir)
    node, url = start_node(workdir, redis_url)
    clients = Clients()
    try:
        tokens = reviewer_tokens(args.sockets, args.dept_sockets, workdir)
        clerk = TokenService(Config(jwt_secret=SECRET, data_dir=workdir / "keys")).issue(
            sub="clerk-01", role="clerk", ttl=86400
        )
        # Baseline: the POST alone on this node, before any socket listens.
        baseline: list[float] = []
        async with aiohttp.ClientSession() as http:
            _, body = await post(http, f"{url}/api/cases/BENCH-BASE/sessions", clerk, {})
            for _ in range(5):
                t0 = time.perf_counter()
                await post(
                    http,
                    f"{url}/api/sessions/{body['session_id']}/invitations",
                    clerk,
                    {"dept": departments()[1][0]},
                )
                baseline.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(1.0)
        log_from = (workdir / "node.log").stat().st_size  # the start's own warnings aside
        rss0 = rss_kb(node.pid)
        say(f"{mode}: opening {args.sockets} sockets ({args.dept_sockets} in one department)")
        t_open = time.monotonic()
        ready, errors = await clients.start(url, tokens, max(1, args.clients))
        open_s = time.monotonic() - t_open
        say(f"{mode}: {ready} sockets open in {open_s:.1f} s; idling 5 s")
        await asyncio.sleep(3.0)
        rss1 = rss_kb(node.pid)
        c0 = cpu_s(node.pid)
        await asyncio.sleep(5.0)
        idle_pct = (cpu_s(node.pid) - c0) / 5.0 * 100
        c1 = cpu_s(node.pid)
        latencies, ring_p95, ring_errors = await ring_all(args, url, clients, clerk)
        ring_cpu_ms = (cpu_s(node.pid) - c1) * 1000 / max(1, args.rings)
        _, late_errors, still_open = await clients.report()
        errors += ring_errors + late_errors
        if still_open < ready:
            errors.append(f"{ready - still_open} socket(s) closed during the run")
        with (workdir / "node.log").open("rb") as f:
            f.seek(log_from)
            node_log = f.read().decode(errors="replace").splitlines()
        logged = [x for x in node_log if "ERROR" in x or "Error:" in x or "WARNING" in x]
        post_ms = statistics.median(baseline)
        p50 = pct(latencies, 0.5)
        return {
            "mode": mode,
            "sockets": args.sockets,
            "sockets_open": ready,
            "dept_sockets": args.dept_sockets,
            "rings": args.rings,
            "ring_ms_p50": p50,
            "ring_ms_p95": pct(latencies, 0.95),
            "ring_ms_max": round(max(latencies), 1) if latencies else None,
            # The median ring's p95: one ring slowed by the machine's other work aside.
            "ring_ms_p95_median_ring": statistics.median(ring_p95) if ring_p95 else None,
            # The node's CPU per ring (ms): its cost, whatever the clients' wait.
            "node_cpu_ms_per_ring": round(ring_cpu_ms, 1),
            "deliveries": len(latencies),
            "errors": len(errors),
            "error_samples": errors[:10],
            "node_log_problems": len(logged),  # warnings and errors the node logged
            "node_log_samples": logged[:5],
            "kb_per_socket": round((rss1 - rss0) / max(1, ready), 1),
            "rss_mb_idle": round(rss1 / 1024, 1),
            "cpu_idle_pct": round(idle_pct, 1),
            "open_s": round(open_s, 1),
            "post_ms_baseline": round(post_ms, 1),
            "ring_p50_vs_baseline": round(p50 / post_ms, 1) if p50 and post_ms else None,
        }
    finally:
        await clients.stop()
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)


def meets(row: dict[str, Any]) -> bool:
    return (
        row["errors"] == 0
        and row["ring_ms_p95"] is not None
        and row["ring_ms_p95"] <= RING_P95_MS
        and row["kb_per_socket"] <= KB_PER_SOCKET
    )


def main(args: argparse.Namespace) -> int:
    hard = raise_fd_limit()
    if hard < args.sockets + 1024:
        say(f"warning: the descriptor limit ({hard}) is low for {args.sockets} sockets")
    rows = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        with tempfile.TemporaryDirectory(prefix="bench-inbox-") as tmp:
            row = asyncio.run(run_mode(args, mode, Path(tmp)))
        rows.append(row)
        say(
            f"{mode}: ring p50 {row['ring_ms_p50']} / p95 {row['ring_ms_p95']} / max "
            f"{row['ring_ms_max']} ms, {row['errors']} error(s), {row['kb_per_socket']} KB "
            f"per socket, idle CPU {row['cpu_idle_pct']} %, node CPU "
            f"{row['node_cpu_ms_per_ring']} ms per ring"
        )
        for sample in row["error_samples"]:
            say(f"  error: {sample}")
    summary = {
        "bench": "inbox",
        "targets": {"ring_ms_p95": RING_P95_MS, "errors": 0, "kb_per_socket": KB_PER_SOCKET},
        "results": rows,
        "ok": all(meets(r) for r in rows),
        "loadavg": os.getloadavg()[0],  # a shared machine: how busy it was at the end
    }
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0
