"""A node's seal key: Ed25519 (``cryptography``) or SM2 (``gmssl``), and the public keys
that check a seal.

Key files are PKCS#8 PEM, the format OpenSSL reads and writes (``openssl genpkey
-algorithm ed25519`` / ``-algorithm SM2`` make keys a node can use). A public key is
written ``<kind>:<base64>`` (Ed25519: the 32 raw bytes; SM2: the uncompressed point
``04||x||y``) and named by its key id, ``<kind>-<first 16 hex of SHA-256 of the raw
key>``: the id is a fingerprint, so a configured ``key id = public key`` pair that does
not belong together is refused.

SM2: ``cryptography`` has no SM2 curve, so signatures are made by ``gmssl`` (pure
Python; SM2 with SM3 over ``Z || message``, the default distinguishing ID
``1234567812345678``, as GB/T 32918 and OpenSSL use). Its shortcomings are kept away
here: the nonce comes from ``secrets`` (gmssl's own default uses ``random``), the
public key is set as 128 hex digits (its constructor strips leading ``0``/``4`` digits
of a key given with ``04``), signatures are DER like OpenSSL's, and verification
checks ``r``, ``s`` and the point first. tests/test_seal.py checks our signatures with
OpenSSL's own SM2 and OpenSSL's with ours.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from gmssl import sm2 as gm_sm2

# seal_algorithm -> (signature kind, hash of the files and of the timeline's chain)
ALGORITHMS: dict[str, tuple[str, str]] = {
    "ed25519-sha256": ("ed25519", "sha256"),
    "sm2-sm3": ("sm2", "sm3"),
}

# GB/T 32918.5 curve parameters (gmssl's table, as integers).
_P = int(gm_sm2.default_ecc_table["p"], 16)
_N = int(gm_sm2.default_ecc_table["n"], 16)
_A = int(gm_sm2.default_ecc_table["a"], 16)
_B = int(gm_sm2.default_ecc_table["b"], 16)
_OID_EC = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey
_OID_SM2 = bytes.fromhex("06082a811ccf5501822d")  # 1.2.156.10197.1.301


class SealKeyError(ValueError):
    """A key file or a public key that cannot be used; the message says why."""


@dataclass(frozen=True)
class PublicKey:
    kind: str  # "ed25519" | "sm2"
    raw: bytes  # ed25519: 32 bytes; sm2: 04||x||y, 65 bytes

    @property
    def key_id(self) -> str:
        return f"{self.kind}-{hashlib.sha256(self.raw).hexdigest()[:16]}"

    @property
    def text(self) -> str:
        return f"{self.kind}:{base64.b64encode(self.raw).decode('ascii')}"

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        kind, _, b64 = text.strip().partition(":")
        try:
            raw = base64.b64decode(b64, validate=True)
        except ValueError:
            raise SealKeyError(f"not base64 after {kind!r}:") from None
        if kind == "ed25519" and len(raw) == 32:
            return cls(kind, raw)
        if kind == "sm2" and len(raw) == 65 and raw[0] == 4:
            if not _on_curve(raw):
                raise SealKeyError("not a point of the SM2 curve")
            return cls(kind, raw)
        raise SealKeyError("write ed25519:<32 bytes, base64> or sm2:<04||x||y, base64>")

    def verify(self, signature: bytes, message: bytes) -> bool:
        if self.kind == "ed25519":
            try:
                Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
            except InvalidSignature:
                return False
            return True
        rs = _der_to_rs(signature)
        if rs is None or not all(0 < v < _N for v in rs):
            return False
        crypt = gm_sm2.CryptSM2(private_key="", public_key="00")
        crypt.public_key = self.raw[1:].hex()  # see the module's docstring
        try:
            return bool(crypt.verify_with_sm3(f"{rs[0]:064x}{rs[1]:064x}", message))
        except (TypeError, ValueError):  # gmssl meets the point at infinity: not valid
            return False


@dataclass(frozen=True)
class SigningKey:
    public: PublicKey
    _secret: bytes  # ed25519: 32-byte seed; sm2: d, 32 bytes big-endian

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        if self.public.kind == "ed25519":
            return Ed25519PrivateKey.from_private_bytes(self._secret).sign(message)
        crypt = gm_sm2.CryptSM2(private_key=self._secret.hex(), public_key="00")
        crypt.public_key = self.public.raw[1:].hex()
        while True:  # gmssl answers None for the rare k that gives r = 0 or s = 0
            k = f"{secrets.randbelow(_N - 1) + 1:064x}"
            sig = crypt.sign_with_sm3(message, k)
            if sig:
                return _rs_to_der(int(sig[:64], 16), int(sig[64:], 16))


def load_or_create(path: Path, algorithm: str) -> SigningKey:
    """The key in ``path``; made (mode 0600, created exclusively so that two processes
    starting at once agree on one key) when there is none."""
    kind = ALGORITHMS[algorithm][0]
    try:
        return load(path, kind)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = _new_pem(kind)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # never replaces a key another process just made
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return load(path, kind)


def load(path: Path, kind: str) -> SigningKey:
    pem = path.read_bytes()
    if kind == "ed25519":
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except UnsupportedAlgorithm:  # an SM2 key, say
            raise SealKeyError(f"{path}: not an Ed25519 key (seal_algorithm wants one)") from None
        except ValueError as exc:
            raise SealKeyError(f"{path}: not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SealKeyError(f"{path}: not an Ed25519 key (seal_algorithm wants one)")
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return SigningKey(PublicKey("ed25519", _ed25519_public(key)), seed)
    d = _sm2_secret(path, pem)
    return SigningKey(PublicKey("sm2", _sm2_point(d)), d.to_bytes(32, "big"))


def _ed25519_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _new_pem(kind: str) -> bytes:
    if kind == "ed25519":
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    d = secrets.randbelow(_N - 2) + 1  # [1, n-2], GB/T 32918.1
    point = _sm2_point(d)
    ec_key = _tlv(
        0x30,
        _tlv(0x02, b"\x01")
        + _tlv(0x04, d.to_bytes(32, "big"))
        + _tlv(0xA1, _tlv(0x03, b"\0" + point)),
    )
    info = _tlv(
        0x30,
        _tlv(0x02, b"\x00") + _tlv(0x30, _OID_EC + _OID_SM2) + _tlv(0x04, ec_key),
    )
    body = base64.encodebytes(info).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"
    ).encode()


def _sm2_secret(path: Path, pem: bytes) -> int:
    """d from a PKCS#8 (``PRIVATE KEY``) or SEC1 (``EC PRIVATE KEY``) SM2 key."""
    text = pem.decode("ascii", "replace")
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    try:
        der = base64.b64decode(body, validate=True)
        items = _items(_tlv_read(der)[1])
        pkcs8 = len(items) == 3 and items[0] == (0x02, b"\x00")
        # PKCS#8: the curve in its algorithm; SEC1: in its [0] parameters.
        curve = items[1][1] if pkcs8 else next((v for t, v in items if t == 0xA0), b"")
        if pkcs8 and _OID_SM2 in curve:
            items = _items(_tlv_read(items[2][1])[1])
        d = int.from_bytes(items[1][1], "big")
    except (ValueError, IndexError):
        raise SealKeyError(f"{path}: not an SM2 private key in PEM") from None
    if _OID_SM2 not in curve:
        raise SealKeyError(f"{path}: not an SM2 key (seal_algorithm wants one)")
    if not 0 < d < _N - 1:
        raise SealKeyError(f"{path}: not an SM2 private key in PEM")
    return d


def _sm2_point(d: int) -> bytes:
    crypt = gm_sm2.CryptSM2(private_key=f"{d:064x}", public_key="00")
    xy = crypt._kg(d, gm_sm2.default_ecc_table["g"])  # gmssl has no key generation of its own
    return b"\x04" + bytes.fromhex(xy)


def _on_curve(raw: bytes) -> bool:
    x, y = int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big")
    return x < _P and y < _P and (y * y - (x * x * x + _A * x + _B)) % _P == 0


# -- the little DER the keys and SM2 signatures need -------------------------------------


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def _tlv_read(data: bytes) -> tuple[int, bytes, bytes]:
    """(tag, value, rest); ValueError when the bytes are not one whole TLV."""
    if len(data) < 2:
        raise ValueError("short")
    tag, n, at = data[0], data[1], 2
    if n & 0x80:
        width = n & 0x7F
        if width == 0 or width > 4 or len(data) < 2 + width:
            raise ValueError("bad length")
        n, at = int.from_bytes(data[2 : 2 + width], "big"), 2 + width
    if len(data) < at + n:
        raise ValueError("short")
    return tag, data[at : at + n], data[at + n :]


def _items(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        tag, value, data = _tlv_read(data)
        out.append((tag, value))
    return out


def _int_der(v: int) -> bytes:
    return _tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))


def _rs_to_der(r: int, s: int) -> bytes:
    return _tlv(0x30, _int_der(r) + _int_der(s))


def _der_to_rs(sig: bytes) -> tuple[int, int] | None:
    try:
        tag, body, rest = _tlv_read(sig)
        items = _items(body)
    except ValueError:
        return None
    if tag != 0x30 or rest or len(items) != 2 or any(t != 0x02 for t, _ in items):
        return None
    return int.from_bytes(items[0][1], "big"), int.from_bytes(items[1][1], "big")
