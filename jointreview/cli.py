"""The ``jointreview`` command: ``serve``, ``token``, ``verify``, ``export``, ``migrate``,
``check-config``, ``directory``, ``drain``, ``bench`` and ``loadtest``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from signaling import logs
from signaling.accesslog import access_logger, install_log_redaction
from signaling.config import Config, ConfigError, is_loopback, load_config

GC_YOUNG = 20_000  # allocations between young collections (CPython: 700)


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--data-dir", dest="data_dir", help="where state, secrets and archives live")
    p.add_argument("--redis-url", dest="redis_url", help="share state through Redis (many nodes)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jointreview", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8480)")
    _config_flags(serve)

    token = sub.add_parser("token", help="print a token signed with the server's key")
    token.add_argument(
        "--role", required=True, choices=["clerk", "reviewer", "applicant", "supervisor", "admin"]
    )
    token.add_argument("--user", required=True, help="the subject (user id)")
    token.add_argument("--name")
    token.add_argument("--dept")
    token.add_argument("--level", choices=["city", "district"])
    token.add_argument("--case")
    token.add_argument("--session")
    token.add_argument("--ttl", type=int, help="lifetime in seconds")
    _config_flags(token)

    from .verify_command import add_parser as add_verify

    add_verify(sub, _config_flags)

    from .drain_command import add_parser as add_drain

    add_drain(sub, _config_flags)

    from .export_command import add_parser as add_export

    add_export(sub, _config_flags)

    from .seal_command import add_parser as add_seal_key

    add_seal_key(sub, _config_flags)

    from .retention_command import add_parser as add_retention

    add_retention(sub, _config_flags)

    from .backup_command import add_parser as add_backup

    add_backup(sub, _config_flags)

    from .migrate_command import add_parser as add_migrate

    add_migrate(sub)

    from .check_config import add_parser as add_check_config
    from .directory_command import add_parser as add_directory

    add_check_config(sub, _config_flags)
    add_directory(sub, _config_flags)

    from bench.loadtest import add_parser as add_loadtest

    add_loadtest(sub)

    bench = sub.add_parser("bench", help="measure this machine")
    targets = bench.add_subparsers(dest="target", required=True)
    record = targets.add_parser(
        "record", help="per-track recording: event-loop cost per packet, writer CPU"
    )
    record.add_argument("--seconds", type=float, default=20.0, help="how long to record")
    record.add_argument("--parties", type=int, default=6, help="participants (video + audio)")
    record.add_argument("--json", action="store_true", help="a JSON summary as the last line")
    from bench.export import add_parser as add_bench_export

    add_bench_export(targets)
    from bench.history import add_parser as add_bench_history

    add_bench_history(targets)
    from bench.stats import add_parser as add_bench_stats

    add_bench_stats(targets)
    from bench.inbox import add_parser as add_bench_inbox

    add_bench_inbox(targets)
    from bench.network import add_parser as add_bench_network

    add_bench_network(targets)
    from bench.soak import add_parser as add_bench_soak

    add_bench_soak(targets)
    sfu = targets.add_parser(
        "sfu", help="the SFU against the transcoding relay: CPU, frame rate, latency"
    )
    sfu.add_argument("--seconds", type=float, default=20.0, help="steady window per size")
    sfu.add_argument("--json", action="store_true", help="a JSON summary as stdout's last line")
    sfu.add_argument("--subscribers", default="1,4,16,32", help="fanout sizes (subscribers)")
    sfu.add_argument("--sessions", default="1,2,4", help="meeting sizes (six-party sessions)")
    sfu.add_argument("--scenarios", default="fanout,meeting", help="fanout, meeting or both")
    sfu.add_argument(
        "--media-workers",
        type=int,
        default=1,
        help="the server's media_workers (1: the SFU in the server's process; 0: per core)",
    )
    sfu.add_argument(
        "--baseline-max-streams",
        type=int,
        default=8,
        help="skip baseline (transcode) sizes above this many subscriber streams",
    )
    from .version import finish_parser

    finish_parser(parser)  # plain help, --version everywhere, the exit statuses
    return parser


def _load(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Config:
    flags = {"data_dir": args.data_dir, "redis_url": args.redis_url, **(extra or {})}
    return load_config(flags=flags, config_file=args.config)


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def tune_gc() -> None:
    """A node holds thousands of long-lived sockets (idle inboxes): the cyclic GC's full
    passes over them stalled every socket for 0.5-1 s at 10,000 (bench inbox). What
    exists at start (modules, the app) is frozen out of the scans, and young collections
    are rarer, so full passes are too; refcounting frees nearly everything anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 20, 20)


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from signaling.datadir import DataDirBusy
    from signaling.history.migrate import SchemaError

    from .app import create_app
    from .host_check import media_address_problem

    config = _load(args, {"host": args.host, "port": args.port})
    if problem := media_address_problem(config):  # before anything starts: no traceback
        print(f"jointreview serve: {problem}", file=sys.stderr, flush=True)
        return 2
    logs.configure(config.log_level, config.log_format)  # text or JSON lines, on stderr
    install_log_redaction()  # no token, grant or client bytes in any log line
    app = create_app(config)
    tune_gc()
    mode = f"Redis at {redact(config.redis_url)}" if config.redis_url else "in-memory, single node"
    if config.redis_url and config.jwt_algorithm == "HS256" and not config.jwt_secret:
        print(
            "jointreview: warning: several nodes on one Redis need one shared jwt_secret; "
            f"this node uses the one in {config.data_dir / 'jwt_secret'}",
            file=sys.stderr,
        )
    if config.demo_on and not is_loopback(config.host):
        warning = (
            f"DEMO SIGN-IN IS ON while listening on {config.host}: anyone who can reach "
            f"{config.base_url}/login may sign in as any user, admin included. "
            "Set demo_enabled = false unless this is a closed demonstration."
        )
        print(f"jointreview: WARNING: {warning}", file=sys.stderr, flush=True)
        logging.getLogger("signaling").warning(warning)
    print(f"jointreview: state {mode}; data in {config.data_dir.resolve()}", flush=True)
    if config.demo_on:
        print(f"jointreview: open {config.base_url}/login", flush=True)
    else:
        print(f"jointreview: listening on {config.base_url}", flush=True)
    try:
        web.run_app(
            app,
            host=config.host,
            port=config.port,
            print=None,
            handle_signals=True,
            shutdown_timeout=5,
            access_log_class=access_logger(config.trusted_proxies),
            loop=new_event_loop(config.event_loop),
        )
    except (DataDirBusy, SchemaError) as exc:  # the operator's to fix: a message, no trace
        print(f"jointreview serve: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def redact(url: str) -> str:
    """A Redis URL fit for a log: no password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _token(args: argparse.Namespace) -> int:
    from signaling.auth import TokenService

    tokens = TokenService(_load(args))
    try:
        print(
            tokens.issue(
                sub=args.user,
                role=args.role,
                name=args.name,
                dept=args.dept,
                level=args.level,
                case=args.case,
                session=args.session,
                ttl=args.ttl,
            )
        )
    except ValueError as exc:
        print(f"jointreview token: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:
        from .version import version_text  # at once: no command's parser and its imports

        print(version_text())
        return 0
    args = build_parser().parse_args(argv)
    # What any command writes (the server's state and case files, an operator's export
    # into the archive, the audit trail) is the service's alone.
    os.umask(0o077)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "verify":
            from .verify_command import main as verify

            return verify(args, _load(args))
        if args.command == "drain":
            from .drain_command import main as drain

            return drain(args, _load(args))
        if args.command == "export":
            from .export_command import main as export

            return export(args, _load(args))
        if args.command == "check-config":
            from .check_config import main as check_config

            return check_config(args, _load(args))
        if args.command == "directory":
            from .directory_command import main as directory

            return directory(args, _load(args))
        if args.command == "seal-key":
            from .seal_command import main as seal_key

            return seal_key(args, _load(args))
        if args.command == "retention":
            from .retention_command import main as retention

            return retention(args, _load(args))
        if args.command in ("backup", "restore"):
            from .backup_command import main as backup

            return backup(args, _load(args))
        if args.command == "migrate":
            from .migrate_command import main as migrate

            return migrate(args)
        if args.command == "loadtest":
            from bench.loadtest import main as loadtest

            return loadtest(args)
        if args.command == "bench" and args.target == "export":
            from bench.export import main as bench_export

            return bench_export(args)
        if args.command == "bench" and args.target == "history":
            from bench.history import main as bench_history

            return bench_history(args)
        if args.command == "bench" and args.target == "stats":
            from bench.stats import main as bench_stats

            return bench_stats(args)
        if args.command == "bench" and args.target == "inbox":
            from bench.inbox import main as bench_inbox

            return bench_inbox(args)
        if args.command == "bench" and args.target == "network":
            from bench.network import main as bench_network

            return bench_network(args)
        if args.command == "bench" and args.target == "soak":
            from bench.soak import main as bench_soak

            return bench_soak(args)
        if args.command == "bench" and args.target == "record":
            from bench.record import main as bench_record

            return bench_record(args)
        if args.command == "bench":
            from bench.sfu import main as bench

            return bench(args)
        return _token(args)
    except ConfigError as exc:
        print(f"jointreview: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
