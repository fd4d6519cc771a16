"""Copying the records a live store already holds into the record (the upgrade to the
SQL history): every case's event log, from the journal of a single node or from Redis.

Recording is idempotent on (case, seq), so a copy can be run again, or interrupted and
resumed. It is verified twice: the record holds as many events of each case as the
store's log, and each sealed case file's manifest on disk still has the hash that its
``archive.sealed`` event vouched for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..state import Store
from .repo import History

SESSIONS = "sessions"  # the store's index of every session (docs/architecture.md)


@dataclass
class Report:
    cases: int = 0
    events: int = 0  # in the store's logs
    new: int = 0  # filed now (the rest were in the record already)
    sealed: int = 0  # case files whose manifest matched its archive.sealed event
    problems: list[str] = field(default_factory=list)


async def cases_in(store: Store) -> list[str]:
    """Every case the store knows, through its sessions (a case is made with its first)."""
    ids = await store.index_range(SESSIONS)
    cases: set[str] = set()
    for start in range(0, len(ids), 500):
        docs = await store.get_many([f"session:{i}" for i in ids[start : start + 500]])
        cases.update(str(d["case_id"]) for d in docs if d and d.get("case_id"))
    return sorted(cases)


def _manifest_problem(archive: Path, case_id: str, event: dict) -> str | None:
    session_id = str(event.get("session_id"))
    vouched = (event.get("data") or {}).get("manifest_sha256")
    path = archive / case_id / session_id / "manifest.json"
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return f"{case_id}/{session_id}: sealed, but its manifest cannot be read ({exc})"
    if digest != vouched:
        return f"{case_id}/{session_id}: manifest.json differs from the one sealed"
    return None


async def copy_store(
    store: Store,
    history: History,
    archive: Path,
    progress: Callable[[int], None] = lambda n: None,
) -> Report:
    """Copy every case's log into ``history``; ``progress`` is called after each case."""
    report = Report()
    for case_id in await cases_in(store):
        events = await store.read_log(f"case:{case_id}:events")
        report.cases += 1
        report.events += len(events)
        report.new += await history.record_many(events)
        filed = await history.event_count(case_id)
        if filed != len(events):
            report.problems.append(
                f"{case_id}: {len(events)} events in the store, {filed} in the record"
            )
        for event in events:
            if event.get("type") != "archive.sealed":
                continue
            problem = _manifest_problem(archive, case_id, event)
            if problem is None:
                report.sealed += 1
            else:
                report.problems.append(problem)
        progress(1)
    return report
