"""``jointreview retention [--dry-run]``: what the retention settings let go, and one
purge pass by hand (``signaling/retention.py``; the nodes run it every
``retention_every_s`` anyway).

``--dry-run`` lists each due item (a session's recordings, stills, chat or whole case
file) with its files' count and size (chat: messages), whether its case is on legal hold
(then kept) or its chat was sealed before the redactable seal (kept), and
changes nothing. Without it, one pass purges what is due and not held, files each
``retention.purged`` in the case timeline and the record, as a node does. On a single
node that runs (it owns its store) the pass is refused: its own purge does it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from signaling.config import Config
from signaling.core import append_event
from signaling.datadir import hold_data_dir
from signaling.history import db, migrate
from signaling.history.repo import History
from signaling.retention import EVENT, Periods, Retention
from signaling.state import Store
from signaling.state.journal import read_ops


def add_parser(sub: Any, config_flags: Any) -> None:
    p = sub.add_parser("retention", help="list (--dry-run) or purge what retention lets go")
    p.add_argument("--dry-run", action="store_true", help="list what would go; change nothing")
    p.add_argument("--at", type=float, help="as if it were this UNIX time (default: now)")
    p.add_argument("--json", action="store_true", help="a JSON summary as the last line")
    config_flags(p)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def _print(items: list[dict[str, Any]], verb: str) -> None:
    for item in items:
        where = f"{item['case_id']}/{item['session_id']}"
        size = item["bytes"] / 1e6
        held = "  KEPT: the case is on legal hold" if item.get("held") else ""
        if item.get("kept"):
            held = f"  KEPT: {item['kept']}"
        what = f"{len(item['files'])} file(s), {size:.1f} MB"
        if item["kind"] == "chat":
            what = f"{item.get('messages', 0)} message(s)"
        due = _when(item["due_at"])
        print(f"{verb} {where} {item['kind']}: {what}, due {due}{held}", flush=True)


class _Held:
    """Holds as a single node's journal has them, read without changing anything."""

    def __init__(self, journal: Path) -> None:
        self.docs: dict[str, Any] = {}
        if not journal.is_file():
            return
        for op in read_ops(journal):
            key = str(op.get("k", ""))
            if not key.startswith("hold:"):
                continue
            if op.get("op") == "put":
                self.docs[key] = op.get("d")
            elif op.get("op") == "del":
                self.docs.pop(key, None)

    async def get(self, key: str) -> Any:
        return self.docs.get(key)


async def _dry_run(config: Config, at: float) -> list[dict[str, Any]]:
    store: Any
    if config.redis_url:
        from signaling.state.redis_store import RedisStore

        store = await RedisStore.connect(config.redis_url)
    else:
        store = _Held(config.data_dir / "state" / "journal.jsonl")
    history = None
    try:  # holds are read in the record too (read only here: no migration)
        history = await History.open(db.url_of(config.database_url, config.data_dir))
    except Exception as exc:
        print(f"note: the record is not readable ({exc}); holds from the store only")
    try:
        return await _retention(config, store, history, at).plan()
    finally:
        if config.redis_url:
            await store.close()
        if history is not None:
            await history.close()


def _retention(config: Config, store: Any, history: History | None, at: float) -> Retention:
    async def file_event(case_id: str, session_id: str, data: dict[str, Any]) -> int:
        assert history is not None
        event = await append_event(
            store,
            case_id,
            EVENT,
            ts=time.time(),
            session_id=session_id,
            data=data,
            floor=history.last_seq,
        )
        await history.hook(event)  # into the record too, as a node files every event
        return int(event.seq)

    archive = config.data_dir / "archive"
    periods = Periods.of(config)
    return Retention(store, archive, periods, file_event, lambda: at, "cli", record=history)


async def _purge(config: Config, at: float) -> list[dict[str, Any]] | None:
    url = db.url_of(config.database_url, config.data_dir)
    await migrate.check(url)
    history = await History.open(url)
    try:
        if config.redis_url:
            from signaling.state.redis_store import RedisStore

            store: Store = await RedisStore.connect(config.redis_url)
            try:
                return await _retention(config, store, history, at).run_once()
            finally:
                await store.close()
        lock = hold_data_dir(config.data_dir)
        if lock is None:
            return None
        try:
            from signaling.state import MemoryStore

            memory = MemoryStore(config.data_dir / "state")
            try:
                return await _retention(config, memory, history, at).run_once()
            finally:
                await memory.close()
        finally:
            lock.close()
    finally:
        await history.close()


def main(args: argparse.Namespace, config: Config) -> int:
    at = args.at if args.at is not None else time.time()
    periods = Periods.of(config)
    if not periods.any:
        print("retention: every part is kept for good (no retention_*_days set)")
    if args.dry_run:
        items = asyncio.run(_dry_run(config, at))
        _print(items, "would purge")
        going = [i for i in items if not i.get("held") and not i.get("kept")]
        old = sum(1 for i in items if i.get("kept") and not i.get("held"))
        print(
            f"{len(going)} item(s) would go ({sum(i['bytes'] for i in going) / 1e6:.1f} MB), "
            f"{sum(1 for i in items if i.get('held'))} kept on legal hold"
            + (f", {old} chat kept (sealed before the redactable seal)" if old else "")
        )
    else:
        done = asyncio.run(_purge(config, at))
        if done is None:
            print(
                "jointreview retention: a server runs on this data directory; its own purge "
                "runs every retention_every_s (or stop it, then run this again)",
                file=sys.stderr,
            )
            return 1
        items = done
        _print(items, "purged")
        print(f"{len(items)} item(s) purged ({sum(i['bytes'] for i in items) / 1e6:.1f} MB)")
    if args.json:
        keep = ("case_id", "session_id", "kind", "due_at", "bytes", "held", "kept", "seq")
        rows = [{k: i.get(k) for k in keep} | {"files": len(i["files"])} for i in items]
        print(json.dumps({"dry_run": bool(args.dry_run), "at": at, "items": rows}))
    return 0
