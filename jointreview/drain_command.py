"""``jointreview drain``: stop (or, with ``--undo``, resume) placing new sessions' media
on a running node, through its admin API (``POST /api/admin/drain``) with a short-lived
admin token signed with the node's own key. The sessions it hosts go on to their end, or
with ``--move`` are placed again on other nodes at once (their pages reconnect).
The same from the process itself: ``kill -USR1 <pid>`` drains, ``kill -USR2`` resumes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from signaling.config import Config

from .admin_call import AdminCallFailed, post_admin


def add_parser(sub: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("drain", help="stop placing new sessions on a running node")
    p.add_argument(
        "--url", help="the node's address (default: http://127.0.0.1:<port> of the config)"
    )
    p.add_argument("--undo", action="store_true", help="take new sessions again")
    p.add_argument(
        "--move",
        action="store_true",
        help="also move the sessions it hosts now to other nodes (pages reconnect by themselves)",
    )
    config_flags(p)


def main(args: argparse.Namespace, config: Config) -> int:
    body = {"draining": not args.undo, "move": bool(args.move)}
    try:
        answer = post_admin(config, args.url, "/api/admin/drain", body, "jointreview-drain")
    except AdminCallFailed as exc:
        print(f"jointreview drain: {exc}", file=sys.stderr)
        return 1
    state = "draining: no new sessions" if answer["draining"] else "taking new sessions"
    moved = f"; {answer['moved']} sessions moved" if args.move and not args.undo else ""
    print(f"node {answer['node']}: {state}{moved}")
    return 0
