"""The record's schema versions (Alembic): upgrade, what a database is at, the start check.

The migrations ship inside the package (``migrations/``; no alembic.ini to find): the
code knows its ``head()``. At start a node calls ``check(url)``: a current database
passes; an empty or older SQLite file (the embedded default) is upgraded on the spot;
PostgreSQL, shared by several nodes, is upgraded only by ``jointreview migrate``; and a
database at a revision this code does not know (written by a newer jointreview) is
refused: an older node must never write into a newer schema.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from .db import kind_of, make_engine

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaError(RuntimeError):
    """The database's schema is not the one this code needs; the message says what to do."""


def alembic_config(url: str = "") -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None
    return rev


def known(rev: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    return any(r.revision == rev for r in script.walk_revisions())


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


async def current(url: str) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    finally:
        await engine.dispose()


def _upgrade(conn: Connection, cfg: AlembicConfig, target: str = "head") -> None:
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, target)


async def upgrade(url: str, target: str = "head") -> tuple[str | None, str]:
    """Upgrade the database to ``head()`` (or an older ``target``, for a benchmark's
    baseline); the revisions before and after."""
    before = await current(url)
    if before is not None and not known(before):
        raise SchemaError(_too_new(before))
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, alembic_config(url), target)
    finally:
        await engine.dispose()
    return before, head() if target == "head" else target


def _too_new(rev: str) -> str:
    return (
        f"the record's database is at revision {rev}, which this jointreview does not know "
        f"(it knows up to {head()}): a newer jointreview migrated it. Upgrade jointreview "
        "on this node to that version (its `jointreview migrate` prints the revision it "
        "brings); an older node must not write into a newer database"
    )


async def check(url: str) -> str:
    """At start: the database is at ``head()`` when this returns (its revision), or
    ``SchemaError`` says why not and what to run."""
    rev = await current(url)
    if rev == head():
        return rev
    if rev is not None and not known(rev):
        raise SchemaError(_too_new(rev))
    if kind_of(url) == "sqlite":
        # The embedded default: one node owns the file; nothing to run by hand.
        _, after = await upgrade(url)
        return after
    at = "has no schema yet" if rev is None else f"is at revision {rev}"
    raise SchemaError(
        f"the record's database {at}; this jointreview needs revision {head()}. "
        "Run `jointreview migrate` (with the same database_url) once, then start the nodes"
    )


def describe(rev: str | None) -> str:
    return rev if rev is not None else "(empty)"
