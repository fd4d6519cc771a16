"""The opinion sheet's download (registered on import): ``GET
/api/sessions/{sid}/opinion-sheet``, a PDF to print (the session page's 打印意见单).

- A session in progress: a sheet made now from its events so far, marked 草稿 DRAFT (no
  seal). Ended and being sealed: 409 ``recording_sealing`` (ask again a moment later,
  as for the case file).
- Sealed: the case file's own ``opinion_sheet.pdf``, served only as the manifest lists
  it (``api_archive.open_listed``: by name, inside the folder, with its listed size).
- Sealed without one (no font at the time, or sealed before sheets existed): a sheet
  made now from the sealed ``timeline.jsonl`` with the manifest's chain head, marked as
  not part of the case file.

Who may: whoever may take the case file away (``policy.PRINTERS``, a session they may
read). Without a CJK font: 503 ``font_unavailable`` saying what to install.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from recording import sheet
from recording.archive import TIMELINE
from recording.verify import read_timeline

from . import policy
from .api import Ctx, readable_session, route
from .api_archive import open_listed
from .api_replay import SEALING, file_response, load_recording
from .appkeys import CONFIG
from .errors import Conflict
from .opinion_sheet import OpinionSheets

PDF = "application/pdf"


def _attachment(data: bytes, filename: str) -> web.Response:
    return web.Response(
        body=data,
        headers={
            "Content-Type": PDF,
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _sealed_events(directory: Path) -> list[dict[str, Any]]:
    events, _ = read_timeline(directory / TIMELINE)
    return events


@route(
    "GET",
    "/api/sessions/{session_id}/opinion-sheet",
    "Download a session's joint-review opinion sheet (PDF; a draft before sealing)",
    policy.PRINTERS,
    tag="replay",
    produces=(PDF,),
    errors=("409", "503"),
)
async def opinion_sheet(ctx: Ctx) -> Any:
    session, _ = await readable_session(ctx)
    config = ctx.request.app[CONFIG]
    font = str(config.opinion_sheet_font) if config.opinion_sheet_font else None
    sheets = OpinionSheets(ctx.service, font, config.opinion_sheet_timezone)
    base = f"{session.case_id}_{session.session_id}"
    if session.status != "ended":
        events = [
            e.model_dump() for e in await ctx.service.events(session.case_id, session.session_id)
        ]
        data = await sheets.build(session.model_dump(), events, None, sheet.DRAFT)
        return _attachment(data, f"{base}_opinion_sheet_draft.pdf")
    rec = await load_recording(ctx.service, session)
    if rec.manifest is None:
        raise Conflict(*SEALING)
    path = await asyncio.to_thread(open_listed, rec.directory, rec.manifest, sheet.NAME)
    if path is not None:
        disposition = f'attachment; filename="{base}_{sheet.NAME}"'
        return file_response(path, PDF, **{"Content-Disposition": disposition})
    events = await asyncio.to_thread(_sealed_events, rec.directory)
    head = (rec.manifest.get("timeline") or {}).get("head")
    data = await sheets.build(session.model_dump(), events, head, sheet.REPRINT)
    return _attachment(data, f"{base}_opinion_sheet_reprint.pdf")
