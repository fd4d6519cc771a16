"""``jointreview verify``: a case file (its files, timeline and seal) against its manifest
and the store's events, or (``--audit``) the audit trail's hash chains."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from signaling.config import Config
from signaling.state.journal import read_ops


def add_parser(sub: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    verify = sub.add_parser(
        "verify", help="check a case file (files, timeline, store) against its manifest"
    )
    verify.add_argument("case", nargs="?", help="the case id (not with --audit)")
    verify.add_argument("session", nargs="?", help="one session (default: all of the case)")
    verify.add_argument("--files-only", action="store_true", help="do not read the store")
    verify.add_argument(
        "--audit", action="store_true", help="check the audit trail's hash chains instead"
    )
    verify.add_argument("--node", help="with --audit: one chain (default: every chain)")
    config_flags(verify)


def main(args: argparse.Namespace, config: Config) -> int:
    from recording.verify import sessions_of, verify_session

    if args.audit:
        return _verify_audit(config, args.node)
    if not args.case:
        print("jointreview verify: give a case id, or --audit", file=sys.stderr)
        return 2
    archive = config.data_dir / "archive"
    sessions = [args.session] if args.session else sessions_of(archive, args.case)
    if not sessions:
        print(
            f"jointreview verify: no archived session of case {args.case!r} in {archive}",
            file=sys.stderr,
        )
        return 1
    from signaling.seal_keys import trusted_keys

    keys = trusted_keys(config)
    events = None if args.files_only else asyncio.run(store_events(config, args.case))
    if events is None and not args.files_only:
        print("note: the store is not reachable; checking the files only", file=sys.stderr)
    failed = 0
    for session_id in sessions:
        mine = None if events is None else [e for e in events if e.get("session_id") == session_id]
        report = verify_session(archive, args.case, session_id, mine, keys)
        where = f"{args.case}/{session_id}"
        if report.ok:
            gone = f", {report.purged} purged (retention)" if report.purged else ""
            print(
                f"OK   {where}: {report.files} files, {report.events} events match{gone}; "
                f"{report.seal}"
            )
        else:
            failed += 1
            print(f"FAIL {where}: {len(report.problems)} difference(s)")
        details(report.problems, report.notes)
    return 1 if failed else 0


def details(problems: list[str], notes: list[str]) -> None:
    for line in problems:
        print(f"  - {line}")
    for line in notes:
        print(f"  note: {line}")


def _verify_audit(config: Config, node: str | None) -> int:
    from signaling.audit_verify import chains, verify_root

    root = config.data_dir / "audit"
    names = [node] if node else chains(root)
    if not names or (node and not (root / node).is_dir()):
        print(
            f"jointreview verify: no audit chain {node or ''} in {root}".replace("  ", " "),
            file=sys.stderr,
        )
        return 1
    failed = 0
    for name in names:
        report = verify_root(root, name)
        where = f"audit/{name}"
        if report.ok:
            span = f"seq {report.first_seq}-{report.head_seq}" if report.entries else "empty"
            print(
                f"OK   {where}: {report.entries} entries in {report.files} file(s), {span}, "
                f"head {report.head}"
            )
        else:
            failed += 1
            print(f"FAIL {where}: {len(report.problems)} problem(s)")
        details(report.problems, report.notes)
    return 1 if failed else 0


async def store_events(config: Config, case_id: str) -> list[dict[str, Any]] | None:
    """The case's events as the store has them now, read without changing anything
    (the server may be running); None when the store can't be read. The part of the log
    the store has forgotten (sealed sessions leave it: signaling/evict.py) is the
    record's."""
    key = f"case:{case_id}:events"
    if config.redis_url:
        from signaling.state.redis_store import RedisStore

        try:
            store = await RedisStore.connect(config.redis_url)
        except Exception:
            return None
        try:
            events, trimmed = await store.read_log(key), await store.log_trimmed(key)
        finally:
            await store.close()
    else:
        journal = config.data_dir / "state" / "journal.jsonl"
        if not journal.is_file():
            return None
        events, trimmed = _journal_log(journal, key)
    # What the store no longer has is the record's: up to the trim, or all of it when
    # the store forgot the case whole (its numbering too: signaling/evict.py).
    upto = int(events[0]["seq"]) - 1 if events else (trimmed or ALL)
    if upto:
        earlier = await _record_events(config, case_id, upto)
        if earlier is None:
            return None
        events = earlier + events
    return events


ALL = 2**62  # every seq


def _journal_log(journal: Path, key: str) -> tuple[list[dict[str, Any]], int]:
    """One log of ``MemoryStore``'s journal (one JSON operation a line), and how far it
    was trimmed."""
    events: list[dict[str, Any]] = []
    trimmed = 0
    for op in read_ops(journal):
        if op.get("k") != key:
            continue
        if op.get("op") == "append":
            trimmed = max(trimmed, int(op.get("b", 0)))  # numbered on from a floor
            events.append(op["d"])
        elif op.get("op") == "trim":
            trimmed = max(trimmed, int(op["n"]))
            events = [e for e in events if int(e.get("seq") or 0) > trimmed]
        elif op.get("op") == "unlog":
            events, trimmed = [], 0
    return events, trimmed


async def _record_events(config: Config, case_id: str, upto: int) -> list[dict[str, Any]] | None:
    """The case's events up to seq ``upto`` from the record; None if it can't be read."""
    from signaling.history.db import url_of
    from signaling.history.repo import History

    try:
        history = await History.open(url_of(config.database_url, config.data_dir))
    except Exception:
        return None
    out: list[dict[str, Any]] = []
    try:
        while True:
            after = int(out[-1]["seq"]) if out else 0
            page = await history.event_docs(case_id, after, 1000)
            out += [e for e in page if int(e["seq"]) <= upto]
            if len(page) < 1000 or int(page[-1]["seq"]) >= upto:
                return out
    except Exception:
        return None
    finally:
        await history.close()
