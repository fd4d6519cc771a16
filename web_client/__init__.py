"""The browser UI, served by the jointreview server itself (every asset local)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
PAGES = {"/": "index.html", "/login": "login.html"}


def add_static_routes(app: web.Application) -> None:
    def page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

        return handler

    for path, name in PAGES.items():
        app.router.add_get(path, page(name))
    app.router.add_get("/session/{session_id}", page("index.html"))
    app.router.add_static("/static/", STATIC, append_version=False)
