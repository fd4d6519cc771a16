"""Who may do what: every rule of signaling.policy as a table of identity x record -> verdict.

Each row names the person, the record and the expected verdict: ``ALLOW`` (the check
returns) or ``DENY`` (it raises Forbidden). Records are built directly from
signaling.models; no service, store or token is involved.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from signaling import core, policy
from signaling.auth import ROLES, Identity
from signaling.errors import Forbidden, NotFound
from signaling.models import Actor, Invitation, Session

ALLOW = True
DENY = False
HIDE = "hidden"  # raises NotFound: as if the thing did not exist (the caller may not read it)

# -- people -----------------------------------------------------------------------------

CLERK = Identity(sub="clerk-01", name="陈晓", role="clerk")
ADMIN = Identity(sub="admin", name="系统管理员", role="admin")
SUPERVISOR = Identity(sub="sup-01", name="郑监督", role="supervisor")
# Reviewer of the invited department at the invited level.
REV_AMR = Identity(
    sub="rev-city-amr-1", name="王建国", role="reviewer", dept="city-amr", level="city"
)
# Same department, token without a level claim: matches an invitation of any level.
REV_AMR_NOLEVEL = Identity(sub="rev-city-amr-2", name="A2", role="reviewer", dept="city-amr")
# Same department id, wrong level.
REV_AMR_DISTRICT = Identity(
    sub="rev-amr-d", name="AD", role="reviewer", dept="city-amr", level="district"
)
# Another department.
REV_TAX = Identity(
    sub="rev-city-tax-1", name="李敏", role="reviewer", dept="city-tax", level="city"
)
# The reviewer a named invitation is for (of a department that is not invited as such).
REV_NAMED = Identity(
    sub="rev-district-planning-1",
    name="吴芳",
    role="reviewer",
    dept="district-planning",
    level="district",
)
# A reviewer whose token is limited to another case.
REV_AMR_OTHER_CASE = Identity(
    sub="rev-city-amr-1", name="王建国", role="reviewer", dept="city-amr", level="city", case="C2"
)
REV_AMR_THIS_CASE = Identity(
    sub="rev-city-amr-1", name="王建国", role="reviewer", dept="city-amr", level="city", case="C1"
)
REV_AMR_SESSION_S1 = Identity(
    sub="rev-city-amr-1",
    name="王建国",
    role="reviewer",
    dept="city-amr",
    level="city",
    case="C1",
    session="s1",
)
APPLICANT_S1 = Identity(sub="applicant-x", name="张三", role="applicant", case="C1", session="s1")
APPLICANT_S2 = Identity(sub="applicant-y", name="李四", role="applicant", case="C1", session="s2")
APPLICANT_UNSCOPED = Identity(sub="applicant-z", name="王五", role="applicant")
CLERK_CASE_C1 = Identity(sub="clerk-01", name="陈晓", role="clerk", case="C1")
CLERK_CASE_C2 = Identity(sub="clerk-01", name="陈晓", role="clerk", case="C2")
CLERK_SESSION_S1 = Identity(sub="clerk-01", name="陈晓", role="clerk", case="C1", session="s1")
CLERK_SESSION_S2 = Identity(sub="clerk-01", name="陈晓", role="clerk", case="C1", session="s2")
ADMIN_CASE_C2 = Identity(sub="admin", name="系统管理员", role="admin", case="C2")
SUPERVISOR_CASE_C1 = Identity(sub="sup-01", name="郑监督", role="supervisor", case="C1")
SUPERVISOR_CASE_C2 = Identity(sub="sup-01", name="郑监督", role="supervisor", case="C2")

# -- records ----------------------------------------------------------------------------

BY = Actor(sub="clerk-01", name="陈晓", role="clerk")


def session(session_id: str = "s1", case_id: str = "C1", status: str = "active") -> Session:
    return Session(
        session_id=session_id,
        case_id=case_id,
        status=status,  # type: ignore[arg-type]
        created_at=1.0,
        created_by=BY,
    )


def invitation(
    status: str = "pending",
    *,
    dept: str | None = "city-amr",
    level: str | None = "city",
    reviewer: str | None = None,
    responded_by: Identity | None = None,
    session_id: str = "s1",
    case_id: str = "C1",
) -> Invitation:
    return Invitation(
        invitation_id=f"i-{status}-{dept or reviewer}",
        session_id=session_id,
        case_id=case_id,
        dept=dept,
        level=level,  # type: ignore[arg-type]
        reviewer=reviewer,
        status=status,  # type: ignore[arg-type]
        created_at=1.0,
        created_by=BY,
        responded_by=(
            Actor(
                sub=responded_by.sub,
                name=responded_by.name,
                role=responded_by.role,  # type: ignore[arg-type]
                dept=responded_by.dept,
                level=responded_by.level,  # type: ignore[arg-type]
            )
            if responded_by
            else None
        ),
    )


S1 = session("s1", "C1")
S2 = session("s2", "C1")
S3 = session("s3", "C2")
S1_ENDED = session("s1", "C1", status="ended")

INV_DEPT = invitation()  # city-amr at city level, pending
INV_DEPT_ANY_LEVEL = invitation(level=None)
INV_DEPT_DISTRICT = invitation(level="district")
INV_DEPT_RINGING = invitation("ringing")
INV_NAMED = invitation(dept=None, level=None, reviewer=REV_NAMED.sub)
INV_ACCEPTED_BY_AMR = invitation("accepted", responded_by=REV_AMR)
INV_DECLINED_BY_AMR = invitation("declined", responded_by=REV_AMR)
INV_CANCELLED = invitation("cancelled")
INV_TAX = invitation(dept="city-tax")
INV_C2 = invitation(session_id="s3", case_id="C2")
INV_S2 = invitation(session_id="s2", case_id="C1")


def outcome(check: Callable[..., None], *args: Any) -> bool | str:
    """ALLOW if the check returns, DENY if it raises Forbidden (403, code "forbidden"),
    HIDE if it raises NotFound (404, the unknown thing's code)."""
    try:
        check(*args)
    except Forbidden as exc:
        assert exc.status == 403
        assert exc.code == "forbidden"
        assert exc.message
        return DENY
    except NotFound as exc:
        assert exc.status == 404
        assert exc.code in ("session_not_found", "case_not_found", "invitation_not_found")
        assert exc.message
        return HIDE
    return ALLOW


# -- check_case_scope -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "case_id", "expected"),
    [
        pytest.param(CLERK, "C1", ALLOW, id="unscoped-clerk"),
        pytest.param(REV_AMR, "C2", ALLOW, id="unscoped-reviewer"),
        pytest.param(CLERK_CASE_C1, "C1", ALLOW, id="clerk-scoped-to-this-case"),
        pytest.param(CLERK_CASE_C2, "C1", DENY, id="clerk-scoped-to-other-case"),
        pytest.param(ADMIN_CASE_C2, "C1", DENY, id="admin-scoped-to-other-case"),
        pytest.param(APPLICANT_S1, "C1", ALLOW, id="applicant-own-case"),
        pytest.param(APPLICANT_S1, "C2", DENY, id="applicant-other-case"),
        pytest.param(REV_AMR_OTHER_CASE, "C1", DENY, id="reviewer-scoped-to-other-case"),
    ],
)
def test_check_case_scope(who: Identity, case_id: str, expected: bool | str) -> None:
    assert outcome(policy.check_case_scope, who, case_id) == expected


# -- check_session_scope ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "sess", "expected"),
    [
        pytest.param(CLERK, S1, ALLOW, id="unscoped-clerk"),
        pytest.param(CLERK_CASE_C1, S2, ALLOW, id="case-scoped-any-session-of-case"),
        pytest.param(CLERK_CASE_C1, S3, DENY, id="case-scoped-session-of-other-case"),
        pytest.param(CLERK_SESSION_S1, S1, ALLOW, id="session-scoped-this-session"),
        pytest.param(CLERK_SESSION_S1, S2, DENY, id="session-scoped-other-session-same-case"),
        pytest.param(APPLICANT_S1, S1, ALLOW, id="applicant-own-session"),
        pytest.param(APPLICANT_S2, S1, DENY, id="applicant-other-session"),
        pytest.param(APPLICANT_S1, S3, DENY, id="applicant-other-case"),
        pytest.param(APPLICANT_UNSCOPED, S1, ALLOW, id="applicant-without-scope"),
    ],
)
def test_check_session_scope(who: Identity, sess: Session, expected: bool | str) -> None:
    assert outcome(policy.check_session_scope, who, sess) == expected


# -- invitation_targets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "inv", "expected"),
    [
        pytest.param(REV_AMR, INV_DEPT, True, id="reviewer-right-dept-right-level"),
        pytest.param(REV_AMR, INV_DEPT_ANY_LEVEL, True, id="reviewer-dept-invitation-any-level"),
        pytest.param(REV_AMR_NOLEVEL, INV_DEPT, True, id="reviewer-without-level-claim"),
        pytest.param(REV_AMR_DISTRICT, INV_DEPT, False, id="reviewer-right-dept-wrong-level"),
        pytest.param(REV_AMR, INV_DEPT_DISTRICT, False, id="invitation-for-other-level"),
        pytest.param(REV_AMR_DISTRICT, INV_DEPT_DISTRICT, True, id="district-level-matches"),
        pytest.param(REV_TAX, INV_DEPT, False, id="reviewer-wrong-dept"),
        pytest.param(REV_TAX, INV_TAX, True, id="reviewer-own-dept"),
        pytest.param(REV_NAMED, INV_NAMED, True, id="named-reviewer"),
        pytest.param(REV_AMR, INV_NAMED, False, id="named-invitation-other-reviewer"),
        pytest.param(REV_NAMED, INV_DEPT, False, id="named-reviewer-not-in-invited-dept"),
        pytest.param(CLERK, INV_DEPT, False, id="clerk"),
        pytest.param(ADMIN, INV_NAMED, False, id="admin"),
        pytest.param(SUPERVISOR, INV_DEPT, False, id="supervisor"),
        pytest.param(APPLICANT_S1, INV_DEPT, False, id="applicant"),
        # A non-reviewer who happens to carry the named sub or the dept is still no target.
        pytest.param(
            Identity(sub=REV_NAMED.sub, name="x", role="clerk"),
            INV_NAMED,
            False,
            id="clerk-with-named-reviewers-sub",
        ),
        pytest.param(
            Identity(sub="s", name="x", role="supervisor", dept="city-amr", level="city"),
            INV_DEPT,
            False,
            id="supervisor-with-invited-dept",
        ),
    ],
)
def test_invitation_targets(who: Identity, inv: Invitation, expected: bool | str) -> None:
    assert policy.invitation_targets(who, inv) == expected


# -- can_manage_session -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "sess", "expected"),
    [
        pytest.param(CLERK, S1, ALLOW, id="clerk"),
        pytest.param(ADMIN, S1, ALLOW, id="admin"),
        pytest.param(SUPERVISOR, S1, DENY, id="supervisor-reads-only"),
        pytest.param(REV_AMR, S1, DENY, id="reviewer"),
        pytest.param(REV_NAMED, S1, DENY, id="named-reviewer"),
        pytest.param(APPLICANT_S1, S1, DENY, id="applicant-own-session"),
        pytest.param(APPLICANT_S2, S1, DENY, id="applicant-other-session"),
        pytest.param(CLERK_CASE_C1, S1, ALLOW, id="clerk-scoped-to-this-case"),
        pytest.param(CLERK_CASE_C2, S1, HIDE, id="clerk-scoped-to-other-case"),
        pytest.param(ADMIN_CASE_C2, S1, HIDE, id="admin-scoped-to-other-case"),
        pytest.param(CLERK_SESSION_S1, S1, ALLOW, id="clerk-scoped-to-this-session"),
        pytest.param(CLERK_SESSION_S2, S1, HIDE, id="clerk-scoped-to-other-session"),
        pytest.param(CLERK, S1_ENDED, ALLOW, id="clerk-ended-session"),
    ],
)
def test_can_manage_session(who: Identity, sess: Session, expected: bool | str) -> None:
    assert outcome(policy.can_manage_session, who, sess) == expected


# -- can_read_session -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "sess", "invs", "expected"),
    [
        pytest.param(CLERK, S1, [], ALLOW, id="clerk"),
        pytest.param(ADMIN, S1, [], ALLOW, id="admin"),
        pytest.param(SUPERVISOR, S1, [], ALLOW, id="supervisor"),
        pytest.param(SUPERVISOR_CASE_C1, S1, [], ALLOW, id="supervisor-scoped-to-this-case"),
        pytest.param(SUPERVISOR_CASE_C2, S1, [], HIDE, id="supervisor-scoped-to-other-case"),
        pytest.param(CLERK_CASE_C2, S1, [], HIDE, id="clerk-scoped-to-other-case"),
        pytest.param(CLERK_SESSION_S2, S1, [], HIDE, id="clerk-scoped-to-other-session"),
        pytest.param(REV_AMR, S1, [INV_DEPT], ALLOW, id="reviewer-right-dept"),
        pytest.param(REV_AMR, S1, [INV_TAX, INV_DEPT], ALLOW, id="reviewer-among-several"),
        pytest.param(REV_TAX, S1, [INV_DEPT], HIDE, id="reviewer-wrong-dept"),
        pytest.param(REV_AMR_DISTRICT, S1, [INV_DEPT], HIDE, id="reviewer-wrong-level"),
        pytest.param(REV_NAMED, S1, [INV_NAMED], ALLOW, id="reviewer-named"),
        pytest.param(REV_AMR, S1, [INV_NAMED], HIDE, id="reviewer-not-the-named-one"),
        pytest.param(REV_AMR, S1, [], HIDE, id="reviewer-no-invitations"),
        # The record of a past invitation still lets the department read the session.
        pytest.param(REV_AMR, S1, [INV_DECLINED_BY_AMR], ALLOW, id="reviewer-declined"),
        pytest.param(REV_AMR, S1, [INV_CANCELLED], ALLOW, id="reviewer-cancelled"),
        pytest.param(REV_AMR_OTHER_CASE, S1, [INV_DEPT], HIDE, id="reviewer-scoped-other-case"),
        pytest.param(REV_AMR_THIS_CASE, S1, [INV_DEPT], ALLOW, id="reviewer-scoped-this-case"),
        pytest.param(APPLICANT_S1, S1, [INV_DEPT], ALLOW, id="applicant-own-session"),
        pytest.param(APPLICANT_S1, S1_ENDED, [], ALLOW, id="applicant-own-ended-session"),
        pytest.param(APPLICANT_S2, S1, [INV_DEPT], HIDE, id="applicant-other-session"),
        pytest.param(APPLICANT_S1, S3, [], HIDE, id="applicant-other-case"),
        pytest.param(APPLICANT_UNSCOPED, S1, [], HIDE, id="applicant-without-session"),
    ],
)
def test_can_read_session(
    who: Identity, sess: Session, invs: Sequence[Invitation], expected: bool
) -> None:
    assert outcome(policy.can_read_session, who, sess, invs) == expected


def test_can_read_session_accepts_a_one_shot_iterable() -> None:
    assert outcome(policy.can_read_session, REV_AMR, S1, iter([INV_TAX, INV_DEPT])) is ALLOW


# -- can_read_case ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "case_id", "invs", "expected"),
    [
        pytest.param(CLERK, "C1", [], ALLOW, id="clerk"),
        pytest.param(ADMIN, "C1", [], ALLOW, id="admin"),
        pytest.param(SUPERVISOR, "C1", [], ALLOW, id="supervisor"),
        pytest.param(CLERK_CASE_C1, "C1", [], ALLOW, id="clerk-scoped-to-this-case"),
        pytest.param(CLERK_CASE_C2, "C1", [], HIDE, id="clerk-scoped-to-other-case"),
        pytest.param(SUPERVISOR_CASE_C2, "C1", [], HIDE, id="supervisor-scoped-to-other-case"),
        # A token for one session does not open the whole case file.
        pytest.param(CLERK_SESSION_S1, "C1", [], HIDE, id="clerk-scoped-to-one-session"),
        pytest.param(REV_AMR, "C1", [INV_DEPT], ALLOW, id="reviewer-right-dept"),
        pytest.param(REV_TAX, "C1", [INV_DEPT], HIDE, id="reviewer-wrong-dept"),
        pytest.param(REV_AMR_DISTRICT, "C1", [INV_DEPT], HIDE, id="reviewer-wrong-level"),
        pytest.param(REV_NAMED, "C1", [INV_NAMED], ALLOW, id="reviewer-named"),
        pytest.param(REV_AMR, "C1", [INV_NAMED], HIDE, id="reviewer-not-the-named-one"),
        pytest.param(REV_AMR, "C1", [], HIDE, id="reviewer-never-invited"),
        pytest.param(REV_AMR_OTHER_CASE, "C1", [INV_DEPT], HIDE, id="reviewer-scoped-other-case"),
        pytest.param(REV_AMR_THIS_CASE, "C1", [INV_DEPT], ALLOW, id="reviewer-scoped-this-case"),
        pytest.param(REV_AMR_SESSION_S1, "C1", [INV_DEPT], HIDE, id="reviewer-scoped-one-session"),
        pytest.param(APPLICANT_S1, "C1", [INV_DEPT], HIDE, id="applicant-own-case"),
        pytest.param(APPLICANT_S1, "C2", [], HIDE, id="applicant-other-case"),
        pytest.param(APPLICANT_UNSCOPED, "C1", [], HIDE, id="applicant-without-scope"),
    ],
)
def test_can_read_case(
    who: Identity, case_id: str, invs: Sequence[Invitation], expected: bool
) -> None:
    assert outcome(policy.can_read_case, who, case_id, invs) == expected


# -- can_join ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "sess", "invs", "expected"),
    [
        pytest.param(CLERK, S1, [], ALLOW, id="clerk"),
        pytest.param(ADMIN, S1, [], ALLOW, id="admin"),
        pytest.param(SUPERVISOR, S1, [INV_DEPT], DENY, id="supervisor-does-not-take-part"),
        pytest.param(CLERK_CASE_C2, S1, [], HIDE, id="clerk-scoped-to-other-case"),
        pytest.param(CLERK_SESSION_S1, S1, [], ALLOW, id="clerk-scoped-to-this-session"),
        pytest.param(CLERK_SESSION_S2, S1, [], HIDE, id="clerk-scoped-to-other-session"),
        pytest.param(ADMIN_CASE_C2, S1, [], HIDE, id="admin-scoped-to-other-case"),
        pytest.param(APPLICANT_S1, S1, [], ALLOW, id="applicant-own-session"),
        pytest.param(APPLICANT_S2, S1, [], HIDE, id="applicant-other-session"),
        pytest.param(APPLICANT_S1, S3, [], HIDE, id="applicant-other-case"),
        pytest.param(APPLICANT_UNSCOPED, S1, [], HIDE, id="applicant-without-session"),
        pytest.param(REV_AMR, S1, [INV_DEPT], ALLOW, id="reviewer-right-dept-pending"),
        pytest.param(REV_AMR, S1, [INV_DEPT_RINGING], ALLOW, id="reviewer-right-dept-ringing"),
        pytest.param(REV_AMR_NOLEVEL, S1, [INV_DEPT], ALLOW, id="reviewer-without-level-claim"),
        pytest.param(REV_TAX, S1, [INV_DEPT], HIDE, id="reviewer-wrong-dept"),
        pytest.param(REV_AMR_DISTRICT, S1, [INV_DEPT], HIDE, id="reviewer-wrong-level"),
        pytest.param(REV_NAMED, S1, [INV_NAMED], ALLOW, id="reviewer-named"),
        pytest.param(REV_AMR, S1, [INV_NAMED], HIDE, id="reviewer-not-the-named-one"),
        pytest.param(REV_AMR, S1, [], HIDE, id="reviewer-no-invitation"),
        # The one who accepted may come back (reload, second tab); colleagues may not.
        pytest.param(REV_AMR, S1, [INV_ACCEPTED_BY_AMR], ALLOW, id="reviewer-who-accepted"),
        pytest.param(REV_AMR_NOLEVEL, S1, [INV_ACCEPTED_BY_AMR], DENY, id="colleague-after-accept"),
        pytest.param(REV_AMR, S1, [INV_DECLINED_BY_AMR], DENY, id="reviewer-who-declined"),
        pytest.param(REV_AMR, S1, [INV_CANCELLED], DENY, id="reviewer-cancelled-invitation"),
        pytest.param(
            REV_AMR, S1, [INV_CANCELLED, INV_DEPT_RINGING], ALLOW, id="reviewer-reinvited"
        ),
        pytest.param(REV_AMR_OTHER_CASE, S1, [INV_DEPT], HIDE, id="reviewer-scoped-other-case"),
        pytest.param(REV_AMR_THIS_CASE, S1, [INV_DEPT], ALLOW, id="reviewer-scoped-this-case"),
    ],
)
def test_can_join(
    who: Identity, sess: Session, invs: Sequence[Invitation], expected: bool | str
) -> None:
    assert outcome(policy.can_join, who, sess, invs) == expected


# -- can_respond ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "inv", "expected"),
    [
        pytest.param(REV_AMR, INV_DEPT, ALLOW, id="reviewer-right-dept"),
        pytest.param(REV_AMR, INV_DEPT_RINGING, ALLOW, id="reviewer-right-dept-ringing"),
        pytest.param(REV_AMR_NOLEVEL, INV_DEPT, ALLOW, id="reviewer-without-level-claim"),
        pytest.param(REV_TAX, INV_DEPT, HIDE, id="reviewer-wrong-dept"),
        pytest.param(REV_AMR_DISTRICT, INV_DEPT, HIDE, id="reviewer-wrong-level"),
        pytest.param(REV_NAMED, INV_NAMED, ALLOW, id="reviewer-named"),
        pytest.param(REV_AMR, INV_NAMED, HIDE, id="reviewer-not-the-named-one"),
        pytest.param(REV_AMR_OTHER_CASE, INV_DEPT, HIDE, id="reviewer-scoped-other-case"),
        pytest.param(REV_AMR_THIS_CASE, INV_DEPT, ALLOW, id="reviewer-scoped-this-case"),
        pytest.param(REV_AMR, INV_C2, ALLOW, id="reviewer-invitation-of-other-case"),
        pytest.param(REV_AMR_SESSION_S1, INV_DEPT, ALLOW, id="reviewer-scoped-this-session"),
        # A token limited to one session answers for that session only, as everywhere else.
        pytest.param(REV_AMR_SESSION_S1, INV_S2, HIDE, id="reviewer-scoped-other-session"),
        pytest.param(CLERK, INV_DEPT, DENY, id="clerk"),
        pytest.param(ADMIN, INV_DEPT, DENY, id="admin"),
        pytest.param(SUPERVISOR, INV_DEPT, DENY, id="supervisor"),
        pytest.param(APPLICANT_S1, INV_DEPT, DENY, id="applicant-own-session"),
        pytest.param(APPLICANT_S2, INV_DEPT, DENY, id="applicant-other-session"),
    ],
)
def test_can_respond(who: Identity, inv: Invitation, expected: bool | str) -> None:
    assert outcome(policy.can_respond, who, inv) == expected


# -- the role sets the rules are built on -------------------------------------------------


def test_role_sets() -> None:
    assert frozenset({"clerk", "admin"}) == policy.STAFF
    assert frozenset({"clerk", "supervisor", "admin"}) == policy.READERS
    assert "reviewer" not in policy.READERS and "applicant" not in policy.READERS


def test_denials_explain_themselves() -> None:
    with pytest.raises(Forbidden, match="case C2"):
        policy.check_case_scope(CLERK_CASE_C2, "C1")
    with pytest.raises(Forbidden, match="supervisor"):
        policy.can_manage_session(SUPERVISOR, S1)
    with pytest.raises(NotFound, match="no session s1"):
        policy.can_join(APPLICANT_S2, S1, [])
    with pytest.raises(Forbidden, match="does not take part"):
        policy.can_join(SUPERVISOR, S1, [])


# -- what of a case one may read (every view that lists more than one session) -----------

INV_S2_AMR = invitation(session_id="s2", case_id="C1")
INV_S1_TAX = invitation(dept="city-tax")
BY_SESSION = {"s1": [INV_S1_TAX], "s2": [INV_S2_AMR]}


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param(CLERK, ["s1", "s2"], id="clerk-all"),
        pytest.param(SUPERVISOR, ["s1", "s2"], id="supervisor-all"),
        pytest.param(ADMIN, ["s1", "s2"], id="admin-all"),
        pytest.param(CLERK_SESSION_S2, ["s2"], id="clerk-scoped-to-one-session"),
        pytest.param(CLERK_CASE_C2, [], id="clerk-scoped-to-other-case"),
        pytest.param(REV_TAX, ["s1"], id="reviewer-invited-to-s1-only"),
        pytest.param(REV_AMR, ["s2"], id="reviewer-invited-to-s2-only"),
        pytest.param(REV_AMR_SESSION_S1, [], id="reviewer-scoped-to-the-session-not-invited"),
        pytest.param(REV_AMR_DISTRICT, [], id="reviewer-wrong-level"),
        pytest.param(REV_NAMED, [], id="reviewer-never-invited"),
        pytest.param(APPLICANT_S2, ["s2"], id="applicant-own-session"),
        pytest.param(APPLICANT_UNSCOPED, [], id="applicant-without-session"),
    ],
)
def test_readable_sessions(who: Identity, expected: list[str]) -> None:
    got = policy.readable_sessions(who, [S1, S2], BY_SESSION)
    assert [s.session_id for s in got] == expected
    for s in (S1, S2):
        readable = policy.may_read_session(who, s, BY_SESSION[s.session_id])
        assert readable is (s.session_id in expected)


def test_readable_sessions_keeps_the_order_and_tolerates_missing_invitations() -> None:
    assert [s.session_id for s in policy.readable_sessions(CLERK, [S2, S1], {})] == ["s2", "s1"]
    assert policy.readable_sessions(REV_AMR, [S1, S2], {}) == []


@pytest.mark.parametrize(
    ("who", "session_id", "readable", "expected"),
    [
        pytest.param(REV_AMR, "s2", frozenset({"s2"}), ALLOW, id="readable-session"),
        pytest.param(REV_AMR, "s1", frozenset({"s2"}), DENY, id="other-session"),
        pytest.param(REV_AMR, None, frozenset({"s2"}), DENY, id="reviewer-case-event"),
        pytest.param(CLERK, None, frozenset(), ALLOW, id="clerk-case-event"),
        pytest.param(SUPERVISOR, None, frozenset(), ALLOW, id="supervisor-case-event"),
        pytest.param(CLERK_SESSION_S1, None, frozenset({"s1"}), DENY, id="one-session-token"),
        pytest.param(APPLICANT_S1, None, frozenset({"s1"}), DENY, id="applicant-case-event"),
    ],
)
def test_can_read_event(
    who: Identity, session_id: str | None, readable: frozenset[str], expected: bool
) -> None:
    assert policy.can_read_event(who, session_id, readable) is expected


@pytest.mark.parametrize(
    ("who", "inv", "expected"),
    [
        pytest.param(REV_AMR, INV_DEPT, ALLOW, id="right-dept"),
        pytest.param(REV_TAX, INV_DEPT, DENY, id="other-dept"),
        pytest.param(REV_AMR_THIS_CASE, INV_DEPT, ALLOW, id="case-scoped-this-case"),
        pytest.param(REV_AMR_OTHER_CASE, INV_DEPT, DENY, id="case-scoped-other-case"),
        pytest.param(REV_AMR_SESSION_S1, INV_DEPT, ALLOW, id="session-scoped-this-session"),
        pytest.param(REV_AMR_SESSION_S1, INV_S2, DENY, id="session-scoped-other-session"),
        pytest.param(CLERK, INV_DEPT, DENY, id="clerk-has-no-inbox"),
    ],
)
def test_can_see_invitation(who: Identity, inv: Invitation, expected: bool) -> None:
    assert policy.can_see_invitation(who, inv) is expected


@pytest.mark.parametrize(
    ("who", "case_id", "session_id", "expected"),
    [
        pytest.param(CLERK, "C1", "s1", ALLOW, id="unscoped"),
        pytest.param(CLERK_CASE_C1, "C1", None, ALLOW, id="case-scope-case"),
        pytest.param(CLERK_CASE_C2, "C1", "s1", DENY, id="case-scope-other-case"),
        pytest.param(CLERK_SESSION_S1, "C1", "s1", ALLOW, id="session-scope-session"),
        pytest.param(CLERK_SESSION_S1, "C1", "s2", DENY, id="session-scope-other-session"),
        pytest.param(CLERK_SESSION_S1, "C1", None, DENY, id="session-scope-whole-case"),
    ],
)
def test_in_scope(who: Identity, case_id: str, session_id: str | None, expected: bool) -> None:
    assert policy.in_scope(who, case_id, session_id) is expected


def test_unreadable_answers_as_unknown() -> None:
    """The 404 of an unreadable session is the very one of an unknown session."""
    with pytest.raises(NotFound) as hidden:
        policy.can_read_session(REV_TAX, S1, [INV_DEPT])
    assert hidden.value.body() == policy.session_missing("s1").body()
    with pytest.raises(NotFound) as hidden:
        policy.can_read_case(REV_TAX, "C1", [INV_DEPT])
    assert hidden.value.body() == policy.case_missing("C1").body()


# -- every rule by role alone: a row per role x rule ---------------------------------------

ONE_OF_EACH = {
    "clerk": CLERK,
    "reviewer": REV_AMR,
    "applicant": APPLICANT_UNSCOPED,
    "supervisor": SUPERVISOR,
    "admin": ADMIN,
}
Y, N = ALLOW, DENY
# The verdict for each role, in the order of ONE_OF_EACH: clerk, reviewer, applicant,
# supervisor, admin. Upper case: the role sets routes admit; lower case: the rules.
BY_ROLE: dict[str, tuple[bool, bool, bool, bool, bool]] = {
    "EVERYONE": (Y, Y, Y, Y, Y),
    "STAFF": (Y, N, N, N, Y),
    "READERS": (Y, N, N, Y, Y),
    "REVIEWERS": (N, Y, N, N, N),
    "MEMBERS": (Y, Y, N, Y, Y),
    "DIRECTORY_READERS": (Y, Y, N, Y, Y),
    "REPLAYERS": (Y, Y, N, Y, Y),
    "WATCHERS": (N, N, N, Y, Y),
    "AUDITED": (N, N, N, Y, Y),
    "AUDITORS": (N, N, N, N, Y),
    "WEBHOOK_ADMINS": (N, N, N, N, Y),
    "is_staff": (Y, N, N, N, Y),
    "can_start_session": (Y, N, N, N, Y),
    "can_list_sessions": (Y, N, N, Y, Y),
    "has_inbox": (N, Y, N, N, N),
    "can_read_inbox": (N, Y, N, N, N),
    "may_be_invited": (N, Y, N, N, N),
    "watches_supervision": (N, N, N, Y, Y),
    "is_audited": (N, N, N, Y, Y),
    "check_unscoped": (Y, Y, Y, Y, Y),
    "can_take_snapshot": (Y, N, N, N, Y),
}


def verdict(rule: str, who: Identity) -> bool | str:
    """The rule's answer for this person, as ALLOW/DENY (HIDE for a hidden thing)."""
    if rule.isupper():
        roles: frozenset[str] = getattr(policy, rule)
        return who.role in roles
    checks: dict[str, Callable[[], Any]] = {
        "is_staff": lambda: policy.is_staff(who),
        "can_start_session": lambda: outcome(policy.can_start_session, who, "C1"),
        "can_list_sessions": lambda: outcome(policy.can_list_sessions, who),
        "has_inbox": lambda: policy.has_inbox(who),
        "can_read_inbox": lambda: outcome(policy.can_read_inbox, who),
        "may_be_invited": lambda: policy.may_be_invited(who.role),
        "watches_supervision": lambda: policy.watches_supervision(who),
        "is_audited": lambda: policy.is_audited(who),
        "check_unscoped": lambda: outcome(policy.check_unscoped, who, "the audit trail"),
        "can_take_snapshot": lambda: outcome(policy.can_take_snapshot, who, S1),
    }
    result: bool | str = checks[rule]()
    return result


@pytest.mark.parametrize(
    ("rule", "role", "expected"),
    [
        pytest.param(rule, role, expected, id=f"{rule}-{role}")
        for rule, row in BY_ROLE.items()
        for role, expected in zip(ONE_OF_EACH, row, strict=True)
    ],
)
def test_rules_by_role(rule: str, role: str, expected: bool) -> None:
    assert verdict(rule, ONE_OF_EACH[role]) is expected


def test_the_table_covers_every_role() -> None:
    assert tuple(ONE_OF_EACH) == ROLES
    assert {who.role for who in ONE_OF_EACH.values()} == set(ROLES)


@pytest.mark.parametrize(
    ("rule", "who", "expected"),
    [
        pytest.param("can_start_session", CLERK_CASE_C1, ALLOW, id="start-clerk-this-case"),
        pytest.param("can_start_session", CLERK_CASE_C2, DENY, id="start-clerk-other-case"),
        pytest.param("can_start_session", ADMIN_CASE_C2, DENY, id="start-admin-other-case"),
        pytest.param("can_start_session", CLERK_SESSION_S1, ALLOW, id="start-clerk-one-session"),
        pytest.param("check_unscoped", CLERK_CASE_C1, DENY, id="unscoped-case-token"),
        pytest.param("check_unscoped", CLERK_SESSION_S1, DENY, id="unscoped-session-token"),
        pytest.param("check_unscoped", ADMIN_CASE_C2, DENY, id="unscoped-admin-case-token"),
        pytest.param("check_unscoped", APPLICANT_S1, DENY, id="unscoped-applicant-link"),
        pytest.param("can_list_sessions", SUPERVISOR_CASE_C1, ALLOW, id="list-scoped-reader"),
    ],
)
def test_rules_by_scope(rule: str, who: Identity, expected: bool) -> None:
    assert verdict(rule, who) is expected


def test_rules_by_role_explain_themselves() -> None:
    with pytest.raises(Forbidden, match="a supervisor cannot start a joint review"):
        policy.can_start_session(SUPERVISOR, "C1")
    with pytest.raises(Forbidden, match="case C2"):  # the scope answers first
        policy.can_start_session(REV_AMR_OTHER_CASE, "C1")
    with pytest.raises(Forbidden, match="a reviewer cannot list sessions"):
        policy.can_list_sessions(REV_AMR)
    with pytest.raises(Forbidden, match="only reviewers have an invitation inbox"):
        policy.can_read_inbox(CLERK)
    with pytest.raises(Forbidden, match="the webhook log is not readable"):
        policy.check_unscoped(CLERK_CASE_C1, "the webhook log")
    assert policy.APPLICANT in ROLES


INV_UNANSWERED = invitation("unanswered")


@pytest.mark.parametrize(
    ("who", "invs", "expected"),
    [
        pytest.param(REV_AMR, [INV_DEPT], INV_DEPT, id="pending"),
        pytest.param(REV_AMR, [INV_UNANSWERED], INV_UNANSWERED, id="unanswered"),
        pytest.param(REV_AMR, [INV_CANCELLED, INV_DEPT_RINGING], INV_DEPT_RINGING, id="reinvited"),
        pytest.param(REV_AMR, [INV_TAX, INV_DEPT], INV_DEPT, id="among-several"),
        pytest.param(REV_NAMED, [INV_NAMED], INV_NAMED, id="named"),
        pytest.param(REV_AMR, [INV_ACCEPTED_BY_AMR], None, id="accepted-before"),
        pytest.param(REV_AMR, [INV_DECLINED_BY_AMR], None, id="declined"),
        pytest.param(REV_TAX, [INV_DEPT], None, id="other-dept"),
        pytest.param(CLERK, [INV_DEPT], None, id="clerk"),
        pytest.param(ADMIN, [INV_NAMED], None, id="admin"),
        pytest.param(SUPERVISOR, [INV_DEPT], None, id="supervisor"),
        pytest.param(APPLICANT_S1, [INV_DEPT], None, id="applicant"),
    ],
)
def test_accepted_by_joining(
    who: Identity, invs: Sequence[Invitation], expected: Invitation | None
) -> None:
    assert policy.accepted_by_joining(who, invs) is expected


def test_answerable_is_what_the_service_calls_open() -> None:
    assert policy.ANSWERABLE == core.OPEN


# -- no role decision outside policy.py -------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
# Where a role's name may be spelled in a decision: the rules, and the enumerations (the
# Role type and token claims validation, the models, the CLI's choices).
ROLE_LITERALS_ALLOWED = frozenset(
    {"signaling/policy.py", "signaling/auth.py", "signaling/models.py"}
)
_SETS = ("frozenset", "set", "tuple", "list")


def _role_literals(node: ast.AST) -> Iterator[ast.Constant]:
    """The roles' names an expression spells: a name, or a display or set of names."""
    if isinstance(node, ast.Constant) and node.value in ROLES:
        yield node
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for elt in node.elts:
            yield from _role_literals(elt)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _SETS:
        for arg in node.args:
            yield from _role_literals(arg)


def role_decisions(source: str, filename: str) -> list[str]:
    """``file:line`` of each decision spelled with a role's name: a comparison or a
    membership test against one, a set of them, a ``case`` on one."""
    found: dict[tuple[int, int], str] = {}
    for node in ast.walk(ast.parse(source, filename)):
        operands: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Set):
            operands = [node]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            operands = [node] if node.func.id in ("frozenset", "set") else []
        elif isinstance(node, ast.MatchValue):
            operands = [node.value]
        for operand in operands:
            for lit in _role_literals(operand):
                found[(lit.lineno, lit.col_offset)] = f"{filename}:{lit.lineno}: {lit.value!r}"
    return [found[k] for k in sorted(found)]


def test_the_scan_finds_role_decisions() -> None:
    source = """\
if who.role == "clerk": pass
if "admin" != role: pass
if role in ("supervisor", "admin"): pass
WATCH = frozenset({"reviewer"})
match role:
    case "applicant": pass
claims = {"role": policy.APPLICANT, "sub": "admin-1"}
for key in ("dept", "level", "reviewer"): pass
control.set(session_id, "clerk")
if role in policy.STAFF: pass
"""
    assert role_decisions(source, "x.py") == [
        "x.py:1: 'clerk'",
        "x.py:2: 'admin'",
        "x.py:3: 'supervisor'",
        "x.py:3: 'admin'",
        "x.py:4: 'reviewer'",
        "x.py:6: 'applicant'",
    ]


def test_role_rules_live_in_policy() -> None:
    """Outside policy.py (and the enumerations), ``signaling`` names roles only through
    policy's rules and sets: no ``role == "clerk"`` or ``role in (...)`` of its own."""
    found = []
    for path in sorted((ROOT / "signaling").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name not in ROLE_LITERALS_ALLOWED:
            found += role_decisions(path.read_text(encoding="utf-8"), name)
    assert not found, "role decisions outside signaling/policy.py:\n" + "\n".join(found)
