"""Topic → handlers fan-out inside one process; both stores deliver through it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .base import Doc, Handler, Subscription

log = logging.getLogger(__name__)


class _LocalSubscription(Subscription):
    def __init__(self, bus: LocalBus, topic: str, handler: Handler) -> None:
        self._bus = bus
        self._topic = topic
        self._handler = handler
        self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self._bus.remove(self._topic, self._handler)


class LocalBus:
    """Keeps handlers per topic; ``on_first``/``on_last`` let a store (un)subscribe upstream."""

    def __init__(
        self,
        on_first: Callable[[str], Awaitable[None]] | None = None,
        on_last: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._on_first = on_first
        self._on_last = on_last

    def topics(self) -> list[str]:
        return list(self._handlers)

    async def add(self, topic: str, handler: Handler) -> Subscription:
        handlers = self._handlers.setdefault(topic, [])
        handlers.append(handler)
        if len(handlers) == 1 and self._on_first is not None:
            try:
                await self._on_first(topic)
            except BaseException:
                handlers.remove(handler)
                if not handlers:
                    del self._handlers[topic]
                raise
        return _LocalSubscription(self, topic, handler)

    async def remove(self, topic: str, handler: Handler) -> None:
        handlers = self._handlers.get(topic)
        if not handlers:
            return
        handlers.remove(handler)
        if not handlers:
            del self._handlers[topic]
            if self._on_last is not None:
                await self._on_last(topic)

    def deliver(self, topic: str, message: Doc) -> None:
        # Copy: a handler may unsubscribe (or subscribe) while we iterate.
        for handler in list(self._handlers.get(topic, ())):
            try:
                handler(message)
            except Exception:
                # One broken subscriber must not starve the others.
                log.exception("bus handler for %s failed", topic)
