"""The ``/ws`` endpoint: authenticate the socket, admit it (socket caps), then serve it:
the reader loop, the writer and the token-expiry tasks around its ``Connection``."""

from __future__ import annotations

import logging

from aiohttp import WSCloseCode, WSMsgType, web

from . import logs, protocol, socketcaps
from .appkeys import CONFIG, SOCKETS, TOKENS, WHO
from .auth import AuthError, Identity
from .observing import ObservingConnection
from .state import StoreUnavailable
from .web_security import WS_PROTOCOLS, ws_token

log = logging.getLogger(__name__)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    from .api import json_error

    try:
        who = request.app[TOKENS].verify(ws_token(request))
    except AuthError as exc:
        return json_error(401, exc.code, exc.message)
    request[WHO] = who  # the audit trail's actor (and its auth.connect below)
    slot = socketcaps.admit(request, who.sub)
    if isinstance(slot, web.Response):
        return slot  # 429 too_many_sockets: this client address holds its cap
    try:
        return await _serve(request, who, slot)
    finally:
        slot.release()  # counted from admission to here, whatever happened between


async def _serve(
    request: web.Request, who: Identity, slot: socketcaps.Slot
) -> web.WebSocketResponse:
    from .api_audit import connected

    config = request.app[CONFIG]
    # aiohttp drops a frame above max_msg_size by closing the socket (1009). Our own,
    # smaller limit answers with an error and keeps the socket; only absurd frames close.
    ws = web.WebSocketResponse(
        protocols=WS_PROTOCOLS,
        heartbeat=config.heartbeat_s,
        max_msg_size=max(16 * config.max_message_bytes, 1 << 20),
    )
    await ws.prepare(request)
    logs.SOCKET_ID.set(logs.new_id("s-"))  # on every line this socket's task writes
    log.debug("socket opened: role=%s", who.role)
    connected(request, who)  # a sign-in, in the audit trail
    conn = ObservingConnection(request, ws, who)  # Connection, plus observe
    slot.attach(conn)  # the identity's oldest socket over its cap is closed
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    conn.watch_expiry()
    close_code, close_reason = int(WSCloseCode.GOING_AWAY), b""
    try:
        try:
            await conn.greet()
        except StoreUnavailable as exc:
            # No welcome without the store: say why and close, asking to come back later.
            log.warning("socket of %s refused: %s", who.sub, exc.message)
            conn.send(protocol.error(exc.code, exc.message))
            close_code, close_reason = int(WSCloseCode.TRY_AGAIN_LATER), exc.code.encode()
        else:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await conn.handle(frame.data)
                elif frame.type == WSMsgType.BINARY and not conn.throttled(None):
                    conn.send(protocol.error("binary_not_supported", "send JSON text frames"))
                elif frame.type == WSMsgType.ERROR:
                    break
    finally:
        sockets.discard(ws)
        conn.stop_expiry()
        await conn.finish()
        await conn.stop_writer()
        if not ws.closed:
            await ws.close(code=close_code, message=close_reason)
        log.debug("socket closed: code=%s", ws.close_code)
    return ws
