"""Media events (``media.tracks``, ``speaking``, ``media.state``) from this node's media
hosts out to the sockets of every node: published on the session's or the participant's
topic by one publisher task, in the order they happened. A full queue (the store not
keeping up) drops an event, as the bus may."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from signaling.background import stopping
from signaling.state import Outage, Store, StoreUnavailable

log = logging.getLogger(__name__)


class MediaEvents:
    def __init__(self, store: Store, size: int = 4096) -> None:
        self.store = store
        self._out: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(size)
        self._publisher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._publisher = asyncio.create_task(self._publish(), name="media-events")

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()

    def emit(self, session_id: str, participant_id: str | None, msg: dict[str, Any]) -> None:
        topic = f"participant:{participant_id}" if participant_id else f"session:{session_id}"
        try:
            self._out.put_nowait((topic, {"v": 1, **msg}))
        except asyncio.QueueFull:
            log.warning("media event dropped: the store is not keeping up")

    async def _publish(self) -> None:
        outage = Outage("media events", log)
        while not stopping():
            topic, msg = await self._out.get()
            try:
                await self.store.publish(topic, msg)
            except StoreUnavailable as exc:
                outage.failed(exc)  # dropped, as a bus message may be
                continue
            except Exception:
                log.exception("publishing a media event failed")
            outage.ok()
