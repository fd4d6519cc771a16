"""Exceptions, raised as the events that show them are filed: in the record's write
transaction (``writer.transaction``), from the batch's new events and the rows they made.

- ``invitation_unanswered``: ``invitation.unanswered`` (it rang out, ``ring_timeout_s``);
- ``invitation_declined``: ``invitation.declined``;
- ``long_wait``: ``invitation.accepted`` / ``.declined`` more than ``long_wait_s`` after
  the invitation was made;
- ``session_broken_off``: ``session.ended`` that nobody ended (reason ``idle``: everyone
  had left; ``broken_off``: the server ended an abandoned session);
- ``no_opinion``: ``session.ended``, for each accepted invitation whose department (or
  named reviewer) filed no opinion before the end;
- ``recording_failed``: ``recording.failed``; ``recording_gap``: ``recording.gap`` (its
  media host died; ``at`` is the gap's start);
- ``media_quality``: ``media.quality`` ``{participant_id, loss, fps, frozen_s}`` (filed
  by the media side for a participant's sustained trouble) with ``loss`` ≥ ``media_loss``
  or ``frozen_s`` ≥ ``media_frozen_s``.

``at`` is the answer's, the end's or the event's own time.

An exception's id comes from the event that raised it (case, seq, kind and, for several
of one event, the invitation), so filing an event twice, or rebuilding a session's rows,
raises nothing new. ``raise_for`` returns the exceptions new to the record: only the
transaction that inserted them reports them (once, across nodes), to be pushed and sent.
Each costs the batch at most three small indexed reads (invitations, opinions,
participants of the events that need them), and nothing for the other events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from . import schema as s
from .projection import Row

# A session that ended without anyone ending it: the sweeper's reasons (everyone left,
# ``session_idle_end_s``; the server ending an abandoned session).
BROKEN_OFF = ("idle", "broken_off")
RAISING = frozenset(
    {
        "invitation.unanswered",
        "invitation.declined",
        "invitation.accepted",
        "session.ended",
        "recording.failed",
        "recording.gap",
        "media.quality",
    }
)
KINDS = (
    "invitation_unanswered",
    "invitation_declined",
    "long_wait",
    "session_broken_off",
    "no_opinion",
    "recording_failed",
    "recording_gap",
    "media_quality",
)


@dataclass(frozen=True)
class Rules:
    """The thresholds (settings ``exception_long_wait_s``, ``exception_media_loss``,
    ``exception_media_frozen_s``)."""

    long_wait_s: float = 60.0
    media_loss: float = 0.05
    media_frozen_s: float = 3.0
    # False: supervision adds nothing to the write path, neither exceptions nor the
    # statistics' counts (``bench stats``' baseline, the old schema)
    enabled: bool = True


def exception_id(case_id: str, seq: int, kind: str, key: str = "") -> str:
    digest = hashlib.sha256(f"{case_id}\0{seq}\0{kind}\0{key}".encode()).hexdigest()
    return "ex_" + digest[:29]


def _row(e: Row, kind: str, at: float, dept: str | None, key: str = "", **detail: Any) -> Row:
    return {
        "exception_id": exception_id(e["case_id"], e["seq"], kind, key),
        "kind": kind,
        "case_id": e["case_id"],
        "session_id": e["session_id"],
        "seq": e["seq"],
        "dept": dept,
        "at": float(at),
        "detail": detail,
        "status": "open",
        "handled_by": None,
        "handled_at": None,
        "note": None,
    }


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _by_id(
    conn: sa.Connection, table: sa.Table, key: str, ids: Iterable[str], columns: tuple[str, ...]
) -> dict[str, Row]:
    """Only the columns needed (a JSON column costs a decode a row)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    cols = [table.c[c] for c in (key, *columns)]
    rows = conn.execute(sa.select(*cols).where(table.c[key].in_(wanted)))
    return {r[0]: dict(zip((key, *columns), r, strict=True)) for r in rows}


INVITATION = ("dept", "level", "reviewer", "created_at", "rang_at")
ACCEPTED = ("invitation_id", "session_id", "dept", "level", "answerer_sub", "responded_by")


def _invitation_kinds(e: Row, inv: Row, rules: Rules) -> list[Row]:
    d = e["data"]
    iid = inv["invitation_id"]
    answerer = e["actor"] or {}
    dept = inv["dept"] or answerer.get("dept")
    who = {"invitation_id": iid, "level": inv["level"], "reviewer": inv["reviewer"]}
    if e["type"] == "invitation.unanswered":
        at = _num(d.get("unanswered_at")) or e["ts"]
        return [_row(e, "invitation_unanswered", at, dept, rang=inv["rang_at"] is not None, **who)]
    at = _num(d.get("responded_at")) or e["ts"]
    answer_s = at - float(inv["created_at"])
    out = []
    by = answerer.get("sub")
    if e["type"] == "invitation.declined":
        out.append(_row(e, "invitation_declined", at, dept, reason=d.get("reason"), by=by, **who))
    if answer_s > rules.long_wait_s:
        outcome = e["type"].split(".")[1]
        limit = rules.long_wait_s
        out.append(
            _row(e, "long_wait", at, dept, answer_s=answer_s, limit_s=limit, outcome=outcome, **who)
        )
    return out


def _no_opinion(e: Row, invs: list[Row], opinions: list[Row]) -> list[Row]:
    """Accepted invitations of the ended session without an opinion filed before the end
    by their department (a department's invitation) or their answerer (a named one)."""
    ended = _num(e["data"].get("ended_at")) or e["ts"]
    before = [o for o in opinions if o["created_at"] <= ended]
    out = []
    for inv in invs:
        if inv["dept"] is not None:
            done = any(o["author_dept"] == inv["dept"] for o in before)
        else:
            done = any((o["author"] or {}).get("sub") == inv["answerer_sub"] for o in before)
        if not done:
            dept = inv["dept"] or (inv["responded_by"] or {}).get("dept")
            iid = inv["invitation_id"]
            detail = {"invitation_id": iid, "level": inv["level"], "by": inv["answerer_sub"]}
            out.append(_row(e, "no_opinion", ended, dept, iid, **detail))
    return out


def _media_quality(e: Row, who: Row | None, rules: Rules) -> list[Row]:
    d = e["data"]
    loss, frozen = _num(d.get("loss")) or 0.0, _num(d.get("frozen_s")) or 0.0
    if loss < rules.media_loss and frozen < rules.media_frozen_s:
        return []
    ident = {k: (who or {}).get(k) for k in ("sub", "name", "role")}
    pid = d.get("participant_id")
    fps = _num(d.get("fps"))
    dept = (who or {}).get("dept")
    detail = dict(participant_id=pid, loss=loss, fps=fps, frozen_s=frozen, **ident)
    if d.get("trouble") in ("loss", "frozen"):
        detail["trouble"] = d["trouble"]
    # When the trouble began (the replay's moment), if the report says so.
    since = _num(d.get("since"))
    at = since if since is not None and since <= e["ts"] else e["ts"]
    return [_row(e, "media_quality", at, dept, **detail)]


def _pure(e: Row) -> list[Row]:
    d = e["data"]
    if e["type"] == "session.ended":
        if d.get("reason") not in BROKEN_OFF:
            return []
        at = _num(d.get("ended_at")) or e["ts"]
        return [_row(e, "session_broken_off", at, None, reason=d.get("reason"))]
    if e["type"] == "recording.failed":
        keep = {k: d.get(k) for k in ("code", "track_id", "file", "message")}
        return [_row(e, "recording_failed", e["ts"], None, **keep)]
    if e["type"] == "recording.gap":
        keep = {k: d.get(k) for k in ("start", "end", "reason", "resumed")}
        return [_row(e, "recording_gap", _num(d.get("start")) or e["ts"], None, **keep)]
    return []


def derive(conn: sa.Connection, events: list[Row], rules: Rules) -> list[Row]:
    """The exceptions these events (new in the record, their rows written) raise."""
    mine = [e for e in events if e["type"] in RAISING and e["session_id"]]
    if not mine or not rules.enabled:
        return []
    invs = _by_id(
        conn,
        s.invitations,
        "invitation_id",
        (str(e["data"].get("invitation_id")) for e in mine if e["type"].startswith("invitation.")),
        INVITATION,
    )
    ended = {e["session_id"] for e in mine if e["type"] == "session.ended"}
    accepted: dict[str, list[Row]] = {}
    opinions: dict[str, list[Row]] = {}
    if ended:
        t, o = s.invitations, s.opinions
        cols = [t.c[c] for c in ACCEPTED]
        stmt = sa.select(*cols).where(t.c.session_id.in_(sorted(ended)), t.c.status == "accepted")
        for r in conn.execute(stmt.order_by(t.c.created_at, t.c.invitation_id)):
            accepted.setdefault(r.session_id, []).append(dict(r._mapping))
        mine_cols = (o.c.session_id, o.c.author_dept, o.c.author, o.c.created_at)
        for r in conn.execute(sa.select(*mine_cols).where(o.c.session_id.in_(sorted(ended)))):
            opinions.setdefault(r.session_id, []).append(dict(r._mapping))
    who = _by_id(
        conn,
        s.participants,
        "participant_id",
        (str(e["data"].get("participant_id")) for e in mine if e["type"] == "media.quality"),
        ("sub", "name", "role", "dept"),
    )
    out: list[Row] = []
    for e in mine:
        out += _pure(e)
        if e["type"] == "session.ended":
            sid = e["session_id"]
            out += _no_opinion(e, accepted.get(sid, []), opinions.get(sid, []))
        elif e["type"] == "media.quality":
            out += _media_quality(e, who.get(str(e["data"].get("participant_id"))), rules)
        elif (inv := invs.get(str(e["data"].get("invitation_id")))) is not None:
            out += _invitation_kinds(e, inv, rules)
    return out


def raise_for(conn: sa.Connection, events: list[Row], rules: Rules) -> list[Row]:
    """Insert the exceptions these events raise; those new to the record (the case's
    lock, or SQLite's one writer, keeps the check and the insert together)."""
    rows = {r["exception_id"]: r for r in derive(conn, events, rules)}
    if not rows:
        return []
    t = s.exceptions
    have = conn.execute(sa.select(t.c.exception_id).where(t.c.exception_id.in_(sorted(rows))))
    for (known,) in have:
        rows.pop(known, None)
    new = list(rows.values())
    if new:
        conn.execute(sa.insert(t), new)
    return new
