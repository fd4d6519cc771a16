"""``jointreview migrate``: bring the record's database (``database_url``, or SQLite in
the data directory) to the schema this version needs, and say from which revision."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from signaling.config import Config, load_config

# SQLAlchemy and Alembic are imported when the command runs: building the parser (every
# `jointreview` command does) must not pay for them.


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "migrate", help="upgrade the record's database (history) to this version's schema"
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--data-dir", dest="data_dir", help="where the SQLite record lives")
    p.add_argument(
        "--database-url",
        dest="database_url",
        help="postgresql+asyncpg://... (default: the setting; empty: SQLite in the data dir)",
    )


def shown(url: str) -> str:
    """The URL without its password, for the terminal."""
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def run(config: Config) -> int:
    import sqlalchemy as sa

    from signaling.history import migrate
    from signaling.history.db import url_of

    url = url_of(config.database_url, config.data_dir)
    try:
        before, after = asyncio.run(migrate.upgrade(url))
    except migrate.SchemaError as exc:
        print(f"jointreview: {exc}", file=sys.stderr)
        return 1
    except (OSError, sa.exc.SQLAlchemyError) as exc:
        print(f"jointreview: cannot reach the record at {shown(url)}: {exc}", file=sys.stderr)
        return 1
    was, now = migrate.describe(before), migrate.describe(after)
    change = f"{now}, already the newest" if before == after else f"{was} -> {now}"
    print(f"jointreview: record at {shown(url)}: revision {change} (head {migrate.head()})")
    return 0


def main(args: argparse.Namespace) -> int:
    flags = {"data_dir": args.data_dir, "database_url": args.database_url}
    return run(load_config(flags=flags, config_file=args.config))
