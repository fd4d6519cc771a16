"""HTTP routes to replay a recorded session at once, from its per-track files (registered
on import). Who may replay: clerks, supervisors and admins, and the reviewers an
invitation of that session was for; never an applicant.

- ``GET /api/sessions/{sid}/recording``: the replay description (tracks with their
  offsets, snapshots, timeline markers). Every call is written to the case timeline as
  ``replay.viewed`` (the audit trail), and it mints each track's ``src``: a grant URL a
  ``<video>``/``<audio>`` element can load, since it cannot send a Bearer header.
- ``GET /api/sessions/{sid}/tracks/{track_id}``: one track's file with the Bearer token
  (Range requests); the first fetch of a track by a viewer in ten minutes is written to
  the timeline as ``replay.downloaded``.
- ``GET /api/replay/{grant}``: the same file by its grant (see ``signaling.replay``).

A track id is only ever looked up among the track index's tracks, never joined into a path,
and the file it names must resolve inside the session's ``tracks/`` folder.

A session still in progress is described with its timeline so far and no tracks; its
track files answer 409 ``session_live``. An ended session whose case file is not sealed
yet (the media node is closing the files) answers 409 ``recording_sealing``: a moment
later it is sealed, and only files the manifest vouches for are served
(``replay.sealed_file``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from recording import track_index
from recording.archive import MANIFEST
from recording.paths import session_dir

from . import paging, policy, replay
from .api import PAGE_DEFAULT, PAGE_MAX, Ctx, page, readable_session, route
from .appkeys import CONFIG, STORE
from .auth import Identity
from .core import actor_of
from .errors import Conflict, NotFound, ServiceError, Unauthorized
from .models import Actor, Invitation, Session

log = logging.getLogger(__name__)

MEDIA_TYPES = tuple(sorted(set(replay.CONTENT_TYPES.values())))
AUDIT_DEDUP_S = 600.0


class ReplayOwner(BaseModel):
    sub: str | None = None
    name: str | None = None
    role: str | None = None
    dept: str | None = None
    level: str | None = None


class ReplayTrack(BaseModel):
    track_id: str
    kind: str
    source: str | None = None  # camera, microphone, document
    codec: str | None = None
    content_type: str
    participant_id: str | None = None
    owner: ReplayOwner
    url: str  # with the Bearer token
    src: str  # for <video src>/<audio src>: a grant URL, until ``grants_expire_at``
    offset_s: float  # where it starts on the replay's clock
    duration_s: float | None = None  # None while still being recorded
    started_at: float
    state: str
    width: int | None = None
    height: int | None = None


class ReplaySnapshot(BaseModel):
    snapshot_id: str
    url: str
    t: float
    ts: float
    taken_by: Actor
    content_type: str


class ReplayMarker(BaseModel):
    t: float  # seconds from the recording's start (negative: before it)
    ts: float
    seq: int
    type: str  # join, leave, invitation, snapshot, chat, opinion, recording
    event: str  # the timeline event it comes from
    actor: Actor | None = None
    data: dict[str, Any]


class ReplayTimes(BaseModel):
    state: str  # none, recording, complete
    started_at: float | None = None  # the origin of the replay's clock
    ended_at: float | None = None
    duration_s: float


class ReplayViewer(BaseModel):
    """Who is watching: the page marks every tile with it (web_client/static/watermark.js),
    so a screenshot or a filmed screen names its viewer."""

    sub: str
    name: str
    dept: str | None = None
    dept_name: str | None = None
    at: float  # the server's clock when described: the watermark's time runs from it


class ReplayDescription(BaseModel):
    case_id: str
    session_id: str
    session: Session
    recording: ReplayTimes
    tracks: list[ReplayTrack]
    snapshots: list[ReplaySnapshot]
    markers: list[ReplayMarker]
    # The case file is sealed: tracks are listed (and served) only then.
    sealed: bool = False
    grants_expire_at: float | None = None
    # More markers: GET /api/sessions/{sid}/recording/markers?cursor=...; None: all here.
    markers_next_cursor: str | None = None
    viewer: ReplayViewer | None = None


class ReplayMarkerPage(BaseModel):
    session_id: str
    markers: list[ReplayMarker]
    next_cursor: str | None = None


LIVE = (
    "session_live",
    "this joint review is still in progress: its recording can be replayed once it has "
    "ended and its case file is sealed",
)
SEALING = (
    "recording_sealing",
    "the case file of this joint review is being sealed; its recording can be replayed in a moment",
)


@dataclass
class Recording:
    directory: Path  # the session's case-file folder
    index: dict[str, Any] | None  # the track index, recording.json (None: nothing recorded)
    manifest: dict[str, Any] | None  # manifest.json (None: not sealed yet)


def _load(directory: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    try:
        index = track_index.load(directory)
    except (OSError, ValueError):
        index = None
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    return index, manifest if isinstance(manifest, dict) else None


async def load_recording(service: Any, session: Session) -> Recording:
    try:
        directory = session_dir(service.archive_dir, session.case_id, session.session_id)
    except ValueError:  # ids that could not name a folder: never recorded either
        return Recording(service.archive_dir, None, None)
    index, manifest = await asyncio.to_thread(_load, directory)
    if session.status != "ended":
        manifest = None  # (a stale file cannot vouch for a session still running)
    return Recording(directory, index, manifest)


# -- the description ----------------------------------------------------------------------


def _viewer(service: Any, who: Identity, now: float) -> ReplayViewer:
    dept = service.directory.department(who.dept) if who.dept else None
    return ReplayViewer(
        sub=who.sub,
        name=who.name or who.sub,
        dept=who.dept,
        dept_name=dept.name if dept is not None else None,
        at=now,
    )


@route(
    "GET",
    "/api/sessions/{session_id}/recording",
    "Describe a session's recording for replay",
    policy.REPLAYERS,
    response=ReplayDescription,
    tag="replay",
    query={"limit": f"1..{PAGE_MAX} (default {PAGE_DEFAULT}): markers"},
)
async def describe(ctx: Ctx) -> Any:
    session, invitations = await readable_session(ctx)
    service, who = ctx.service, ctx.identity
    sid = session.session_id
    rec = await load_recording(service, session)
    directory, index = rec.directory, rec.index
    if session.status == "ended" and rec.manifest is None and replay.playable(index):
        raise Conflict(*SEALING)  # files being closed: no replay shows half of one
    now = service.clock()
    origin = replay.origin_of(index)
    end = replay.end_of(index, now) if origin is not None else None
    duration = max(0.0, (end or 0.0) - (origin or 0.0))
    max_s = ctx.request.app[CONFIG].grant_max_ttl_s
    expires = replay.grant_expiry(now, duration, who.exp, max_s)
    key = await replay.grant_key(ctx.request.app[STORE])
    tracks = []
    for track_id, entry in replay.playable(index):
        if await asyncio.to_thread(replay.sealed_file, directory, entry, rec.manifest) is None:
            continue  # live, or not vouched for by the manifest
        tracks.append(
            ReplayTrack(
                track_id=track_id,
                kind=str(entry.get("kind")),
                source=entry.get("source"),
                codec=entry.get("codec"),
                content_type=replay.content_type(entry) or "application/octet-stream",
                participant_id=entry.get("participant_id"),
                owner=ReplayOwner.model_validate(entry.get("owner") or {}),
                url=f"/api/sessions/{sid}/tracks/{track_id}",
                src="/api/replay/" + replay.mint(key, sid, track_id, who.sub, expires),
                offset_s=round(float(entry["started_at"]) - (origin or 0.0), 3),
                duration_s=replay.track_duration(entry),
                started_at=float(entry["started_at"]),
                state=str(entry.get("state")),
                width=entry.get("width"),
                height=entry.get("height"),
            )
        )
    # Without a recording the clock starts with the session: its events still line up.
    zero = origin if origin is not None else session.created_at
    limit, _ = page(ctx)
    marks, marks_next = await _markers(service, session, invitations, zero, limit, None)
    snapshots = [
        ReplaySnapshot(
            snapshot_id=s.snapshot_id,
            url=s.url,
            t=round(s.created_at - zero, 3),
            ts=s.created_at,
            taken_by=s.taken_by,
            content_type=s.content_type,
        )
        for s in await ctx.record.snapshots([sid])
    ]
    state = (
        "none"
        if origin is None
        else "recording"
        if track_index.is_open(index or {})
        else "complete"
    )
    description = ReplayDescription(
        case_id=session.case_id,
        session_id=sid,
        session=session,
        recording=ReplayTimes(
            state=state,
            started_at=origin,
            ended_at=end,
            duration_s=round(duration, 3),
        ),
        tracks=tracks,
        snapshots=snapshots,
        markers=marks,
        markers_next_cursor=marks_next,
        sealed=rec.manifest is not None,
        grants_expire_at=expires if tracks else None,
        viewer=_viewer(service, who, now),
    )
    # The audit trail: after a session is sealed, these are events beyond its manifest,
    # which `jointreview verify` reports as notes, not as differences.
    await service.record(
        session.case_id,
        "replay.viewed",
        session_id=sid,
        actor=actor_of(who),
        tracks=len(tracks),
        recording=state,
    )
    return description


async def _markers(
    service: Any,
    session: Session,
    invitations: list[Invitation],
    zero: float,
    limit: int,
    cursor: str | None,
) -> tuple[list[ReplayMarker], str | None]:
    """A page of the session's timeline markers (its events only, in order)."""
    at = paging.decode(paging.MARKERS, cursor, {"q": int})
    sid = session.session_id
    events, next_cursor = await service.events_page(
        session.case_id, 0 if at is None else at["q"], limit, lambda x: x == sid
    )
    by_id = {i.invitation_id: i.model_dump() for i in invitations}
    docs = [e.model_dump(mode="json") for e in events]
    marks = [ReplayMarker.model_validate(m) for m in replay.markers(docs, zero, by_id)]
    if next_cursor is not None:  # the same position, as this list's own cursor
        pos = paging.decode(paging.EVENTS, next_cursor, {"q": int})
        assert pos is not None
        next_cursor = paging.encode(paging.MARKERS, q=pos["q"])
    return marks, next_cursor


@route(
    "GET",
    "/api/sessions/{session_id}/recording/markers",
    "Read a replay's timeline markers, a page at a time",
    policy.REPLAYERS,
    response=ReplayMarkerPage,
    tag="replay",
    query=paging.query_doc(PAGE_DEFAULT, PAGE_MAX),
)
async def describe_markers(ctx: Ctx) -> Any:
    session, invitations = await readable_session(ctx)
    limit, cursor = page(ctx)
    rec = await load_recording(ctx.service, session)
    origin = replay.origin_of(rec.index)
    zero = origin if origin is not None else session.created_at
    marks, next_cursor = await _markers(ctx.service, session, invitations, zero, limit, cursor)
    return ReplayMarkerPage(session_id=session.session_id, markers=marks, next_cursor=next_cursor)


# -- the files ------------------------------------------------------------------------------


async def _track(service: Any, session: Session, track_id: str) -> tuple[Path, str]:
    missing = NotFound("track_not_found", "this session has no such recorded track")
    if not replay.TRACK_ID_RE.match(track_id):
        raise missing
    rec = await load_recording(service, session)
    for tid, entry in replay.playable(rec.index):
        if tid != track_id:
            continue
        if session.status != "ended":
            raise Conflict(*LIVE)
        if rec.manifest is None:
            raise Conflict(*SEALING)
        path = await asyncio.to_thread(replay.sealed_file, rec.directory, entry, rec.manifest)
        if path is None:
            log.warning("replay: %s/%s is not as sealed; not served", session.session_id, tid)
            break
        return path, replay.content_type(entry) or "application/octet-stream"
    raise missing


def file_response(path: Path, content_type: str, **headers: str) -> web.FileResponse:
    # FileResponse answers Range (206), If-Range and HEAD-less seeking as browsers ask.
    return web.FileResponse(
        path,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "private, max-age=300",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            **headers,
        },
    )


async def granted(ctx: Ctx, kind: str, missing: ServiceError) -> tuple[dict[str, Any], Session]:
    """The grant in the path if it is genuine, unexpired and of ``kind`` ("" a track,
    "file" a case file: neither opens the other), and its session."""
    store = ctx.request.app[STORE]
    try:
        grant = replay.check(
            await replay.grant_key(store),
            ctx.request.match_info["grant"],
            ctx.service.clock(),
            ctx.request.app[CONFIG].grant_max_ttl_s,
        )
    except replay.GrantError as exc:
        raise Unauthorized(exc.code, exc.message) from None
    if grant.get("k", "") != kind:
        raise missing
    try:
        return grant, await ctx.service.session(grant["s"])
    except ServiceError:
        raise missing from None


@route(
    "GET",
    "/api/sessions/{session_id}/tracks/{track_id}",
    "Fetch one recorded track (Range requests)",
    policy.REPLAYERS,
    tag="replay",
    produces=MEDIA_TYPES,
)
async def get_track(ctx: Ctx) -> Any:
    session, _ = await readable_session(ctx)
    track_id = ctx.request.match_info["track_id"]
    path, content_type = await _track(ctx.service, session, track_id)
    who = ctx.identity
    store = ctx.request.app[STORE]
    audit = f"replay-audit:{who.sub}:{session.session_id}:{track_id}"
    if await store.create_ephemeral(audit, {"at": ctx.service.clock()}, AUDIT_DEDUP_S):
        await ctx.service.record(
            session.case_id,
            "replay.downloaded",
            session_id=session.session_id,
            actor=actor_of(who),
            track_id=track_id,
        )
    return file_response(path, content_type)


@route(
    "GET",
    "/api/replay/{grant}",
    "Fetch one recorded track by the grant in its replay description (for <video src>)",
    None,
    tag="replay",
    produces=MEDIA_TYPES,
    errors=("409",),
)
async def get_granted(ctx: Ctx) -> Any:
    missing = NotFound("track_not_found", "this session has no such recorded track")
    grant, session = await granted(ctx, "", missing)
    path, content_type = await _track(ctx.service, session, grant["t"])
    return file_response(path, content_type)
