"""Inbox fan-out: one bus subscription per inbox topic per node, whatever the number of
sockets following it.

Thousands of reviewers sit idle on ``/ws`` during office hours, a whole department on one
topic (``dept:<id>``). A ring to that department is one publish, one message to each
node, and here one parse, one policy decision per distinct identity shape and one JSON
text for every socket of the department: the sockets get the same string. That the
invitation reached a screen (``ringing``) is filed once per node, not once per socket:
the per-socket write was what exhausted Redis' connections (issue #13).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from . import policy
from .auth import Identity
from .errors import ServiceError
from .models import Invitation
from .service import ReviewService
from .state import StoreUnavailable, Subscription

log = logging.getLogger(__name__)

MARKED_MEMORY = 4096  # invitations this node has already marked as ringing (newest kept)


class Follower(Protocol):
    """What the fan-out needs of a socket (``signaling.ws.Connection``)."""

    who: Identity

    def send_text(self, text: str) -> None: ...

    def wants_update(self, inv: Invitation) -> bool: ...


class _Following(Subscription):
    def __init__(self, fanout: InboxFanout, topic: str, follower: Follower) -> None:
        self._fanout, self._topic, self._follower = fanout, topic, follower
        self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self._fanout.unfollow(self._topic, self._follower)


class InboxFanout:
    def __init__(self, service: ReviewService) -> None:
        self.service = service
        self._followers: dict[str, dict[Follower, None]] = {}  # ordered set per topic
        self._subs: dict[str, Subscription] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._marked: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

    def followers(self, topic: str) -> int:
        return len(self._followers.get(topic, ()))

    async def follow(self, topic: str, follower: Follower) -> Subscription:
        """Deliver ``topic``'s inbox messages to ``follower``; subscribed on the bus when
        this returns (the first follower of a topic subscribes; the others wait for it)."""
        followers = self._followers.setdefault(topic, {})
        followers[follower] = None
        try:
            while topic not in self._subs:
                pending = self._pending.get(topic)
                if pending is not None:
                    # Whatever its outcome: subscribed, or failed (then this one tries).
                    await asyncio.wait([pending])
                    continue
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._pending[topic] = done
                try:
                    self._subs[topic] = await self.service.store.subscribe(
                        topic, self._handler(topic)
                    )
                finally:
                    del self._pending[topic]
                    done.set_result(None)
        except BaseException:
            await self.unfollow(topic, follower)
            raise
        return _Following(self, topic, follower)

    async def unfollow(self, topic: str, follower: Follower) -> None:
        followers = self._followers.get(topic)
        if followers is None:
            return
        followers.pop(follower, None)
        if followers or topic in self._pending:
            return
        del self._followers[topic]
        sub = self._subs.pop(topic, None)
        if sub is not None:
            await sub.close()

    def _handler(self, topic: str) -> Callable[[dict[str, Any]], None]:
        return lambda msg: self.deliver(topic, msg)

    def deliver(self, topic: str, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind not in ("invitation", "invitation.updated"):
            return
        inv = Invitation.model_validate(msg["invitation"])
        text = json.dumps(msg, ensure_ascii=False)  # once for every socket
        seen: dict[tuple[Any, ...], bool] = {}
        first: Identity | None = None
        for follower in list(self._followers.get(topic, ())):
            who = follower.who
            # Reviewers of one department mostly share role, level and (no) scope: the
            # policy is asked once per such shape, not once per socket.
            by_name = who.sub if inv.reviewer else None
            shape = (who.role, who.dept, who.level, by_name, who.case, who.session)
            ok = seen.get(shape)
            if ok is None:
                ok = seen[shape] = policy.can_see_invitation(who, inv)
            if not ok:
                continue
            if kind == "invitation":
                follower.send_text(text)
                first = first or who
            elif follower.wants_update(inv):
                follower.send_text(text)
        if first is not None and inv.status == "pending":
            self._mark_rang(inv.invitation_id, first)

    def _mark_rang(self, invitation_id: str, who: Identity) -> None:
        if invitation_id in self._marked:
            return
        self._marked[invitation_id] = None
        while len(self._marked) > MARKED_MEMORY:
            self._marked.popitem(last=False)
        task = asyncio.create_task(self._mark(invitation_id, who))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark(self, invitation_id: str, who: Identity) -> None:
        try:
            await self.service.mark_rang(invitation_id, who)
        except StoreUnavailable:
            self._marked.pop(invitation_id, None)  # the next socket to be rung tries again
        except ServiceError:
            pass

    def mark_from_inbox(self, inv: Invitation, who: Identity) -> None:
        """A socket's greeting replayed an open invitation to it: it rang there."""
        if inv.status == "pending":
            self._mark_rang(inv.invitation_id, who)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


INBOXES = web.AppKey("inboxes", InboxFanout)
