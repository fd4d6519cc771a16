"""Start a joint review and invite its departments in one call (issue #16 item 3).

``POST /api/cases/{case}/sessions`` with ``invite: [...]``: the approval system's one
call, and the counter's Start. Every target is checked against the directory before
anything is created, so a bad list starts no session; then the session is created and
each invitation made exactly as ``POST /api/sessions/{sid}/invitations`` makes it (the
same events, inbox announcements and webhooks).
"""

from __future__ import annotations

from typing import Any

from . import policy
from .auth import Identity
from .directory import Directory
from .errors import Unprocessable
from .models import CreateInvitationBody, CreateSessionBody, Invitation, Session


def check_targets(directory: Directory, targets: list[CreateInvitationBody]) -> None:
    """422 naming every unknown department (and every named person who is not a
    reviewer), so the caller fixes the whole list at once."""
    unknown = [
        t.dept for t in targets if t.dept is not None and directory.department(t.dept) is None
    ]
    if unknown:
        raise Unprocessable(
            "unknown_department",
            "no department " + ", ".join(repr(d) for d in unknown),
            [{"loc": ["invite"], "dept": d} for d in unknown],
        )
    for t in targets:
        if t.reviewer is None:
            continue
        user = directory.user(t.reviewer)
        if user is not None and not policy.may_be_invited(user.role):
            raise Unprocessable("not_a_reviewer", f"{t.reviewer} is not a reviewer")


async def start_session(
    service: Any, who: Identity, case_id: str, body: CreateSessionBody
) -> tuple[Session, list[Invitation]]:
    """The new session and its invitations, in the order of ``body.invite``."""
    targets = body.targets()
    if not targets:
        return await service.create_session(who, case_id, body), []
    policy.can_start_inviting(who, case_id)
    check_targets(service.directory, targets)
    session = await service.create_session(who, case_id, body)
    invitations = [await service.invite(who, session.session_id, t) for t in targets]
    return session, invitations
