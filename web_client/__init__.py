"""The browser UI, served by the jointreview server itself (every asset local: no CDN,
no external fonts). Plain ES modules under ``static/``; no build step. The pages' data
comes from the API's route table (``/ui/departments.json`` included); this package only
serves files."""

from __future__ import annotations

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
    "/case": "case.html",
    "/admin/directory": "directory.html",
}


def add_static_routes(app: web.Application, *, login_page: bool) -> None:
    """The pages and their assets. ``login_page``: whether the demo sign-in page exists
    (without demo sign-in, identities come from the approval system, and nothing here
    suggests otherwise)."""

    def page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            if name == "login.html" and not login_page:
                raise web.HTTPNotFound()
            return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

        return handler

    for path, name in PAGES.items():
        app.router.add_get(path, page(name))
    app.router.add_get("/session/{session_id}", page("session.html"))
    app.router.add_get("/favicon.ico", page("favicon.svg"))
    app.router.add_static("/static/", STATIC, append_version=False)
