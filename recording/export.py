"""Export one session: render its composite into the case file and list it in the
addendum (``exports.json``). Used by the background job (``signaling.export_jobs``) and by
``jointreview export``; nothing here touches the store.

The MP4 is rendered into ``exports/composite.mp4.part`` (never listed as content, like
every ``.part``), hashed, then renamed into place: a crash leaves either the previous
export or none, never half of one. Exporting again is cheap to decide: when the addendum
already lists the file and the file still matches, the export is done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import addendum
from .archive import sha256_file
from .compose import Options, Progress, render
from .paths import ID_RE, session_dir

COMPOSITE = "exports/composite.mp4"
GENERATOR = "jointreview composite export"


def find_session(archive: Path, session_id: str) -> tuple[str, Path] | None:
    """(case id, directory) of an archived session, found by its id alone."""
    if not ID_RE.match(session_id) or not archive.is_dir():
        return None
    for case_dir in sorted(archive.iterdir()):
        candidate = case_dir / session_id
        if ID_RE.match(case_dir.name) and candidate.is_dir():
            return case_dir.name, candidate
    return None


def done(directory: Path) -> dict[str, Any] | None:
    """The addendum's entry for the composite when the file on disk still matches it."""
    for entry in (addendum.load(directory) or {}).get("exports", []):
        path = directory / COMPOSITE
        if entry.get("path") != COMPOSITE or not path.is_file():
            continue
        if path.stat().st_size == entry.get("size") and sha256_file(path) == entry.get("sha256"):
            return dict(entry)
    return None


def export_session(
    archive: Path,
    case_id: str,
    session_id: str,
    options: Options | None = None,
    *,
    output: Path | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
    again: bool = False,
) -> dict[str, Any]:
    """Render the composite. Into the case file (and its addendum) by default; into
    ``output`` alone when given (a copy for someone: the case file is left as it is).
    Returns what was made: path, size, sha256 and the render's figures."""
    directory = session_dir(archive, case_id, session_id)
    if output is None and not again:
        existing = done(directory)
        if existing is not None:
            return dict(existing, skipped=True, absolute=str(directory / COMPOSITE))
    target = output if output is not None else directory / COMPOSITE
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        result = render(directory, part, options, progress, cancelled)
        digest = sha256_file(part)
        os.replace(part, target)
    finally:
        if part.exists():
            part.unlink()
    entry: dict[str, Any] = {
        "path": COMPOSITE if output is None else str(target),
        "size": target.stat().st_size,
        "sha256": digest,
        "created_at": time.time(),
        "generator": GENERATOR,
        "duration_s": result["duration_s"],
        "width": result["width"],
        "height": result["height"],
        "fps": result["fps"],
        "kbps": result["kbps"],
        "tiles": result["tiles"],
    }
    if output is None:
        addendum.add(directory, case_id, session_id, entry)
    return dict(entry, skipped=False, absolute=str(target), render=result)
