"""Webhooks to the approval system, against a real HTTP receiver started here (no mocks):
signatures, retries and backoff, refusals, the admin view, a crash of a real server
process, and two nodes sharing one Redis."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.appkeys import SERVICE
from signaling.config import Config, ConfigError, load_config
from signaling.models import Event
from signaling.state import MemoryStore, Store
from signaling.state.redis_store import RedisStore
from signaling.webhooks import Webhooks, parse_retry_after, redact

from .conftest import Tokens, auth, flush_redis, free_port, make_config

Client = TestClient[Any, Any]
Json = dict[str, Any]
HOOK_SECRET = "approval-webhook-secret-" + "k" * 32
CASE = "GZ-2024-0901"
BODY_KEYS = {"id", "event", "created_at", "case_id", "session_id", "data"}


# -- a receiver: a real aiohttp server on a free port ---------------------------------


@dataclass
class Hit:
    at: float  # monotonic
    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def delivery(self) -> str:
        return self.headers["X-JointReview-Delivery"]


Answer = Callable[[Hit, int], tuple[int, dict[str, str]]]


class Receiver:
    """Records every request; ``answer(hit, n)`` chooses the reply, ``n`` counting the
    requests of that delivery from 1."""

    def __init__(
        self, answer: Answer | None = None, delay: float = 0.0, stall_first: float = 0.0
    ) -> None:
        self.answer: Answer = answer or (lambda hit, n: (200, {}))
        self.delay = delay
        self.stall_first = stall_first  # the very first request hangs this long
        self.hits: list[Hit] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/approval/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        hit = Hit(time.monotonic(), dict(request.headers), await request.read())
        self.hits.append(hit)
        n = sum(1 for h in self.hits if h.delivery == hit.delivery)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.stall_first and len(self.hits) == 1:
            await asyncio.sleep(self.stall_first)
        hit.status, headers = self.answer(hit, n)
        return web.json_response({"ok": hit.status < 300}, status=hit.status, headers=headers)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/approval/hooks", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def by_delivery(self) -> dict[str, list[Hit]]:
        out: dict[str, list[Hit]] = {}
        for h in self.hits:
            out.setdefault(h.delivery, []).append(h)
        return out

    def delivered(self) -> list[Hit]:
        return [h for h in self.hits if 200 <= h.status < 300]


async def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``check`` (plain or async) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def verify(hit: Hit) -> Json:
    """What a receiver does (docs/webhooks.md): check both signatures, then read."""
    claims = jwt.decode(
        hit.headers["Authorization"],
        HOOK_SECRET,
        algorithms=["HS256"],
        issuer="jointreview",
        options={"require": ["iss", "iat", "exp", "sha256"]},
    )
    assert claims["sha256"] == base64.b64encode(hashlib.sha256(hit.body).digest()).decode()
    assert 0 < claims["exp"] - claims["iat"] <= 600
    mac = hmac.new(HOOK_SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hit.headers["X-JointReview-Signature"], f"sha256={mac}")
    assert hit.headers["Content-Type"].startswith("application/json")
    body: Json = json.loads(hit.body)
    assert set(body) == BODY_KEYS
    assert hit.headers["X-JointReview-Event"] == body["event"]
    return body


def hook_config(tmp_path: Path, urls: list[str], **kw: Any) -> Config:
    values: dict[str, Any] = {
        "webhook_urls": urls,
        "webhook_secret": HOOK_SECRET,
        "webhook_backoff_s": 0.2,
        "webhook_poll_s": 0.05,
        "webhook_timeout_s": 2.0,
        "webhook_lease_s": 4.0,
        **kw,
    }
    return make_config(tmp_path, **values)


async def start_session(client: Any, tok: Tokens, case_id: str = CASE) -> str:
    r = await client.post(
        f"/api/cases/{case_id}/sessions",
        json={"applicant_name": "张三", "matter": "食品经营许可"},
        headers=auth(tok.clerk()),
    )
    assert r.status == 201, await r.text()
    return str((await r.json())["session_id"])


async def detail(client: Client, tok: Tokens, delivery_id: str) -> Json:
    r = await client.get(f"/api/webhooks/deliveries/{delivery_id}", headers=auth(tok.admin()))
    assert r.status == 200, await r.text()
    return dict(await r.json())


# -- signed deliveries of a whole joint review ----------------------------------------


async def test_signed_deliveries_of_a_joint_review(tmp_path: Path, tok: Tokens) -> None:
    async with Receiver() as rx:
        app = create_app(hook_config(tmp_path, [rx.url]))
        async with TestClient(TestServer(app)) as client:
            sid = await start_session(client, tok)
            r = await client.post(
                f"/api/sessions/{sid}/invitations",
                json={"dept": "city-amr"},
                headers=auth(tok.clerk()),
            )
            iid = (await r.json())["invitation_id"]
            r = await client.post(f"/api/invitations/{iid}/accept", headers=auth(tok.reviewer()))
            assert r.status == 200
            r = await client.post(
                f"/api/sessions/{sid}/opinions",
                json={"decision": "materials_missing", "missing": ["股东会决议"]},
                headers=auth(tok.reviewer()),
            )
            assert r.status == 201, await r.text()
            r = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
            assert r.status == 200
            # Nobody joined, so no media node followed the session: the node that ended
            # it sealed its case file before answering. The export's event is recorded.
            archive = app[SERVICE].archive_dir
            manifest_path = archive / CASE / sid / "manifest.json"
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            manifest["manifest_sha256"] = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
            await app[SERVICE].record(
                CASE, "export.ready", session_id=sid, file="export/composite.mp4", size=1234
            )
            await eventually(lambda: len(rx.hits) >= 5, "five deliveries")
            await asyncio.sleep(0.3)  # nothing else may follow (invitations are not sent)

            bodies = {b["event"]: b for b in map(verify, rx.hits)}
            assert len(rx.hits) == 5
            assert set(bodies) == {
                "session.started",
                "opinion.filed",
                "session.ended",
                "recording.ready",
                "export.ready",
            }
            assert len({b["id"] for b in bodies.values()}) == 5
            for body in bodies.values():
                assert (body["case_id"], body["session_id"]) == (CASE, sid)
                assert body["id"].startswith("ev_") and body["created_at"] <= time.time()
            started = bodies["session.started"]["data"]
            assert started["applicant_name"] == "张三" and started["actor"]["sub"] == "clerk-01"
            opinion = bodies["opinion.filed"]["data"]
            assert opinion["decision"] == "materials_missing"
            assert opinion["missing"] == ["股东会决议"]
            assert opinion["actor"]["sub"] == "rev-city-amr-1"
            assert bodies["session.ended"]["data"]["actor"]["sub"] == "clerk-01"
            ready = bodies["recording.ready"]["data"]
            assert ready["manifest_sha256"] == manifest["manifest_sha256"]
            assert ready["manifest"] == f"{CASE}/{sid}/manifest.json"
            assert ready["casefile_url"] == f"/api/sessions/{sid}/casefile"
            assert ready["tracks"] == [] and ready["recorded"] is False  # no media
            assert bodies["export.ready"]["data"]["file"] == "export/composite.mp4"
            seqs = [bodies[k]["data"]["seq"] for k in ("session.started", "session.ended")]
            assert seqs[0] < seqs[1]  # the timeline order, whatever the arrival order

            # A tampered body no longer matches the token's sha256 claim.
            hit = rx.hits[0]
            claims = jwt.decode(hit.headers["Authorization"], HOOK_SECRET, ["HS256"])
            tampered = hit.body.replace(b"}", b" }", 1)
            assert claims["sha256"] != base64.b64encode(hashlib.sha256(tampered).digest()).decode()

            r = await client.get(
                "/api/webhooks/deliveries?status=delivered", headers=auth(tok.supervisor())
            )
            listed = (await r.json())["deliveries"]
            assert {d["delivery_id"] for d in listed} == {h.delivery for h in rx.hits}
            assert all(d["attempt_count"] == 1 for d in listed)
            assert all(d["last_attempt"]["status_code"] == 200 for d in listed)


async def test_only_the_chosen_events_are_sent(tmp_path: Path, tok: Tokens) -> None:
    async with Receiver() as rx:
        config = hook_config(tmp_path, [rx.url], webhook_events=["session.ended"])
        async with TestClient(TestServer(create_app(config))) as client:
            sid = await start_session(client, tok)
            await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
            await eventually(lambda: rx.hits, "a delivery")
            await asyncio.sleep(0.2)
            assert [verify(h)["event"] for h in rx.hits] == ["session.ended"]


# -- retries ----------------------------------------------------------------------------


async def test_server_errors_are_retried_with_growing_gaps(tmp_path: Path, tok: Tokens) -> None:
    async with Receiver(lambda hit, n: (500 if n <= 2 else 200, {})) as rx:
        async with TestClient(TestServer(create_app(hook_config(tmp_path, [rx.url])))) as client:
            await start_session(client, tok)
            await eventually(lambda: len(rx.hits) >= 3, "three attempts")
            await asyncio.sleep(0.5)
            assert [h.status for h in rx.hits] == [500, 500, 200]
            assert len({h.delivery for h in rx.hits}) == 1
            assert len({verify(h)["id"] for h in rx.hits}) == 1
            assert len({h.body for h in rx.hits}) == 1  # the same bytes every time
            assert [h.headers["X-JointReview-Attempt"] for h in rx.hits] == ["1", "2", "3"]
            gaps = [b.at - a.at for a, b in zip(rx.hits, rx.hits[1:], strict=False)]
            assert 0.18 <= gaps[0] < 0.6 and 0.38 <= gaps[1] < 1.0, gaps  # 0.2 s, 0.4 s
            assert gaps[1] > gaps[0] * 1.5, gaps

            d = await detail(client, tok, rx.hits[0].delivery)
            assert d["status"] == "delivered" and d["delivered_at"] and d["attempt_count"] == 3
            assert [a["status_code"] for a in d["attempts"]] == [500, 500, 200]
            assert [a["n"] for a in d["attempts"]] == [1, 2, 3]
            assert all(a["duration_ms"] >= 0 and a["node"] and a["at"] for a in d["attempts"])
            assert d["attempts"][0]["response"] == '{"ok": false}'
            r = await client.get(
                "/api/webhooks/deliveries?status=pending", headers=auth(tok.supervisor())
            )
            assert (await r.json())["deliveries"] == []
            r = await client.get("/api/webhooks/deliveries?limit=1", headers=auth(tok.admin()))
            assert [x["delivery_id"] for x in (await r.json())["deliveries"]] == [d["delivery_id"]]


async def test_retry_after_is_respected(tmp_path: Path, tok: Tokens) -> None:
    def answer(hit: Hit, n: int) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "1"}) if n == 1 else (200, {})

    async with Receiver(answer) as rx:
        async with TestClient(TestServer(create_app(hook_config(tmp_path, [rx.url])))) as client:
            await start_session(client, tok)
            await eventually(lambda: len(rx.hits) >= 2, "the retry", timeout=5)
            assert 0.95 <= rx.hits[1].at - rx.hits[0].at < 2.0  # not the 0.2 s backoff
            d = await detail(client, tok, rx.hits[0].delivery)
            assert d["attempts"][0]["retry_after_s"] == 1.0


async def test_a_client_error_stops_until_an_admin_retries(tmp_path: Path, tok: Tokens) -> None:
    async with Receiver(lambda hit, n: (400 if n == 1 else 200, {})) as rx:
        async with TestClient(TestServer(create_app(hook_config(tmp_path, [rx.url])))) as client:
            await start_session(client, tok)
            await eventually(lambda: rx.hits, "the first attempt")
            await asyncio.sleep(1.0)  # five backoff periods: nothing more comes
            assert [h.status for h in rx.hits] == [400]
            did = rx.hits[0].delivery
            d = await detail(client, tok, did)
            assert d["status"] == "failed" and "HTTP 400" in d["failed_reason"]
            r = await client.get(
                "/api/webhooks/deliveries?status=failed", headers=auth(tok.supervisor())
            )
            assert [x["delivery_id"] for x in (await r.json())["deliveries"]] == [did]

            r = await client.post(
                f"/api/webhooks/deliveries/{did}/retry", headers=auth(tok.admin())
            )
            assert r.status == 200, await r.text()
            await eventually(lambda: len(rx.hits) == 2, "the retried delivery")
            await asyncio.sleep(0.1)
            d = await detail(client, tok, did)
            assert d["status"] == "delivered"
            assert [a["status_code"] for a in d["attempts"]] == [400, 200]
            assert [x["by"] for x in d["retries"]] == ["admin"]
            r = await client.post(
                f"/api/webhooks/deliveries/{did}/retry", headers=auth(tok.admin())
            )
            assert r.status == 409 and (await r.json())["error"]["code"] == "already_delivered"
            r = await client.get("/api/webhooks/deliveries/wd_nosuch", headers=auth(tok.admin()))
            assert r.status == 404 and (await r.json())["error"]["code"] == "delivery_not_found"
            r = await client.get("/api/webhooks/deliveries?status=lost", headers=auth(tok.admin()))
            assert r.status == 400
            r = await client.get("/api/webhooks/deliveries", headers=auth(tok.admin(case=CASE)))
            assert r.status == 403


async def test_timeouts_and_refused_connections(tmp_path: Path, tok: Tokens) -> None:
    closed = f"http://127.0.0.1:{free_port()}/nobody-listens"
    async with Receiver(stall_first=1.0) as rx:  # beyond webhook_timeout_s
        config = hook_config(
            tmp_path,
            [rx.url, closed],
            webhook_timeout_s=0.4,
            webhook_lease_s=1.0,
            webhook_backoff_s=0.1,
            webhook_max_attempts=3,
        )
        async with TestClient(TestServer(create_app(config))) as client:
            await start_session(client, tok)

            async def settled() -> list[Json]:
                r = await client.get("/api/webhooks/deliveries", headers=auth(tok.admin()))
                docs = (await r.json())["deliveries"]
                return [d for d in docs if d["status"] in ("delivered", "failed")]

            async def both_settled() -> bool:
                return len(await settled()) == 2

            await eventually(both_settled, "both deliveries settled")
            by_url = {d["url"]: d for d in await settled()}
            ok = await detail(client, tok, by_url[rx.url]["delivery_id"])
            assert ok["status"] == "delivered"
            assert ok["attempts"][0]["error"].startswith("timeout after 0.4 s")
            assert ok["attempts"][0]["status_code"] is None
            assert ok["attempts"][-1]["status_code"] == 200
            bad = await detail(client, tok, by_url[closed]["delivery_id"])
            assert bad["status"] == "failed" and bad["failed_reason"] == "gave up after 3 attempts"
            assert all("Connect" in a["error"] for a in bad["attempts"]), bad["attempts"]


# -- a crash of a real server process -------------------------------------------------


async def test_a_delivery_survives_a_crash(
    tmp_path: Path, tok: Tokens, server_factory: Callable[..., Any]
) -> None:
    up = False
    async with Receiver(lambda hit, n: (200 if up else 503, {})) as rx:
        env = {
            "JR_WEBHOOK_URLS": json.dumps([rx.url]),
            "JR_WEBHOOK_SECRET": HOOK_SECRET,
            "JR_WEBHOOK_BACKOFF_S": "0.2",
            "JR_WEBHOOK_BACKOFF_MAX_S": "0.4",
            "JR_WEBHOOK_POLL_S": "0.1",
            "JR_WEBHOOK_TIMEOUT_S": "1",
            "JR_WEBHOOK_LEASE_S": "2",
            "JR_MEDIA_ENABLED": "false",
        }
        data = tmp_path / "node-data"
        server = await asyncio.to_thread(server_factory, data, env=env)
        async with aiohttp.ClientSession(server.url) as http:
            await start_session(http, tok)
        await eventually(lambda: len(rx.hits) >= 2, "failing attempts")
        await asyncio.to_thread(server.stop, signal.SIGKILL)
        up = True
        await asyncio.sleep(0.3)
        assert all(h.status == 503 for h in rx.hits)  # nobody sends while the node is down

        again = await asyncio.to_thread(server_factory, data, env=env)
        await eventually(rx.delivered, "the delivery after the restart", timeout=15)
        assert len({h.delivery for h in rx.hits}) == 1
        assert len({verify(h)["id"] for h in rx.hits}) == 1
        async with aiohttp.ClientSession(again.url) as http:
            did = rx.hits[0].delivery
            r = await http.get(f"/api/webhooks/deliveries/{did}", headers=auth(tok.admin()))
            d = await r.json()
        assert d["status"] == "delivered"
        codes = [a["status_code"] for a in d["attempts"]]
        assert codes[-1] == 200 and 503 in codes
        assert len(rx.delivered()) == 1


# -- several nodes, one Redis ---------------------------------------------------------


async def test_two_nodes_deliver_each_event_once(
    tmp_path: Path, tok: Tokens, redis_url: str
) -> None:
    flush_redis(redis_url)
    # Every delivery fails once, so its retry is up for grabs by either node.
    async with Receiver(lambda hit, n: (500 if n == 1 else 200, {}), delay=0.03) as rx:

        def node(name: str) -> Config:
            return hook_config(
                tmp_path / name,
                [rx.url],
                redis_url=redis_url,
                node_id=name,
                webhook_backoff_s=0.1,
                webhook_poll_s=0.02,
                webhook_concurrency=2,
                media_enabled=False,
            )

        async with (
            TestClient(TestServer(create_app(node("node-a")))) as a,
            TestClient(TestServer(create_app(node("node-b")))) as b,
        ):
            for i in range(6):
                first, second = (a, b) if i % 2 else (b, a)
                sid = await start_session(first, tok, case_id=f"C-{i}")
                r = await second.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
                assert r.status == 200
            # Three events a session: started, ended, and its (empty) case file sealed.
            await eventually(lambda: len(rx.delivered()) >= 18, "18 deliveries", timeout=15)
            await asyncio.sleep(0.5)  # a duplicate would show up by now

            per_event = Counter(verify(h)["id"] for h in rx.delivered())
            assert len(per_event) == 18 and set(per_event.values()) == {1}
            kinds = Counter(verify(h)["event"] for h in rx.delivered())
            assert kinds == {"session.started": 6, "session.ended": 6, "recording.ready": 6}
            for hits in rx.by_delivery().values():
                assert [h.status for h in hits] == [500, 200]
            nodes = set()
            for did in rx.by_delivery():
                d = await detail(a, tok, did)
                assert d["status"] == "delivered"
                assert [x["status_code"] for x in d["attempts"]] == [500, 200]
                nodes |= {x["node"] for x in d["attempts"]}
            assert nodes == {"node-a", "node-b"}


async def test_one_claim_wins_and_a_dead_nodes_lease_expires(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    stores: list[Store] = [await RedisStore.connect(redis_url, prefix=prefix) for _ in range(2)]
    now = [1000.0]
    config = make_config(Path("/nonexistent"), webhook_lease_s=30.0)
    hooks = [Webhooks(s, config, f"n{i}", clock=lambda: now[0]) for i, s in enumerate(stores * 4)]
    try:
        event = Event(seq=1, ts=now[0], type="opinion.filed", case_id=CASE, session_id="s_x")
        [did] = await hooks[0].enqueue(event, ["http://127.0.0.1:9/x"])
        won = await asyncio.gather(*(h._claim(did, f"c{i}", now[0]) for i, h in enumerate(hooks)))
        assert sum(d is not None for d in won) == 1
        doc = await stores[1].get(f"webhook:{did}")
        assert doc is not None and doc["status"] == "delivering"
        # The winner dies without a word; once its lease has run out, another takes it.
        assert await hooks[1]._claim(did, "late", now[0] + 29) is None
        now[0] += 31
        taken = await hooks[1]._claim(did, "next", now[0])
        assert taken is not None and taken["lease"]["node"] == "n1"
        assert "lease ran out" in taken["attempts"][0]["error"]
    finally:
        for s in stores:
            await s.close()


# -- the small parts ---------------------------------------------------------------------


def test_retry_after_forms() -> None:
    assert parse_retry_after("120", 0) == 120.0
    assert parse_retry_after(None, 0) is None
    assert parse_retry_after("soon", 0) is None
    when = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(when, 1445412470.0) == 10.0
    assert parse_retry_after(when, 1445412490.0) == 0.0


def test_backoff_doubles_up_to_the_cap(tmp_path: Path) -> None:
    config = make_config(tmp_path, webhook_backoff_s=1.0, webhook_backoff_max_s=10.0)
    hooks = Webhooks(MemoryStore(None), config, "n")
    assert [hooks._delay(n, None) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert hooks._delay(1, 30.0) == 30.0 and hooks._delay(4, 3.0) == 8


def test_urls_shown_without_secrets() -> None:
    assert redact("https://u:pw@approval.example:8443/h?k=s") == "https://approval.example:8443/h?…"
    assert redact("http://10.0.0.5/hooks") == "http://10.0.0.5/hooks"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JR_WEBHOOK_URLS": '["http://a.example/h"]'}, "webhook_secret: at least 32"),
        ({"JR_WEBHOOK_URLS": '["ftp://a.example/h"]'}, "webhook_urls (from JR_WEBHOOK_URLS)"),
        ({"JR_WEBHOOK_URLS": "http://a.example/h"}, "not valid JSON"),
        ({"JR_WEBHOOK_TIMEOUT_S": "30", "JR_WEBHOOK_LEASE_S": "20"}, "webhook_lease_s"),
        ({"JR_WEBHOOK_EVENTS": '["invitation.created"]'}, "webhook_events"),
    ],
)
def test_bad_webhook_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(environ=env)


def test_webhook_settings_from_the_environment() -> None:
    config = load_config(
        environ={
            "JR_WEBHOOK_URLS": '["https://approval.example/hooks", "http://10.0.0.7/h"]',
            "JR_WEBHOOK_SECRET": HOOK_SECRET,
            "JR_WEBHOOK_MAX_ATTEMPTS": "5",
        }
    )
    assert config.webhook_urls == ["https://approval.example/hooks", "http://10.0.0.7/h"]
    assert config.webhook_max_attempts == 5 and config.webhook_timeout_s == 10.0
    assert len(config.webhook_events) == 7  # exception.raised and .handled too (#15)
