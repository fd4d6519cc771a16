"""Names a person can read for the files of a case file (issue #16 item 8): a track is
``<case>_<who>_<department>_<source>.webm`` instead of ``tracks/p_…_1_0.webm``, a still
``<case>_资料照片_<n>_<who>.jpg``, the composite ``<case>_合成录像.mp4``.

Only display and download names: the stored names stay as sealed (the manifest and
``jointreview verify`` name files by them). Built from the sealed manifest (who was
which participant, each track's source) and, for stills, the sealed timeline (who took
which). The ``Content-Disposition`` of a download carries the name as RFC 6266/5987
``filename*`` (UTF-8) with the stored name as the ASCII ``filename`` fallback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from recording import sheet
from recording.archive import TIMELINE
from recording.export import COMPOSITE

SOURCES = {
    "camera": "摄像头",
    "microphone": "麦克风",
    "document": "文档画面",
    "screen": "共享屏幕",
}
ROLES = {"applicant": "申请人", "clerk": "窗口", "admin": "管理员", "reviewer": "审批人员"}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
NAME_MAX = 120  # characters of a name before its suffix


def _clean(text: str) -> str:
    return _UNSAFE.sub("_", text).strip(" ._") or "_"


def _person(identity: dict[str, Any], dept_name: Callable[[str], str]) -> str:
    who = str(identity.get("name") or ROLES.get(str(identity.get("role")), "") or "参与人")
    dept = identity.get("dept")
    return f"{who}_{dept_name(str(dept))}" if dept else who


def _stills_by(directory: Path) -> dict[str, dict[str, Any]]:
    """snapshot id -> who took it, from the sealed timeline. Blocking I/O."""
    out: dict[str, dict[str, Any]] = {}
    try:
        lines = (directory / TIMELINE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        if '"snapshot.taken"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        sid = (event.get("data") or {}).get("snapshot_id")
        if sid:
            out[str(sid)] = event.get("actor") or {}
    return out


def display_names(
    directory: Path,
    manifest: dict[str, Any],
    paths: list[str],
    dept_name: Callable[[str], str] = lambda d: d,
) -> dict[str, str]:
    """path -> a readable, unique file name (with the stored suffix). Blocking I/O."""
    case = _clean(str(manifest.get("case_id") or "case"))
    people = {
        str(p.get("participant_id")): p.get("identity") or {}
        for p in manifest.get("participants") or []
    }
    tracks = {str(t.get("file")): t for t in (manifest.get("recording") or {}).get("tracks") or []}
    stills = _stills_by(directory) if any(p.startswith("snapshots/") for p in paths) else {}
    names: dict[str, str] = {}
    used: set[str] = set()
    n_still = 0
    for path in sorted(paths):
        suffix = PurePosixPath(path).suffix
        base: str | None = None
        if path in tracks:
            t = tracks[path]
            who = _person(people.get(str(t.get("participant_id")), {}), dept_name)
            base = f"{case}_{who}_{SOURCES.get(str(t.get('source')), str(t.get('source')))}"
        elif path.startswith("snapshots/"):
            n_still += 1
            taker = stills.get(PurePosixPath(path).stem)
            who = f"_{_person(taker, dept_name)}" if taker else ""
            base = f"{case}_资料照片_{n_still}{who}"
        elif path == COMPOSITE:
            base = f"{case}_合成录像"
        elif path == sheet.NAME:
            base = f"{case}_会办意见单"
        if base is None:
            base = f"{case}_{PurePosixPath(path).stem}"
        base = _clean(base)[:NAME_MAX]
        name, n = base + suffix, 1
        while name in used:
            n += 1
            name = f"{base}_{n}{suffix}"
        used.add(name)
        names[path] = name
    return names


def content_disposition(name: str, fallback: str) -> str:
    """An attachment named ``name`` (UTF-8, RFC 5987), ``fallback`` for old clients."""
    ascii_name = re.sub(r"[^A-Za-z0-9._~-]", "_", fallback) or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
