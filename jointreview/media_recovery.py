"""Recordings a crash left open (the node's process, or one of its media workers, died
while writing): repaired before they are recorded into again, and sealed if their session
ended meanwhile.

A whole node that dies leaves its open recordings to its own next start, unless the
archive is shared: then the node that takes one of its sessions over (the one that won
the takeover claim) repairs that node's runs of the session at once (``repair_lost``),
holding ``recording-repair:<session>`` meanwhile, and the session's next recorder waits
for it (``repaired``), so the case file is complete whether the dead node returns or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from recording import archive, paths, track_index
from signaling.errors import ServiceError
from signaling.recording_control import RecordingControl
from signaling.state import Store

log = logging.getLogger(__name__)

REPAIR_S = 60.0  # the longest a dead node's repair holds the session's next recording up
POLL_S = 0.1


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


def repair_key(session_id: str) -> str:
    return f"recording-repair:{session_id}"


async def claim_repair(
    store: Store, recording: RecordingControl, session_id: str, node: str
) -> Path | None:
    """Did the dead ``node`` leave a recording of the session open in this (shared)
    archive? Then claim its repair, before the pages are told (their new host's recorder
    waits for it): the session's directory; None if there is nothing to repair here."""
    case_id = await recording.case_of(session_id)
    if case_id is None:
        return None
    try:
        directory = paths.session_dir(recording.archive_dir, case_id, session_id)
        index = await asyncio.to_thread(track_index.load, directory)
    except (OSError, ValueError):
        return None
    runs = [] if index is None else index.get("runs", [])
    if not any(r.get("state") == "open" and r.get("node") == node for r in runs):
        return None
    if not await store.create_ephemeral(repair_key(session_id), {"node": node}, REPAIR_S):
        return None  # another node repairs it
    return directory


async def repair_lost(
    store: Store, recording: RecordingControl, session_id: str, node: str, directory: Path
) -> None:
    """Repair the runs the dead ``node`` left open in the session's directory (claimed
    with ``claim_repair``), say so in the timeline, and let the next recorder start."""
    try:
        index = await asyncio.to_thread(track_index.load, directory)
        if index is not None:
            result = await asyncio.to_thread(archive.recover_session, directory, index, node)
            log.warning("recovered the recording of %s left open by %s", session_id, node)
            with contextlib.suppress(ServiceError):
                await recording.recovered(result)
    except (OSError, ValueError) as exc:
        log.error("repairing the recording of %s left by %s failed: %s", session_id, node, exc)
    finally:
        await store.delete_ephemeral(repair_key(session_id))


async def repaired(store: Store, session_id: str) -> None:
    """Wait while a dead node's recording of the session is being repaired (another
    node may hold the claim: the store is polled)."""
    for _ in range(int(REPAIR_S / POLL_S)):
        if await store.get_ephemeral(repair_key(session_id)) is None:
            return
        await asyncio.sleep(POLL_S)
