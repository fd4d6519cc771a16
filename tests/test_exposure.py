"""Issue #10, findings 3, 4, 6 and 7, against real ``jointreview serve`` processes where
the finding is about one: demo sign-in beyond loopback, who may read the data dir, two
servers on one data dir, and participants a crash left behind."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from jointreview.app import create_app
from signaling import datadir, replay
from signaling.appkeys import STORE
from signaling.auth import TokenService
from signaling.config import Config
from signaling.export_jobs import data_dir_free

from .conftest import SECRET, ServerProcess, auth, free_port, make_config
from .wsclient import Signal

Factory = Callable[..., ServerProcess]


def tokens(tmp_path: Path) -> TokenService:
    return TokenService(Config(data_dir=tmp_path / "tokens", jwt_secret=SECRET))


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def ws_url(server: ServerProcess, token: str) -> str:
    return f"{server.url.replace('http', 'ws')}/ws?token={token}"


async def _json(res: aiohttp.ClientResponse, status: int) -> Any:
    assert res.status == status, await res.text()
    return await res.json()


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` (async) until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


# -- finding 3: demo sign-in -------------------------------------------------------------


async def test_demo_sign_in_is_off_when_listening_beyond_loopback(
    server_factory: Factory,
) -> None:
    server = server_factory(env={"JR_HOST": "0.0.0.0"})
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/api/auth/demo-login", json={"sub": "admin"}) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "demo_disabled"
        async with http.get(f"{server.url}/api/auth/demo-users") as r:
            assert r.status == 404
        # No sign-in page either, and the pages know not to link to it.
        async with http.get(f"{server.url}/login") as r:
            assert r.status == 404
        async with http.get(f"{server.url}/ui/departments.json") as r:
            assert (await r.json())["demo"] is False
        async with http.get(f"{server.url}/") as r:
            assert r.status == 200
    assert "DEMO SIGN-IN IS ON" not in server.log.read_text()


async def test_demo_sign_in_enabled_beyond_loopback_warns_loudly(
    server_factory: Factory,
) -> None:
    server = server_factory(env={"JR_HOST": "0.0.0.0", "JR_DEMO_ENABLED": "true"})
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/api/auth/demo-login", json={"sub": "clerk-01"}) as r:
            assert (await _json(r, 200))["identity"]["sub"] == "clerk-01"
        async with http.get(f"{server.url}/api/auth/demo-users") as r:
            assert (await _json(r, 200))["exposed"] is True
        async with http.get(f"{server.url}/login") as r:
            assert r.status == 200
    log = server.log.read_text()
    # Once on stderr for the operator and once in the log (JR_LOG_LEVEL=warning).
    assert log.count("DEMO SIGN-IN IS ON while listening on 0.0.0.0") == 2


async def test_demo_sign_in_on_loopback_is_not_flagged_exposed(
    client: TestClient[Any, Any],
) -> None:
    r = await client.get("/api/auth/demo-users")
    assert (await _json(r, 200))["exposed"] is False
    assert (await client.get("/login")).status == 200
    assert (await (await client.get("/ui/departments.json")).json())["demo"] is True


async def test_login_page_is_404_when_demo_is_off(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, demo_enabled=False))
    async with TestClient(TestServer(app)) as c:
        assert (await c.get("/login")).status == 404
        assert (await c.get("/")).status == 200


# -- finding 4: who may read the data dir ------------------------------------------------


def modes(root: Path) -> dict[str, str]:
    """Every entry under root (root included) that others could read: path -> mode."""
    found: dict[str, str] = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) & ~want:
            found[str(path.relative_to(root))] = oct(stat.S_IMODE(st.st_mode))
    return found


async def test_a_real_server_writes_nothing_others_can_read(
    server_factory: Factory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    # As an operator's shell would: umask 022, so files would be 0644 without the fix.
    old = os.umask(0o022)
    try:
        server = server_factory(data_dir=data)
    finally:
        os.umask(old)
    t = tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.url}/api/cases/FM-1/sessions",
            json={"applicant_name": "申请人", "matter": "许可"},
            headers=auth(clerk),
        ) as r:
            sid = (await _json(r, 201))["session_id"]
        sock = await Signal.connect(http, ws_url(server, clerk))
        await sock.request("join", "joined", session_id=sid)
        await sock.request("chat", "ack", text="材料已收到")
        async with http.post(
            f"{server.url}/api/sessions/{sid}/snapshots",
            data=png(),
            headers={**auth(clerk), "Content-Type": "image/png"},
        ) as r:
            await _json(r, 201)
        # A replay grant makes the key; the end seals the case file.
        async with http.post(f"{server.url}/api/sessions/{sid}/end", headers=auth(clerk)) as r:
            await _json(r, 200)
        await sock.close()

        async def sealed() -> bool:
            return any((data / "archive" / "FM-1" / sid).glob("manifest.json"))

        await until(sealed, "the case file sealed")
    server.stop()
    assert (data / "state" / "journal.jsonl").is_file()
    assert any((data / "archive" / "FM-1" / sid / "snapshots").iterdir())
    assert modes(data) == {}


def _open_data_dir(data: Path) -> bytes:
    """A data dir as an older version left it: readable by all, the grant key in the
    journal."""
    (data / "state").mkdir(parents=True)
    (data / "archive" / "C-1" / "s1").mkdir(parents=True)
    old_key = os.urandom(32)
    line = {"op": "put", "k": replay.GRANT_KEY_DOC, "d": {"key": old_key.hex()}}
    (data / "state" / "journal.jsonl").write_text(json.dumps(line) + "\n")
    (data / "archive" / "C-1" / "s1" / "timeline.jsonl").write_text("{}\n")
    (data / "jwt_secret").write_text(SECRET + "\n")
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return old_key


async def test_an_old_open_data_dir_is_closed_and_its_grant_key_retired(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    old_key = _open_data_dir(data)
    assert modes(data) != {}
    app = create_app(make_config(tmp_path, data_dir=data))
    async with TestClient(TestServer(app)):
        assert modes(data) == {}
        key = await replay.grant_key(app[STORE])
        assert key != old_key
        assert key == bytes.fromhex((data / datadir.GRANT_KEY_FILE).read_text().strip())
        # The old key no longer opens anything, and no new key goes into the journal.
        forged = replay.mint(old_key, "s1", "t1", "sup-01", time.time() + 600)
        with pytest.raises(replay.GrantError):
            replay.check(key, forged, time.time())
        assert "key" not in (await app[STORE].get(replay.GRANT_KEY_DOC) or {})
    assert key.hex() not in (data / "state" / "journal.jsonl").read_text()


async def test_the_grant_key_is_kept_across_restarts(tmp_path: Path) -> None:
    keys = []
    for _ in range(2):
        app = create_app(make_config(tmp_path))
        async with TestClient(TestServer(app)):
            keys.append(await replay.grant_key(app[STORE]))
    assert keys[0] == keys[1]
    assert stat.S_IMODE((tmp_path / "data" / datadir.GRANT_KEY_FILE).stat().st_mode) == 0o600


async def test_redis_keeps_the_grant_key_in_redis(tmp_path: Path, redis_url: str) -> None:
    app = create_app(make_config(tmp_path, redis_url=redis_url))
    async with TestClient(TestServer(app)):
        key = await replay.grant_key(app[STORE])
        assert (await app[STORE].get(replay.GRANT_KEY_DOC) or {}).get("key") == key.hex()
    assert not (tmp_path / "data" / datadir.GRANT_KEY_FILE).exists()
    # Nothing of a Redis node's lives in state/: no journal, no lock.
    assert not (tmp_path / "data" / "state").exists()
    assert modes(tmp_path / "data") == {}


@pytest.mark.parametrize(
    ("lifetime_s", "code"),
    [
        (600, "track_not_found"),  # genuine and sane: it opens (here: nothing to open)
        (24 * 3600, "track_not_found"),  # exactly grant_max_ttl_s
        (24 * 3600 + 120, "invalid_grant"),
        (975 * 365 * 24 * 3600, "invalid_grant"),  # "valid until the year 3000"
    ],
)
async def test_a_grant_living_longer_than_allowed_is_refused(
    tmp_path: Path, lifetime_s: int, code: str
) -> None:
    app = create_app(make_config(tmp_path))
    async with TestClient(TestServer(app)) as c:
        key = await replay.grant_key(app[STORE])
        grant = replay.mint(key, "s_missing", "t1", "sup-01", time.time() + lifetime_s)
        r = await c.get(f"/api/replay/{grant}")
        body = await r.json()
        assert body["error"]["code"] == code, body
        if code == "invalid_grant":
            assert r.status == 401


@pytest.mark.parametrize(
    ("now", "expires", "max_s", "ok"),
    [
        (1000.0, 1000 + 3600, 3600.0, True),
        (1000.0, 1000 + 3601, 3600.0, False),
        (1000.0, 999, 3600.0, False),  # expired
        (1000.0, 32503680000, 86400.0, False),  # the year 3000
    ],
)
def test_grant_lifetime_rule(now: float, expires: int, max_s: float, ok: bool) -> None:
    key = b"k" * 32
    grant = replay.mint(key, "s", "t", "u", expires)
    if ok:
        assert replay.check(key, grant, now, max_s)["e"] == expires
    else:
        with pytest.raises(replay.GrantError):
            replay.check(key, grant, now, max_s)


def test_grants_minted_fit_the_maximum() -> None:
    assert replay.grant_expiry(0.0, 10 * 3600, None, 3600.0) == 3600.0
    assert replay.grant_expiry(0.0, 10.0, 500.0, 3600.0) == 500.0


# -- finding 6: one server per data dir --------------------------------------------------


def serve(data: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "jointreview.cli", "serve", "--port", str(port)]
    return subprocess.run(
        [*args, "--data-dir", str(data)],
        env={**os.environ, "JR_JWT_SECRET": SECRET, "JR_LOG_LEVEL": "warning", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_second_server_on_the_same_data_dir_is_refused(
    server_factory: Factory, tmp_path: Path
) -> None:
    data = tmp_path / "shared"
    first = server_factory(data_dir=data)
    assert first.proc is not None
    journal = (data / "state" / "journal.jsonl").read_bytes()
    second = serve(data, free_port())
    assert second.returncode == 2, second.stderr
    assert f"pid {first.proc.pid}" in second.stderr
    assert "in use by" in second.stderr
    # Nothing written behind the first one's back, which still serves.
    assert (data / "state" / "journal.jsonl").read_bytes() == journal
    async with aiohttp.ClientSession() as http, http.get(f"{first.url}/healthz") as r:
        assert r.status == 200
    # The export command still sees a server here, and the data dir free once it stops.
    config = Config(data_dir=data, jwt_secret=SECRET)
    assert not data_dir_free(config)
    first.stop()
    assert data_dir_free(config)


async def test_redis_nodes_share_a_data_dir(
    server_factory: Factory, tmp_path: Path, redis_url: str
) -> None:
    data = tmp_path / "shared"
    a = server_factory(data_dir=data, redis_url=redis_url)
    b = server_factory(data_dir=data, redis_url=redis_url)
    async with aiohttp.ClientSession() as http:
        for node in (a, b):
            async with http.get(f"{node.url}/healthz") as r:
                assert r.status == 200


async def test_the_lock_in_process_names_the_holder(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path))
    async with TestClient(TestServer(app)):
        with pytest.raises(datadir.DataDirBusy, match=f"pid {os.getpid()}"):
            async with TestClient(TestServer(create_app(make_config(tmp_path)))):
                pass


# -- finding 7: ghosts after a crash and the idle end ------------------------------------


async def test_ghosts_of_a_crash_leave_and_the_session_ends_by_itself(
    server_factory: Factory, tmp_path: Path
) -> None:
    data = tmp_path / "crash"
    env = {"JR_RESUME_GRACE_S": "1", "JR_ABANDONED_SESSION_S": "2"}
    server = server_factory(data_dir=data, env=env)
    t = tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    reviewer = t.issue(sub="rev-city-amr-1", role="reviewer", dept="city-amr", level="city")
    sup = t.issue(sub="sup-01", role="supervisor")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.url}/api/cases/GH-1/sessions", json={"matter": "x"}, headers=auth(clerk)
        ) as r:
            sid = (await _json(r, 201))["session_id"]
        async with http.post(
            f"{server.url}/api/sessions/{sid}/invitations",
            json={"dept": "city-amr"},
            headers=auth(clerk),
        ) as r:
            await _json(r, 201)
        socks = [await Signal.connect(http, ws_url(server, tok)) for tok in (clerk, reviewer)]
        slots = [
            (await s.request("join", "joined", session_id=sid))["participant"]["participant_id"]
            for s in socks
        ]
        server.stop(signal.SIGKILL)  # the clients never come back
        server.start()

        async def case() -> dict[str, Any]:
            async with http.get(f"{server.url}/api/cases/GH-1", headers=auth(sup)) as r:
                return dict(await _json(r, 200))

        async def ended() -> bool:
            async with http.get(f"{server.url}/api/sessions/{sid}", headers=auth(sup)) as r:
                body = await _json(r, 200)
            session = body.get("session", body)
            return bool(session["status"] == "ended")

        await until(ended, "the session ended by itself")

        async def sealed() -> dict[str, Any] | None:
            found = await case()
            return found if "archive.sealed" in [e["type"] for e in found["events"]] else None

        events = (await until(sealed, "its case file sealed"))["events"]
        for s in socks:
            await s.close()
    left = {
        e["data"]["participant_id"]: e["data"]["reason"]
        for e in events
        if e["type"] == "participant.left"
    }
    assert left == {pid: "connection_lost" for pid in slots}
    end = next(e for e in events if e["type"] == "session.ended")
    assert end["actor"] is None and end["data"]["reason"] == "broken_off"
    assert (data / "archive" / "GH-1" / sid / "manifest.json").is_file()


async def test_on_redis_only_this_nodes_ghosts_are_dropped(
    server_factory: Factory, tmp_path: Path, redis_url: str
) -> None:
    env = {"JR_RESUME_GRACE_S": "1", "JR_SESSION_IDLE_END_S": "0"}
    a = server_factory(redis_url=redis_url, env={**env, "JR_NODE_ID": "node-a"})
    b = server_factory(redis_url=redis_url, env={**env, "JR_NODE_ID": "node-b"})
    t = tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    reviewer = t.issue(sub="rev-city-amr-1", role="reviewer", dept="city-amr", level="city")
    sup = t.issue(sub="sup-01", role="supervisor")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{a.url}/api/cases/GH-2/sessions", json={"matter": "x"}, headers=auth(clerk)
        ) as r:
            sid = (await _json(r, 201))["session_id"]
        async with http.post(
            f"{a.url}/api/sessions/{sid}/invitations",
            json={"dept": "city-amr"},
            headers=auth(clerk),
        ) as r:
            await _json(r, 201)
        on_a = await Signal.connect(http, ws_url(a, reviewer))
        on_b = await Signal.connect(http, ws_url(b, clerk))
        ghost = (await on_a.request("join", "joined", session_id=sid))["participant"]
        live = (await on_b.request("join", "joined", session_id=sid))["participant"]
        a.stop(signal.SIGKILL)
        a.start()

        async def states() -> dict[str, str] | None:
            async with http.get(f"{b.url}/api/cases/GH-2", headers=auth(sup)) as r:
                events = (await _json(r, 200))["events"]
            gone = [e for e in events if e["type"] == "participant.left"]
            return {e["data"]["participant_id"]: e["data"]["reason"] for e in gone} or None

        left = await until(states, "node A's ghost left")
        # Node B's person is still there: a ping on its socket still answers.
        assert left == {ghost["participant_id"]: "connection_lost"}
        await on_b.request("chat", "ack", text="还在")
        assert live["participant_id"] not in left
        await on_a.close()
        await on_b.close()
