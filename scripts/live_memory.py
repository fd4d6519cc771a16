"""What sessions run and evicted leave in a node: its RSS and its state journal.

Runs ``--sessions`` joint reviews through the HTTP API of a real app (memory store and
SQLite record in a temporary data directory, media off): each on a case of its own,
two invitations, one accepted, one cancelled at the end, an opinion, the end. Sessions
leave the store as they are sealed (no grace: time is not waited for) and the sweeper
forgets their cases. Reports the node's RSS and the journal's size before and after,
then the time to open the store again (a restart's replay). Run it on another checkout
(``PYTHONPATH=/path/to/other``) for a baseline.

    PYTHONPATH=. python scripts/live_memory.py --sessions 5000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from jointreview.app import create_app
from signaling.appkeys import STORE
from signaling.auth import TokenService
from signaling.config import Config
from signaling.evict import EVICTOR
from signaling.state import MemoryStore

SECRET = "bench-secret-" + "x" * 40


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def post(
    client: aiohttp.ClientSession, path: str, token: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with client.post(path, json=body, headers=headers) as res:
        assert res.status < 300, await res.text()
        return dict(await res.json())


async def one(client: aiohttp.ClientSession, tokens: TokenService, n: int) -> None:
    clerk = tokens.issue(sub="clerk-01", role="clerk", name="陈晓")
    rev = tokens.issue(
        sub="rev-city-amr-1", role="reviewer", name="r", dept="city-amr", level="city"
    )
    body = {"applicant_name": "广州某贸易有限公司", "matter": "食品经营许可"}
    sid = (await post(client, f"/api/cases/GZ-2025-{n:06d}/sessions", clerk, body))["session_id"]
    inv = await post(client, f"/api/sessions/{sid}/invitations", clerk, {"dept": "city-amr"})
    await post(client, f"/api/sessions/{sid}/invitations", clerk, {"dept": "city-tax"})
    await post(client, f"/api/invitations/{inv['invitation_id']}/accept", rev)
    opinion = {"decision": "materials_missing", "missing": ["营业场所证明"]}
    await post(client, f"/api/sessions/{sid}/opinions", rev, opinion)
    await post(client, f"/api/sessions/{sid}/end", clerk)


async def run(sessions: int, data_dir: Path) -> dict[str, Any]:
    config = Config(data_dir=data_dir, jwt_secret=SECRET, port=0, media_enabled=False)
    tokens = TokenService(config)
    journal = data_dir / "state" / "journal.jsonl"
    server = TestServer(create_app(config))
    await server.start_server()
    app = server.app
    # A plain client: the test client keeps every response it gave (for its cleanup).
    async with aiohttp.ClientSession(base_url=str(server.make_url("/"))) as client:
        evictor = app[EVICTOR]
        evictor.grace_s = 0.0
        if hasattr(evictor, "forget_after_s"):
            evictor.forget_after_s = 0.0
        gc.collect()
        before = {"rss_mb": rss_mb(), "journal_bytes": journal.stat().st_size}
        peak_journal = 0
        for n in range(sessions):
            await one(client, tokens, n)
            if n % 100 == 99:
                await evictor.sweep()
                peak_journal = max(peak_journal, journal.stat().st_size)
                print(
                    f"\r{n + 1}/{sessions} sessions, RSS {rss_mb():.0f} MB, "
                    f"journal {journal.stat().st_size / 1e6:.1f} MB",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        await evictor.sweep()
        await asyncio.sleep(1.0)  # a compaction under way ends
        gc.collect()
        store = app[STORE]
        keys = len(store._docs) + len(store._logs) + len(store._indexes) + len(store._trimmed)  # type: ignore[attr-defined]
        after = {"rss_mb": rss_mb(), "journal_bytes": journal.stat().st_size, "keys": keys}
    await server.close()
    print(file=sys.stderr)
    began = time.perf_counter()
    reopened = MemoryStore(data_dir / "state")
    reopen_s = time.perf_counter() - began
    await reopened.close()
    return {
        "sessions": sessions,
        "before": before,
        "after": after,
        "peak_journal_bytes": peak_journal,
        "rss_growth_mb": round(after["rss_mb"] - before["rss_mb"], 1),
        "reopen_s": round(reopen_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=5000)
    p.add_argument("--json", action="store_true", help="end with a JSON line of the figures")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jr-live-memory-") as tmp:
        result = asyncio.run(run(args.sessions, Path(tmp)))
    if args.json:
        print(json.dumps(result))
    else:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
