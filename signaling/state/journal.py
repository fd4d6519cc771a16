"""The memory store's journal written anew: its live state only, as few lines as it takes.

``MemoryStore`` compacts at open (before it serves) and while it runs, once the journal
has grown well past the live data (``COMPACT_FACTOR`` times the last compacted size, and
at least ``COMPACT_MIN_BYTES``): a year of sessions run and evicted must not leave a year
of journal to replay and to keep on disk.

Online, the loop is held only to copy the containers (``snapshot``: documents, log
entries and jobs are never changed in place once stored, so shallow copies are a
consistent picture) and, at the end, to append the lines written meanwhile and rename
the new file into place. The lines themselves are made and written, and fsynced, in a
worker thread; every write acknowledged meanwhile goes to the old journal as usual and is
kept aside to be carried over, in order. Until the rename the old journal is whole; after
it, the new one holds everything: a kill at any point loses nothing acknowledged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPACT_FACTOR = 4
COMPACT_MIN_BYTES = 16 * 1024 * 1024
CHUNK = 256 * 1024  # bytes written at once


@dataclass
class Snapshot:
    docs: dict[str, Any]
    trimmed: dict[str, int]
    logs: dict[str, list[Any]]
    indexes: dict[str, dict[str, float]]
    jobs: dict[str, dict[str, tuple[Any, int]]]


def snapshot(
    docs: dict[str, Any],
    trimmed: dict[str, int],
    logs: dict[str, list[Any]],
    indexes: dict[str, tuple[list[tuple[float, str]], dict[str, float]]],
    jobs: dict[str, dict[str, dict[str, Any]]],
) -> Snapshot:
    """The live state as of now (on the loop: containers copied, their items shared)."""
    return Snapshot(
        dict(docs),
        dict(trimmed),
        {k: list(v) for k, v in logs.items()},
        {k: dict(v[1]) for k, v in indexes.items()},
        {q: {i: (j["data"], j["n"]) for i, j in js.items()} for q, js in jobs.items()},
    )


def _dumps(op: dict[str, Any]) -> str:
    return json.dumps(op, ensure_ascii=False, separators=(",", ":")) + "\n"


def lines(snap: Snapshot) -> Iterator[str]:
    """The journal lines that replay into ``snap``."""
    for key, doc in snap.docs.items():
        yield _dumps({"op": "put", "k": key, "d": doc})
    # Only what is left of a trimmed log, after its numbering: the journal shrinks.
    for key, upto in snap.trimmed.items():
        yield _dumps({"op": "trim", "k": key, "n": upto})
    for key, entries in snap.logs.items():
        for doc in entries:
            yield _dumps({"op": "append", "k": key, "d": doc})
    for key, scores in snap.indexes.items():
        for member, score in scores.items():
            yield _dumps({"op": "index", "k": key, "m": member, "s": score})
    for queue, jobs in snap.jobs.items():
        for job_id, (data, n) in jobs.items():
            yield _dumps({"op": "job", "k": queue, "id": job_id, "d": data, "n": n})


def write(snap: Snapshot, tmp: Path) -> int:
    """Write the snapshot to ``tmp`` (replaced if there) and fsync it; its size. In a
    worker thread when the store is serving."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = 0
        buf: list[bytes] = []
        held = 0
        for line in lines(snap):
            data = line.encode()
            buf.append(data)
            held += len(data)
            if held >= CHUNK:
                size += write_all(fd, b"".join(buf))
                buf, held = [], 0
        size += write_all(fd, b"".join(buf))
        os.fsync(fd)
        return size
    finally:
        os.close(fd)
        release(snap)


def release(snap: Snapshot) -> None:
    """Drop the snapshot's copies here (in the thread), not on the loop."""
    for part in (snap.docs, snap.trimmed, snap.logs, snap.indexes, snap.jobs):
        part.clear()


def write_all(fd: int, data: bytes) -> int:
    done = 0
    while done < len(data):  # a short write goes on
        done += os.write(fd, data[done:])
    return done


def sync_dir(path: Path) -> None:
    """Make a rename in ``path``'s directory durable."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ops(path: Path) -> Iterator[dict[str, Any]]:
    """A journal's operations, read without changing it (its node may be running), up
    to a torn last line (a write in progress, or a crash's)."""
    with path.open("rb") as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except ValueError:
                return
