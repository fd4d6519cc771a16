"""The track index, ``recording.json``: what a session's recording is, written as it
happens (which runs, which tracks, in which state, in which file).

One document per session directory, replaced atomically (write a temporary file, then
rename) whenever a track starts, stops or fails, and every few seconds while sender
reports come in. A crash leaves the last complete version, whose ``open`` entries say
what was still being written: the next start repairs those files and marks them
``recovered_after_crash``.

Layout (version 1)::

    {"version": 1, "case_id", "session_id",
     "runs": [{"started_at", "stopped_at", "host", "pid", "node", "state"}],
     "tracks": [{"file": "tracks/<name>.<ext>", "track_id", "kind", "codec",
                 "clock_rate", "container", "participant_id", "owner", "source",
                 "run", "state", "started_at", "first_rtp_ts", "ended_at",
                 "width", "height", "frames", "gaps", "dropped",
                 "segments": [{"ssrc", "rtp_ts", "pts", "wall"}],
                 "sender_reports": [[ntp, rtp_ts, arrival], ...],
                 "duration_s", "size", "error"}]}

States: a run or track is ``open`` while written, then ``closed``; ``failed`` (a track
whose file could not be written: ``error`` says why); ``recovered_after_crash`` (it was
open when the process died and was repaired afterwards). Times are Unix seconds (wall
clock at arrival). A track's pts 0 is its ``started_at``; ``segments`` map each source's
RTP timestamps onto the file's pts, and sender reports map RTP time to the sender's NTP
clock, so later synchronisation can re-anchor long sessions.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

NAME = "recording.json"
VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def new(case_id: str, session_id: str) -> dict[str, Any]:
    return {
        "version": VERSION,
        "case_id": case_id,
        "session_id": session_id,
        "runs": [],
        "tracks": [],
    }


def load(session_dir: Path) -> dict[str, Any] | None:
    try:
        index = json.loads((session_dir / NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return index if isinstance(index, dict) else None


def save(session_dir: Path, index: dict[str, Any]) -> None:
    """Whole or not at all: a crash mid-write leaves the previous version."""
    path = session_dir / NAME
    tmp = session_dir / f".{NAME}.tmp"
    # One write of a compact document: it is rewritten while media flows.
    tmp.write_text(json.dumps(index, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def file_name(
    index: dict[str, Any], track_id: str, ext: str, session_dir: Path | None = None
) -> str:
    """A file name for a new recording of this track, unique in the session.

    Track ids are built by the server from the participant id and the SDP mid; the mid
    comes from the client's offer, so only letters, digits, '_' and '-' survive, and a
    counter keeps a second recording of the same track (after a stop/start or a restart)
    from overwriting the first. With ``session_dir``, a file already there is not
    reused either (a recording a crash left before the index named it).
    """
    base = _UNSAFE.sub("_", track_id)[:80] or "track"
    used = {t.get("file") for t in index.get("tracks", [])}
    name = f"tracks/{base}.{ext}"
    n = 1
    while name in used or (session_dir is not None and (session_dir / name).is_file()):
        n += 1
        name = f"tracks/{base}~{n}.{ext}"
    return name


def is_open(index: dict[str, Any]) -> bool:
    return any(r.get("state") == "open" for r in index.get("runs", [])) or any(
        t.get("state") == "open" for t in index.get("tracks", [])
    )
