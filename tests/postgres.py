"""A real PostgreSQL for the tests: a throwaway cluster they start and stop themselves.

Like the ``redis_url`` fixture in conftest.py: Debian's ``postgresql`` package provides
the binaries (``scripts/setup --test`` installs it), the cluster lives in a temporary
directory, listens on 127.0.0.1 at a free port and is removed at the end of the session.
``initdb`` and ``postgres`` refuse to run as root, and CI runs as root: then the server
runs as the ``postgres`` system user the package creates (else ``nobody``).

``postgres_url`` is the shared server's database; ``fresh_postgres_url`` an empty
database of its own per test, so contract tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Throwaway cluster: durability buys nothing here, and these make start and writes fast.
FAST_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "shared_buffers": "32MB",
    "max_connections": "200",
    "autovacuum": "off",
    "logging_collector": "off",
    "log_min_messages": "warning",
}
SUPERUSER = "postgres"
START_TIMEOUT_S = 60.0


def find_bindir() -> Path:
    """The directory of ``initdb`` (its ``pg_ctl`` and ``postgres`` are beside it).

    PATH first, else Debian's ``/usr/lib/postgresql/<version>/bin``, newest version.
    """
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []

    def version(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/bin$", path)
        return int(match.group(1)) if match else -1

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates += [Path(d) for d in debian]
    for bindir in candidates:
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    pytest.fail(
        "PostgreSQL (initdb, pg_ctl, postgres) is not installed: run the README's test command"
    )


def server_user() -> pwd.struct_passwd | None:
    """Whom the server runs as: ourselves, or an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.fail("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class Cluster:
    """A running throwaway PostgreSQL server."""

    bindir: Path
    root: Path
    port: int
    user: pwd.struct_passwd | None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "sockets"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _as_server_user(self) -> dict[str, Any]:
        # The server's own processes must not run as root; client tools may, but run
        # them the same way so that every file in the directory has one owner.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", HOME=str(self.root))
        kw: dict[str, Any] = {"env": env, "cwd": self.root}
        if self.user is not None:
            kw.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        return kw

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
            **self._as_server_user(),
        )

    def client(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A client tool (``createdb``, ``psql`` ...) over the cluster's unix socket."""
        conn = ("-h", str(self.sockets), "-p", str(self.port), "-U", SUPERUSER)
        return self.run(tool, *conn, *args)

    def start(self) -> None:
        self.sockets.mkdir()
        if self.user is not None:
            for path in (self.root, self.sockets):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        done = self.run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        args += ["-k", str(self.sockets)]
        for name, value in FAST_SETTINGS.items():
            args += ["-c", f"{name}={value}"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, **self._as_server_user()
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        # Listening is not accepting: the server answers "starting up" until recovery ends.
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            ready = self.client("pg_isready", "-d", "postgres", "-t", "1")
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError(f"postgres not ready after {START_TIMEOUT_S}s:\n{self.log.read_text()}")

    def create_database(self, name: str) -> None:
        done = self.client("createdb", "-T", "template0", "-E", "UTF8", name)
        if done.returncode != 0:
            raise RuntimeError(f"createdb {name} failed:\n{done.stderr}")

    def drop_database(self, name: str) -> None:
        # --force: a test that forgot to dispose of its engine must not fail the next one.
        done = self.client("dropdb", "--force", "--if-exists", name)
        if done.returncode != 0:
            raise RuntimeError(f"dropdb {name} failed:\n{done.stderr}")

    def databases(self) -> list[str]:
        done = self.client("psql", "-d", "postgres", "-Atc", "SELECT datname FROM pg_database")
        if done.returncode != 0:
            raise RuntimeError(f"listing databases failed:\n{done.stderr}")
        return done.stdout.split()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        self.proc = None


def start_cluster(port: int) -> Cluster:
    """initdb into a new temporary directory and start a server on ``port``."""
    bindir = find_bindir()
    # Not under pytest's tmp dir: its parents are private to us, and when we are root
    # the server's user must reach its own directory.
    root = Path(tempfile.mkdtemp(prefix="jr-postgres-"))
    cluster = Cluster(bindir=bindir, root=root, port=port, user=server_user())
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


_shared: Cluster | None = None


def shared_cluster() -> Cluster:
    """The session's PostgreSQL server, started on first use (by the contract tests'
    fixtures or, with JR_TEST_DATABASE=postgres, the first app a test builds)."""
    global _shared
    if _shared is None:
        from .conftest import free_port  # conftest imports this module: import late

        _shared = start_cluster(free_port())
    return _shared


def stop_shared_cluster() -> None:
    """At the end of the session (conftest's ``pytest_sessionfinish``)."""
    global _shared
    cluster, _shared = _shared, None
    if cluster is not None:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Cluster:
    """The session's PostgreSQL server, started by the tests themselves."""
    return shared_cluster()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: Cluster) -> str:
    """A SQLAlchemy async URL of a database on the session's PostgreSQL server."""
    postgres_cluster.create_database("jointreview")
    return postgres_cluster.url("jointreview")


@contextlib.contextmanager
def fresh_database(cluster: Cluster) -> Iterator[str]:
    """A new uniquely named empty database on ``cluster`` (its URL), dropped on exit."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    cluster.create_database(name)
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


@pytest.fixture
def fresh_postgres_url(postgres_cluster: Cluster) -> Iterator[str]:
    """A new empty database for this test only (dropped after it)."""
    with fresh_database(postgres_cluster) as url:
        yield url
