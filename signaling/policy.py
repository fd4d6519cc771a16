"""Who may do what: pure rules over an identity and records (no I/O, table-tested).

Reading comes first: a thing the caller may not read answers exactly as a thing that
does not exist (``NotFound``, the same code and message), so nobody learns whether a
session, invitation or case they may not see exists. Only then does an action's own
rule answer 403 (``Forbidden``). Refusals that do not depend on the thing (the role a
route admits, a token's case scope when creating) stay 403 whatever the id.

This is the one home of role rules: the route table admits the named role sets below,
and the services, sockets and middlewares call the named rules; no other module of
``signaling`` compares a role with a role's name (tests/test_policy.py scans for it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .auth import ROLES, Identity, Role
from .errors import Forbidden, NotFound
from .models import Invitation, Session

# -- the roles each rule and route admits, by name ------------------------------------------

EVERYONE = frozenset(ROLES)  # any valid token; the finer rule is the record's
STAFF = frozenset({"clerk", "admin"})  # the counter: start and manage sessions, stills
READERS = frozenset({"clerk", "supervisor", "admin"})  # every session in their scope
REVIEWERS = frozenset({"reviewer"})  # an inbox; answer invitations, file opinions
MEMBERS = EVERYONE - {"applicant"}  # the service's own people (an applicant is a guest)
DIRECTORY_READERS = MEMBERS  # the departments and reviewers one may invite
REPLAYERS = MEMBERS  # replay and case file downloads (of a session they may read)
PRINTERS = REPLAYERS  # the opinion sheet, a file of the case file (or its draft)
TRACKERS = MEMBERS  # a case's process tracking (of the sessions they may read)
WATCHERS = frozenset({"supervisor", "admin"})  # the supervision feed, the webhook log
REPORTERS = frozenset({"supervisor", "admin"})  # the supervisors' reports over the record
SUPERVISORS = frozenset({"supervisor", "admin"})  # statistics, exceptions; handle them (#15)
AUDITED = frozenset({"supervisor", "admin"})  # every request of theirs is audited
AUDITORS = frozenset({"admin"})  # read the audit trail
OBSERVERS = frozenset({"supervisor", "admin"})  # watch a live session receive-only
LIVE_WATCHERS = frozenset({"supervisor", "admin"})  # the live overview of sessions now
OPERATORS = frozenset({"admin"})  # see where media runs, drain a node
WEBHOOK_ADMINS = frozenset({"admin"})  # retry a webhook delivery
DIRECTORY_ADMINS = frozenset({"admin"})  # the whole directory (every role), reload it
OPERATORS = frozenset({"admin"})  # the node's process figures in /healthz (soak, load tests)
HOLDERS = frozenset({"supervisor", "admin"})  # put a case on legal hold, release it (#18)
APPLICANT: Role = "applicant"  # the role of an applicant link's token
# An invitation still waiting for an answer: its reviewers may join (joining accepts it).
ANSWERABLE = ("pending", "ringing", "unanswered")


def _deny(message: str) -> Forbidden:
    return Forbidden("forbidden", message)


def may_read_process(who: Identity | None) -> bool:
    """May this caller of ``/healthz`` see the node process's figures (memory, file
    descriptors, tasks, threads)? They tell how loaded the node is: operators only."""
    return who is not None and who.role in OPERATORS


def check_case_scope(who: Identity, case_id: str) -> None:
    if who.case is not None and who.case != case_id:
        raise _deny(f"this token is limited to case {who.case}")


def check_session_scope(who: Identity, session: Session) -> None:
    check_case_scope(who, session.case_id)
    if who.session is not None and who.session != session.session_id:
        raise _deny("this token is limited to another session")


def invitation_targets(who: Identity, inv: Invitation) -> bool:
    """Is this reviewer one the invitation is for (by name, or by department+level)?"""
    if who.role not in REVIEWERS:
        return False
    if inv.reviewer is not None:
        return inv.reviewer == who.sub
    if inv.dept != who.dept:
        return False
    return inv.level is None or who.level is None or inv.level == who.level


def session_missing(session_id: str) -> NotFound:
    """What an unknown session answers, and so what an unreadable one answers."""
    return NotFound("session_not_found", f"no session {session_id}")


def case_missing(case_id: str) -> NotFound:
    return NotFound("case_not_found", f"no joint review was ever held for case {case_id}")


def invitation_missing(invitation_id: str) -> NotFound:
    return NotFound("invitation_not_found", f"no invitation {invitation_id}")


def in_scope(who: Identity, case_id: str, session_id: str | None) -> bool:
    """Does the token's case/session scope admit this case (and session)?"""
    if who.case is not None and who.case != case_id:
        return False
    return who.session is None or who.session == session_id


def may_read_session(who: Identity, session: Session, invitations: Iterable[Invitation]) -> bool:
    if not in_scope(who, session.case_id, session.session_id):
        return False
    if who.role in READERS:
        return True
    if who.role == APPLICANT:
        return who.session == session.session_id
    if who.role in REVIEWERS:
        return any(invitation_targets(who, i) for i in invitations)
    return False


def check_readable(who: Identity, session: Session, invitations: Iterable[Invitation]) -> None:
    """Raise the unknown session's 404 unless the caller may read this one."""
    if not may_read_session(who, session, invitations):
        raise session_missing(session.session_id)


def readable_sessions(
    who: Identity,
    sessions: Sequence[Session],
    invitations_by_session: Mapping[str, Sequence[Invitation]],
) -> list[Session]:
    """The sessions (in their order) the caller may read: a reviewer those an invitation
    of theirs names, an applicant their own, staff and supervisors all in their scope."""
    return [
        s
        for s in sessions
        if may_read_session(who, s, invitations_by_session.get(s.session_id, ()))
    ]


def can_see_invitation(who: Identity, inv: Invitation) -> bool:
    """May this reviewer see the invitation in their inbox (and answer it)?"""
    return invitation_targets(who, inv) and in_scope(who, inv.case_id, inv.session_id)


def can_read_event(who: Identity, session_id: str | None, readable: frozenset[str]) -> bool:
    """An event of the case timeline: one of a readable session; an event of no session
    (the case's own) only for those who read every session."""
    if session_id is None:
        return who.role in READERS and who.session is None
    return session_id in readable


def can_manage_session(who: Identity, session: Session) -> None:
    """Create invitations, applicant links, end the session: the counter's staff."""
    if who.role not in STAFF:
        raise _deny(f"a {who.role} cannot manage a joint review")
    if not in_scope(who, session.case_id, session.session_id):
        raise session_missing(session.session_id)


def can_read_session(who: Identity, session: Session, invitations: Iterable[Invitation]) -> None:
    check_readable(who, session, invitations)


def can_read_case(who: Identity, case_id: str, invitations: Iterable[Invitation]) -> None:
    """Read the case as a whole (its view lists only what ``readable_sessions`` keeps):
    staff and supervisors in scope, and a reviewer an invitation of the case names. A
    token limited to one session reads that session, not the case."""
    if who.session is None and in_scope(who, case_id, None):
        if who.role in READERS:
            return
        if who.role in REVIEWERS and any(invitation_targets(who, i) for i in invitations):
            return
    raise case_missing(case_id)


def can_give_consent(who: Identity, session: Session, invitations: Iterable[Invitation]) -> None:
    """The recording notice's consent (or refusal): an applicant, for their own session."""
    check_readable(who, session, invitations)
    if who.role != APPLICANT or who.session != session.session_id:
        raise _deny("only the applicant of this session answers its recording notice")


def can_join(who: Identity, session: Session, invitations: Iterable[Invitation]) -> None:
    invitations = list(invitations)
    check_readable(who, session, invitations)
    if who.role in STAFF:
        return
    if who.role == APPLICANT:
        if who.session == session.session_id:
            return
        raise _deny("an applicant link opens its own session only")
    if who.role in REVIEWERS:
        for inv in invitations:
            if invitation_targets(who, inv) and inv.status in ANSWERABLE:
                return
            if inv.status == "accepted" and inv.responded_by is not None:
                if inv.responded_by.sub == who.sub:
                    return
        raise _deny("your department has no open invitation to this session")
    raise _deny(f"a {who.role} does not take part in joint reviews")


def can_observe(
    who: Identity, session: Session, invitations: Iterable[Invitation], mode: str
) -> None:
    """Watch a live session receive-only (no slot, no media sent, no chat): supervisors
    and admins who may read it, unless the setting ``observation`` is ``off``."""
    check_readable(who, session, invitations)
    if who.role not in OBSERVERS:
        raise _deny(f"a {who.role} does not observe joint reviews; join instead")
    if mode == "off":
        raise Forbidden("observation_disabled", "observing sessions is turned off here")


def can_watch_live(who: Identity) -> None:
    """The live overview (every session in progress, everyone in it): supervisors and
    admins, with a token that spans every case."""
    if who.role not in LIVE_WATCHERS:
        raise _deny(f"a {who.role} cannot watch the live overview")
    check_unscoped(who, "the live overview")


def can_respond(who: Identity, inv: Invitation) -> None:
    if who.role not in REVIEWERS:
        raise _deny("only reviewers answer invitations")
    if not can_see_invitation(who, inv):
        raise invitation_missing(inv.invitation_id)


def can_file_opinion(who: Identity, session: Session, invitations: Iterable[Invitation]) -> None:
    """Reviewers who took part (they accepted, or joined, which accepts) file opinions."""
    invitations = list(invitations)
    check_readable(who, session, invitations)
    if who.role not in REVIEWERS:
        raise _deny("only reviewers file opinions")
    for inv in invitations:
        if inv.status == "accepted" and inv.responded_by is not None:
            if inv.responded_by.sub == who.sub:
                return
    raise _deny("only a reviewer who accepted an invitation to this session files opinions")


def can_take_snapshot(who: Identity, session: Session) -> None:
    if who.role not in STAFF:
        raise _deny("the counter's staff take document stills")
    if not in_scope(who, session.case_id, session.session_id):
        raise session_missing(session.session_id)


# -- rules by role (and scope) alone ----------------------------------------------------


def is_staff(who: Identity) -> bool:
    """The counter's staff, by role alone (``can_start_session`` adds the case scope)."""
    return who.role in STAFF


def can_start_session(who: Identity, case_id: str) -> None:
    """Staff start joint reviews, within their token's case: 403 whether the case exists
    or not (the scope first, then the role)."""
    check_case_scope(who, case_id)
    if not is_staff(who):
        raise _deny(f"a {who.role} cannot start a joint review")


def can_start_inviting(who: Identity, case_id: str) -> None:
    """Start a joint review and invite in the same call (the approval system's one call,
    the counter's Start): who may start it, with a token not limited to one session
    (such a token could not manage the session it would create)."""
    can_start_session(who, case_id)
    if who.session is not None:
        raise _deny("a token limited to one session cannot start another")


def can_list_sessions(who: Identity) -> None:
    if who.role not in READERS:
        raise _deny(f"a {who.role} cannot list sessions")


def has_inbox(who: Identity) -> bool:
    """Reviewers have an invitation inbox (their department's and their own)."""
    return who.role in REVIEWERS


def can_read_inbox(who: Identity) -> None:
    if not has_inbox(who):
        raise _deny("only reviewers have an invitation inbox")


def may_be_invited(role: str) -> bool:
    """May a directory user of this role be invited by name (and so be listed to pick)?"""
    return role in REVIEWERS


def accepted_by_joining(who: Identity, invitations: Iterable[Invitation]) -> Invitation | None:
    """The invitation a reviewer's joining accepts: the first still waiting for an answer
    that is for them; None for everyone else (staff, an applicant, who answered)."""
    return next(
        (i for i in invitations if i.status in ANSWERABLE and invitation_targets(who, i)), None
    )


def watches_supervision(who: Identity) -> bool:
    """Supervisors and admins receive the supervision feed (every ``recording.error``)."""
    return who.role in WATCHERS


def is_audited(who: Identity) -> bool:
    """Is every request of this caller written to the audit trail (``<role>.request``)?"""
    return who.role in AUDITED


def check_unscoped(who: Identity, what: str) -> None:
    """What spans every case (the audit trail, the webhook log) is not for a token
    limited to one case or session: it would read beyond its scope."""
    if who.case is not None or who.session is not None:
        raise _deny(f"{what} is not readable with a case-limited token")


def can_supervise(who: Identity, what: str) -> None:
    """Statistics and exceptions span every case: supervisors and admins, unscoped."""
    if who.role not in SUPERVISORS:
        raise _deny(f"only supervisors and admins may read {what}")
    check_unscoped(who, what)


def can_hold(who: Identity, case_id: str) -> None:
    """A legal hold (kept from the retention purge) is put and released by supervisors
    and admins, within their token's case scope (#18)."""
    if who.role not in HOLDERS:
        raise _deny("only supervisors and admins may put a case on hold or release it")
    check_case_scope(who, case_id)
    if who.session is not None:
        raise _deny("a hold covers the whole case: not with a session-limited token")
