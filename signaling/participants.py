"""Participants of a session: joining, dropping, resuming within a grace period, leaving,
and chat. A slot's ``epoch`` grows with each (re)connection, so a timer or a socket of an
older epoch acts on nothing."""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any

from . import policy
from .auth import Identity
from .core import OPEN, ServiceCore, _hash, _new_id, actor_of
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .limits import RateLimited, window_retry, window_take
from .models import Event, Participant
from .state import StoreUnavailable

log = logging.getLogger(__name__)

# Active sessions whose last person left (or that nobody joined yet), by when:
# ``sweep_idle`` ends them after ``session_idle_end_s`` (setting abandoned_session_s).
IDLE = "sessions:idle"
# The ``reason`` of a session the system ended because it was broken off (the stats'
# ``session_broken_off`` exception keys on it: keep the string).
BROKEN_OFF = "broken_off"


def chat_log(session_id: str) -> str:
    return f"session:{session_id}:chat"


def chat_rate(session_id: str) -> str:
    """The session's chat counter (a fixed window shared by every node)."""
    return f"session:{session_id}:chat_rate"


CHAT_WINDOW_S = 60.0


def chat_message(event: Event) -> dict[str, Any]:
    """A ``chat.message`` event as the ``chat`` socket message carries it (live, and in
    the history that ``joined`` lists)."""
    return {
        "session_id": event.session_id,
        "participant_id": event.data.get("participant_id"),
        "sender": event.actor.model_dump() if event.actor else None,
        "text": event.data.get("text"),
        "ts": event.ts,
        "seq": event.seq,
    }


class ParticipantsMixin(ServiceCore):
    # The node whose sockets hold the slots joined here (written into each slot), and
    # how long a session everyone left stays open (0: for ever). Set by the app.
    node_id: str = ""
    session_idle_end_s: float = 0.0
    # Chat limits (settings chat_max_chars, chat_per_minute_per_session; app.py sets them).
    chat_max_chars = 2000
    chat_per_minute = 120

    # -- participants -----------------------------------------------------------------
    async def participants(self, session_id: str) -> list[Participant]:
        ids = await self.store.index_range(f"session:{session_id}:participants")
        docs: list[dict[str, Any] | None] = []
        if ids:
            docs = await self.store.get_many([f"participant:{i}" for i in ids])
        elif self.archived is not None and await self.store.get(f"session:{session_id}") is None:
            docs = list(await self.archived.participant_docs(session_id))  # evicted
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
        accepted = policy.accepted_by_joining(who, invitations)
        if accepted is not None:
            await self._set_invitation(accepted, "accepted", actor_of(who), None, OPEN)
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
        doc["node"] = self.node_id  # whose restart finds this slot a ghost
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
            joined_at=p.joined_at,
        )
        await self._presence(p, "joined")
        return p, f"{p.participant_id}.{secret}"

    async def resume(self, who: Identity, resume_token: str) -> tuple[Participant, str]:
        pid, _, secret = resume_token.partition(".")
        doc = await self.store.get(f"participant:{pid}") if pid and secret else None
        if doc is None and pid and secret and self.archived is not None:
            # Its session was sealed and left the store: ended, as the record says.
            gone = await self.archived.participant_doc(pid)
            if gone is not None and gone["identity"]["sub"] == who.sub:
                await self.require_active(gone["session_id"])
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
            return dict(
                doc,
                state="joined",
                epoch=doc["epoch"] + 1,
                resume_hash=_hash(secret),
                node=self.node_id,
            )

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
                disconnected_at=now,
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
                left_at=now,
            )
            await self._presence(new, "left", reason=reason)
            if reason != "session_ended" and all(
                x.state == "left" for x in await self.participants(p.session_id)
            ):
                await self.store.index_add(IDLE, p.session_id, now)
        return changed

    async def recover_ghosts(self, alone: bool) -> int:
        """At start: the slots this node held before it stopped (a crash: their sockets
        are gone and nobody said so) go to ``disconnected``, so the sweeper ends those
        whose person does not come back within the grace period. ``alone`` (a single
        node's store): every ``joined`` slot; otherwise only those written by this node
        (``node``); a slot of another node is left to it. Also files sessions that
        everyone had left before the idle end existed. Returns the slots dropped."""
        dropped = 0
        ids = await self.store.index_range("sessions")
        for i in range(0, len(ids), 500):
            keys = [f"session:{sid}" for sid in ids[i : i + 500]]
            for doc in await self.store.get_many(keys):
                if doc is None or doc.get("status") != "active":
                    continue
                sid = str(doc["session_id"])
                slot_ids = await self.store.index_range(f"session:{sid}:participants")
                slots = await self.store.get_many([f"participant:{x}" for x in slot_ids])
                live = [d for d in slots if d is not None and d.get("state") != "left"]
                for d in live:
                    mine = alone or (bool(self.node_id) and d.get("node") == self.node_id)
                    if d.get("state") == "joined" and mine:
                        dropped += await self.disconnected(d["participant_id"], d["epoch"])
                if not live:  # everyone left, or nobody joined: broken off if it stays so
                    left = [float(d.get("left_at") or 0) for d in slots if d is not None]
                    since = max(left, default=float(doc.get("created_at") or self.clock()))
                    await self.store.index_add(IDLE, sid, since)
        return dropped

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
        if len(text) > self.chat_max_chars:
            raise BadRequest(
                "chat_too_long",
                f"a chat message may have at most {self.chat_max_chars} characters, "
                f"this one has {len(text)}",
                [{"field": "text", "problem": "too long", "max_chars": self.chat_max_chars}],
            )
        session = await self.require_active(p.session_id)
        await self._chat_rate(p.session_id)
        event = await self.record(
            session.case_id,
            "chat.message",
            session_id=p.session_id,
            actor=p.identity,
            participant_id=p.participant_id,
            text=text,
        )
        # Also in the session's own log: a page joining or resuming reads the session's
        # chat from there, not from the case's whole timeline. The message is in the
        # record now, so it is acknowledged even if the store fails from here on (a full
        # disk between the two lines): the record holds exactly what was acknowledged.
        try:
            await self.store.append(
                chat_log(p.session_id), {"event": event.model_dump(mode="json")}
            )
            await self._announce(f"session:{p.session_id}", "chat", **chat_message(event))
        except StoreUnavailable as exc:
            log.warning("chat %s of %s filed, not copied: %s", event.seq, p.session_id, exc)
        return event

    async def _chat_rate(self, session_id: str) -> None:
        """Count one message against the session's cap for this minute (all senders, all
        nodes: the counter is a store document changed atomically). Over the cap, nothing
        is written anywhere and RateLimited says when the minute ends."""
        now, cap, key = self.clock(), self.chat_per_minute, chat_rate(session_id)

        def take(doc: dict[str, Any]) -> dict[str, Any] | None:
            return window_take(doc, now, cap, CHAT_WINDOW_S)

        doc, changed = await self.store.update(key, take)
        if doc is None:  # the session's first message: make the counter, then count
            await self.store.create(key, {"w": -1, "n": 0})
            doc, changed = await self.store.update(key, take)
        if not changed:
            raise RateLimited(
                f"this session's chat is at its cap of {cap} messages a minute "
                "(chat_per_minute_per_session); the message was not sent",
                window_retry(now, CHAT_WINDOW_S),
            )

    async def session_chat(self, session_id: str, newest: int) -> list[Event]:
        """The session's ``newest`` chat messages, oldest first."""
        docs = await self.store.read_log(chat_log(session_id))
        return [Event.model_validate(d["event"]) for d in docs[-newest:] if "event" in d]
