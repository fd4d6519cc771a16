"""What a session adds to the case file: reviewers' opinions and document stills.

Stills are stored under ``<archive>/<case>/<session>/snapshots/`` with their SHA-256;
file names are generated here, never taken from input, so nothing can escape the
archive directory.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import logging
import os
import struct
from pathlib import Path
from typing import Any

from PIL import Image

from . import policy
from .auth import Identity
from .core import Archived, ServiceCore, _new_id, actor_of
from .errors import (
    BadRequest,
    InsufficientStorage,
    NotFound,
    ServiceError,
    Unavailable,
    UnsupportedMediaType,
)
from .models import Opinion, OpinionBody, Snapshot

log = logging.getLogger(__name__)


IMAGE_TYPES = {
    "image/jpeg": ("JPEG", "jpg"),
    "image/png": ("PNG", "png"),
    "image/webp": ("WEBP", "webp"),
}
# A still is a photo of a document: a phone camera gives 12 MP. The bounds keep one
# upload's decoded size (width × height × 4 bytes) near 128 MB at worst.
STILL_MAX_SIDE = 8192
STILL_MAX_PIXELS = 32 * 1024 * 1024
# Pillow refuses (DecompressionBombError) an image of more than twice this many pixels
# before decoding anything; process-wide, which suits every image this server opens.
Image.MAX_IMAGE_PIXELS = STILL_MAX_PIXELS


def check_image(content_type: str, data: bytes) -> tuple[int, int]:
    """(width, height) of a still that really is an image of its declared type, whole
    and within the bounds; BadRequest("invalid_image") otherwise. Blocking (decodes)."""
    expected, _ = IMAGE_TYPES[content_type]
    formats = [fmt for fmt, _ in IMAGE_TYPES.values()]
    try:
        with Image.open(io.BytesIO(data), formats=formats) as im:
            found, (width, height) = im.format, im.size
            if found != expected:
                raise BadRequest(
                    "invalid_image", f"the body is a {found} image, not {content_type}"
                )
            if max(width, height) > STILL_MAX_SIDE or width * height > STILL_MAX_PIXELS:
                raise BadRequest(
                    "invalid_image",
                    f"a still may be at most {STILL_MAX_SIDE} pixels a side and "
                    f"{STILL_MAX_PIXELS} pixels in all, this one is {width}×{height}",
                )
            im.verify()  # structure and checksums (PNG CRCs), without decoding
        with Image.open(io.BytesIO(data), formats=[expected]) as im:
            im.load()  # every pixel decodes: a truncated or corrupt body fails here
    except BadRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequest(
            "invalid_image", f"a still may be at most {STILL_MAX_PIXELS} pixels in all"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        # What Pillow raises on bodies it cannot read (UnidentifiedImageError is an
        # OSError; a truncated stream is OSError or SyntaxError depending on format).
        raise BadRequest(
            "invalid_image", f"the body is not a readable {content_type} image: {exc}"
        ) from None
    return width, height


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # whole or absent: never a half-written still in the case
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _storage_error(exc: OSError) -> ServiceError:
    """A still that cannot be written: the disk is full (507) or failing (503)."""
    log.error("a still could not be written to the case file: %s", exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(
            "insufficient_storage", "the case file's disk is full; the still was not kept"
        )
    return Unavailable(
        "storage_unavailable",
        f"the case file cannot be written ({exc.strerror or exc}); the still was not kept",
    )


class CaseFileMixin(ServiceCore):
    # -- opinions ---------------------------------------------------------------------
    async def file_opinion(self, who: Identity, session_id: str, body: OpinionBody) -> Opinion:
        session = await self.session(session_id)
        policy.can_file_opinion(who, session, await self.invitations(session_id))
        if body.refer_to is not None and self.directory.department(body.refer_to) is None:
            raise BadRequest("unknown_department", f"no department {body.refer_to!r}")
        opinion = Opinion(
            opinion_id=_new_id("o_"),
            session_id=session_id,
            case_id=session.case_id,
            author=actor_of(who),
            decision=body.decision,
            missing=body.missing,
            refer_to=body.refer_to,
            note=body.note,
            created_at=self.clock(),
        )
        if await self._evicted(session_id) is None:  # else: the record's alone
            await self.store.create(f"opinion:{opinion.opinion_id}", opinion.model_dump())
            await self.store.index_add(
                f"session:{session_id}:opinions", opinion.opinion_id, opinion.created_at
            )
        data = opinion.model_dump(exclude={"author", "case_id", "session_id"})
        await self.record(
            session.case_id, "opinion.filed", session_id=session_id, actor=opinion.author, **data
        )
        await self._announce(f"session:{session_id}", "opinion.filed", opinion=opinion.model_dump())
        return opinion

    async def opinions(self, session_id: str) -> list[Opinion]:
        ids = await self.store.index_range(f"session:{session_id}:opinions")
        docs: list[dict[str, Any] | None] = []
        if (record := await self._evicted(session_id)) is not None:
            docs = list(await record.opinion_docs(session_id))
        elif ids:
            docs = await self.store.get_many([f"opinion:{i}" for i in ids])
        return [Opinion.model_validate(d) for d in docs if d is not None]

    async def _evicted(self, session_id: str) -> Archived | None:
        """The record, when the session left the live store (sealed: signaling/evict.py)."""
        if self.archived is None or await self.store.get(f"session:{session_id}") is not None:
            return None
        return self.archived

    # -- document stills --------------------------------------------------------------
    async def add_snapshot(
        self, who: Identity, session_id: str, content_type: str, data: bytes
    ) -> Snapshot:
        session = await self.session(session_id)
        policy.can_take_snapshot(who, session)
        await self.require_active(session_id)
        content_type = content_type.split(";")[0].strip().lower()
        kind = IMAGE_TYPES.get(content_type)
        if kind is None:
            raise UnsupportedMediaType(
                "unsupported_media_type",
                f"send one of {', '.join(IMAGE_TYPES)}, not {content_type[:60]!r}",
            )
        _, ext = kind
        await asyncio.to_thread(check_image, content_type, data)
        snapshot_id = _new_id("f_")
        relative = f"{session.case_id}/{session_id}/snapshots/{snapshot_id}.{ext}"
        # The file first, then the record: a still that is not on disk is never filed.
        try:
            await asyncio.to_thread(_write_file, self.archive_dir / relative, data)
        except OSError as exc:
            raise _storage_error(exc) from None
        snap = Snapshot(
            snapshot_id=snapshot_id,
            session_id=session_id,
            case_id=session.case_id,
            taken_by=actor_of(who),
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            created_at=self.clock(),
            url=f"/api/snapshots/{snapshot_id}",
            path=relative,
        )
        doc = dict(snap.model_dump(), path=relative)
        await self.store.create(f"snapshot:{snapshot_id}", doc)
        await self.store.index_add(f"session:{session_id}:snapshots", snapshot_id, snap.created_at)
        public = snap.model_dump()
        await self.record(
            session.case_id,
            "snapshot.taken",
            session_id=session_id,
            actor=snap.taken_by,
            snapshot_id=snapshot_id,
            sha256=snap.sha256,
            size=snap.size,
            content_type=content_type,
            created_at=snap.created_at,
        )
        await self._announce(f"session:{session_id}", "snapshot", snapshot=public)
        return snap

    async def snapshots(self, session_id: str) -> list[Snapshot]:
        ids = await self.store.index_range(f"session:{session_id}:snapshots")
        docs: list[dict[str, Any] | None] = []
        if ids:
            docs = await self.store.get_many([f"snapshot:{i}" for i in ids])
        elif (record := await self._evicted(session_id)) is not None:
            rows = await record.snapshot_docs(session_id)
            docs = [_with_path(r) for r in rows]
        return [Snapshot.model_validate(d) for d in docs if d is not None]

    async def snapshot_file(self, who: Identity, snapshot_id: str) -> tuple[Snapshot, Path]:
        doc = await self.store.get(f"snapshot:{snapshot_id}")
        if doc is None and self.archived is not None:
            rows = await self.archived.snapshot_docs(snapshot_id=snapshot_id)
            if rows and await self._evicted(rows[0]["session_id"]) is not None:
                doc = _with_path(rows[0])
        if doc is None:
            raise NotFound("snapshot_not_found", f"no snapshot {snapshot_id}")
        snap = Snapshot.model_validate(doc)
        session = await self.session(snap.session_id)
        if not policy.may_read_session(who, session, await self.invitations(snap.session_id)):
            # As an unknown still: nothing tells another department it exists.
            raise NotFound("snapshot_not_found", f"no snapshot {snapshot_id}")
        path = (self.archive_dir / snap.path).resolve()
        if not path.is_relative_to(self.archive_dir.resolve()) or not path.is_file():
            raise NotFound("snapshot_not_found", f"the file of snapshot {snapshot_id} is missing")
        return snap, path

    async def case_extras(self, session_ids: list[str]) -> dict[str, Any]:
        opinions, snapshots = [], []
        for sid in session_ids:
            opinions += await self.opinions(sid)
            snapshots += await self.snapshots(sid)
        return {"opinions": opinions, "snapshots": snapshots}


def _with_path(row: dict[str, Any]) -> dict[str, Any]:
    """A still from the record, with where ``snapshot`` put its file."""
    ext = IMAGE_TYPES.get(row["content_type"], ("", "bin"))[1]
    path = f"{row['case_id']}/{row['session_id']}/snapshots/{row['snapshot_id']}.{ext}"
    return dict(row, path=path)
