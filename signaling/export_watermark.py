"""A person's download of the composite export, watermarked (``export_watermark``,
issue #18): who downloaded it and when, burned into the picture (recording/watermark.py).

The case file's own export stays as sealed in its addendum; each person gets a copy made
for them, under ``<data_dir>/watermarked/<session>/`` (outside the archive: never part of
a case file), kept for the audit's ten minutes so that a download resumed or repeated
meanwhile (Range requests) gets the same bytes, then removed. Copies are made one at a
time per node, on a worker thread (decoding and encoding again: seconds for a short
session, minutes for hours of video). The download's ``casefile.downloaded`` event
carries the watermark's text (the audit trail mirrors it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

from recording.watermark import burn

from .directory import Directory
from .models import Actor

KEEP_S = 600.0  # as the download audit's dedup window (api_replay.AUDIT_DEDUP_S)
DIR = "watermarked"

_locks: dict[str, asyncio.Lock] = {}
_one_at_a_time: asyncio.Semaphore | None = None


def text_for(viewer: Actor, directory: Directory, when: float) -> str:
    """导出 · name · department · local time."""
    dept = directory.department(viewer.dept) if viewer.dept else None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    parts = ["导出", viewer.name or viewer.sub, dept.name if dept else viewer.dept, stamp]
    return " · ".join(p for p in parts if p)


async def copy_for(
    data_dir: Path,
    session_id: str,
    source: Path,
    viewer: Actor,
    directory: Directory,
    now: float,
    font: str | None = None,
) -> tuple[Path, str]:
    """(path, text) of ``viewer``'s watermarked copy of ``source``: the one made for them
    in the last ten minutes, or one made now."""
    global _one_at_a_time
    key = hashlib.sha256(f"{session_id}\0{viewer.sub}".encode()).hexdigest()[:24]
    root = data_dir / DIR / session_id
    path, facts = root / f"{key}.mp4", root / f"{key}.json"
    lock = _locks.setdefault(key, asyncio.Lock())
    async with lock:
        found = await asyncio.to_thread(_fresh, path, facts, now)
        if found is not None:
            return path, found
        text = text_for(viewer, directory, now)
        if _one_at_a_time is None:
            _one_at_a_time = asyncio.Semaphore(1)
        async with _one_at_a_time:
            await asyncio.to_thread(_make, source, path, facts, text, font, now)
    if not lock.locked():
        _locks.pop(key, None)  # one lock per copy being made, not one per person for good
    return path, text


def _fresh(path: Path, facts: Path, now: float) -> str | None:
    try:
        doc = json.loads(facts.read_text(encoding="utf-8"))
        if now - float(doc["made_at"]) < KEEP_S and path.stat().st_size == doc["size"]:
            return str(doc["text"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _make(source: Path, path: Path, facts: Path, text: str, font: str | None, now: float) -> None:
    _sweep(path.parents[1], now)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        result = burn(source, part, text, font)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    body = {"text": text, "made_at": now, "size": result["size"], "frames": result["frames"]}
    facts.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")


def _sweep(root: Path, now: float) -> None:
    """Copies older than KEEP_S go (by file time: a copy's facts may be gone)."""
    if not root.is_dir():
        return
    for old in root.glob("*/*"):
        try:
            if time.time() - old.stat().st_mtime > KEEP_S:
                old.unlink()
        except OSError:
            continue
