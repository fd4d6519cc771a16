"""SDP text adjustments the SFU makes around aiortc (no asyncio, no parsing beyond lines)."""

from __future__ import annotations

MAX_SDP_BYTES = 64 * 1024


class SdpError(ValueError):
    pass


def check_offer(sdp: str) -> None:
    """Refuse what aiortc would choke on with a message a client developer can act on."""
    if len(sdp) > MAX_SDP_BYTES:
        raise SdpError(f"SDP larger than {MAX_SDP_BYTES} bytes")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if not lines or not lines[0].startswith("v=0"):
        raise SdpError("SDP must start with v=0")
    if not any(line.startswith("m=") for line in lines):
        raise SdpError("SDP has no media section")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        raise SdpError("SDP has no DTLS fingerprint")
    if not any(line.startswith("a=ice-ufrag:") for line in lines):
        raise SdpError("SDP has no ICE credentials")


def media_kinds(sdp: str) -> dict[str, str]:
    """mid -> kind ("audio", "video", ...) of every m-line that has a mid."""
    kinds: dict[str, str] = {}
    kind = None
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
        elif line.startswith("a=mid:") and kind is not None:
            kinds[line[len("a=mid:") :].strip()] = kind
    return kinds


def ice_ufrag(sdp: str) -> str | None:
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("a=ice-ufrag:"):
            return line[len("a=ice-ufrag:") :].strip()
    return None


def drop_mdns_candidates(sdp: str) -> str:
    """Browsers hide host addresses behind ``<uuid>.local`` names unless media permission
    was granted; the server cannot resolve them on a closed network, so it skips them
    (the browser still finds the server through the server's own candidates)."""
    out = []
    for line in sdp.split("\n"):  # CRLF or bare LF (check_offer accepts both): "\r" stays
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) > 4 and parts[4].endswith(".local"):
                continue
        out.append(line)
    return "\n".join(out)


def announce_address(sdp: str, announced: str) -> str:
    """Replace the address of our host candidates with the one clients must use (NAT,
    containers): the socket stays bound where it is."""
    if not announced:
        return sdp
    out = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:") and " typ host" in line:
            parts = line.split(" ")
            parts[4] = announced
            line = " ".join(parts)
        elif line.startswith("c=IN IP4 "):
            line = f"c=IN IP4 {announced}"
        out.append(line)
    return "\r\n".join(out)
