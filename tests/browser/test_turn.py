"""Media through a real TURN server (Debian's coturn, issue #17): with
``ice_transport_policy = "relay"`` the pages may reach the SFU only through coturn, over
TURN/TCP or TURN/TLS (what a firewall that blocks UDP between zones leaves), and the
reviewer's page still decodes the clerk's video.

coturn runs as the deployment runs it (deploy/coturn/turnserver.conf): ``use-auth-secret``
with the server's ``turn_secret`` (TURN REST credentials in ``welcome``), a realm, a
relay port range; here on loopback ports of its own with a self-signed certificate.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import Browser, Playwright

from bench.chromium import FLAGS
from media_server.settings import turn_credentials
from signaling.auth import TokenService
from tests.conftest import ServerProcess, free_port, wait_port

from .conftest import Api, Person, launch
from .helpers import open_review, participant_id, wait_joined, wait_video_from

TURNSERVER = "/usr/bin/turnserver"
UCLIENT = "/usr/bin/turnutils_uclient"  # coturn's test client
SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "coturn" / "turnserver.conf"
SECRET = "turn-shared-secret-for-the-test"
REALM = "jointreview.test"

# The selected candidate pair of the page's transport: its local candidate's type and
# relay protocol (tcp/tls/udp), and the video frames decoded so far.
PATH_JS = """async () => {
  const pc = window.jr && window.jr.media && window.jr.media.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null, frames = 0;
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      pair = stats.get(s.selectedCandidatePairId);
    }
    if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded || 0;
  });
  const local = pair && stats.get(pair.localCandidateId);
  const gathered = [];
  stats.forEach((s) => s.type === "local-candidate" && gathered.push(s.candidateType));
  return {
    type: local && local.candidateType,
    relayProtocol: local && local.relayProtocol,
    frames,
    gathered,
  };
}"""


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made for this run (no CA signs it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "turn.jointreview.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "turn.crt", folder / "turn.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def spki_hash(cert_file: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what Chromium's
    --ignore-certificate-errors-spki-list takes."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return base64.b64encode(digest.finalize()).decode()


class Coturn:
    """One turnserver process on free loopback ports, configured like the shipped file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port, self.tls_port = free_port(), free_port()
        cert, key = self_signed(folder)
        self.spki = spki_hash(cert)
        relay_min = 50_000 + self.port % 10_000  # a range of its own, near-certainly free
        # The shipped file's policy (auth, quotas, denied and allowed peers, TLS
        # versions...) with this machine's addresses, ports, secret and files.
        site = {
            "listening-ip": "127.0.0.1",
            "relay-ip": "127.0.0.1",
            "listening-port": str(self.port),
            "tls-listening-port": str(self.tls_port),
            "min-port": str(relay_min),
            "max-port": str(relay_min + 99),
            "static-auth-secret": SECRET,
            "realm": REALM,
            "cert": str(cert),
            "pkey": str(key),
            # The SFU listens on loopback here (an intranet address in production), so
            # loopback is the allowed peer; coturn bans loopback unless told.
            "allowed-peer-ip": "127.0.0.1",
            "allow-loopback-peers": "",
            "userdb": str(folder / "turndb"),  # not /var/lib/turn
            "log-file": str(folder / "turn.log"),
            "no-stdout-log": "",
        }
        kept = [
            line
            for line in SHIPPED.read_text().splitlines()
            if line.strip()
            and not line.startswith("#")
            and line.split("=")[0] not in {*site, "syslog"}
        ]
        lines = [*kept, *(f"{k}={v}" if v else k for k, v in site.items())]
        self.conf = folder / "turnserver.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Coturn:
        self.proc = subprocess.Popen(
            [TURNSERVER, "-c", str(self.conf), "--pidfile", str(self.folder / "turn.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, proc=self.proc)
        wait_port(self.tls_port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # coturn's threads can be slow to stop
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        path = self.folder / "turn.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    if not Path(TURNSERVER).exists():
        pytest.fail(f"{TURNSERVER} is missing: run scripts/setup --test (installs coturn)")
    turn = Coturn(tmp_path_factory.mktemp("coturn")).start()
    yield turn
    turn.stop()


@pytest.fixture(scope="module")
def browser(playwright: Playwright, coturn: Coturn) -> Iterator[Browser]:
    """Chromium that accepts the test's self-signed TURN certificate, and only it."""
    b = launch(playwright, [*FLAGS, f"--ignore-certificate-errors-spki-list={coturn.spki}"])
    yield b
    b.close()


@pytest.fixture(scope="module", params=["tcp", "tls"])
def server(
    request: pytest.FixtureRequest, coturn: Coturn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A node that hands out only this transport's TURN URL, and relay as the policy."""
    if request.param == "tcp":
        url = f"turn:127.0.0.1:{coturn.port}?transport=tcp"
    else:
        url = f"turns:127.0.0.1:{coturn.tls_port}?transport=tcp"
    root = tmp_path_factory.mktemp(f"jr-turn-{request.param}")
    proc = ServerProcess(
        root / "data",
        env={
            "JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]',
            "JR_ICE_SERVERS": json.dumps([{"urls": [url]}]),
            "JR_TURN_SECRET": SECRET,
            "JR_ICE_TRANSPORT_POLICY": "relay",
        },
    ).start()
    proc.turn_transport = request.param  # type: ignore[attr-defined]
    yield proc
    if proc.proc is not None:
        proc.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_reviewer_decodes_the_clerk_through_turn_only(
    people: Callable[..., Person],
    tokens: TokenService,
    http: Api,
    server: ServerProcess,
    coturn: Coturn,
) -> None:
    transport: str = server.turn_transport  # type: ignore[attr-defined]
    sid, clerk_token, reviewer_token = open_review(http, tokens, f"GZ-TURN-{transport.upper()}")
    clerk, reviewer = people("clerk"), people("reviewer")
    clerk.open(f"/session/{sid}", clerk_token)
    clerk_pid = wait_joined(clerk.page)
    reviewer.open(f"/session/{sid}", reviewer_token)
    participant_id(reviewer.page)

    # The page was told relay, with credentials minted from turn_secret.
    welcome: dict[str, Any] = reviewer.page.evaluate(
        "() => { const w = window.jr.media.signal.welcome;"
        " return {policy: w.ice_transport_policy, servers: w.ice_servers}; }"
    )
    assert welcome["policy"] == "relay"
    [entry] = welcome["servers"]
    assert entry["username"].endswith(":rev-city-amr-1") and entry["credential"]

    try:
        wait_video_from(reviewer.page, [clerk_pid], timeout=20_000)
        first = reviewer.page.evaluate(PATH_JS)
        # Still decoding: framesDecoded goes on rising over the relayed path.
        reviewer.page.wait_for_function(
            f"async () => ((await ({PATH_JS})()) || {{frames: 0}}).frames > {first['frames']}",
            polling=200,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncoturn log:\n{coturn.log()}") from exc
    path = reviewer.page.evaluate(PATH_JS)
    # Only relay candidates were gathered, and the media goes through the relay over the
    # transport under test.
    assert set(path["gathered"]) == {"relay"}, path
    assert (path["type"], path["relayProtocol"]) == ("relay", transport), path


def test_the_relay_refuses_peers_that_are_not_media_nodes(coturn: Coturn) -> None:
    """The shipped policy: every peer denied but the media nodes' (here 127.0.0.1), so
    TURN is no way into the intranet; and only credentials from the shared secret."""
    user, password = turn_credentials(SECRET, "check", 600)

    def relay(to: str, secret: str) -> str:
        args = [UCLIENT, "-t", "-u", user, "-w", secret, "-e", to, "-r", "40000"]
        args += ["-n", "1", "-m", "1", "-p", str(coturn.port), "127.0.0.1"]
        run = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return run.stdout + run.stderr

    assert "403 (Forbidden IP)" in relay("10.1.2.3", password)
    assert "Cannot complete Allocation" in relay("127.0.0.1", "not-the-password")
