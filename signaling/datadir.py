"""The data directory of a node: one owner at a time, closed to other local users, and
the secrets that live beside the store.

- **The lock** (``state/server.lock``, an ``flock``): a single node's in-memory store is
  one journal that only one process may append to. ``serve`` takes the lock before the
  store opens and refuses to start when another process holds it, naming that process
  (its pid, host and start time are written into the lock file). ``jointreview export``
  takes it too, to know whether a server runs. With Redis the store is Redis's and
  several nodes may share the archive directory, so no lock is taken.
- **Modes**: the server runs with umask 077; at start the data dir, ``state/`` and
  ``archive/`` are made 0700, and what an older version left readable is tightened
  (``state/`` and the secrets: directories 0700, files 0600; ``archive/``: one walk).
- **The replay grant key** of a single node lives in ``<data_dir>/replay_grant_key``
  (0600), not in the journal: a journal copied for a backup or a support ticket must not
  let anyone forge replay links. With Redis it stays in Redis, the secret store every
  node shares.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import IO

LOCK = "server.lock"
GRANT_KEY_FILE = "replay_grant_key"
SECRET_FILES = ("jwt_secret", GRANT_KEY_FILE)


class DataDirBusy(Exception):
    """Another process owns the data directory; the message names it."""


def hold_data_dir(data_dir: Path) -> IO[str] | None:
    """Take ``<data_dir>/state/server.lock`` for this process and write who holds it.
    None when another process holds it (then nothing in the file is changed)."""
    path = data_dir / "state" / LOCK
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Opened without truncating: the holder's own details must survive a failed attempt.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fh = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}
    fh.write(json.dumps(holder) + "\n")
    fh.flush()
    return fh


# In archive/: its tree was made private once (files and folders 0600/0700).
PRIVATE_MARKER = ".private"


def holder_of(data_dir: Path) -> str:
    """Who holds the data directory's lock, as the lock file says (for a message)."""
    try:
        info = json.loads((data_dir / "state" / LOCK).read_text(encoding="utf-8"))
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(info["started_at"]))
        return f"pid {info['pid']} on {info['host']}, started {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it did not say which)"


def take_data_dir(data_dir: Path) -> IO[str]:
    """The lock, or ``DataDirBusy`` naming its holder."""
    lock = hold_data_dir(data_dir)
    if lock is None:
        raise DataDirBusy(
            f"the data directory {data_dir.resolve()} is in use by {holder_of(data_dir)}; "
            "only one server may use it (stop that one, or give this one another --data-dir)"
        )
    return lock


def _tighten(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & ~mode:
            path.chmod(stat.S_IMODE(st.st_mode) & mode)


def tighten_tree(root: Path) -> int:
    """Directories 0700 and files 0600 (at most) under ``root``; returns entries seen.
    Symbolic links are not followed."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        _tighten(here, 0o700)
        seen += 1
        for name in filenames:
            _tighten(here / name, 0o600)
            seen += 1
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
    return seen


def secure_data_dir(data_dir: Path, single_node: bool = True) -> None:
    """Create the data dir, ``state/`` (single node only: with Redis nothing uses it) and
    ``archive/`` 0700, and close to other local users what an older version (or a server
    run without umask 077) left open."""
    made = (data_dir, data_dir / "state") if single_node else (data_dir,)
    for path in (*made, data_dir / "archive"):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        _tighten(path, 0o700)
    for name in SECRET_FILES:
        _tighten(data_dir / name, 0o600)
    tighten_tree(data_dir / "state")
    # The archive grows for years (and is shared by nodes): walk it once, the first start
    # after an upgrade. Everything written since is private already (umask 077).
    marker = data_dir / "archive" / PRIVATE_MARKER
    if not marker.exists():
        tighten_tree(data_dir / "archive")
        marker.touch(mode=0o600)


def ensure_grant_key(data_dir: Path) -> bytes:
    """The single node's replay grant key, made once into a 0600 file."""
    path = data_dir / GRANT_KEY_FILE
    with contextlib.suppress(FileNotFoundError, ValueError):
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(key) >= 32:
            return key
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return key
