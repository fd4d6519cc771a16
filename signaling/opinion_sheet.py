"""The opinion sheet (联审会办意见单, ``recording.sheet``) from the control plane's side:
made while a case file is sealed, and on demand for printing.

- **At sealing**: ``RecordingControl.seal`` hands ``for_sealing(...)`` to
  ``archive.write_manifest``, which calls it on its worker thread once the timeline is
  written and its chain head known, before it lists the files: the sheet is then a file
  of the case file like the others, hashed in the manifest. A sheet that cannot be made
  (no CJK font, a broken font file) never stops the sealing: the case file is sealed
  without it and ``opinion_sheet.failed`` goes into the case timeline (with what to
  install) and to the supervisors' feed, and the node logs it.
- **On demand** (``api_sheet``): a session not yet sealed gets a sheet marked 草稿 DRAFT
  from its events so far; a session sealed without one gets a sheet from its sealed
  timeline, marked as not part of the case file. Builds run on a worker thread, one at
  a time per node (each is ~0.1 s of CPU, the first of a process ~1.5 s).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recording import sheet, sheet_font

from .core import ServiceCore
from .errors import Unavailable

log = logging.getLogger(__name__)

FAILED = "opinion_sheet.failed"  # a case event: the sheet could not be made at sealing
SUPERVISORS = "supervisors"  # the supervisors' bus topic (recording_control.SUPERVISORS)
# On-demand builds, one at a time per event loop (a node): bounded CPU whatever the asks.
_limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _one_at_a_time() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    found = _limits.get(loop)
    if found is None:
        found = _limits[loop] = asyncio.Semaphore(1)
    return found


@dataclass
class SealingSheet:
    """The hook ``archive.write_manifest`` calls on its thread; keeps what went wrong."""

    session: Mapping[str, Any]
    events: Sequence[Mapping[str, Any]]
    dept_names: Mapping[str, str]
    font: str | None
    timezone: str | None
    error: str | None = None
    code: str | None = None

    def __call__(self, directory: Path, chain_head: str) -> None:
        facts = sheet.facts(self.session, self.events, chain_head, self.dept_names)
        try:
            sheet.write(directory, sheet.build(facts, self.font, self.timezone))
        except sheet.FontMissing as exc:
            self.code, self.error = exc.code, str(exc)
        except Exception as exc:  # the case file is sealed all the same
            log.exception("the opinion sheet of %s failed", self.session.get("session_id"))
            self.code, self.error = "sheet_failed", f"{type(exc).__name__}: {exc}"


class OpinionSheets:
    def __init__(self, service: ServiceCore, font: str | None, timezone: str | None) -> None:
        self.service = service
        self.font = font or None
        self.timezone = timezone or None

    def check(self) -> bool:
        """At start: is there a font to make sheets with? A warning now, not a surprise
        at the first sealing."""
        try:
            sheet_font.find_font(self.font)
        except sheet.FontMissing as exc:
            log.warning("case files will be sealed without their opinion sheet: %s", exc)
            return False
        return True

    def dept_names(self) -> dict[str, str]:
        return {d.id: d.name for d in self.service.directory.departments}

    def for_sealing(
        self, session: Mapping[str, Any], events: Sequence[Mapping[str, Any]]
    ) -> SealingSheet:
        return SealingSheet(session, events, self.dept_names(), self.font, self.timezone)

    async def sealed(self, job: SealingSheet) -> None:
        """After sealing: say so if the case file was sealed without its sheet."""
        if job.error is None:
            return
        case_id, session_id = str(job.session["case_id"]), str(job.session["session_id"])
        log.error(
            "case file %s/%s sealed without its opinion sheet: %s", case_id, session_id, job.error
        )
        await self.service.record(
            case_id, FAILED, session_id=session_id, code=job.code, message=job.error
        )
        report = {
            "type": "opinion_sheet.error",
            "v": 1,
            "case_id": case_id,
            "session_id": session_id,
            "code": job.code,
            "message": job.error,
        }
        await self.service.store.publish(SUPERVISORS, report)

    async def build(
        self,
        session: Mapping[str, Any],
        events: Sequence[Mapping[str, Any]],
        chain_head: str | None,
        mark: str,
    ) -> bytes:
        """A sheet to print now (not a file of the case file); 503 without a font."""
        facts = sheet.facts(session, events, chain_head, self.dept_names(), mark=mark)
        async with _one_at_a_time():
            try:
                return await asyncio.to_thread(sheet.build, facts, self.font, self.timezone)
            except sheet.FontMissing as exc:
                log.error("an opinion sheet could not be made: %s", exc)
                raise Unavailable(exc.code, str(exc)) from None
