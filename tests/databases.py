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

import ast
import asyncio
import functools
import inspect
import os
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from signaling.history import migrate

from .postgres import Cluster, shared_cluster

MODES = ("sqlite", "postgres")
MODE = os.environ.get("JR_TEST_DATABASE", "sqlite").strip().lower() or "sqlite"
if MODE not in MODES:
    raise RuntimeError(f"JR_TEST_DATABASE={MODE!r}: must be one of {', '.join(MODES)}")
TEMPLATE = "jr_migrated"
# Databases made ahead by a worker thread: making one (a copy of the template) takes
# 0.1-0.5 s on a busy machine, which a test then does not wait for; drops go there too.
SPARES = 2
WAIT_S = 120.0


def on_postgres() -> bool:
    return MODE == "postgres"


def deployment(data_dir: Path, redis_url: str) -> str:
    """Nodes on one Redis are one deployment; a node without Redis is its data dir's."""
    return f"redis:{redis_url}" if redis_url else f"dir:{Path(data_dir).resolve()}"


class _Maker:
    """The worker thread that makes (and drops) the tests' databases, over one
    connection of its own."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.jobs: queue.Queue[list[str] | None] = queue.Queue()  # []: make one
        self.spares: queue.Queue[str | BaseException] = queue.Queue()
        cluster.create_database(TEMPLATE)
        with ThreadPoolExecutor(1) as pool:  # callers may be inside a running event loop
            # jointreview migrate's own code; it disposes of its engine: a template
            # must have no one connected when it is copied.
            pool.submit(asyncio.run, migrate.upgrade(cluster.url(TEMPLATE))).result()
        self.thread = threading.Thread(target=self._work, name="test-databases", daemon=True)
        self.thread.start()
        for _ in range(SPARES):
            self.jobs.put([])

    def _work(self) -> None:
        loop = asyncio.new_event_loop()
        url = self.cluster.url("postgres").replace("postgresql+asyncpg", "postgresql")
        conn = loop.run_until_complete(asyncpg.connect(url))
        while (job := self.jobs.get()) is not None:
            try:
                if job:  # FORCE: an engine a test forgot must not keep it alive
                    for name in job:
                        loop.run_until_complete(
                            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                        )
                else:
                    # FILE_COPY: copies the files (the default writes them all to WAL).
                    name = f"t_{uuid.uuid4().hex[:12]}"
                    sql = f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE} STRATEGY FILE_COPY'
                    loop.run_until_complete(conn.execute(sql))
                    self.spares.put(name)
            except BaseException as exc:  # handed to the test that waits for a database
                self.spares.put(exc)
        loop.run_until_complete(conn.close())
        loop.close()

    def take(self) -> str:
        self.jobs.put([])  # the next one
        got = self.spares.get(timeout=WAIT_S)
        if isinstance(got, BaseException):
            raise RuntimeError("making a test database failed") from got
        return got

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(WAIT_S)


_lock = threading.Lock()
_maker: _Maker | None = None
_by_key: dict[str, str] = {}  # deployment -> database name
_test_made: list[str] | None = None  # databases made while a test runs (None: between tests)


def database_url(data_dir: Path, redis_url: str = "") -> str:
    """The record's URL for a node of this deployment: '' (SQLite in ``data_dir``) unless
    the tests run on PostgreSQL, then the deployment's database, made on first use."""
    global _maker
    if not on_postgres():
        return ""
    key = deployment(data_dir, redis_url)
    cluster = shared_cluster()
    with _lock:
        name = _by_key.get(key)
        if name is None:
            if _maker is None:
                _maker = _Maker(cluster)
            name = _by_key[key] = _maker.take()
            if _test_made is not None:
                _test_made.append(name)
    return cluster.url(name)


def per_test() -> Iterator[None]:
    """Around each test (an autouse fixture): its databases are dropped after it."""
    global _test_made
    _test_made = []
    try:
        yield
    finally:
        made, _test_made = _test_made, None
        with _lock:
            for key in [k for k, name in _by_key.items() if name in made]:
                del _by_key[key]
            if made and _maker is not None:
                _maker.jobs.put(made)


def stop() -> None:
    """At the end of the session, before the cluster stops."""
    global _maker
    with _lock:
        maker, _maker = _maker, None
    if maker is not None:
        maker.stop()


# -- which tests build an app or a server (the ``record`` marker) ------------------------

# A test module that names one of these builds apps or servers; so does one that imports
# from a helper module (tests/calls.py, ...) a function or class that names one, and a
# test that uses a fixture (directly or through others) whose function names one.
BUILDERS = re.compile(r"\b(make_config|ServerProcess|create_app|server_factory)\b")
DEFINES_THEM = Path(__file__).with_name("conftest.py")  # where make_config lives


@functools.cache
def _parsed(module: Path) -> tuple[str, ast.Module]:
    text = module.read_text(encoding="utf-8")
    return text, ast.parse(text)


def _helper_imports(module: Path, tree: ast.Module) -> Iterator[tuple[Path, str]]:
    """(helper module, name) for each ``from .helper import name`` of the tests."""
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        if node.level == 1:
            helper = module.parent / f"{node.module}.py"
        elif node.level == 0 and node.module.startswith("tests."):
            helper = DEFINES_THEM.parent.joinpath(*node.module.split(".")[1:]).with_suffix(".py")
        else:
            continue
        if helper.is_file() and helper != DEFINES_THEM:
            yield from ((helper, alias.name) for alias in node.names)


@functools.cache
def builds_apps(module: Path, name: str = "") -> bool:
    """Whether ``module`` (or only its top-level ``name``) builds an app or a server."""
    text, tree = _parsed(module)
    if not name:
        if BUILDERS.search(text):
            return True
        return any(builds_apps(h, n) for h, n in _helper_imports(module, tree))
    for node in tree.body:
        defines = getattr(node, "name", None) == name
        if defines and BUILDERS.search(ast.get_source_segment(text, node) or ""):
            return True
    return any(n == name and builds_apps(h, n) for h, n in _helper_imports(module, tree))


@functools.cache
def _function_builds(func: Callable[..., Any]) -> bool:
    try:
        return bool(BUILDERS.search(inspect.getsource(func)))
    except (OSError, TypeError):
        return False


def _fixtures_build(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)  # the item's whole fixture closure
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(_function_builds(d.func) for group in defs for d in group)


def mark_record_tests(items: list[pytest.Item]) -> None:
    """Mark ``record`` every test that builds an app or a server: those whose record
    JR_TEST_DATABASE moves (scripts/test runs them on PostgreSQL too)."""
    for item in items:
        if builds_apps(Path(item.path)) or _fixtures_build(item):
            item.add_marker(pytest.mark.record)
