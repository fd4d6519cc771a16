"""The node's seal key and the keys it trusts, from the configuration
(``seal_algorithm``, ``seal_key_file``, ``seal_public_keys``; recording/seal.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from recording.seal import Sealer, public_keys
from recording.signing import (
    ALGORITHMS,
    PublicKey,
    SealKeyError,
    SigningKey,
    load,
    load_or_create,
)

from .config import Config, ConfigError

log = logging.getLogger(__name__)


def key_path(config: Config, algorithm: str | None = None) -> Path:
    """The key file of ``algorithm`` (default: the configured one)."""
    algorithm = algorithm or config.seal_algorithm
    if algorithm == config.seal_algorithm and config.seal_key_file is not None:
        return config.seal_key_file
    return config.data_dir / f"seal-{ALGORITHMS[algorithm][0]}.pem"


def node_sealer(config: Config, node: str) -> Sealer:
    """The node's seal; its key is made on first start (mode 0600). Blocking I/O."""
    path = key_path(config)
    try:
        key = load_or_create(path, config.seal_algorithm)
    except (OSError, SealKeyError) as exc:
        raise ConfigError(f"seal_key_file ({path}): {exc}") from exc
    if key.key_id not in config.seal_public_keys:
        # One node trusts its own key; with several, each must list every other's.
        say = log.warning if config.seal_public_keys else log.info
        say("this node's seal key is not in seal_public_keys; list it on every node: %s",
            config_line(key))  # fmt: skip
    return Sealer(config.seal_algorithm, key, node)


def own_keys(config: Config) -> list[SigningKey]:
    """The node's keys that this process may read (never made here): the configured
    algorithm's, and the other's if the node sealed with it before a switch."""
    found = []
    for algorithm, (kind, _) in ALGORITHMS.items():
        try:
            found.append(load(key_path(config, algorithm), kind))
        except (OSError, SealKeyError):
            continue
    return found


def trusted_keys(config: Config) -> dict[str, PublicKey]:
    """The configured public keys, and this node's own (a node knows its own keys)."""
    keys = public_keys(config.seal_public_keys)
    keys.update((key.key_id, key.public) for key in own_keys(config))
    return keys


def config_line(key: SigningKey) -> str:
    """The key's line for ``[seal_public_keys]`` in the configuration file."""
    return f'"{key.key_id}" = "{key.public.text}"'
