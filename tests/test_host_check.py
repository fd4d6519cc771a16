"""The node under the systemd unit's address-family restriction (issue #17), applied for
real by tests/address_families.py (systemd's own mechanism, a seccomp filter):

- with the families the unit used to allow (no AF_NETLINK) and no media_listen_ips,
  ``jointreview serve`` stops at once with exit status 2 and a message naming AF_NETLINK
  and media_listen_ips, instead of starting and failing every call's ICE gathering;
- under the families deploy/jointreview.service allows now, or with media_listen_ips
  given, the node starts and a call's video gets through its SFU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bench.bot import Bot
from bench.pattern_media import PatternVideoTrack
from signaling.auth import TokenService
from signaling.config import Config

from .calls import until
from .conftest import SECRET, ServerProcess, auth, wait_port

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "jointreview.service"
WITHOUT_NETLINK = ["AF_UNIX", "AF_INET", "AF_INET6"]


def unit_families() -> list[str]:
    [line] = [x for x in UNIT.read_text().splitlines() if x.startswith("RestrictAddressFamilies=")]
    return line.split("=", 1)[1].split()


def restricted(server: ServerProcess, families: list[str]) -> subprocess.Popen[bytes]:
    """``jointreview serve`` as ServerProcess runs it, under the families' restriction;
    its output goes to the server's log."""
    args = [sys.executable, "-m", "tests.address_families", *families, "--"]
    args += [sys.executable, "-m", "jointreview.cli", "serve"]
    args += ["--port", str(server.port), "--data-dir", str(server.data_dir)]
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**server.env, "PYTHONPATH": os.pathsep.join(path)}
    server.data_dir.parent.mkdir(parents=True, exist_ok=True)
    with server.log.open("ab") as log:
        server.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=log)
    return server.proc


def test_without_netlink_the_node_stops_and_says_what_to_change(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.env.pop("JR_MEDIA_LISTEN_IPS", None)
    assert restricted(server, WITHOUT_NETLINK).wait(120) == 2, server.log.read_text()
    err = server.log.read_text()
    assert "Traceback" not in err
    assert "[Errno 97]" in err, err  # the real failure, from the real restriction
    assert "AF_NETLINK" in err and "media_listen_ips" in err, err


@pytest.mark.parametrize(
    ("families", "listen_ips"),
    [
        pytest.param(unit_families(), "", id="the-shipped-unit"),
        pytest.param(WITHOUT_NETLINK, '["127.0.0.1"]', id="no-netlink-but-listen-ips"),
    ],
)
async def test_under_the_restriction_a_call_gets_through(
    tmp_path: Path, families: list[str], listen_ips: str
) -> None:
    env = {"JR_MEDIA_LISTEN_IPS": listen_ips} if listen_ips else {}
    server = ServerProcess(tmp_path / "data", env=env)
    if not listen_ips:
        server.env.pop("JR_MEDIA_LISTEN_IPS", None)
    restricted(server, families)
    tokens = TokenService(Config(data_dir=tmp_path, jwt_secret=SECRET))
    people: list[Bot] = []
    try:
        wait_port(server.port, proc=server.proc)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{server.url}/api/cases/UNIT-1/sessions",
                json={},
                headers=auth(tokens.issue(sub="clerk-01", role="clerk")),
            ) as res,
        ):
            sid = (await res.json())["session_id"]
        for n in (1, 2):
            people.append(Bot(server.url, tokens.issue(sub=f"clerk-0{n}", role="clerk")))
            await people[-1].connect()
            await people[-1].join(sid)
        await people[0].publish("camera", PatternVideoTrack(1))
        await until(lambda: people[1].receiving(1), timeout=20, what="video through the SFU")
    finally:
        for p in people:
            await p.close()
        server.stop()
