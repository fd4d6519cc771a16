"""From one case event to the rows of the record it implies (sans-IO: pure functions).

``project(event)`` takes an event as ``signaling.core.append_event`` files it (a dict
with ``seq``, ``ts``, ``type``, ``case_id``, ``session_id``, ``actor``, ``data``) and
returns the changes: the case row and the event row, always, then the rows its type
creates (``Insert``, ignored when the key exists) or changes (``Update``, only while the
row is in one of the states the live store changes it from: so an event recorded late,
or twice, never undoes a later answer). ``repo.History`` applies them in one
transaction, and none at all when the event is already recorded.

A row's time is the event's ``ts``, unless the event's data carries the live document's
own (``created_at``, ``ended_at``, ``rang_at``, ``unanswered_at``, ``responded_at``,
``joined_at``, ``disconnected_at``, ``left_at``): the store takes its time a moment before
filing the event, and the record's views answer with the live document's time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]

OPEN = ("pending", "ringing", "unanswered")  # as signaling.core.OPEN
NOT_LEFT = ("joined", "disconnected")


@dataclass(frozen=True)
class Insert:
    table: str
    row: Row


@dataclass(frozen=True)
class Update:
    table: str
    key: Row  # column -> value: which row
    values: Row
    # column -> the values it must hold for the change to apply (empty: always)
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


Change = Insert | Update


@dataclass(frozen=True)
class Projection:
    case: Row
    event: Row
    changes: list[Change]


def event_row(event: Mapping[str, Any]) -> Row:
    return {
        "case_id": event["case_id"],
        "seq": int(event["seq"]),
        "ts": float(event["ts"]),
        "type": event["type"],
        "session_id": event.get("session_id"),
        "actor": event.get("actor"),
        "data": dict(event.get("data") or {}),
    }


def project(event: Mapping[str, Any]) -> Projection:
    row = event_row(event)
    how = RULES.get(row["type"])
    changes = how(row) if how is not None and row["session_id"] else []
    return Projection({"case_id": row["case_id"], "created_at": row["ts"]}, row, changes)


# -- one function per event type that changes a row ---------------------------------------


def _session_created(e: Row) -> list[Change]:
    d, actor = e["data"], e["actor"] or {}
    row = {
        "session_id": e["session_id"],
        "case_id": e["case_id"],
        "status": "active",
        "created_at": d.get("created_at", e["ts"]),
        "created_by": actor,
        "creator_sub": actor.get("sub", ""),
        "applicant_name": d.get("applicant_name"),
        "matter": d.get("matter"),
        "window": d.get("window"),
    }
    return [Insert("sessions", row)]


def _session_ended(e: Row) -> list[Change]:
    ended_at = e["data"].get("ended_at", e["ts"])
    values = {
        "status": "ended",
        "ended_at": ended_at,
        "ended_by": e["actor"],
        "end_reason": e["data"].get("reason"),
        "duration_s": Elapsed(ended_at, "created_at"),
    }
    return [Update("sessions", {"session_id": e["session_id"]}, values, {"status": ("active",)})]


def _archive_sealed(e: Row) -> list[Change]:
    d = e["data"]
    values = {
        "sealed_at": e["ts"],
        "manifest_sha256": d.get("manifest_sha256"),
        "chain_head": d.get("chain_head"),
    }
    return [Update("sessions", {"session_id": e["session_id"]}, values)]


def _invitation_created(e: Row) -> list[Change]:
    d = e["data"]
    row = {
        "invitation_id": d["invitation_id"],
        "session_id": e["session_id"],
        "case_id": e["case_id"],
        "dept": d.get("dept"),
        "level": d.get("level"),
        "reviewer": d.get("reviewer"),
        "reviewer_name": d.get("reviewer_name"),
        "status": "pending",
        "created_at": d.get("created_at", e["ts"]),
        "created_by": e["actor"],
        "note": d.get("note"),
    }
    return [Insert("invitations", row)]


def _invitation_status(status: str, allowed: tuple[str, ...]) -> Callable[[Row], list[Change]]:
    """An invitation's status change, as ``ServiceCore._set_invitation`` makes it."""

    def change(e: Row) -> list[Change]:
        values: Row = {"status": status}
        d = e["data"]
        if status == "ringing":
            values["rang_at"] = d.get("rang_at", e["ts"])
        elif status == "unanswered":
            values["unanswered_at"] = d.get("unanswered_at", e["ts"])
        else:
            actor = e["actor"]
            values.update(
                responded_at=d.get("responded_at", e["ts"]),
                responded_by=actor,
                answerer_sub=actor.get("sub") if actor else None,
                reason=e["data"].get("reason"),
            )
            if status in ("accepted", "declined"):  # an answer: how long it took
                values["answer_s"] = Elapsed(values["responded_at"], "created_at")
        key = {"invitation_id": e["data"]["invitation_id"]}
        return [Update("invitations", key, values, {"status": allowed})]

    return change


def _participant_joined(e: Row) -> list[Change]:
    who = e["actor"] or {}
    row = {
        "participant_id": e["data"]["participant_id"],
        "session_id": e["session_id"],
        "sub": who.get("sub", ""),
        "name": who.get("name", ""),
        "role": who.get("role", ""),
        "dept": who.get("dept"),
        "level": who.get("level"),
        "state": "joined",
        "joined_at": e["data"].get("joined_at", e["ts"]),
        "connections": 1,
    }
    return [Insert("participants", row)]


def _participant_back(e: Row) -> list[Change]:
    """rejoined / resumed: the slot is joined again (one more connection)."""
    key = {"participant_id": e["data"]["participant_id"]}
    values = {"state": "joined", "connections": Increment(1)}
    return [Update("participants", key, values, {"state": NOT_LEFT})]


def _participant_disconnected(e: Row) -> list[Change]:
    key = {"participant_id": e["data"]["participant_id"]}
    values = {"state": "disconnected", "disconnected_at": e["data"].get("disconnected_at", e["ts"])}
    return [Update("participants", key, values, {"state": ("joined",)})]


def _participant_left(e: Row) -> list[Change]:
    key = {"participant_id": e["data"]["participant_id"]}
    d = e["data"]
    values = {"state": "left", "left_at": d.get("left_at", e["ts"]), "left_reason": d.get("reason")}
    return [Update("participants", key, values, {"state": NOT_LEFT})]


def _chat(e: Row) -> list[Change]:
    row = {
        "case_id": e["case_id"],
        "seq": e["seq"],
        "session_id": e["session_id"],
        "participant_id": e["data"].get("participant_id"),
        "sender": e["actor"],
        "text": e["data"].get("text") or "",
        "ts": e["ts"],
    }
    return [Insert("chat", row)]


def _opinion(e: Row) -> list[Change]:
    d, author = e["data"], e["actor"] or {}
    row = {
        "opinion_id": d["opinion_id"],
        "session_id": e["session_id"],
        "case_id": e["case_id"],
        "author": author,
        "author_dept": author.get("dept"),
        "decision": d["decision"],
        "missing": list(d.get("missing") or []),
        "refer_to": d.get("refer_to"),
        "note": d.get("note"),
        "created_at": d.get("created_at", e["ts"]),
    }
    return [Insert("opinions", row)]


def _snapshot(e: Row) -> list[Change]:
    d = e["data"]
    row = {
        "snapshot_id": d["snapshot_id"],
        "session_id": e["session_id"],
        "case_id": e["case_id"],
        "taken_by": e["actor"] or {},
        "content_type": d["content_type"],
        "size": int(d["size"]),
        "sha256": d["sha256"],
        "created_at": d.get("created_at", e["ts"]),
    }
    return [Insert("snapshots", row)]


def _exception_handled(e: Row) -> list[Change]:
    """A supervisor handled an exception (raised by ``raising``): once, the first time."""
    d = e["data"]
    values = {"status": "handled", "handled_by": e["actor"], "handled_at": e["ts"]}
    values["note"] = d.get("note")
    key = {"exception_id": d["exception_id"]}
    return [Update("exceptions", key, values, {"status": ("open",)})]


@dataclass(frozen=True)
class Increment:
    """An ``Update`` value: add this to the column's current value."""

    by: int


@dataclass(frozen=True)
class Elapsed:
    """An ``Update`` value: the time from the row's own ``since`` column to ``at``
    (an answer's time, a session's length: kept for the statistics' indexes)."""

    at: float
    since: str


RULES: dict[str, Callable[[Row], list[Change]]] = {
    "session.created": _session_created,
    "session.ended": _session_ended,
    "archive.sealed": _archive_sealed,
    "invitation.created": _invitation_created,
    "invitation.rang": _invitation_status("ringing", ("pending",)),
    "invitation.unanswered": _invitation_status("unanswered", ("pending", "ringing")),
    "invitation.accepted": _invitation_status("accepted", OPEN),
    "invitation.declined": _invitation_status("declined", OPEN),
    "invitation.cancelled": _invitation_status("cancelled", OPEN),
    "participant.joined": _participant_joined,
    "participant.rejoined": _participant_back,
    "participant.resumed": _participant_back,
    "participant.disconnected": _participant_disconnected,
    "participant.left": _participant_left,
    "chat.message": _chat,
    "opinion.filed": _opinion,
    "snapshot.taken": _snapshot,
    "exception.handled": _exception_handled,
}


# -- a batch's changes, folded: what is left for SQL --------------------------------------

KEYS = {  # the key of each table a change names
    "sessions": ("session_id",),
    "invitations": ("invitation_id",),
    "participants": ("participant_id",),
    "chat": ("case_id", "seq"),
    "opinions": ("opinion_id",),
    "snapshots": ("snapshot_id",),
    "exceptions": ("exception_id",),
}


def _applies(row: Row, update: Update) -> bool:
    return all(row.get(column) in allowed for column, allowed in update.when.items())


def fold(changes: list[Change]) -> tuple[dict[str, list[Row]], list[Update]]:
    """The rows to insert, by table, and the updates still to run, in order.

    An update of a row that the same batch creates is applied to that row here (a batch
    of a day's events is then mostly inserts); the others are left for the database.
    A second insert of one key is dropped, as the database would ignore it. The rows of a
    table all have the same columns (those missing are None), to be sent in one go.
    """
    born: dict[tuple[str, tuple[Any, ...]], Row] = {}
    inserts: dict[str, list[Row]] = {}
    updates: list[Update] = []
    for change in changes:
        if isinstance(change, Insert):
            key = (change.table, tuple(change.row[k] for k in KEYS[change.table]))
            if key not in born:
                born[key] = dict(change.row)
                inserts.setdefault(change.table, []).append(born[key])
            continue
        row = born.get((change.table, tuple(change.key[k] for k in KEYS[change.table])))
        if row is None:
            updates.append(change)
        elif _applies(row, change):
            for column, value in change.values.items():
                if isinstance(value, Increment):
                    row[column] = row[column] + value.by
                elif isinstance(value, Elapsed):
                    row[column] = value.at - row[value.since]
                else:
                    row[column] = value
    for table, rows in inserts.items():
        columns = {c: None for r in rows for c in r}
        inserts[table] = [{**columns, **r} for r in rows]
    return inserts, updates
