"""Asking another node's media host through the bus: a request on ``node:<owner>``, the
answer on ``reply:<asker>`` (the owner's ``MediaBridge`` answers it)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from signaling.errors import ServiceError, Unavailable
from signaling.state import Store, StoreUnavailable

RPC_TIMEOUT_S = 15.0


class NodeRpc:
    def __init__(self, store: Store, node_id: str) -> None:
        self.store = store
        self.node_id = node_id
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def ask(self, node: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        rid = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self.store.publish(
                f"node:{node}",
                {"type": "media.rpc", "id": rid, "op": op, "args": args, "reply_to": self.node_id},
            )
            reply = await asyncio.wait_for(fut, RPC_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(
                "media_unavailable", f"the media node {node} of this session did not answer"
            ) from None
        finally:
            self._pending.pop(rid, None)
        if "error" in reply:
            if reply["error"]["code"] == StoreUnavailable.code:
                raise StoreUnavailable(reply["error"]["message"])  # 503 here too
            raise ServiceError(reply["error"]["code"], reply["error"]["message"])
        return dict(reply["result"])

    def on_reply(self, msg: dict[str, Any]) -> None:
        fut = self._pending.get(str(msg.get("id")))
        if fut is not None and not fut.done():
            fut.set_result(msg)
