"""``exports.json``: what was made from a sealed session afterwards (the composite MP4).

The manifest is sealed when the session ends and its hash is in the store's timeline
(``archive.sealed``); an export comes later. Rewriting the manifest would break that
seal, so exports get an addendum beside it instead::

    {"version": 1, "case_id", "session_id",
     "manifest_sha256": hash of the manifest.json this extends,
     "exports": [{"path", "size", "sha256", "created_at", "generator", ...}]}

and each export is also announced in the store's timeline (``export.ready`` with its
SHA-256). ``jointreview verify`` checks both: the addendum belongs to this manifest, each
listed file is intact, and each matches the ``export.ready`` the store recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

NAME = "exports.json"
VERSION = 1


def load(directory: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((directory / NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return doc if isinstance(doc, dict) else None


def manifest_digest(directory: Path) -> str | None:
    from .archive import MANIFEST

    try:
        return hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def add(directory: Path, case_id: str, session_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """List (or replace, by path) one export; written whole or not at all."""
    doc = load(directory) or {"version": VERSION, "case_id": case_id, "session_id": session_id}
    exports = [e for e in doc.get("exports", []) if e.get("path") != entry["path"]]
    exports.append(dict(entry, created_at=entry.get("created_at") or time.time()))
    doc.update(manifest_sha256=manifest_digest(directory), exports=exports)
    body = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")
    tmp = directory / f".{NAME}.tmp"
    with tmp.open("wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / NAME)
    return doc


def listed(directory: Path) -> set[str]:
    doc = load(directory) or {}
    return {str(e.get("path")) for e in doc.get("exports", [])}


def check(
    directory: Path,
    manifest_sha256: str,
    store_events: list[dict[str, Any]] | None,
) -> tuple[list[str], list[str], int]:
    """(problems, notes, files checked) for the session's addendum, if it has one."""
    from .archive import sha256_file

    problems: list[str] = []
    notes: list[str] = []
    try:
        doc = load(directory)
    except (OSError, ValueError) as exc:
        return [f"{NAME}: unreadable: {exc}"], notes, 0
    if doc is None:
        return problems, notes, 0
    if doc.get("manifest_sha256") != manifest_sha256:
        problems.append(f"{NAME}: made for another manifest.json")
    ready = [e for e in store_events or [] if e.get("type") == "export.ready"]
    root = directory.resolve()
    exports = doc.get("exports") or []
    for entry in exports:
        rel = str(entry.get("path"))
        path = (directory / rel).resolve()
        if not path.is_relative_to(root):
            problems.append(f"{rel}: listed outside the session directory")
            continue
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            problems.append(f"{rel}: size {size}, {NAME} says {entry.get('size')}")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{rel}: SHA-256 differs from {NAME}")
        if store_events is None:
            continue
        mine = [e for e in ready if (e.get("data") or {}).get("path") == rel]
        if not mine:
            notes.append(f"store: no export.ready event for {rel}")
        elif not any((e.get("data") or {}).get("sha256") == entry.get("sha256") for e in mine):
            problems.append(f"{rel}: differs from the export the store recorded")
    return problems, notes, len(exports)
