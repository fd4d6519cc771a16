"""Who is on the other end of a request: the peer, or the client a trusted proxy names.

``X-Forwarded-For`` is believed only when the peer itself is a trusted proxy (setting
``trusted_proxies``); then the address taken is the rightmost one not itself a trusted
proxy, since everything left of that could have been written by the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in trusted)


def _trusted(addr: str, nets: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def resolve(peer: str | None, forwarded_for: str | None, trusted: tuple[str, ...]) -> str:
    """The client's address (sans-IO: the table test feeds it strings)."""
    peer = peer or "unknown"
    if not trusted or forwarded_for is None:
        return peer
    nets = networks(trusted)
    if not _trusted(peer, nets):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, nets):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage where an address should be: keep what we know
    return hops[0] if hops else peer


def client_address(request: web.BaseRequest, trusted: tuple[str, ...]) -> str:
    return resolve(request.remote, request.headers.get("X-Forwarded-For"), trusted)
