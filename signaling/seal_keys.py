"""The node's seal key and the keys it trusts, from the configuration
(``seal_algorithm``, ``seal_key_file``, ``seal_public_keys``; recording/seal.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from recording.seal import Sealer, public_keys
from recording.signing import PublicKey, SealKeyError, SigningKey, load, load_or_create

from .config import Config, ConfigError

log = logging.getLogger(__name__)


def key_path(config: Config) -> Path:
    kind = config.seal_algorithm.split("-")[0]
    return config.seal_key_file or config.data_dir / f"seal-{kind}.pem"


def node_sealer(config: Config, node: str) -> Sealer:
    """The node's seal; its key is made on first start (mode 0600). Blocking I/O."""
    path = key_path(config)
    try:
        key = load_or_create(path, config.seal_algorithm)
    except (OSError, SealKeyError) as exc:
        raise ConfigError(f"seal_key_file ({path}): {exc}") from exc
    if key.key_id not in config.seal_public_keys:
        log.warning(
            "this node's seal key is not in seal_public_keys; list it on every node: %s",
            config_line(key),
        )
    return Sealer(config.seal_algorithm, key, node)


def own_key(config: Config) -> SigningKey | None:
    """The node's key if it has one and this process may read it (never made here)."""
    try:
        return load(key_path(config), config.seal_algorithm.split("-")[0])
    except (OSError, SealKeyError):
        return None


def trusted_keys(config: Config) -> dict[str, PublicKey]:
    """The configured public keys, and this node's own (a node knows its own key)."""
    return public_keys(config.seal_public_keys, own_key(config))


def config_line(key: SigningKey) -> str:
    """The key's line for ``[seal_public_keys]`` in the configuration file."""
    return f'"{key.key_id}" = "{key.public.text}"'
