"""``jointreview verify``: does a session's case file still match its manifest?

Checks every listed file (present, size, SHA-256 or SM3) and reports files added since;
checks ``timeline.jsonl`` against the manifest's hash chain; checks the manifest's
signature (``manifest.sig``, recording/seal.py: who sealed it, each way it can be
tampered with told apart); and, when the store can be read,
checks that the store's timeline still matches too and that the manifest is the one the
store recorded when the session was sealed (``archive.sealed``). Each difference is one
line naming what and where; any difference makes the result fail.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import addendum, redaction, retention_verify
from . import seal as sealing
from .archive import MANIFEST, TIMELINE, chain, content_files
from .paths import session_dir
from .signing import PublicKey


@dataclass
class Report:
    case_id: str
    session_id: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    events: int = 0
    seal: str = ""  # who signed it, or "unsigned" (recording/seal.py)
    purged: int = 0  # files purged by retention, with their tombstone (retention_verify)

    @property
    def ok(self) -> bool:
        return not self.problems


def diff_timeline(
    manifest_events: list[dict[str, Any]],
    case_id: str,
    session_id: str,
    events: list[dict[str, Any]],
    where: str,
    alg: str = "sha256",
) -> list[str]:
    """Where ``events`` (a timeline as found in ``where``) departs from the manifest."""
    hashes = chain(case_id, session_id, events, alg)
    problems: list[str] = []
    want = {m.get("seq"): (i, m) for i, m in enumerate(manifest_events)}
    have = {e.get("seq"): i for i, e in enumerate(events)}
    for i, m in enumerate(manifest_events):
        seq = m.get("seq")
        if seq not in have:
            problems.append(
                f"{where}: event removed at position {i + 1} (seq {seq}, {m.get('type')})"
            )
    for j, e in enumerate(events):
        seq = e.get("seq")
        if seq not in want:
            problems.append(
                f"{where}: event inserted at position {j + 1} (seq {seq}, {e.get('type')})"
            )
    if problems:
        return problems
    # Same events by number: the first hash that differs is where the content changed
    # (every later hash differs too, being chained on it).
    for i, (m, h) in enumerate(zip(manifest_events, hashes, strict=False)):
        if m.get("hash") != h:
            seq = m.get("seq")
            edited = events[i]
            if edited.get("seq") != seq:
                problems.append(f"{where}: events reordered at position {i + 1} (seq {seq})")
            else:
                problems.append(
                    f"{where}: event edited at position {i + 1} (seq {seq}, {m.get('type')})"
                )
            break
    return problems


def read_timeline(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    events, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"{TIMELINE}: line {n} is not JSON")
            continue
        events.append(event)
    return events, problems


def verify_session(
    archive: Path,
    case_id: str,
    session_id: str,
    store_events: list[dict[str, Any]] | None = None,
    keys: Mapping[str, PublicKey] | None = None,
) -> Report:
    """``store_events``: the case's events of this session as the store has them now
    (None: the store was not reachable; only the files are checked). ``keys``: the
    trusted seal keys by id (None: a signature is checked with the key it carries)."""
    report = Report(case_id, session_id)
    try:
        directory = session_dir(archive, case_id, session_id)
    except ValueError as exc:
        report.problems.append(str(exc))
        return report
    manifest_path = directory / MANIFEST
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw)
    except FileNotFoundError:
        if (gone := retention_verify.whole(directory, store_events)) is not None:
            report.problems, report.notes, report.purged = gone
            return report
        report.problems.append(f"{MANIFEST}: missing (the session was never sealed here)")
        return report
    except (OSError, json.JSONDecodeError) as exc:
        report.problems.append(f"{MANIFEST}: unreadable: {exc}")
        return report
    if manifest.get("case_id") != case_id or manifest.get("session_id") != session_id:
        report.problems.append(f"{MANIFEST}: belongs to another session")
    alg = sealing.hash_of(manifest)
    _check_seal(directory, manifest, raw, keys, store_events, report)
    _check_files(directory, manifest, report, addendum.listed(directory), alg)
    timeline = manifest.get("timeline") or {}
    listed = list(timeline.get("events") or [])
    report.events = len(listed)
    path = directory / TIMELINE
    redactable = int(manifest.get("version") or 1) >= 2  # archive.py: events hashed alone
    named = retention_verify.chat_purged(directory) if redactable else None
    if redactable:
        report.problems += redaction.check_chain(case_id, session_id, listed, alg)
    if not path.is_file():
        report.problems.append(f"{TIMELINE}: missing")
    else:
        events, bad = read_timeline(path)
        stubs = 0
        if redactable:
            found, stubs = redaction.diff_events(listed, events, TIMELINE, alg, named)
        else:
            found = diff_timeline(listed, case_id, session_id, events, TIMELINE, alg)
        # Chat purged by retention changed the file (its lines are stubs): each event's
        # own hash vouches for it then.
        if not stubs and sealing.digest_file(path, alg) != timeline.get(alg):
            report.problems.append(f"{TIMELINE}: content differs from the manifest")
        report.problems += bad + found
    if listed and timeline.get("head") != listed[-1].get("hash"):
        report.problems.append(f"{MANIFEST}: chain head does not match its last event")
    # Exports made after sealing: their addendum, files and export.ready events.
    digest = hashlib.sha256(raw).hexdigest()
    problems, notes, files = addendum.check(directory, digest, store_events)
    report.problems += problems
    report.notes += notes
    report.files += files
    _purged(directory, manifest, digest, store_events, report)
    if store_events is not None:
        sealed = [e for e in store_events if e.get("type") == "archive.sealed"]
        covered = [e for e in store_events if e.get("type") != "archive.sealed"]
        last_seq = listed[-1].get("seq") if listed else 0
        later = [e for e in covered if (e.get("seq") or 0) > (last_seq or 0)]
        if later:
            report.notes.append(f"store: {len(later)} event(s) after the manifest was written")
            covered = [e for e in covered if e not in later]
        if redactable:
            # The record's stubs: named by the tombstone, or by the record's own purge
            # event (an archive restored from a backup older than the purge).
            known = {**retention_verify.chat_filed(store_events), **(named or {})}
            report.problems += redaction.diff_events(listed, covered, "store", alg, known)[0]
        else:
            report.problems += diff_timeline(listed, case_id, session_id, covered, "store", alg)
        digest = hashlib.sha256(raw).hexdigest()
        if sealed and not any(
            (e.get("data") or {}).get("manifest_sha256") == digest for e in sealed
        ):
            report.problems.append(f"{MANIFEST}: differs from the one the store recorded")
        elif not sealed:
            report.notes.append("store: no archive.sealed event for this session")
    return report


def _check_seal(
    directory: Path,
    manifest: dict[str, Any],
    raw: bytes,
    keys: Mapping[str, PublicKey] | None,
    store_events: list[dict[str, Any]] | None,
    report: Report,
) -> None:
    """The signature (recording/seal.py), and whether the store knew it signed."""
    found = sealing.check(directory, manifest, raw, keys)
    report.seal = found.summary
    report.problems += [f.message for f in found.problems]
    report.notes += found.notes
    sealed = [e for e in store_events or [] if e.get("type") == "archive.sealed"]
    signers = sorted({str((e.get("data") or {}).get("seal_key_id")) for e in sealed} - {"None"})
    if signers and found.summary == "unsigned":
        by = ", ".join(signers)
        report.problems.append(f"{MANIFEST}: unsigned, but the store recorded it sealed by {by}")


def _purged(
    directory: Path,
    manifest: dict[str, Any],
    digest: str,
    store_events: list[dict[str, Any]] | None,
    report: Report,
) -> None:
    """Files purged by retention with a tombstone: reported as purged, not missing."""
    gone = retention_verify.purged(directory)
    alg = sealing.hash_of(manifest)
    listed = {str(f.get("path")): str(f.get(alg)) for f in manifest.get("files") or []}
    report.problems = retention_verify.absolve(report.problems, gone, listed)
    problems, notes, report.purged = retention_verify.check(directory, digest, store_events)
    report.problems += problems
    report.notes += notes


def _check_files(
    directory: Path,
    manifest: dict[str, Any],
    report: Report,
    added: set[str],
    alg: str = "sha256",
) -> None:
    listed = {str(f.get("path")): f for f in manifest.get("files") or []}
    report.files = len(listed)
    root = directory.resolve()
    for rel, entry in listed.items():
        path = (directory / rel).resolve()
        if not path.is_relative_to(root):
            report.problems.append(f"{rel}: listed outside the session directory")
            continue
        if not path.is_file():
            report.problems.append(f"{rel}: missing")
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            report.problems.append(f"{rel}: size {size}, manifest says {entry.get('size')}")
        elif sealing.digest_file(path, alg) != entry.get(alg):
            report.problems.append(f"{rel}: {sealing.LABELS[alg]} differs from the manifest")
    for path in content_files(directory):
        rel = path.relative_to(directory).as_posix()
        if rel not in listed and rel not in added:
            report.problems.append(f"{rel}: not in the manifest (added later)")


def sessions_of(archive: Path, case_id: str) -> list[str]:
    try:
        case_dir = session_dir(archive, case_id, "x").parent
    except ValueError:
        return []
    if not case_dir.is_dir():
        return []
    return sorted(p.name for p in case_dir.iterdir() if p.is_dir())
