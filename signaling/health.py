"""What ``/healthz`` checks: the state store, the data dir (writable, free space), media.

A node that cannot write says so: a full or read-only data dir, or a store that does not
answer, makes the node ``degraded`` (503), with the failing part named.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Literal

from .media_bridge import MediaBridge
from .models import DataDirCheck, HealthChecks, MediaCheck, StoreCheck
from .state import Store

# A check that does not answer within this is a failed check, not a hung healthz.
CHECK_TIMEOUT_S = 5.0


async def store_check(store: Store) -> StoreCheck:
    try:
        doc = await asyncio.wait_for(store.health(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return StoreCheck(ok=False, kind=store.kind, error="no answer within 5 s")
    return StoreCheck(ok=bool(doc.get("ok")), kind=store.kind, error=doc.get("error"))


def _probe(data_dir: Path, min_free: int) -> DataDirCheck:
    """Write (and remove) a small file; read the free space. Runs in a thread."""
    writable, error = True, None
    probe = data_dir / f".healthz-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok\n")
        finally:
            os.close(fd)
    except OSError as exc:
        writable, error = False, f"{data_dir} is not writable: {exc.strerror or exc}"
    finally:
        probe.unlink(missing_ok=True)
    try:
        st = os.statvfs(data_dir)
        free = st.f_bavail * st.f_frsize
    except OSError as exc:
        free, error = 0, error or f"{data_dir}: {exc.strerror or exc}"
    if writable and free < min_free:
        error = f"{free} bytes free in {data_dir}, below disk_min_free_bytes ({min_free})"
    ok = writable and free >= min_free
    return DataDirCheck(
        ok=ok, writable=writable, free_bytes=free, min_free_bytes=min_free, error=error
    )


async def data_dir_check(data_dir: Path, min_free: int) -> DataDirCheck:
    try:
        return await asyncio.wait_for(asyncio.to_thread(_probe, data_dir, min_free), 5.0)
    except TimeoutError:
        error = f"{data_dir} did not answer within 5 s"
        return DataDirCheck(
            ok=False, writable=False, free_bytes=0, min_free_bytes=min_free, error=error
        )


def media_check(bridge: MediaBridge | None) -> MediaCheck:
    media = bridge.media if bridge is not None else None
    if media is None:
        return MediaCheck(ok=True, enabled=False)  # turned off: nothing to be unwell
    recorder = media.recorder
    state: Literal["off", "idle", "running", "stopped"] = "off"
    if recorder is not None:
        state = recorder.writer_state()  # its writer thread must live on once started
    error = None
    if state == "stopped":
        error = "the recorder's writer thread has stopped: sessions are not being recorded"
    return MediaCheck(
        ok=error is None, enabled=True, rooms=len(media.rooms), recorder=state, error=error
    )


async def checks(
    store: Store, data_dir: Path, min_free: int, bridge: MediaBridge | None
) -> HealthChecks:
    s, d = await asyncio.gather(store_check(store), data_dir_check(data_dir, min_free))
    return HealthChecks(store=s, data_dir=d, media=media_check(bridge))
