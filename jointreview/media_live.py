"""What the media bridge tells about live sessions beyond signaling: each participant's
media health as the SFU counts it (the supervisors' live overview), and dropping one
peer's media (an observer who stops watching: not a participant, so no ``presence`` says
it). A mixin of ``MediaBridge``, which asks the node hosting the session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from signaling.errors import ServiceError
from signaling.state import Store, StoreUnavailable

log = logging.getLogger(__name__)
# The overview is polled every 2 s: a media host slow to answer leaves the figures out
# rather than holding the page for the bus's 15 s.
HEALTH_TIMEOUT_S = 2.0


class LiveMedia:
    store: Store
    # MediaBridge's: the op run on that node, locally or over the bus
    _ask: Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]

    async def _at_owner(self, session_id: str, op: str, **args: Any) -> dict[str, Any] | None:
        lease = await self.store.get_ephemeral(f"media-owner:{session_id}")
        if lease is None:
            return None  # no media host runs it (nobody sent media, or all left)
        args = {"session_id": session_id, "worker": int(lease.get("worker", 0)), **args}
        return await self._ask(str(lease["node"]), op, args)

    async def media_health(self, session_id: str) -> list[dict[str, Any]]:
        """Per peer of the session's media room: connection, loss, fps, freezes
        (``media_server/health.py``). Empty when no host runs it or it cannot say now."""
        try:
            result = await asyncio.wait_for(self._at_owner(session_id, "health"), HEALTH_TIMEOUT_S)
        except (ServiceError, StoreUnavailable) as exc:
            log.info("no media health of %s now: %s", session_id, exc.message)
            return []
        except TimeoutError:
            log.info("no media health of %s now: its media host did not answer", session_id)
            return []
        return list(result.get("participants", [])) if result else []

    async def release(self, session_id: str, participant_id: str) -> None:
        """Close this peer's media connection (the room goes with its last peer)."""
        await self._at_owner(session_id, "leave", participant_id=participant_id)
