"""Recordings a crash left open (the node's process, or one of its media workers, died
while writing): repaired before they are recorded into again, and sealed if their session
ended meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from recording import archive
from signaling.errors import ServiceError
from signaling.recording_control import RecordingControl
from signaling.state import Store

log = logging.getLogger(__name__)


async def recover(
    store: Store,
    node_id: str,
    recording: RecordingControl,
    follow: Callable[[str], Awaitable[None]],
) -> None:
    found = await asyncio.to_thread(archive.open_track_indexes, recording.archive_dir)
    for directory, index in found:
        if await _written_elsewhere(store, node_id, index):
            continue
        result = await asyncio.to_thread(archive.recover_session, directory, index)
        log.warning("recovered the recording of %s after a crash", result["session_id"])
        with contextlib.suppress(ServiceError):
            await recording.recovered(result)
            session_id = str(result["session_id"])
            # Seal it if it ended meanwhile (claimed: another node's sweeper may
            # find it at the same moment); else seal it here when it ends.
            if await recording.seal_once(session_id) is None:
                await follow(session_id)


async def _written_elsewhere(store: Store, node_id: str, index: dict[str, Any]) -> bool:
    """Is a live process still writing this recording (shared archive, many nodes, or
    another media worker of this node)?"""
    host = socket.gethostname()
    for run in index.get("runs", []):
        if run.get("state") != "open":
            continue
        if run.get("host") == host:
            pid = int(run.get("pid") or 0)
            if pid and pid != os.getpid() and _alive(pid):
                return True
        else:
            lease = await store.get_ephemeral(f"media-owner:{index.get('session_id')}")
            if lease is not None and lease.get("node") != node_id:
                return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
