"""Network and codec settings of the media server, and TURN REST credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from .forwarder import Bitrate


@dataclass
class MediaSettings:
    # Addresses to gather host candidates on (loopback allowed); empty: every interface,
    # loopback included.
    listen_ips: list[str] = field(default_factory=list)
    # The address clients must use, when it differs from the bound one (NAT, containers).
    announced_ip: str = ""
    port_range: tuple[int, int] | None = None
    # STUN/TURN servers: handed to clients; TURN with a shared secret (coturn
    # use-auth-secret) gets time-limited credentials.
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    turn_secret: str = ""
    turn_ttl_s: int = 6 * 3600
    video_codecs: list[str] = field(default_factory=lambda: ["video/VP8", "video/H264"])
    min_bitrate: int = 150_000
    max_bitrate: int = 2_500_000
    # A subscriber whose link carries less video than this has it paused (audio goes
    # on) rather than dragging the publisher, and everyone else, below it. 0: never.
    video_floor_bitrate: int = 150_000
    # "forward": the SFU. "transcode": aiortc's MediaRelay, decoding and re-encoding for
    # every subscriber: the usual Python "SFU", kept only as the benchmark's baseline.
    mode: str = "forward"
    # A participant's sustained trouble reported to the supervisors (``quality``): mean
    # loss over 10 s of what reaches the SFU from them, or seconds without a camera frame.
    quality_loss: float = 0.05
    quality_frozen_s: float = 3.0

    def bitrate(self) -> Bitrate:
        return Bitrate(self.min_bitrate, self.max_bitrate, self.video_floor_bitrate)

    def client_ice_servers(self, user: str, now: float | None = None) -> list[dict[str, Any]]:
        return [self._with_credentials(s, user, now) for s in self.ice_servers]

    def server_ice_servers(self) -> list[dict[str, Any]]:
        # The server has a routable host address: it needs no STUN, and relaying its
        # side through TURN would only add a hop. Clients get the TURN servers.
        return []

    def _with_credentials(
        self, server: dict[str, Any], user: str, now: float | None
    ) -> dict[str, Any]:
        urls = server.get("urls", [])
        is_turn = any(str(u).startswith(("turn:", "turns:")) for u in urls)
        if not is_turn or not self.turn_secret or server.get("credential"):
            return dict(server)
        username, password = turn_credentials(self.turn_secret, user, self.turn_ttl_s, now)
        return {**server, "username": username, "credential": password}


def turn_credentials(
    secret: str, user: str, ttl_s: int, now: float | None = None
) -> tuple[str, str]:
    """coturn's TURN REST scheme: username "<expiry>:<user>", password
    base64(HMAC-SHA1(secret, username))."""
    expiry = int((now if now is not None else time.time()) + ttl_s)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()
