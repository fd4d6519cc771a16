"""The checks of ``jointreview check-config`` that need no network: identity keys, the
files the settings name, the directory, the HTTP listener, the media addresses and
ports, the ICE/TURN servers handed to browsers, and exposure. Each adds findings to a
``Report``; none changes anything on disk."""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs

from signaling.config import Config, ConfigError, is_loopback

from .version import EXIT_CONFIG, EXIT_OK, EXIT_UNREACHABLE

Level = Literal["ok", "warning", "error", "unreachable"]


@dataclass
class Report:
    """What the checks found, in order."""

    findings: list[tuple[Level, str, str]] = field(default_factory=list)

    def add(self, level: Level, area: str, text: str) -> None:
        # A message that names its setting already (ConfigError's) is not named twice.
        self.findings.append((level, area, text.removeprefix(f"{area}: ")))

    def ok(self, area: str, text: str) -> None:
        self.add("ok", area, text)

    def warning(self, area: str, text: str) -> None:
        self.add("warning", area, text)

    def error(self, area: str, text: str) -> None:
        self.add("error", area, text)

    def unreachable(self, area: str, text: str) -> None:
        self.add("unreachable", area, text)

    def count(self, level: Level) -> int:
        return sum(1 for f in self.findings if f[0] == level)

    @property
    def exit_code(self) -> int:
        if self.count("error"):
            return EXIT_CONFIG
        if self.count("unreachable"):
            return EXIT_UNREACHABLE
        return EXIT_OK


def check_keys(config: Config, report: Report) -> None:
    """The token keys, as the server reads them at start (signaling/auth.py)."""
    if config.jwt_algorithm == "HS256" and not config.jwt_secret:
        # The server would generate one into data_dir: not done here (nothing written).
        stored = config.data_dir / "jwt_secret"
        if stored.is_file():
            report.ok("jwt", f"HS256 with the secret generated into {stored}")
        else:
            report.ok("jwt", f"HS256; a secret is generated into {stored} at first start")
        if config.redis_url:
            report.warning(
                "jwt",
                "several nodes on one Redis need one shared jwt_secret (or an RS256/ES256 "
                "public key); each node would generate its own",
            )
        return
    from signaling.auth import TokenService

    try:
        tokens = TokenService(config)
    except ConfigError as exc:
        report.error("jwt", str(exc))
        return
    signs = "signs and verifies" if tokens.can_sign else "verifies only (no private key)"
    report.ok("jwt", f"{config.jwt_algorithm} {signs}")
    private = config.jwt_private_key_file
    if private is not None and private.is_file() and private.stat().st_mode & 0o077:
        report.warning("jwt", f"jwt_private_key_file {private} is readable by others (chmod 600)")


def check_files(config: Config, report: Report) -> None:
    """The fonts: the opinion sheet's (every sealed case file has one) and the names
    burned into exports."""
    from recording import sheet, sheet_font
    from recording.layout import find_font

    explicit = config.opinion_sheet_font
    try:
        font = sheet_font.find_font(explicit)
        report.ok("opinion_sheet_font", str(font))
    except sheet.FontMissing as exc:
        (report.error if explicit else report.warning)("opinion_sheet_font", str(exc))
    names = find_font(str(config.export_font) if config.export_font else None)
    if config.export_font and names is None:
        report.error("export_font", f"{config.export_font} does not exist")
    elif names is None:
        report.warning(
            "export_font", "no font for the names in exports: apt-get install fonts-noto-cjk"
        )


def check_directory(config: Config, report: Report) -> None:
    from signaling.directory import load_directory

    try:
        d = load_directory(config.directory_file)
    except ConfigError as exc:
        report.error("directory_file", str(exc))
        return
    where = config.directory_file or "the packaged demo directory"
    report.ok("directory_file", f"{where}: {len(d.departments)} departments, {len(d.users)} users")
    if config.directory_file is None and not config.demo_on:
        report.warning("directory_file", "not set: the demo departments are offered; set your own")


def check_http(config: Config, report: Report) -> None:
    """The HTTP listener: an address of this machine, a port that can be bound."""
    if config.port == 0:
        report.warning("port", "0: a random free port; nginx cannot know it")
        return
    try:
        infos = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        report.error("host", f"{config.host!r} does not resolve: {exc.strerror}")
        return
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                report.warning(
                    "port", f"{config.host}:{config.port} is in use (a node running already?)"
                )
            elif exc.errno == errno.EACCES:
                report.error(
                    "port",
                    f"{config.port}: below 1024 needs root or CAP_NET_BIND_SERVICE; use 8480 "
                    "behind nginx",
                )
            else:
                report.error("host", f"cannot listen on {config.host}:{config.port}: {exc}")
            return
    report.ok("http", f"can listen on {config.host}:{config.port}")


def check_media(config: Config, report: Report) -> None:
    """The SFU's UDP side: its addresses are this machine's, its port range splits
    between the media workers, browsers are told a usable address."""
    if not config.media_enabled:
        report.ok("media", "media_enabled = false: this node hosts no media")
        return
    for ip in config.media_listen_ips:
        problem = _udp_bind_problem(ip)
        if problem:
            report.error("media_listen_ips", f"{ip}: {problem}")
    if not config.media_listen_ips:
        report.warning(
            "media_listen_ips",
            "empty: the SFU offers every interface's address (and needs AF_NETLINK to list "
            "them); name the addresses browsers reach",
        )
    if config.media_announced_ip:
        try:
            ipaddress.ip_address(config.media_announced_ip)
        except ValueError:
            report.error(
                "media_announced_ip", f"{config.media_announced_ip!r} is not an IP address"
            )
    _check_ports(config, report)


def _check_ports(config: Config, report: Report) -> None:
    from .app import media_workers
    from .media_hosts import split_ports

    workers = media_workers(config)
    if not config.media_port_min:
        report.warning(
            "media_port_min",
            "no UDP port range: any port is used; set media_port_min/max and open the "
            "range in the firewall",
        )
        return
    if config.media_port_min < 1024:
        report.error("media_port_min", f"{config.media_port_min}: below 1024 (privileged)")
        return
    ports = (config.media_port_min, config.media_port_max)
    try:
        shares = [split_ports(ports, workers, i) for i in range(workers)]
    except ValueError as exc:
        report.error("media_port_min", str(exc))
        return
    size = config.media_port_max - config.media_port_min + 1
    report.ok(
        "media", f"UDP {ports[0]}-{ports[1]} ({size} ports) over {workers} worker(s): {shares}"
    )


def _udp_bind_problem(ip: str) -> str | None:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    except ValueError:
        return "not an IP address"
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return "not an address of this machine"
            return str(exc)
    return None


TURN_SCHEMES = ("stun", "stuns", "turn", "turns")


def check_turn(config: Config, report: Report) -> None:
    """ICE servers as browsers will get them: known schemes, TURN with credentials
    (turn_secret for coturn's use-auth-secret, or fixed ones), TURN that crosses a
    firewall that blocks UDP (TCP, or TLS on 443)."""
    turn_urls: list[str] = []
    over_tcp: list[str] = []  # turns: (TLS) and turn:...?transport=tcp cross UDP blocks
    for server in config.ice_servers:
        for url in server.urls:
            scheme, _, rest = url.partition(":")
            if scheme not in TURN_SCHEMES or not rest:
                report.error("ice_servers", f"{url!r}: expected stun:, stuns:, turn: or turns:")
                continue
            query = parse_qs(rest.partition("?")[2])
            default = "tcp" if scheme == "turns" else "udp"  # TLS runs over TCP
            transport = (query.get("transport") or [default])[-1].lower()
            if transport not in ("udp", "tcp"):
                report.error("ice_servers", f"{url!r}: transport must be udp or tcp")
            if scheme == "turns" and transport == "udp":
                report.error("ice_servers", f"{url!r}: turns: (TLS) runs over TCP, not UDP")
            if not scheme.startswith("turn"):
                continue
            turn_urls.append(url)
            if transport == "tcp":
                over_tcp.append(url)
            if not config.turn_secret and not (server.username and server.credential):
                report.error(
                    "ice_servers",
                    f"{url!r}: no credentials: set turn_secret (coturn use-auth-secret) or "
                    "username and credential",
                )
    if config.turn_secret and not turn_urls:
        report.warning("turn_secret", "set, but ice_servers lists no turn: or turns: URL")
    if not turn_urls:
        report.ok("turn", "no TURN server: browsers must reach the media ports over UDP")
        return
    if not over_tcp:
        report.warning(
            "turn",
            "TURN over UDP only: reviewers behind a firewall that blocks UDP get no media; "
            "add turn:...?transport=tcp and turns:...:443?transport=tcp",
        )
    else:
        report.ok("turn", f"{len(turn_urls)} TURN URL(s), {len(over_tcp)} over TCP/TLS")


def check_exposure(config: Config, report: Report) -> None:
    """What the server itself warns about at start, said before it starts."""
    if config.demo_on and not is_loopback(config.host):
        report.warning(
            "demo_enabled",
            f"demo sign-in is on while listening on {config.host}: anyone who reaches it "
            "may sign in as any user, admin included",
        )
    if not is_loopback(config.host) and not config.public_url:
        report.warning("public_url", "not set: links handed out name the listener address")
    elif config.public_url.startswith("http://") and not config.demo_on:
        report.warning(
            "public_url", "http://: browsers allow camera and microphone only over HTTPS"
        )
    if config.redis_url and not config.node_id:
        report.warning("node_id", "not set: after a crash a node cannot recognise its slots")
    if config.redis_url and not config.database_url:
        report.warning(
            "database_url",
            "empty with redis_url: each node keeps its own SQLite record; set a shared "
            "PostgreSQL (docs/history.md)",
        )
