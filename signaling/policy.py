"""Who may do what: pure rules over an identity and records (no I/O, table-tested)."""

from __future__ import annotations

from collections.abc import Iterable

from .auth import Identity
from .errors import Forbidden
from .models import Invitation, Session

STAFF = frozenset({"clerk", "admin"})
READERS = frozenset({"clerk", "supervisor", "admin"})


def _deny(message: str) -> Forbidden:
    return Forbidden("forbidden", message)


def check_case_scope(who: Identity, case_id: str) -> None:
    if who.case is not None and who.case != case_id:
        raise _deny(f"this token is limited to case {who.case}")


def check_session_scope(who: Identity, session: Session) -> None:
    check_case_scope(who, session.case_id)
    if who.session is not None and who.session != session.session_id:
        raise _deny("this token is limited to another session")


def invitation_targets(who: Identity, inv: Invitation) -> bool:
    """Is this reviewer one the invitation is for (by name, or by department+level)?"""
    if who.role != "reviewer":
        return False
    if inv.reviewer is not None:
        return inv.reviewer == who.sub
    if inv.dept != who.dept:
        return False
    return inv.level is None or who.level is None or inv.level == who.level


def can_manage_session(who: Identity, session: Session) -> None:
    """Create invitations, applicant links, end the session: the counter's staff."""
    if who.role not in STAFF:
        raise _deny(f"a {who.role} cannot manage a joint review")
    check_session_scope(who, session)


def can_read_session(who: Identity, session: Session, invitations: Iterable[Invitation]) -> None:
    check_session_scope(who, session)
    if who.role in READERS:
        return
    if who.role == "applicant" and who.session == session.session_id:
        return
    if who.role == "reviewer" and any(invitation_targets(who, i) for i in invitations):
        return
    raise _deny("you are not invited to this session")


def can_read_case(who: Identity, case_id: str, invitations: Iterable[Invitation]) -> None:
    check_case_scope(who, case_id)
    if who.session is not None:
        raise _deny("this token is limited to one session")
    if who.role in READERS:
        return
    if who.role == "reviewer" and any(invitation_targets(who, i) for i in invitations):
        return
    raise _deny(f"a {who.role} cannot read this case")


def can_join(who: Identity, session: Session, invitations: Iterable[Invitation]) -> None:
    check_session_scope(who, session)
    if who.role in STAFF:
        return
    if who.role == "applicant":
        if who.session == session.session_id:
            return
        raise _deny("an applicant link opens its own session only")
    if who.role == "reviewer":
        for inv in invitations:
            if invitation_targets(who, inv) and inv.status in ("pending", "ringing", "unanswered"):
                return
            if inv.status == "accepted" and inv.responded_by is not None:
                if inv.responded_by.sub == who.sub:
                    return
        raise _deny("your department has no open invitation to this session")
    raise _deny(f"a {who.role} does not take part in joint reviews")


def can_respond(who: Identity, inv: Invitation) -> None:
    if who.role != "reviewer":
        raise _deny("only reviewers answer invitations")
    check_case_scope(who, inv.case_id)
    if who.session is not None and who.session != inv.session_id:
        raise _deny("this token is limited to another session")
    if not invitation_targets(who, inv):
        raise _deny("this invitation is for another reviewer or department")


def can_file_opinion(who: Identity, session: Session, invitations: Iterable[Invitation]) -> None:
    """Reviewers who took part (they accepted, or joined, which accepts) file opinions."""
    check_session_scope(who, session)
    if who.role != "reviewer":
        raise _deny("only reviewers file opinions")
    for inv in invitations:
        if inv.status == "accepted" and inv.responded_by is not None:
            if inv.responded_by.sub == who.sub:
                return
    raise _deny("only a reviewer who accepted an invitation to this session files opinions")


def can_take_snapshot(who: Identity, session: Session) -> None:
    if who.role not in STAFF:
        raise _deny("the counter's staff take document stills")
    check_session_scope(who, session)
