"""Asking another node's media host through the bus: a request on ``node:<owner>``, the
answer on ``reply:<asker>`` (the owner's ``MediaBridge`` answers it)."""

from __future__ import annotations

from typing import Any

from signaling.state import Store

from .pending_calls import PendingCalls

RPC_TIMEOUT_S = 15.0


class NodeRpc:
    def __init__(self, store: Store, node_id: str) -> None:
        self.store = store
        self.node_id = node_id
        self._calls = PendingCalls(RPC_TIMEOUT_S)

    async def ask(self, node: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        async def send(rid: str) -> None:
            request = {"type": "media.rpc", "id": rid, "op": op, "args": args}
            await self.store.publish(f"node:{node}", {**request, "reply_to": self.node_id})

        unanswered = f"the media node {node} of this session did not answer"
        return await self._calls.call(send, unanswered)

    def on_reply(self, msg: dict[str, Any]) -> None:
        self._calls.answer(msg)
