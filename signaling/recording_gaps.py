"""A gap in a session's recording: its media host died (a media worker, or a whole node),
so nothing was recorded from then until the session's media was placed again and its
recorder started a new run (a new segment of every track), or until the session ended.

While open, the gap is one document ``recording-gap:<session_id>`` =
``{start, reason}`` (Unix seconds, the timeline's clock), so whichever node re-places the
session closes it. Closing files ``recording.gap`` in the case timeline with ``start``,
``end`` (Unix seconds, as every event's ``ts``), ``reason`` and ``resumed`` (False: the
session ended before its media came back). One closer wins (an atomic update).
"""

from __future__ import annotations

from typing import Any

from .core import ServiceCore


def _key(session_id: str) -> str:
    return f"recording-gap:{session_id}"


async def open_gap(service: ServiceCore, session_id: str, start: float, reason: str) -> bool:
    """The recording of ``session_id`` stopped at ``start``; False if a gap is open
    already (the earlier start stands)."""
    return await service.store.create(_key(session_id), {"start": start, "reason": reason})


async def close_gap(
    service: ServiceCore, case_id: str, session_id: str, resumed: bool
) -> dict[str, Any] | None:
    """File the open gap of ``session_id`` as ended now; None if none was open."""
    end = service.clock()

    def close(doc: dict[str, Any]) -> dict[str, Any] | None:
        return None if doc.get("end") is not None else dict(doc, end=end)

    doc, changed = await service.store.update(_key(session_id), close)
    if doc is None or not changed:
        return None
    await service.record(
        case_id,
        "recording.gap",
        session_id=session_id,
        start=doc["start"],
        end=max(float(doc["start"]), end),
        reason=doc.get("reason"),
        resumed=resumed,
    )
    await service.store.delete([_key(session_id)])
    return doc
