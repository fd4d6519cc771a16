"""Retention on disk: which parts of a sealed case file are due, deleting them, and the
tombstone file that lets ``jointreview verify`` tell a purged file from a missing one.

A sealed session keeps three kinds of thing, each for its own period (settings
``retention_*_days``; 0 keeps it for good), counted from the session's end:

- ``recordings``: ``tracks/*`` and the composite exports (``exports/*``);
- ``stills``: ``snapshots/*``;
- ``chat``: the chat messages' text, in ``timeline.jsonl`` (each line replaced by a stub
  that keeps its hash, ``recording.redaction``), only in a case file sealed with the
  redactable seal (manifest version 2; a version-1 one's chat is kept: ``OLD_SEAL``);
- ``casefile``: everything else (manifest, timeline, opinion sheet, track index), and
  whatever is left of the above.

What is purged is listed, with each file's size and SHA-256 (chat: each event's ``seq``
and hash), in ``purged.json`` beside
the manifest (written before anything is deleted, so a crash midway leaves a tombstone
that names what went) and in the case timeline as ``retention.purged`` (filed by
``signaling.retention``). ``purged.json`` is never content: the manifest does not list it.
Nothing here imports the signaling layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .addendum import NAME as EXPORTS_JSON
from .archive import CHAT, MANIFEST, TIMELINE
from .paths import ID_RE
from .redaction import redact_timeline
from .seal import digest_file, hash_of

TOMBSTONE = "purged.json"
VERSION = 1
KINDS = ("recordings", "stills", "chat", "casefile")
DAY = 86400.0
OLD_SEAL = (
    "sealed before the redactable seal (manifest version 1): its chat goes with the case file"
)


def kind_of(rel: str) -> str:
    """The kind of a file of the session directory (its path relative to it)."""
    if rel.startswith(("tracks/", "exports/")):
        return "recordings"
    if rel.startswith("snapshots/"):
        return "stills"
    return "casefile"


@dataclass
class Due:
    """One kind of one session, due for purging (or already purged, ``done``)."""

    case_id: str
    session_id: str
    kind: str
    ended_at: float
    due_at: float
    files: list[dict[str, Any]] = field(default_factory=list)  # path, size, sha256
    manifest_sha256: str | None = None
    # Listed by the case file, gone already without a tombstone: kept in this one's
    # tombstone so that verify still fails for them once the manifest is gone.
    missing: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # chat: seq and hash
    kept: str | None = None  # why it stays although due (OLD_SEAL)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "case_id": self.case_id,
            "session_id": self.session_id,
            "kind": self.kind,
            "ended_at": self.ended_at,
            "due_at": self.due_at,
            "files": self.files,
            "bytes": sum(int(f.get("size") or 0) for f in self.files),
        }
        if self.kind == "chat":
            out["messages"] = len(self.events)
        if self.kept:
            out["kept"] = self.kept
        return out


# -- the tombstone file ---------------------------------------------------------------------


def load_tombstone(directory: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((directory / TOMBSTONE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return doc if isinstance(doc, dict) else None


def purged_kinds(directory: Path) -> set[str]:
    doc = load_tombstone(directory) or {}
    return {str(p.get("kind")) for p in doc.get("purges", [])}


def _write_tombstone(directory: Path, doc: dict[str, Any]) -> None:
    body = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")
    tmp = directory / f".{TOMBSTONE}.tmp"
    with tmp.open("wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / TOMBSTONE)


def note_event(directory: Path, kind: str, seq: int) -> None:
    """The tombstone event of a purge is in the case timeline (its ``seq``)."""
    doc = load_tombstone(directory)
    if doc is None:
        return
    for entry in doc.get("purges", []):
        if entry.get("kind") == kind:
            entry["seq"] = seq
    _write_tombstone(directory, doc)


# -- what is due ------------------------------------------------------------------------------


def sealed_sessions(archive: Path) -> list[tuple[str, str, Path]]:
    """(case, session, directory) of every session directory with a manifest or a
    tombstone (a case file purged whole keeps its tombstone only)."""
    out: list[tuple[str, str, Path]] = []
    if not archive.is_dir():
        return out
    for case_dir in sorted(archive.iterdir()):
        if not case_dir.is_dir() or not ID_RE.match(case_dir.name):
            continue
        for directory in sorted(case_dir.iterdir()):
            if not directory.is_dir() or not ID_RE.match(directory.name):
                continue
            if (directory / MANIFEST).is_file() or (directory / TOMBSTONE).is_file():
                out.append((case_dir.name, directory.name, directory))
    return out


def tombstones(archive: Path) -> list[tuple[str, str, Path, dict[str, Any]]]:
    """(case, session, directory, tombstone) of every session with a readable one."""
    out = []
    for case_id, session_id, directory in sealed_sessions(archive):
        try:
            doc = load_tombstone(directory)
        except (OSError, ValueError):
            continue
        if doc is not None:
            out.append((case_id, session_id, directory, doc))
    return out


def unfiled(doc: dict[str, Any]) -> bool:
    """The tombstone has a purge without its event's ``seq`` (its node died between
    the two, or is at it now)."""
    return any(e.get("seq") is None for e in doc.get("purges", []))


def ended_at(manifest: dict[str, Any]) -> float:
    session = manifest.get("session") or {}
    return float(session.get("ended_at") or manifest.get("generated_at") or 0.0)


def _listed(directory: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every file the case file vouches for that is still there, as listed (manifest
    and exports.json), then the files that describe it (manifest, timeline, addendum)."""
    entries = list(manifest.get("files") or [])
    try:
        exports = json.loads((directory / EXPORTS_JSON).read_text(encoding="utf-8"))
        entries += list(exports.get("exports") or [])
    except (OSError, ValueError, AttributeError):
        pass
    # A 国密 case file names its files' digests "sm3" (recording/seal.py): kept as listed.
    alg = hash_of(manifest)
    for name in (TIMELINE, EXPORTS_JSON, MANIFEST):
        path = directory / name
        if path.is_file():
            entries.append({"path": name, "size": path.stat().st_size, alg: digest_file(path, alg)})
    keep = ("path", "size", "sha256", "sm3")
    return [
        {k: e[k] for k in keep if k in e} for e in entries if (directory / str(e["path"])).is_file()
    ]


def due_in(
    case_id: str,
    session_id: str,
    directory: Path,
    periods: dict[str, float],
    now: float,
    next_due: dict[Path, float] | None = None,
) -> list[Due]:
    """The kinds of this session that are due at ``now`` and not purged yet.
    ``periods``: seconds each kind is kept (0 or absent: for good). ``next_due``: when
    each session read so far has something due next (a sealed manifest never changes;
    ``inf``: nothing left to purge), filled in for this one."""
    try:
        raw = (directory / MANIFEST).read_bytes()
        manifest = json.loads(raw)
    except (OSError, ValueError):
        return []  # purged whole already, or never sealed: nothing of ours to judge
    done = purged_kinds(directory)
    end = ended_at(manifest)
    files = _listed(directory, manifest)
    gone = {
        str(f["path"])
        for p in (load_tombstone(directory) or {}).get("purges", [])
        for f in p.get("files", [])
    }
    missing = [
        str(f.get("path"))
        for f in manifest.get("files") or []
        if not (directory / str(f.get("path"))).is_file() and str(f.get("path")) not in gone
    ]
    out = []
    pending = [math.inf]
    for kind in KINDS:
        period = periods.get(kind) or 0
        if kind == "chat":
            if period > 0 and kind not in done:
                out += _chat_due(case_id, session_id, manifest, raw, end, period, now, pending)
            continue
        mine = files if kind == "casefile" else [f for f in files if kind_of(f["path"]) == kind]
        if period <= 0 or kind in done or not mine:
            continue
        pending.append(end + period)
        if now < end + period:
            continue
        digest = hashlib.sha256(raw).hexdigest()
        lost = missing if kind == "casefile" else []
        out.append(Due(case_id, session_id, kind, end, end + period, mine, digest, lost))
    if next_due is not None:
        next_due[directory] = min(pending)
    return out


def _chat_due(
    case_id: str,
    session_id: str,
    manifest: dict[str, Any],
    raw: bytes,
    end: float,
    period: float,
    now: float,
    pending: list[float],
) -> list[Due]:
    """The session's chat, if due: its events' seq and hash (a version-1 case file's
    chat is listed as kept, never pending: it cannot be purged alone)."""
    alg = hash_of(manifest)
    listed = (manifest.get("timeline") or {}).get("events") or []
    chat = [
        {"seq": m.get("seq"), alg: m.get("event_hash")} for m in listed if m.get("type") == CHAT
    ]
    if not chat:
        return []
    old = int(manifest.get("version") or 1) < 2
    if not old:
        pending.append(end + period)
    if now < end + period:
        return []
    digest = hashlib.sha256(raw).hexdigest()
    item = Due(case_id, session_id, "chat", end, end + period, [], digest)
    if old:
        item.kept = OLD_SEAL
    else:
        item.events = chat
    return [item]


def redact(directory: Path, entry: dict[str, Any]) -> int:
    """A chat purge's timeline lines made stubs (again: idempotent, for a pass that
    finishes a purge its node left halfway)."""
    events = entry.get("events") or []
    hashes = {int(e["seq"]): str(e.get("sha256") or e.get("sm3")) for e in events}
    return redact_timeline(directory, hashes, float(entry.get("purged_at") or 0.0))


def due(
    archive: Path,
    periods: dict[str, float],
    now: float,
    next_due: dict[Path, float] | None = None,
) -> list[Due]:
    """Everything due at ``now``. With ``next_due`` (kept by the caller between passes,
    for the same periods) a session with nothing due yet is not read again: an hourly
    pass over years of case files reads only what may be due."""
    out: list[Due] = []
    if not any(p > 0 for p in periods.values()):
        return out
    for case_id, session_id, directory in sealed_sessions(archive):
        if next_due is not None and now < next_due.get(directory, -math.inf):
            continue
        out += due_in(case_id, session_id, directory, periods, now, next_due)
    return out


# -- purging ----------------------------------------------------------------------------------


def purge(directory: Path, item: Due, now: float) -> dict[str, Any]:
    """Delete the item's files, the tombstone first; returns the tombstone's entry.
    A case file purged whole leaves its directory with the tombstone alone."""
    doc = load_tombstone(directory) or {
        "version": VERSION,
        "case_id": item.case_id,
        "session_id": item.session_id,
        "purges": [],
    }
    entry = {
        "kind": item.kind,
        "purged_at": now,
        "due_at": item.due_at,
        "manifest_sha256": item.manifest_sha256,
        "files": item.files,
    }
    if item.missing:
        entry["missing"] = item.missing
    if item.kind == "chat":
        entry["events"] = item.events
    doc["purges"] = [p for p in doc.get("purges", []) if p.get("kind") != item.kind] + [entry]
    _write_tombstone(directory, doc)
    if item.kind == "chat":
        redact(directory, entry)
        return entry
    root = directory.resolve()
    for f in item.files:
        path = (directory / str(f["path"])).resolve()
        if path.is_relative_to(root) and path != root / TOMBSTONE:
            path.unlink(missing_ok=True)
    if item.kind == "casefile":
        for child in directory.iterdir():
            if child.name == TOMBSTONE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    else:
        for sub in {str(f["path"]).split("/")[0] for f in item.files if "/" in str(f["path"])}:
            with contextlib.suppress(OSError):
                (directory / sub).rmdir()  # only if empty
    return entry
