"""``jointreview check-config`` on a good configuration and on broken ones: each broken
one exits with its documented status (2: configuration, 3: a service unreachable) and a
message that names the setting, the file or the address; secrets never printed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from jointreview import cli
from jointreview.version import EXIT_CONFIG, EXIT_OK, EXIT_UNREACHABLE
from tests.conftest import free_port

SECRET = "jwt-" + "s" * 40
TURN_SECRET = "turn-" + "t" * 30


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("JR_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "jointreview.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def good(tmp_path: Path, **extra: Any) -> str:
    lines = [
        f'data_dir = "{tmp_path / "data"}"',
        f"port = {free_port()}",
        'public_url = "https://review.example.gov.cn"',
        "demo_enabled = false",
        f'directory_file = "{DIRECTORY}"',
        'media_listen_ips = ["127.0.0.1"]',
        "media_port_min = 40000",
        "media_port_max = 40099",
        "media_workers = 2",
        f"disk_min_free_bytes = {1024 * 1024}",
        f'turn_secret = "{TURN_SECRET}"',
        "[jwt]",
        f'secret = "{SECRET}"',
        "[[ice_servers]]",
        'urls = ["turn:turn.example.gov.cn:3478?transport=udp",'
        ' "turns:turn.example.gov.cn:443?transport=tcp"]',
    ]
    flat = [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(flat + lines) + "\n"


DIRECTORY = Path(__file__).resolve().parent.parent / "signaling" / "directory.toml"


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["check-config", *args])
    out, err = capsys.readouterr()
    assert SECRET not in out + err and TURN_SECRET not in out + err
    return code, out, err


def test_a_good_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, good(tmp_path))
    code, out, err = check(capsys, "--config", str(config))
    assert code == EXIT_OK, err
    assert "error:" not in err
    assert out.splitlines()[0] == f"jointreview check-config: {config}"
    assert out.rstrip().endswith("warning(s))")
    # The effective settings, secrets masked, defaults marked.
    assert 'jwt_secret = "***"\n' in out and 'turn_secret = "***"\n' in out
    assert "media_workers = 2\n" in out and "heartbeat_s = 5.0  # default\n" in out
    assert "ok: jwt: HS256 signs and verifies" in out
    assert "ok: directory_file: " in out and "5 departments, 10 users" in out
    assert "ok: media: UDP 40000-40099 (100 ports) over 2 worker(s)" in out
    assert "ok: turn: 2 TURN URL(s), 1 over TCP/TLS" in out
    assert f"ok: data_dir: {tmp_path / 'data'} does not exist yet" in out


def test_with_redis_reachable(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, good(tmp_path, node_id='"node-a"'))
    code, out, err = check(capsys, "--config", str(config), "--redis-url", redis_url)
    assert code == EXIT_OK, err
    assert f"ok: redis: {redis_url}: Redis " in out
    assert "warning: database_url: empty with redis_url" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = \n", "invalid TOML: Invalid value (at line 1, column 8)"),
        ("prot = 8480\n", "prot (in {config}): unknown setting"),
        ('[jwt]\nsecret = "short"\n', "jwt_secret: must be at least 32 characters for HS256"),
    ],
    ids=["bad-toml", "unknown-key", "short-secret"],
)
def test_the_loader_or_the_keys_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = write(tmp_path, text)
    code, _out, err = check(capsys, "--config", str(config), "--no-settings")
    assert code == EXIT_CONFIG
    assert message.format(config=config) in err


def test_a_missing_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "approval.pub.pem"
    text = good(tmp_path, jwt_algorithm='"RS256"', jwt_public_key_file=f'"{missing}"')
    code, _out, err = check(capsys, "--config", str(write(tmp_path, text)), "--no-settings")
    assert code == EXIT_CONFIG
    assert (
        f"error: jwt: jwt_public_key_file: cannot read {missing}: No such file or directory\n"
        in err
    )
    assert "1 error(s), 0 unreachable" in err


def test_a_data_dir_that_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Under a regular file: refused even to root (the suite runs as root in CI).
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = write(tmp_path, good(tmp_path))
    data = blocker / "data"
    code, _out, err = check(capsys, "--config", str(config), "--data-dir", str(data))
    assert code == EXIT_CONFIG
    assert f"error: data_dir: {data} cannot be created: {blocker} is not a directory\n" in err
    code, _out, err = check(capsys, "--config", str(config), "--data-dir", str(blocker))
    assert f"error: data_dir: {blocker} exists and is not a directory\n" in err


def test_bad_directory_media_and_turn_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write(
        tmp_path,
        '[[departments]]\nid = "a"\nlevel = "province"\nname = "甲"\n',
        "directory.toml",
    )
    text = good(tmp_path).replace(str(DIRECTORY), str(directory))
    text = text.replace('"127.0.0.1"]', '"192.0.2.7"]').replace(
        "media_port_max = 40099", "media_port_max = 40000"
    )
    text = text.replace(' "turns:', ' "turn:nopass@x", "turns:').replace(
        "?transport=tcp", "?transport=udp"
    )
    text = text.replace(f'turn_secret = "{TURN_SECRET}"', "")
    code, _out, err = check(capsys, "--config", str(write(tmp_path, text)), "--no-settings")
    assert code == EXIT_CONFIG
    expected = [
        f"error: directory_file: {directory}: departments[0].level: "
        "Input should be 'city' or 'district'",
        "error: media_listen_ips: 192.0.2.7: not an address of this machine",
        "error: media_port_min: media_port_min..max holds fewer ports than the 2 workers",
        "error: ice_servers: 'turns:turn.example.gov.cn:443?transport=udp': turns: (TLS) "
        "runs over TCP, not UDP",
        "error: ice_servers: 'turn:turn.example.gov.cn:3478?transport=udp': no credentials: "
        "set turn_secret (coturn use-auth-secret) or username and credential",
        "warning: turn: TURN over UDP only: reviewers behind a firewall that blocks UDP get "
        "no media",
    ]
    for line in expected:
        assert line in err, line


def test_unreachable_redis_and_postgresql(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real ports with nothing listening: refused at once.
    redis_port, pg_port = free_port(), free_port()
    config = write(tmp_path, good(tmp_path, node_id='"node-a"'))
    redis = f"redis://:hunter2@127.0.0.1:{redis_port}/0"
    db = f"postgresql+asyncpg://jr:hunter3@127.0.0.1:{pg_port}/jr"
    monkeypatch.setenv("JR_DATABASE_URL", db)
    code, out, err = check(capsys, "--config", str(config), "--redis-url", redis, "--timeout", "3")
    assert code == EXIT_UNREACHABLE
    assert "hunter2" not in out + err and "hunter3" not in out + err
    assert f"unreachable: redis: redis://:***@127.0.0.1:{redis_port}/0: ConnectionError" in err
    assert f"unreachable: database: postgresql+asyncpg://jr:***@127.0.0.1:{pg_port}/jr: " in err
    assert "0 error(s), 2 unreachable" in err


def test_postgresql_without_then_with_the_schema(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fresh_postgres_url: str,
) -> None:
    monkeypatch.setenv("JR_DATABASE_URL", fresh_postgres_url)
    config = str(write(tmp_path, good(tmp_path)))
    code, _, err = check(capsys, "--config", config, "--no-settings")
    assert code == EXIT_CONFIG
    assert "has no schema yet; this version needs " in err and "run `jointreview migrate`" in err
    assert cli.main(["migrate", "--config", config]) == EXIT_OK
    capsys.readouterr()
    code, out, err = check(capsys, "--config", config, "--no-settings")
    assert code == EXIT_OK, err
    assert "(this version's)" in out
