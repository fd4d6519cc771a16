"""The control process and a media worker talk over one stream socket (a socketpair the
worker inherits): frames of a 4-byte big-endian length and a JSON object.

Requests carry an ``id`` and an ``op``; answers the same ``id`` and ``result`` or
``error``; events (media events for the sockets, recording events, load reports) carry
``event`` and no ``id``. End of stream means the other side is gone."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024  # an SDP answer with every track is ~10 KB; this is a guard


async def read_msg(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame, or None at end of stream (the other side closed or died)."""
    try:
        head = await reader.readexactly(HEADER.size)
        (size,) = HEADER.unpack(head)
        if size > MAX_FRAME:
            raise ValueError(f"a frame of {size} bytes on the worker channel")
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    msg = json.loads(body)
    if not isinstance(msg, dict):
        raise ValueError("a worker channel frame must hold a JSON object")
    return msg


def write_msg(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    """Queue one frame (the transport buffers it; callers drain when they can wait)."""
    body = json.dumps(msg, separators=(",", ":")).encode()
    writer.write(HEADER.pack(len(body)) + body)
