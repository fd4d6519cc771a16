"""Replay at once: a recorded session described for a player, from its track index
(``recording.track_index``) and the case timeline, plus the short-lived grants that let a
``<video>`` element fetch one recorded file (no export needed).

Time: ``t`` = 0 is the session's recording start, the earliest wall-clock start of its
recording runs and tracks in ``recording.json``. A track's file starts (pts 0) at its
``started_at``, so it plays from ``offset_s = started_at - origin``; an event at ``ts``
is at ``t = ts - origin`` (negative: before the recording began).

Grants: ``<payload>.<signature>``, both base64url, where the payload is the compact JSON
``{"s": session, "t": track, "u": viewer, "e": expiry}`` and the signature is
HMAC-SHA256 over ``"jr-replay-v1." + payload`` with a random key: on a single node in
``<data_dir>/replay_grant_key`` (0600, ``datadir.ensure_grant_key``, registered with
``use_local_key``), never in the journal; with Redis in the store (``replay:grant-key``,
made once, shared by every node). A grant opens exactly one file until it expires; it is
minted only for a viewer the replay rules let in, never outlives the viewer's own token,
and one whose lifetime exceeds ``grant_max_ttl_s`` is refused (a forged one).

Evidence first: a track is served only once the session's case file is sealed, and only
if ``manifest.json`` lists its file with the size it has now (``sealed_file``). A file
still being written (a live session, or one whose sealing has not finished) is never
served, not even in part: it has no hash yet, and its last bytes may still change. A
live session's description is its timeline so far, without tracks. Nothing here does
I/O except ``grant_key``, ``track_file`` and ``sealed_file``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .state import Store

TRACK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")
GRANT_RE = re.compile(r"^[A-Za-z0-9_-]{8,1024}\.[A-Za-z0-9_-]{43}$")
GRANT_KEY_DOC = "replay:grant-key"
GRANT_MIN_S = 15 * 60.0  # a grant lasts the recording's length plus this,
GRANT_MAX_S = 8 * 3600.0  # at most this long, and never past the viewer's token
GRANT_LIFETIME_MAX_S = 24 * 3600.0  # check(): a longer grant was not minted here
CONTENT_TYPES = {
    ("webm", "video"): "video/webm",
    ("webm", "audio"): "audio/webm",
    ("mp4", "video"): "video/mp4",
    ("mp4", "audio"): "audio/mp4",
}
PLAYABLE_STATES = ("open", "closed", "recovered_after_crash")

# Timeline event type -> (marker type, state)
MARKERS: dict[str, tuple[str, str | None]] = {
    "participant.joined": ("join", None),
    "participant.rejoined": ("join", None),
    "participant.left": ("leave", None),
    "invitation.created": ("invitation", "created"),
    "invitation.accepted": ("invitation", "accepted"),
    "invitation.declined": ("invitation", "declined"),
    "invitation.unanswered": ("invitation", "unanswered"),
    "snapshot.taken": ("snapshot", None),
    "chat.message": ("chat", None),
    "opinion.filed": ("opinion", None),
    "recording.started": ("recording", "started"),
    "recording.stopped": ("recording", "stopped"),
    "recording.failed": ("recording", "failed"),
    "recording.gap": ("recording", "gap"),  # at its end: when the recording resumed
}
# What of an event's data a marker shows, by marker type.
MARKER_DATA = {
    "join": ("participant_id",),
    "leave": ("participant_id", "reason"),
    "invitation": ("invitation_id", "dept", "level", "reviewer", "reason"),
    "snapshot": ("snapshot_id", "content_type", "size"),
    "chat": ("participant_id", "text", "purged"),  # purged: by retention (#18), no text
    "opinion": ("opinion_id", "decision", "missing", "refer_to", "note"),
    "recording": ("reason", "policy", "code", "track_id", "message", "start", "end", "resumed"),
}


class GrantError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- the recording ----------------------------------------------------------------------


def content_type(entry: dict[str, Any]) -> str | None:
    return CONTENT_TYPES.get((str(entry.get("container")), str(entry.get("kind"))))


def playable(index: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """The track index's tracks that have a file to play, each with its replay track id:
    the index's ``track_id``, and ``<track_id>~<n>`` for its n-th recording (a track
    recorded again after a stop/start or a restart)."""
    out: list[tuple[str, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for entry in (index or {}).get("tracks") or []:
        if not isinstance(entry, dict):
            continue
        base = str(entry.get("track_id") or "")
        if not TRACK_ID_RE.match(base) or "~" in base:
            continue
        seen[base] = seen.get(base, 0) + 1
        if entry.get("state") not in PLAYABLE_STATES or content_type(entry) is None:
            continue
        if not isinstance(entry.get("started_at"), int | float) or not entry.get("file"):
            continue  # nothing was written (no frame arrived), or no file to name
        out.append((base if seen[base] == 1 else f"{base}~{seen[base]}", entry))
    return out


def origin_of(index: dict[str, Any] | None) -> float | None:
    """When the session's recording started (Unix seconds), or None if it never did."""
    starts = [
        float(x["started_at"])
        for x in [*((index or {}).get("runs") or []), *((index or {}).get("tracks") or [])]
        if isinstance(x, dict) and isinstance(x.get("started_at"), int | float)
    ]
    return min(starts) if starts else None


def track_duration(entry: dict[str, Any]) -> float | None:
    if isinstance(entry.get("duration_s"), int | float):
        return float(entry["duration_s"])
    if entry.get("state") != "open" and isinstance(entry.get("ended_at"), int | float):
        return max(0.0, float(entry["ended_at"]) - float(entry["started_at"]))
    return None  # still being written


def end_of(index: dict[str, Any] | None, now: float) -> float | None:
    """When the recording ended: the last track's or run's end; ``now`` while open."""
    ends: list[float] = []
    for _, entry in playable(index):
        duration = track_duration(entry)
        ends.append(now if duration is None else float(entry["started_at"]) + duration)
    for run in (index or {}).get("runs") or []:
        if isinstance(run, dict):
            stopped = run.get("stopped_at")
            if run.get("state") == "open":
                ends.append(now)
            elif isinstance(stopped, int | float):
                ends.append(float(stopped))
    return max(ends) if ends else None


def track_file(directory: Path, entry: dict[str, Any]) -> Path | None:
    """The track's file, only if it really lies in the session's ``tracks/`` folder
    (the track index's name is resolved, symbolic links included, and checked)."""
    folder = (directory / "tracks").resolve()
    try:
        path = (directory / str(entry.get("file"))).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if path.parent != folder or not path.is_file():
        return None
    return path


def sealed_file(
    directory: Path, entry: dict[str, Any], manifest: dict[str, Any] | None
) -> Path | None:
    """The track's file (as ``track_file``), only if the sealed manifest vouches for it:
    listed under its path with the very size it has now."""
    path = track_file(directory, entry)
    if path is None or not isinstance(manifest, dict):
        return None
    rel = f"tracks/{path.name}"
    for listed in manifest.get("files") or []:
        if isinstance(listed, dict) and listed.get("path") == rel:
            return path if listed.get("size") == path.stat().st_size else None
    return None


# -- the timeline -----------------------------------------------------------------------


def markers(
    events: list[dict[str, Any]],
    origin: float,
    invitations: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Timeline markers from the session's events (in log order). ``invitations`` by
    id fill in who an answered invitation was for."""
    out = []
    for e in events:
        found = MARKERS.get(str(e.get("type")))
        if found is None or not isinstance(e.get("ts"), int | float):
            continue
        kind, state = found
        data = dict(e.get("data") or {})
        shown = {k: data[k] for k in MARKER_DATA[kind] if data.get(k) not in (None, "", [])}
        if state is not None:
            shown["state"] = state
        if kind == "invitation":
            inv = invitations.get(str(data.get("invitation_id"))) or {}
            for k in ("dept", "level", "reviewer", "reviewer_name"):
                if inv.get(k) is not None:
                    shown.setdefault(k, inv[k])
        if kind == "snapshot" and data.get("snapshot_id"):
            shown["url"] = f"/api/snapshots/{data['snapshot_id']}"
        out.append(
            {
                "t": round(float(e["ts"]) - origin, 3),
                "ts": float(e["ts"]),
                "seq": int(e.get("seq") or 0),
                "type": kind,
                "event": str(e.get("type")),
                "actor": e.get("actor"),
                "data": shown,
            }
        )
    return out


# -- grants -----------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"jr-replay-v1.{payload}".encode(), hashlib.sha256).digest())


def grant_ttl(duration_s: float | None, max_s: float = GRANT_MAX_S) -> float:
    return min(GRANT_MAX_S, max_s, GRANT_MIN_S + max(0.0, duration_s or 0.0))


def casefile_url(session_id: str, path: str | None = None) -> str:
    """The case file's index (``api_archive``), or one listed file of it."""
    base = f"/api/sessions/{session_id}/casefile"
    return base if path is None else f"{base}/files/{quote(path, safe='')}"


def grant_expiry(
    now: float,
    duration_s: float | None,
    token_exp: float | None,
    max_s: float = GRANT_LIFETIME_MAX_S,
) -> float:
    """When grants minted now for a recording this long expire: never past the token,
    never beyond ``max_s`` (``grant_max_ttl_s``) from now."""
    expires = now + grant_ttl(duration_s, max_s)
    return expires if token_exp is None else min(expires, float(token_exp))


def mint(
    key: bytes,
    session_id: str,
    track_id: str,
    sub: str,
    expires_at: float,
    kind: str = "",
    actor: dict[str, Any] | None = None,
) -> str:
    """A grant for one track (``kind`` ""), or one case-file path (``kind`` "file",
    with the ``actor`` it was minted for: its downloads are audited under that name)."""
    body: dict[str, Any] = {"s": session_id, "t": track_id, "u": sub, "e": int(expires_at)}
    if kind:
        body["k"] = kind
    if actor:
        body["a"] = actor
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_sign(key, payload)}"


def check(
    key: bytes, grant: str, now: float, max_s: float = GRANT_LIFETIME_MAX_S
) -> dict[str, Any]:
    """The grant's ``{s, t, u, e}`` if it is genuine, unexpired and no longer-lived than
    ``max_s`` (``grant_max_ttl_s``: no grant minted here outlives it, so a longer one was
    forged with a stolen key); else ``GrantError``."""
    if not GRANT_RE.match(grant):
        raise GrantError("invalid_grant", "this replay link is not valid")
    payload, signature = grant.split(".")
    if not hmac.compare_digest(_sign(key, payload), signature):
        raise GrantError("invalid_grant", "this replay link is not valid")
    try:
        body = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        raise GrantError("invalid_grant", "this replay link is not valid") from None
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in "stu"):
        raise GrantError("invalid_grant", "this replay link is not valid")
    if not isinstance(body.get("e"), int) or body["e"] <= now:
        raise GrantError("grant_expired", "this replay link has expired; open the recording again")
    if body["e"] - now > max_s:
        raise GrantError("invalid_grant", "this replay link is not valid (lifetime too long)")
    return body


# Keys kept outside the store (a single node's file), by the store they stand in for.
_LOCAL_KEYS: weakref.WeakKeyDictionary[Store, bytes] = weakref.WeakKeyDictionary()


async def use_local_key(store: Store, key: bytes) -> None:
    """Sign this store's grants with ``key`` (a single node's 0600 file) and retire a key
    an older version kept in the store: overwritten now, gone from the journal at its
    next compaction; grants signed with it no longer open anything."""
    _LOCAL_KEYS[store] = key
    await store.update(GRANT_KEY_DOC, lambda doc: {"moved": "data_dir"} if "key" in doc else None)


async def grant_key(store: Store) -> bytes:
    """The key grants are signed with: the node's own (``use_local_key``), or random,
    made once in the store and the same on every node (Redis)."""
    local = _LOCAL_KEYS.get(store)
    if local is not None:
        return local
    doc = await store.get(GRANT_KEY_DOC)
    if doc is None:
        await store.create(GRANT_KEY_DOC, {"key": secrets.token_hex(32)})
        doc = await store.get(GRANT_KEY_DOC)
    assert doc is not None
    return bytes.fromhex(str(doc["key"]))
