"""Which database the record of the apps and servers the tests build lives in.

``JR_TEST_DATABASE=sqlite`` (the default): what the product does without ``database_url``,
a SQLite file in each node's ``data_dir``. ``JR_TEST_DATABASE=postgres``: every app
(``make_config``) and server (``ServerProcess``) a test builds files its record in
PostgreSQL instead, on the session's throwaway cluster (tests/postgres.py), started
lazily the first time one is needed.

One database per deployment, as an operator would set it up: nodes sharing a Redis
share one database (keyed by ``redis_url``), a node on its own has one of its own keyed
by its data dir, so a restarted node finds its record again. A new database is a copy
of a template migrated once per session (``jointreview migrate``'s own code,
signaling/history/migrate.py): a node refuses an unmigrated PostgreSQL. A database
made while a test runs is dropped when it ends (Redis is flushed between tests too);
those made for a module's or the session's fixtures live until the cluster stops.

A test that passes ``database_url`` itself (``""`` included: SQLite in ``data_dir``) or
sets ``JR_DATABASE_URL`` for its server gets exactly that.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from signaling.history import migrate

from .postgres import Cluster, shared_cluster

MODES = ("sqlite", "postgres")
MODE = os.environ.get("JR_TEST_DATABASE", "sqlite").strip().lower() or "sqlite"
if MODE not in MODES:
    raise RuntimeError(f"JR_TEST_DATABASE={MODE!r}: must be one of {', '.join(MODES)}")
TEMPLATE = "jr_migrated"

_lock = threading.Lock()
_template_ready = False
_by_key: dict[str, str] = {}  # deployment -> database name
_test_made: list[str] | None = None  # databases made while a test runs (None: between tests)


def on_postgres() -> bool:
    return MODE == "postgres"


def deployment(data_dir: Path, redis_url: str) -> str:
    """Nodes on one Redis are one deployment; a node without Redis is its data dir's."""
    return f"redis:{redis_url}" if redis_url else f"dir:{Path(data_dir).resolve()}"


def _run(coro: object) -> object:
    # The helpers are called from sync code and from inside running event loops alike.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]


def _ensure_template(cluster: Cluster) -> None:
    global _template_ready
    if _template_ready:
        return
    cluster.create_database(TEMPLATE)
    _run(migrate.upgrade(cluster.url(TEMPLATE)))  # disposes its engine: no one connected
    _template_ready = True


def database_url(data_dir: Path, redis_url: str = "") -> str:
    """The record's URL for a node of this deployment: '' (SQLite in ``data_dir``) unless
    the tests run on PostgreSQL, then the deployment's database, made on first use."""
    if not on_postgres():
        return ""
    key = deployment(data_dir, redis_url)
    cluster = shared_cluster()
    with _lock:
        name = _by_key.get(key)
        if name is None:
            _ensure_template(cluster)
            name = f"t_{uuid.uuid4().hex[:12]}"
            done = cluster.client("createdb", "-T", TEMPLATE, "-E", "UTF8", name)
            if done.returncode != 0:
                raise RuntimeError(f"createdb {name} failed:\n{done.stderr}")
            _by_key[key] = name
            if _test_made is not None:
                _test_made.append(name)
    return cluster.url(name)


def per_test() -> Iterator[None]:
    """Around each test (an autouse fixture): drop the databases it made."""
    global _test_made
    _test_made = []
    try:
        yield
    finally:
        made, _test_made = _test_made, None
        if made:
            with _lock:
                for key in [k for k, name in _by_key.items() if name in made]:
                    del _by_key[key]
            args: list[str] = []
            for name in made:  # FORCE: an engine a test forgot must not keep it
                args += ["-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']
            done = shared_cluster().client("psql", "-d", "postgres", "-q", *args)
            if done.returncode != 0:
                raise RuntimeError(f"dropping {made} failed:\n{done.stderr}")
