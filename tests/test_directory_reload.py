"""The directory reloaded without a restart (signaling/directory_reload.py): by an admin
through the API (others refused, each reload audited), a bad file refused with its
problems and the directory unchanged; and on real nodes sharing Redis, SIGHUP to one
node reaches the other (the bus), and ``jointreview directory reload`` asks a node."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from jointreview import cli
from jointreview.app import create_app
from signaling.appkeys import AUDIT
from tests.conftest import SECRET, Tokens, auth, make_config
from tests.test_nodes import Factory

PACKAGED = Path(__file__).resolve().parent.parent / "signaling" / "directory.toml"
NEW_DEPT = '\n[[departments]]\nid = "city-new"\nlevel = "city"\nname = "市新设局"\n'


def directory_file(tmp_path: Path) -> Path:
    path = tmp_path / "directory.toml"
    shutil.copy(PACKAGED, path)
    return path


async def test_an_admin_reloads_the_directory(tmp_path: Path) -> None:
    path = directory_file(tmp_path)
    config = make_config(tmp_path, directory_file=path)
    from signaling.auth import TokenService

    tok = Tokens(TokenService(config))
    admin, clerk = auth(tok.admin()), auth(tok.clerk())
    async with TestClient(TestServer(create_app(config))) as c:
        r = await c.get("/api/admin/directory", headers=admin)
        view = await r.json()
        assert view["state"]["file"] == str(path) and view["state"]["via"] == "start"
        assert (len(view["departments"]), len(view["users"])) == (5, 10)
        for method, url in (("GET", ""), ("POST", "/reload")):
            r = await c.request(method, f"/api/admin/directory{url}", headers=clerk)
            assert r.status == 403

        path.write_text(path.read_text() + NEW_DEPT)
        r = await c.post("/api/admin/directory/reload", headers=admin)
        done = await r.json()
        assert r.status == 200, done
        assert done["changes"]["departments"] == {
            "added": ["city-new"],
            "removed": [],
            "changed": [],
        }
        assert (done["departments"], done["via"]) == (6, "admin admin")
        # Every holder of the directory sees it: the pages' list, the reviewers' list,
        # and the service (an invitation to the new department is accepted).
        r = await c.get("/ui/departments.json")
        assert "city-new" in [d["id"] for d in (await r.json())["departments"]]
        r = await c.post("/api/cases/DIR-1/sessions", json={"matter": "x"}, headers=clerk)
        sid = (await r.json())["session_id"]
        r = await c.post(
            f"/api/sessions/{sid}/invitations", json={"dept": "city-new"}, headers=clerk
        )
        assert r.status == 201, await r.text()

        path.write_text(path.read_text().replace('level = "city"', 'level = "province"', 1))
        r = await c.post("/api/admin/directory/reload", headers=admin)
        body = await r.json()
        assert r.status == 422 and body["error"]["code"] == "directory_invalid"
        assert body["error"]["details"] == [
            {"problem": "departments[0].level: Input should be 'city' or 'district'"}
        ]
        r = await c.get("/api/admin/directory", headers=admin)
        assert (await r.json())["state"]["departments"] == 6  # unchanged

        trail = c.app[AUDIT]
        await trail.record_now("test.mark", result="ok")
        chain = config.data_dir / "audit" / trail.chain_name
        entries = [json.loads(x) for f in sorted(chain.glob("*.jsonl")) for x in f.open()]
    mine = [e for e in entries if e["action"].startswith("directory.")]
    assert [(e["action"], e["result"], e["actor"]["sub"]) for e in mine] == [
        ("directory.reloaded", "ok", "admin"),
        ("directory.reload_failed", "failed", "admin"),
    ]
    assert mine[0]["object"] == str(path) and mine[0]["address"] == "127.0.0.1"
    assert mine[0]["detail"]["departments"] == "+1 -0 ~0"
    # The specific entry stands for the request: no second, generic one.
    generic = [e for e in entries if e["action"] == "admin.request"]
    assert [e["object"] for e in generic] == ["/api/admin/directory"] * 2  # the two views


def departments_of(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/ui/departments.json", timeout=10) as res:
        return [d["id"] for d in json.load(res)["departments"]]


async def until(check: Any, timeout: float = 20.0) -> None:
    """Poll until ``check()`` holds (a bound, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(check):
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


async def test_sighup_on_one_node_reaches_the_other(
    server_factory: Factory, redis_url: str, tmp_path: Path
) -> None:
    path = directory_file(tmp_path)
    env = {"JR_DIRECTORY_FILE": str(path), "JR_MEDIA_ENABLED": "false", "JR_NODE_ID": ""}
    a = server_factory(redis_url=redis_url, env={**env, "JR_NODE_ID": "dir-a"})
    b = server_factory(redis_url=redis_url, env={**env, "JR_NODE_ID": "dir-b"})
    assert "city-new" not in departments_of(b.url)

    path.write_text(path.read_text() + NEW_DEPT)
    assert a.proc is not None
    a.proc.send_signal(signal.SIGHUP)  # systemctl reload
    await until(lambda: "city-new" in departments_of(b.url))
    await until(lambda: "city-new" in departments_of(a.url))
    assert a.proc.poll() is None  # reloaded, not stopped

    # The command asks node B; node A follows.
    path.write_text(path.read_text().replace(NEW_DEPT, ""))
    args = ["directory", "reload", "--url", b.url, "--data-dir", str(tmp_path / "cli")]
    code = await asyncio.to_thread(cli.main, [*args, "--config", str(config_of(tmp_path))])
    assert code == 0
    await until(lambda: "city-new" not in departments_of(a.url))


def config_of(tmp_path: Path) -> Path:
    path = tmp_path / "cli.toml"
    path.write_text(f'[jwt]\nsecret = "{SECRET}"\n')
    return path
