"""Configuration: defaults < TOML file < JR_* environment < flags; every bad setting is named.

Every ``load_config`` call passes an explicit ``environ`` so the real environment of the
test run never leaks in. The CLI tests run the real ``python -m jointreview.cli`` with an
environment stripped of ``JR_*`` variables.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from signaling.auth import AuthError, TokenService
from signaling.config import Config, ConfigError, IceServer, ensure_jwt_secret, load_config
from signaling.directory import load_directory

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults and precedence ----------------------------------------------------------


def test_defaults_with_nothing_given() -> None:
    config = load_config(flags={}, environ={})
    assert config == Config()
    assert config.host == "127.0.0.1"
    assert config.port == 8480
    assert config.redis_url == ""
    assert config.jwt_algorithm == "HS256"
    assert config.ice_servers == []
    assert config.base_url == "http://127.0.0.1:8480"


def test_file_overrides_defaults(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", 'host = "0.0.0.0"\nport = 9000\nlog_level = "debug"\n')
    config = load_config(config_file=f, environ={})
    assert (config.host, config.port, config.log_level) == ("0.0.0.0", 9000, "debug")
    # Untouched settings keep their defaults.
    assert config.token_ttl_s == Config().token_ttl_s
    # 0.0.0.0 is not a address a browser can be sent to.
    assert config.base_url == "http://127.0.0.1:9000"


def test_env_overrides_file(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", 'host = "10.0.0.1"\nport = 9000\n')
    config = load_config(config_file=f, environ={"JR_PORT": "9100"})
    assert config.port == 9100
    assert config.host == "10.0.0.1"  # from the file: the environment did not set it


def test_flags_override_env_and_file(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", "port = 9000\n")
    config = load_config(
        flags={"port": 9200, "host": None},
        config_file=f,
        environ={"JR_PORT": "9100", "JR_HOST": "10.0.0.2"},
    )
    assert config.port == 9200
    # A flag left unset (None, as argparse gives it) does not hide the environment.
    assert config.host == "10.0.0.2"


@pytest.mark.parametrize(
    ("in_file", "in_env", "flag", "expected"),
    [
        pytest.param(None, None, None, "info", id="default"),
        pytest.param("warning", None, None, "warning", id="file"),
        pytest.param("warning", "error", None, "error", id="env-over-file"),
        pytest.param(None, "error", None, "error", id="env-over-default"),
        pytest.param("warning", "error", "debug", "debug", id="flag-over-env-and-file"),
        pytest.param("warning", None, "debug", "debug", id="flag-over-file"),
    ],
)
def test_precedence_table(
    tmp_path: Path, in_file: str | None, in_env: str | None, flag: str | None, expected: str
) -> None:
    f = write(tmp_path / "jr.toml", f'log_level = "{in_file}"\n' if in_file else "")
    environ = {"JR_LOG_LEVEL": in_env} if in_env else {}
    config = load_config(flags={"log_level": flag}, config_file=f, environ=environ)
    assert config.log_level == expected


def test_config_file_named_by_jr_config(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", "port = 9300\n")
    assert load_config(environ={"JR_CONFIG": str(f)}).port == 9300


def test_explicit_config_file_beats_jr_config(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", "port = 9301\n")
    b = write(tmp_path / "b.toml", "port = 9302\n")
    assert load_config(config_file=b, environ={"JR_CONFIG": str(a)}).port == 9302


def test_env_values_are_typed(tmp_path: Path) -> None:
    config = load_config(
        environ={
            "JR_PORT": "8000",
            "JR_DEMO_ENABLED": "false",
            "JR_HEARTBEAT_S": "2.5",
            "JR_DATA_DIR": str(tmp_path / "d"),
            "JR_JWT_PUBLIC_KEY_FILE": str(tmp_path / "pub.pem"),
            "JR_REDIS_URL": "rediss://cache:6380/1",
        }
    )
    assert config.port == 8000
    assert config.demo_enabled is False
    assert config.heartbeat_s == 2.5
    assert config.data_dir == tmp_path / "d"
    assert config.jwt_public_key_file == tmp_path / "pub.pem"
    assert config.redis_url == "rediss://cache:6380/1"


def test_unrelated_environment_is_ignored() -> None:
    config = load_config(environ={"PORT": "1", "JR_NOT_A_SETTING": "x", "HOME": "/root"})
    assert config == Config()


# -- TOML tables ----------------------------------------------------------------------


def test_toml_tables_flatten_to_prefixed_settings(tmp_path: Path) -> None:
    f = write(
        tmp_path / "jr.toml",
        """
        redis_url = "redis://localhost:6379/0"

        [jwt]
        secret = "s3cret-from-a-table-0123456789abcdef"
        issuer = "approval-system"
        audience = "counter"

        [token]
        ttl_s = 600
        """,
    )
    config = load_config(config_file=f, environ={})
    assert config.jwt_secret == "s3cret-from-a-table-0123456789abcdef"
    assert config.jwt_issuer == "approval-system"
    assert config.jwt_audience == "counter"
    assert config.token_ttl_s == 600
    assert config.redis_url == "redis://localhost:6379/0"


def test_flat_and_table_spellings_are_the_same_setting(tmp_path: Path) -> None:
    flat = write(tmp_path / "flat.toml", 'jwt_algorithm = "ES256"\n')
    table = write(tmp_path / "table.toml", '[jwt]\nalgorithm = "ES256"\n')
    assert load_config(config_file=flat, environ={}) == load_config(config_file=table, environ={})


def test_env_overrides_a_table_value(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", '[jwt]\nissuer = "from-file"\n')
    config = load_config(config_file=f, environ={"JR_JWT_ISSUER": "from-env"})
    assert config.jwt_issuer == "from-env"


# -- ICE servers ----------------------------------------------------------------------


def test_ice_servers_from_toml_array_of_tables(tmp_path: Path) -> None:
    f = write(
        tmp_path / "jr.toml",
        """
        [[ice_servers]]
        urls = ["stun:stun.intranet:3478"]

        [[ice_servers]]
        urls = ["turn:turn.intranet:3478", "turns:turn.intranet:5349"]
        username = "jr"
        credential = "pw"
        """,
    )
    config = load_config(config_file=f, environ={})
    assert config.ice_servers == [
        IceServer(urls=["stun:stun.intranet:3478"]),
        IceServer(
            urls=["turn:turn.intranet:3478", "turns:turn.intranet:5349"],
            username="jr",
            credential="pw",
        ),
    ]


def test_ice_servers_from_env_json(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", '[[ice_servers]]\nurls = ["stun:from-file"]\n')
    environ = {"JR_ICE_SERVERS": '[{"urls": ["turn:t:3478"], "username": "u", "credential": "c"}]'}
    config = load_config(config_file=f, environ=environ)
    assert config.ice_servers == [IceServer(urls=["turn:t:3478"], username="u", credential="c")]


def test_ice_servers_env_empty_list_clears_file(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", '[[ice_servers]]\nurls = ["stun:from-file"]\n')
    assert load_config(config_file=f, environ={"JR_ICE_SERVERS": "[]"}).ice_servers == []


# -- bad configuration: ConfigError naming the setting and its source ----------------


def config_error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_bad_port_type_from_env_names_setting_and_variable() -> None:
    msg = config_error(environ={"JR_PORT": "abc"})
    assert "port" in msg
    assert "JR_PORT" in msg


def test_port_out_of_range_from_file_names_setting_and_file(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", "port = 70000\n")
    msg = config_error(config_file=f, environ={})
    assert "port" in msg
    assert str(f) in msg


def test_bad_value_from_flag_names_the_flag() -> None:
    msg = config_error(flags={"token_ttl_s": 5}, environ={})
    assert "token_ttl_s" in msg
    assert "--token-ttl-s" in msg


def test_bad_value_is_blamed_on_the_source_that_won(tmp_path: Path) -> None:
    # The file's value is fine; the environment's overrides it and is wrong.
    f = write(tmp_path / "jr.toml", "port = 9000\n")
    msg = config_error(config_file=f, environ={"JR_PORT": "-1"})
    assert "JR_PORT" in msg
    assert str(f) not in msg


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", "port = 9000\nprot = 9001\n")
    msg = config_error(config_file=f, environ={})
    assert "prot" in msg
    assert str(f) in msg


def test_unknown_key_in_table_names_flattened_key_and_file(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", '[jwt]\nsecrett = "x"\n')
    msg = config_error(config_file=f, environ={})
    assert "jwt_secrett" in msg
    assert str(f) in msg


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", "port = = 9000\n")
    msg = config_error(config_file=f, environ={})
    assert str(f) in msg
    assert "TOML" in msg


def test_missing_file_names_file(tmp_path: Path) -> None:
    f = tmp_path / "missing.toml"
    msg = config_error(config_file=f, environ={})
    assert str(f) in msg
    assert "not found" in msg


def test_missing_file_from_jr_config_names_file(tmp_path: Path) -> None:
    f = tmp_path / "nowhere.toml"
    msg = config_error(environ={"JR_CONFIG": str(f)})
    assert str(f) in msg


def test_config_file_that_is_a_directory_names_file(tmp_path: Path) -> None:
    msg = config_error(config_file=tmp_path, environ={})
    assert str(tmp_path) in msg


def test_config_file_not_utf8_names_file(tmp_path: Path) -> None:
    f = tmp_path / "jr.toml"
    f.write_bytes('host = "北京"\n'.encode("gb18030"))
    msg = config_error(config_file=f, environ={})
    assert str(f) in msg


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://localhost:6379", id="http"),
        pytest.param("localhost:6379", id="no-scheme"),
        pytest.param("redis:/localhost", id="malformed"),
    ],
)
def test_redis_url_with_bad_scheme(url: str) -> None:
    msg = config_error(environ={"JR_REDIS_URL": url})
    assert "redis_url" in msg
    assert "JR_REDIS_URL" in msg
    assert "redis://" in msg  # says what is expected


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://cache:6380", "unix:///run/redis.sock"]
)
def test_redis_url_good_schemes(url: str) -> None:
    assert load_config(flags={"redis_url": url}, environ={}).redis_url == url


def test_redis_url_bad_scheme_from_file(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", 'redis_url = "memcached://x"\n')
    msg = config_error(config_file=f, environ={})
    assert "redis_url" in msg
    assert str(f) in msg


def test_ice_servers_env_not_json() -> None:
    msg = config_error(environ={"JR_ICE_SERVERS": "stun:stun.example:3478"})
    assert "ice_servers" in msg
    assert "JR_ICE_SERVERS" in msg
    assert "JSON" in msg


def test_ice_servers_env_json_of_wrong_shape() -> None:
    msg = config_error(environ={"JR_ICE_SERVERS": '[{"url": "stun:x"}]'})
    assert "ice_servers" in msg
    assert "JR_ICE_SERVERS" in msg


def test_ice_servers_file_entry_without_urls(tmp_path: Path) -> None:
    f = write(tmp_path / "jr.toml", '[[ice_servers]]\nusername = "u"\n')
    msg = config_error(config_file=f, environ={})
    assert "ice_servers" in msg
    assert str(f) in msg


@pytest.mark.parametrize(
    ("var", "value", "setting"),
    [
        pytest.param("JR_LOG_LEVEL", "verbose", "log_level", id="log-level"),
        pytest.param("JR_JWT_ALGORITHM", "none", "jwt_algorithm", id="jwt-alg-none"),
        pytest.param("JR_JWT_ALGORITHM", "HS512", "jwt_algorithm", id="jwt-alg-unsupported"),
        pytest.param("JR_DEMO_ENABLED", "perhaps", "demo_enabled", id="bool"),
        pytest.param("JR_HEARTBEAT_S", "0", "heartbeat_s", id="heartbeat-zero"),
        pytest.param("JR_MAX_MESSAGE_BYTES", "10", "max_message_bytes", id="message-too-small"),
        pytest.param("JR_APPLICANT_LINK_TTL_S", "1", "applicant_link_ttl_s", id="ttl-too-short"),
    ],
)
def test_bad_env_values_name_setting_and_variable(var: str, value: str, setting: str) -> None:
    msg = config_error(environ={var: value})
    assert setting in msg
    assert var in msg


# -- the generated HS256 secret -------------------------------------------------------


def test_ensure_jwt_secret_generates_once_and_persists_0600(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data")
    first = ensure_jwt_secret(config)
    path = tmp_path / "data" / "jwt_secret"
    assert len(first) >= 32
    assert path.read_text(encoding="ascii").strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The second call (a restart, another node) reads the same secret back.
    assert ensure_jwt_secret(config) == first
    assert ensure_jwt_secret(Config(data_dir=tmp_path / "data")) == first
    # No temporary files are left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["jwt_secret"]


def test_ensure_jwt_secret_differs_between_data_dirs(tmp_path: Path) -> None:
    a = ensure_jwt_secret(Config(data_dir=tmp_path / "a"))
    b = ensure_jwt_secret(Config(data_dir=tmp_path / "b"))
    assert a != b


def test_configured_jwt_secret_wins_and_writes_nothing(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", jwt_secret="configured-" + "y" * 32)
    assert ensure_jwt_secret(config) == "configured-" + "y" * 32
    assert not (tmp_path / "data").exists()


# -- the real CLI -----------------------------------------------------------------------


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JR_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "jointreview.cli", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_serve_port_not_a_number_is_an_argparse_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "notanumber", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "--port" in result.stderr
    assert "notanumber" in result.stderr


def test_cli_serve_bad_jr_port_names_port_and_variable(tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path), cwd=tmp_path, env={"JR_PORT": "abc"})
    assert result.returncode == 2, result.stderr
    assert "port" in result.stderr
    assert "JR_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_serve_missing_config_names_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    result = run_cli("serve", "--config", str(missing), "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_token_verifies_with_the_servers_secret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_cli(
        "token",
        "--role",
        "reviewer",
        "--user",
        "u",
        "--dept",
        "city-amr",
        "--level",
        "city",
        "--data-dir",
        str(data),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2
    who = TokenService(Config(data_dir=data)).verify(token)
    assert (who.sub, who.name, who.role, who.dept, who.level) == (
        "u",
        "u",
        "reviewer",
        "city-amr",
        "city",
    )
    assert who.case is None and who.session is None
    # Signed with the secret persisted in the data dir, not some other key.
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    other = TokenService(Config(data_dir=tmp_path / "other"))
    with pytest.raises(AuthError) as info:
        other.verify(token)
    assert info.value.code == "invalid_token"


def test_cli_token_reviewer_without_dept_is_refused(tmp_path: Path) -> None:
    result = run_cli(
        "token", "--role", "reviewer", "--user", "u", "--data-dir", str(tmp_path), cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "dept" in result.stderr
    assert "reviewer" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_token_bad_ttl_from_env_names_variable(tmp_path: Path) -> None:
    result = run_cli(
        "token",
        "--role",
        "clerk",
        "--user",
        "c",
        "--data-dir",
        str(tmp_path),
        cwd=tmp_path,
        env={"JR_TOKEN_TTL_S": "soon"},
    )
    assert result.returncode == 2
    assert "token_ttl_s" in result.stderr
    assert "JR_TOKEN_TTL_S" in result.stderr


# -- the directory --------------------------------------------------------------------


def test_packaged_directory_loads_and_every_reviewer_has_a_department() -> None:
    directory = load_directory(None)
    dept_ids = {d.id for d in directory.departments}
    reviewers = [u for u in directory.users if u.role == "reviewer"]
    assert dept_ids and reviewers
    for user in reviewers:
        assert user.dept in dept_ids, user.sub
        assert directory.level_of(user.dept) in ("city", "district")
    assert len(dept_ids) == len(directory.departments)  # ids are unique
    assert directory.user("clerk-01") is not None
    assert directory.level_of("city-amr") == "city"
    assert directory.level_of("district-amr") == "district"
    assert directory.level_of("no-such-dept") is None
    assert directory.level_of(None) is None


def test_directory_reviewer_with_unknown_dept_names_directory_file(tmp_path: Path) -> None:
    f = write(
        tmp_path / "dir.toml",
        """
        [[departments]]
        id = "city-amr"
        level = "city"
        name = "AMR"

        [[users]]
        sub = "rev-1"
        name = "R"
        role = "reviewer"
        dept = "city-nowhere"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_directory(f)
    msg = str(info.value)
    assert "directory_file" in msg
    assert str(f) in msg
    assert "rev-1" in msg


def test_directory_user_name_longer_than_a_token_may_carry_is_refused_at_start(
    tmp_path: Path,
) -> None:
    # Before: loaded, and that user's demo sign-in minted a token verify() refused (500).
    f = write(
        tmp_path / "dir.toml",
        '[[users]]\nsub = "clerk-9"\nname = "' + "名" * 101 + '"\nrole = "clerk"\n',
    )
    with pytest.raises(ConfigError, match="directory_file"):
        load_directory(f)


def test_directory_reviewer_without_dept_names_directory_file(tmp_path: Path) -> None:
    f = write(tmp_path / "dir.toml", '[[users]]\nsub = "rev-1"\nname = "R"\nrole = "reviewer"\n')
    with pytest.raises(ConfigError, match="directory_file"):
        load_directory(f)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[[departments]\n", id="invalid-toml"),
        pytest.param('[[departments]]\nid = "x"\nlevel = "province"\nname = "X"\n', id="level"),
        pytest.param('[[users]]\nsub = "u"\nname = "U"\nrole = "mayor"\n', id="role"),
        pytest.param('[[users]]\nsub = "bad id!"\nname = "U"\nrole = "clerk"\n', id="sub"),
        pytest.param('colour = "blue"\n', id="unknown-key"),
    ],
)
def test_bad_directory_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    f = write(tmp_path / "dir.toml", text)
    with pytest.raises(ConfigError) as info:
        load_directory(f)
    assert "directory_file" in str(info.value)
    assert str(f) in str(info.value)


def test_missing_directory_file_names_directory_file(tmp_path: Path) -> None:
    f = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as info:
        load_directory(f)
    assert "directory_file" in str(info.value)
    assert str(f) in str(info.value)


def test_directory_file_not_utf8_names_directory_file(tmp_path: Path) -> None:
    f = tmp_path / "dir.toml"
    f.write_bytes('[[departments]]\nid = "x"\nlevel = "city"\nname = "市局"\n'.encode("gb18030"))
    with pytest.raises(ConfigError) as info:
        load_directory(f)
    assert "directory_file" in str(info.value)
    assert str(f) in str(info.value)


def test_an_empty_secret_file_is_replaced(tmp_path: Path) -> None:
    """A crash while the secret was first written leaves an empty file: start anyway."""
    from signaling.config import Config, ensure_jwt_secret

    (tmp_path / "jwt_secret").write_text("")
    secret = ensure_jwt_secret(Config(data_dir=tmp_path))
    assert len(secret) >= 32
    assert (tmp_path / "jwt_secret").read_text().strip() == secret
    assert ensure_jwt_secret(Config(data_dir=tmp_path)) == secret


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JR_MEDIA_HOST_TTL_S": "1"}, "media_host_ttl_s must be longer than media_heartbeat_s"),
        ({"JR_MEDIA_LEASE_S": "2"}, "media_lease_s must be at least 3"),
        ({"JR_MEDIA_RESTART_MAX_S": "0.1"}, "media_restart_max_s must not be below"),
        ({"JR_MEDIA_HEARTBEAT_S": "0"}, "media_heartbeat_s"),
    ],
)
def test_bad_failover_timings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ=env)


def test_failover_timings_from_the_environment() -> None:
    from jointreview.media_registry import MediaTimings

    env = {"JR_MEDIA_HEARTBEAT_S": "0.5", "JR_MEDIA_HOST_TTL_S": "2", "JR_MEDIA_LEASE_S": "9"}
    timings = MediaTimings.of(load_config(environ=env))
    assert timings == MediaTimings(0.5, 2.0, 9.0, 0.2, 10.0)
    assert MediaTimings.of(load_config(environ={})) == MediaTimings()
