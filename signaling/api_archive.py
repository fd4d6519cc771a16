"""HTTP routes to take a session's case file away (registered on import): the approval
system fetching what ``export.ready`` announced, a supervisor downloading the composite
video or the evidence. Who may: whoever may replay the session (``api_replay``).

- ``GET /api/sessions/{sid}/casefile``: the index: every file the sealed manifest
  lists, ``manifest.json`` itself, and the exports its addendum (``exports.json``) lists,
  each with its size and SHA-256, a ``url`` (Bearer token) and a ``src`` (a grant, for a
  link a browser follows without the header).
- ``GET /api/sessions/{sid}/casefile/files/{path}``: one of those files (Range
  requests; ``path`` as listed, percent-encoded as one segment: ``tracks%2Fp1_0.webm``),
  as an attachment named after the case and session.
- ``GET /api/casefile/{grant}``: the same file by its grant.
- With ``export_watermark``, the composite is the person's own watermarked copy, made by
  a background job (export_watermark.py): ``POST .../casefile/watermarked`` starts or
  joins it (202), ``GET /api/watermarked/{job_id}`` follows it, and the composite's
  download serves the copy once made (before: 202 with the job, never a render in the
  request).

Only a listed name is ever served, and only if the file on disk still has the listed
size (a changed file is evidence of tampering: ``jointreview verify`` says what); the
name is compared as a string with the list, then resolved and checked to lie inside the
session's folder. The first fetch of a file by a viewer in ten minutes is written to the
case timeline as ``casefile.downloaded`` (the audit trail, as for replays).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from aiohttp import web
from pydantic import BaseModel

from recording import addendum, retention, retention_verify, sheet
from recording.archive import MANIFEST, TIMELINE
from recording.export import COMPOSITE
from recording.seal import SIGNATURE

from . import policy, replay
from .api import Ctx, readable_session, route
from .api_replay import (
    AUDIT_DEDUP_S,
    LIVE,
    SEALING,
    file_response,
    granted,
    load_recording,
)
from .appkeys import CONFIG, STORE
from .casefile_names import content_disposition, display_names
from .core import actor_of
from .errors import Conflict, NotFound
from .export_watermark import ACTIVE, DONE, WATERMARKS, CopyJob, Refused, text_for
from .models import Actor, Session

log = logging.getLogger(__name__)

SUFFIX_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".pdf": "application/pdf",  # the opinion sheet
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".txt": "text/plain; charset=utf-8",
}
FILE_TYPES = tuple(sorted(set(SUFFIX_TYPES.values()) | {"application/octet-stream"}))
MISSING = ("file_not_found", "this case file has no such file")


class CaseFileEntry(BaseModel):
    path: str  # inside the session's folder, as the manifest names it
    name: str = ""  # for people: the case, who, department, source (casefile_names.py)
    kind: str  # manifest, signature, timeline, track, still, sheet, export, addendum, other
    size: int
    sha256: str | None = None  # None: manifest.json, whose hash the store's timeline holds
    sm3: str | None = None  # a case file sealed with seal_algorithm = "sm2-sm3": its SM3
    content_type: str
    url: str  # with the Bearer token
    src: str  # a grant URL, until ``grants_expire_at``
    duration_s: float | None = None  # an export's length


class CaseFileSummary(BaseModel):
    """What the sealed manifest holds, counted (what the clerk sees filed)."""

    participants: int = 0
    tracks: int = 0
    stills: int = 0
    chat: int = 0
    opinions: int = 0
    events: int = 0


class CaseFileIndex(BaseModel):
    case_id: str
    session_id: str
    sealed_at: float | None = None
    summary: CaseFileSummary
    files: list[CaseFileEntry]
    # The composite video once it is made (the export job runs after sealing).
    export: CaseFileEntry | None = None
    grants_expire_at: float
    # export_watermark: the composite is each person's watermarked copy, made by a job
    # (POST .../casefile/watermarked), not the sealed file the entry describes.
    watermark: bool = False


class WatermarkedCopy(BaseModel):
    """A person's watermarked copy of the composite, being made or made."""

    job_id: str
    session_id: str
    status: str  # queued, running, done, failed
    progress: int  # percent of the frames rendered
    status_url: str  # GET it (Bearer) for the progress
    node: str  # the node making it (and holding it once made)
    watermark: str  # the text burned in
    created_at: float
    error: str | None = None  # failed: why
    size: int | None = None  # done: the copy's size
    expires_at: float | None = None  # done: kept (the same bytes) until then
    url: str | None = None  # done: its download (Bearer)
    src: str | None = None  # done: its download by a grant (a plain link), as the index's


def _kind(path: str) -> str:
    if path == MANIFEST:
        return "manifest"
    if path == SIGNATURE:
        return "signature"
    if path == TIMELINE:
        return "timeline"
    if path == addendum.NAME:
        return "addendum"
    if path == sheet.NAME:
        return "sheet"
    top = path.split("/", 1)[0]
    return {"tracks": "track", "snapshots": "still", "exports": "export"}.get(top, "other")


class Listed(NamedTuple):
    size: int
    sha256: str | None
    duration_s: float | None = None  # an export's length
    sm3: str | None = None  # the file's SM3, when the seal is sm2-sm3


def listed(directory: Path, manifest: dict[str, Any]) -> dict[str, Listed]:
    """Every name the case file vouches for, with what it says of it. Blocking I/O."""
    out: dict[str, Listed] = {}
    for entry in manifest.get("files") or []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            size, sm3 = int(entry.get("size") or 0), entry.get("sm3")
            out[entry["path"]] = Listed(size, entry.get("sha256"), sm3=sm3)
    timeline = dict(manifest.get("timeline") or {})
    if retention_verify.chat_purged(directory) is not None:  # its chat lines are stubs now
        timeline.pop("sha256", None), timeline.pop("sm3", None)
    # The manifest (its hash is in the store's timeline), the timeline it hashes, and the
    # addendum: vouched for by content, not by a listed size.
    for name, digest in (
        (MANIFEST, None),
        (SIGNATURE, None),  # the seal's signature, to check the manifest with elsewhere
        (TIMELINE, timeline.get("sha256")),
        (addendum.NAME, None),
    ):
        try:
            size = (directory / name).stat().st_size
            sm3 = timeline.get("sm3") if name == TIMELINE else None
            out[name] = Listed(size, digest, sm3=sm3)
        except OSError:
            pass
    for entry in (addendum.load(directory) or {}).get("exports") or []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            size, digest = int(entry.get("size") or 0), entry.get("sha256")
            out[entry["path"]] = Listed(size, digest, entry.get("duration_s"))
    for name in retention_verify.purged(directory):  # gone by retention (#18)
        out.pop(name, None)
    return out


def open_listed(directory: Path, manifest: dict[str, Any], name: str) -> Path | None:
    """The file ``name`` if the case file lists it (by this very string), it lies inside
    ``directory`` and it still has its listed size. Blocking I/O."""
    found = listed(directory, manifest).get(name)
    if found is None:
        return None
    try:
        path = (directory / name).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not path.is_relative_to(directory.resolve()) or not path.is_file():
        return None
    if path.stat().st_size != found.size:
        log.warning("casefile: %s/%s is not as sealed; not served", directory.name, name)
        return None
    return path


async def _sealed(ctx: Ctx, session: Session) -> tuple[Path, dict[str, Any]]:
    if session.status != "ended":
        raise Conflict(*LIVE)
    rec = await load_recording(ctx.service, session)
    if rec.manifest is None:
        if "casefile" in await asyncio.to_thread(retention.purged_kinds, rec.directory):
            raise NotFound("casefile_purged", "this case file was purged by retention (#18)")
        raise Conflict(*SEALING)
    return rec.directory, rec.manifest


@route(
    "GET",
    "/api/sessions/{session_id}/casefile",
    "List a session's case file",
    policy.REPLAYERS,
    response=CaseFileIndex,
    tag="replay",
)
async def casefile_index(ctx: Ctx) -> Any:
    session, _ = await readable_session(ctx)
    directory, manifest = await _sealed(ctx, session)
    sid, who = session.session_id, ctx.identity
    names = await asyncio.to_thread(listed, directory, manifest)
    readable = await asyncio.to_thread(
        display_names, directory, manifest, list(names), _dept_name(ctx)
    )
    duration = float((manifest.get("recording") or {}).get("duration_s") or 0.0)
    max_s = ctx.request.app[CONFIG].grant_max_ttl_s
    expires = replay.grant_expiry(ctx.service.clock(), duration, who.exp, max_s)
    key = await replay.grant_key(ctx.request.app[STORE])
    actor = actor_of(who).model_dump(exclude_none=True)
    files = [
        CaseFileEntry(
            path=name,
            name=readable.get(name, ""),
            kind=_kind(name),
            size=facts.size,
            sha256=facts.sha256,
            sm3=facts.sm3,
            content_type=SUFFIX_TYPES.get(PurePosixPath(name).suffix, FILE_TYPES[0]),
            url=replay.casefile_url(sid, name),
            src="/api/casefile/" + replay.mint(key, sid, name, who.sub, expires, "file", actor),
            duration_s=facts.duration_s,
        )
        for name, facts in sorted(names.items())
    ]
    kinds = [f.kind for f in files]
    summary = CaseFileSummary(
        participants=len(manifest.get("participants") or []),
        tracks=kinds.count("track"),
        stills=kinds.count("still"),
        chat=len(manifest.get("chat") or []),
        opinions=len(manifest.get("opinions") or []),
        events=int((manifest.get("timeline") or {}).get("count") or 0),
    )
    return CaseFileIndex(
        case_id=session.case_id,
        session_id=sid,
        sealed_at=manifest.get("generated_at"),
        summary=summary,
        files=files,
        export=next((f for f in files if f.path == COMPOSITE), None),
        grants_expire_at=expires,
        watermark=ctx.request.app[CONFIG].export_watermark,
    )


async def _serve(ctx: Ctx, session: Session, name: str, viewer: Actor) -> web.StreamResponse:
    directory, manifest = await _sealed(ctx, session)
    path = await asyncio.to_thread(open_listed, directory, manifest, name)
    if path is None:
        raise NotFound(*MISSING)
    marked: dict[str, str] = {}
    if name == COMPOSITE and ctx.request.app[CONFIG].export_watermark:
        # The person's own copy, marked: served once made; until then the job (202).
        copies = ctx.request.app[WATERMARKS]
        job = await copies.find(session.session_id, viewer.sub)
        ready = await asyncio.to_thread(copies.ready_path, job) if job is not None else None
        if job is None or ready is None:
            return await _ask_copy(ctx, session, path, viewer, False)
        path, marked = ready, {"watermark": job.text}
    store = ctx.request.app[STORE]
    audit = f"casefile-audit:{viewer.sub}:{session.session_id}:{name}"
    if await store.create_ephemeral(audit, {"at": ctx.service.clock()}, AUDIT_DEDUP_S):
        await ctx.service.record(
            session.case_id,
            "casefile.downloaded",
            session_id=session.session_id,
            actor=viewer,
            path=name,
            **marked,
        )
    attachment = f"{session.case_id}_{session.session_id}_{path.name}"
    readable = await asyncio.to_thread(display_names, directory, manifest, [name], _dept_name(ctx))
    return file_response(
        path,
        SUFFIX_TYPES.get(path.suffix, FILE_TYPES[0]),
        **{"Content-Disposition": content_disposition(readable[name], attachment)},
    )


async def _ask_copy(
    ctx: Ctx, session: Session, source: Path, viewer: Actor, grant: bool
) -> web.Response:
    """Start or join the person's watermarked copy: 202 while it is made, 200 once made
    (409 when made on a node whose copies this one can't read); 429/503 when too many."""
    copies = ctx.request.app[WATERMARKS]
    text = text_for(viewer, ctx.service.directory, ctx.service.clock())
    try:
        job = await copies.request(session.case_id, session.session_id, source, viewer, text)
    except Refused as exc:
        response = web.json_response(exc.body(), status=exc.status)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    if job.status == DONE and job.node != copies.node_id:
        if await asyncio.to_thread(copies.ready_path, job) is None:
            raise Conflict(
                "copy_on_other_node",
                f"this copy was made on node {job.node}, whose copies this node can't read "
                "(export_watermark_dir is not shared); ask that node, or ask again after "
                "it expires",
                [{"node": job.node, "expires_at": job.expires_at}],
            )
    view = await _copy_view(ctx, job, grant)
    response = web.json_response(
        view.model_dump(mode="json"),
        status=202 if job.status in ACTIVE else 200,
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )
    response.headers["Location"] = view.status_url
    return response


async def _copy_view(ctx: Ctx, job: CopyJob, grant: bool) -> WatermarkedCopy:
    view = WatermarkedCopy(
        job_id=job.job_id,
        session_id=job.session_id,
        status=job.status,
        progress=job.progress,
        status_url=f"/api/watermarked/{job.job_id}",
        node=job.node,
        watermark=job.text,
        created_at=job.created_at,
        error=job.error,
        size=job.size,
        expires_at=job.expires_at,
    )
    if job.status == DONE and job.expires_at is not None:
        view.url = replay.casefile_url(job.session_id, COMPOSITE)
        if grant:  # (by Bearer) a grant for the page's link, as the index's
            key = await replay.grant_key(ctx.request.app[STORE])
            expires = min(job.expires_at, ctx.identity.exp or job.expires_at)
            actor = actor_of(ctx.identity).model_dump(exclude_none=True)
            minted = replay.mint(key, job.session_id, COMPOSITE, job.sub, expires, "file", actor)
            view.src = "/api/casefile/" + minted
    return view


def _dept_name(ctx: Ctx) -> Callable[[str], str]:
    directory = ctx.service.directory

    def name(dept: str) -> str:
        found = directory.department(dept)
        return found.name if found is not None else dept

    return name


@route(
    "GET",
    "/api/sessions/{session_id}/casefile/files/{path}",
    "Fetch one file of a session's case file (Range requests)",
    policy.REPLAYERS,
    tag="replay",
    produces=FILE_TYPES,
)
async def casefile_file(ctx: Ctx) -> Any:
    session, _ = await readable_session(ctx)
    return await _serve(ctx, session, ctx.request.match_info["path"], actor_of(ctx.identity))


@route(
    "GET",
    "/api/casefile/{grant}",
    "Fetch one file of a case file by the grant in its index (for a download link)",
    None,
    tag="replay",
    produces=FILE_TYPES,
    errors=("409",),
)
async def casefile_granted(ctx: Ctx) -> Any:
    grant, session = await granted(ctx, "file", NotFound(*MISSING))
    try:
        viewer = Actor.model_validate({**(grant.get("a") or {}), "sub": grant["u"]})
    except ValueError:
        raise NotFound(*MISSING) from None
    return await _serve(ctx, session, grant["t"], viewer)


@route(
    "POST",
    "/api/sessions/{session_id}/casefile/watermarked",
    "Start (or join) my watermarked copy of the composite export",
    policy.REPLAYERS,
    response=WatermarkedCopy,
    status=202,
    tag="replay",
    errors=("409", "429", "503"),
)
async def casefile_watermarked(ctx: Ctx) -> Any:
    session, _ = await readable_session(ctx)
    _watermarking(ctx)
    directory, manifest = await _sealed(ctx, session)
    path = await asyncio.to_thread(open_listed, directory, manifest, COMPOSITE)
    if path is None:
        raise NotFound("export_not_ready", "this session's composite export is not made yet")
    return await _ask_copy(ctx, session, path, actor_of(ctx.identity), True)


def _watermarking(ctx: Ctx) -> None:
    if not ctx.request.app[CONFIG].export_watermark:
        raise Conflict(
            "watermark_off", "export_watermark is off: the composite is downloaded as sealed"
        )


@route(
    "GET",
    "/api/sessions/{session_id}/casefile/watermarked",
    "My watermarked copy of the composite export, if I asked for one (a reloaded page)",
    policy.REPLAYERS,
    response=WatermarkedCopy,
    tag="replay",
    errors=("409",),
    no_content="none asked for, or it lapsed (or was made on a node whose copies this "
    "one can't read: asking again says so)",
)
async def casefile_my_copy(ctx: Ctx) -> Any:
    session, _ = await readable_session(ctx)
    _watermarking(ctx)
    job = await ctx.request.app[WATERMARKS].shown(session.session_id, ctx.identity.sub)
    if job is None:
        return web.Response(status=204)  # none asked for (or it lapsed): a page's usual case
    return await _copy_view(ctx, job, True)


@route(
    "GET",
    "/api/watermarked/{job_id}",
    "Follow my watermarked copy of a composite export",
    policy.REPLAYERS,
    response=WatermarkedCopy,
    tag="replay",
)
async def watermarked_status(ctx: Ctx) -> Any:
    job = await ctx.request.app[WATERMARKS].job(ctx.request.match_info["job_id"])
    if job is None or job.sub != ctx.identity.sub:  # another person's: as an unknown one
        raise NotFound(
            "export_job_not_found", "no such watermarked export (or it expired: ask again)"
        )
    await ctx.record.readable_session(ctx.identity, job.session_id)  # may still read it
    return await _copy_view(ctx, job, True)
