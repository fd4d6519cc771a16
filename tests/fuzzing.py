"""Shared pieces of the fuzz run (tests/test_fuzz_ws.py, tests/test_fuzz_http.py).

The fuzzers drive a real app (``create_app`` behind aiohttp's ``TestServer``) on an event
loop of their own, from hypothesis' synchronous rules. What must hold whatever they send:
no reply ``internal_error``, no HTTP status >= 500, every HTTP error JSON
``{"error": {"code", "message"}}``, no socket closed with a code the protocol does not
document for what was sent, nothing logged at ERROR, and at the end the journal loads
again into the same state and every sealed case file verifies.

``JR_FUZZ_SCALE`` (default 1) multiplies the number of examples (``scripts/fuzz``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import ClientResponse
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from recording.verify import verify_session
from signaling.config import Config
from signaling.models import Event
from signaling.state import MemoryStore, Store

from .conftest import SECRET, make_config

SCALE = float(os.environ.get("JR_FUZZ_SCALE", "1"))
MAX_MESSAGE_BYTES = 16 * 1024  # smaller than the default: huge frames stay cheap to make
HARD_LIMIT = 1 << 20  # ws.py: max(16 × max_message_bytes, 1 MiB); aiohttp closes 1009 above


def scaled(n: int) -> int:
    return max(1, int(n * SCALE))


def fuzz_settings(examples: int, steps: int | None = None) -> settings:
    """Random each run (hypothesis prints how to reproduce a failure), no database."""
    kw: dict[str, Any] = {}
    if steps is not None:
        kw["stateful_step_count"] = steps
    if os.environ.get("JR_FUZZ_SHRINK") == "0":  # a quick look at the first failure
        kw["phases"] = [Phase.generate]
    return settings(
        max_examples=scaled(examples),
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
        **kw,
    )


SHRINK_S = 60  # at most this long shrinking a failure (hypothesis' own bound is 300 s)


def bound_shrinking(monkeypatch: Any) -> None:
    """A failing example replays a whole app run per attempt, and a hang costs the
    barrier's wait each time: bound shrinking so the failure is reported (shrunk as far
    as it got) well inside the test's timeout instead of the timeout killing it."""
    from hypothesis.internal.conjecture import engine

    monkeypatch.setattr(engine, "MAX_SHRINKING_SECONDS", SHRINK_S)


def fuzz_config(tmp: Path, **overrides: Any) -> Config:
    """Limits high enough that the fuzzer exercises the handlers, not the limiter."""
    values: dict[str, Any] = {
        "media_enabled": False,
        "max_message_bytes": MAX_MESSAGE_BYTES,
        "ws_rate_per_s": 1e6,
        "ws_burst": 1_000_000,
        "identity_rate_per_s": 1e6,
        "identity_burst": 1_000_000,
        "max_sockets_per_identity": 10_000,
        "max_sockets_per_address": 100_000,
        "chat_per_minute_per_session": 1_000_000,
        "signin_per_minute": 1_000_000,
        "heartbeat_s": 30.0,
        "export_workers": 0,
    }
    values.update(overrides)
    return make_config(tmp, **values)


@dataclass
class Tally:
    """What the fuzzers sent, so the size of the run can't silently shrink."""

    ws: int = 0  # fuzz frames (not counting the pings that end each step)
    http: int = 0
    barriers: int = 0
    sealed_verified: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # error codes seen, ws and HTTP
    replies: dict[str, int] = field(default_factory=dict)  # socket messages by type
    started: float = field(default_factory=time.monotonic)
    last_report: float = 0.0

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def reply(self, kind: str) -> None:
        self.replies[kind] = self.replies.get(kind, 0) + 1

    def progress(self, label: str) -> None:
        """A line now and then on stderr for the long run (pytest -s shows it)."""
        if SCALE <= 1:
            return
        now = time.monotonic()
        if now - self.last_report >= 10:
            self.last_report = now
            print(
                f"[fuzz {label}] {now - self.started:6.0f}s ws={self.ws} http={self.http} "
                f"sealed={self.sealed_verified} codes={len(self.errors)}",
                flush=True,
            )


class ErrorLog(logging.Handler):
    """Everything logged at ERROR (a handler's traceback, aiohttp's "Error handling
    request", an asyncio task's unretrieved exception) and the slow-socket warning."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.ERROR or "slow socket" in text:
            if record.exc_info and record.exc_info[1] is not None:
                text += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            self.records.append(f"{record.name}: {text}")

    def __enter__(self) -> ErrorLog:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)


def loop_errors(loop: asyncio.AbstractEventLoop, sink: list[str]) -> None:
    def handler(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        sink.append(f"event loop: {context.get('message')}: {exc!r}")

    loop.set_exception_handler(handler)


# -- HTTP --------------------------------------------------------------------------------


async def check_response(resp: ClientResponse, what: str, tally: Tally) -> Any:
    """The body (JSON or bytes); a 5xx or an error not in the API's shape fails."""
    raw = await resp.read()
    assert resp.status < 500, f"{what}: {resp.status} {raw[:300]!r}"
    if resp.status < 400:
        if resp.content_type == "application/json":
            return json.loads(raw)
        return raw
    assert resp.content_type == "application/json", (
        f"{what}: error {resp.status} as {resp.content_type}: {raw[:300]!r}"
    )
    if resp.method == "HEAD":  # no body, by definition
        tally.error(f"http {resp.status} (HEAD)")
        return None
    body = json.loads(raw)
    err = body.get("error") if isinstance(body, dict) else None
    assert isinstance(err, dict), f"{what}: error body {body!r}"
    assert isinstance(err.get("code"), str) and err["code"], f"{what}: error body {body!r}"
    assert isinstance(err.get("message"), str), f"{what}: error body {body!r}"
    tally.error(f"http {resp.status} {err['code']}")
    return body


# -- tokens ------------------------------------------------------------------------------


def forged(claims: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    base = {"iss": "jointreview", "aud": "jointreview", "iat": int(time.time())}
    return jwt.encode({**base, **claims}, key, algorithm=alg)


def token_variants(valid: str, identity: dict[str, Any]) -> st.SearchStrategy[str]:
    """A token for ``auth.refresh`` / Authorization: the valid one, expired, foreign,
    forged with odd claims, and not a token at all. (Times are taken when drawn, as
    offsets: the choices hypothesis makes must not depend on the clock.)"""
    claims = {k: v for k, v in identity.items() if v is not None}

    def at(offset: int, extra: dict[str, Any] | None = None, key: str = SECRET) -> str:
        now = int(time.time())
        extra = dict(extra or {})
        for name in ("exp", "iat"):
            if isinstance(extra.get(name), int):
                extra[name] += now
        return forged({**claims, "exp": now + offset, **extra}, key=key)

    odd_claims = st.fixed_dictionaries(
        {},
        optional={
            "sub": st.one_of(st.just(""), st.text(max_size=300), st.integers()),
            "role": st.sampled_from(["clerk", "reviewer", "admin", "applicant", "god", ""]),
            "name": st.one_of(
                st.text(max_size=50), st.integers(0, 5000).map(lambda n: "x" * n), st.none()
            ),
            "dept": st.one_of(st.sampled_from(["city-amr", "nope"]), st.integers(), st.none()),
            "level": st.sampled_from(["city", "district", "galaxy"]),
            "case": st.one_of(st.text(max_size=80), st.lists(st.integers(), max_size=2)),
            "session": st.text(max_size=80),
            "exp": st.one_of(  # relative to now
                st.integers(-(10**9), 10**10), st.just("tomorrow"), st.floats()
            ),
            "iat": st.integers(-(10**9), 10**9),  # relative to now
        },
    )
    return st.one_of(
        st.just(valid),
        st.just(-5).map(at),  # expired
        st.just(3600).map(lambda o: at(o, key="another-secret-" + "y" * 40)),
        st.just(100 * 365 * 86400).map(at),  # a century
        odd_claims.map(lambda extra: at(3600, extra)),
        st.text(max_size=200),
        st.sampled_from(["a.b.c", "eyJhbGciOiJub25lIn0.e30.", "Bearer x", valid[:-3] + "abc"]),
    )


# -- text --------------------------------------------------------------------------------

# Lone surrogates survive json.dumps (as \ud800 escapes) and json.loads on the server: a
# string no UTF-8 file or frame can hold.
SURROGATES = st.sampled_from(["\ud800", "\udfff", "\udbff\udbff", "\ud83d"])
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=200),
    st.lists(st.one_of(st.text(max_size=5), SURROGATES), max_size=6).map("".join),
    st.sampled_from(["", " ", "\x00", "\n\r", "请看第二页", "<script>alert(1)</script>", "%0A"]),
)


def json_values(leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        TEXT,
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)
        ),
        max_leaves=leaves,
    )


def dumps(value: Any) -> str:
    # ensure_ascii: lone surrogates go out as escapes; NaN/Infinity as Python writes them.
    return json.dumps(value, ensure_ascii=True)


# -- after the run -----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def check_journal(data_dir: Path, live: Store | None) -> MemoryStore:
    """The journal loads into a fresh store that holds what the live store held, and
    every case timeline is a run of valid events numbered on from where it was trimmed
    (signaling/evict.py; 1..n if never)."""
    fresh = MemoryStore(data_dir / "state")
    if isinstance(live, MemoryStore):
        assert _plain(fresh._docs) == _plain(live._docs), "documents differ after reload"
        assert _plain(fresh._logs) == _plain(live._logs), "logs differ after reload"
        for key, (_, scores) in live._indexes.items():
            assert _plain(fresh._indexes.get(key, ([], {}))[1]) == _plain(scores), key
    for key, entries in fresh._logs.items():
        if key.startswith("case:") and key.endswith(":events"):
            for n, entry in enumerate(entries, start=fresh._trimmed.get(key, 0) + 1):
                event = Event.model_validate(entry)
                assert event.seq == n, f"{key}: event {n} has seq {event.seq}"
    if fresh._journal is not None:  # read only: nothing is written through it
        os.close(fresh._journal)
        fresh._journal = None
    return fresh


def verify_sealed(data_dir: Path, store: MemoryStore, ended: set[str]) -> int:
    """Every session ended on a node without media is sealed, and each case file
    verifies against its files and the store's timeline; returns how many."""
    archive = data_dir / "archive"
    count = 0
    for sid in sorted(ended):
        doc = store._docs.get(f"session:{sid}")
        if doc is None and store._trimmed:
            continue  # sealed, recorded and evicted (tests/test_evict.py checks those)
        assert doc is not None, f"ended session {sid} is not in the journal"
        case_id = doc["case_id"]
        events = [e for e in store._logs.get(f"case:{case_id}:events", [])]
        mine = [e for e in events if e.get("session_id") == sid]
        report = verify_session(archive, case_id, sid, mine)
        assert report.ok, f"verify {case_id}/{sid}: {report.problems}"
        count += 1
    return count


# -- SDP ---------------------------------------------------------------------------------

# What a browser offers (trimmed, as tests/test_sdp_settings.py): audio and video, bundled.
BROWSER_OFFER_LINES = [
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=msid-semantic: WMS",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:2 1 udp 2122194687 127.0.0.1 54322 typ host generation 0",
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
    "a=ice-ufrag:Ab3d",
    "a=ice-pwd:0123456789abcdefghijklmn",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:actpass",
    "a=mid:1",
    "a=sendrecv",
    "a=rtcp-mux",
    "a=rtpmap:96 VP8/90000",
]
# Values a mangled line may take (a=setup:bogus and VP8/-1 are issue #10's own findings).
SDP_LINES = st.one_of(
    st.sampled_from(
        [
            "a=setup:bogus",
            "a=rtpmap:96 VP8/-1",
            "a=rtpmap:96 VP8/abc",
            "a=rtpmap:111 opus/0/2",
            "a=rtpmap:abc opus/48000",
            "a=fmtp:96 x",
            "a=fingerprint:sha-256 zz",
            "a=fingerprint:md5 " + ":".join(["AB"] * 16),
            "a=ice-ufrag:",
            "a=mid:",
            "a=group:BUNDLE 7",
            "m=video 9 UDP/TLS/RTP/SAVPF",
            "m=video -1 RTP/AVP 96",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "a=ssrc:abc cname:x",
            "a=ssrc-group:FID 1",
            "a=extmap:abc urn:x",
            "a=rtcp-fb:96 nack",
            "a=candidate:1 1 udp x 1.2.3.4 5 typ host",
            "c=IN IP6 ::1",
            "a=msid:- x",
            "a=sctp-port:-5",
            "b=AS:-1",
        ]
    ),
    st.text(max_size=40).map(lambda s: "a=" + s),
    st.text(max_size=40),
)


@st.composite
def _mangled(draw: st.DrawFn, lines_: st.SearchStrategy[str], keep: tuple[str, ...] = ()) -> str:
    """The browser's offer with 1-4 lines replaced, inserted, deleted or doubled
    (lines starting with one of ``keep`` are left alone)."""
    lines = list(BROWSER_OFFER_LINES)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "duplicate"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op != "insert" and lines[i].startswith(keep):
            continue
        if op == "replace":
            lines[i] = draw(lines_)
        elif op == "insert":
            lines.insert(i, draw(lines_))
        elif op == "delete" and len(lines) > 1:
            del lines[i]
        else:
            lines.insert(i, lines[i])
    sep = draw(st.sampled_from(["\r\n", "\n"]))
    return sep.join(lines) + sep


def _sdp(mangled: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just("\r\n".join(BROWSER_OFFER_LINES) + "\r\n"),
        mangled,
        st.text(min_size=10, max_size=300),
        st.text(max_size=200).map(lambda s: "v=0\r\n" + s),
    )


# Every kind of offer: what the media node must answer with media.answer or bad_sdp.
SDP = _sdp(_mangled(SDP_LINES))
