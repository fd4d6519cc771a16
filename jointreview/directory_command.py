"""``jointreview directory``: the department directory (departments, their levels, and
the users, reviewers among them) from the files an operator keeps, into the TOML file
the server reads (``directory_file``), and reloaded on running nodes without a restart.

  import FILE [--dry-run] [--output F] [--reload]
      check a CSV or JSON file (every problem, with its line and field), say what
      changes against the directory file, and write that file (the previous one is
      kept as FILE.previous). --reload then asks the running node to reload it.
  export [--format csv|json]
      print the directory in force as CSV or JSON (to edit, then import)
  reload [--url URL]
      ask a running node to reload its directory file (every node follows); the same as
      kill -HUP <pid> or systemctl reload jointreview

The CSV columns are kind,id,name,name_en,level,role,dept,window (signaling/directory_io.py
and docs/cli.md#directory)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from signaling.config import Config, ConfigError
from signaling.directory import Directory, load_directory
from signaling.directory_io import DirectoryInputError, changes, read_file, to_csv, to_json, to_toml

from .admin_call import AdminCallFailed, post_admin
from .version import EXIT_CONFIG, EXIT_FAILED, EXIT_OK


def add_parser(sub: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "directory",
        help="import the department directory from CSV/JSON, export it, reload it",
        description=__doc__,
    )
    actions = p.add_subparsers(dest="action", required=True)
    imp = actions.add_parser("import", help="check a CSV or JSON file and write directory_file")
    imp.add_argument("file", metavar="FILE", help="a .csv or .json file")
    imp.add_argument("--dry-run", action="store_true", help="check and compare; write nothing")
    imp.add_argument("--output", metavar="F", help="write here instead of directory_file")
    imp.add_argument("--reload", action="store_true", help="then reload the running node")
    imp.add_argument("--url", help="the node's address for --reload (default: the config's)")
    config_flags(imp)
    exp = actions.add_parser("export", help="print the directory in force as CSV or JSON")
    exp.add_argument("--format", choices=["csv", "json"], default="csv")
    config_flags(exp)
    rel = actions.add_parser("reload", help="ask a running node to reload directory_file")
    rel.add_argument("--url", help="the node's address (default: http://127.0.0.1:<port>)")
    config_flags(rel)


def main(args: argparse.Namespace, config: Config) -> int:
    if args.action == "export":
        current = load_directory(config.directory_file)
        sys.stdout.write(to_csv(current) if args.format == "csv" else to_json(current))
        return EXIT_OK
    if args.action == "reload":
        return reload(config, args.url)
    return import_file(args, config)


def import_file(args: argparse.Namespace, config: Config) -> int:
    source = Path(args.file)
    try:
        new = read_file(source)
    except DirectoryInputError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(
            f"jointreview directory import: {len(exc.problems)} problem(s); nothing written",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    target = Path(args.output) if args.output else config.directory_file
    if target is None and not args.dry_run:
        raise ConfigError("directory_file: not set; set it in the configuration (or give --output)")
    old = _current(target)
    depts, users = changes(old, new)
    print(f"{source}: {len(new.departments)} departments, {len(new.users)} users")
    print(f"  against {target or 'the packaged directory'}:")
    for label, change in (("departments", depts), ("users", users)):
        print(f"  {label}: {change}")
        for sign, ids in (("+", change.added), ("-", change.removed), ("~", change.changed)):
            if ids:
                print(f"    {sign} {', '.join(ids)}")
    if args.dry_run:
        print("dry run: nothing written")
        return EXIT_OK
    assert target is not None
    write_atomically(target, to_toml(new))
    print(f"written to {target}")
    if args.reload:
        return reload(config, args.url)
    print("reload the nodes: jointreview directory reload (or systemctl reload jointreview)")
    return EXIT_OK


def _current(target: Path | None) -> Directory:
    """What the import replaces: the file there now (empty when there is none)."""
    if target is not None and not target.exists():
        return Directory()
    return load_directory(target)


def write_atomically(target: Path, text: str) -> None:
    """Replace ``target`` whole (a node reloading meanwhile reads the old or the new
    file, never half of one), keeping its mode and owner; the old one as .previous."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if target.exists():
            shutil.copymode(target, tmp)
            st = target.stat()
            if hasattr(os, "chown") and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                try:
                    os.chown(tmp, st.st_uid, st.st_gid)
                except PermissionError:
                    pass  # not root: the file stays the writer's own
            shutil.copy2(target, target.with_name(target.name + ".previous"))
        else:
            os.chmod(tmp, 0o640)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reload(config: Config, url: str | None) -> int:
    """POST /api/admin/directory/reload with a short-lived admin token (as drain)."""
    path = "/api/admin/directory/reload"
    try:
        answer = post_admin(config, url, path, {}, "jointreview-directory")
    except AdminCallFailed as exc:
        print(f"jointreview directory reload: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"node {answer['node']}: reloaded {answer['file'] or 'the packaged directory'}: "
        f"{answer['departments']} departments, {answer['users']} users "
        f"(digest {answer['digest']}); the other nodes follow"
    )
    return EXIT_OK
