"""What each case event makes of the record's rows (pure: no database)."""

from __future__ import annotations

from typing import Any

import pytest

from signaling.history.projection import (
    NOT_LEFT,
    OPEN,
    RULES,
    Elapsed,
    Increment,
    Insert,
    Update,
    fold,
    project,
)
from signaling.history.write_steps import group_updates

REV = {"sub": "rev-1", "name": "李四", "role": "reviewer", "dept": "city-amr", "level": "city"}


def ev(type_: str, actor: Any = REV, sid: str | None = "s1", **data: Any) -> dict[str, Any]:
    return {"seq": 7, "ts": 50.0, "type": type_, "case_id": "C", "session_id": sid,
            "actor": actor, "data": data}  # fmt: skip


INV = {"invitation_id": "i1"}
PID = {"participant_id": "p1"}

CASES: list[tuple[dict[str, Any], list[Any]]] = [
    (
        ev("session.created", applicant_name="甲", matter="m", window="W1"),
        [Insert("sessions", {"session_id": "s1", "case_id": "C", "status": "active",
                             "created_at": 50.0, "created_by": REV, "creator_sub": "rev-1",
                             "applicant_name": "甲", "matter": "m", "window": "W1"})],
    ),
    (
        ev("session.ended", actor=None, reason="idle"),
        [Update("sessions", {"session_id": "s1"}, {"status": "ended", "ended_at": 50.0,
                "ended_by": None, "end_reason": "idle",
                "duration_s": Elapsed(50.0, "created_at")}, {"status": ("active",)})],
    ),
    (
        ev("archive.sealed", actor=None, manifest_sha256="m" * 64, chain_head="h" * 64),
        [Update("sessions", {"session_id": "s1"}, {"sealed_at": 50.0,
                "manifest_sha256": "m" * 64, "chain_head": "h" * 64})],
    ),
    (
        ev("invitation.created", invitation_id="i1", dept="city-amr", level="city"),
        [Insert("invitations", {"invitation_id": "i1", "session_id": "s1", "case_id": "C",
                "dept": "city-amr", "level": "city", "reviewer": None, "reviewer_name": None,
                "status": "pending", "created_at": 50.0, "created_by": REV, "note": None})],
    ),
    (
        ev("invitation.rang", invitation_id="i1", reason=None),
        [Update("invitations", INV, {"status": "ringing", "rang_at": 50.0},
                {"status": ("pending",)})],
    ),
    (
        ev("invitation.unanswered", actor=None, invitation_id="i1", reason=None),
        [Update("invitations", INV, {"status": "unanswered", "unanswered_at": 50.0},
                {"status": ("pending", "ringing")})],
    ),
    (
        ev("invitation.declined", invitation_id="i1", reason="不归我们"),
        [Update("invitations", INV, {"status": "declined", "responded_at": 50.0,
                "responded_by": REV, "answerer_sub": "rev-1", "reason": "不归我们",
                "answer_s": Elapsed(50.0, "created_at")}, {"status": OPEN})],
    ),
    (
        ev("invitation.accepted", invitation_id="i1", reason=None),
        [Update("invitations", INV, {"status": "accepted", "responded_at": 50.0,
                "responded_by": REV, "answerer_sub": "rev-1", "reason": None,
                "answer_s": Elapsed(50.0, "created_at")}, {"status": OPEN})],
    ),
    (
        ev("invitation.cancelled", actor=None, invitation_id="i1", reason=None),
        [Update("invitations", INV, {"status": "cancelled", "responded_at": 50.0,
                "responded_by": None, "answerer_sub": None, "reason": None},
                {"status": OPEN})],
    ),
    (
        ev("participant.joined", participant_id="p1"),
        [Insert("participants", {"participant_id": "p1", "session_id": "s1", "sub": "rev-1",
                "name": "李四", "role": "reviewer", "dept": "city-amr", "level": "city",
                "state": "joined", "joined_at": 50.0, "connections": 1})],
    ),
    (
        ev("participant.resumed", participant_id="p1"),
        [Update("participants", PID, {"state": "joined", "connections": Increment(1)},
                {"state": NOT_LEFT})],
    ),
    (
        ev("participant.disconnected", participant_id="p1"),
        [Update("participants", PID, {"state": "disconnected", "disconnected_at": 50.0},
                {"state": ("joined",)})],
    ),
    (
        ev("participant.left", participant_id="p1", reason="connection_lost"),
        [Update("participants", PID, {"state": "left", "left_at": 50.0,
                "left_reason": "connection_lost"}, {"state": NOT_LEFT})],
    ),
    (
        ev("chat.message", participant_id="p1", text="请补充"),
        [Insert("chat", {"case_id": "C", "seq": 7, "session_id": "s1", "participant_id": "p1",
                "sender": REV, "text": "请补充", "ts": 50.0})],
    ),
    (
        ev("opinion.filed", opinion_id="o1", decision="refer", missing=[], refer_to="city-tax",
           note=None, created_at=49.5),
        [Insert("opinions", {"opinion_id": "o1", "session_id": "s1", "case_id": "C",
                "author": REV, "author_dept": "city-amr", "decision": "refer", "missing": [],
                "refer_to": "city-tax", "note": None, "created_at": 49.5})],
    ),
    (
        ev("snapshot.taken", snapshot_id="f1", sha256="a" * 64, size=10, content_type="image/png"),
        [Insert("snapshots", {"snapshot_id": "f1", "session_id": "s1", "case_id": "C",
                "taken_by": REV, "content_type": "image/png", "size": 10, "sha256": "a" * 64,
                "created_at": 50.0})],
    ),
    (
        ev("exception.handled", exception_id="ex_1", kind="no_opinion", note="called them"),
        [Update("exceptions", {"exception_id": "ex_1"}, {"status": "handled", "handled_by": REV,
                "handled_at": 50.0, "note": "called them"}, {"status": ("open",)})],
    ),
    (ev("recording.started", actor=None, policy="always", reason="policy"), []),
    (ev("replay.viewed", tracks=2, recording="sealed"), []),
    (ev("export.ready", actor=None, sid=None, path="exports/composite.mp4"), []),
]  # fmt: skip


@pytest.mark.parametrize(("event", "changes"), CASES, ids=[c[0]["type"] for c in CASES])
def test_each_event_type_makes_its_rows(event: dict[str, Any], changes: list[Any]) -> None:
    got = project(event)
    assert got.case == {"case_id": "C", "created_at": 50.0}
    assert got.event == {k: event[k] for k in ("case_id", "seq", "ts", "type", "session_id",
                         "actor", "data")}  # fmt: skip
    assert got.changes == changes


def test_every_type_with_rows_is_tested() -> None:
    assert set(RULES) - {c[0]["type"] for c in CASES} == {"participant.rejoined"}
    assert RULES["participant.rejoined"] is RULES["participant.resumed"]


def test_a_batch_folds_the_changes_of_rows_it_creates() -> None:
    events = [
        ev("session.created", applicant_name="甲"),
        ev("invitation.created", invitation_id="i1", dept="city-amr"),
        ev("invitation.rang", invitation_id="i1"),
        ev("invitation.accepted", invitation_id="i1"),
        ev("invitation.rang", invitation_id="i1"),  # too late: accepted already
        ev("participant.joined", participant_id="p1"),
        ev("participant.resumed", participant_id="p1"),
        ev("participant.joined", participant_id="p1"),  # the same key again: dropped
        ev("invitation.declined", invitation_id="i0"),  # a row of an earlier batch
        ev("session.ended", actor=None),
    ]
    inserts, updates = fold([c for e in events for c in project(e).changes])
    [session] = inserts["sessions"]
    assert (session["status"], session["ended_at"], session["applicant_name"]) == (
        "ended",
        50.0,
        "甲",
    )
    [inv] = inserts["invitations"]
    assert (inv["status"], inv["rang_at"], inv["answerer_sub"]) == ("accepted", 50.0, "rev-1")
    assert inv["answer_s"] == 0.0 and session["duration_s"] == 0.0  # the time since creation
    [p] = inserts["participants"]
    assert (p["state"], p["connections"]) == ("joined", 2)
    assert [(u.table, u.key) for u in updates] == [("invitations", {"invitation_id": "i0"})]
    # Every row of a table has the same columns (one statement for all of them).
    assert len({tuple(sorted(r)) for rows in inserts.values() for r in rows if "status" in r}) == 2


def test_fold_leaves_the_projection_untouched() -> None:
    made = project(ev("participant.joined", participant_id="p1"))
    fold([*made.changes, *project(ev("participant.left", participant_id="p1")).changes])
    assert made.changes[0].row["state"] == "joined"  # type: ignore[union-attr]


def test_updates_go_in_runs_of_one_shape_each_row_in_order() -> None:
    events = [
        ev("invitation.rang", invitation_id="i1"),
        ev("invitation.rang", invitation_id="i2"),
        ev("invitation.accepted", invitation_id="i1"),
        ev("invitation.rang", invitation_id="i3"),  # joins the first run: i3 has no other
        ev("invitation.declined", invitation_id="i2", reason="no"),  # as accepted: one shape
        ev("invitation.rang", invitation_id="i1"),  # i1 was accepted in run 2: a new run
        ev("participant.resumed", participant_id="p1"),
        ev("participant.resumed", participant_id="p1"),  # same shape, same row: in order
    ]
    updates = [c for e in events for c in project(e).changes]
    assert all(isinstance(u, Update) for u in updates)
    runs = group_updates(updates)  # type: ignore[arg-type]
    keys = [[p.get("k_invitation_id", p.get("k_participant_id")) for p in ps] for _, ps in runs]
    assert keys == [["i1", "i2", "i3"], ["i1", "i2"], ["i1"], ["p1", "p1"]]
    states = [ps[0].get("v_status", ps[0].get("v_state")) for _, ps in runs]
    assert states == ["ringing", "accepted", "ringing", "joined"]
    assert runs[1][1][1]["v_reason"] == "no" and runs[3][1][0]["v_connections"] == 1
