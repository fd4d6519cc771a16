"""HTTP routes for the case file: opinions and document stills (registered on import)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import policy
from .api import Ctx, readable_session, route
from .appkeys import CONFIG
from .errors import ServiceError
from .models import Opinion, OpinionBody, OpinionList, Snapshot, SnapshotList


class PayloadTooLarge(ServiceError):
    status = 413


@route(
    "POST",
    "/api/sessions/{session_id}/opinions",
    "File an opinion",
    policy.REVIEWERS,
    body=OpinionBody,
    response=Opinion,
    status=201,
    tag="case file",
)
async def file_opinion(ctx: Ctx) -> Any:
    return await ctx.service.file_opinion(ctx.identity, ctx.path("session_id"), ctx.body)


@route(
    "GET",
    "/api/sessions/{session_id}/opinions",
    "List a session's opinions",
    policy.EVERYONE,
    response=OpinionList,
    tag="case file",
)
async def list_opinions(ctx: Ctx) -> Any:
    session, _ = await readable_session(ctx)
    return OpinionList(opinions=await ctx.record.opinions([session.session_id]))


@route(
    "POST",
    "/api/sessions/{session_id}/snapshots",
    "Share a still of a document",
    policy.STAFF,
    response=Snapshot,
    status=201,
    tag="case file",
    errors=("413", "415", "503", "507"),
    upload=("image/jpeg", "image/png", "image/webp"),
)
async def add_snapshot(ctx: Ctx) -> Any:
    limit = ctx.request.app[CONFIG].snapshot_max_bytes
    request = ctx.request
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge("payload_too_large", f"a still may be at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("payload_too_large", f"a still may be at most {limit} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    return await ctx.service.add_snapshot(
        ctx.identity, ctx.path("session_id"), request.content_type, data
    )


@route(
    "GET",
    "/api/sessions/{session_id}/snapshots",
    "List a session's stills",
    policy.EVERYONE,
    response=SnapshotList,
    tag="case file",
)
async def list_snapshots(ctx: Ctx) -> Any:
    session, _ = await readable_session(ctx)
    return SnapshotList(snapshots=await ctx.record.snapshots([session.session_id]))


@route(
    "GET",
    "/api/snapshots/{snapshot_id}",
    "Fetch a still (the image itself)",
    policy.EVERYONE,
    tag="case file",
    produces=("image/jpeg", "image/png", "image/webp"),
)
async def get_snapshot(ctx: Ctx) -> Any:
    snap, path = await ctx.record.snapshot_file(ctx.identity, ctx.path("snapshot_id"))
    return web.FileResponse(
        path,
        headers={
            "Content-Type": snap.content_type,
            "Cache-Control": "private, max-age=3600",
            "X-Content-SHA256": snap.sha256,
            # The bytes are what they claim (checked on upload); never let a browser guess
            # otherwise, and never run anything opened from here as a page.
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Content-Disposition": "inline",
        },
    )
