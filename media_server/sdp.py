"""SDP as text, around aiortc: an offer checked line by line before aiortc parses it
(``check_offer`` refuses what aiortc would choke on or misread), the few fields the SFU
reads from it (m-line kinds, ICE ufrag), and the edits made to offers and answers (mDNS
candidates dropped, the announced address written in). No asyncio, no aiortc."""

from __future__ import annotations

import re

MAX_SDP_BYTES = 64 * 1024
# Sanity bounds well above what browsers send (their longest line is a sha-512
# fingerprint or a candidate, ~220 bytes; a big room offers some tens of m-lines).
MAX_LINE_BYTES = 4096
MAX_MEDIA_SECTIONS = 128
MAX_CANDIDATES_PER_SECTION = 64  # each remote candidate costs ICE checks

SETUP_ROLES = ("actpass", "active", "passive")  # what aiortc understands ("holdconn" not)
FINGERPRINT_BYTES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}
DTLS_CHECKED = ("sha-256", "sha-384", "sha-512")  # the ones aiortc can verify
MEDIA_KINDS = ("audio", "video", "application")
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# fmtp parameters aiortc reads as integers
FMTP_INT_PARAMETERS = (
    "apt",
    "max-fr",
    "max-fs",
    "maxplaybackrate",
    "minptime",
    "stereo",
    "packetization-mode",  # int() when H.264 offers are matched
)
_U32 = 2**32 - 1

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+")
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_UINT = re.compile(r"[0-9]{1,10}")
_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})*")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_M_LINE = re.compile(r"m=(\S+) (\S+) (\S+)((?: \S+)*)")


class SdpError(ValueError):
    pass


def _uint(text: str, what: str, low: int, high: int) -> int:
    """A plain decimal in [low, high] ("-1", "1e3", " 5" and "٣" are refused)."""
    if not _UINT.fullmatch(text) or not low <= int(text) <= high:
        raise SdpError(f"{what} must be a whole number from {low} to {high}, not {text[:40]!r}")
    return int(text)


class _Section:
    """What the checks of one m-section need to remember."""

    def __init__(self, kind: str, formats: list[str]) -> None:
        self.kind = kind
        self.formats = formats
        self.rtpmap: set[int] = set()
        self.mids: list[str] = []
        self.candidates = 0
        self.fmtp: list[tuple[int, str]] = []  # checked once every rtpmap is known
        self.attrs: set[str] = set()  # the a= attribute names seen
        self.bundles: list[list[str]] = []  # a=group:BUNDLE mids (session level)


def check_offer(sdp: str) -> None:
    """Refuse what aiortc would choke on (or silently misread) with a message a client
    developer can act on. Sans-IO: line-level grammar only; every field aiortc parses
    (int(), dict lookups, splits) is checked here so that its parser never raises."""
    if len(sdp) > MAX_SDP_BYTES or len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise SdpError(f"SDP larger than {MAX_SDP_BYTES} bytes")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if not lines or not lines[0].startswith("v=0"):
        raise SdpError("SDP must start with v=0")
    if lines[-1] == "":
        lines.pop()  # the final line break
    session = _Section("session", [])
    sections: list[_Section] = []
    fingerprints: list[str] = []
    ufrags = pwds = 0
    for number, line in enumerate(lines, start=1):
        try:
            current = sections[-1] if sections else session
            if line.startswith("m="):
                current = _media_line(line)
                sections.append(current)
                if len(sections) > MAX_MEDIA_SECTIONS:
                    raise SdpError(f"more than {MAX_MEDIA_SECTIONS} media sections")
                continue
            attr, value = _line(line, number)
            if attr is not None:
                current.attrs.add(attr)
            if attr == "fingerprint":
                fingerprints.append(_fingerprint(value))
            elif attr == "ice-ufrag":
                _ice("ice-ufrag", value, 4)
                ufrags += 1
            elif attr == "ice-pwd":
                _ice("ice-pwd", value, 22)
                pwds += 1
            elif attr is not None:
                _attribute(current, attr, value)
        except SdpError as exc:
            raise SdpError(f"line {number}: {exc}") from None
    if not sections:
        raise SdpError("SDP has no media section")
    if not fingerprints:
        raise SdpError("SDP has no DTLS fingerprint")
    if not any(f in DTLS_CHECKED for f in fingerprints):
        raise SdpError(f"SDP has no DTLS fingerprint of {', '.join(DTLS_CHECKED)}")
    if not ufrags or not pwds:
        raise SdpError("SDP has no ICE credentials")
    _sections(session, sections)


def _line(line: str, number: int) -> tuple[str | None, str]:
    """(attribute, value) of an a= line, (None, "") for the other kinds of line."""
    if len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        raise SdpError(f"line longer than {MAX_LINE_BYTES} bytes")
    bad = _CONTROL.search(line)
    if bad is not None:
        what = (
            "a bare CR (lines end with CRLF or LF)"
            if bad.group() == "\r"
            else "a control character"
        )
        raise SdpError(f"contains {what}")
    if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
        raise SdpError(f"not an SDP line (<letter>=<value>): {line[:40]!r}")
    if number > 1 and line.startswith("v="):
        raise SdpError("a second v= line")
    if line.startswith("c="):
        _connection(line[2:])
        return None, ""
    if not line.startswith("a="):
        return None, ""
    attr, sep, value = line[2:].partition(":")
    if not sep and attr in _VALUED:
        raise SdpError(f"a={attr} needs a value")
    return attr, value


def _connection(value: str) -> None:
    parts = value.split(" ")
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6") or not parts[2]:
        raise SdpError(f"c= must be 'IN IP4|IP6 <address>', not {value[:40]!r}")


def _media_line(line: str) -> _Section:
    m = _M_LINE.fullmatch(line)
    if m is None or not m.group(4):
        raise SdpError(f"m-line must be 'm=<kind> <port> <proto> <format>...': {line[:60]!r}")
    kind, port, proto, formats = m.group(1), m.group(2), m.group(3), m.group(4).split()
    if kind not in MEDIA_KINDS:
        raise SdpError(f"m-line kind {kind[:20]!r} is not one of {', '.join(MEDIA_KINDS)}")
    _uint(port, "m-line port", 0, 65535)
    if not re.fullmatch(r"[A-Z/]+", proto):
        raise SdpError(f"m-line protocol {proto[:30]!r} is not a transport protocol")
    if kind in ("audio", "video"):
        for fmt in formats:
            pt = _uint(fmt, "m-line format (an RTP payload type)", 0, 127)
            if 72 <= pt <= 76:  # clash with RTCP packet types under rtcp-mux (RFC 5761)
                raise SdpError(f"m-line format {pt} is a forbidden payload type (72-76)")
    return _Section(kind, formats)


_VALUED = {
    "candidate",
    "extmap",
    "fingerprint",
    "fmtp",
    "group",
    "ice-pwd",
    "ice-ufrag",
    "max-message-size",
    "mid",
    "msid-semantic",
    "rtcp",
    "rtcp-fb",
    "rtpmap",
    "sctp-port",
    "sctpmap",
    "setup",
    "ssrc",
    "ssrc-group",
}


def _fingerprint(value: str) -> str:
    parts = value.split()
    if len(parts) != 2:
        raise SdpError("a=fingerprint must be '<hash> <hex:hex:...>'")
    algorithm, digest = parts[0].lower(), parts[1]
    size = FINGERPRINT_BYTES.get(algorithm)
    if size is None:
        raise SdpError(
            f"fingerprint hash {parts[0][:20]!r} is not one of {', '.join(FINGERPRINT_BYTES)}"
        )
    if not _HEX_PAIRS.fullmatch(digest) or len(digest) != 3 * size - 1:
        raise SdpError(f"a {algorithm} fingerprint is {size} hex pairs separated by ':'")
    return algorithm


def _ice(attr: str, value: str, shortest: int) -> None:
    if not (shortest <= len(value) <= 256 and _ICE_CHARS.fullmatch(value)):
        raise SdpError(f"{attr} must be {shortest} to 256 of A-Z a-z 0-9 + / (RFC 8839)")


def _attribute(section: _Section, attr: str, value: str) -> None:
    media = section.kind in ("audio", "video")
    if attr == "setup":
        if value not in SETUP_ROLES:
            raise SdpError(f"setup role {value[:20]!r} is not one of {', '.join(SETUP_ROLES)}")
    elif attr == "mid" and section.kind != "session":  # aiortc ignores a session mid
        if not (len(value) <= 64 and _TOKEN.fullmatch(value)):
            raise SdpError(f"mid {value[:40]!r} is not a token of at most 64 characters")
        section.mids.append(value)
    elif attr == "rtpmap" and media:
        _rtpmap(section, value)
    elif attr == "fmtp" and media:
        pt, sep, params = value.partition(" ")
        if not sep:
            raise SdpError("a=fmtp must be '<payload type> <parameters>'")
        section.fmtp.append((_uint(pt, "fmtp payload type", 0, 127), params))
    elif attr == "rtcp-fb" and media:
        parts = value.split(" ")
        if len(parts) < 2 or not parts[1]:
            raise SdpError("a=rtcp-fb must be '<payload type|*> <type> [<parameter>]'")
        if parts[0] != "*":
            _uint(parts[0], "rtcp-fb payload type", 0, 127)
    elif attr == "extmap":
        parts = value.split()
        if len(parts) != 2:
            raise SdpError("a=extmap must be '<id>[/<direction>] <uri>' (no extension attributes)")
        ident, _, direction = parts[0].partition("/")
        _uint(ident, "extmap id", 1, 255)
        if "/" in parts[0] and direction not in DIRECTIONS:
            raise SdpError(
                f"extmap direction {direction[:20]!r} is not one of {', '.join(DIRECTIONS)}"
            )
    elif attr == "candidate":
        _candidate(value)
        section.candidates += 1
        if section.candidates > MAX_CANDIDATES_PER_SECTION:
            raise SdpError(f"more than {MAX_CANDIDATES_PER_SECTION} candidates in one section")
    elif attr == "ssrc":
        ssrc, sep, desc = value.partition(" ")
        _uint(ssrc, "ssrc", 0, _U32)
        if not sep or ":" not in desc:
            raise SdpError("a=ssrc must be '<ssrc> <attribute>:<value>'")
    elif attr == "ssrc-group":
        parts = value.split()
        if not parts:
            raise SdpError("a=ssrc-group must name its semantics")
        for ssrc in parts[1:]:
            _uint(ssrc, "ssrc-group ssrc", 0, _U32)
    elif attr == "rtcp":
        port, sep, address = value.partition(" ")
        _uint(port, "rtcp port", 0, 65535)
        if sep:
            _connection(address)
    elif attr == "msid":
        parts = value.split(" ")
        if not 1 <= len(parts) <= 2 or not all(parts):
            raise SdpError("a=msid must be '<stream id> [<track id>]', one space apart")
    elif attr == "group":
        parts = value.split()
        if parts and parts[0] == "BUNDLE":
            section.bundles.append(parts[1:])
    elif attr in ("sctp-port", "max-message-size"):
        _uint(value, attr, 0, _U32)
    elif attr == "sctpmap":
        _uint(value.partition(" ")[0], "sctpmap port", 0, 65535)
        if " " not in value:
            raise SdpError("a=sctpmap must be '<port> <protocol> [<streams>]'")


def _rtpmap(section: _Section, value: str) -> None:
    pt_text, sep, desc = value.partition(" ")
    bits = desc.split("/")
    if not sep or len(bits) not in (2, 3) or not _TOKEN.fullmatch(bits[0]):
        raise SdpError("a=rtpmap must be '<payload type> <encoding>/<clock rate>[/<channels>]'")
    pt = _uint(pt_text, "rtpmap payload type", 0, 127)
    if pt_text not in section.formats:
        raise SdpError(f"rtpmap payload type {pt} is not listed on its m-line")
    if pt in section.rtpmap:
        raise SdpError(f"rtpmap payload type {pt} is mapped twice")
    section.rtpmap.add(pt)
    _uint(bits[1], "rtpmap clock rate", 1, 1_000_000)
    if len(bits) == 3:
        _uint(bits[2], "rtpmap channels", 1, 8)


def _candidate(value: str) -> None:
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ":
        raise SdpError(
            "a=candidate must be '<foundation> <component> <transport> <priority> <address>"
            " <port> typ <type> ...'"
        )
    _uint(bits[1], "candidate component", 1, 256)
    _uint(bits[3], "candidate priority", 0, _U32)
    _uint(bits[5], "candidate port", 0, 65535)
    if bits[7] not in CANDIDATE_TYPES:
        raise SdpError(
            f"candidate type {bits[7][:20]!r} is not one of {', '.join(CANDIDATE_TYPES)}"
        )
    for key, val in zip(bits[8::2], bits[9::2], strict=False):
        if key == "rport":
            _uint(val, "candidate rport", 0, 65535)


# Needed in every media section, given there or at the session level (aiortc's parser
# copies the session's values into each section and fails later on one without them).
_INHERITED = {
    "ice-ufrag": "ICE credentials (a=ice-ufrag)",
    "ice-pwd": "ICE credentials (a=ice-pwd)",
    "fingerprint": "a DTLS fingerprint",
    "setup": "a DTLS role (a=setup)",
}


def _sections(session: _Section, sections: list[_Section]) -> None:
    """Rules across lines: what each section needs, one unique mid per m-line, fmtp
    after its rtpmap, BUNDLE groups naming sections that exist."""
    seen: set[str] = set()
    for index, section in enumerate(sections):
        where = f"media section {index + 1}"
        for attr, what in _INHERITED.items():
            if attr not in section.attrs and attr not in session.attrs:
                raise SdpError(f"{where} has no {what}")
        if section.kind in ("audio", "video"):
            if "rtcp-mux" not in section.attrs:
                raise SdpError(f"{where} has no a=rtcp-mux (RTP and RTCP share one port)")
            if not section.attrs & set(DIRECTIONS):
                raise SdpError(f"{where} has no direction ({', '.join(DIRECTIONS)})")
        if len(section.mids) != 1:
            raise SdpError(f"{where} needs exactly one a=mid (it has {len(section.mids)})")
        mid = section.mids[0]
        if mid in seen:
            raise SdpError(f"{where} repeats mid {mid!r}")
        seen.add(mid)
        for pt, params in section.fmtp:
            if pt not in section.rtpmap:
                raise SdpError(f"{where}: fmtp for payload type {pt} that has no rtpmap")
            for param in params.split(";"):
                key, _, val = param.strip().partition("=")
                if key in FMTP_INT_PARAMETERS:
                    _uint(val, f"{where}: fmtp {key}", 0, _U32)
                if key == "profile-level-id" and not re.fullmatch(r"[0-9A-Fa-f]{6}", val):
                    raise SdpError(f"{where}: profile-level-id must be 6 hex digits")
    for group in session.bundles:
        for mid in group:
            if mid not in seen:
                raise SdpError(f"a=group:BUNDLE names mid {mid[:40]!r}, which no m-line has")


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
