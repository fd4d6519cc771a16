"""A participant's sustained media trouble, as the SFU reported it (``media.quality``
from ``media_server.quality``), filed in the case timeline, where the record raises the
supervisors' ``media_quality`` exception from it (``history.raising``).

The report crosses a process and a bus before it gets here: its figures are bounded and
typed again, and one for a session that has ended (or never was) is dropped.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from .core import ServiceCore
from .errors import ServiceError
from .models import Session
from .state import StoreUnavailable

log = logging.getLogger(__name__)

TROUBLES = ("loss", "frozen")
MAX_FOR_S = 86_400.0


def _bounded(value: Any, top: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    return min(max(x, 0.0), top) if math.isfinite(x) else None


async def file_report(service: ServiceCore, session_id: str, msg: dict[str, Any]) -> None:
    pid, trouble = msg.get("participant_id"), msg.get("trouble")
    if not isinstance(pid, str) or not 0 < len(pid) <= 128 or trouble not in TROUBLES:
        log.warning("a malformed media quality report of %s was dropped", session_id)
        return
    try:
        session = await service.session(session_id)
    except ServiceError:
        return
    if session.ended_at is not None:
        return
    lasted = _bounded(msg.get("for_s"), MAX_FOR_S) or 0.0
    try:
        await _file(service, session, session_id, pid, trouble, lasted, msg)
    except (ServiceError, StoreUnavailable) as exc:  # the trouble stays on /api/live
        log.warning("a media quality report of %s was not filed: %s", session_id, exc)


async def _file(
    service: ServiceCore,
    session: Session,
    session_id: str,
    pid: str,
    trouble: str,
    lasted: float,
    msg: dict[str, Any],
) -> None:
    await service.record(
        session.case_id,
        "media.quality",
        session_id=session_id,
        participant_id=pid,
        trouble=trouble,
        loss=_bounded(msg.get("loss"), 1.0) or 0.0,
        fps=_bounded(msg.get("fps"), 1000.0),
        frozen_s=_bounded(msg.get("frozen_s"), MAX_FOR_S) or 0.0,
        since=service.clock() - lasted,
    )
