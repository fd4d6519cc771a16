"""Fuzz run over the HTTP API (issue #10): requests drawn over the route table
(``signaling.api.ROUTES``): every method and path, path parameters that name real
objects or anything at all, random query strings, bodies of random content types and
sizes, and missing, forged, expired or foreign tokens.

What must hold: never a 5xx; every error is JSON ``{"error": {"code", "message"}}``
with content type application/json; nothing logged at ERROR; and at the end the
journal loads into the same state and the sealed case files verify.
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import uvloop
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from yarl import URL

from jointreview.app import create_app
from signaling.api import ROUTES
from signaling.appkeys import STORE
from signaling.auth import TokenService

from .conftest import auth
from .fuzzing import (
    MAX_MESSAGE_BYTES,
    ErrorLog,
    Tally,
    bound_shrinking,
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

CASE = "FZ-HTTP-1"
ROLES: dict[str, dict[str, Any]] = {
    "clerk": {"sub": "clerk-01", "role": "clerk", "name": "陈晓"},
    "admin": {"sub": "admin", "role": "admin"},
    "amr": {"sub": "rev-city-amr-1", "role": "reviewer", "dept": "city-amr", "level": "city"},
    "tax": {"sub": "rev-city-tax-1", "role": "reviewer", "dept": "city-tax", "level": "city"},
    "supervisor": {"sub": "sup-01", "role": "supervisor"},
}
# Path segments that are nobody's id: traversal, encodings, sizes, controls.
ODD_SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "%2e%2e",
            "..%2f..%2fetc%2fpasswd",
            "%00",
            "%0A",
            "%zz",
            "a%2Fb",
            "s_" + "x" * 300,
            "timeline.jsonl",
            "manifest.json",
            "../manifest.json",
            "CON",
            "%E4%B8%AD",
            "%ED%A0%80",  # UTF-8 of a lone surrogate
            "%FF",
        ]
    ),
    st.text(min_size=1, max_size=30).map(lambda s: quote(s, safe="")),
    st.from_regex(r"\A[A-Za-z0-9._-]{1,70}\Z"),
)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/gif",
        "",
        "garbage/;;=",
    ]
)


@dataclass
class Request:
    method: str
    path: str  # already encoded
    token: str | None  # a role name, or a raw Authorization value below
    authorization: str | None
    content_type: str | None
    body: bytes | None
    query: str


class HttpFuzz:
    """One app for the whole test, with real objects for the path parameters to name."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.problems: list[str] = []
        loop_errors(self.loop, self.problems)
        self.tmp = Path(tempfile.mkdtemp(prefix="jr-fuzz-http-"))
        self.config = fuzz_config(self.tmp)
        self.tokens = TokenService(self.config)
        self.role_tokens = {name: self.tokens.issue(**who) for name, who in ROLES.items()}
        self.tally = Tally()
        self.pools: dict[str, list[str]] = {}
        self.ended: set[str] = set()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 120))

    async def start(self) -> None:
        self.server = TestServer(create_app(self.config))
        await self.server.start_server()
        self.http = aiohttp.ClientSession()
        self.root = str(self.server.make_url("")).rstrip("/")
        await self.seed()

    async def call(self, method: str, path: str, who: str, **kw: Any) -> Any:
        headers = {**auth(self.role_tokens[who]), **kw.pop("headers", {})}
        async with self.http.request(method, self.root + path, headers=headers, **kw) as resp:
            assert resp.status < 400, (method, path, resp.status, await resp.text())
            return await resp.json() if resp.content_type == "application/json" else None

    async def seed(self) -> None:
        """Sessions (one ended and sealed), invitations, an opinion, a still, an
        applicant token: the ids the fuzzer's paths may name."""
        sids, iids = [], []
        for _ in range(2):
            body = await self.call("POST", f"/api/cases/{CASE}/sessions", "clerk", json={})
            sid = body["session_id"]
            sids.append(sid)
            for dept in ("city-amr", "city-tax"):
                inv = await self.call(
                    "POST", f"/api/sessions/{sid}/invitations", "clerk", json={"dept": dept}
                )
                iids.append(inv["invitation_id"])
            await self.call("POST", f"/api/invitations/{iids[-2]}/accept", "amr")
            await self.call(
                "POST", f"/api/sessions/{sid}/opinions", "amr", json={"decision": "approve"}
            )
        png = io.BytesIO()
        Image.new("RGB", (4, 4), "red").save(png, "PNG")
        snap = await self.call(
            "POST",
            f"/api/sessions/{sids[0]}/snapshots",
            "clerk",
            data=png.getvalue(),
            headers={"Content-Type": "image/png"},
        )
        link = await self.call(
            "POST", f"/api/sessions/{sids[1]}/applicant-link", "clerk", json={"name": "甲"}
        )
        self.role_tokens["applicant"] = link["token"]
        await self.call("POST", f"/api/sessions/{sids[0]}/end", "clerk")
        self.ended.add(sids[0])
        index = await self.call("GET", f"/api/sessions/{sids[0]}/casefile", "clerk")
        files = [f["path"] for f in index["files"]]
        grants = [f["src"].rsplit("/", 1)[1] for f in index["files"]]
        self.pools = {
            "case_id": [CASE, "FZ-HTTP-2"],
            "session_id": sids,
            "invitation_id": iids,
            "snapshot_id": [snap["snapshot_id"]],
            "path": [quote(f, safe="") for f in files],
            "grant": grants,
            "track_id": ["t_none"],
            "delivery_id": ["d_none"],
        }

    async def send(self, req: Request) -> None:
        headers: dict[str, str] = {}
        if req.authorization is not None:
            headers["Authorization"] = req.authorization
        elif req.token is not None:
            headers.update(auth(self.role_tokens[req.token]))
        if req.content_type is not None:
            headers["Content-Type"] = req.content_type
        url = URL(self.root + req.path + (("?" + req.query) if req.query else ""), encoded=True)
        self.tally.http += 1
        what = f"{req.method} {req.path}?{req.query[:80]} ({req.token}, {req.content_type})"
        async with self.http.request(
            req.method, url, headers=headers, data=req.body, skip_auto_headers=["Content-Type"]
        ) as resp:
            await check_response(resp, what, self.tally)

    async def stop(self) -> None:
        live = self.server.app[STORE]
        await self.http.close()
        await self.server.close()
        fresh = check_journal(self.config.data_dir, live)
        self.tally.sealed_verified += verify_sealed(self.config.data_dir, fresh, self.ended)


QUERY_VALUES = st.one_of(
    st.sampled_from(["1", "0", "-1", "500", "501", "nan", "inf", "1e309", "", "pending"]),
    st.text(max_size=20),
    st.integers().map(str),
    st.floats().map(str),
)
BODIES = st.one_of(
    st.none(),
    json_values().map(lambda v: dumps(v).encode()),
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"decision": "approve"}',
            b'{"dept": "city-amr"}',
            b'{"reason": "\\ud800"}',
            b'{"applicant_name": "\\udfff"}',
            b'{"name": "\\ud800x"}',
            b'{"sub": "clerk-01"}',
            b"\xff\xfe\x00",
            b"[" * 10_000,
            b"RIFF\x00\x00\x00\x00WEBPVP8 ",
            b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
        ]
    ),
    st.binary(max_size=200),
    st.integers(MAX_MESSAGE_BYTES - 8, MAX_MESSAGE_BYTES + 8).map(
        lambda n: b'{"note": "' + b"x" * (n - 12) + b'"}'
    ),
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])


def requests(fuzz: HttpFuzz) -> st.SearchStrategy[Request]:
    """Built once (building strategies while drawing costs more than the requests)."""
    params = {
        name: st.one_of(st.sampled_from(pool or ["x"]), ODD_SEGMENTS)
        for name, pool in fuzz.pools.items()
    }
    routes = st.sampled_from([(r.method, r.path, sorted(r.query)) for r in ROUTES])
    queries = {
        tuple(names): st.dictionaries(
            st.one_of(st.sampled_from(names or ["limit"]), st.text(max_size=8)),
            QUERY_VALUES,
            max_size=3,
        )
        for names in {tuple(sorted(r.query)) for r in ROUTES}
    }
    headers = st.one_of(  # (a client can't send control characters in a header)
        token_variants(fuzz.role_tokens["clerk"], ROLES["clerk"]).map(lambda t: "Bearer " + t),
        st.sampled_from(["", "Bearer", "Bearer ", "Basic YTpi", "bearer  x"]),
        st.integers(100, 7000).map(lambda n: "Bearer " + "A" * n),
    ).map(lambda h: "".join(c for c in h if " " <= c <= "~"))
    whos = st.sampled_from([*ROLES, "applicant", None])

    @st.composite
    def one(draw: st.DrawFn) -> Request:
        method, path, query_names = draw(routes)
        if draw(st.integers(0, 9)) == 0:  # another method on the same path
            method = draw(METHODS)
        if draw(st.integers(0, 19)) == 0:  # a path that is no route
            path = "/api/" + draw(ODD_SEGMENTS) + draw(st.sampled_from(["", "/x", "/" + path[5:]]))
        path = re.sub(r"{(\w+)}", lambda m: draw(params.get(m.group(1), ODD_SEGMENTS)), path)
        query = draw(queries[tuple(query_names)])
        query_text = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
        authorization = draw(headers) if draw(st.integers(0, 4)) == 0 else None
        body = draw(BODIES)
        content_type = draw(
            CONTENT_TYPES if body is not None else st.sampled_from([None, "text/plain"])
        )
        return Request(method, path, draw(whos), authorization, content_type, body, query_text)

    return one()


def test_http_api(monkeypatch: pytest.MonkeyPatch) -> None:
    bound_shrinking(monkeypatch)
    fuzz = HttpFuzz()
    fuzz.run(fuzz.start())

    batches = st.lists(requests(fuzz), min_size=1, max_size=8)

    @fuzz_settings(examples=1000)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        batch = data.draw(batches, label="requests")

        async def go() -> None:
            for req in batch:
                await fuzz.send(req)

        fuzz.run(go())
        problems = fuzz.problems + log.records
        assert not problems, "\n".join(problems[:10])
        fuzz.tally.progress("http")

    started = time.monotonic()
    try:
        with ErrorLog() as log:
            one()
            fuzz.run(fuzz.stop())
            assert not log.records, log.records[:10]
    finally:
        fuzz.loop.close()
        shutil.rmtree(fuzz.tmp, ignore_errors=True)
        print(
            f"\nHTTP fuzz: {fuzz.tally.http} requests in {time.monotonic() - started:.0f} s; "
            f"codes: {dict(sorted(fuzz.tally.errors.items()))}"
        )
    assert fuzz.tally.http >= scaled(3_000)
    assert fuzz.tally.sealed_verified == 1
