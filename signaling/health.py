"""What ``/healthz`` checks: the state store, the data dir (writable, free space), media;
and, for an admin, the process's figures (memory, descriptors, threads, tasks).

A node that cannot write says so: a full or read-only data dir, or a store that does not
answer, makes the node ``degraded`` (503), with the failing part named.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

from .media_port import MediaPort
from .models import DataDirCheck, HealthChecks, MediaCheck, ProcessFigures, StoreCheck
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


async def checks(
    store: Store, data_dir: Path, min_free: int, media: MediaPort | None
) -> HealthChecks:
    s, d = await asyncio.gather(store_check(store), data_dir_check(data_dir, min_free))
    m = media.health() if media is not None else MediaCheck(ok=True, enabled=False)
    return HealthChecks(store=s, data_dir=d, media=m)


def process_figures() -> ProcessFigures:
    """This process's resident memory, open descriptors and threads (/proc/self) and the
    running loop's tasks. Cheap: a soak reads it every 10 s."""
    rss = threads = fds = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "VmRSS":
                rss = int(value.split()[0]) * 1024  # kB
            elif key == "Threads":
                threads = int(value)
    with contextlib.suppress(OSError):
        fds = len(os.listdir("/proc/self/fd")) - 1  # less the one listdir opened
    tasks = len(asyncio.all_tasks())
    return ProcessFigures(pid=os.getpid(), rss_bytes=rss, fds=fds, threads=threads, tasks=tasks)
