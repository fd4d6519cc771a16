"""The seal of a case file: which hash its files and timeline chain use, the node's
signature over ``manifest.json`` (``manifest.sig``), and how ``jointreview verify``
checks it.

``seal_algorithm`` picks both: ``ed25519-sha256`` (Ed25519, SHA-256) or ``sm2-sm3``
(国密: SM2 signatures, SM3 from OpenSSL through ``hashlib``). The manifest records it::

    "seal": {"algorithm": "sm2-sm3", "hash": "sm3", "key_id": "sm2-…", "node": "…"}

and its file entries and timeline name their digest by the hash (``"sha256": …`` or
``"sm3": …``). ``manifest.sig`` signs the manifest's exact bytes::

    {"version": 1, "algorithm", "key_id", "public_key": "<kind>:<base64>",
     "manifest_digest": {"<hash>": hex}, "signed_at", "signature": base64}

It carries the public key, so a signature is checked even where the key is not
configured, and that case is told apart from a key that is configured (trusted). A
manifest with no ``seal`` (written before this) is SHA-256 and unsigned: it verifies
as before, reported as legacy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .signing import ALGORITHMS, PublicKey, SealKeyError, SigningKey

SIGNATURE = "manifest.sig"
SIG_VERSION = 1
LABELS = {"sha256": "SHA-256", "sm3": "SM3"}


def new_hash(alg: str) -> Any:
    if alg == "sha256":
        return hashlib.sha256()
    if alg == "sm3":
        return hashlib.new("sm3")  # OpenSSL's; hashlib lists it when OpenSSL has it
    raise ValueError(f"unknown hash {alg!r}")


def digest(data: bytes, alg: str = "sha256") -> str:
    h = new_hash(alg)
    h.update(data)
    return str(h.hexdigest())


def digest_file(path: Path, alg: str = "sha256") -> str:
    h = new_hash(alg)
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return str(h.hexdigest())


def hash_of(manifest: Mapping[str, Any]) -> str:
    """The hash a manifest's files and chain use (legacy manifests: SHA-256)."""
    alg = str((manifest.get("seal") or {}).get("hash") or "sha256")
    return alg if alg in LABELS else "sha256"


@dataclass(frozen=True)
class Sealer:
    """What a node seals with: its key, the algorithm, and its name (for people)."""

    algorithm: str
    key: SigningKey
    node: str = ""

    @property
    def hash(self) -> str:
        return ALGORITHMS[self.algorithm][1]

    def block(self) -> dict[str, Any]:
        """The manifest's ``seal``."""
        return {
            "algorithm": self.algorithm,
            "hash": self.hash,
            "key_id": self.key.key_id,
            "node": self.node,
        }

    def signature(self, manifest_body: bytes) -> bytes:
        doc = {
            "version": SIG_VERSION,
            "algorithm": self.algorithm,
            "key_id": self.key.key_id,
            "public_key": self.key.public.text,
            "manifest_digest": {self.hash: digest(manifest_body, self.hash)},
            "signed_at": time.time(),
            "signature": base64.b64encode(self.key.sign(manifest_body)).decode("ascii"),
        }
        return json.dumps(doc, indent=1).encode("utf-8")


def write_signature(directory: Path, sealer: Sealer, manifest_body: bytes) -> None:
    """``manifest.sig`` for the manifest about to be written (whole or not at all)."""
    tmp = directory / f".{SIGNATURE}.tmp"
    with tmp.open("wb") as fh:
        fh.write(sealer.signature(manifest_body))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / SIGNATURE)


@dataclass
class Finding:
    code: str
    message: str


@dataclass
class SealCheck:
    problems: list[Finding]
    notes: list[str]
    summary: str  # "signed by … (…)", "unsigned (legacy …)"


def check(
    directory: Path,
    manifest: Mapping[str, Any],
    raw: bytes,
    keys: Mapping[str, PublicKey] | None,
) -> SealCheck:
    """Check the manifest's signature. ``keys``: the trusted public keys by id (None:
    none given; a signature is then checked with the key it carries, and said so)."""
    seal = manifest.get("seal")
    path = directory / SIGNATURE
    if not isinstance(seal, dict) or not seal.get("key_id"):
        if path.exists():
            problem = Finding(
                "seal_removed",
                f"{'manifest.json'}: has no seal, but {SIGNATURE} is there (the seal was "
                "taken out of the manifest)",
            )
            return SealCheck([problem], [], "unsigned")
        return SealCheck([], ["unsigned: a legacy manifest (SHA-256, no signature)"], "unsigned")
    key_id, algorithm = str(seal.get("key_id")), str(seal.get("algorithm"))
    try:
        sig = json.loads(path.read_bytes())
        if not isinstance(sig, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return _bad(
            "signature_missing", f"{SIGNATURE}: missing (the manifest says {key_id} signed it)"
        )
    except (OSError, ValueError) as exc:
        return _bad("signature_unreadable", f"{SIGNATURE}: unreadable: {exc}")
    if sig.get("key_id") != key_id or sig.get("algorithm") != algorithm:
        return _bad(
            "signature_mismatch",
            f"{SIGNATURE}: made with {sig.get('key_id')} ({sig.get('algorithm')}), the "
            f"manifest names {key_id} ({algorithm})",
        )
    try:
        carried = PublicKey.parse(str(sig.get("public_key", "")))
        signature = base64.b64decode(str(sig.get("signature", "")), validate=True)
    except (SealKeyError, ValueError) as exc:
        return _bad("signature_unreadable", f"{SIGNATURE}: unreadable: {exc}")
    if carried.key_id != key_id or algorithm not in ALGORITHMS:
        return _bad("signature_mismatch", f"{SIGNATURE}: its public key is not {key_id}")
    alg = ALGORITHMS[algorithm][1]
    if (sig.get("manifest_digest") or {}).get(alg) != digest(raw, alg):
        return _bad("manifest_changed", "manifest.json: changed after it was signed")
    trusted = None if keys is None else keys.get(key_id)
    if not (trusted or carried).verify(signature, raw):
        return _bad("bad_signature", f"{SIGNATURE}: the signature does not verify (it was altered)")
    who = f"{key_id}" + (f" (node {seal.get('node')})" if seal.get("node") else "")
    if keys is None:
        return SealCheck([], [f"signed by {who}; no public keys given to trust"], who)
    if trusted is None:
        return _bad(
            "unknown_key",
            f"{SIGNATURE}: signed with key {key_id}, which is not among the configured "
            "public keys (seal_public_keys)",
        )
    return SealCheck([], [], f"signed by {who}, {algorithm}")


def _bad(code: str, message: str) -> SealCheck:
    return SealCheck([Finding(code, message)], [], "not verified")


def public_keys(
    configured: Mapping[str, str], own: SigningKey | None = None
) -> dict[str, PublicKey]:
    """Trusted keys by id from the configuration (``key id = "<kind>:<base64>"``), plus
    the node's own. ValueError names an entry whose id is not its key's."""
    keys: dict[str, PublicKey] = {}
    for key_id, text in configured.items():
        try:
            key = PublicKey.parse(text)
        except SealKeyError as exc:
            raise ValueError(f"seal_public_keys[{key_id!r}]: {exc}") from None
        if key.key_id != key_id:
            raise ValueError(f"seal_public_keys[{key_id!r}]: that key's id is {key.key_id}")
        keys[key_id] = key
    if own is not None:
        keys[own.key_id] = own.public
    return keys
