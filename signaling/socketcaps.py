"""The node's guards against one link or one address taking it down (docs/protocol.md,
"Limits"): how many sockets an identity and an address hold, and the rate buckets that
live as long as the app (per identity, sign-in per address).

Counting is exact: a socket is counted from admission (before the upgrade) until its
handler's ``finally`` releases it, so a flood of concurrent connects can never hold more
than the caps however the upgrades interleave.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from .clientaddr import client_address
from .config import Config
from .limits import KeyedBuckets, retry_ms

CLOSE_TOO_MANY_SOCKETS = 4408


class Closable(Protocol):
    def evict(self) -> None:
        """Tell the client why and close the socket (it is the identity's oldest)."""


class SocketRegistry:
    """Open sockets by identity (oldest first) and by client address."""

    def __init__(self, per_identity: int, per_address: int) -> None:
        self.per_identity = per_identity
        self.per_address = per_address
        self.by_address: dict[str, int] = {}
        self.by_identity: dict[str, OrderedDict[int, Closable]] = {}

    def admit(self, address: str) -> bool:
        """Count one more socket from ``address``; False (and nothing counted) at the cap."""
        n = self.by_address.get(address, 0)
        if n >= self.per_address:
            return False
        self.by_address[address] = n + 1
        return True

    def attach(self, sub: str, conn: Closable) -> None:
        """The socket of ``sub`` is up; the oldest ones over the cap are closed."""
        mine = self.by_identity.setdefault(sub, OrderedDict())
        mine[id(conn)] = conn
        while len(mine) > self.per_identity:
            _, oldest = mine.popitem(last=False)
            oldest.evict()  # no longer counted: its own release finds nothing to remove

    def release(self, address: str, sub: str | None, conn: Closable | None) -> None:
        n = self.by_address.get(address, 0) - 1
        if n > 0:
            self.by_address[address] = n
        else:
            self.by_address.pop(address, None)
        if sub is not None and conn is not None:
            mine = self.by_identity.get(sub)
            if mine is not None:
                mine.pop(id(conn), None)
                if not mine:
                    del self.by_identity[sub]


@dataclass
class Guards:
    """The app's limiters (one per node), made from the settings."""

    config: Config
    clock: Callable[[], float] = time.monotonic
    sockets: SocketRegistry = field(init=False)
    identities: KeyedBuckets = field(init=False)
    signins: KeyedBuckets = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.sockets = SocketRegistry(c.max_sockets_per_identity, c.max_sockets_per_address)
        self.identities = KeyedBuckets(c.identity_burst, c.identity_rate_per_s)
        # A minute's attempts at once, then one per 60/n seconds.
        self.signins = KeyedBuckets(c.signin_per_minute, c.signin_per_minute / 60.0)


class Slot:
    """One admitted socket: attach its connection once up, release it in ``finally``."""

    def __init__(self, registry: SocketRegistry, address: str, sub: str) -> None:
        self.registry, self.address, self.sub = registry, address, sub
        self.conn: Closable | None = None

    def attach(self, conn: Closable) -> None:
        self.conn = conn
        self.registry.attach(self.sub, conn)

    def release(self) -> None:
        self.registry.release(self.address, self.sub, self.conn)


def admit(request: web.Request, sub: str) -> Slot | web.Response:
    """A slot for a new socket of ``sub``, or a 429 (before the upgrade) when the client's
    address holds ``max_sockets_per_address`` already."""
    from .api import json_error
    from .appkeys import GUARDS

    guards = request.app[GUARDS]
    address = client_address(request, tuple(guards.config.trusted_proxies))
    registry = guards.sockets
    if not registry.admit(address):
        return json_error(
            429,
            "too_many_sockets",
            f"this address holds {registry.per_address} sockets already "
            "(max_sockets_per_address); close one first",
        )
    return Slot(registry, address, sub)


def signin_limited(request: web.Request) -> web.Response | None:
    """A 429 when the client's address has used its sign-in attempts of the minute."""
    from .appkeys import GUARDS

    guards = request.app[GUARDS]
    address = client_address(request, tuple(guards.config.trusted_proxies))
    wait = guards.signins.take(address, guards.clock())
    if wait is None:
        return None
    ms = retry_ms(wait)
    err = {
        "code": "rate_limited",
        "message": f"too many sign-in attempts from this address (signin_per_minute="
        f"{guards.config.signin_per_minute}); retry in {ms} ms",
        "retry_after_ms": ms,
    }
    return web.json_response(
        {"error": err}, status=429, headers={"Retry-After": str(-(-ms // 1000))}
    )
