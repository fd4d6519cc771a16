"""``jointreview seal-key``: this node's seal key (made now if it has none, as the node
would on its first start) and the line that lists it in every node's configuration,
under ``[seal_public_keys]`` (recording/seal.py, docs/configuration.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from signaling.config import Config, ConfigError
from signaling.seal_keys import config_line, key_path, node_sealer


def add_parser(sub: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("seal-key", help="print this node's seal key as a line for seal_public_keys")
    config_flags(p)


def main(args: argparse.Namespace, config: Config) -> int:
    try:
        sealer = node_sealer(config, config.node_id)
    except ConfigError as exc:
        print(f"jointreview seal-key: {exc}", file=sys.stderr)
        return 1
    print(f"# {config.seal_algorithm}, key file {key_path(config)}")
    print("[seal_public_keys]")
    print(config_line(sealer.key))
    return 0
