"""A Linux network namespace for one browser, behind the impairment relay (bench/impair.py),
for the network tests (tests/browser/test_network.py) and ``jointreview bench network``.

``Netns`` makes a namespace and a veth pair in a private test range (10.213.N.0/24: the
host side .1, the namespace .2), and removes both afterwards, even on failure. The
browser runs inside it through a wrapper script (``ip netns exec``); its only way to the
server (which listens on 127.0.0.1) is the relay on the host side's address: the page is
opened at ``http://10.213.N.1:<relay port>`` and the SFU announces 10.213.N.1 with a
fixed UDP port range that the relay covers. ``move()`` changes the namespace's address
(.2 → .3): the page's old flows die, as on a network that hands out a new address.

Needs root and iproute2 (``scripts/setup --test`` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .chromium import CHROMIUM_BIN
from .impair import Relay


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=10)


def usable() -> str:
    """Why namespaces cannot be used here ('' when they can)."""
    if shutil.which("ip") is None:
        return "iproute2 is missing: run scripts/setup --test"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return ""


class Netns:
    """One namespace, its veth pair and its relay (ports ``udp_ports`` and TCP to
    ``tcp_target``)."""

    def __init__(self, scratch: Path, udp_ports: range, tcp_target: int) -> None:
        n = 1 + os.getpid() % 250
        self.name = f"jrnet{os.getpid()}"
        self.host_if, self.ns_if = f"jrh{n}", f"jrn{n}"
        self.prefix = f"10.213.{n}"
        self.host_ip = f"{self.prefix}.1"
        self.ns_ip = f"{self.prefix}.2"
        self.scratch = scratch
        self.udp_ports = udp_ports
        self.tcp_target = tcp_target
        self.relay: Relay | None = None
        self.web_port = 0

    def __enter__(self) -> Netns:
        try:
            self._make()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _make(self) -> None:
        self.remove()  # a leftover of a killed run with our name
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        self._ns("ip", "link", "set", "lo", "up")
        self._ns("ip", "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
        self._ns("ip", "link", "set", self.ns_if, "up")
        self.relay = Relay(self.host_ip, "127.0.0.1", f"{self.prefix}.0/24").start()
        for port in self.udp_ports:
            self.relay.udp(port)
        self.web_port = self.relay.tcp(self.tcp_target)

    def _ns(self, *args: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.name, *args], check=True, capture_output=True, timeout=10
        )

    @property
    def url(self) -> str:
        return f"http://{self.host_ip}:{self.web_port}"

    def chromium(self) -> str:
        """An executable that starts Chromium inside the namespace (for Playwright)."""
        path = self.scratch / f"chromium-in-{self.name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {CHROMIUM_BIN} "$@"\n')
        path.chmod(0o755)
        return str(path)

    def move(self) -> str:
        """The namespace's address changes (.2 → .3, or back): its old flows die."""
        old = self.ns_ip
        new = f"{self.prefix}.3" if old.endswith(".2") else f"{self.prefix}.2"
        # Old first: deleting a primary address deletes its secondaries with it.
        self._ns("ip", "addr", "del", f"{old}/24", "dev", self.ns_if)
        self._ns("ip", "addr", "add", f"{new}/24", "dev", self.ns_if)
        self.ns_ip = new
        assert self.relay is not None
        self.relay.forget(old)
        return new

    def remove(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        _ip("link", "del", self.host_if, check=False)  # removes its peer too
        _ip("netns", "del", self.name, check=False)
