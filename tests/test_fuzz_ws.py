"""Fuzz run over the socket protocol (issue #10): a hypothesis state machine drives a real
app over several sockets (clerk, admin, reviewers of three departments, a supervisor,
applicant links) with valid and malformed messages interleaved with HTTP calls.

After every step: no ``internal_error``, no HTTP 5xx, no socket closed with a code the
protocol does not allow for what was sent, every socket still answers a ping, nothing
logged at ERROR. After every example: the app stops cleanly, the journal loads into the
same state, every timeline event is valid and every ended session's case file verifies.
``JR_FUZZ_SCALE=20 scripts/fuzz`` runs the same with twenty times the examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from recording.archive import MANIFEST, session_dir
from signaling import protocol, recording
from signaling.app import create_app
from signaling.auth import TokenService
from signaling.keys import STORE
from signaling.protocol import CLIENT_TYPES

from .conftest import auth
from .fuzzing import (
    BROWSER_OFFER_LINES,
    HARD_LIMIT,
    MAX_MESSAGE_BYTES,
    SDP,
    SDP_TODAY,
    TEXT,
    ErrorLog,
    Tally,
    check_journal,
    check_response,
    dumps,
    fuzz_config,
    fuzz_settings,
    json_values,
    loop_errors,
    scaled,
    token_variants,
    verify_sealed,
)

Msg = dict[str, Any]

# name -> the identity of its token
ROSTER: dict[str, dict[str, Any]] = {
    "clerk": {"sub": "clerk-01", "role": "clerk", "name": "陈晓"},
    "admin": {"sub": "admin", "role": "admin"},
    "amr": {"sub": "rev-city-amr-1", "role": "reviewer", "dept": "city-amr", "level": "city"},
    "district": {
        "sub": "rev-district-amr-1",
        "role": "reviewer",
        "dept": "district-amr",
        "level": "district",
    },
    "tax": {"sub": "rev-city-tax-1", "role": "reviewer", "dept": "city-tax", "level": "city"},
    "supervisor": {"sub": "sup-01", "role": "supervisor"},
}
REVIEWERS = ("amr", "district", "tax")
STAFF = ("clerk", "admin")
CASES = st.one_of(
    st.sampled_from(["FZ-2026-0001", "FZ-2026-0002"]),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z"),
)
FIELDS = [
    "v", "ref", "session_id", "resume_token", "invitation_id", "reason", "text", "token",
    "sdp", "publish", "subscribe", "extra",
]  # fmt: skip
# A message of a known (or nearly known) type, its fields of any JSON type, or no type.
MUTATED = st.builds(
    lambda kind, fields, drop: fields if drop else {"type": kind, **fields},
    st.sampled_from([*CLIENT_TYPES, "welcome", "", "PING", "join "]),
    st.dictionaries(st.sampled_from(FIELDS), json_values(5), max_size=4),
    st.booleans(),
)
NOT_JSON = st.one_of(
    st.text(max_size=100),
    st.sampled_from(["", "{", "}", '{"type":"ping"' * 3, "nul\x00", "\ufeff{}"]),
    st.integers(1, 100_000).map(lambda n: "[" * n),
    st.integers(1, 200).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(1, 5000).map(lambda n: '{"type":"ping","x":' + "[" * n + "]" * n + "}"),
)
PUBLISH = st.fixed_dictionaries(
    {
        "mid": st.sampled_from(["0", "1", "2", "x"]),
        "source": st.sampled_from(["microphone", "camera", "document", "screen"]),
    }
)
SUBSCRIBE = st.fixed_dictionaries(
    {"mid": st.sampled_from(["0", "1", "9"]), "track_id": st.text(min_size=1, max_size=8)}
)
SESSIONS: Bundle[str] = Bundle("sessions")
INVITATIONS: Bundle[str] = Bundle("invitations")
# Codes a socket may be closed with, and when (docs/protocol.md, "Closes"):
# 4409 superseded (always possible: a person's slot moved to another socket).
ALWAYS_ALLOWED = {4409}


class Sock:
    """One socket of the machine: reads in the background, records what it must."""

    def __init__(self, m: Machine, name: str, token: str, identity: Msg) -> None:
        self.m, self.name, self.token, self.identity = m, name, token, identity
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.session_id: str | None = None
        self.allowed: set[int] = set(ALWAYS_ALLOWED)
        self.exp: float = time.time() + 3600
        self.pongs: dict[str, asyncio.Future[None]] = {}
        self.closed_by_us = False
        self.last_sent: list[str] = []

    @property
    def alive(self) -> bool:
        return self.reader is not None and not self.reader.done()

    async def open(self) -> None:
        self.ws = await self.m.client.ws_connect(f"/ws?token={self.token}")
        first = await self.ws.receive(timeout=10)
        assert first.type == aiohttp.WSMsgType.TEXT, (self.name, first)
        welcome = json.loads(first.data)
        assert welcome["type"] == "welcome", welcome
        self.exp = float(welcome.get("token_expires_at") or self.exp)
        self.allowed = set(ALWAYS_ALLOWED)
        self.closed_by_us = False
        self.session_id = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for frame in self.ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                self._on(json.loads(frame.data))
            else:
                self.m.problems.append(f"{self.name}: unexpected frame {frame.type}")
        code = self.ws.close_code
        for fut in self.pongs.values():
            if not fut.done():
                fut.set_result(None)
        if self.closed_by_us or code in self.allowed:
            return
        if code == 4401 and time.time() >= self.exp - 1:
            return  # its (refreshed) token ran out
        self.m.problems.append(f"{self.name}: closed with {code} after {self.last_sent[-3:]}")

    def _on(self, msg: Msg) -> None:
        kind = msg.get("type")
        self.m.tally.reply(str(kind))
        if kind == "error":
            code = msg.get("code")
            if not isinstance(code, str) or not isinstance(msg.get("message"), str):
                self.m.problems.append(f"{self.name}: malformed error {msg}")
                return
            self.m.tally.error(code)
            if code == "internal_error":
                self.m.problems.append(f"{self.name}: internal_error after {self.last_sent[-3:]}")
            if code == "rate_limited" and not isinstance(msg.get("retry_after_ms"), int):
                self.m.problems.append(f"{self.name}: rate_limited without retry_after_ms")
        elif kind == "pong":
            fut = self.pongs.pop(str(msg.get("ref")), None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif kind == "joined":
            self.session_id = msg["session"]["session_id"]
            self.m.resume_tokens.append((self.name, msg["resume_token"]))
        elif kind == "left":
            self.session_id = None
        elif kind == "session.ended":
            if msg.get("session", {}).get("session_id") == self.session_id:
                self.session_id = None
        elif kind in ("invitation", "invitation.updated"):
            iid = msg.get("invitation", {}).get("invitation_id")
            if iid and iid not in self.m.seen_invitations:
                self.m.seen_invitations.append(iid)
        elif kind == "ack" and "token_expires_at" in msg:
            self.exp = float(msg["token_expires_at"] or self.exp)

    async def send_text(self, text: str, allow: int | None = None) -> None:
        """Send one text frame (reopening the socket if it was closed); ``allow``: the
        close this frame may legitimately cause."""
        if not self.alive:
            await self.open()
        assert self.ws is not None
        if allow is not None:
            self.allowed.add(allow)
        self.m.touched.add(self.name)
        self.last_sent = [*self.last_sent[-4:], text[:200]]
        self.m.tally.ws += 1
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(text)

    async def send(self, **msg: Any) -> None:
        await self.send_text(dumps(msg))

    async def send_frame(
        self, data: bytes, kind: aiohttp.WSMsgType, allow: int | None = None
    ) -> None:
        if not self.alive:
            await self.open()
        assert self.ws is not None
        if allow is not None:
            self.allowed.add(allow)
        self.m.touched.add(self.name)
        self.last_sent = [*self.last_sent[-4:], f"<{kind.name} {len(data)} bytes>"]
        self.m.tally.ws += 1
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_frame(data, kind)

    async def barrier(self) -> None:
        """Ping and wait for the pong: every earlier reply has come (one reader per
        socket, replies in order). A socket that stops answering is a hang."""
        if not self.alive:
            return
        assert self.ws is not None
        self.m.serial += 1
        ref = f"b{self.m.serial}"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pongs[ref] = fut
        self.m.tally.barriers += 1
        try:
            await self.ws.send_str(json.dumps({"type": "ping", "ref": ref}))
        except (ConnectionError, RuntimeError):
            return
        try:
            await asyncio.wait_for(fut, 5)
        except TimeoutError:
            self.m.problems.append(f"{self.name}: no pong within 5 s after {self.last_sent[-3:]}")

    async def close(self) -> None:
        if self.ws is not None:
            self.closed_by_us = True
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


class Machine(RuleBasedStateMachine):
    """The app, its sockets, the checks after each step and at the end."""

    media = False
    tally = Tally()

    sessions = SESSIONS
    invitations = INVITATIONS

    def __init__(self) -> None:
        super().__init__()
        self.loop = uvloop.new_event_loop()
        self.problems: list[str] = []
        loop_errors(self.loop, self.problems)
        self.log = ErrorLog().__enter__()
        self.tmp = Path(tempfile.mkdtemp(prefix="jr-fuzz-"))
        self.config = fuzz_config(self.tmp, media_enabled=self.media)
        self.tokens = TokenService(self.config)
        self.serial = 0
        self.steps = 0
        self.links = 0
        self.refresh_tokens: dict[str, st.SearchStrategy[str]] = {}
        self.touched: set[str] = set()
        self.resume_tokens: list[tuple[str, str]] = []
        self.seen_invitations: list[str] = []
        self.ended: set[str] = set()
        self.socks: dict[str, Sock] = {}
        self.client: TestClient[Any, Any] = self.run(self._start())

    # -- plumbing --------------------------------------------------------------------
    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 120))

    async def _start(self) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(self.config)))
        await client.start_server()
        self.client = client
        for name, identity in ROSTER.items():
            token = self.tokens.issue(**identity)
            self.socks[name] = Sock(self, name, token, identity)
            await self.socks[name].open()
        return client

    def token(self, name: str) -> str:
        return self.socks[name].token

    async def http(self, method: str, path: str, who: str | None, **kw: Any) -> tuple[int, Any]:
        headers = kw.pop("headers", {})
        if who is not None:
            headers.update(auth(self.token(who)))
        self.tally.http += 1
        async with self.client.request(method, path, headers=headers, **kw) as resp:
            body = await check_response(resp, f"{method} {path} as {who}", self.tally)
            return resp.status, body

    def step(self, coro: Any) -> Any:
        """Run one rule's work, then the barrier on every socket, then the checks."""

        async def go() -> Any:
            self.touched.clear()
            result = await coro
            self.steps += 1
            # Every socket now and then (bus messages reach all of them), else the ones
            # this step wrote to.
            every = self.steps % 5 == 0
            for name, sock in list(self.socks.items()):
                if every or name in self.touched:
                    await sock.barrier()
            return result

        result = self.run(go())
        self.check()
        self.tally.progress("ws")
        return result

    def check(self) -> None:
        problems = self.problems + self.log.records
        assert not problems, "\n".join(problems[:20])

    def sock(self, name: str) -> Sock:
        return self.socks[name]

    async def sealed(self) -> None:
        """Wait until every ended session is sealed: at once without media; with media,
        by the media node once the room's recording is closed."""
        archive = self.config.data_dir / "archive"
        deadline = time.monotonic() + 20
        for sid in sorted(self.ended):
            _, body = await self.http("GET", f"/api/sessions/{sid}", "admin")
            path = session_dir(archive, body["session"]["case_id"], sid) / MANIFEST
            while not path.exists():
                assert time.monotonic() < deadline, f"{sid} ended but not sealed after 20 s"
                await asyncio.sleep(0.05)

    # -- setup -----------------------------------------------------------------------
    @initialize(target=SESSIONS)
    def first_session(self) -> str:
        async def go() -> str:
            status, body = await self.http(
                "POST", "/api/cases/FZ-2026-0001/sessions", "clerk", json={"applicant_name": "甲"}
            )
            assert status == 201, body
            sid = str(body["session_id"])
            for dept in ("city-amr", "district-amr"):
                status, _ = await self.http(
                    "POST", f"/api/sessions/{sid}/invitations", "clerk", json={"dept": dept}
                )
                assert status == 201
            return sid

        return str(self.step(go()))

    # -- the end ---------------------------------------------------------------------
    def teardown(self) -> None:
        try:
            self.check()
            live = self.client.app[STORE] if self.client.app is not None else None

            async def stop() -> None:
                await self.sealed()
                for sock in self.socks.values():
                    sock.closed_by_us = True
                await self.client.close()
                for sock in self.socks.values():
                    await sock.close()

            self.run(stop())
            self.check()
            fresh = check_journal(self.config.data_dir, live)
            self.tally.sealed_verified += verify_sealed(self.config.data_dir, fresh, self.ended)
        finally:
            self.log.__exit__()
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


class SocketMachine(Machine):
    """The control plane with media off: sessions, invitations, sockets, chat."""

    # -- HTTP ------------------------------------------------------------------------
    @rule(
        target=SESSIONS,
        who=st.sampled_from([*STAFF, "amr"]),
        case=CASES,
        body=st.one_of(
            st.fixed_dictionaries(
                {}, optional={"applicant_name": TEXT, "matter": TEXT, "window": TEXT}
            ),
            json_values(6),
        ),
    )
    def create_session(self, who: str, case: str, body: Any) -> Any:
        async def go() -> Any:
            status, out = await self.http("POST", f"/api/cases/{case}/sessions", who, json=body)
            return str(out["session_id"]) if status == 201 else multiple()

        return self.step(go())

    @rule(
        target=INVITATIONS,
        session=SESSIONS,
        who=st.sampled_from([*STAFF, "supervisor"]),
        body=st.one_of(
            st.sampled_from(
                [
                    {"dept": "city-amr"},
                    {"dept": "district-amr"},
                    {"dept": "city-tax"},
                    {"dept": "city-amr", "level": "district"},
                    {"reviewer": "rev-city-tax-1"},
                    {"reviewer": "rev-district-amr-1", "note": "请看"},
                    {"dept": "no-such-dept"},
                    {"reviewer": "clerk-01"},
                    {"dept": "city-amr", "reviewer": "rev-city-amr-1"},
                ]
            ),
            json_values(6),
        ),
    )
    def invite(self, session: str, who: str, body: Any) -> Any:
        async def go() -> Any:
            status, out = await self.http(
                "POST", f"/api/sessions/{session}/invitations", who, json=body
            )
            return str(out["invitation_id"]) if status == 201 else multiple()

        return self.step(go())

    @rule(session=SESSIONS, who=st.sampled_from([*STAFF, "tax"]))
    def end_session(self, session: str, who: str) -> None:
        async def go() -> None:
            status, _ = await self.http("POST", f"/api/sessions/{session}/end", who)
            if status == 200:
                self.ended.add(session)

        self.step(go())

    # A link draws a QR code (~80 ms here): a few per example.
    @precondition(lambda self: self.links < 3)
    @rule(session=SESSIONS, name=st.one_of(st.none(), TEXT), join=st.booleans())
    def applicant_link(self, session: str, name: str | None, join: bool) -> None:
        self.links += 1

        async def go() -> None:
            status, out = await self.http(
                "POST", f"/api/sessions/{session}/applicant-link", "clerk", json={"name": name}
            )
            if status != 201:
                return
            old = self.socks.pop("applicant", None)
            if old is not None:
                await old.close()
            identity = {"role": "applicant", "sub": "applicant", "session": session}
            sock = Sock(self, "applicant", out["token"], identity)
            self.socks["applicant"] = sock
            await sock.open()
            if join:
                await sock.send(type="join", session_id=session, ref="aj")

        self.step(go())

    @rule(
        session=SESSIONS,
        who=st.sampled_from([*REVIEWERS, "clerk"]),
        body=st.one_of(
            st.sampled_from(
                [
                    {"decision": "approve"},
                    {"decision": "note", "note": "同意"},
                    {"decision": "materials_missing", "missing": ["营业执照", " "]},
                    {"decision": "refer", "refer_to": "city-tax"},
                    {"decision": "materials_missing", "missing": []},
                ]
            ),
            st.fixed_dictionaries(
                {"decision": st.sampled_from(["approve", "note", "refer", "x"])},
                optional={
                    "missing": st.lists(TEXT, max_size=3),
                    "note": TEXT,
                    "refer_to": TEXT,
                },
            ),
            json_values(6),
        ),
    )
    def file_opinion(self, session: str, who: str, body: Any) -> None:
        self.step(self.http("POST", f"/api/sessions/{session}/opinions", who, json=body))

    @rule(
        session=SESSIONS,
        who=st.sampled_from([*ROSTER, "applicant"]),
        view=st.sampled_from(
            ["case", "session", "invitations", "opinions", "snapshots", "list", "inbox", "me"]
        ),
    )
    def read_view(self, session: str, who: str, view: str) -> None:
        if who not in self.socks:
            who = "supervisor"

        async def go() -> None:
            if view == "case":
                status, body = await self.http("GET", f"/api/sessions/{session}", "admin")
                case = body["session"]["case_id"] if status == 200 else "FZ-2026-0001"
                await self.http("GET", f"/api/cases/{case}", who)
            elif view == "list":
                await self.http("GET", "/api/sessions", who, params={"limit": "50"})
            elif view == "inbox":
                await self.http("GET", "/api/invitations", who)
            elif view == "me":
                await self.http("GET", "/api/me", who)
            elif view == "session":
                await self.http("GET", f"/api/sessions/{session}", who)
            else:
                await self.http("GET", f"/api/sessions/{session}/{view}", who)

        self.step(go())

    @rule(
        invitation=INVITATIONS,
        who=st.sampled_from(REVIEWERS),
        accept=st.booleans(),
        reason=st.one_of(TEXT, json_values(4)),
    )
    def http_answer(self, invitation: str, who: str, accept: bool, reason: Any) -> None:
        verb = "accept" if accept else "decline"
        body = None if accept else {"reason": reason}
        self.step(self.http("POST", f"/api/invitations/{invitation}/{verb}", who, json=body))

    # -- sockets: valid messages -----------------------------------------------------
    @rule(
        who=st.sampled_from([*ROSTER, "applicant"]),
        session=st.one_of(SESSIONS, TEXT),
        ref=st.one_of(st.none(), TEXT),
    )
    def join(self, who: str, session: str, ref: str | None) -> None:
        if who in self.socks:
            self.step(self.sock(who).send(type="join", session_id=session, ref=ref))

    @rule(
        who=st.sampled_from([*ROSTER, "applicant"]),
        msg=st.sampled_from(
            ["leave", "ping", "media.sync", "media.ready", "recording.start", "recording.stop"]
        ),
        ref=st.one_of(st.none(), TEXT),
    )
    def simple(self, who: str, msg: str, ref: str | None) -> None:
        if who in self.socks:
            self.step(self.sock(who).send(type=msg, ref=ref))

    @rule(who=st.sampled_from([*ROSTER, "applicant"]), texts=st.lists(TEXT, min_size=1, max_size=6))
    def chat(self, who: str, texts: list[str]) -> None:
        async def go() -> None:
            sock = self.socks.get(who)
            if sock is None:
                return
            for text in texts:
                await sock.send(type="chat", text=text)

        self.step(go())

    @rule(
        who=st.sampled_from([*ROSTER, "applicant"]),
        pick=st.integers(0, 1000),
        how=st.sampled_from(["as is", "mangled", "secret only", "other"]),
    )
    def resume(self, who: str, pick: int, how: str) -> None:
        sock = self.socks.get(who)
        if sock is None:
            return
        if self.resume_tokens:
            owner, token = self.resume_tokens[pick % len(self.resume_tokens)]
        else:
            owner, token = who, "p_nothing.secret"
        if how == "mangled":
            token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        elif how == "secret only":
            token = token.partition(".")[2] or "x.y.z"
        elif how == "other":
            token = "p_" + "x" * (pick % 190) + ".s"
        note(f"resume {who} with {owner}'s token ({how})")
        self.step(sock.send(type="resume", resume_token=token))

    @rule(
        who=st.sampled_from(REVIEWERS),
        pick=st.one_of(INVITATIONS, st.integers(0, 1000), TEXT),
        accept=st.booleans(),
        reason=TEXT,
    )
    def ws_answer(self, who: str, pick: Any, accept: bool, reason: str) -> None:
        if isinstance(pick, int):
            pick = (
                self.seen_invitations[pick % len(self.seen_invitations)]
                if (self.seen_invitations)
                else "i_none"
            )
        if accept:
            msg: Msg = {"type": "invitation.accept", "invitation_id": pick}
        else:
            msg = {"type": "invitation.decline", "invitation_id": pick, "reason": reason}
        self.step(self.sock(who).send(**msg))

    @rule(who=st.sampled_from([*ROSTER, "applicant"]), data=st.data())
    def refresh(self, who: str, data: st.DataObject) -> None:
        sock = self.socks.get(who)
        if sock is None or who == "applicant":
            return
        if who not in self.refresh_tokens:  # built once: building costs more than drawing
            identity = ROSTER[who]
            self.refresh_tokens[who] = st.one_of(
                token_variants(self.tokens.issue(**identity), identity),
                st.sampled_from(list(ROSTER)).map(lambda n: self.tokens.issue(**ROSTER[n])),
                # Valid but short: the socket is closed with 4401 when it runs out.
                st.integers(1, 3).map(lambda s: self.tokens.issue(ttl=s, **identity)),
            )
        token = data.draw(self.refresh_tokens[who], label="token")
        self.step(sock.send(type="auth.refresh", token=token))

    @rule(
        who=st.sampled_from([*ROSTER, "applicant"]),
        sdp=SDP,
        publish=st.lists(PUBLISH, max_size=3),
        subscribe=st.lists(SUBSCRIBE, max_size=2),
    )
    def media_offer(self, who: str, sdp: str, publish: list[Msg], subscribe: list[Msg]) -> None:
        sock = self.socks.get(who)
        if sock is not None:
            self.step(sock.send(type="media.offer", sdp=sdp, publish=publish, subscribe=subscribe))

    # -- sockets: malformed ----------------------------------------------------------
    @rule(who=st.sampled_from(list(ROSTER)), values=st.lists(json_values(), min_size=1, max_size=8))
    def random_json(self, who: str, values: list[Any]) -> None:
        async def go() -> None:
            for value in values:
                await self.sock(who).send_text(dumps(value))

        self.step(go())

    @rule(
        who=st.sampled_from(list(ROSTER)),
        messages=st.lists(MUTATED, min_size=1, max_size=10),
    )
    def mutated(self, who: str, messages: list[Msg]) -> None:
        """Messages of a known (or nearly known) type with fields of any type."""

        async def go() -> None:
            for msg in messages:
                await self.sock(who).send_text(dumps(msg))

        self.step(go())

    @rule(who=st.sampled_from(list(ROSTER)), texts=st.lists(NOT_JSON, min_size=1, max_size=6))
    def not_json(self, who: str, texts: list[str]) -> None:
        async def go() -> None:
            for text in texts:
                await self.sock(who).send_text(text)

        self.step(go())

    @rule(
        who=st.sampled_from(list(ROSTER)),
        delta=st.integers(-8, 8),
        kind=st.sampled_from(["ascii chat", "cjk chat", "ping padding", "hard limit"]),
    )
    def huge(self, who: str, delta: int, kind: str) -> None:
        """Frames around the soft limit (an error, the socket lives) and above the hard
        one (aiohttp closes with 1009, which the protocol documents)."""
        sock = self.sock(who)
        limit = MAX_MESSAGE_BYTES
        allow = None
        if kind == "hard limit":
            text = '{"type":"chat","text":"' + "x" * (HARD_LIMIT + delta * 1000) + '"}'
            allow = 1009 if len(text) > HARD_LIMIT else None
        elif kind == "cjk chat":
            head = '{"type":"chat","text":"'
            text = head + "审" * ((limit - len(head) - 2) // 3 + delta) + '"}'
        elif kind == "ascii chat":
            head = '{"type":"chat","text":"'
            text = head + "x" * (limit - len(head) - 2 + delta) + '"}'
        else:
            head = '{"type":"ping","ref":"pad","pad":"'
            text = head + "y" * (limit - len(head) - 2 + delta) + '"}'
        self.step(sock.send_text(text, allow))

    @rule(who=st.sampled_from(list(ROSTER)), data=st.binary(max_size=300), utf8_text=st.booleans())
    def raw_frame(self, who: str, data: bytes, utf8_text: bool) -> None:
        """A binary frame (an error, the socket lives), or a text frame whose bytes
        are not UTF-8 (aiohttp closes with 1007: invalid frame payload)."""
        sock = self.sock(who)
        if utf8_text:
            payload = b'{"type":"chat","text":"' + data + b'\xff\xfe"}'
            self.step(sock.send_frame(payload, aiohttp.WSMsgType.TEXT, allow=1007))
        else:
            self.step(sock.send_frame(data, aiohttp.WSMsgType.BINARY))

    # -- connections -----------------------------------------------------------------
    @rule(who=st.sampled_from(list(ROSTER)), resume=st.booleans())
    def reconnect(self, who: str, resume: bool) -> None:
        """Drop the socket (the slot goes into its grace period) and open a new one,
        then resume with the last token or join afresh."""

        async def go() -> None:
            sock = self.sock(who)
            session = sock.session_id
            await sock.close()
            await sock.open()
            mine = [t for n, t in self.resume_tokens if n == who]
            if resume and mine:
                await sock.send(type="resume", resume_token=mine[-1])
            elif session is not None:
                await sock.send(type="join", session_id=session)

        self.step(go())

    @rule(who=st.sampled_from(list(ROSTER)), n=st.integers(20, 300))
    def flood(self, who: str, n: int) -> None:
        """Many messages at once: each answered (``rate_limited`` is an answer when the
        limiter is on; the socket stays open either way)."""

        async def go() -> None:
            sock = self.sock(who)
            for i in range(n):
                await sock.send_text(
                    dumps({"type": "chat", "text": f"flood {i}"})
                    if i % 2 and sock.session_id
                    else dumps({"type": "ping", "ref": f"f{i}"})
                )

        self.step(go())


class MediaMachine(Machine):
    """Media on: offers (real-looking, mangled and garbage SDP, odd publish and
    subscribe lists) reach the SFU from people who joined; bad ones must give
    ``bad_sdp`` (or another precise code), never ``internal_error``."""

    media = True

    @initialize(session=SESSIONS)
    def clerk_offers(self, session: str) -> None:
        """A browser's offer gets an answer: the offers below reach a real SFU."""

        async def go() -> None:
            sock = self.sock("clerk")
            await sock.send(type="join", session_id=session)
            await sock.send(type="media.offer", sdp="\r\n".join(BROWSER_OFFER_LINES) + "\r\n")

        answers = self.tally.replies.get("media.answer", 0)
        self.step(go())
        assert self.tally.replies.get("media.answer", 0) == answers + 1

    @rule(who=st.sampled_from(["clerk", "admin", "amr", "district"]), session=SESSIONS)
    def join(self, who: str, session: str) -> None:
        self.step(self.sock(who).send(type="join", session_id=session))

    @rule(
        who=st.sampled_from(["clerk", "admin", "amr", "district"]),
        session=SESSIONS,
        sdp=SDP_TODAY,  # FIXME(lead): widen to SDP when the bad-SDP fix lands
        publish=st.lists(PUBLISH, max_size=3),
        subscribe=st.lists(SUBSCRIBE, max_size=2),
    )
    def offer(
        self, who: str, session: str, sdp: str, publish: list[Msg], subscribe: list[Msg]
    ) -> None:
        async def go() -> None:
            sock = self.sock(who)
            if sock.session_id is None:
                await sock.send(type="join", session_id=session)
            await sock.send(type="media.offer", sdp=sdp, publish=publish, subscribe=subscribe)

        self.step(go())

    @rule(
        who=st.sampled_from(["clerk", "admin", "amr", "district"]),
        msg=st.sampled_from(["media.sync", "media.ready", "leave", "recording.start"]),
    )
    def other(self, who: str, msg: str) -> None:
        self.step(self.sock(who).send(type=msg))

    @precondition(lambda self: self.steps > 20)
    @rule(session=SESSIONS)
    def end(self, session: str) -> None:
        async def go() -> None:
            status, _ = await self.http("POST", f"/api/sessions/{session}/end", "clerk")
            if status == 200:
                self.ended.add(session)

        self.step(go())


@pytest.mark.parametrize(
    ("frame", "ref"),
    [
        ('{"type": "ping", "ref": "\\ud83d\\ude00"}', "\U0001f600"),  # an escaped pair: fine
        ('{"type": "ping", "ref": "\\ud83d"}', None),
        ('{"type": "chat", "text": "\\udfff\\ud83d"}', None),  # low before high: two halves
        ('{"type": "ping", "\\udc00": 1}', None),  # in a key
    ],
)
def test_lone_surrogates_are_refused_at_parsing(frame: str, ref: str | None) -> None:
    """Found by the fuzz run: a \\u escape of half a surrogate pair parsed into a string
    that no UTF-8 frame can carry, so the reply echoing its ``ref`` killed the socket's
    writer (every later message went unanswered)."""
    if ref is not None:
        assert protocol.parse(frame, MAX_MESSAGE_BYTES).ref == ref
        return
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse(frame, MAX_MESSAGE_BYTES)
    assert (err.value.code, err.value.ref) == ("bad_json", None)


def run_machine(machine: type[Machine], examples: int, steps: int) -> Tally:
    tally = Tally()
    machine.tally = tally
    try:
        run_state_machine_as_test(machine, settings=fuzz_settings(examples, steps))
    finally:
        print(
            f"\n{machine.__name__}: {tally.ws} frames + {tally.http} HTTP requests "
            f"(+{tally.barriers} barrier pings) in {time.monotonic() - tally.started:.0f} s, "
            f"{tally.sealed_verified} sealed case files verified; "
            f"codes: {dict(sorted(tally.errors.items()))}; "
            f"messages received: {dict(sorted(tally.replies.items()))}"
        )
    return tally


def test_socket_protocol() -> None:
    tally = run_machine(SocketMachine, examples=100, steps=60)
    # Tens of thousands of messages, not counting the pings that end each step.
    assert tally.ws + tally.http >= scaled(20_000)
    assert tally.sealed_verified > 0


def test_media_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    # FIXME(lead): drop these two lines when a session ended after its room closed (a
    # `leave`, or an offer refused with bad_sdp) is sealed at its end, not ~15 s later by
    # the sweeper (fuzz helper's notes, finding 3). Until then each such example waits.
    monkeypatch.setattr(recording, "SWEEP_EVERY_S", 0.5)
    monkeypatch.setattr(recording, "SWEEP_GRACE_S", 1.0)
    tally = run_machine(MediaMachine, examples=5, steps=30)
    assert tally.ws >= scaled(50)
