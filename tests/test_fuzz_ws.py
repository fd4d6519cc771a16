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

import time
from typing import Any

import aiohttp
import pytest
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from signaling import protocol

from .fuzz_sockets import (
    CASES,
    INVITATIONS,
    MUTATED,
    NOT_JSON,
    PUBLISH,
    REVIEWERS,
    ROSTER,
    SESSIONS,
    STAFF,
    SUBSCRIBE,
    Machine,
    MediaMachine,
    Msg,
    Sock,
)
from .fuzzing import (
    HARD_LIMIT,
    MAX_MESSAGE_BYTES,
    SDP,
    TEXT,
    Tally,
    bound_shrinking,
    dumps,
    fuzz_settings,
    json_values,
    scaled,
    token_variants,
)


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
        messages=st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "leave",
                        "ping",
                        "media.sync",
                        "media.ready",
                        "recording.start",
                        "recording.stop",
                    ]
                ),
                st.one_of(st.none(), TEXT),
            ),
            min_size=1,
            max_size=6,
        ),
    )
    def simple(self, who: str, messages: list[tuple[str, str | None]]) -> None:
        """The messages without fields, each with or without a ``ref``."""

        async def go() -> None:
            sock = self.socks.get(who)
            if sock is None:
                return
            for kind, ref in messages:
                await sock.send(type=kind, ref=ref)

        self.step(go())

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

    @rule(who=st.sampled_from(list(ROSTER)), n=st.integers(50, 300))
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
    assert (err.value.code, err.value.ref) == ("invalid_message", None)


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


def test_socket_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    bound_shrinking(monkeypatch)
    tally = run_machine(SocketMachine, examples=120, steps=60)
    # Tens of thousands of messages, not counting the pings that end each step.
    assert tally.ws + tally.http >= scaled(20_000)
    assert tally.sealed_verified > 0


def test_media_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    bound_shrinking(monkeypatch)
    tally = run_machine(MediaMachine, examples=5, steps=30)
    assert tally.ws >= scaled(50)
