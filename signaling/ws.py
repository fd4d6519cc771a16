"""WebSocket signaling: one ``Connection`` per socket (the endpoint that serves it is in
``ws_endpoint.py``), with one reader (the endpoint's loop) and one writer task.

Bus messages for this socket's topics go to a bounded outbox (the store's single bus
reader puts them there, the writer drains it): a socket that cannot keep up is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from aiohttp import web

from . import logs, policy, protocol, socketcaps
from .appkeys import CONFIG, GUARDS, MEDIA, NODE_ID, SERVICE, TASKS, TOKENS
from .auth import AuthError, Identity
from .background import stopping
from .errors import ServiceError
from .inbox_fanout import INBOXES
from .limits import RateLimited, TokenBucket, retry_ms
from .models import Invitation, Participant, Session
from .participants import chat_message
from .recording_control import SUPERVISORS
from .state import StoreUnavailable, Subscription

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 512
CLOSE_SUPERSEDED = 4409
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_SLOW = 4429
CLOSE_FLOOD = 4428  # kept sending far over its rate after being told (rate_limited)
# Refusals a socket may collect, as a bucket of this many times ws_burst refilled at
# ws_rate_per_s: a client that honours retry_after_ms never comes near it; one sending
# at 20 times the rate empties it in about a second and a half.
FLOOD_STRIKES = 10
CLOSE_FLUSH_S = 1.0  # how long a closing socket waits for its queued messages to go out
CHAT_HISTORY = 500  # the newest chat messages of the session that ``joined`` carries
STORE_RETRY_S = 1.0  # how often a closed socket's slot retries the store during an outage


class Connection:
    def __init__(self, request: web.Request, ws: web.WebSocketResponse, who: Identity) -> None:
        self.app = request.app
        self.ws = ws
        self.who = who
        self.service = self.app[SERVICE]
        self.config = self.app[CONFIG]
        # A dict is serialised by the writer; a str (one text for many sockets, the
        # inbox fan-out's) goes out as it is.
        self.outbox: asyncio.Queue[dict[str, Any] | str | None] = asyncio.Queue(OUTBOX_LIMIT)
        self.subs: list[Subscription] = []
        self.session_subs: list[Subscription] = []
        self.participant: Participant | None = None
        self.held: list[dict[str, Any]] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        # Started when there is something to send and gone when the outbox is empty, and
        # the token's expiry a timer: an idle socket (thousands of idle inboxes) holds no
        # task of its own beyond its reader.
        self._writer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.guards = self.app[GUARDS]
        now = self.guards.clock()
        self.bucket = TokenBucket(self.config.ws_burst, self.config.ws_rate_per_s, stamp=now)
        self.strikes = TokenBucket(
            FLOOD_STRIKES * self.config.ws_burst, self.config.ws_rate_per_s, stamp=now
        )

    # -- outgoing ---------------------------------------------------------------------
    def send(self, msg: dict[str, Any] | str) -> None:
        if self.closing:
            return
        try:
            self.outbox.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("closing slow socket of %s", self.who.sub)
            self.close(CLOSE_SLOW, "slow_consumer")
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())

    def send_text(self, text: str) -> None:
        self.send(text)

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.spawn(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        # What was queued before (the error that says why) goes out first, if it can soon:
        # the writer may be busy while a flood is read.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outbox.join(), CLOSE_FLUSH_S)
        await self.ws.close(code=code, message=reason.encode())

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _drain(self) -> None:
        """Send what the outbox holds, then end (``send`` starts another when needed)."""
        dead = False
        while not self.outbox.empty():
            msg = self.outbox.get_nowait()
            try:
                if msg is None or dead:
                    continue
                try:
                    text = msg if isinstance(msg, str) else json.dumps(msg, ensure_ascii=False)
                    text.encode("utf-8")  # a string no frame can carry must not end the writer
                except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
                    kind = "text" if isinstance(msg, str) else msg.get("type")
                    log.error("dropped a %s message to %s: %s", kind, self.who.sub, exc)
                    continue
                try:
                    await self.ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    dead = True  # the socket is gone: the rest is dropped, not waited on
            finally:
                self.outbox.task_done()

    async def stop_writer(self) -> None:
        """The socket ends: what is queued goes out, unless the queue is full (a client
        that does not read is not waited for)."""
        task = self._writer
        if task is None:
            return
        if self.outbox.full():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- bus handlers -----------------------------------------------------------------
    # Inbox messages (``user:``/``dept:`` topics) come through the node's inbox fan-out,
    # which decides who sees them (signaling/inbox_fanout.py).
    def wants_update(self, inv: Invitation) -> bool:
        # Someone in the session hears it on the session topic already.
        p = self.participant
        return p is None or p.session_id != inv.session_id

    def on_session(self, msg: dict[str, Any]) -> None:
        if self.held is not None:
            self.held.append(msg)  # until the snapshot in ``joined`` has gone out
            return
        p = self.participant
        about = msg.get("participant")
        if msg.get("type") == "presence" and p is not None and about is not None:
            if about.get("participant_id") == p.participant_id:
                return  # one's own presence: the ``joined`` reply already said it
        self.send(msg)
        if msg.get("type") == "session.ended":
            self.participant = None
            self.spawn(self._drop_session_subs())

    def on_participant(self, msg: dict[str, Any]) -> None:
        if msg.get("type") != "superseded":
            self.send(msg)  # media.state and other messages for this participant only
            return
        p = self.participant
        if msg.get("type") == "superseded" and p is not None and msg["epoch"] > p.epoch:
            self.participant = None  # the new socket owns the slot now
            self.send(
                protocol.error("superseded", "this participant continued on another connection")
            )
            self.close(CLOSE_SUPERSEDED, "superseded")

    async def _drop_session_subs(self) -> None:
        subs, self.session_subs = self.session_subs, []
        for sub in subs:
            await sub.close()

    def evict(self) -> None:
        """This is its identity's oldest socket over max_sockets_per_identity."""
        self.send(
            protocol.error(
                "too_many_sockets",
                f"this identity opened more than {self.config.max_sockets_per_identity} "
                "sockets on this node; the oldest is closed",
            )
        )
        self.close(socketcaps.CLOSE_TOO_MANY_SOCKETS, "too_many_sockets")

    # -- incoming ---------------------------------------------------------------------
    def throttled(self, text: str | None) -> bool:
        """Spend one message of this socket's rate and of its identity's on this node.
        Every frame counts, pings and invalid ones too: each costs a parse and a reply,
        and a flood of cheap messages is still a flood (a page pings far below the rate).
        Refused: the message is not processed and the answer says when to retry."""
        if self.closing:
            return True
        now = self.guards.clock()
        wait = self.bucket.take(now)
        if wait is None:
            wait = self.guards.identities.take(self.who.sub, now)
            if wait is None:
                return False
        ref = protocol.ref_of(text, self.config.max_message_bytes) if text else None
        if self.strikes.take(now) is not None:
            self.send(
                protocol.error("rate_limited", "still far over the message rate: closing", ref)
            )
            self.close(CLOSE_FLOOD, "rate_limited")
            return True
        self.send(
            protocol.error(
                "rate_limited",
                f"too many messages (ws_rate_per_s={self.config.ws_rate_per_s:g} per socket, "
                f"identity_rate_per_s={self.config.identity_rate_per_s:g} per identity); "
                "this one was not processed",
                ref,
                retry_after_ms=retry_ms(wait),
            )
        )
        return True

    async def handle(self, text: str) -> None:
        if self.throttled(text):
            return
        try:
            msg = protocol.parse(text, self.config.max_message_bytes)
        except protocol.ProtocolError as exc:
            self.send(protocol.error(exc.code, exc.message, exc.ref, exc.details))
            return
        try:
            await getattr(self, "on_" + msg.type.replace(".", "_"))(msg)
        except RateLimited as exc:
            self.send(
                protocol.error(exc.code, exc.message, msg.ref, retry_after_ms=exc.retry_after_ms)
            )
        except ServiceError as exc:
            self.send(protocol.error(exc.code, exc.message, msg.ref, exc.details))
        except AuthError as exc:
            self.send(protocol.error(exc.code, exc.message, msg.ref))
        except StoreUnavailable as exc:
            # An outage, not a bug: the message is refused, the socket stays.
            log.warning("%s from %s refused: %s", msg.type, self.who.sub, exc.message)
            self.send(protocol.error(exc.code, exc.message, msg.ref))
        except Exception:
            log.exception("handling %s from %s", msg.type, self.who.sub)
            self.send(
                protocol.error("internal_error", "the server failed on this message", msg.ref)
            )

    async def on_ping(self, msg: protocol.Ping) -> None:
        self.send({"type": "pong", "v": 1, "ref": msg.ref, "server_time": time.time()})

    async def on_join(self, msg: protocol.Join) -> None:
        self._not_joined()
        participant, resume_token = await self.service.join(self.who, msg.session_id)
        await self._enter(participant, resume_token, msg.ref)

    async def on_resume(self, msg: protocol.Resume) -> None:
        self._not_joined()
        participant, resume_token = await self.service.resume(self.who, msg.resume_token)
        await self._enter(participant, resume_token, msg.ref)

    def _not_joined(self) -> None:
        if self.participant is not None:
            raise ServiceError(
                "already_joined", "this connection is already in a session; leave first"
            )

    async def _enter(self, p: Participant, resume_token: str, ref: str | None) -> None:
        """Subscribe first, then snapshot, then release what arrived meanwhile: nothing
        is missed and nothing arrives before the ``joined`` reply."""
        store = self.service.store
        self.participant = p
        self.held = []
        try:
            self.session_subs = [
                await store.subscribe(f"session:{p.session_id}", self.on_session),
                await store.subscribe(f"participant:{p.participant_id}", self.on_participant),
            ]
            session = await self.service.session(p.session_id)
            logs.bind_session(session.case_id, p.session_id)  # this socket's lines from now
            participants = await self.service.participants(p.session_id)
            invitations = await self.service.invitations(p.session_id)
            chat = await self._chat_history(session)
            recording = await self.app[MEDIA].recording_active(p.session_id)
            await self.app[MEDIA].watch(p.session_id)  # its case file is sealed at its end
        except BaseException:
            self.held = None
            raise
        self.send(
            {
                "type": "joined",
                "v": 1,
                "ref": ref,
                "session": session.model_dump(),
                "participant": p.model_dump(),
                "participants": [x.model_dump() for x in participants if x.state != "left"],
                "invitations": [i.model_dump() for i in invitations],
                "resume_token": resume_token,
                "resume_grace_s": self.config.resume_grace_s,
                "recording": recording,  # everyone sees that the session is recorded
                "recording_policy": self._recording_policy(),  # staff may toggle: "clerk"
                "chat": chat,  # what a page missed while it was away (merge by seq)
            }
        )
        held, self.held = self.held, None
        for msg in held:
            self.on_session(msg)

    async def _chat_history(self, session: Session) -> list[dict[str, Any]]:
        """The session's chat so far, oldest first, each as its ``chat`` message said it."""
        events = await self.service.session_chat(session.session_id, CHAT_HISTORY)
        return [chat_message(e) for e in events]

    def _recording_policy(self) -> str:
        control = self.app[MEDIA].recording
        return control.policy if control is not None else "off"

    async def on_leave(self, msg: protocol.Leave) -> None:
        p = self.participant
        if p is None:
            raise ServiceError("not_joined", "this connection is not in a session")
        self.participant = None
        logs.bind_session(None, None)
        await self._drop_session_subs()
        await self.service.leave(p.participant_id, p.epoch)
        self.send({"type": "left", "v": 1, "ref": msg.ref, "session_id": p.session_id})

    async def on_invitation_accept(self, msg: protocol.AcceptInvitation) -> None:
        inv = await self.service.respond(self.who, msg.invitation_id, True)
        self.send({"type": "ack", "v": 1, "ref": msg.ref, "invitation": inv.model_dump()})

    async def on_invitation_decline(self, msg: protocol.DeclineInvitation) -> None:
        inv = await self.service.respond(self.who, msg.invitation_id, False, msg.reason)
        self.send({"type": "ack", "v": 1, "ref": msg.ref, "invitation": inv.model_dump()})

    async def on_chat(self, msg: protocol.Chat) -> None:
        if self.participant is None:
            raise ServiceError("not_joined", "join a session before chatting")
        event = await self.service.chat(self.participant, msg.text)
        self.send({"type": "ack", "v": 1, "ref": msg.ref, "seq": event.seq})

    async def on_media_offer(self, msg: protocol.MediaOffer) -> None:
        p = self.participant
        if p is None:
            raise ServiceError("not_joined", "join a session before sending media")
        owner = {"participant_id": p.participant_id, **self.who.public()}
        result = await self.app[MEDIA].negotiate(
            p.session_id,
            p.participant_id,
            owner,
            msg.sdp,
            [x.model_dump() for x in msg.publish],
            [x.model_dump() for x in msg.subscribe],
        )
        self.send({"type": "media.answer", "v": 1, "ref": msg.ref, **result})

    async def on_media_sync(self, msg: protocol.MediaSync) -> None:
        p = self.participant
        if p is None:
            raise ServiceError("not_joined", "join a session before asking for its media")
        tracks = await self.app[MEDIA].tracks(p.session_id)
        self.send(
            {
                "type": "media.tracks",
                "v": 1,
                "ref": msg.ref,
                "session_id": p.session_id,
                "tracks": tracks,
            }
        )

    async def on_media_ready(self, msg: protocol.MediaReady) -> None:
        p = self.participant
        if p is None:
            raise ServiceError("not_joined", "join a session before sending media")
        await self.app[MEDIA].ready(p.session_id, p.participant_id)
        self.send({"type": "ack", "v": 1, "ref": msg.ref})

    async def on_recording_start(self, msg: protocol.RecordingStart) -> None:
        await self._recording(msg.ref, True)

    async def on_recording_stop(self, msg: protocol.RecordingStop) -> None:
        await self._recording(msg.ref, False)

    async def _recording(self, ref: str | None, active: bool) -> None:
        p = self.participant
        if p is None:
            raise ServiceError("not_joined", "join the session before recording it")
        control = self.app[MEDIA].recording
        if control is None:
            raise ServiceError("recording_disabled", "recording is turned off on this service")
        state = await control.request(self.who, p.session_id, active)
        self.send({"type": "ack", "v": 1, "ref": ref, "recording": state})

    def on_supervision(self, msg: dict[str, Any]) -> None:
        self.send(msg)  # recording errors and other exceptions supervisors must see

    async def on_auth_refresh(self, msg: protocol.Refresh) -> None:
        new = self.app[TOKENS].verify(msg.token)
        same = ("sub", "role", "dept", "level", "case", "session")
        if any(getattr(new, k) != getattr(self.who, k) for k in same):
            raise ServiceError(
                "identity_changed",
                "a refreshed token must carry the same identity, department and scope",
            )
        self.who = new
        self.send({"type": "ack", "v": 1, "ref": msg.ref, "token_expires_at": new.exp})

    def watch_expiry(self) -> None:
        """Close the socket when its token expires (later, if ``auth.refresh`` came)."""
        delay = max(0.0, (self.who.exp or 0) - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expiry_due)

    def _expiry_due(self) -> None:
        if (self.who.exp or 0) > time.time():
            self.watch_expiry()  # refreshed meanwhile
            return
        self.send(protocol.error("token_expired", "the token expired; sign in again"))
        self.close(CLOSE_TOKEN_EXPIRED, "token_expired")

    def stop_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()

    # -- lifetime ---------------------------------------------------------------------
    async def greet(self) -> None:
        store = self.service.store
        inboxes = self.app[INBOXES]
        self.subs.append(await inboxes.follow(f"user:{self.who.sub}", self))
        if policy.has_inbox(self.who):
            self.subs.append(await inboxes.follow(f"dept:{self.who.dept}", self))
        if policy.watches_supervision(self.who):
            self.subs.append(await store.subscribe(SUPERVISORS, self.on_supervision))
        ice_servers = self.app[MEDIA].ice_servers(self.who.sub)
        self.send(
            {
                "type": "welcome",
                "v": protocol.VERSION,
                "node": self.app[NODE_ID],
                "user": self.who.public(),
                "token_expires_at": self.who.exp,
                "server_time": time.time(),
                "heartbeat_s": self.config.heartbeat_s,
                "max_message_bytes": self.config.max_message_bytes,
                "resume_grace_s": self.config.resume_grace_s,
                "ice_servers": ice_servers,
                # "relay" without servers would leave the page no way at all.
                "ice_transport_policy": self.config.ice_transport_policy if ice_servers else "all",
            }
        )
        if policy.has_inbox(self.who):
            invitations = await self.service.inbox(self.who)
            sessions: dict[str, Session] = {}
            for inv in invitations:
                session = sessions.get(inv.session_id) or await self.service.session(inv.session_id)
                sessions[inv.session_id] = session
                self.send(
                    {
                        "type": "invitation",
                        "invitation": inv.model_dump(),
                        "session": session.model_dump(),
                    }
                )
                inboxes.mark_from_inbox(inv, self.who)

    async def finish(self) -> None:
        self.closing = True
        for sub in self.subs + self.session_subs:
            await sub.close()
        for task in list(self.tasks):
            task.cancel()
        p = self.participant
        if p is None:
            return
        # Marking the slot and holding it for a reconnect are the app's work, not this
        # socket's: the socket's task may be cancelled as it closes, and a mark cut off
        # between its steps (the event filed, "reconnecting" not yet said) left the
        # others thinking the participant had gone.
        timers = self.app[TASKS]
        task = asyncio.create_task(self._grace(p, mark=True))
        timers.add(task)
        task.add_done_callback(timers.discard)

    async def _grace(self, p: Participant, mark: bool = False) -> None:
        while mark:
            try:
                if not await self.service.disconnected(p.participant_id, p.epoch):
                    return  # resumed, left or superseded meanwhile: nothing to hold
                mark = False
            except StoreUnavailable:
                await asyncio.sleep(STORE_RETRY_S)  # never leave a ghost slot joined
        # A cancel swallowed on the way (the node stopping): no resume_grace_s more of it.
        if stopping():
            return
        await asyncio.sleep(self.config.resume_grace_s)
        with contextlib.suppress(ServiceError, StoreUnavailable):  # else the sweeper ends it
            await self.service.grace_expired(p.participant_id, p.epoch + 0)
