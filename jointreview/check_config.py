"""``jointreview check-config``: read the configuration a node would start with and say,
before it starts, what would stop it or hurt it: the settings (parsed by the server's own
loader), the files they name (keys, directory, fonts), the identity keys, the HTTP and
media ports and addresses, the ICE/TURN servers handed to browsers, the data directory
(writable, free space), and Redis and PostgreSQL when configured (reachable, schema).
Then the effective settings, secrets masked.

Findings are ``ok`` lines on standard output and ``warning:`` / ``error:`` lines on
standard error. Exit status (docs/cli.md): 0 when the node can start with this
configuration (warnings allowed), 2 for a configuration error, 3 when the configuration
is sound but a configured service (Redis, PostgreSQL) does not answer. A configuration
the loader refuses (bad TOML, an unknown or invalid setting) exits 2 before any check,
with the loader's message naming the setting and where it came from.

Run it as the service's user (``sudo -u jointreview jointreview check-config --config
/etc/jointreview/jointreview.toml``): the data directory is checked as that user sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from signaling.api_audit import redacted_settings
from signaling.config import Config

from . import config_checks
from .config_checks import Report
from .version import EXIT_OK


def add_parser(sub: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "check-config",
        help="check a configuration before starting a node: files, keys, ports, TURN, "
        "Redis, PostgreSQL, data directory",
        description=__doc__,
    )
    config_flags(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="how long to wait for Redis and PostgreSQL (default 5 s)",
    )
    p.add_argument("--no-settings", action="store_true", help="do not print the effective settings")


def main(args: argparse.Namespace, config: Config) -> int:
    source = args.config or os.environ.get("JR_CONFIG") or "(no file: defaults and JR_*)"
    print(f"jointreview check-config: {source}")
    if not args.no_settings:
        for line in settings_lines(config):
            print(line)
    report = run_checks(config, args.timeout)
    for level, area, text in report.findings:
        if level == "ok":
            print(f"ok: {area}: {text}")
        else:
            print(f"{level}: {area}: {text}", file=sys.stderr)
    errors, down = report.count("error"), report.count("unreachable")
    warnings = report.count("warning")
    summary = f"{errors} error(s), {down} unreachable, {warnings} warning(s)"
    if report.exit_code == EXIT_OK:
        print(f"configuration OK ({warnings} warning(s))")
    else:
        print(f"jointreview check-config: {summary}", file=sys.stderr)
    return report.exit_code


def run_checks(config: Config, timeout: float = 5.0) -> Report:
    """Every check, in the order an operator fixes things."""
    report = Report()
    config_checks.check_keys(config, report)
    config_checks.check_files(config, report)
    config_checks.check_directory(config, report)
    config_checks.check_http(config, report)
    config_checks.check_media(config, report)
    config_checks.check_turn(config, report)
    config_checks.check_exposure(config, report)
    check_data_dir(config, report)
    asyncio.run(_services(config, report, timeout))
    return report


# -- the effective settings ------------------------------------------------------------


def settings_lines(config: Config) -> list[str]:
    """``name = value`` for every setting in force, secrets masked (as the audit trail
    records them), those left at their default marked."""
    shown = redacted_settings(config)
    given = config.model_fields_set
    lines = ["# effective settings (secrets masked as ***; '# default' where not set)"]
    for name in Config.model_fields:
        value = shown.get(name)
        mark = "" if name in given else "  # default"
        if value is None:
            lines.append(f"# {name} is not set{mark.replace('  #', ';')}")
        else:
            lines.append(f"{name} = {json.dumps(value, ensure_ascii=False)}{mark}")
    return lines


# -- the data directory ----------------------------------------------------------------


def check_data_dir(config: Config, report: Report) -> None:
    """The node creates data_dir (0700) and writes its state, record, case files and
    audit trail there: it must be a directory this user can write, or creatable."""
    path = config.data_dir
    if path.exists() and not path.is_dir():
        report.error("data_dir", f"{path} exists and is not a directory")
        return
    if not path.exists():
        parent = _nearest_existing(path)
        if not parent.is_dir():
            report.error("data_dir", f"{path} cannot be created: {parent} is not a directory")
        elif not os.access(parent, os.W_OK | os.X_OK):
            report.error("data_dir", f"{path} cannot be created: {parent} is not writable")
        else:
            report.ok("data_dir", f"{path} does not exist yet; the node will create it")
        return
    probe = path / f".check-config-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except OSError as exc:
        report.error("data_dir", f"{path} is not writable: {exc.strerror or exc}")
        return
    finally:
        probe.unlink(missing_ok=True)
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if free < config.disk_min_free_bytes:
        report.warning(
            "data_dir",
            f"{free} bytes free in {path}, below disk_min_free_bytes "
            f"({config.disk_min_free_bytes}): healthz says degraded and no recorded session "
            "starts",
        )
    else:
        report.ok("data_dir", f"{path} is writable, {free // 2**20} MiB free")


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# -- Redis and PostgreSQL --------------------------------------------------------------


async def _services(config: Config, report: Report, timeout: float) -> None:
    if config.redis_url:
        await check_redis(config, report, timeout)
    await check_database(config, report, timeout)


async def check_redis(config: Config, report: Report, timeout: float) -> None:
    from signaling.state.redis_connect import client_for, redis_options

    where = _redact(config.redis_url)
    client = client_for(config.redis_url, redis_options(config))
    started = time.perf_counter()
    try:
        info = await asyncio.wait_for(client.info("server"), timeout)
    except TimeoutError:
        report.unreachable("redis", f"{where}: no answer within {timeout:g} s")
        return
    except Exception as exc:  # refused, unknown host, TLS, authentication: say which
        report.unreachable("redis", f"{where}: {type(exc).__name__}: {exc}")
        return
    finally:
        await client.aclose()
    ms = (time.perf_counter() - started) * 1000
    report.ok("redis", f"{where}: Redis {info.get('redis_version', '?')}, answered in {ms:.0f} ms")


async def check_database(config: Config, report: Report, timeout: float) -> None:
    """PostgreSQL (database_url): reachable and at this code's schema revision, or what
    to run. The embedded SQLite file: only that no newer jointreview migrated it."""
    from signaling.history import db, migrate

    url = db.url_of(config.database_url, config.data_dir)
    kind = db.kind_of(url)
    if kind == "sqlite":
        path = config.data_dir / "history.sqlite3"
        if not config.database_url and not path.exists():
            report.ok("database", f"SQLite at {path} (created at first start)")
            return
    shown = _redact(url)
    try:
        rev = await asyncio.wait_for(migrate.current(url), timeout)
    except TimeoutError:
        report.unreachable("database", f"{shown}: no answer within {timeout:g} s")
        return
    except Exception as exc:
        level = report.unreachable if kind != "sqlite" else report.error
        level("database", f"{shown}: {type(exc).__name__}: {exc}")
        return
    head = migrate.head()
    if rev == head:
        report.ok("database", f"{shown}: at revision {rev} (this version's)")
    elif rev is not None and not migrate.known(rev):
        report.error("database", f"{shown}: at revision {rev}, newer than this jointreview")
    elif kind == "sqlite":
        report.ok("database", f"{shown}: revision {rev}; the node upgrades it to {head}")
    else:
        at = "has no schema yet" if rev is None else f"is at revision {rev}"
        report.error(
            "database", f"{shown} {at}; this version needs {head}: run `jointreview migrate`"
        )


def _redact(url: str) -> str:
    from .cli import redact  # the one the server's start-up line uses

    return redact(url)
