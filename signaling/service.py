"""The control plane's domain: cases, sessions, invitations, participants, events.

Everything goes through the ``Store`` interface, so one node or many behave the same.
Every state change is appended to the case's event log and published on the bus to the
topics of the people concerned (``session:<id>``, ``user:<sub>``, ``dept:<id>``).
Time comes from ``clock`` so tests can drive it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

from . import policy
from .auth import Identity
from .directory import Directory
from .errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from .models import (
    Actor,
    CaseView,
    CreateInvitationBody,
    CreateSessionBody,
    Event,
    Invitation,
    Participant,
    Session,
)
from .state import Store

OPEN = ("pending", "ringing", "unanswered")


def actor_of(who: Identity) -> Actor:
    return Actor(sub=who.sub, name=who.name, role=who.role, dept=who.dept, level=who.level)


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ReviewService:
    def __init__(
        self,
        store: Store,
        directory: Directory,
        *,
        base_url: str,
        resume_grace_s: float = 30.0,
        ring_timeout_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ring_timeout_s = ring_timeout_s
        self.store = store
        self.directory = directory
        self.base_url = base_url
        self.resume_grace_s = resume_grace_s
        self.clock = clock

    # -- events -----------------------------------------------------------------------
    async def record(
        self,
        case_id: str,
        type_: str,
        *,
        session_id: str | None = None,
        actor: Actor | None = None,
        **data: Any,
    ) -> Event:
        doc: dict[str, Any] = {
            "ts": self.clock(),
            "type": type_,
            "case_id": case_id,
            "session_id": session_id,
            "actor": actor.model_dump() if actor else None,
            "data": data,
        }
        seq = await self.store.append(f"case:{case_id}:events", doc)
        return Event.model_validate(dict(doc, seq=seq))

    async def events(self, case_id: str) -> list[Event]:
        docs = await self.store.read_log(f"case:{case_id}:events")
        return [Event.model_validate(d) for d in docs]

    async def _announce(self, topic: str, type_: str, **fields: Any) -> None:
        await self.store.publish(topic, {"type": type_, "v": 1, **fields})

    # -- sessions ---------------------------------------------------------------------
    def join_url(self, session_id: str) -> str:
        return f"{self.base_url}/session/{session_id}"

    async def create_session(self, who: Identity, case_id: str, body: CreateSessionBody) -> Session:
        policy.check_case_scope(who, case_id)
        if who.role not in policy.STAFF:
            raise Forbidden("forbidden", f"a {who.role} cannot start a joint review")
        now = self.clock()
        actor = actor_of(who)
        await self.store.create(f"case:{case_id}", {"case_id": case_id, "created_at": now})
        window = body.window
        if window is None:
            user = self.directory.user(who.sub)
            window = user.window if user else None
        session = Session(
            session_id=_new_id("s_"),
            case_id=case_id,
            status="active",
            created_at=now,
            created_by=actor,
            applicant_name=body.applicant_name,
            matter=body.matter,
            window=window,
        )
        await self.store.create(f"session:{session.session_id}", session.model_dump())
        await self.store.index_add(f"case:{case_id}:sessions", session.session_id, now)
        await self.store.index_add("sessions", session.session_id, now)
        await self.record(
            case_id,
            "session.created",
            session_id=session.session_id,
            actor=actor,
            applicant_name=body.applicant_name,
            matter=body.matter,
            window=window,
        )
        return session

    async def session(self, session_id: str) -> Session:
        doc = await self.store.get(f"session:{session_id}")
        if doc is None:
            raise NotFound("session_not_found", f"no session {session_id}")
        return Session.model_validate(doc)

    async def sessions_of_case(self, case_id: str) -> list[Session]:
        ids = await self.store.index_range(f"case:{case_id}:sessions")
        docs = await self.store.get_many([f"session:{i}" for i in ids])
        return [Session.model_validate(d) for d in docs if d is not None]

    async def list_sessions(
        self, who: Identity, since: float | None, until: float | None, limit: int
    ) -> list[Session]:
        if who.role not in policy.READERS:
            raise Forbidden("forbidden", f"a {who.role} cannot list sessions")
        # A case-scoped token reads its case's own index, so the limit counts its sessions.
        index = "sessions" if who.case is None else f"case:{who.case}:sessions"
        ids = await self.store.index_range(
            index, min_score=since, max_score=until, limit=limit, reverse=True
        )
        docs = await self.store.get_many([f"session:{i}" for i in ids])
        return [Session.model_validate(d) for d in docs if d is not None]

    async def case_view(self, who: Identity, case_id: str) -> CaseView:
        if await self.store.get(f"case:{case_id}") is None:
            policy.check_case_scope(who, case_id)
            raise NotFound("case_not_found", f"no joint review was ever held for case {case_id}")
        sessions = await self.sessions_of_case(case_id)
        invitations: list[Invitation] = []
        for s in sessions:
            invitations += await self.invitations(s.session_id)
        policy.can_read_case(who, case_id, invitations)
        return CaseView(
            case_id=case_id,
            sessions=sessions,
            invitations=invitations,
            events=await self.events(case_id),
        )

    async def end_session(self, who: Identity, session_id: str) -> Session:
        session = await self.session(session_id)
        policy.can_manage_session(who, session)
        actor = actor_of(who)
        now = self.clock()

        def end(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc["status"] == "ended":
                return None
            return dict(doc, status="ended", ended_at=now, ended_by=actor.model_dump())

        doc, changed = await self.store.update(f"session:{session_id}", end)
        session = Session.model_validate(doc)
        if not changed:
            return session
        for inv in await self.invitations(session_id):
            if inv.status in OPEN:
                await self._set_invitation(inv, "cancelled", actor, None, OPEN)
        for p in await self.participants(session_id):
            if p.state != "left":
                await self._mark_left(p, "session_ended")
        await self.record(session.case_id, "session.ended", session_id=session_id, actor=actor)
        await self._announce(f"session:{session_id}", "session.ended", session=session.model_dump())
        return session

    async def require_active(self, session_id: str) -> Session:
        session = await self.session(session_id)
        if session.status != "active":
            raise Conflict("session_ended", f"session {session_id} has ended")
        return session

    # -- invitations ------------------------------------------------------------------
    async def invitation(self, invitation_id: str) -> Invitation:
        doc = await self.store.get(f"invitation:{invitation_id}")
        if doc is None:
            raise NotFound("invitation_not_found", f"no invitation {invitation_id}")
        return Invitation.model_validate(doc)

    async def invitations(self, session_id: str) -> list[Invitation]:
        ids = await self.store.index_range(f"session:{session_id}:invitations")
        docs = await self.store.get_many([f"invitation:{i}" for i in ids])
        return [Invitation.model_validate(d) for d in docs if d is not None]

    async def invite(
        self, who: Identity, session_id: str, body: CreateInvitationBody
    ) -> Invitation:
        session = await self.session(session_id)
        policy.can_manage_session(who, session)
        session = await self.require_active(session_id)
        reviewer_name = None
        level = body.level
        if body.dept is not None:
            dept = self.directory.department(body.dept)
            if dept is None:
                raise Unprocessable("unknown_department", f"no department {body.dept!r}")
            level = level or dept.level
        else:
            assert body.reviewer is not None
            user = self.directory.user(body.reviewer)
            if user is not None and user.role != "reviewer":
                raise Unprocessable("not_a_reviewer", f"{body.reviewer} is not a reviewer")
            reviewer_name = user.name if user else None
        actor = actor_of(who)
        inv = Invitation(
            invitation_id=_new_id("i_"),
            session_id=session_id,
            case_id=session.case_id,
            dept=body.dept,
            level=level,
            reviewer=body.reviewer,
            reviewer_name=reviewer_name,
            status="pending",
            created_at=self.clock(),
            created_by=actor,
            note=body.note,
            join_url=self.join_url(session_id),
        )
        await self.store.create(f"invitation:{inv.invitation_id}", inv.model_dump())
        await self.store.index_add(
            f"session:{session_id}:invitations", inv.invitation_id, inv.created_at
        )
        inbox = f"user:{inv.reviewer}" if inv.reviewer else f"dept:{inv.dept}"
        await self.store.index_add(f"inbox:{inbox}", inv.invitation_id, inv.created_at)
        await self.store.index_add("ringing", inv.invitation_id, inv.created_at)
        await self.record(
            session.case_id,
            "invitation.created",
            session_id=session_id,
            actor=actor,
            invitation_id=inv.invitation_id,
            dept=inv.dept,
            level=inv.level,
            reviewer=inv.reviewer,
        )
        message = {"invitation": inv.model_dump(), "session": session.model_dump()}
        await self._announce(inbox, "invitation", **message)
        await self._announce(
            f"session:{session_id}", "invitation.updated", invitation=inv.model_dump()
        )
        return inv

    async def inbox(self, who: Identity) -> list[Invitation]:
        """The reviewer's invitations still waiting for an answer."""
        if who.role != "reviewer":
            raise Forbidden("forbidden", "only reviewers have an invitation inbox")
        ids = await self.store.index_range(f"inbox:user:{who.sub}")
        ids += await self.store.index_range(f"inbox:dept:{who.dept}")
        docs = await self.store.get_many([f"invitation:{i}" for i in ids])
        open_ = [Invitation.model_validate(d) for d in docs if d is not None]
        return sorted(
            (
                i
                for i in open_
                if i.status in OPEN
                and policy.invitation_targets(who, i)
                and (who.case is None or who.case == i.case_id)
            ),
            key=lambda i: i.created_at,
        )

    async def _set_invitation(
        self,
        inv: Invitation,
        status: str,
        actor: Actor | None,
        reason: str | None,
        allowed_from: tuple[str, ...],
    ) -> tuple[Invitation, bool]:
        now = self.clock()

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc["status"] not in allowed_from:
                return None
            doc["status"] = status
            if status == "ringing":
                doc["rang_at"] = now
            elif status == "unanswered":
                doc["unanswered_at"] = now
            else:
                doc["responded_at"] = now
                doc["responded_by"] = actor.model_dump() if actor else None
                doc["reason"] = reason
            return doc

        doc, changed = await self.store.update(f"invitation:{inv.invitation_id}", change)
        new = Invitation.model_validate(doc)
        if changed:
            await self.record(
                new.case_id,
                f"invitation.{'rang' if status == 'ringing' else status}",
                session_id=new.session_id,
                actor=actor,
                invitation_id=new.invitation_id,
                reason=reason,
            )
            payload = new.model_dump()
            await self._announce(
                f"session:{new.session_id}", "invitation.updated", invitation=payload
            )
            inbox = f"user:{new.reviewer}" if new.reviewer else f"dept:{new.dept}"
            if status != "ringing":
                await self._announce(inbox, "invitation.updated", invitation=payload)
            if status not in OPEN:
                # Answered or cancelled: no reviewer's inbox needs to read it again.
                await self.store.index_remove(f"inbox:{inbox}", new.invitation_id)
            presence = {
                "ringing": "ringing",
                "declined": "declined",
                "accepted": "accepted",
                "unanswered": "unanswered",
            }
            if status in presence:
                await self._announce(
                    f"session:{new.session_id}",
                    "presence",
                    session_id=new.session_id,
                    state=presence[status],
                    invitation_id=new.invitation_id,
                    who=actor.model_dump() if actor else {"dept": new.dept, "sub": new.reviewer},
                )
        return new, changed

    async def sweep_unanswered(self) -> int:
        overdue = self.clock() - self.ring_timeout_s
        count = 0
        for iid in await self.store.index_range("ringing", max_score=overdue, limit=200):
            count += await self.mark_unanswered(iid)
            await self.store.index_remove("ringing", iid)
        return count

    async def mark_unanswered(self, invitation_id: str) -> bool:
        """Nobody answered within the ring timeout: the clerk can re-invite or escalate.
        The invitation stays open: a late answer is still welcome."""
        inv = await self.invitation(invitation_id)
        _, changed = await self._set_invitation(
            inv, "unanswered", None, None, ("pending", "ringing")
        )
        return changed

    async def mark_rang(self, invitation_id: str, who: Identity) -> None:
        """An invitation reached a reviewer's screen: the clerk sees it ringing."""
        inv = await self.invitation(invitation_id)
        if inv.status == "pending" and policy.invitation_targets(who, inv):
            await self._set_invitation(inv, "ringing", actor_of(who), None, ("pending",))

    async def respond(
        self, who: Identity, invitation_id: str, accept: bool, reason: str | None = None
    ) -> Invitation:
        inv = await self.invitation(invitation_id)
        policy.can_respond(who, inv)
        if accept:
            await self.require_active(inv.session_id)
        status = "accepted" if accept else "declined"
        new, changed = await self._set_invitation(inv, status, actor_of(who), reason, OPEN)
        if not changed:
            if new.status == status and new.responded_by and new.responded_by.sub == who.sub:
                return new  # the same answer twice (a double click) is not an error
            raise Conflict("invitation_closed", f"this invitation is already {new.status}")
        return new

    # -- participants -----------------------------------------------------------------
    async def participants(self, session_id: str) -> list[Participant]:
        ids = await self.store.index_range(f"session:{session_id}:participants")
        docs = await self.store.get_many([f"participant:{i}" for i in ids])
        return [Participant.model_validate(d) for d in docs if d is not None]

    async def participant(self, participant_id: str) -> Participant:
        doc = await self.store.get(f"participant:{participant_id}")
        if doc is None:
            raise NotFound("participant_not_found", f"no participant {participant_id}")
        return Participant.model_validate(doc)

    async def join(self, who: Identity, session_id: str) -> tuple[Participant, str]:
        """Enter the session; returns the participant slot and a fresh resume token.

        Someone already in the session (another tab, a reload before the old socket was
        noticed dead) takes over their own slot: one person, one participant.
        """
        session = await self.session(session_id)
        invitations = await self.invitations(session_id)
        policy.can_join(who, session, invitations)
        await self.require_active(session_id)
        if who.role == "reviewer":
            for inv in invitations:
                if inv.status in OPEN and policy.invitation_targets(who, inv):
                    await self._set_invitation(inv, "accepted", actor_of(who), None, OPEN)
                    break
        existing = next(
            (
                p
                for p in await self.participants(session_id)
                if p.identity.sub == who.sub and p.state != "left"
            ),
            None,
        )
        if existing is not None:
            return await self._reconnect(existing, "rejoined")
        secret = secrets.token_urlsafe(24)
        p = Participant(
            participant_id=_new_id("p_"),
            session_id=session_id,
            identity=actor_of(who),
            state="joined",
            joined_at=self.clock(),
            epoch=1,
        )
        doc = p.model_dump()
        doc["resume_hash"] = _hash(secret)
        await self.store.create(f"participant:{p.participant_id}", doc)
        await self.store.index_add(
            f"session:{session_id}:participants", p.participant_id, p.joined_at
        )
        await self.record(
            session.case_id,
            "participant.joined",
            session_id=session_id,
            actor=p.identity,
            participant_id=p.participant_id,
        )
        await self._presence(p, "joined")
        return p, f"{p.participant_id}.{secret}"

    async def resume(self, who: Identity, resume_token: str) -> tuple[Participant, str]:
        pid, _, secret = resume_token.partition(".")
        doc = await self.store.get(f"participant:{pid}") if pid and secret else None
        if doc is None or not hmac.compare_digest(doc.get("resume_hash", ""), _hash(secret)):
            raise BadRequest("invalid_resume_token", "this resume token is not known")
        p = Participant.model_validate(doc)
        if p.identity.sub != who.sub:
            raise Forbidden("forbidden", "this resume token belongs to someone else")
        if p.state == "left":
            raise Conflict("resume_expired", "the grace period is over: join the session again")
        await self.require_active(p.session_id)
        return await self._reconnect(p, "resumed")

    async def _reconnect(self, p: Participant, how: str) -> tuple[Participant, str]:
        secret = secrets.token_urlsafe(24)

        def bump(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc["state"] == "left":
                return None
            return dict(doc, state="joined", epoch=doc["epoch"] + 1, resume_hash=_hash(secret))

        doc, changed = await self.store.update(f"participant:{p.participant_id}", bump)
        if not changed:
            raise Conflict("resume_expired", "the grace period is over: join the session again")
        new = Participant.model_validate(doc)
        if p.state == "disconnected":
            await self.store.index_remove("disconnected", p.participant_id)
        # The previous socket of this slot, on whichever node, steps aside.
        await self._announce(f"participant:{new.participant_id}", "superseded", epoch=new.epoch)
        session = await self.session(new.session_id)
        await self.record(
            session.case_id,
            f"participant.{how}",
            session_id=new.session_id,
            actor=new.identity,
            participant_id=new.participant_id,
        )
        await self._presence(new, "joined" if p.state == "joined" else "reconnected")
        return new, f"{new.participant_id}.{secret}"

    async def disconnected(self, participant_id: str, epoch: int) -> bool:
        """The socket of this epoch dropped: hold the slot for the grace period."""
        now = self.clock()

        def drop(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc["epoch"] != epoch or doc["state"] != "joined":
                return None
            return dict(doc, state="disconnected", disconnected_at=now)

        doc, changed = await self.store.update(f"participant:{participant_id}", drop)
        if changed and doc is not None:
            p = Participant.model_validate(doc)
            # Any node's sweeper ends the slot if this node dies before its grace timer.
            await self.store.index_add("disconnected", participant_id, now)
            session = await self.session(p.session_id)
            await self.record(
                session.case_id,
                "participant.disconnected",
                session_id=p.session_id,
                actor=p.identity,
                participant_id=participant_id,
            )
            await self._presence(p, "reconnecting")
        return changed

    async def sweep_disconnected(self) -> int:
        """End every slot whose grace period is over (a timer's node may have died)."""
        ended = 0
        overdue = self.clock() - self.resume_grace_s
        for pid in await self.store.index_range("disconnected", max_score=overdue, limit=200):
            doc = await self.store.get(f"participant:{pid}")
            if doc is not None and doc["state"] == "disconnected":
                ended += await self.grace_expired(pid, doc["epoch"])
            else:
                await self.store.index_remove("disconnected", pid)
        return ended

    async def grace_expired(self, participant_id: str, epoch: int) -> bool:
        p = await self.participant(participant_id)
        if p.epoch != epoch or p.state != "disconnected":
            return False  # resumed meanwhile (maybe on another node)
        return await self._mark_left(p, "connection_lost")

    async def leave(self, participant_id: str, epoch: int) -> bool:
        p = await self.participant(participant_id)
        if p.epoch != epoch:
            return False
        return await self._mark_left(p, "left")

    async def _mark_left(self, p: Participant, reason: str) -> bool:
        now = self.clock()

        def go(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc["state"] == "left" or doc["epoch"] != p.epoch:
                return None
            return dict(doc, state="left", left_at=now)

        doc, changed = await self.store.update(f"participant:{p.participant_id}", go)
        if p.state == "disconnected" or changed:
            await self.store.index_remove("disconnected", p.participant_id)
        if changed and doc is not None:
            new = Participant.model_validate(doc)
            session = await self.session(p.session_id)
            await self.record(
                session.case_id,
                "participant.left",
                session_id=p.session_id,
                actor=p.identity,
                participant_id=p.participant_id,
                reason=reason,
            )
            await self._presence(new, "left", reason=reason)
        return changed

    async def _presence(self, p: Participant, state: str, **extra: Any) -> None:
        await self._announce(
            f"session:{p.session_id}",
            "presence",
            session_id=p.session_id,
            state=state,
            participant=p.model_dump(),
            **extra,
        )

    # -- chat -------------------------------------------------------------------------
    async def chat(self, p: Participant, text: str) -> Event:
        session = await self.require_active(p.session_id)
        event = await self.record(
            session.case_id,
            "chat.message",
            session_id=p.session_id,
            actor=p.identity,
            participant_id=p.participant_id,
            text=text,
        )
        await self._announce(
            f"session:{p.session_id}",
            "chat",
            session_id=p.session_id,
            participant_id=p.participant_id,
            sender=p.identity.model_dump(),
            text=text,
            ts=event.ts,
            seq=event.seq,
        )
        return event

    async def applicant_token_claims(
        self, who: Identity, session_id: str, name: str | None
    ) -> dict[str, Any]:
        session = await self.session(session_id)
        policy.can_manage_session(who, session)
        await self.require_active(session_id)
        claims = {
            "sub": f"applicant-{secrets.token_hex(6)}",
            "role": "applicant",
            "name": name or session.applicant_name or "申请人",
            "case": session.case_id,
            "session": session_id,
        }
        await self.record(
            session.case_id,
            "applicant_link.created",
            session_id=session_id,
            actor=actor_of(who),
            applicant=claims["sub"],
        )
        return claims
