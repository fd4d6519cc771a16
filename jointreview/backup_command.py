"""``jointreview backup DIR`` and ``jointreview restore DIR``: a node's record, its
live store's journal and its case files, copied with their hashes and checked.

Backup, while the node runs: the SQLite record first (SQLite's online backup API, a
consistent copy while the node goes on writing), then the single node's journal (its
lines up to now: a torn last line is never acknowledged and ends a replay), then every
file of the archive with its SHA-256, listed in ``DIR/backup.json``. A record in
PostgreSQL is left to ``pg_dump`` (docs/history.md#backups); with Redis, the live state
is Redis's. Restore, the node stopped: every file is copied back and its SHA-256 checked
against ``backup.json``, then ``jointreview verify`` runs over every restored session.
Both show a progress bar (bytes) on standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from signaling.config import Config
from signaling.datadir import hold_data_dir
from signaling.history import db

MANIFEST = "backup.json"
VERSION = 1
RECORD = "history.sqlite3"
JOURNAL = "state/journal.jsonl"
PAGES = 1024  # SQLite pages per backup step: the node writes between steps


def add_parser(sub: Any, config_flags: Any) -> None:
    b = sub.add_parser("backup", help="copy the record, the store's journal and the archive")
    b.add_argument("dir", help="the backup directory (created; must be empty)")
    b.add_argument("--json", action="store_true", help="a JSON summary as the last line")
    config_flags(b)
    r = sub.add_parser("restore", help="restore a backup (node stopped), then verify it")
    r.add_argument("dir", help="a directory made by jointreview backup")
    r.add_argument("--force", action="store_true", help="overwrite a data dir that has data")
    r.add_argument("--json", action="store_true", help="a JSON summary as the last line")
    config_flags(r)


def _bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr, leave=True)


def _copy(src: Path, dst: Path, bar: Any) -> str:
    """Copy a file (fsynced), returning the SHA-256 of what was copied."""
    digest = hashlib.sha256()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    with src.open("rb") as fin, tmp.open("wb") as fout:
        while block := fin.read(1 << 20):
            digest.update(block)
            fout.write(block)
            bar.update(len(block))
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)
    return digest.hexdigest()


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    skip = (".part", ".tmp", ".repair")
    return sorted(
        p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.suffix not in skip
    )


def backup_record(path: Path, dst: Path) -> None:
    """SQLite's online backup: a consistent copy while the node writes (in steps)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    out = sqlite3.connect(dst)
    bar = _bar(0, "record")
    try:

        def progress(status: int, remaining: int, total: int) -> None:
            bar.total = total
            bar.n = total - remaining
            bar.refresh()

        with out:
            src.backup(out, pages=PAGES, progress=progress)
    finally:
        bar.close()
        out.close()
        src.close()


def backup(config: Config, target: Path) -> dict[str, Any]:
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"{target} is not empty")
    target.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"version": VERSION, "made_at": time.time(), "record": None}
    url = db.url_of(config.database_url, config.data_dir)
    if db.kind_of(url) == "sqlite":
        source = Path(url.split(":///", 1)[1])
        if source.is_file():
            backup_record(source, target / RECORD)
            doc["record"] = {"path": RECORD, "sha256": _sha(target / RECORD)}
    else:
        doc["record_note"] = "the record is in PostgreSQL: back it up with pg_dump"
    journal = config.data_dir / JOURNAL
    entries: list[dict[str, Any]] = []
    archive = config.data_dir / "archive"
    files = _files(archive)
    sizes = [p.stat().st_size for p in files]
    extra = journal.stat().st_size if not config.redis_url and journal.is_file() else 0
    bar = _bar(sum(sizes) + extra, "archive")
    try:
        if extra:
            doc["journal"] = {"path": JOURNAL, "sha256": _copy(journal, target / JOURNAL, bar)}
        for path, size in zip(files, sizes, strict=True):
            rel = path.relative_to(archive).as_posix()
            sha = _copy(path, target / "archive" / rel, bar)
            entries.append({"path": rel, "size": size, "sha256": sha})
    finally:
        bar.close()
    doc["archive"] = entries
    body = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")
    (target / MANIFEST).write_bytes(body)
    return doc


def restore(config: Config, source: Path, force: bool) -> tuple[dict[str, Any], list[str]]:
    """Copy a backup back; the problems found checking each file against its hash."""
    doc = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    data_dir, archive = config.data_dir, config.data_dir / "archive"
    url = db.url_of(config.database_url, data_dir)
    record = Path(url.split(":///", 1)[1]) if db.kind_of(url) == "sqlite" else None
    has_data = _files(archive) or (record is not None and record.is_file())
    if has_data and not force:
        raise ValueError(f"{data_dir} has a record or case files already (--force overwrites)")
    problems: list[str] = []
    entries = list(doc.get("archive") or [])
    total = sum(int(e["size"]) for e in entries)
    wanted = [(doc.get("journal"), data_dir / JOURNAL)]
    if record is not None:
        wanted.append((doc.get("record"), record))
        for suffix in ("-wal", "-shm"):  # an old file's, never to be replayed on the copy
            Path(f"{record}{suffix}").unlink(missing_ok=True)
    bar = _bar(total, "restore")
    try:
        for part, dst in wanted:
            if part:
                if _copy(source / part["path"], dst, bar) != part["sha256"]:
                    problems.append(f"{part['path']}: SHA-256 differs from {MANIFEST}")
        if force and archive.is_dir():
            shutil.rmtree(archive)
        for entry in entries:
            sha = _copy(source / "archive" / entry["path"], archive / entry["path"], bar)
            if sha != entry["sha256"]:
                problems.append(f"archive/{entry['path']}: SHA-256 differs from {MANIFEST}")
    finally:
        bar.close()
    return doc, problems


def verify_all(config: Config) -> tuple[int, int]:
    """``jointreview verify`` over every restored session: (sessions, failed)."""
    from recording.retention import sealed_sessions
    from recording.verify import verify_session

    from .verify_command import details, store_events

    archive = config.data_dir / "archive"
    sessions = sealed_sessions(archive)
    cache: dict[str, Any] = {}
    failed = 0
    for case_id, session_id, _ in sessions:
        if case_id not in cache:
            cache[case_id] = asyncio.run(store_events(config, case_id))
        events = cache[case_id]
        mine = None if events is None else [e for e in events if e.get("session_id") == session_id]
        report = verify_session(archive, case_id, session_id, mine)
        if not report.ok:
            failed += 1
            print(f"FAIL {case_id}/{session_id}: {len(report.problems)} difference(s)")
            details(report.problems, report.notes)
    return len(sessions), failed


def main(args: argparse.Namespace, config: Config) -> int:
    target = Path(args.dir)
    lock = None
    try:
        if args.command == "backup":
            doc = backup(config, target)
            n, size = len(doc["archive"]), sum(e["size"] for e in doc["archive"])
            print(
                f"backup in {target}: record {'copied' if doc['record'] else 'not copied'}, "
                f"{n} archive file(s), {size / 1e6:.1f} MB"
            )
            summary: dict[str, Any] = {"files": n, "bytes": size, "record": bool(doc["record"])}
            code = 0
        else:
            if not config.redis_url:
                lock = hold_data_dir(config.data_dir)
                if lock is None:
                    print(
                        "jointreview restore: a server runs on this data directory; stop it",
                        file=sys.stderr,
                    )
                    return 1
            doc, problems = restore(config, target, args.force)
            for line in problems:
                print(f"  - {line}")
            sessions, failed = verify_all(config)
            print(
                f"restored {len(doc['archive'])} archive file(s); {len(problems)} hash "
                f"mismatch(es); verify: {sessions - failed} of {sessions} session(s) OK"
            )
            summary = {
                "files": len(doc["archive"]),
                "mismatches": len(problems),
                "sessions": sessions,
                "failed": failed,
            }
            code = 1 if problems or failed else 0
    except (OSError, ValueError) as exc:
        print(f"jointreview {args.command}: {exc}", file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            lock.close()
    if args.json:
        print(json.dumps(summary))
    return code
