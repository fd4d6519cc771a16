"""media_server/sdp.py (offer checks, candidate rewriting) and media_server/settings.py
(TURN REST credentials as coturn's use-auth-secret checks them)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac

import pytest

from media_server import sdp
from media_server.settings import MediaSettings, turn_credentials

# What a browser offers (trimmed): an mDNS host candidate, an IPv4 host candidate and a
# server-reflexive one.
BROWSER_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=candidate:1 1 udp 2122260223 5f2c1d0e-1111-2222-3333-444455556666.local 54321 typ "
        "host generation 0 network-id 1",
        "a=candidate:2 1 udp 2122194687 192.168.1.20 54322 typ host generation 0",
        "a=candidate:3 1 udp 1686052607 203.0.113.7 54321 typ srflx raddr "
        "0.0.0.0 rport 0 generation 0",
        "a=ice-ufrag:Ab3d",
        "a=ice-pwd:0123456789abcdefghijklmn",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=candidate:4 1 udp 2122260223 aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee.local 54323 typ "
        "host generation 0",
        "a=ice-ufrag:Ab3d",
        "a=ice-pwd:0123456789abcdefghijklmn",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "a=mid:1",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "",
    ]
)


def without(text: str, prefix: str) -> str:
    return "\r\n".join(line for line in text.split("\r\n") if not line.startswith(prefix))


# -- check_offer ---------------------------------------------------------------------------

CHECK_CASES = [
    pytest.param(BROWSER_OFFER, None, id="browser-offer-ok"),
    pytest.param(BROWSER_OFFER.replace("\r\n", "\n"), None, id="lf-line-endings-ok"),
    pytest.param("", "SDP must start with v=0", id="empty"),
    pytest.param("hello", "SDP must start with v=0", id="not-sdp"),
    pytest.param("\r\n" + BROWSER_OFFER, "SDP must start with v=0", id="leading-blank-line"),
    pytest.param(
        "\r\n".join(line for line in BROWSER_OFFER.split("\r\n") if not line.startswith(("m=",))),
        "SDP has no media section",
        id="no-media",
    ),
    pytest.param(
        without(BROWSER_OFFER, "a=fingerprint:"), "SDP has no DTLS fingerprint", id="no-fingerprint"
    ),
    pytest.param(
        without(BROWSER_OFFER, "a=ice-ufrag:"), "SDP has no ICE credentials", id="no-ice-ufrag"
    ),
    pytest.param(
        BROWSER_OFFER + "a=x:" + "y" * sdp.MAX_SDP_BYTES,
        f"SDP larger than {sdp.MAX_SDP_BYTES} bytes",
        id="too-large",
    ),
]


# A Firefox offer (its shape: extmap directions, fmtp ints, telephone-event, ccm fir)
# and the parts of a Chrome offer the trimmed one above lacks (red, AV1, x-google, ssrc).
FIREFOX_OFFER = "\r\n".join(
    [
        "v=0",
        "o=mozilla...THIS_IS_SDPARTA-99.0 8386925612455316523 0 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=fingerprint:sha-256 " + ":".join(["0F"] * 32),
        "a=group:BUNDLE 0 1",
        "a=ice-options:trickle",
        "a=msid-semantic:WMS *",
        "m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101",
        "c=IN IP4 0.0.0.0",
        "a=sendrecv",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1",
        "a=fmtp:101 0-15",
        "a=ice-pwd:0123456789abcdef0123456789abcdef",
        "a=ice-ufrag:89abcdef",
        "a=mid:0",
        "a=msid:{7d8e5c1a-0000-4000-8000-000000000001} {7d8e5c1a-0000-4000-8000-000000000002}",
        "a=rtcp-mux",
        "a=rtpmap:109 opus/48000/2",
        "a=rtpmap:9 G722/8000/1",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000/1",
        "a=setup:actpass",
        "a=ssrc:2851346340 cname:{5d1a1a1a-0000-4000-8000-000000000003}",
        "m=video 9 UDP/TLS/RTP/SAVPF 120 124 126 127 45 46 63",
        "c=IN IP4 0.0.0.0",
        "a=sendrecv",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap-allow-mixed",
        "a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1",
        "a=fmtp:124 apt=120",
        "a=fmtp:127 apt=126",
        "a=fmtp:45 level-idx=5;profile=0;tier=0",
        "a=fmtp:46 apt=45",
        "a=fmtp:63 111/111",
        "a=ice-pwd:0123456789abcdef0123456789abcdef",
        "a=ice-ufrag:89abcdef",
        "a=mid:1",
        "a=rtcp-fb:120 nack",
        "a=rtcp-fb:120 nack pli",
        "a=rtcp-fb:120 ccm fir",
        "a=rtcp-fb:120 goog-remb",
        "a=rtcp-fb:* transport-cc",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:120 VP8/90000",
        "a=rtpmap:124 rtx/90000",
        "a=rtpmap:126 H264/90000",
        "a=rtpmap:127 rtx/90000",
        "a=rtpmap:45 AV1/90000",
        "a=rtpmap:46 rtx/90000",
        "a=rtpmap:63 red/90000",
        "a=setup:actpass",
        "a=ssrc-group:FID 1 2",
        "a=ssrc:1 cname:x",
        "a=ssrc:1 msid:stream track",
        "a=ssrc:2 cname:x",
        "a=candidate:0 1 UDP 2122252543 9f3b1d3e-1111-2222-3333-444455556666.local 50000 typ host",
        "a=candidate:1 1 TCP 2105524479 10.0.0.5 9 typ host tcptype active",
        "a=candidate:2 1 UDP 1686052863 203.0.113.7 50000 typ srflx raddr 0.0.0.0 rport 0",
        "a=end-of-candidates",
        "",
    ]
)


def line_swapped(old: str, new: str) -> str:
    assert old in BROWSER_OFFER
    return BROWSER_OFFER.replace(old, new, 1)


# (corruption of the browser offer, a part of the message that names what is wrong)
MALFORMED = [
    pytest.param(
        line_swapped("a=setup:actpass", "a=setup:bogus"), "setup role 'bogus'", id="setup"
    ),
    pytest.param(line_swapped("a=setup:actpass", "a=setup:holdconn"), "setup role", id="holdconn"),
    pytest.param(line_swapped("VP8/90000", "VP8/-1"), "rtpmap clock rate", id="clock-negative"),
    pytest.param(line_swapped("VP8/90000", "VP8/0"), "rtpmap clock rate", id="clock-zero"),
    pytest.param(line_swapped("VP8/90000", "VP8/90000/1/2"), "a=rtpmap must be", id="rtpmap-parts"),
    pytest.param(line_swapped("opus/48000/2", "opus/48000/99"), "rtpmap channels", id="channels"),
    pytest.param(line_swapped("a=rtpmap:96 ", "a=rtpmap:97 "), "not listed", id="rtpmap-unlisted"),
    pytest.param(
        line_swapped("SAVPF 96", "SAVPF 200").replace("rtpmap:96", "rtpmap:200"),
        "payload type",
        id="pt-200",
    ),
    pytest.param(line_swapped("SAVPF 96", "SAVPF 96 74"), "forbidden", id="pt-rtcp-clash"),
    pytest.param(line_swapped("m=video 9 ", "m=video -9 "), "m-line port", id="port-negative"),
    pytest.param(line_swapped("m=video 9 ", "m=text 9 "), "kind 'text'", id="kind"),
    pytest.param(
        line_swapped("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=video 9 UDP/TLS/RTP/SAVPF"),
        "m-line",
        id="no-formats",
    ),
    pytest.param(
        line_swapped("a=fingerprint:sha-256", "a=fingerprint:sha-1024"),
        "fingerprint hash",
        id="fp-hash",
    ),
    pytest.param(line_swapped(":AB\r\n", ":A\r\n"), "hex pairs", id="fp-short"),
    pytest.param(
        BROWSER_OFFER.replace(
            "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
            "a=fingerprint:sha-1 " + ":".join(["AB"] * 20),
        ),
        "sha-256",
        id="fp-only-sha1",
    ),
    pytest.param(
        line_swapped("a=ice-ufrag:Ab3d", "a=ice-ufrag:Ab$d"), "ice-ufrag", id="ufrag-chars"
    ),
    pytest.param(
        line_swapped("a=ice-pwd:0123456789abcdefghijklmn", "a=ice-pwd:short"),
        "ice-pwd",
        id="pwd-short",
    ),
    pytest.param(line_swapped("a=mid:1", "a=mid:0"), "repeats mid", id="mid-duplicate"),
    pytest.param(line_swapped("a=mid:1\r\n", ""), "exactly one a=mid", id="mid-missing"),
    pytest.param(
        line_swapped("a=mid:1", "a=mid:1\r\na=mid:2"), "exactly one a=mid", id="mid-twice"
    ),
    pytest.param(line_swapped("s=-", "s=\x00"), "control character", id="nul"),
    pytest.param(line_swapped("s=-\r\n", "s=-\r"), "bare CR", id="bare-cr"),
    pytest.param(line_swapped("s=-", "s=" + "x" * 5000), "longer than", id="long-line"),
    pytest.param(line_swapped("s=-", "s=-\r\nnot a line"), "not an SDP line", id="not-a-line"),
    pytest.param(line_swapped("s=-", "s=-\r\nv=0"), "second v=", id="second-v"),
    pytest.param(line_swapped("c=IN IP4 0.0.0.0", "c=IN IP4"), "c= must be", id="c-line"),
    pytest.param(line_swapped("a=rtcp:9 IN", "a=rtcp:x IN"), "rtcp port", id="rtcp-port"),
    pytest.param(
        line_swapped("192.168.1.20 54322 typ", "192.168.1.20 99999 typ"),
        "candidate port",
        id="cand-port",
    ),
    pytest.param(line_swapped("typ srflx", "typ bogus"), "candidate type", id="cand-type"),
    pytest.param(line_swapped("rport 0", "rport x"), "rport", id="cand-rport"),
    pytest.param(
        line_swapped("a=candidate:2 1 udp", "a=candidate:2 x udp"), "component", id="cand-component"
    ),
    pytest.param(
        line_swapped("a=sendrecv", "a=sendrecv\r\na=fmtp:111 apt=x"), "fmtp apt", id="fmtp-apt"
    ),
    pytest.param(
        line_swapped("a=sendrecv", "a=sendrecv\r\na=fmtp:112 apt=1"),
        "no rtpmap",
        id="fmtp-no-rtpmap",
    ),
    pytest.param(
        line_swapped(
            "a=rtpmap:96 VP8/90000", "a=rtpmap:96 H264/90000\r\na=fmtp:96 profile-level-id=zz"
        ),
        "profile-level-id",
        id="fmtp-profile",
    ),
    pytest.param(
        line_swapped("a=sendrecv", "a=sendrecv\r\na=rtcp-fb:111"),
        "a=rtcp-fb must be",
        id="rtcp-fb-short",
    ),
    pytest.param(
        line_swapped("a=sendrecv", "a=sendrecv\r\na=extmap:0 urn:x"), "extmap id", id="extmap-zero"
    ),
    pytest.param(
        line_swapped("a=sendrecv", "a=sendrecv\r\na=extmap:1/sideways urn:x"),
        "extmap direction",
        id="extmap-dir",
    ),
    pytest.param(
        line_swapped("a=sendrecv", "a=sendrecv\r\na=extmap:1 urn:x attr"),
        "extension attributes",
        id="extmap-attrs",
    ),
    pytest.param(
        line_swapped("a=sendrecv", "a=sendrecv\r\na=ssrc:-1 cname:x"), "ssrc", id="ssrc-negative"
    ),
    pytest.param(
        line_swapped("a=sendrecv", "a=sendrecv\r\na=ssrc:1 cname"),
        "a=ssrc must be",
        id="ssrc-no-attr",
    ),
    pytest.param(
        line_swapped("a=sendrecv", "a=sendrecv\r\na=ssrc-group:FID 1 x"),
        "ssrc-group",
        id="ssrc-group",
    ),
    pytest.param(
        line_swapped("a=sendrecv", "a=sendrecv\r\na=fingerprint"), "needs a value", id="no-value"
    ),
    pytest.param(line_swapped("a=rtcp-mux\r\n", ""), "a=rtcp-mux", id="no-rtcp-mux"),
    pytest.param(
        line_swapped(
            "a=rtpmap:96 VP8/90000", "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode"
        ),
        "packetization-mode",
        id="fmtp-no-value",
    ),
    pytest.param(
        line_swapped("a=msid-semantic: WMS", "a=msid-semantic"), "needs a value", id="msid-semantic"
    ),
    pytest.param(line_swapped("a=sendrecv", "a=sendrecv\r\na=msid:stream "), "a=msid", id="msid"),
    pytest.param(line_swapped("a=sendrecv\r\n", ""), "no direction", id="no-direction"),
    pytest.param(BROWSER_OFFER.replace("a=setup:actpass\r\n", ""), "DTLS role", id="no-setup"),
    pytest.param(
        line_swapped("a=rtcp:9 IN IP4 0.0.0.0", "a=rtcp:9 "), "c= must be", id="rtcp-no-address"
    ),
    pytest.param(
        line_swapped("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2"), "BUNDLE", id="bundle-mid"
    ),
    pytest.param(
        line_swapped(
            "a=sendrecv", "a=sendrecv" + "\r\na=candidate:9 1 udp 1 10.0.0.9 9 typ host" * 65
        ),
        "more than 64 candidates",
        id="candidate-flood",
    ),
    pytest.param(
        BROWSER_OFFER + "".join(f"m=audio 9 RTP/AVP 0\r\na=mid:x{i}\r\n" for i in range(128)),
        "more than 128 media sections",
        id="section-flood",
    ),
]


def test_browser_offers_pass() -> None:
    sdp.check_offer(FIREFOX_OFFER)
    sdp.check_offer(BROWSER_OFFER)


@pytest.mark.parametrize(("offer", "part"), MALFORMED)
def test_malformed_offers_are_refused_with_what_is_wrong(offer: str, part: str) -> None:
    with pytest.raises(sdp.SdpError) as info:
        sdp.check_offer(offer)
    assert part in str(info.value)


@pytest.mark.parametrize(("offer", "message"), CHECK_CASES)
def test_check_offer(offer: str, message: str | None) -> None:
    if message is None:
        sdp.check_offer(offer)
        return
    with pytest.raises(sdp.SdpError) as info:
        sdp.check_offer(offer)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError), "callers catch ValueError"


# -- ice_ufrag -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(BROWSER_OFFER, "Ab3d", id="crlf"),
        pytest.param(BROWSER_OFFER.replace("\r\n", "\n"), "Ab3d", id="lf"),
        pytest.param("v=0\r\na=ice-ufrag: padded \r\n", "padded", id="whitespace-stripped"),
        pytest.param("v=0\r\na=ice-ufrag:first\r\na=ice-ufrag:second\r\n", "first", id="first"),
        pytest.param(without(BROWSER_OFFER, "a=ice-ufrag:"), None, id="absent"),
    ],
)
def test_ice_ufrag(text: str, expected: str | None) -> None:
    assert sdp.ice_ufrag(text) == expected


# -- drop_mdns_candidates -------------------------------------------------------------------


@pytest.mark.parametrize("eol", ["\r\n", "\n"], ids=["crlf", "lf"])
def test_drop_mdns_candidates(eol: str) -> None:
    offer = BROWSER_OFFER.replace("\r\n", eol)
    out = sdp.drop_mdns_candidates(offer)
    kept = [line for line in offer.split(eol) if ".local " not in line]
    assert out.split(eol) == kept, "only the .local candidates go; every other line stays"
    assert ".local" not in out
    assert "192.168.1.20 54322 typ host" in out and "typ srflx" in out
    assert out.endswith(eol)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            "a=candidate:5 1 udp 1 10.0.0.1 9 typ srflx raddr x.local rport 1", id="local-in-raddr"
        ),
        pytest.param("a=candidate:short", id="malformed"),
        pytest.param("a=x-note:host.local", id="not-a-candidate"),
    ],
)
def test_drop_mdns_keeps_other_lines(line: str) -> None:
    text = "v=0\r\n" + line + "\r\n"
    assert sdp.drop_mdns_candidates(text) == text


# -- announce_address -----------------------------------------------------------------------

ANSWER = "\r\n".join(
    [
        "v=0",
        "o=- 3900000000 3900000000 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=video 40000 UDP/TLS/RTP/SAVPF 97",
        "c=IN IP4 10.0.0.5",
        "a=candidate:a1 1 udp 2130706431 10.0.0.5 40000 typ host",
        "a=candidate:a2 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 10.0.0.5 rport 40000",
        "a=candidate:a3 1 udp 16777215 198.51.100.9 3478 typ relay raddr 10.0.0.5 rport 40000",
        "a=end-of-candidates",
        "",
    ]
)


@pytest.mark.parametrize(
    ("announced", "expected_lines"),
    [
        pytest.param("", ANSWER.split("\r\n"), id="not-set-unchanged"),
        pytest.param(
            "203.0.113.50",
            [
                line.replace("10.0.0.5 40000 typ host", "203.0.113.50 40000 typ host").replace(
                    "c=IN IP4 10.0.0.5", "c=IN IP4 203.0.113.50"
                )
                for line in ANSWER.split("\r\n")
            ],
            id="host-and-c-line-rewritten",
        ),
    ],
)
def test_announce_address(announced: str, expected_lines: list[str]) -> None:
    out = sdp.announce_address(ANSWER, announced)
    assert out.split("\r\n") == expected_lines
    assert "raddr 10.0.0.5" in out, "srflx/relay candidates untouched"


# -- TURN REST credentials (coturn use-auth-secret) -------------------------------------------


def test_turn_credentials_known_vector() -> None:
    # openssl: printf '1700003600:alice' | openssl dgst -sha1 -hmac north -binary | base64
    assert turn_credentials("north", "alice", 3600, now=1_700_000_000) == (
        "1700003600:alice",
        "wjwSXO2ch1B6VaLTLMy2Avn5O9o=",
    )


@pytest.mark.parametrize(
    ("secret", "user", "ttl", "now"),
    [
        pytest.param("s3cret", "clerk-01", 6 * 3600, 1_750_000_000.0, id="float-now"),
        pytest.param("密钥", "用户", 60, 1_700_000_000.9, id="unicode-fraction-truncated"),
        pytest.param("x" * 100, "a:b", 1, 0.0, id="colon-in-user"),
    ],
)
def test_turn_credentials_scheme(secret: str, user: str, ttl: int, now: float) -> None:
    username, password = turn_credentials(secret, user, ttl, now=now)
    assert username == f"{int(now + ttl)}:{user}"
    expected = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


TURN = {"urls": ["turn:turn.example.org:3478?transport=udp"]}
TURNS = {"urls": ["turns:turn.example.org:5349"]}
STUN = {"urls": ["stun:stun.example.org:3478"]}
STATIC = {"urls": ["turn:static.example.org"], "username": "u", "credential": "p"}


@pytest.mark.parametrize(
    ("secret", "servers", "credentialed"),
    [
        pytest.param("", [STUN, TURN], [False, False], id="no-secret-no-credentials"),
        pytest.param("k", [STUN, TURN, TURNS], [False, True, True], id="secret-turn-only"),
        pytest.param("k", [{"urls": ["stun:a", "turn:b"]}], [True], id="mixed-entry"),
        pytest.param("k", [STATIC], [False], id="static-credential-kept"),
        pytest.param("k", [], [], id="none"),
    ],
)
def test_client_ice_servers(secret: str, servers: list[dict], credentialed: list[bool]) -> None:
    configured = copy.deepcopy(servers)
    settings = MediaSettings(ice_servers=servers, turn_secret=secret, turn_ttl_s=600)
    now = 1_700_000_000.0
    out = settings.client_ice_servers("user-7", now=now)
    assert len(out) == len(servers)
    for given, got, has in zip(servers, out, credentialed, strict=True):
        assert got["urls"] == given["urls"]
        if has:
            assert (got["username"], got["credential"]) == turn_credentials(
                secret, "user-7", 600, now
            )
        else:
            assert got == given
    assert servers == configured, "the configured entries are not modified"


def test_server_uses_no_ice_servers() -> None:
    assert MediaSettings(ice_servers=[STUN, TURN], turn_secret="k").server_ice_servers() == []


def test_bitrate_from_settings() -> None:
    b = MediaSettings(min_bitrate=100_000, max_bitrate=900_000).bitrate()
    assert (b.min_bps, b.max_bps) == (100_000, 900_000)
