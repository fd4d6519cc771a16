"""The HTTP API as its callers meet it: every route × every role, and every way to get it wrong.

The role matrix is derived from ``signaling.api.ROUTES``: a route added without a row
here fails ``test_matrix_covers_every_route``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.api import ROUTES
from signaling.appkeys import SERVICE
from signaling.auth import TokenService
from signaling.webhooks import WEBHOOKS

from .conftest import Tokens, auth, make_config
from .images import tiny

Client = TestClient[Any, Any]
Json = dict[str, Any]

CASE = "GZ-2024-0815"
ROLES = ("clerk", "admin", "supervisor", "reviewer", "other_reviewer", "applicant")
SUB = {
    "clerk": "clerk-01",
    "admin": "admin",
    "supervisor": "sup-01",
    "reviewer": "rev-city-amr-1",
    "other_reviewer": "rev-city-tax-1",
    "applicant": "applicant-x",
}
ROLE_CLAIM = {r: ("reviewer" if r == "other_reviewer" else r) for r in ROLES}


@dataclass
class World:
    """One active session of CASE with a pending invitation for the city-amr department."""

    case_id: str
    session_id: str
    invitation_id: str
    snapshot_id: str
    delivery_id: str = ""  # a queued webhook delivery of the session's start

    def fill(self, template: str) -> str:
        return template.format(
            case_id=self.case_id,
            session_id=self.session_id,
            invitation_id=self.invitation_id,
            snapshot_id=self.snapshot_id,
            delivery_id=self.delivery_id,
            exception_id="ex_nosuch",  # nothing went wrong in this world
            track_id="nosuch.1.0",  # nothing is recorded in this world
            path="manifest.json",
            job_id="0123456789abcdef01234567.00",  # no watermarked export in this world
        )


def token_for(tok: Tokens, role: str, w: World) -> str:
    if role == "applicant":
        return tok.applicant(w.session_id, w.case_id)
    maker: Callable[[], str] = getattr(tok, role)
    return maker()


async def create_session(client: Client, token: str, case_id: str = CASE, **body: Any) -> Json:
    r = await client.post(f"/api/cases/{case_id}/sessions", json=body, headers=auth(token))
    assert r.status == 201, await r.text()
    return dict(await r.json())


async def invite(client: Client, token: str, session_id: str, **body: Any) -> Json:
    r = await client.post(f"/api/sessions/{session_id}/invitations", json=body, headers=auth(token))
    assert r.status == 201, await r.text()
    return dict(await r.json())


async def expect_error(r: Any, status: int, code: str) -> Json:
    text = await r.text()
    assert r.status == status, text
    assert r.content_type == "application/json", text
    err = (await r.json())["error"]
    assert err["code"] == code, text
    assert isinstance(err["message"], str) and err["message"]
    return dict(err)


async def assert_still_serving(client: Client) -> None:
    r = await client.get("/healthz")
    assert r.status == 200
    assert (await r.json())["status"] == "ok"


@pytest.fixture
async def world(client: Client, tok: Tokens) -> World:
    created = await create_session(
        client, tok.clerk(), applicant_name="张三", matter="食品经营许可"
    )
    sid = created["session_id"]
    inv = await invite(client, tok.clerk(), sid, dept="city-amr", note="请核对营业执照")
    r = await client.post(
        f"/api/sessions/{sid}/snapshots",
        data=PNG,
        headers={**auth(tok.clerk()), "Content-Type": "image/png"},
    )
    assert r.status == 201, await r.text()
    # No webhook URL is configured here, so nothing sends it: it stays pending.
    started = (await client.app[SERVICE].events(CASE))[0]
    [delivery_id] = await client.app[WEBHOOKS].enqueue(started, [HOOK_URL])
    return World(CASE, sid, inv["invitation_id"], (await r.json())["snapshot_id"], delivery_id)


# -- the role matrix ------------------------------------------------------------------


def _me(b: Json, w: World, role: str) -> None:
    ident = b["identity"]
    assert ident["sub"] == SUB[role] and ident["role"] == ROLE_CLAIM[role]
    assert ident["exp"] > time.time()
    if role == "applicant":
        assert (ident["session"], ident["case"]) == (w.session_id, w.case_id)


def _directory(b: Json, w: World, role: str) -> None:
    assert {"city-amr", "city-tax", "district-amr"} <= {d["id"] for d in b["departments"]}
    reviewers = {r["sub"]: r for r in b["reviewers"]}
    assert reviewers["rev-city-amr-1"]["dept"] == "city-amr"
    assert reviewers["rev-city-amr-1"]["level"] == "city"
    assert "clerk-01" not in reviewers


def _created_session(b: Json, w: World, role: str) -> None:
    s = b["session"]
    assert b["session_id"] == s["session_id"] != w.session_id
    assert s["case_id"] == w.case_id and s["status"] == "active"
    assert s["created_by"]["sub"] == SUB[role] and s["created_by"]["role"] == role
    assert s["applicant_name"] == "李四"
    assert b["join_url"].endswith(f"/session/{s['session_id']}")


def _case(b: Json, w: World, role: str) -> None:
    assert b["case_id"] == w.case_id
    assert [s["session_id"] for s in b["sessions"]] == [w.session_id]
    assert [i["invitation_id"] for i in b["invitations"]] == [w.invitation_id]
    assert [e["type"] for e in b["events"]] == [
        "session.created",
        "invitation.created",
        "snapshot.taken",
    ]
    assert [s["snapshot_id"] for s in b["snapshots"]] == [w.snapshot_id]
    assert b["opinions"] == []


PNG = tiny("PNG")


def _no_opinions(b: Json, w: World, role: str) -> None:
    assert b["opinions"] == []


def _snapshot_list(b: Json, w: World, role: str) -> None:
    [snap] = b["snapshots"]
    assert snap["snapshot_id"] == w.snapshot_id and snap["url"].endswith(w.snapshot_id)
    assert snap["size"] == len(PNG) and snap["taken_by"]["sub"] == "clerk-01"
    assert "path" not in snap  # where it lies on disk is nobody's business


def _snapshot_added(b: Json, w: World, role: str) -> None:
    assert b["snapshot_id"] != w.snapshot_id and b["taken_by"]["sub"] == SUB[role]
    import hashlib

    assert b["sha256"] == hashlib.sha256(PNG).hexdigest()


def _session_list(b: Json, w: World, role: str) -> None:
    assert [s["session_id"] for s in b["sessions"]] == [w.session_id]
    assert b["next_cursor"] is None


def _case_events(b: Json, w: World, role: str) -> None:
    assert [e["type"] for e in b["events"]] == [
        "session.created",
        "invitation.created",
        "snapshot.taken",
    ]
    assert b["next_cursor"] is None


def _case_sessions(b: Json, w: World, role: str) -> None:
    assert [s["session_id"] for s in b["sessions"]] == [w.session_id]
    assert [i["invitation_id"] for i in b["invitations"]] == [w.invitation_id]
    assert b["next_cursor"] is None


def _track(b: Json, w: World, role: str) -> None:
    (tracked,) = b["sessions"]
    assert tracked["session"]["session_id"] == w.session_id
    assert [i["invitation_id"] for i in tracked["invitations"]] == [w.invitation_id]
    assert b["next_cursor"] is None


def _markers(b: Json, w: World, role: str) -> None:
    assert [(m["type"], m["event"]) for m in b["markers"]] == [
        ("invitation", "invitation.created"),
        ("snapshot", "snapshot.taken"),
    ]
    assert b["next_cursor"] is None


def _session(b: Json, w: World, role: str) -> None:
    assert b["session"]["session_id"] == w.session_id
    assert b["session"]["status"] == "active"
    assert b["session"]["applicant_name"] == "张三"
    assert [(i["invitation_id"], i["status"]) for i in b["invitations"]] == [
        (w.invitation_id, "pending")
    ]
    assert b["participants"] == []


def _report(b: Json, w: World) -> None:
    [inv] = b["invitations"]
    assert (inv["invitation_id"], inv["dept"], inv["status"]) == (
        w.invitation_id,
        "city-amr",
        "pending",
    )
    assert inv["note"] == "请核对营业执照" and b["next_cursor"] is None


def _ended(b: Json, w: World, role: str) -> None:
    assert b["session_id"] == w.session_id and b["status"] == "ended"
    assert b["ended_by"]["sub"] == SUB[role] and b["ended_at"] >= b["created_at"]


def _invited(b: Json, w: World, role: str) -> None:
    assert b["session_id"] == w.session_id and b["case_id"] == w.case_id
    assert (b["dept"], b["level"], b["status"]) == ("city-customs", "city", "pending")
    assert b["created_by"]["sub"] == SUB[role] and b["note"] == "加急"


def _invitations(b: Json, w: World, role: str) -> None:
    [inv] = b["invitations"]
    assert inv["invitation_id"] == w.invitation_id
    assert (inv["dept"], inv["status"]) == ("city-amr", "pending")


def _applicant_link(b: Json, w: World, role: str) -> None:
    assert f"/session/{w.session_id}?token={b['token']}" in b["url"]
    assert "/j/" in b["short_url"] and len(b["short_url"].rsplit("/", 1)[1]) == 16
    assert b["qr_svg"].startswith("<svg") and "path" in b["qr_svg"]
    assert b["expires_at"] > time.time() + 3600


def _inbox(b: Json, w: World, role: str) -> None:
    ids = [i["invitation_id"] for i in b["invitations"]]
    assert ids == ([w.invitation_id] if role == "reviewer" else [])


HOOK_URL = "http://approval.invalid:8080/hooks/jointreview?key=secret"


def _live(b: Json, w: World) -> None:
    assert w.session_id in [s["session_id"] for s in b["sessions"]]
    assert w.invitation_id in [i["invitation_id"] for i in b["ringing"]]


def _deliveries(b: Json, w: World, role: str) -> None:
    [d] = b["deliveries"]
    assert (d["delivery_id"], d["event"], d["status"]) == (
        w.delivery_id,
        "session.started",
        "pending",
    )
    assert (d["case_id"], d["session_id"]) == (w.case_id, w.session_id)
    assert d["url"] == "http://approval.invalid:8080/hooks/jointreview?…"  # no key shown
    assert d["attempt_count"] == 0 and d["last_attempt"] is None


def _delivery(b: Json, w: World, role: str) -> None:
    assert b["delivery_id"] == w.delivery_id and b["status"] == "pending"
    assert b["attempts"] == [] and b["retries"] == []
    payload = b["payload"]
    assert payload["id"] == b["event_id"] and payload["event"] == "session.started"
    assert (payload["case_id"], payload["session_id"]) == (w.case_id, w.session_id)
    assert payload["data"]["applicant_name"] == "张三" and payload["data"]["seq"] == 1


def _retried(b: Json, w: World, role: str) -> None:
    assert b["delivery_id"] == w.delivery_id and b["status"] == "pending"
    assert [r["by"] for r in b["retries"]] == [SUB[role]]
    assert b["next_attempt_at"] <= time.time()


def _replay(b: Json, w: World, role: str) -> None:
    assert (b["session_id"], b["recording"]["state"], b["tracks"]) == (w.session_id, "none", [])
    assert [(m["type"], m["event"]) for m in b["markers"]] == [
        ("invitation", "invitation.created"),
        ("snapshot", "snapshot.taken"),
    ]
    assert [s["snapshot_id"] for s in b["snapshots"]] == [w.snapshot_id]


def _no_track(b: Json, w: World, role: str) -> None:
    assert b["error"]["code"] == "track_not_found"


def _still_live(b: Json, w: World, role: str) -> None:
    assert b["error"]["code"] == "session_live"  # no case file while the session runs


def _watermark_off(b: Json, w: World, role: str) -> None:
    assert b["error"]["code"] == "watermark_off"  # (tests/test_export_watermark.py)


def _no_copy(b: Json, w: World, role: str) -> None:
    assert b["error"]["code"] == "export_job_not_found"


def _answered(status: str) -> Callable[[Json, World, str], None]:
    def check(b: Json, w: World, role: str) -> None:
        assert b["invitation_id"] == w.invitation_id and b["status"] == status
        assert b["responded_by"]["sub"] == SUB[role]
        assert b["reason"] == ("不在职责范围" if status == "declined" else None)

    return check


def _stats(b: Json) -> None:
    assert b["sessions"]["total"] >= 1 and len(b["departments"]) == 5


def _no_exceptions(b: Json) -> None:
    assert b == {"exceptions": [], "next_cursor": None}


def _no_exception(b: Json) -> None:
    assert b["error"]["code"] == "exception_not_found"


def _hold(b: Json, held: bool) -> None:  # legal hold (#18, tests/test_retention.py)
    assert b["held"] is held, b


@dataclass(frozen=True)
class Expect:
    ok: int
    allowed: frozenset[str]
    check: Callable[[Json, World, str], None]
    body: Json | None = None
    mutates: bool = False
    raw: tuple[str, bytes] | None = None  # an upload instead of a JSON body
    binary: bool = False  # the answer is a file, not JSON
    # What a caller the route admits but who may not read the thing gets: the unknown
    # thing's 404 (policy: an unreadable thing is as an unknown one). None: 403.
    hidden: str | None = None
    # Who may read the thing at all (the world's session: all but the other department).
    readers: frozenset[str] = frozenset({"clerk", "admin", "supervisor", "reviewer", "applicant"})


def _roles(*names: str) -> frozenset[str]:
    return frozenset(names)


STAFF = _roles("clerk", "admin")
READERS = _roles("clerk", "admin", "supervisor")
INVITED = READERS | {"reviewer"}

# (method, path) → who succeeds. Everyone else gets 403 forbidden, except those the route
# admits who may not read the thing: they get ``hidden``'s 404, as for an unknown thing.
SNF = "session_not_found"
MATRIX: dict[tuple[str, str], Expect] = {
    ("GET", "/api/me"): Expect(200, frozenset(ROLES), _me),
    ("GET", "/api/directory"): Expect(200, READERS | {"reviewer", "other_reviewer"}, _directory),
    ("POST", "/api/cases/{case_id}/sessions"): Expect(
        201, STAFF, _created_session, {"applicant_name": "李四"}, True
    ),
    ("GET", "/api/cases/{case_id}"): Expect(
        200, INVITED, _case, hidden="case_not_found", readers=INVITED
    ),
    ("GET", "/api/cases/{case_id}/events"): Expect(
        200, INVITED, _case_events, hidden="case_not_found", readers=INVITED
    ),
    ("GET", "/api/cases/{case_id}/sessions"): Expect(
        200, INVITED, _case_sessions, hidden="case_not_found", readers=INVITED
    ),
    ("GET", "/api/cases/{case_id}/track"): Expect(
        200, INVITED, _track, hidden="case_not_found", readers=INVITED
    ),
    ("GET", "/api/sessions"): Expect(200, READERS, _session_list),
    ("GET", "/api/sessions/{session_id}"): Expect(
        200, INVITED | {"applicant"}, _session, hidden=SNF
    ),
    ("POST", "/api/sessions/{session_id}/end"): Expect(200, STAFF, _ended, None, True),
    ("POST", "/api/sessions/{session_id}/invitations"): Expect(
        201, STAFF, _invited, {"dept": "city-customs", "note": "加急"}, True
    ),
    ("GET", "/api/sessions/{session_id}/invitations"): Expect(
        200, INVITED | {"applicant"}, _invitations, hidden=SNF
    ),
    ("POST", "/api/sessions/{session_id}/applicant-link"): Expect(
        201, STAFF, _applicant_link, {"name": "张三"}, True
    ),
    # The applicant's recording consent (tests/test_shortlinks.py).
    ("GET", "/api/sessions/{session_id}/consent"): Expect(
        200, _roles("applicant"), lambda b, w, r: b["declined"] == "audio_only", hidden=SNF
    ),
    ("POST", "/api/sessions/{session_id}/consent"): Expect(
        201,
        _roles("applicant"),
        lambda b, w, r: b["then"] == "join",
        {"accepted": True},
        True,
        hidden=SNF,
    ),
    ("GET", "/api/invitations"): Expect(200, _roles("reviewer", "other_reviewer"), _inbox),
    ("POST", "/api/invitations/{invitation_id}/accept"): Expect(
        200, _roles("reviewer"), _answered("accepted"), None, True, hidden="invitation_not_found"
    ),
    ("POST", "/api/invitations/{invitation_id}/decline"): Expect(
        200,
        _roles("reviewer"),
        _answered("declined"),
        {"reason": "不在职责范围"},
        True,
        hidden="invitation_not_found",
    ),
    # Nobody has accepted in this world: not even the invited reviewer may file yet.
    ("POST", "/api/sessions/{session_id}/opinions"): Expect(
        201, frozenset(), _no_opinions, {"decision": "approve"}, True, hidden=SNF
    ),
    ("GET", "/api/sessions/{session_id}/opinions"): Expect(
        200, INVITED | {"applicant"}, _no_opinions, hidden=SNF
    ),
    ("POST", "/api/sessions/{session_id}/snapshots"): Expect(
        201, STAFF, _snapshot_added, None, True, raw=("image/png", PNG)
    ),
    ("GET", "/api/sessions/{session_id}/snapshots"): Expect(
        200, INVITED | {"applicant"}, _snapshot_list, hidden=SNF
    ),
    ("GET", "/api/snapshots/{snapshot_id}"): Expect(
        200,
        INVITED | {"applicant"},
        lambda b, w, r: None,
        binary=True,
        hidden="snapshot_not_found",
    ),
    ("GET", "/api/sessions/{session_id}/recording"): Expect(200, INVITED, _replay, hidden=SNF),
    ("GET", "/api/sessions/{session_id}/opinion-sheet"): Expect(  # a draft: in progress
        200, INVITED, lambda b, w, r: None, binary=True, hidden=SNF
    ),
    ("GET", "/api/sessions/{session_id}/recording/markers"): Expect(
        200, INVITED, _markers, hidden=SNF
    ),
    # Nothing is recorded in this world: those allowed learn that, the others nothing.
    ("GET", "/api/sessions/{session_id}/tracks/{track_id}"): Expect(
        404, INVITED, _no_track, hidden=SNF
    ),
    ("GET", "/api/sessions/{session_id}/casefile"): Expect(409, INVITED, _still_live, hidden=SNF),
    ("GET", "/api/sessions/{session_id}/casefile/files/{path}"): Expect(
        409, INVITED, _still_live, hidden=SNF
    ),
    ("POST", "/api/sessions/{session_id}/casefile/watermarked"): Expect(
        409, INVITED, _watermark_off, hidden=SNF
    ),
    ("GET", "/api/sessions/{session_id}/casefile/watermarked"): Expect(
        409, INVITED, _watermark_off, hidden=SNF
    ),
    ("GET", "/api/watermarked/{job_id}"): Expect(404, INVITED | {"other_reviewer"}, _no_copy),
    ("GET", "/api/webhooks/deliveries"): Expect(200, _roles("supervisor", "admin"), _deliveries),
    ("GET", "/api/webhooks/deliveries/{delivery_id}"): Expect(
        200, _roles("supervisor", "admin"), _delivery
    ),
    ("POST", "/api/webhooks/deliveries/{delivery_id}/retry"): Expect(
        200, _roles("admin"), _retried, None, True
    ),
    # The supervisors' report over the record (tests/test_record_views.py).
    ("GET", "/api/reports/invitations"): Expect(
        200, _roles("supervisor", "admin"), lambda b, w, r: _report(b, w)
    ),
    # The live overview (tests/test_live_overview.py): the world's session is in progress.
    ("GET", "/api/live"): Expect(
        200,
        _roles("supervisor", "admin"),
        lambda b, w, r: _live(b, w),
    ),
    # Supervision (tests/test_supervision.py): statistics and exceptions.
    ("GET", "/api/stats"): Expect(200, _roles("supervisor", "admin"), lambda b, w, r: _stats(b)),
    ("GET", "/api/exceptions"): Expect(
        200, _roles("supervisor", "admin"), lambda b, w, r: _no_exceptions(b)
    ),
    ("GET", "/api/exceptions/{exception_id}"): Expect(
        404, _roles("supervisor", "admin"), lambda b, w, r: _no_exception(b)
    ),
    ("POST", "/api/exceptions/{exception_id}/handle"): Expect(
        404, _roles("supervisor", "admin"), lambda b, w, r: _no_exception(b), {"note": "ok"}
    ),
    # Legal hold (tests/test_retention.py): supervisors and admins; in this world no hold.
    ("GET", "/api/cases/{case_id}/hold"): Expect(
        200, _roles("supervisor", "admin"), lambda b, w, r: _hold(b, False)
    ),
    ("POST", "/api/cases/{case_id}/hold"): Expect(
        200, _roles("supervisor", "admin"), lambda b, w, r: _hold(b, True), {"reason": "诉讼"}
    ),
    ("DELETE", "/api/cases/{case_id}/hold"): Expect(
        409, _roles("supervisor", "admin"), lambda b, w, r: None
    ),
    # The audit trail (tests/test_audit.py): admins only, newest first.
    ("GET", "/api/audit"): Expect(200, _roles("admin"), lambda b, w, r: b["entries"][0]["seq"]),
    # Where media runs, and the drain (tests/test_media_workers.py).
    ("GET", "/api/admin/media"): Expect(200, _roles("admin"), lambda b, w, r: b["hosts"]),
    ("POST", "/api/admin/drain"): Expect(
        200, _roles("admin"), lambda b, w, r: b["draining"] is False, {"draining": False}, True
    ),
    ("GET", "/api/admin/directory"): Expect(
        200, _roles("admin"), lambda b, w, r: len(b["departments"]) == 5
    ),
    ("POST", "/api/admin/directory/reload"): Expect(
        200, _roles("admin"), lambda b, w, r: b["changes"]["departments"]["added"] == [], {}
    ),
}
PROTECTED = [(r.method, r.path) for r in ROUTES if r.roles is not None]
PUBLIC = [(r.method, r.path) for r in ROUTES if r.roles is None]


def test_matrix_covers_every_route() -> None:
    assert set(MATRIX) == set(PROTECTED)
    assert set(PUBLIC) == {
        ("GET", "/healthz"),
        ("GET", "/api/auth/demo-users"),
        ("POST", "/api/auth/demo-login"),
        ("GET", "/ui/departments.json"),  # names for every page (the applicant's too)
        ("GET", "/api/replay/{grant}"),  # the grant is the credential (tests/test_replay.py)
        ("GET", "/api/casefile/{grant}"),  # likewise (tests/test_replay.py)
    }


ROUTE_ROLES = {(r.method, r.path): r.roles for r in ROUTES}


def _expected(method: str, path: str, role: str) -> int:
    """The status: the route's own, 403 for a role the route refuses, and 4040 (404 with
    ``hidden``) for a role it admits who may not read the thing."""
    expect = MATRIX[method, path]
    if role in expect.allowed:
        return expect.ok
    admitted = ROLE_CLAIM[role] in (ROUTE_ROLES[method, path] or ())
    return 4040 if admitted and expect.hidden and role not in expect.readers else 403


@pytest.mark.parametrize(
    ("method", "path", "role", "status"),
    [(m, p, role, _expected(m, p, role)) for (m, p) in PROTECTED for role in ROLES],
)
async def test_route_by_role(
    client: Client, tok: Tokens, world: World, method: str, path: str, role: str, status: int
) -> None:
    expect = MATRIX[method, path]
    headers = auth(token_for(tok, role, world))
    if expect.raw is not None:
        r = await client.request(
            method,
            world.fill(path),
            data=expect.raw[1],
            headers={**headers, "Content-Type": expect.raw[0]},
        )
    else:
        r = await client.request(method, world.fill(path), json=expect.body, headers=headers)
    if status in (403, 4040):
        if status == 403:
            await expect_error(r, 403, "forbidden")
        else:
            await expect_error(r, 404, expect.hidden or "")
        # A refused change changed nothing.
        r = await client.get(f"/api/sessions/{world.session_id}", headers=auth(tok.clerk()))
        _session(await r.json(), world, "clerk")
    elif expect.binary:
        assert r.status == status, await r.text()
        if path.endswith("/opinion-sheet"):
            assert (await r.read()).startswith(b"%PDF-") and r.content_type == "application/pdf"
        else:
            assert await r.read() == PNG and r.content_type == "image/png"
    else:
        assert r.status == status, await r.text()
        expect.check(await r.json(), world, role)


FORGED = TokenService(make_config(Path("/nonexistent"), jwt_secret="another-secret-" + "y" * 40))
BAD_AUTH: dict[str, tuple[Callable[[Tokens], dict[str, str]], str]] = {
    "missing": (lambda tok: {}, "missing_token"),
    "not bearer": (lambda tok: {"Authorization": "Basic Y2xlcmstMDE6cHc="}, "missing_token"),
    "empty bearer": (lambda tok: {"Authorization": "Bearer "}, "missing_token"),
    "garbage": (lambda tok: auth("not.a.jwt"), "invalid_token"),
    "forged": (lambda tok: auth(FORGED.issue(sub="admin", role="admin")), "invalid_token"),
    "expired": (
        lambda tok: auth(
            tok.svc.issue(sub="admin", role="admin", now=time.time() - 100000, ttl=60)
        ),
        "token_expired",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_AUTH))
@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_route_refuses_bad_token(
    client: Client, tok: Tokens, world: World, method: str, path: str, kind: str
) -> None:
    headers, code = BAD_AUTH[kind]
    body = MATRIX[method, path].body
    r = await client.request(method, world.fill(path), json=body, headers=headers(tok))
    await expect_error(r, 401, code)
    r = await client.get(f"/api/sessions/{world.session_id}", headers=auth(tok.clerk()))
    _session(await r.json(), world, "clerk")


async def test_public_routes_need_no_token(client: Client) -> None:
    r = await client.get("/healthz")
    assert r.status == 200
    assert (await r.json())["state"] == "memory"
    r = await client.get("/api/auth/demo-users")
    assert r.status == 200
    body = await r.json()
    assert {"clerk-01", "rev-city-amr-1", "sup-01"} <= {u["sub"] for u in body["users"]}
    assert "city-amr" in {d["id"] for d in body["departments"]}
    r = await client.post("/api/auth/demo-login", json={"sub": "clerk-01"})
    assert r.status == 200


# -- finer rules: departments, applicants, case scope -----------------------------------


async def test_reviewer_of_another_department_stays_out(
    client: Client, tok: Tokens, world: World
) -> None:
    # What another department may not read answers as what does not exist (no oracle).
    other = auth(tok.other_reviewer())
    for path, code in (
        (f"/api/sessions/{world.session_id}", "session_not_found"),
        (f"/api/sessions/{world.session_id}/invitations", "session_not_found"),
        (f"/api/cases/{world.case_id}", "case_not_found"),
    ):
        await expect_error(await client.get(path, headers=other), 404, code)
    inv = f"/api/invitations/{world.invitation_id}"
    missing = "invitation_not_found"
    await expect_error(await client.post(f"{inv}/accept", headers=other), 404, missing)
    r = await client.post(f"{inv}/decline", json={"reason": "no"}, headers=other)
    await expect_error(r, 404, missing)
    r = await client.get("/api/invitations", headers=other)
    assert (await r.json())["invitations"] == []

    ws = await client.ws_connect(f"/ws?token={tok.other_reviewer()}")
    assert (await ws.receive_json(timeout=3))["type"] == "welcome"
    await ws.send_json({"type": "join", "session_id": world.session_id, "ref": "j"})
    msg = await ws.receive_json(timeout=3)
    assert (msg["type"], msg["code"], msg["ref"]) == ("error", "session_not_found", "j")
    await ws.close()

    # The invitation is still open for the department it was meant for.
    r = await client.post(f"{inv}/accept", headers=auth(tok.reviewer()))
    assert r.status == 200
    assert (await r.json())["responded_by"]["sub"] == "rev-city-amr-1"


async def test_reviewer_of_the_department_but_another_level_stays_out(
    client: Client, tok: Tokens, world: World
) -> None:
    district = auth(tok.reviewer("rev-x", "city-amr", "district"))
    r = await client.post(f"/api/invitations/{world.invitation_id}/accept", headers=district)
    await expect_error(r, 404, "invitation_not_found")


async def test_applicant_token_opens_its_own_session_only(
    client: Client, tok: Tokens, world: World
) -> None:
    other = (await create_session(client, tok.clerk()))["session_id"]
    mine = auth(tok.applicant(world.session_id, world.case_id))
    r = await client.get(f"/api/sessions/{world.session_id}", headers=mine)
    assert r.status == 200
    assert (await r.json())["session"]["session_id"] == world.session_id
    r = await client.get(f"/api/sessions/{other}", headers=mine)
    await expect_error(r, 404, "session_not_found")
    r = await client.get(f"/api/sessions/{other}/invitations", headers=mine)
    await expect_error(r, 404, "session_not_found")
    r = await client.get(f"/api/cases/{world.case_id}", headers=mine)
    await expect_error(r, 404, "case_not_found")
    r = await client.get("/api/sessions", headers=mine)
    await expect_error(r, 403, "forbidden")


async def test_case_scoped_token_stays_in_its_case(client: Client, tok: Tokens) -> None:
    in_b = await create_session(client, tok.clerk(), case_id="B")
    clerk_a = auth(tok.clerk(case="A"))
    r = await client.post("/api/cases/B/sessions", json={}, headers=clerk_a)
    await expect_error(r, 403, "forbidden")
    r = await client.post("/api/cases/A/sessions", json={}, headers=clerk_a)
    assert r.status == 201
    in_a = await r.json()

    sup_a = auth(tok.supervisor(case="A"))
    # Out of the scope, case B answers as case Z that does not exist: nothing leaks.
    await expect_error(await client.get("/api/cases/B", headers=sup_a), 404, "case_not_found")
    await expect_error(await client.get("/api/cases/Z", headers=sup_a), 404, "case_not_found")
    r = await client.get(f"/api/sessions/{in_b['session_id']}", headers=sup_a)
    await expect_error(r, 404, "session_not_found")
    r = await client.post(f"/api/sessions/{in_b['session_id']}/end", headers=clerk_a)
    await expect_error(r, 404, "session_not_found")
    r = await client.post(
        f"/api/sessions/{in_b['session_id']}/invitations",
        json={"dept": "city-amr"},
        headers=clerk_a,
    )
    await expect_error(r, 404, "session_not_found")
    r = await client.get("/api/cases/A", headers=sup_a)
    assert r.status == 200
    assert [s["session_id"] for s in (await r.json())["sessions"]] == [in_a["session_id"]]

    inv_b = await invite(client, tok.clerk(), in_b["session_id"], dept="city-amr")
    reviewer_a = auth(tok.reviewer(case="A"))
    r = await client.post(f"/api/invitations/{inv_b['invitation_id']}/accept", headers=reviewer_a)
    await expect_error(r, 404, "invitation_not_found")
    r = await client.get("/api/invitations", headers=reviewer_a)
    assert (await r.json())["invitations"] == []


async def test_case_scoped_list_shows_its_case_within_the_limit(
    client: Client, tok: Tokens
) -> None:
    in_a = await create_session(client, tok.clerk(), case_id="A")
    await asyncio.sleep(0.01)
    await create_session(client, tok.clerk(), case_id="B")
    await asyncio.sleep(0.01)
    await create_session(client, tok.clerk(), case_id="B")
    r = await client.get("/api/sessions?limit=1", headers=auth(tok.supervisor(case="A")))
    assert r.status == 200
    assert [s["session_id"] for s in (await r.json())["sessions"]] == [in_a["session_id"]]


async def test_list_sessions_of_one_case(client: Client, tok: Tokens) -> None:
    """The supervisor's search by case number: a case never seen is no sessions, not 404
    (a normal answer, not a failed request in the browser's console)."""
    in_a = await create_session(client, tok.clerk(), case_id="A")
    await asyncio.sleep(0.01)
    in_b = await create_session(client, tok.clerk(), case_id="B")

    async def listed(query: str, token: str) -> list[str]:
        r = await client.get(f"/api/sessions?{query}", headers=auth(token))
        assert r.status == 200, await r.text()
        return [s["session_id"] for s in (await r.json())["sessions"]]

    assert await listed("case=A", tok.supervisor()) == [in_a["session_id"]]
    assert await listed("case=B&limit=1", tok.supervisor()) == [in_b["session_id"]]
    assert await listed("case=NO-SUCH-1", tok.supervisor()) == []
    assert await listed("case=B", tok.supervisor(case="A")) == []  # beyond the token's case
    assert await listed("case=A", tok.supervisor(case="A")) == [in_a["session_id"]]


# -- not found -------------------------------------------------------------------------


async def test_unknown_case(client: Client, tok: Tokens) -> None:
    await expect_error(
        await client.get("/api/cases/NO-SUCH-1", headers=auth(tok.clerk())), 404, "case_not_found"
    )


SESSION_ROUTES = [
    (m, p, MATRIX[m, p].body) for (m, p) in PROTECTED if p.startswith("/api/sessions/{")
]


@pytest.mark.parametrize(("method", "path", "body"), SESSION_ROUTES)
async def test_unknown_session(
    client: Client, tok: Tokens, method: str, path: str, body: Json | None
) -> None:
    roles = next(r.roles for r in ROUTES if (r.method, r.path) == (method, path))
    token = tok.admin() if roles and "admin" in roles else tok.reviewer()
    r = await client.request(
        method,
        path.format(session_id="s_nosuch", track_id="x.1.0", path="manifest.json"),
        json=body,
        headers=auth(token),
    )
    await expect_error(r, 404, "session_not_found")


@pytest.mark.parametrize(
    ("path", "body"), [("accept", None), ("decline", {"reason": "不在职责范围"})]
)
async def test_unknown_invitation(client: Client, tok: Tokens, path: str, body: Any) -> None:
    r = await client.post(
        f"/api/invitations/i_nosuch/{path}", json=body, headers=auth(tok.reviewer())
    )
    await expect_error(r, 404, "invitation_not_found")


async def test_unknown_endpoint_is_json_404(client: Client, tok: Tokens) -> None:
    r = await client.get("/api/nothing-here", headers=auth(tok.clerk()))
    await expect_error(r, 404, "not_found")
    r = await client.delete("/api/me", headers=auth(tok.clerk()))
    await expect_error(r, 405, "method_not_allowed")


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["..%2Fx", "a%20b", "A%0A", "-A", "x" * 65, "%E4%B8%AD"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_invalid_case_id(client: Client, tok: Tokens, bad: str, method: str) -> None:
    path = f"/api/cases/{bad}" + ("/sessions" if method == "POST" else "")
    r = await client.request(method, path, json={}, headers=auth(tok.clerk()))
    await expect_error(r, 400, "invalid_case_id")
    await assert_still_serving(client)
    r = await client.get("/api/sessions", headers=auth(tok.clerk()))
    assert (await r.json())["sessions"] == []


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param(b"{not json", "bad_json", id="garbage"),
        pytest.param(b'{"matter": "x",}', "bad_json", id="trailing comma"),
        pytest.param(b"\xff\xfe\x00garbage", "bad_json", id="not utf-8"),
        pytest.param(b"[" * 5000, "bad_json", id="deep array"),
        pytest.param(b'{"a":' * 5000, "bad_json", id="deep object"),
        pytest.param(b"[1, 2]", "invalid_body", id="array"),
        pytest.param(b'"matter"', "invalid_body", id="string"),
        pytest.param(b"null", "invalid_body", id="null"),
    ],
)
async def test_body_that_is_not_a_json_object(
    client: Client, tok: Tokens, raw: bytes, code: str
) -> None:
    r = await client.post(
        f"/api/cases/{CASE}/sessions",
        data=raw,
        headers={**auth(tok.clerk()), "Content-Type": "application/json"},
    )
    await expect_error(r, 400, code)
    await assert_still_serving(client)
    r = await client.get("/api/sessions", headers=auth(tok.clerk()))
    assert (await r.json())["sessions"] == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/cases/{case_id}/sessions", {"applicant_name": 123}, "applicant_name"),
        ("/api/cases/{case_id}/sessions", {"matter": ["食品"]}, "matter"),
        ("/api/cases/{case_id}/sessions", {"matter": "x" * 501}, "matter"),
        ("/api/cases/{case_id}/sessions", {"surprise": True}, "surprise"),
        ("/api/sessions/{session_id}/invitations", {"dept": 5}, "dept"),
        ("/api/sessions/{session_id}/invitations", {"dept": "../etc"}, "dept"),
        ("/api/sessions/{session_id}/invitations", {"dept": "city-amr", "level": "x"}, "level"),
        ("/api/sessions/{session_id}/invitations", {"reviewer": "a b"}, "reviewer"),
        ("/api/sessions/{session_id}/invitations", {"dept": "city-amr", "x": 1}, "x"),
        ("/api/sessions/{session_id}/applicant-link", {"name": {"a": 1}}, "name"),
        ("/api/invitations/{invitation_id}/decline", {}, "reason"),
        ("/api/invitations/{invitation_id}/decline", {"reason": "   "}, "reason"),
        ("/api/invitations/{invitation_id}/decline", {"reason": 7}, "reason"),
        ("/api/auth/demo-login", {"sub": 1}, "sub"),
        ("/api/auth/demo-login", {}, "sub"),
    ],
)
async def test_wrong_field_types(
    client: Client, tok: Tokens, world: World, path: str, body: Json, field: str
) -> None:
    token = tok.reviewer() if "/invitations/" in path else tok.clerk()
    r = await client.post(world.fill(path), json=body, headers=auth(token))
    err = await expect_error(r, 400, "invalid_body")
    assert field in [d["field"] for d in err["details"]], err
    assert all(d["problem"] for d in err["details"])
    assert err["message"].startswith(err["details"][0]["field"])
    await assert_still_serving(client)
    r = await client.get(f"/api/sessions/{world.session_id}", headers=auth(tok.clerk()))
    _session(await r.json(), world, "clerk")


@pytest.mark.parametrize(
    "body",
    [{"dept": "city-amr", "reviewer": "rev-city-amr-1"}, {}, {"note": "无对象"}],
    ids=["both", "none", "note only"],
)
async def test_invitation_needs_exactly_one_target(
    client: Client, tok: Tokens, world: World, body: Json
) -> None:
    r = await client.post(
        f"/api/sessions/{world.session_id}/invitations", json=body, headers=auth(tok.clerk())
    )
    err = await expect_error(r, 400, "invalid_body")
    assert "exactly one" in err["message"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"dept": "city-nowhere"}, "unknown_department"),
        ({"reviewer": "clerk-02"}, "not_a_reviewer"),
    ],
)
async def test_invitation_target_must_exist(
    client: Client, tok: Tokens, world: World, body: Json, code: str
) -> None:
    r = await client.post(
        f"/api/sessions/{world.session_id}/invitations", json=body, headers=auth(tok.clerk())
    )
    await expect_error(r, 422, code)
    r = await client.get(f"/api/sessions/{world.session_id}/invitations", headers=auth(tok.clerk()))
    assert len((await r.json())["invitations"]) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/cases/{case_id}/sessions", {"matter": "x" * (65 * 1024)}),
        ("/api/sessions/{session_id}/invitations", {"dept": "city-amr", "note": "x" * 70000}),
        ("/api/auth/demo-login", {"sub": "x" * 200_000}),
    ],
)
async def test_body_over_the_limit(
    client: Client, tok: Tokens, world: World, path: str, body: Json
) -> None:
    r = await client.post(world.fill(path), json=body, headers=auth(tok.clerk()))
    await expect_error(r, 413, "payload_too_large")
    await assert_still_serving(client)
    r = await client.get(f"/api/sessions/{world.session_id}", headers=auth(tok.clerk()))
    _session(await r.json(), world, "clerk")


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=501", "limit=-1", "limit=ten", "limit=1.5", "since=yesterday", "until=x"],
)
async def test_list_sessions_bad_query(client: Client, tok: Tokens, query: str) -> None:
    r = await client.get(f"/api/sessions?{query}", headers=auth(tok.supervisor()))
    await expect_error(r, 400, "invalid_query")
    await assert_still_serving(client)


# -- invitations: answering, conflicts --------------------------------------------------


async def test_accepting_twice(client: Client, tok: Tokens, world: World) -> None:
    url = f"/api/invitations/{world.invitation_id}"
    first = await client.post(f"{url}/accept", headers=auth(tok.reviewer()))
    assert first.status == 200
    again = await client.post(f"{url}/accept", headers=auth(tok.reviewer()))
    assert again.status == 200
    assert await again.json() == await first.json()

    colleague = auth(tok.reviewer("rev-city-amr-2"))
    err = await expect_error(
        await client.post(f"{url}/accept", headers=colleague), 409, "invitation_closed"
    )
    assert "accepted" in err["message"]
    r = await client.post(f"{url}/decline", json={"reason": "忙"}, headers=auth(tok.reviewer()))
    await expect_error(r, 409, "invitation_closed")

    r = await client.get(f"/api/sessions/{world.session_id}", headers=auth(tok.clerk()))
    [inv] = (await r.json())["invitations"]
    assert inv["status"] == "accepted"
    assert inv["responded_by"]["sub"] == "rev-city-amr-1"


async def test_declining_then_accepting_is_a_conflict(
    client: Client, tok: Tokens, world: World
) -> None:
    url = f"/api/invitations/{world.invitation_id}"
    r = await client.post(f"{url}/decline", json={"reason": "回避"}, headers=auth(tok.reviewer()))
    assert r.status == 200
    r = await client.post(f"{url}/decline", json={"reason": "回避"}, headers=auth(tok.reviewer()))
    assert r.status == 200
    await expect_error(
        await client.post(f"{url}/accept", headers=auth(tok.reviewer())), 409, "invitation_closed"
    )


async def test_ended_session_takes_no_more_invitations(
    client: Client, tok: Tokens, world: World
) -> None:
    clerk = auth(tok.clerk())
    sid = world.session_id
    r = await client.post(f"/api/sessions/{sid}/end", headers=clerk)
    assert r.status == 200
    ended_at = (await r.json())["ended_at"]
    # Ending again is harmless and keeps the first end.
    r = await client.post(f"/api/sessions/{sid}/end", headers=clerk)
    assert r.status == 200
    assert (await r.json())["ended_at"] == ended_at

    r = await client.post(
        f"/api/sessions/{sid}/invitations", json={"dept": "city-tax"}, headers=clerk
    )
    await expect_error(r, 409, "session_ended")
    r = await client.post(f"/api/sessions/{sid}/applicant-link", json={}, headers=clerk)
    await expect_error(r, 409, "session_ended")
    r = await client.post(
        f"/api/invitations/{world.invitation_id}/accept", headers=auth(tok.reviewer())
    )
    await expect_error(r, 409, "session_ended")

    r = await client.get(f"/api/sessions/{sid}", headers=clerk)
    body = await r.json()
    assert body["session"]["status"] == "ended"
    assert [i["status"] for i in body["invitations"]] == ["cancelled"]
    r = await client.get("/api/invitations", headers=auth(tok.reviewer()))
    assert (await r.json())["invitations"] == []


# -- what the endpoints tell -----------------------------------------------------------


async def test_case_timeline(client: Client, tok: Tokens) -> None:
    clerk = auth(tok.clerk())
    sid = (await create_session(client, tok.clerk(), applicant_name="张三"))["session_id"]
    amr = await invite(client, tok.clerk(), sid, dept="city-amr")
    tax = await invite(client, tok.clerk(), sid, dept="city-tax")
    r = await client.post(
        f"/api/invitations/{amr['invitation_id']}/accept", headers=auth(tok.reviewer())
    )
    assert r.status == 200
    r = await client.post(
        f"/api/invitations/{tax['invitation_id']}/decline",
        json={"reason": "非本局事项"},
        headers=auth(tok.other_reviewer()),
    )
    assert r.status == 200

    r = await client.get(f"/api/cases/{CASE}", headers=auth(tok.supervisor()))
    assert r.status == 200
    view = await r.json()
    assert [s["session_id"] for s in view["sessions"]] == [sid]
    status = {i["invitation_id"]: i["status"] for i in view["invitations"]}
    assert status == {amr["invitation_id"]: "accepted", tax["invitation_id"]: "declined"}

    events = view["events"]
    assert [(e["type"], e["actor"]["sub"]) for e in events if e["actor"]] == [
        ("session.created", "clerk-01"),
        ("invitation.created", "clerk-01"),
        ("invitation.created", "clerk-01"),
        ("invitation.accepted", "rev-city-amr-1"),
        ("invitation.declined", "rev-city-tax-1"),
    ]
    # The system's own entry, filed once the record has the decline: its exception.
    system = [(e["type"], e["data"]["kind"]) for e in events if not e["actor"]]
    assert system in ([], [("exception.raised", "invitation_declined")])
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps) and time.time() - 60 < stamps[0] <= time.time()
    assert all(e["session_id"] == sid and e["case_id"] == CASE for e in events)
    assert events[0]["actor"]["role"] == "clerk"
    assert events[0]["data"]["applicant_name"] == "张三"
    assert events[1]["data"]["dept"] == "city-amr"
    assert events[3]["data"]["invitation_id"] == amr["invitation_id"]
    assert events[3]["actor"]["dept"] == "city-amr"
    assert events[4]["data"]["reason"] == "非本局事项"

    # The invited reviewer reads the case too; the clerk sees the same timeline.
    r = await client.get(f"/api/cases/{CASE}", headers=auth(tok.reviewer()))
    assert r.status == 200
    r = await client.get(f"/api/cases/{CASE}", headers=clerk)
    assert (await r.json())["events"] == events


async def test_applicant_link(
    client: Client, tok: Tokens, tokens: TokenService, world: World
) -> None:
    r = await client.post(
        f"/api/sessions/{world.session_id}/applicant-link",
        json={"name": "王五"},
        headers=auth(tok.clerk()),
    )
    assert r.status == 201
    link = await r.json()
    url = urlsplit(link["url"])
    assert url.path == f"/session/{world.session_id}"
    [token] = parse_qs(url.query)["token"]
    assert token == link["token"]
    who = tokens.verify(token)
    assert (who.role, who.session, who.case, who.name) == (
        "applicant",
        world.session_id,
        world.case_id,
        "王五",
    )
    assert who.exp is not None and abs(who.exp - link["expires_at"]) <= 2

    r = await client.get(f"/api/sessions/{world.session_id}", headers=auth(token))
    assert r.status == 200
    other = (await create_session(client, tok.clerk()))["session_id"]
    await expect_error(
        await client.get(f"/api/sessions/{other}", headers=auth(token)), 404, "session_not_found"
    )
    await expect_error(
        await client.post(f"/api/sessions/{world.session_id}/end", headers=auth(token)),
        403,
        "forbidden",
    )

    # Without a name, the applicant is called by the name the session was opened with.
    r = await client.post(
        f"/api/sessions/{world.session_id}/applicant-link", json={}, headers=auth(tok.clerk())
    )
    assert tokens.verify((await r.json())["token"]).name == "张三"
    r = await client.get(f"/api/cases/{world.case_id}", headers=auth(tok.clerk()))
    types = [e["type"] for e in (await r.json())["events"]]
    assert types.count("applicant_link.created") == 2


async def test_list_sessions_newest_first_with_filters(client: Client, tok: Tokens) -> None:
    made = []
    for case in ("A", "B", "C"):
        made.append((await create_session(client, tok.clerk(), case_id=case))["session"])
        await asyncio.sleep(0.01)
    ids = [s["session_id"] for s in made]
    stamps = [s["created_at"] for s in made]
    sup = auth(tok.supervisor())

    async def listed(query: str = "") -> list[str]:
        r = await client.get(f"/api/sessions{query}", headers=sup)
        assert r.status == 200, await r.text()
        return [s["session_id"] for s in (await r.json())["sessions"]]

    assert await listed() == ids[::-1]
    assert await listed(f"?since={stamps[1]}") == [ids[2], ids[1]]
    assert await listed(f"?until={stamps[1]}") == [ids[1], ids[0]]
    assert await listed(f"?since={stamps[0]}&until={stamps[1]}") == [ids[1], ids[0]]
    assert await listed(f"?since={stamps[2] + 1}") == []
    assert await listed("?limit=2") == [ids[2], ids[1]]
    assert await listed("?limit=500") == ids[::-1]


async def test_openapi_document(client: Client) -> None:
    r = await client.get("/api/openapi.json")
    assert r.status == 200
    doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] and doc["info"]["version"]
    schemas = doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"

    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["summary"] == route.summary
        assert str(route.status) in op["responses"]
        if route.roles is None:
            assert "security" not in op
        else:
            assert op["security"] == [{"bearer": []}]
            assert {"401", "403"} <= set(op["responses"])
            assert all(role in op["description"] for role in route.roles)
        in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert in_path == {part[1:-1] for part in route.path.split("/") if part.startswith("{")}
        assert ("requestBody" in op) == (route.body is not None or bool(route.upload))
        if route.upload:
            assert set(op["requestBody"]["content"]) == set(route.upload)
    operation_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [x for v in node.values() for x in refs(v)]
        if isinstance(node, list):
            return [x for v in node for x in refs(v)]
        return []

    found = refs(doc)
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


# -- demo sign-in ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "role", "dept", "level"),
    [
        ("clerk-01", "clerk", None, None),
        ("rev-district-amr-1", "reviewer", "district-amr", "district"),
        ("sup-01", "supervisor", None, None),
    ],
)
async def test_demo_login_mints_a_working_token(
    client: Client, sub: str, role: str, dept: str | None, level: str | None
) -> None:
    r = await client.post("/api/auth/demo-login", json={"sub": sub})
    assert r.status == 200
    body = await r.json()
    assert body["identity"]["sub"] == sub
    r = await client.get("/api/me", headers=auth(body["token"]))
    assert r.status == 200
    ident = (await r.json())["identity"]
    assert (ident["sub"], ident["role"], ident["dept"], ident["level"]) == (sub, role, dept, level)
    assert ident["exp"] == body["expires_at"] > time.time()


async def test_demo_login_unknown_user(client: Client) -> None:
    r = await client.post("/api/auth/demo-login", json={"sub": "nobody"})
    await expect_error(r, 404, "user_not_found")


@pytest.fixture
async def no_demo(tmp_path: Path) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(make_config(tmp_path, demo_enabled=False)))) as c:
        yield c


async def test_demo_endpoints_off(no_demo: Client, tok: Tokens) -> None:
    await expect_error(await no_demo.get("/api/auth/demo-users"), 404, "demo_disabled")
    r = await no_demo.post("/api/auth/demo-login", json={"sub": "clerk-01"})
    await expect_error(r, 404, "demo_disabled")
    # Signed tokens from the approval system still work.
    r = await no_demo.get("/api/me", headers=auth(tok.clerk()))
    assert r.status == 200
    assert (await r.json())["identity"]["sub"] == "clerk-01"


async def test_a_verify_only_server_says_it_cannot_issue_links(tmp_path: Path) -> None:
    """RS256 with only the approval system's public key: links and demo sign-in get a
    clear 503, and nothing is written to the case for a link that was never made."""
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = tmp_path / "approval.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = make_config(tmp_path, jwt_algorithm="RS256", jwt_public_key_file=pub)
    now = int(time.time())
    clerk = jwt.encode(
        {
            "sub": "c1",
            "role": "clerk",
            "iat": now,
            "exp": now + 600,
            "iss": "jointreview",
            "aud": "jointreview",
        },
        key,
        algorithm="RS256",
    )
    async with TestClient(TestServer(create_app(config))) as client:
        res = await client.post("/api/cases/RS-9/sessions", json={}, headers=auth(clerk))
        assert res.status == 201
        sid = (await res.json())["session_id"]
        res = await client.post(f"/api/sessions/{sid}/applicant-link", json={}, headers=auth(clerk))
        assert res.status == 503
        assert (await res.json())["error"]["code"] == "signing_unavailable"
        res = await client.post("/api/auth/demo-login", json={"sub": "clerk-01"})
        assert res.status == 503
        case = await (await client.get("/api/cases/RS-9", headers=auth(clerk))).json()
        assert [e["type"] for e in case["events"]] == ["session.created"]
