"""A small signaling client for tests: reads messages in the background, waits by type."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp

Msg = dict[str, Any]


class Signal:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[Msg] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, session: Any, url: str) -> Signal:
        ws = await session.ws_connect(url)
        sig = cls(ws)
        await sig.wait("welcome")
        return sig

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                self.received.append(json.loads(frame.data))
                self._new.set()
        self.close_code = self.ws.close_code
        self._new.set()

    async def send(self, **msg: Any) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def wait(
        self, type_: str, where: Callable[[Msg], bool] = lambda m: True, timeout: float = 3.0
    ) -> Msg:
        """The first message of this type (matching ``where``) not yet taken."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, msg in enumerate(self.received):
                if msg.get("type") == type_ and where(msg):
                    return self.received.pop(i)
            if self._reader.done():
                raise AssertionError(f"socket closed ({self.close_code}) before {type_}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [(m.get("type"), m.get("state")) for m in self.received]
                raise AssertionError(f"no {type_} within {timeout}s; have {seen}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except TimeoutError:
                pass

    async def request(self, type_: str, reply: str, **fields: Any) -> Msg:
        ref = f"r{id(fields)}{len(self.received)}"
        await self.send(type=type_, ref=ref, **fields)
        return await self.wait(reply, lambda m: m.get("ref") == ref)

    async def closed(self, timeout: float = 3.0) -> int | None:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)
