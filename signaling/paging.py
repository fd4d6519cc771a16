"""Pages of the lists that grow (case events, sessions, replay markers, webhook
deliveries): a ``limit`` and an opaque ``cursor`` (pure; no I/O).

A cursor is base64url of compact JSON ``{"k": kind, ...position}``: the position of the
last item a page covered (a log's ``seq``; an index's ``(score, id)``). It is opaque to
clients: they pass back the ``next_cursor`` a page carried, which is null at the end. A
cursor of another list, or one that does not decode, answers 400 ``invalid_cursor``.

A filtered list (a reviewer's part of a case timeline) reads at most ``scan`` entries
per page, so one request's cost is bounded by the page size whatever the case holds; a
page may then hold fewer than ``limit`` items, even none, with a ``next_cursor`` still
to follow.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from .config import Config
from .errors import BadRequest

# The defaults of the settings, for the route table (documented before any config is read).
PAGE_DEFAULT: int = Config.model_fields["page_default"].default
PAGE_MAX: int = Config.model_fields["page_max"].default

EVENTS = "ev"
SESSIONS = "ss"
CASE_SESSIONS = "cs"
MARKERS = "mk"
DELIVERIES = "wd"
AUDIT = "au"
SCAN_PAGES = 4  # a filtered page reads at most this many pages' worth of entries


def encode(kind: str, **position: Any) -> str:
    raw = json.dumps({"k": kind, **position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _bad(message: str) -> BadRequest:
    return BadRequest("invalid_cursor", message)


def decode(kind: str, text: str | None, fields: Mapping[str, type]) -> dict[str, Any] | None:
    """The position a cursor of list ``kind`` names (``fields``: name -> type), None
    for no cursor (the first page)."""
    if text is None or text == "":
        return None
    if len(text) > 512:
        raise _bad("this cursor is not one the server gave")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        body = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise _bad("this cursor is not one the server gave") from None
    if not isinstance(body, dict) or body.get("k") != kind:
        raise _bad("this cursor belongs to another list")
    out: dict[str, Any] = {}
    for name, typ in fields.items():
        value = body.get(name)
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise _bad("this cursor is not one the server gave")
        if isinstance(value, int) and value < 0:
            raise _bad("this cursor is not one the server gave")
        out[name] = value
    return out


class _Dated(Protocol):
    created_at: float
    session_id: str


D = TypeVar("D", bound=_Dated)


def sessions_page(
    sessions: Sequence[D], cursor: str | None, limit: int
) -> tuple[list[D], str | None]:
    """A page of sessions in (created_at, session_id) order after the cursor's, and the
    next page's cursor (None at the end)."""
    at = decode(CASE_SESSIONS, cursor, {"t": float, "i": str})
    after = [s for s in sessions if at is None or (s.created_at, s.session_id) > (at["t"], at["i"])]
    page = after[:limit]
    if len(after) <= limit:
        return page, None
    return page, encode(CASE_SESSIONS, t=page[-1].created_at, i=page[-1].session_id)


def limit_of(raw: str | None, default: int, maximum: int) -> int:
    """The page size asked for (``limit`` in the query), checked against ``page_max``."""
    if raw is None:
        return default
    try:
        limit = int(raw)  # "" (limit=) is refused like any other non-integer
    except ValueError:
        raise BadRequest("invalid_query", "limit is an integer") from None
    if not 1 <= limit <= maximum:
        raise BadRequest("invalid_query", f"limit must be between 1 and {maximum}")
    return limit


LAST_EPOCH = 32_503_680_000  # 3000-01-01T00:00:00Z


def period_of(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    """``since`` and ``until`` of a list's query (epoch seconds, finite), or None."""
    try:
        since = float(query["since"]) if "since" in query else None
        until = float(query["until"]) if "until" in query else None
    except ValueError:
        raise BadRequest("invalid_query", "since/until are numbers, limit an integer") from None
    if not all(math.isfinite(t) for t in (since, until) if t is not None):
        raise BadRequest("invalid_query", "since/until are finite numbers (not nan or inf)")
    # (a date the record and the calendar can hold: a huge number is no period, and the
    # statistics' days would fail on it)
    if not all(0 <= t <= LAST_EPOCH for t in (since, until) if t is not None):
        raise BadRequest("invalid_query", f"since/until are epoch seconds from 0 to {LAST_EPOCH}")
    return since, until


def filter_of(query: Mapping[str, str], name: str) -> str | None:
    """A list's filter by value (a department, a window, a status), or None if absent."""
    value = query.get(name)
    if value is None or value == "":
        return None
    if len(value) > 128:  # no id, department or window is longer
        raise BadRequest("invalid_query", f"{name} is at most 128 characters")
    return value


def query_doc(default: int, maximum: int) -> dict[str, str]:
    """The OpenAPI route table's entries for a paginated list."""
    return {
        "limit": f"1..{maximum} (default {default})",
        "cursor": "the next_cursor of the previous page (opaque); absent for the first",
    }
