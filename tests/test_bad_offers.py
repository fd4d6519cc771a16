"""Malformed media offers over a real socket to a real server: each is refused with
``bad_sdp`` and the reason, never ``internal_error``; the server keeps serving and no
half-made media connection is left behind."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from bench.bot import Bot, SignalingError
from bench.pattern_media import PatternVideoTrack, ToneAudioTrack
from signaling.auth import TokenService
from signaling.config import Config

from .calls import Call, until
from .conftest import SECRET, ServerProcess, auth


async def real_offer() -> str:
    """An offer as aiortc makes it: a camera (mid 0) and a microphone (mid 1)."""
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver(PatternVideoTrack(1), direction="sendonly")
        pc.addTransceiver(ToneAudioTrack(300), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def sub(pattern: str, repl: str, count: int = 0) -> Callable[[str], str]:
    def corrupt(sdp: str) -> str:
        out, n = re.subn(pattern, repl, sdp, count=count, flags=re.MULTILINE)
        assert n, f"{pattern!r} is not in the offer"
        return out

    return corrupt


def drop(prefix: str) -> Callable[[str], str]:
    return sub(rf"^{re.escape(prefix)}.*\r\n", "")


def duplicate_video(sdp: str) -> str:
    head, video, audio = re.split(r"(?m)^(?=m=)", sdp)
    return head + video + video + audio


# name -> (corruption, expected code, a word the message must name)
BAD: dict[str, tuple[Callable[[str], str], str, str]] = {
    "setup bogus": (sub(r"^a=setup:actpass", "a=setup:bogus"), "bad_sdp", "setup"),
    "VP8/-1": (sub(r"VP8/90000", "VP8/-1"), "bad_sdp", "rtpmap"),
    "clock rate 0": (sub(r"VP8/90000", "VP8/0"), "bad_sdp", "rtpmap"),
    "clock rate not a number": (sub(r"VP8/90000", "VP8/fast"), "bad_sdp", "rtpmap"),
    "rtpmap without codec": (sub(r"^a=rtpmap:97 VP8/90000", "a=rtpmap:97"), "bad_sdp", "rtpmap"),
    "channels not a number": (sub(r"opus/48000/2", "opus/48000/two"), "bad_sdp", "rtpmap"),
    "payload type 200": (
        lambda s: sub(r"^a=rtpmap:97 ", "a=rtpmap:200 ")(sub(r"SAVPF 97 ", "SAVPF 200 ")(s)),
        "bad_sdp",
        "payload type",
    ),
    "format not a number": (sub(r"SAVPF 97 ", "SAVPF x97 "), "bad_sdp", "format"),
    "no formats": (
        sub(r"^m=audio (\d+) UDP/TLS/RTP/SAVPF .*", r"m=audio \1 UDP/TLS/RTP/SAVPF"),
        "bad_sdp",
        "m-line",
    ),
    "no fingerprint": (drop("a=fingerprint:"), "bad_sdp", "fingerprint"),
    "unknown fingerprint hash": (
        sub(r"^a=fingerprint:sha-256 ", "a=fingerprint:md4 "),
        "bad_sdp",
        "fingerprint",
    ),
    "fingerprint not hex": (
        sub(r"^a=fingerprint:sha-256 \S+", "a=fingerprint:sha-256 ZZ:ZZ"),
        "bad_sdp",
        "fingerprint",
    ),
    "garbage port": (sub(r"^m=video \d+", "m=video abc"), "bad_sdp", "port"),
    "port out of range": (sub(r"^m=video \d+", "m=video 99999"), "bad_sdp", "port"),
    "control character": (sub(r"^a=mid:0", "a=mid:0\x07"), "bad_sdp", "control"),
    # Refused with lone surrogates before any message is read (PostgreSQL refuses it).
    "NUL character": (sub(r"^a=mid:0", "a=mid:0\x00"), "invalid_message", "NUL"),
    "lone surrogate": (sub(r"^s=-", "s=\ud800"), "invalid_message", "surrogate"),
    "very long line": (sub(r"^s=-", "s=" + "x" * 20_000), "bad_sdp", "line"),
    "duplicate mid": (duplicate_video, "bad_sdp", "mid"),
    "no ice-ufrag": (drop("a=ice-ufrag:"), "bad_sdp", "ICE"),
    "no ice-pwd": (drop("a=ice-pwd:"), "bad_sdp", "ICE"),
    "ice-ufrag too short": (sub(r"^a=ice-ufrag:\S+", "a=ice-ufrag:a"), "bad_sdp", "ice-ufrag"),
    "ssrc not a number": (sub(r"^a=ssrc:(\d+) cname", r"a=ssrc:x\1 cname", 1), "bad_sdp", "ssrc"),
    "candidate garbage": (
        sub(r"^a=candidate:\S+ 1 udp \d+", "a=candidate:x 1 udp lots", 1),
        "bad_sdp",
        "candidate",
    ),
    "extmap garbage": (sub(r"^a=extmap:1 ", "a=extmap:one ", 1), "bad_sdp", "extmap"),
    "rtcp-fb garbage": (
        sub(r"^a=rtcp-fb:97 nack\r", "a=rtcp-fb:x nack\r", 1),
        "bad_sdp",
        "rtcp-fb",
    ),
    "fmtp apt garbage": (sub(r"apt=97", "apt=x"), "bad_sdp", "apt"),
    "connection line garbage": (sub(r"^c=IN IP4 \S+", "c=IN", 1), "bad_sdp", "c="),
    "bare CR line ends": (lambda s: s.replace("\r\n", "\r"), "bad_sdp", "CR"),
}


@pytest.fixture
async def call(tmp_path: Path) -> AsyncIterator[Call]:
    c = await Call.start(tmp_path, "OFFER-1")
    yield c
    await c.close()


PUBLISH = [{"mid": "0", "source": "camera"}, {"mid": "1", "source": "microphone"}]


async def test_malformed_offers_are_refused_with_the_reason(call: Call) -> None:
    offer = await real_offer()
    p = await call.person(1)
    wrong = []
    for name, (corrupt, code, word) in BAD.items():
        try:
            reply = await p.request(
                {"type": "media.offer", "sdp": corrupt(offer), "publish": PUBLISH}
            )
        except SignalingError as exc:
            if exc.code != code or word.lower() not in str(exc).lower():
                wrong.append(f"{name}: {exc}")
        else:
            wrong.append(f"{name}: accepted ({reply['type']})")
        # Nothing half-made is left: the participant has no media connection yet.
        room = call.media.rooms.get(call.sid)
        if room is not None and room.peers:
            wrong.append(f"{name}: left {list(room.peers)} in the room")
    assert not wrong, "\n".join(wrong)
    # The server still serves: the same participant publishes for real afterwards.
    other = await call.person(2)
    await p.publish("camera", PatternVideoTrack(1))
    await until(lambda: other.receiving(1), what="the camera after the refused offers")


async def test_a_refused_offer_leaves_a_live_connection_as_it_was(call: Call) -> None:
    pub = await call.person(1)
    watcher = await call.person(2)
    await pub.publish("camera", PatternVideoTrack(1))
    await until(lambda: watcher.receiving(1), what="subscription")
    offer = await real_offer()
    for name in ("setup bogus", "VP8/-1", "duplicate mid", "candidate garbage"):
        corrupt, code, _ = BAD[name]
        with pytest.raises(SignalingError) as err:
            await pub.request({"type": "media.offer", "sdp": corrupt(offer), "publish": PUBLISH})
        assert err.value.code == code, name
    room = call.media.rooms[call.sid]
    assert len(room.peers) == 2
    assert [t["source"] for t in call.media.tracks(call.sid)] == ["camera"]


async def test_a_participant_on_another_node_gets_the_same_code(
    server_factory: Callable[..., ServerProcess], redis_url: str, tmp_path: Path
) -> None:
    """The media node of a session may be another node: the code and the reason survive
    the hop through Redis (before, an unmapped error there left the RPC unanswered)."""
    env = {"JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]'}
    a = server_factory(redis_url=redis_url, env=env)
    b = server_factory(redis_url=redis_url, env=env)
    t = TokenService(Config(data_dir=tmp_path, jwt_secret=SECRET))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{a.url}/api/cases/OFFER-2/sessions",
            json={},
            headers=auth(t.issue(sub="clerk-01", role="clerk")),
        ) as res,
    ):
        sid = (await res.json())["session_id"]
    host = Bot(a.url, t.issue(sub="u1", role="clerk"))
    far = Bot(b.url, t.issue(sub="u2", role="clerk"))
    offer = await real_offer()
    try:
        for p in (host, far):
            await p.connect()
            await p.join(sid)
        await host.publish("camera", PatternVideoTrack(1))  # the media lives on node a
        for name in ("setup bogus", "VP8/-1", "payload type 200"):
            corrupt, code, word = BAD[name]
            with pytest.raises(SignalingError) as err:
                await far.request(
                    {"type": "media.offer", "sdp": corrupt(offer), "publish": PUBLISH}
                )
            assert err.value.code == code, name
            assert word.lower() in str(err.value).lower(), str(err.value)
        await far.publish("camera", PatternVideoTrack(2))
        await until(lambda: host.receiving(1), what="the far camera")
    finally:
        await host.close()
        await far.close()


async def test_an_offer_of_a_megabyte_is_refused_and_the_socket_kept(call: Call) -> None:
    offer = await real_offer()
    p = await call.person(1)
    assert p.ws is not None
    huge = offer.replace("s=-\r\n", "s=" + "x" * 1_000_000 + "\r\n")
    await p.ws.send_json({"type": "media.offer", "sdp": huge, "publish": PUBLISH, "ref": "big"})
    err = await p.wait_for("error", lambda m: m["code"] == "message_too_large")
    assert "at most" in err["message"]
    assert call.media.rooms.get(call.sid) is None  # it never reached the media server
    await p.publish("camera", PatternVideoTrack(1))
