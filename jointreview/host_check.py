"""The start-up check of the media server's host addresses.

With no ``media_listen_ips``, the SFU offers every address of the machine, which aioice
lists through a netlink socket. A sandbox that forbids AF_NETLINK (systemd's
``RestrictAddressFamilies=`` without it) lets the node start and then fails every call's
ICE gathering with ``OSError [Errno 97]``, deep in a traceback, while the page waits for
media that never comes. ``jointreview serve`` runs this check first and stops with a
message saying what to change instead (exit status 2, a configuration error: the unit
does not restart it).
"""

from __future__ import annotations

import errno

from media_server import aiortc_adapter
from signaling.config import Config

# What a sandbox answers socket(AF_NETLINK, ...) with: systemd's filter EAFNOSUPPORT;
# others EPERM or EACCES.
_FORBIDDEN = (errno.EAFNOSUPPORT, errno.EPERM, errno.EACCES)


def media_address_problem(config: Config) -> str | None:
    """None when the SFU can gather its host candidates; else the message to stop with."""
    if not config.media_enabled or config.media_listen_ips:
        return None  # the addresses are given (or no media here): nothing is listed
    try:
        aiortc_adapter.host_addresses(True, True)
    except OSError as exc:
        why = (
            "this process may not open an AF_NETLINK socket, which listing them needs"
            if exc.errno in _FORBIDDEN
            else "listing them failed"
        )
        return (
            f"the media server cannot list this machine's network addresses ({exc}): {why}. "
            "Either allow AF_NETLINK (systemd: RestrictAddressFamilies=AF_UNIX AF_INET "
            "AF_INET6 AF_NETLINK, as deploy/jointreview.service has), or set "
            "media_listen_ips (JR_MEDIA_LISTEN_IPS, [media] listen_ips) to the addresses "
            "the SFU must offer."
        )
    return None
