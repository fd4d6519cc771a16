"""The control plane's domain: cases, sessions and invitations (participants are in
``participants.py``, the shared base in ``core.py``)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from . import paging, policy
from .auth import Identity
from .casefile import CaseFileMixin
from .core import OPEN, UNSEALED, _new_id, actor_of
from .errors import Conflict, Unprocessable
from .models import (
    Actor,
    CaseView,
    CreateInvitationBody,
    CreateSessionBody,
    Event,
    Invitation,
    Session,
)
from .participants import BROKEN_OFF, IDLE, ParticipantsMixin


class ReviewService(ParticipantsMixin, CaseFileMixin):
    async def create_session(self, who: Identity, case_id: str, body: CreateSessionBody) -> Session:
        policy.can_start_session(who, case_id)  # 403 whether the case exists or not
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
        await self.store.index_add(IDLE, session.session_id, now)  # broken off if nobody joins
        await self.record(
            case_id,
            "session.created",
            session_id=session.session_id,
            actor=actor,
            applicant_name=body.applicant_name,
            matter=body.matter,
            window=window,
            created_at=now,  # the session's own time (the record's, to the µs)
        )
        return session

    async def sessions_of_case(self, case_id: str) -> list[Session]:
        ids = await self.store.index_range(f"case:{case_id}:sessions")
        docs = await self.store.get_many([f"session:{i}" for i in ids])
        live = [Session.model_validate(d) for d in docs if d is not None]
        if self.archived is None:
            return live
        # Sessions sealed and gone from the store (signaling/evict.py) are the record's.
        known = {s.session_id for s in live}
        gone = [
            Session.model_validate(d)
            for d in await self.archived.case_session_docs(case_id)
            if d["session_id"] not in known and d["status"] == "ended"
        ]
        return sorted(gone + live, key=lambda s: (s.created_at, s.session_id))

    async def list_sessions(
        self,
        who: Identity,
        since: float | None,
        until: float | None,
        limit: int,
        cursor: str | None = None,
        dept: str | None = None,
        window: str | None = None,
        case: str | None = None,
    ) -> tuple[list[Session], str | None]:
        """Newest first; a page of ``limit`` and the cursor of the next one (or None);
        only of a window, a case, or of sessions a department was invited to, if given."""
        policy.can_list_sessions(who)
        at = paging.decode(paging.SESSIONS, cursor, {"t": float, "i": str})
        if case is not None and who.case is not None and case != who.case:
            return [], None  # a case beyond the token's: none of its sessions
        of_case = case or who.case
        if who.session is not None:  # a token limited to one session lists that one
            doc = await self.store.get(f"session:{who.session}")
            one = [Session.model_validate(doc)] if doc is not None else []
            return [
                s
                for s in one
                if policy.in_scope(who, s.case_id, s.session_id)
                and (since is None or s.created_at >= since)
                and (until is None or s.created_at <= until)
                and (at is None or (s.created_at, s.session_id) < (at["t"], at["i"]))
                and (of_case is None or s.case_id == of_case)
                and await self._matches(s, dept, window)
            ], None
        # A case (of the token's scope, or asked for) has its own index: the limit counts
        # its sessions.
        index = "sessions" if of_case is None else f"case:{of_case}:sessions"
        top = until if at is None else (at["t"] if until is None else min(until, at["t"]))
        out: list[Session] = []
        want = limit + 1
        while True:
            ids = await self.store.index_range(
                index, min_score=since, max_score=top, limit=want, reverse=True
            )
            docs = await self.store.get_many([f"session:{i}" for i in ids])
            out = [
                s
                for s in (Session.model_validate(d) for d in docs if d is not None)
                if (at is None or (s.created_at, s.session_id) < (at["t"], at["i"]))
                and policy.in_scope(who, s.case_id, s.session_id)
                and await self._matches(s, dept, window)
            ]
            # Sessions at the cursor's own time (or out of scope) took places: read more.
            if len(ids) < want or len(out) > limit:
                break
            want *= 2
        page = out[:limit]
        more = len(out) > limit
        last = page[-1] if page else None
        next_cursor = (
            paging.encode(paging.SESSIONS, t=last.created_at, i=last.session_id)
            if more and last is not None
            else None
        )
        return page, next_cursor

    async def _matches(self, s: Session, dept: str | None, window: str | None) -> bool:
        if window is not None and s.window != window:
            return False
        return dept is None or any(i.dept == dept for i in await self.invitations(s.session_id))

    # -- what of a case the caller may read -------------------------------------------
    async def readable_case(
        self, who: Identity, case_id: str
    ) -> tuple[list[Session], dict[str, list[Invitation]]]:
        """The case's sessions the caller may read (oldest first) and every session's
        invitations. A case the caller may not read answers as an unknown one."""
        if await self.store.get(f"case:{case_id}") is None:
            raise policy.case_missing(case_id)
        sessions = await self.sessions_of_case(case_id)
        by_session = {s.session_id: await self.invitations(s.session_id) for s in sessions}
        policy.can_read_case(who, case_id, [i for v in by_session.values() for i in v])
        return policy.readable_sessions(who, sessions, by_session), by_session

    async def case_sessions(
        self, who: Identity, case_id: str, limit: int, cursor: str | None = None
    ) -> tuple[list[Session], list[Invitation], str | None]:
        """A page of the case's readable sessions (oldest first) with their invitations."""
        readable, by_session = await self.readable_case(who, case_id)
        page, next_cursor = paging.sessions_page(readable, cursor, limit)
        invitations = [i for s in page for i in by_session[s.session_id]]
        return page, invitations, next_cursor

    async def case_events(
        self,
        who: Identity,
        case_id: str,
        limit: int,
        cursor: str | None = None,
        session_id: str | None = None,
    ) -> tuple[list[Event], str | None]:
        """A page of the case's timeline, in order, only of sessions the caller may read
        (and of ``session_id`` only, if given)."""
        at = paging.decode(paging.EVENTS, cursor, {"q": int})
        readable, _ = await self.readable_case(who, case_id)
        ids = frozenset(s.session_id for s in readable)
        if session_id is not None:
            ids = ids & {session_id}

        def keep(sid: str | None) -> bool:
            if session_id is not None and sid != session_id:
                return False
            return policy.can_read_event(who, sid, ids)

        return await self.events_page(case_id, 0 if at is None else at["q"], limit, keep)

    async def events_page(
        self, case_id: str, after_seq: int, limit: int, keep: Callable[[str | None], bool]
    ) -> tuple[list[Event], str | None]:
        """The next ``limit`` events after ``after_seq`` that ``keep`` (by session id)
        accepts, reading at most ``SCAN_PAGES`` pages' worth of the log; the cursor of
        where it stopped, None at the end."""
        out: list[Event] = []
        pos = after_seq
        budget = paging.SCAN_PAGES * limit
        while len(out) < limit and budget > 0:
            chunk = min(limit, budget)
            docs = await self.read_events(case_id, pos, chunk)
            read = 0
            for d in docs:
                pos = int(d.get("seq") or pos + 1)
                read += 1
                if keep(d.get("session_id")):
                    out.append(Event.model_validate(d))
                    if len(out) == limit:
                        break
            budget -= read
            if len(docs) < chunk and read == len(docs):
                return out, None  # the end of the log
        # Stopped at the page's size or its reading budget: more may follow.
        if not await self.read_events(case_id, pos, 1):
            return out, None
        return out, paging.encode(paging.EVENTS, q=pos)

    async def case_view(self, who: Identity, case_id: str, limit: int = 100) -> CaseView:
        """The first page of the case: its readable sessions with their invitations,
        opinions and stills, and the first page of their events. Nothing of a session
        the caller may not read (another department's) appears."""
        sessions, invitations, sessions_next = await self.case_sessions(who, case_id, limit)
        events, events_next = await self.case_events(who, case_id, limit)
        return CaseView(
            case_id=case_id,
            sessions=sessions,
            invitations=invitations,
            events=events,
            events_next_cursor=events_next,
            sessions_next_cursor=sessions_next,
            **await self.case_extras([s.session_id for s in sessions]),
        )

    async def end_session(self, who: Identity, session_id: str) -> Session:
        session = await self.session(session_id)
        policy.can_manage_session(who, session)
        session, _ = await self._end(session_id, actor_of(who))
        return session

    async def _end(self, session_id: str, actor: Actor | None, **data: Any) -> tuple[Session, bool]:
        """End the session (``actor`` None: the system); whether it was ended now."""
        session = await self.session(session_id)
        now = self.clock()
        if session.status == "active":
            # Before it ends: if this node dies right after, a sweeper still seals it
            # (RecordingControl.sweep_unsealed); sealing takes it out.
            await self.store.index_add(UNSEALED, session_id, now)
        by = actor.model_dump() if actor else None

        def end(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc["status"] == "ended":
                return None
            return dict(doc, status="ended", ended_at=now, ended_by=by)

        doc, changed = await self.store.update(f"session:{session_id}", end)
        if doc is None:  # sealed and gone from the store (signaling/evict.py): ended
            return session, False
        session = Session.model_validate(doc)
        if not changed:
            return session, False
        for inv in await self.invitations(session_id):
            if inv.status in OPEN:
                await self._set_invitation(inv, "cancelled", actor, None, OPEN)
        for p in await self.participants(session_id):
            if p.state != "left":
                await self._mark_left(p, "session_ended")
        for hook in self.end_hooks:
            await hook(session_id)
        await self.record(
            session.case_id,
            "session.ended",
            session_id=session_id,
            actor=actor,
            ended_at=now,
            **data,
        )
        await self._announce(f"session:{session_id}", "session.ended", session=session.model_dump())
        return session, True

    async def sweep_idle(self) -> int:
        """End, as the system, each session broken off ``session_idle_end_s`` ago: every
        participant slot ``left`` (everyone went without ending it, or lost the connection
        past the grace period), or nobody ever joined. ``IDLE`` is filled at creation and
        as the last person leaves. Filed as ``session.ended`` with ``reason:
        "broken_off"`` and sealed like any other end; the compare-and-set in ``_end``
        makes one node end it, whichever nodes sweep."""
        if self.session_idle_end_s <= 0:
            return 0
        ended = 0
        overdue = self.clock() - self.session_idle_end_s
        for sid in await self.store.index_range(IDLE, max_score=overdue, limit=200):
            doc = await self.store.get(f"session:{sid}")
            if doc is not None and doc.get("status") == "active":
                slots = await self.participants(sid)
                # Someone is in (or came back) meanwhile: their leaving files it again.
                if all(p.state == "left" for p in slots):
                    _, changed = await self._end(sid, None, reason=BROKEN_OFF)
                    ended += changed
            await self.store.index_remove(IDLE, sid)
        return ended

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
            if user is not None and not policy.may_be_invited(user.role):
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
            reviewer_name=inv.reviewer_name,
            note=inv.note,
            created_at=inv.created_at,
        )
        message = {"invitation": inv.model_dump(), "session": session.model_dump()}
        await self._announce(inbox, "invitation", **message)
        await self._announce(
            f"session:{session_id}", "invitation.updated", invitation=inv.model_dump()
        )
        return inv

    async def inbox(self, who: Identity) -> list[Invitation]:
        """The reviewer's invitations still waiting for an answer."""
        policy.can_read_inbox(who)
        mine, dept = await self.store.index_ranges(
            [f"inbox:user:{who.sub}", f"inbox:dept:{who.dept}"]
        )
        ids = mine + dept
        docs = await self.store.get_many([f"invitation:{i}" for i in ids])
        open_ = [Invitation.model_validate(d) for d in docs if d is not None]
        return sorted(
            (i for i in open_ if i.status in OPEN and policy.can_see_invitation(who, i)),
            key=lambda i: i.created_at,
        )

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

    async def applicant_token_claims(
        self, who: Identity, session_id: str, name: str | None
    ) -> dict[str, Any]:
        session = await self.session(session_id)
        policy.can_manage_session(who, session)
        await self.require_active(session_id)
        claims = {
            "sub": f"applicant-{secrets.token_hex(6)}",
            "role": policy.APPLICANT,
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
