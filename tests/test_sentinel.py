"""High availability through Redis Sentinel, against real processes this module starts:
a primary, two replicas and three sentinels (``redis-sentinel``, or ``redis-server
--sentinel``), and a real ``jointreview serve`` on a ``redis+sentinel://`` URL.

The primary is killed with SIGKILL: while the sentinels promote a replica, requests fail
fast with JSON 503 ``store_unavailable`` (none hangs); afterwards the node carries on by
itself (requests, and rings to idle inbox sockets through its pub/sub connection); and
nothing acknowledged before the kill is lost: the node runs with
``redis_wait_replicas = 1``, so a filed write is answered only once a replica holds it.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from signaling.auth import TokenService
from signaling.config import Config

from .conftest import SECRET, auth, free_port, wait_port
from .test_faults import Factory

SERVICE = "jr"


class RedisHA:
    """One primary, two replicas, three sentinels, on free ports of 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server is not installed: run scripts/setup --test")
        self.server = server
        sentinel = shutil.which("redis-sentinel")
        self.sentinel_cmd = [sentinel] if sentinel else [server]
        self.sentinel_flag = [] if sentinel else ["--sentinel"]
        self.workdir = workdir
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.data_ports = [free_port() for _ in range(3)]
        self.sentinel_ports = [free_port() for _ in range(3)]

    def _redis(self, port: int, *extra: str) -> None:
        workdir = self.workdir / str(port)
        workdir.mkdir()
        args = [self.server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(workdir), *extra]
        self.procs[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(port, proc=self.procs[port])

    def start(self) -> None:
        primary, *replicas = self.data_ports
        self._redis(primary)
        for port in replicas:
            self._redis(port, "--replicaof", "127.0.0.1", str(primary))
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 2\n"
            )
            self.procs[port] = subprocess.Popen(
                [*self.sentinel_cmd, str(conf), *self.sentinel_flag],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_port(port, proc=self.procs[port])
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Replicas in sync, every sentinel knowing both replicas and the others."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._ready():
                return
            time.sleep(0.2)
        raise AssertionError("the sentinels never saw the whole group")

    def _ready(self) -> bool:
        for port in self.data_ports[1:]:
            info = redis.Redis(port=port).info("replication")
            if info.get("master_link_status") != "up":
                return False
        for port in self.sentinel_ports:
            s = redis.Redis(port=port, decode_responses=True)
            replicas = s.execute_command("SENTINEL", "REPLICAS", SERVICE)
            others = s.execute_command("SENTINEL", "SENTINELS", SERVICE)
            if len(replicas) < 2 or len(others) < 2:
                return False
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def primary_port(self) -> int:
        s = redis.Redis(port=self.sentinel_ports[0], decode_responses=True)
        _, port = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(10)


@pytest.fixture
def redis_ha(tmp_path: Path) -> Iterator[RedisHA]:
    workdir = tmp_path / "redis-ha"
    workdir.mkdir()
    ha = RedisHA(workdir)
    try:
        ha.start()
        yield ha
    finally:
        ha.stop()


async def _new_session(
    http: aiohttp.ClientSession, url: str, clerk: str, case: str
) -> tuple[int, Any]:
    async with http.post(f"{url}/api/cases/{case}/sessions", json={}, headers=auth(clerk)) as res:
        assert res.content_type == "application/json", (res.status, await res.text())
        return res.status, await res.json()


@pytest.mark.timeout(240)
async def test_a_killed_primary_is_replaced_and_the_node_carries_on(
    server_factory: Factory, redis_ha: RedisHA, tmp_path: Path
) -> None:
    env = {"JR_REDIS_WAIT_REPLICAS": "1", "JR_REDIS_TIMEOUT_S": "2"}
    node = server_factory(redis_url=redis_ha.url, env=env)
    t = TokenService(Config(data_dir=tmp_path, jwt_secret=SECRET))
    clerk = t.issue(sub="clerk-01", role="clerk")
    reviewer = t.issue(sub="rev-ha-1", role="reviewer", dept="city-amr", level="city")
    acknowledged: list[str] = []
    # The bound every request must answer within, failover or not.
    bounded = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=bounded) as http:
        ws = await http.ws_connect(f"{node.url.replace('http', 'ws')}/ws?token={reviewer}")
        assert (await ws.receive_json(timeout=10))["type"] == "welcome"
        for i in range(20):
            status, body = await _new_session(http, node.url, clerk, f"HA-{i}")
            assert status == 201, body
            acknowledged.append(body["session_id"])

        old = redis_ha.primary_port()
        redis_ha.kill(old)

        refused = 0
        served_after = 0
        deadline = time.monotonic() + 90
        n = 0
        while served_after < 3:
            assert time.monotonic() < deadline, "the node never carried on after the failover"
            n += 1
            status, body = await _new_session(http, node.url, clerk, f"HA-during-{n}")
            if status == 201:
                acknowledged.append(body["session_id"])
                served_after += 1 if redis_ha.primary_port() != old else 0
            else:
                assert status == 503, body
                assert body["error"]["code"] == "store_unavailable", body
                refused += 1
            await asyncio.sleep(0.2)
        assert refused > 0  # the switch was seen (and answered) while it happened
        assert redis_ha.primary_port() != old

        # Nothing acknowledged is lost, on the promoted replica.
        for sid in acknowledged:
            async with http.get(f"{node.url}/api/sessions/{sid}", headers=auth(clerk)) as res:
                assert res.status == 200, (sid, await res.text())
        # The bus followed the new primary: a ring reaches the idle inbox socket.
        sid = acknowledged[-1]
        for _ in range(50):
            async with http.post(
                f"{node.url}/api/sessions/{sid}/invitations",
                json={"dept": "city-amr"},
                headers=auth(clerk),
            ) as res:
                if res.status == 201:
                    iid = (await res.json())["invitation_id"]
                    break
                assert res.status == 503
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("no invitation could be filed after the failover")
        while True:
            msg = await ws.receive_json(timeout=20)
            if msg["type"] == "invitation" and msg["invitation"]["invitation_id"] == iid:
                break
        await ws.close()
    text = node.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
