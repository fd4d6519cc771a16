"""How long the memory store's online journal compaction holds the event loop.

Fills a store with ``--docs`` documents and ``--entries`` log entries (live data), then,
while a writer keeps writing and a ticker measures how late each 1 ms sleep wakes up,
runs: a window without compaction (the baseline), the online compaction, and, for
comparison, the same compaction done on the loop at once. Reports the longest stall of
each (and the snapshot's share: the part of the online compaction on the loop).

    python -m bench.journal_compaction --docs 50000 --entries 200000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from signaling.state import MemoryStore
from signaling.state.memory import JOURNAL

PAD = "材料" * 60


async def ticker(stop: asyncio.Event, gaps: list[float]) -> None:
    while not stop.is_set():
        began = time.perf_counter()
        await asyncio.sleep(0.001)
        gaps.append(time.perf_counter() - began - 0.001)


async def writer(store: MemoryStore, stop: asyncio.Event) -> int:
    n = 0
    while not stop.is_set():
        n += 1
        await store.append("busy", {"i": n, "pad": PAD})
        if n % 500 == 0:
            await store.trim_log("busy", n - 100)
        await asyncio.sleep(0.0005)
    return n


async def measured(store: MemoryStore, work: Any) -> dict[str, Any]:
    stop = asyncio.Event()
    gaps: list[float] = []
    tick = asyncio.create_task(ticker(stop, gaps))
    write = asyncio.create_task(writer(store, stop))
    await asyncio.sleep(0.2)
    gaps.clear()
    began = time.perf_counter()
    await work()
    took = time.perf_counter() - began
    stop.set()
    writes = await write
    await tick
    gaps.sort()
    return {
        "seconds": round(took, 3),
        "max_stall_ms": round(gaps[-1] * 1000, 2) if gaps else 0.0,
        "p99_stall_ms": round(gaps[int(len(gaps) * 0.99)] * 1000, 2) if gaps else 0.0,
        "writes": writes,
    }


async def run(docs: int, entries: int, directory: Path) -> dict[str, Any]:
    store = MemoryStore(directory, compact_min_bytes=1 << 50)  # compacted here only
    for i in range(docs):
        await store.create(f"doc:{i}", {"i": i, "pad": PAD})
        if i % 5000 == 0:
            print(f"\rfilling: {i}/{docs} documents", end="", file=sys.stderr, flush=True)
    for i in range(entries):
        await store.append(f"case:{i % 1000}:events", {"i": i, "pad": PAD})
        if i % 20000 == 0:
            print(f"\rfilling: {i}/{entries} entries  ", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    size = (directory / JOURNAL).stat().st_size

    async def idle() -> None:
        await asyncio.sleep(2.0)

    began = time.perf_counter()
    store._snapshot()
    snapshot_ms = (time.perf_counter() - began) * 1000
    print("baseline ...", file=sys.stderr, flush=True)
    baseline = await measured(store, idle)
    print("online compaction ...", file=sys.stderr, flush=True)
    online = await measured(store, store._compact_online)

    async def on_loop() -> None:
        store._compact(directory / "blocking.jsonl")

    print("compaction on the loop ...", file=sys.stderr, flush=True)
    blocking = await measured(store, on_loop)
    await store.close()
    again = MemoryStore(directory)
    ok = len(again._docs) == docs
    await again.close()
    return {
        "docs": docs,
        "entries": entries,
        "journal_bytes": size,
        "compacted_bytes": (directory / JOURNAL).stat().st_size,
        "snapshot_ms": round(snapshot_ms, 2),
        "baseline": baseline,
        "online": online,
        "on_the_loop": blocking,
        "stall_ratio_online_vs_baseline": round(
            online["max_stall_ms"] / max(baseline["max_stall_ms"], 0.01), 2
        ),
        "reopened_ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=50_000)
    p.add_argument("--entries", type=int, default=200_000)
    p.add_argument("--json", action="store_true", help="end with a JSON line of the figures")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jr-compaction-") as tmp:
        result = asyncio.run(run(args.docs, args.entries, Path(tmp)))
    print(json.dumps(result) if args.json else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
