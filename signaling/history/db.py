"""Opening the record's database: one async engine per URL, set up for its kind (and,
on SQLite, a plain engine for the writer's thread).

``sqlite+aiosqlite:///<path>`` (the embedded default: one file in ``data_dir``, in WAL
mode so readers never wait for the writer) or ``postgresql+asyncpg://...`` (several nodes).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE = "sqlite+aiosqlite"
POSTGRES = "postgresql+asyncpg"
BUSY_TIMEOUT_MS = 10_000  # another connection's write in progress: wait this long


class BadDatabaseURL(ValueError):
    pass


def default_url(data_dir: Path) -> str:
    """The embedded default: ``<data_dir>/history.sqlite3``."""
    return f"{SQLITE}:///{Path(data_dir).resolve() / 'history.sqlite3'}"


def url_of(database_url: str, data_dir: Path) -> str:
    """The URL a node uses: the setting ``database_url``, or SQLite in ``data_dir``."""
    return database_url or default_url(data_dir)


def kind_of(url: str) -> str:
    """``sqlite`` or ``postgresql``; any other driver is refused."""
    drivername = sa.make_url(url).drivername
    if drivername == SQLITE:
        return "sqlite"
    if drivername == POSTGRES:
        return "postgresql"
    raise BadDatabaseURL(
        f"database_url must start with {SQLITE}:/// or {POSTGRES}://, not {drivername}://"
    )


def _dumps(value: Any) -> str:
    # Names and chat in Chinese stay readable (and smaller) in the database.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",  # with WAL: durable at each checkpoint, never corrupt
        "PRAGMA foreign_keys=ON",
        f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    ):
        cursor.execute(pragma)
    cursor.close()


def _private_file(path: Path) -> None:
    """The record is the service's alone, whatever the umask of whoever starts it:
    SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            each.chmod(0o600)


def make_engine(url: str) -> AsyncEngine:
    kind = kind_of(url)
    if kind == "sqlite":
        database = sa.make_url(url).database
        if database and database != ":memory:":
            _private_file(Path(database))
    engine = create_async_engine(url, json_serializer=_dumps, pool_pre_ping=kind != "sqlite")
    if kind == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def make_writer_engine(engine: AsyncEngine) -> sa.Engine:
    """SQLite's writer: the same file through the plain ``sqlite3`` driver, used by one
    thread only (``writer.Writer``). A transaction runs there whole, instead of one hop
    to aiosqlite's thread and back per statement."""
    url = engine.url.set(drivername="sqlite+pysqlite")
    # One writer thread, but not the one that made the connection pool (any thread may
    # dispose of it): the connection is never used by two threads at once.
    writer = sa.create_engine(
        url, json_serializer=_dumps, connect_args={"check_same_thread": False}
    )
    sa.event.listen(writer, "connect", _sqlite_pragmas)
    return writer
