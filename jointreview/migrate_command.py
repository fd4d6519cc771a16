"""``jointreview migrate``: bring the record's database (``database_url``, or SQLite in
the data directory) to the schema this version needs, and say from which revision. With
``--from-store``: then copy the records the live store already holds (the single node's
journal, or Redis) into it, verified (``signaling.history.backfill``)."""

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
    p.add_argument("--redis-url", dest="redis_url", help="the live store, when nodes share Redis")
    p.add_argument(
        "--from-store",
        action="store_true",
        help="also copy every case's events from the live store (journal or Redis) into it",
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


def copy(config: Config) -> int:
    from signaling.datadir import hold_data_dir

    if config.redis_url:
        return asyncio.run(_copy(config, url_of_store=config.redis_url))
    lock = hold_data_dir(config.data_dir)
    if lock is None:
        print("jointreview: a server runs on this data directory: stop it first", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_copy(config, url_of_store=""))
    finally:
        lock.close()


async def _copy(config: Config, url_of_store: str) -> int:
    from tqdm import tqdm

    from signaling.history import backfill
    from signaling.history.db import url_of
    from signaling.history.repo import History
    from signaling.state import open_store

    store = await open_store(url_of_store, config.data_dir)
    history = await History.open(url_of(config.database_url, config.data_dir))
    try:
        cases = len(await backfill.cases_in(store))
        with tqdm(total=cases, unit="case", desc="copying", file=sys.stderr) as bar:
            report = await backfill.copy_store(
                store, history, config.data_dir / "archive", bar.update
            )
    finally:
        await history.close()
        await store.close()
    print(
        f"jointreview: {report.cases} cases, {report.events} events in the store; "
        f"{report.new} filed now; {report.sealed} sealed case files match their manifests"
    )
    for problem in report.problems:
        print(f"  problem: {problem}", file=sys.stderr)
    return 1 if report.problems else 0


def main(args: argparse.Namespace) -> int:
    flags = {"data_dir": args.data_dir, "database_url": args.database_url}
    flags["redis_url"] = args.redis_url
    config = load_config(flags=flags, config_file=args.config)
    code = run(config)
    if code == 0 and args.from_store:
        code = copy(config)
    return code
