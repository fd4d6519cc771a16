"""An in-process server with one joint review open, and real aiortc people to put in it
(the media and recording tests share it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from bench.bot import Bot
from jointreview.app import create_app
from signaling.appkeys import MEDIA
from signaling.auth import TokenService

from .conftest import auth, make_config

CLERK = "clerk-01"


class Call:
    """A running server and a session of ``case_id`` to put participants in."""

    def __init__(
        self, server: TestServer, tokens: TokenService, case_id: str, sid: str, root: Path
    ) -> None:
        self.server, self.tokens, self.case_id, self.sid = server, tokens, case_id, sid
        self.root = root  # the test's tmp_path: the server's data is in root / "data"
        self.url = str(server.make_url("")).rstrip("/")
        self.people: list[Bot] = []

    @classmethod
    async def start(cls, tmp_path: Path, case_id: str, **overrides: Any) -> Any:
        config = make_config(tmp_path, media_listen_ips=["127.0.0.1"], **overrides)
        server = TestServer(create_app(config))
        await server.start_server()
        tokens = TokenService(config)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                str(server.make_url(f"/api/cases/{case_id}/sessions")),
                json={},
                headers=auth(tokens.issue(sub=CLERK, role="clerk")),
            ) as res,
        ):
            sid = (await res.json())["session_id"]
        return cls(server, tokens, case_id, sid, tmp_path)

    async def person(self, n: int, role: str = "clerk", **kw: Any) -> Bot:
        """Participant ``n`` joined (a reviewer's department is invited first)."""
        if role == "reviewer":
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{self.url}/api/sessions/{self.sid}/invitations",
                    json={"dept": kw["dept"]},
                    headers=auth(self.tokens.issue(sub=CLERK, role="clerk")),
                ) as res,
            ):
                assert res.status == 201
        token = self.tokens.issue(sub=f"user-{n}", name=f"用户{n}", role=role, **kw)
        p = Bot(self.url, token)
        self.people.append(p)
        await p.connect()
        await p.join(self.sid)
        return p

    async def end_session(self) -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.url}/api/sessions/{self.sid}/end",
                headers=auth(self.tokens.issue(sub=CLERK, role="clerk")),
            ) as res,
        ):
            assert res.status == 200

    @property
    def media(self) -> Any:
        return self.server.app[MEDIA].media

    async def close(self) -> None:
        for p in self.people:
            await p.close()
        await self.server.close()


async def until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)
