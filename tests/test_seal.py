"""The seal of a case file (recording/seal.py, recording/signing.py): each manifest
signed with the node's key, Ed25519 or SM2 (with SM3 for the files and the chain);
``jointreview verify`` tells each kind of tampering apart, and old manifests verify."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview import cli
from jointreview.app import create_app
from recording import archive, paths, signing
from recording.seal import SIGNATURE, Sealer, public_keys
from recording.signing import PublicKey
from recording.verify import Report, verify_session
from signaling.config import ConfigError, load_config

from .conftest import Tokens, auth, make_config
from .test_verify import _sealed_session

CASE = "GZ-2026-0001"
SID = "s_sealed1"
ALGORITHMS = list(signing.ALGORITHMS)


def _events() -> list[dict[str, Any]]:
    actor = {"sub": "u1", "name": "王芳", "role": "clerk", "dept": "window", "level": None}
    return [
        {"seq": 1, "ts": 1.0, "type": "session.created", "session_id": SID, "actor": actor},
        {"seq": 2, "ts": 2.0, "type": "chat.message", "session_id": SID, "actor": actor,
         "data": {"text": "请看营业执照"}},
        {"seq": 3, "ts": 3.0, "type": "session.ended", "session_id": SID, "actor": actor},
    ]  # fmt: skip


def _seal(
    tmp_path: Path, algorithm: str | None, key_name: str = "node.pem"
) -> tuple[Path, Sealer | None]:
    """A sealed session with one recorded file, signed with a fresh key (None: legacy)."""
    archive_dir = tmp_path / "archive"
    directory = paths.session_dir(archive_dir, CASE, SID)
    (directory / "tracks").mkdir(parents=True)
    (directory / "tracks" / "p1_0.webm").write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40)
    sealer = None
    if algorithm is not None:
        key = signing.load_or_create(tmp_path / key_name, algorithm)
        sealer = Sealer(algorithm, key, "node-a")
    session = {"case_id": CASE, "session_id": SID, "status": "ended"}
    archive.write_manifest(archive_dir, session, _events(), sealer=sealer)
    return archive_dir, sealer


def _check(archive_dir: Path, sealer: Sealer | None, **kw: Any) -> Report:
    keys = kw.pop("keys", public_keys({}, sealer.key if sealer else None))
    return verify_session(archive_dir, CASE, SID, keys=keys, **kw)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_sealed_manifest_is_signed_and_verifies(tmp_path: Path, algorithm: str) -> None:
    archive_dir, sealer = _seal(tmp_path, algorithm)
    assert sealer is not None
    directory = paths.session_dir(archive_dir, CASE, SID)
    manifest = json.loads((directory / "manifest.json").read_bytes())
    kind, alg = signing.ALGORITHMS[algorithm]
    assert manifest["seal"] == {
        "algorithm": algorithm,
        "hash": alg,
        "key_id": sealer.key.key_id,
        "node": "node-a",
    }
    # The files and the chain use the seal's hash: SM3 under 国密, from OpenSSL.
    track = directory / "tracks" / "p1_0.webm"
    [entry] = manifest["files"]
    assert entry[alg] == hashlib.new(alg, track.read_bytes()).hexdigest()
    assert "sha256" not in entry or alg == "sha256"
    genesis = hashlib.new(alg, f"jointreview-timeline:{CASE}:{SID}".encode()).hexdigest()
    assert manifest["timeline"]["genesis"] == genesis
    assert (
        manifest["timeline"][alg]
        == hashlib.new(alg, (directory / "timeline.jsonl").read_bytes()).hexdigest()
    )
    # The signature is over the manifest's exact bytes, by the key the seal names.
    sig = json.loads((directory / SIGNATURE).read_bytes())
    public = PublicKey.parse(sig["public_key"])
    assert public.kind == kind and public.key_id == sealer.key.key_id
    raw = (directory / "manifest.json").read_bytes()
    assert public.verify(base64.b64decode(sig["signature"]), raw)
    assert not public.verify(base64.b64decode(sig["signature"]), raw + b" ")
    report = _check(archive_dir, sealer)
    assert report.ok, report.problems
    assert report.seal == f"signed by {sealer.key.key_id} (node node-a), {algorithm}"
    assert report.files == 1 and report.events == 3


def test_an_old_manifest_verifies_as_unsigned_legacy(tmp_path: Path) -> None:
    archive_dir, _ = _seal(tmp_path, None)
    manifest = json.loads((archive_dir / CASE / SID / "manifest.json").read_bytes())
    assert "seal" not in manifest and "sha256" in manifest["files"][0]
    report = _check(archive_dir, None)
    assert report.ok, report.problems
    assert report.seal == "unsigned"
    assert report.notes == ["unsigned: a legacy manifest (SHA-256, no signature)"]


def _tamper(directory: Path, what: str, sealer: Sealer) -> None:
    if what == "file":
        track = directory / "tracks" / "p1_0.webm"
        data = bytearray(track.read_bytes())
        data[100] ^= 1
        track.write_bytes(bytes(data))
    elif what == "timeline":
        path = directory / "timeline.jsonl"
        path.write_text(path.read_text().replace("请看营业执照", "请看身份证"))
    elif what == "manifest":
        path = directory / "manifest.json"
        path.write_text(path.read_text().replace('"node-a"', '"node-b"'))
    elif what == "signature":
        path = directory / SIGNATURE
        sig = json.loads(path.read_bytes())
        raw = bytearray(base64.b64decode(sig["signature"]))
        raw[-5] ^= 0x40
        sig["signature"] = base64.b64encode(bytes(raw)).decode()
        path.write_text(json.dumps(sig))
    elif what == "signature_missing":
        (directory / SIGNATURE).unlink()
    elif what == "seal_removed":  # a manifest "downgraded" to look unsigned
        path = directory / "manifest.json"
        manifest = json.loads(path.read_bytes())
        del manifest["seal"]
        path.write_text(json.dumps(manifest))
    elif what == "resigned":  # someone else's key, carried along, all consistent
        other = signing.load_or_create(directory.parents[2] / "intruder.pem", sealer.algorithm)
        path = directory / "manifest.json"
        manifest = json.loads(path.read_bytes())
        manifest["seal"]["key_id"] = other.key_id
        body = json.dumps(manifest).encode()
        path.write_bytes(body)
        (directory / SIGNATURE).write_bytes(Sealer(sealer.algorithm, other, "x").signature(body))


EXPECTED = {
    "file": ["tracks/p1_0.webm: {label} differs from the manifest"],
    "timeline": [
        "timeline.jsonl: content differs from the manifest",
        "timeline.jsonl: event edited at position 2 (seq 2, chat.message)",
    ],
    "manifest": ["manifest.json: changed after it was signed"],
    "signature": ["manifest.sig: the signature does not verify (it was altered)"],
    "signature_missing": ["manifest.sig: missing (the manifest says {key} signed it)"],
    "seal_removed": [
        "manifest.json: has no seal, but manifest.sig is there (the seal was taken out of "
        "the manifest)"
    ],
    "resigned": [
        "manifest.sig: signed with key {other}, which is not among the configured public "
        "keys (seal_public_keys)"
    ],
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_tampering_is_reported_precisely(tmp_path: Path, algorithm: str) -> None:
    label = "SM3" if algorithm == "sm2-sm3" else "SHA-256"
    for what, expected in EXPECTED.items():
        work = tmp_path / what
        archive_dir, sealer = _seal(work, algorithm)
        assert sealer is not None
        _tamper(archive_dir / CASE / SID, what, sealer)
        other = (
            signing.load(work / "intruder.pem", sealer.key.public.kind).key_id
            if what == "resigned"
            else ""
        )
        want = [e.format(label=label, key=sealer.key.key_id, other=other) for e in expected]
        report = _check(archive_dir, sealer)
        if what == "seal_removed" and algorithm == "sm2-sm3":
            # Read as a legacy SHA-256 manifest, its SM3 digests all differ too.
            assert report.problems[0] == want[0]
            continue
        assert report.problems == want, what


def test_a_seal_by_a_key_not_configured_is_told_apart(tmp_path: Path) -> None:
    archive_dir, sealer = _seal(tmp_path, "ed25519-sha256")
    assert sealer is not None
    # Trusted keys given, but not this one: unknown, and said which.
    other = signing.load_or_create(tmp_path / "other.pem", "ed25519-sha256")
    report = _check(archive_dir, sealer, keys=public_keys({}, other))
    assert report.problems == [
        f"manifest.sig: signed with key {sealer.key.key_id}, which is not among the "
        "configured public keys (seal_public_keys)"
    ]
    # No keys at all (a library caller): checked with the key it carries, and said so.
    report = _check(archive_dir, sealer, keys=None)
    assert report.ok
    assert report.notes == [
        f"signed by {sealer.key.key_id} (node node-a); no public keys given to trust"
    ]
    # Listed in the configuration (by its fingerprint id): trusted.
    configured = {sealer.key.key_id: sealer.key.public.text}
    assert _check(archive_dir, sealer, keys=public_keys(configured)).ok


def test_public_keys_in_the_configuration(tmp_path: Path) -> None:
    ed = signing.load_or_create(tmp_path / "a.pem", "ed25519-sha256")
    sm = signing.load_or_create(tmp_path / "b.pem", "sm2-sm3")
    toml = tmp_path / "jr.toml"
    toml.write_text(
        f'seal_algorithm = "sm2-sm3"\n[seal_public_keys]\n"{ed.key_id}" = "{ed.public.text}"\n'
        f'"{sm.key_id}" = "{sm.public.text}"\n'
    )
    config = load_config(config_file=toml, environ={})
    assert public_keys(config.seal_public_keys) == {ed.key_id: ed.public, sm.key_id: sm.public}
    env = {"JR_SEAL_PUBLIC_KEYS": json.dumps({ed.key_id: ed.public.text})}
    assert load_config(environ=env).seal_public_keys == {ed.key_id: ed.public.text}
    # An id that is not the key's fingerprint (a line pasted under the wrong name).
    bad = {"JR_SEAL_PUBLIC_KEYS": json.dumps({sm.key_id: ed.public.text})}
    with pytest.raises(ConfigError, match=f"that key's id is {ed.key_id}"):
        load_config(environ=bad)
    point = bytearray(sm.public.raw)
    point[-1] ^= 1
    off_curve = {"x": "sm2:" + base64.b64encode(bytes(point)).decode()}
    with pytest.raises(ConfigError, match="not a point of the SM2 curve"):
        load_config(environ={"JR_SEAL_PUBLIC_KEYS": json.dumps(off_curve)})


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_key_file_is_made_once_and_private(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "keys" / "seal.pem"
    key = signing.load_or_create(path, algorithm)
    assert path.stat().st_mode & 0o777 == 0o600
    assert signing.load_or_create(path, algorithm) == key  # kept, not made again
    other = "sm2-sm3" if algorithm == "ed25519-sha256" else "ed25519-sha256"
    with pytest.raises(signing.SealKeyError, match=r"not an? (Ed25519|SM2) key"):
        signing.load_or_create(path, other)


def _openssl_sm2() -> bool:
    openssl = shutil.which("openssl")
    if openssl is None:
        return False
    out = subprocess.run(
        [openssl, "list", "-public-key-algorithms"], capture_output=True, text=True
    )
    return "SM2" in out.stdout


def test_sm2_signatures_agree_with_openssl(tmp_path: Path) -> None:
    """Our SM2 (gmssl) and OpenSSL's check each other: the same standard, the same
    default ID, DER signatures; and a key OpenSSL made is one a node can use."""
    assert _openssl_sm2(), "the openssl command with SM2 is part of scripts/setup --test"
    msg = tmp_path / "msg"
    msg.write_bytes("联审会办 manifest".encode())
    key = signing.load_or_create(tmp_path / "ours.pem", "sm2-sm3")
    (tmp_path / "ours.sig").write_bytes(key.sign(msg.read_bytes()))
    opts = ["-rawin", "-digest", "sm3", "-pkeyopt", "distid:1234567812345678"]

    def openssl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=tmp_path)

    assert openssl("pkey", "-in", "ours.pem", "-pubout", "-out", "ours.pub").returncode == 0
    ok = openssl("pkeyutl", "-verify", "-pubin", "-inkey", "ours.pub", "-in", "msg",
                 "-sigfile", "ours.sig", *opts)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert openssl("genpkey", "-algorithm", "SM2", "-out", "theirs.pem").returncode == 0
    signed = openssl("pkeyutl", "-sign", "-inkey", "theirs.pem", "-in", "msg",
                     "-out", "theirs.sig", *opts)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    theirs = signing.load(tmp_path / "theirs.pem", "sm2")
    sig = (tmp_path / "theirs.sig").read_bytes()
    assert theirs.public.verify(sig, msg.read_bytes())
    assert not theirs.public.verify(sig, msg.read_bytes() + b".")
    assert not key.public.verify(sig, msg.read_bytes())


async def test_a_node_seals_with_sm2_and_verify_checks_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the node makes its key on first start, seals with SM2/SM3, records
    the signer in ``archive.sealed``; ``jointreview verify`` trusts the node's own key
    and reports a seal stripped from the manifest."""
    from signaling.auth import TokenService

    config = make_config(tmp_path, seal_algorithm="sm2-sm3")
    monkeypatch.setenv("JR_SEAL_ALGORITHM", "sm2-sm3")  # for the commands below
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(TokenService(config))
        directory = await _sealed_session(client, tok, config)
        # The case file's index gives each file's SM3, and offers the signature.
        r = await client.get(
            f"/api/sessions/{directory.name}/casefile", headers=auth(tok.supervisor())
        )
        assert r.status == 200, await r.text()
        listed = {f["path"]: f for f in (await r.json())["files"]}
        assert listed["manifest.sig"]["kind"] == "signature"
        still = next(f for f in listed.values() if f["kind"] == "still")
        body = await (await client.get(still["url"], headers=auth(tok.supervisor()))).read()
        assert still["sm3"] == hashlib.new("sm3", body).hexdigest() and still["sha256"] is None
    key = config.data_dir / "seal-sm2.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    manifest = json.loads((directory / "manifest.json").read_bytes())
    assert manifest["seal"]["algorithm"] == "sm2-sm3"
    assert all("sm3" in f for f in manifest["files"]) and manifest["files"]
    key_id = manifest["seal"]["key_id"]

    async def verify() -> tuple[int, str]:
        capsys.readouterr()
        args = ["verify", CASE, "--data-dir", str(config.data_dir)]
        code = await asyncio.to_thread(cli.main, args)
        return code, capsys.readouterr().out

    capsys.readouterr()
    assert cli.main(["seal-key", "--data-dir", str(config.data_dir)]) == 0
    assert f'"{key_id}" = "sm2:' in capsys.readouterr().out  # the line for the others
    monkeypatch.setenv("JR_SEAL_ALGORITHM", "ed25519-sha256")  # switched since: still known
    code, out = await verify()
    assert code == 0, out
    assert f"events match; signed by {key_id} (node " in out and "sm2-sm3" in out
    del manifest["seal"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    code, out = await verify()
    assert code == 1
    assert "manifest.json: has no seal, but manifest.sig is there" in out
    assert f"manifest.json: unsigned, but the store recorded it sealed by {key_id}" in out
