"""Room in the archive: the disk's free space and the archive's quota (#18).

``archive_space`` is what healthz reports and what a metric reads (free bytes on the
archive's filesystem, bytes the archive holds, the quota and how much of it is used);
``check_room`` refuses a recorded session the archive has no room for, with a precise
code: ``insufficient_storage`` (the disk: below ``disk_min_free_bytes`` free) or
``archive_quota_full`` (the archive holds more than ``archive_quota_bytes`` less
``disk_min_free_bytes``). The archive's size is measured by walking it, at most once per
``USAGE_TTL_S`` per node (it only matters with a quota).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import InsufficientStorage

USAGE_TTL_S = 30.0
MIB = 1024 * 1024


@dataclass
class ArchiveSpace:
    free_bytes: int | None  # on the archive's filesystem (None: unreadable)
    total_bytes: int | None  # that filesystem's size
    used_bytes: int | None  # what the archive holds (measured only with a quota)
    quota_bytes: int  # archive_quota_bytes (0: none)
    min_free_bytes: int  # disk_min_free_bytes

    @property
    def quota_left(self) -> int | None:
        if not self.quota_bytes or self.used_bytes is None:
            return None
        return max(0, self.quota_bytes - self.used_bytes)

    @property
    def quota_used_ratio(self) -> float | None:
        if not self.quota_bytes or self.used_bytes is None:
            return None
        return self.used_bytes / self.quota_bytes

    @property
    def ok(self) -> bool:
        """Room for a recorded session: the disk and the quota."""
        free_ok = self.free_bytes is None or self.free_bytes >= self.min_free_bytes
        left = self.quota_left
        return free_ok and (left is None or left >= self.min_free_bytes)

    def as_dict(self) -> dict[str, Any]:
        return dict(
            asdict(self),
            ok=self.ok,
            quota_left_bytes=self.quota_left,
            quota_used_ratio=self.quota_used_ratio,
        )


def disk_space(path: Path) -> tuple[int | None, int | None]:
    """(free, total) bytes where the case files go (the nearest existing folder)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return None, None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def archive_bytes(archive: Path) -> int:
    """Bytes of every file under the archive (blocking: walks it)."""
    total = 0
    stack = [archive]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


_usage: dict[Path, tuple[float, int]] = {}  # archive -> (measured at, bytes)


def archive_space(archive: Path, quota_bytes: int, min_free_bytes: int) -> ArchiveSpace:
    """The archive's room now (blocking; the archive's size cached ``USAGE_TTL_S``).
    For a metric too: ``archive_space(data_dir / "archive", quota, min_free).as_dict()``."""
    free, total = disk_space(archive)
    used = None
    if quota_bytes:
        now = time.monotonic()
        cached = _usage.get(archive)
        if cached is None or now - cached[0] > USAGE_TTL_S:
            cached = _usage[archive] = (now, archive_bytes(archive))
        used = cached[1]
    return ArchiveSpace(free, total, used, quota_bytes, min_free_bytes)


def forget_usage(archive: Path) -> None:
    """Measure the archive anew next time (after a purge freed room, in tests)."""
    _usage.pop(archive, None)


async def space(archive: Path, quota_bytes: int, min_free_bytes: int) -> ArchiveSpace:
    return await asyncio.to_thread(archive_space, archive, quota_bytes, min_free_bytes)


async def check_room(archive: Path, quota_bytes: int, min_free_bytes: int) -> None:
    """Refuse (507) a recorded session the archive has no room for."""
    if min_free_bytes <= 0 and not quota_bytes:
        return
    room = await space(archive, quota_bytes, min_free_bytes)
    if room.free_bytes is not None and room.free_bytes < min_free_bytes:
        raise InsufficientStorage(
            "insufficient_storage",
            f"the case file's disk has {room.free_bytes // MIB} MiB free, below "
            f"disk_min_free_bytes ({min_free_bytes // MIB} MiB): a "
            "recorded joint review cannot start; ask the operator to free space",
        )
    left = room.quota_left
    if left is not None and left < min_free_bytes:
        raise InsufficientStorage(
            "archive_quota_full",
            f"the archive holds {room.used_bytes} bytes of its archive_quota_bytes "
            f"({quota_bytes}); {left} bytes left, below disk_min_free_bytes "
            f"({min_free_bytes}): a recorded joint review cannot start; ask the operator "
            "to raise the quota or purge what retention allows",
        )
