"""Shared fixtures: a real redis-server, stores of both kinds, app clients, server processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.auth import TokenService
from signaling.config import Config
from signaling.state import MemoryStore, Store
from signaling.state.redis_store import RedisStore

from . import databases
from .postgres import fresh_postgres_url, postgres_cluster, postgres_url, stop_shared_cluster
from .timeouts import new_asyncio_loop, new_uvloop, pytest_timeout_set_timer

# A hook and fixtures: pytest finds them in this module.
__all__ = ["fresh_postgres_url", "postgres_cluster", "postgres_url", "pytest_timeout_set_timer"]

SECRET = "test-secret-" + "x" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# A server starts in ~2 s on a quiet machine; on a loaded one (a shared 2-core CI runner)
# importing and migrating took 14-15 s, and a test failed before it began.
def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port, started by the tests themselves."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run the README's test command")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc=proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The same contract, both implementations."""
    s: Store
    if request.param == "memory":
        s = MemoryStore(tmp_path / "state")
    else:
        url = request.getfixturevalue("redis_url")
        s = await RedisStore.connect(url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield s
    await s.close()


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "jwt_secret": SECRET,
        "port": 0,
        "heartbeat_s": 5.0,
        # The suite must run on a machine with little free disk: the default (512 MiB)
        # would turn healthz and recorded sessions away there (tests of it set their own).
        "disk_min_free_bytes": 16 * 1024 * 1024,
        # The SFU in the test's process, as before media workers: the suite's timing and
        # its reach into app[MEDIA].media stay (tests/test_media_workers.py sets 2).
        "media_workers": 1,
    }
    values.update(overrides)
    if "database_url" not in overrides:  # given (even ''): the test's own choice
        redis_url = str(values.get("redis_url", ""))
        values["database_url"] = databases.database_url(values["data_dir"], redis_url)
    return Config(**values)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def tokens(config: Config) -> TokenService:
    return TokenService(config)


@pytest.fixture
async def client(config: Config) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(config)
    async with TestClient(TestServer(app)) as c:
        yield c


class Tokens:
    """Ready-made identities from the demo directory."""

    def __init__(self, svc: TokenService) -> None:
        self.svc = svc

    def clerk(self, **kw: Any) -> str:
        return self.svc.issue(sub="clerk-01", role="clerk", name="陈晓", **kw)

    def reviewer(
        self, sub: str = "rev-city-amr-1", dept: str = "city-amr", level: str = "city", **kw: Any
    ) -> str:
        return self.svc.issue(sub=sub, role="reviewer", name=sub, dept=dept, level=level, **kw)

    def other_reviewer(self, **kw: Any) -> str:
        return self.reviewer("rev-city-tax-1", "city-tax", "city", **kw)

    def supervisor(self, **kw: Any) -> str:
        return self.svc.issue(sub="sup-01", role="supervisor", **kw)

    def admin(self, **kw: Any) -> str:
        return self.svc.issue(sub="admin", role="admin", **kw)

    def applicant(self, session: str, case: str, **kw: Any) -> str:
        return self.svc.issue(sub="applicant-x", role="applicant", case=case, session=session, **kw)


@pytest.fixture
def tok(tokens: TokenService) -> Tokens:
    return Tokens(tokens)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class ServerProcess:
    """A real ``jointreview serve`` process."""

    def __init__(self, data_dir: Path, redis_url: str = "", env: dict[str, str] | None = None):
        self.port = free_port()
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.env = {
            **os.environ,
            "JR_JWT_SECRET": SECRET,
            "JR_LOG_LEVEL": "warning",
            "JR_DISK_MIN_FREE_BYTES": str(16 * 1024 * 1024),  # as make_config, for small disks
            "JR_MEDIA_WORKERS": "1",  # as make_config
            **(env or {}),
        }
        if "JR_DATABASE_URL" not in self.env:  # given (even ''): the test's own choice
            self.env["JR_DATABASE_URL"] = databases.database_url(data_dir, redis_url)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        args = [
            sys.executable,
            "-m",
            "jointreview.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.redis_url:
            args += ["--redis-url", self.redis_url]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=log)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(15)
        self.proc = None
        return code


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(data_dir: Path | None = None, redis_url: str = "", **kw: Any) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / f"data{len(started)}", redis_url, **kw)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        if server.proc is not None:
            server.stop(signal.SIGKILL)


@pytest.fixture(autouse=True)
def _test_databases() -> Iterator[None]:
    """With JR_TEST_DATABASE=postgres, the databases a test made are dropped after it."""
    if databases.on_postgres():
        yield from databases.per_test()
    else:
        yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "record: builds an app or a server (JR_TEST_DATABASE chooses its record)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    databases.mark_record_tests(items)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    databases.stop()
    stop_shared_cluster()


def pytest_report_header(config: pytest.Config) -> str:
    return f"record database: {databases.MODE} (JR_TEST_DATABASE)"


def flush_redis(url: str) -> None:
    redis.Redis.from_url(url).flushdb()


# The server runs on uvloop unless told otherwise (``event_loop``); the media code also
# supports asyncio's own loop, whose transports it reaches differently
# (media_server/aiortc_adapter.py): the media tests run on both, the rest on uvloop.
BOTH_LOOPS = {"test_media", "test_aiortc_adapter"}


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    module = getattr(item, "module", None)
    if module is not None and module.__name__.rsplit(".", 1)[-1] in BOTH_LOOPS:
        return {"uvloop": new_uvloop, "asyncio": new_asyncio_loop}
    return {"uvloop": new_uvloop}
