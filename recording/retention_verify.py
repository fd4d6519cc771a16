"""``jointreview verify`` and retention: a file purged with a tombstone is reported as
purged (when, what), never as missing; a file gone without one still fails. Purged
chat (its timeline lines stubs, ``recording.redaction``) is listed by ``seq`` and hash.

The tombstone file (``purged.json``, ``recording.retention``) lists what each purge
deleted with its SHA-256; the case timeline has the same as ``retention.purged``. When
the store's events are at hand each purge in the file must match one of those events
(same kind, same files and hashes): a file deleted by hand and then listed in
``purged.json`` is caught there. Called from ``recording.verify`` by a few hooks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .retention import TOMBSTONE, load_tombstone

EVENT = "retention.purged"


def _when(ts: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(float(ts)))
    except (TypeError, ValueError):
        return "an unknown time"


def _files(entry: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (str(f.get("path")), str(f.get("sha256") or f.get("sm3"))) for f in entry.get("files") or []
    }


def _events(entry: dict[str, Any]) -> set[tuple[int, str]]:
    """(seq, hash) of each chat event a chat purge names."""
    return {
        (int(e.get("seq") or 0), str(e.get("sha256") or e.get("sm3") or e.get("hash")))
        for e in entry.get("events") or []
    }


def chat_purged(directory: Path) -> dict[int, str] | None:
    """seq -> hash of every chat event the tombstone says was purged (None: none)."""
    try:
        doc = load_tombstone(directory) or {}
    except (OSError, ValueError):
        return None
    entries = [e for e in doc.get("purges") or [] if e.get("kind") == "chat"]
    return dict(pair for entry in entries for pair in _events(entry)) if entries else None


def chat_filed(store_events: list[dict[str, Any]]) -> dict[int, str]:
    """seq -> hash of every chat event a ``retention.purged`` of the store names."""
    out: dict[int, str] = {}
    for e in store_events:
        data = e.get("data") or {}
        if e.get("type") == EVENT and data.get("kind") == "chat":
            out.update(_events(data))
    return out


def purged(directory: Path) -> dict[str, str]:
    """path -> digest (SHA-256, or SM3 in a 国密 case file) of every file the tombstone
    says was purged."""
    try:
        doc = load_tombstone(directory) or {}
    except (OSError, ValueError):
        return {}
    out: dict[str, str] = {}
    for entry in doc.get("purges") or []:
        out.update(_files(entry))
    return out


def absolve(problems: list[str], gone: dict[str, str], listed: dict[str, str]) -> list[str]:
    """The problems left once the files purged with a tombstone are taken out: a file
    is absolved only if the tombstone names it with the hash the case file listed."""
    out = []
    for line in problems:
        rel, _, what = line.rpartition(": ")
        if what == "missing" and rel in gone and gone[rel] == listed.get(rel, gone[rel]):
            continue
        out.append(line)
    return out


def check(
    directory: Path, manifest_sha256: str | None, store_events: list[dict[str, Any]] | None
) -> tuple[list[str], list[str], int]:
    """(problems, notes, files purged) for the session's tombstone, if it has one."""
    try:
        doc = load_tombstone(directory)
    except (OSError, ValueError) as exc:
        return [f"{TOMBSTONE}: unreadable: {exc}"], [], 0
    problems: list[str] = []
    notes: list[str] = []
    events = [e for e in store_events or [] if e.get("type") == EVENT]
    entries = list((doc or {}).get("purges") or [])
    count = 0
    for entry in entries:
        kind, files, said = entry.get("kind"), _files(entry), _events(entry)
        count += len(files)
        size = sum(int(f.get("size") or 0) for f in entry.get("files") or [])
        what = f"{len(said)} messages" if kind == "chat" else f"{len(files)} file(s), {size} bytes"
        notes.append(
            f"{kind}: purged {_when(entry.get('purged_at'))} ({what}; "
            f"due {_when(entry.get('due_at'))})"
        )
        if manifest_sha256 is not None and entry.get("manifest_sha256") != manifest_sha256:
            problems.append(f"{TOMBSTONE}: the {kind} purge was made for another manifest.json")
        if store_events is None:
            continue
        mine = [e for e in events if (e.get("data") or {}).get("kind") == kind]
        if not any(
            _files(e.get("data") or {}) == files and _events(e.get("data") or {}) == said
            for e in mine
        ):
            problems.append(
                f"{TOMBSTONE}: the {kind} purge has no matching {EVENT} in the store "
                "(deleted without a tombstone in the timeline)"
            )
    if store_events is not None:
        listed = {e.get("kind") for e in entries}
        for e in events:
            kind = (e.get("data") or {}).get("kind")
            if kind not in listed:
                # Files (checked above against the manifest) put back from an older
                # backup: intact, but kept past their time; the next pass purges them.
                notes.append(
                    f"store: {kind} purged (seq {e.get('seq')}) but here again, and "
                    f"{TOMBSTONE} does not list it (restored from a backup?)"
                )
    elif entries:
        notes.append(f"{TOMBSTONE} not checked against the store's {EVENT} events")
    return problems, notes, count


def whole(
    directory: Path, store_events: list[dict[str, Any]] | None
) -> tuple[list[str], list[str], int] | None:
    """A case file purged whole (no manifest, a tombstone with a ``casefile`` purge):
    (problems, notes, files purged); None when it was not."""
    try:
        doc = load_tombstone(directory)
    except (OSError, ValueError):
        return None
    entries = [e for e in (doc or {}).get("purges") or [] if e.get("kind") == "casefile"]
    if not entries:
        return None
    problems, notes, count = check(directory, None, store_events)
    for rel in entries[-1].get("missing") or []:
        problems.append(f"{rel}: was missing when the case file was purged (no tombstone)")
    sealed = [e for e in store_events or [] if e.get("type") == "archive.sealed"]
    digest = entries[-1].get("manifest_sha256")
    if sealed and not any((e.get("data") or {}).get("manifest_sha256") == digest for e in sealed):
        problems.append(f"{TOMBSTONE}: names a manifest.json the store never sealed")
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != TOMBSTONE:
            rel = path.relative_to(directory).as_posix()
            problems.append(f"{rel}: added after the case file was purged")
    return problems, notes, count
