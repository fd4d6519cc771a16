"""The case file on disk: a session's manifest, its hash-chained timeline, and the
recovery of recordings a crash left open.

``<archive>/<case>/<session>/`` (``paths.session_dir``)::

    tracks/<name>.webm|mp4   per-track recordings (recording.live)
    snapshots/<id>.jpg|png   document stills (signaling.casefile)
    recording.json           the track index: runs and tracks (recording.track_index)
    timeline.jsonl           the session's events, one canonical JSON object a line
    manifest.json            participants, times, files with SHA-256, chat (counts and
                             hashes, no text), opinions, and the timeline's hash chain

The chain (manifest ``version`` 2, the redactable seal): each event is hashed alone,
``e[i] = H(canonical JSON of event i)``, and chained, ``h[0] =
H("jointreview-timeline:<case>:<session>")``, ``h[i] = H(h[i-1] + e[i])`` (hex digests,
UTF-8), where H is the seal's hash: SHA-256, or SM3 with ``seal_algorithm = "sm2-sm3"``
(seal.py; the manifest's ``seal`` says which, and ``manifest.sig`` signs the manifest).
The manifest keeps every ``e[i]``, ``h[i]`` and the head, so an event edited, removed or
inserted shows up at its position, and a chat message purged by retention (its line
replaced by a stub that carries its ``e[i]``: ``recording/redaction.py``) still checks.
Version 1 (before the redactable seal) chained whole events, ``h[i] = H(h[i-1] +
canonical JSON of event i)``, and listed the chat's text: its chat cannot be purged
alone. Nothing here imports the signaling layer: events and records come in as plain
dictionaries.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import seal as sealing
from . import track_index
from .paths import ID_RE, session_dir
from .repair import repair

MANIFEST = "manifest.json"
TIMELINE = "timeline.jsonl"
VERSION = 2  # the redactable seal: events hashed alone, then chained (1: whole events)
CHAT = "chat.message"
# Never listed as content: they describe the content, or are a writer's scratch files.
# exports.json (``addendum``) vouches for what was made after sealing, and is checked
# on its own.
NOT_CONTENT = {
    MANIFEST,
    TIMELINE,
    sealing.SIGNATURE,
    f".{sealing.SIGNATURE}.tmp",
    f".{track_index.NAME}.tmp",
    "exports.json",
    ".exports.json.tmp",
    "purged.json",  # retention's tombstone (recording/retention.py)
    ".purged.json.tmp",
}


def canonical(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def genesis(case_id: str, session_id: str, alg: str = "sha256") -> str:
    return sealing.digest(f"jointreview-timeline:{case_id}:{session_id}".encode(), alg)


def chain(
    case_id: str, session_id: str, events: Iterable[dict[str, Any]], alg: str = "sha256"
) -> list[str]:
    """The hash of each event, each over the previous one (``alg``: the seal's hash)."""
    prev = genesis(case_id, session_id, alg)
    out = []
    for event in events:
        prev = sealing.digest((prev + canonical(event)).encode("utf-8"), alg)
        out.append(prev)
    return out


def event_hash(event: dict[str, Any], alg: str = "sha256") -> str:
    """``e[i]``: one event's own hash (version 2), what a purged chat stub keeps."""
    return sealing.digest(canonical(event).encode("utf-8"), alg)


def chain_hashes(
    case_id: str, session_id: str, hashes: Iterable[str], alg: str = "sha256"
) -> list[str]:
    """Version 2's chain over the events' own hashes: ``h[i] = H(h[i-1] + e[i])``."""
    prev = genesis(case_id, session_id, alg)
    out = []
    for e in hashes:
        prev = sealing.digest((prev + e).encode("utf-8"), alg)
        out.append(prev)
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def content_files(directory: Path) -> list[Path]:
    """Every file of the session directory that the manifest vouches for."""
    out = []
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(directory).as_posix()
        if rel in NOT_CONTENT or rel.endswith((".repair", ".part")):
            continue
        out.append(path)
    return out


def file_entries(directory: Path, alg: str = "sha256") -> list[dict[str, Any]]:
    return [
        {
            "path": p.relative_to(directory).as_posix(),
            "size": p.stat().st_size,
            alg: sealing.digest_file(p, alg),
        }
        for p in content_files(directory)
    ]


def participants_from(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who took part, with every stretch of presence, from the timeline."""
    people: dict[str, dict[str, Any]] = {}
    for e in events:
        kind = str(e.get("type", ""))
        pid = (e.get("data") or {}).get("participant_id")
        if not kind.startswith("participant.") or not pid:
            continue
        actor = e.get("actor") or {}
        person = people.setdefault(
            pid,
            {
                "participant_id": pid,
                "identity": {k: actor.get(k) for k in ("sub", "name", "role", "dept", "level")},
                "joined_at": e.get("ts"),
                "left_at": None,
                "left_reason": None,
                "presence": [],
            },
        )
        stretches = person["presence"]
        is_open = bool(stretches) and stretches[-1]["until"] is None
        if kind in ("participant.joined", "participant.rejoined", "participant.resumed"):
            if not is_open:
                stretches.append({"from": e.get("ts"), "until": None, "ended_by": None})
        elif kind in ("participant.disconnected", "participant.left"):
            if is_open:
                stretches[-1]["until"] = e.get("ts")
                stretches[-1]["ended_by"] = kind.split(".")[1]
            if kind == "participant.left":
                person["left_at"] = e.get("ts")
                person["left_reason"] = (e.get("data") or {}).get("reason")
    return list(people.values())


def _chat(events: list[dict[str, Any]], version: int, alg: str) -> list[dict[str, Any]]:
    """The chat as the manifest lists it. Version 2: when and the event's hash, no text
    nor sender (the text is the timeline's, which retention may purge: the signed
    manifest must not hold it); version 1 listed the text."""
    if version >= 2:
        return [
            {"seq": e.get("seq"), "ts": e.get("ts"), "event_hash": event_hash(e, alg)}
            for e in events
            if e.get("type") == CHAT
        ]
    return [
        {
            "seq": e.get("seq"),
            "ts": e.get("ts"),
            "participant_id": (e.get("data") or {}).get("participant_id"),
            "sender": e.get("actor"),
            "text": (e.get("data") or {}).get("text"),
        }
        for e in events
        if e.get("type") == CHAT
    ]


def _opinions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"seq": e.get("seq"), "ts": e.get("ts"), "author": e.get("actor"), **(e.get("data") or {})}
        for e in events
        if e.get("type") == "opinion.filed"
    ]


def _recording_summary(directory: Path) -> dict[str, Any]:
    """The recording as its track index describes it; nothing recorded (nobody joined, no
    media, recording off) is an empty summary, so every manifest has a track list."""
    index = track_index.load(directory) or {}
    keep = (
        "file",
        "track_id",
        "kind",
        "source",
        "codec",
        "participant_id",
        "owner",
        "state",
        "started_at",
        "ended_at",
        "duration_s",
        "error",
    )
    tracks = [{k: t.get(k) for k in keep} for t in index.get("tracks", [])]
    runs = index.get("runs", [])
    return {
        "runs": runs,
        "tracks": tracks,
        "crashes": sum(1 for r in runs if r.get("state") == "recovered_after_crash"),
        "recovered_after_crash": [
            t["file"] for t in tracks if t.get("state") == "recovered_after_crash"
        ],
    }


def write_manifest(
    archive: Path,
    session: dict[str, Any],
    events: list[dict[str, Any]],
    generator: str = "jointreview",
    before_listing: Callable[[Path, str], None] | None = None,
    sealer: sealing.Sealer | None = None,
    version: int = VERSION,
) -> dict[str, Any]:
    """Write timeline.jsonl and manifest.json for an ended session; returns the manifest.

    ``session`` is the stored session record; ``events`` the case's events of this
    session, in log order, as stored. ``before_listing(directory, chain_head)`` may add
    files made from the sealed timeline (the opinion sheet, ``recording.sheet``): called
    once the timeline is written, before the files are listed, so the manifest lists them.
    ``sealer``: the node's seal (recording/seal.py): its hash for the files and the
    chain, and ``manifest.sig`` beside the manifest; None: SHA-256, unsigned.
    ``version``: 2 (the redactable seal); 1 only to make old case files (tests).
    """
    alg = sealer.hash if sealer is not None else "sha256"
    case_id, session_id = str(session["case_id"]), str(session["session_id"])
    directory = session_dir(archive, case_id, session_id)
    directory.mkdir(parents=True, exist_ok=True)
    own = [event_hash(e, alg) for e in events] if version >= 2 else []
    hashes = (
        chain_hashes(case_id, session_id, own, alg)
        if version >= 2
        else chain(case_id, session_id, events, alg)
    )
    lines = "".join(canonical(e) + "\n" for e in events).encode("utf-8")
    _atomic_write(directory / TIMELINE, lines)
    head = hashes[-1] if hashes else genesis(case_id, session_id, alg)
    listed = [
        {"seq": e.get("seq"), "type": e.get("type"), "hash": h}
        for e, h in zip(events, hashes, strict=True)
    ]
    for entry, e in zip(listed, own, strict=False):  # version 2: each event's own hash
        entry["event_hash"] = e
    if before_listing is not None:
        before_listing(directory, head)
    manifest = {
        "version": version,
        "case_id": case_id,
        "session_id": session_id,
        "generated_at": time.time(),
        "generator": generator,
        "session": {
            k: session.get(k)
            for k in (
                "status",
                "created_at",
                "created_by",
                "ended_at",
                "ended_by",
                "applicant_name",
                "matter",
                "window",
            )
        },
        "participants": participants_from(events),
        "recording": _recording_summary(directory),
        "files": file_entries(directory, alg),
        "chat": _chat(events, version, alg),
        "opinions": _opinions(events),
        "timeline": {
            "file": TIMELINE,
            alg: sealing.digest(lines, alg),
            "count": len(events),
            "genesis": genesis(case_id, session_id, alg),
            "head": head,
            "events": listed,
        },
    }
    if sealer is not None:
        manifest["seal"] = sealer.block()
    body = json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")
    if sealer is not None:  # the signature first: no signed manifest is ever without it
        sealing.write_signature(directory, sealer, body)
    _atomic_write(directory / MANIFEST, body)
    manifest["manifest_sha256"] = hashlib.sha256(body).hexdigest()
    return manifest


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# -- after a crash ------------------------------------------------------------------------


def open_track_indexes(archive: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Session directories whose recording.json still says something is being written."""
    out: list[tuple[Path, dict[str, Any]]] = []
    if not archive.is_dir():
        return out
    for path in sorted(archive.glob(f"*/*/{track_index.NAME}")):
        directory = path.parent
        if not ID_RE.match(directory.name) or not ID_RE.match(directory.parent.name):
            continue
        try:
            index = track_index.load(directory)
        except (OSError, ValueError):
            continue
        if index is not None and track_index.is_open(index):
            out.append((directory, index))
    return out


def recover_session(
    directory: Path, index: dict[str, Any], node: str | None = None
) -> dict[str, Any]:
    """Repair every track a crash left open and mark it (and its run) recovered.
    Runs on a worker thread at start, before this node records anything. ``node``: only
    the runs that node left open, and their tracks (a dead node's, repaired on a shared
    archive by the node that took its session over, before anyone records it again)."""
    now = time.time()
    runs = set()
    for number, run in enumerate(index.get("runs", [])):
        if run.get("state") == "open" and node in (None, run.get("node")):
            run["state"] = "recovered_after_crash"
            run["recovered_at"] = now
            runs.add(number)
    recovered, failed = [], []
    for track in index.get("tracks", []):
        if track.get("state") != "open":
            continue
        if node is not None and int(track.get("run", 0)) not in runs:
            continue
        path = (directory / str(track.get("file", ""))).resolve()
        track["recovered_at"] = now
        if not path.is_relative_to(directory.resolve()) or not path.is_file():
            track["state"] = "failed"
            track["error"] = "the file was not found after the crash"
            failed.append(track.get("file"))
            continue
        try:
            result = repair(path)
        except Exception as exc:  # a file cut before its header: nothing to save
            track["state"] = "failed"
            track["error"] = f"not repairable after the crash: {exc}"
            failed.append(track.get("file"))
            continue
        track.update(state="recovered_after_crash", **result)
        first = track.get("first_packet_at")
        if track.get("started_at") is None and result.get("packets") and first is not None:
            # Frames reached the file before the index had their start (an H.264 fragment
            # is written as it is muxed, up to a batch ahead of the index): placed at the
            # track's first packet, which is at most a keyframe wait earlier, and said so.
            track["started_at"] = first
            track["started_at_estimated"] = True
        if track.get("started_at") is not None:
            # The crash time is unknown; the file says how far it got.
            track["ended_at"] = track["started_at"] + result["duration_s"]
        recovered.append(track.get("file"))
    track_index.save(directory, index)
    return {
        "case_id": index.get("case_id"),
        "session_id": index.get("session_id"),
        "recovered": recovered,
        "failed": failed,
    }
