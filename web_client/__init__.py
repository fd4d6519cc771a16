"""The browser UI, served by the jointreview server itself (every asset local: no CDN,
no external fonts). Plain ES modules under ``static/``; no build step."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
PAGES = {
    "/": "index.html",
    "/login": "login.html",
    "/counter": "counter.html",
    "/inbox": "inbox.html",
    "/supervise": "supervise.html",
}


def add_static_routes(app: web.Application) -> None:
    from signaling.keys import CONFIG

    def page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            if name == "login.html" and not request.app[CONFIG].demo_on:
                # No demo sign-in, no sign-in page: identities come from the approval
                # system, and nothing here suggests otherwise.
                raise web.HTTPNotFound()
            return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

        return handler

    async def departments(request: web.Request) -> web.Response:
        # Department names for display on every screen (the applicant's too): public
        # information, unlike the directory's people (GET /api/directory, staff only).
        from signaling.keys import DIRECTORY

        directory = request.app[DIRECTORY]
        return web.json_response(
            {
                "departments": [d.model_dump() for d in directory.departments],
                # Whether /login exists: pages link to it only then.
                "demo": request.app[CONFIG].demo_on,
            },
            headers={"Cache-Control": "no-cache"},
            dumps=lambda obj: json.dumps(obj, ensure_ascii=False),
        )

    for path, name in PAGES.items():
        app.router.add_get(path, page(name))
    app.router.add_get("/session/{session_id}", page("session.html"))
    app.router.add_get("/favicon.ico", page("favicon.svg"))
    app.router.add_get("/ui/departments.json", departments)
    app.router.add_static("/static/", STATIC, append_version=False)
