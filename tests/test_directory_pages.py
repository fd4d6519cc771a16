"""The admin's directory view a page at a time (``GET /api/admin/directory``): with a
directory of a few thousand generated reviewers, its pages cover every user once, in
order, as every list that grows pages (``limit`` up to ``page_max``, an opaque cursor);
a search and filters narrow it; wrong limits and cursors are 400 with a JSON error."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling import paging
from signaling.auth import TokenService
from tests.conftest import Tokens, auth, make_config

PACKAGED = Path(__file__).resolve().parent.parent / "signaling" / "directory.toml"
DEPTS = ["city-amr", "city-tax", "city-customs", "district-amr", "district-planning"]
GENERATED = 3000


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "directory.toml"
    shutil.copy(PACKAGED, path)
    lines = [path.read_text(encoding="utf-8")]
    for n in range(GENERATED):
        lines.append(
            f'\n[[users]]\nsub = "gen-{n:05d}"\nname = "审批员{n}"\nrole = "reviewer"\n'
            f'dept = "{DEPTS[n % len(DEPTS)]}"\n'
        )
    path.write_text("".join(lines), encoding="utf-8")
    return path


async def test_the_directory_pages(tmp_path: Path) -> None:
    config = make_config(tmp_path, directory_file=_directory(tmp_path))
    tok = Tokens(TokenService(config))
    admin = auth(tok.admin())
    async with TestClient(TestServer(create_app(config))) as c:

        async def view(**query: Any) -> tuple[int, dict[str, Any]]:
            r = await c.get("/api/admin/directory", headers=admin, params=query)
            return r.status, await r.json()

        # Every user once, in order, over pages of at most page_max.
        status, first = await view()
        assert status == 200
        total = first["state"]["users"]
        assert total == GENERATED + 10 and first["matched"] == total
        assert len(first["users"]) == config.page_default and len(first["departments"]) == 5
        subs: list[str] = []
        everyone: list[dict[str, Any]] = []
        cursor, pages = None, 0
        while True:
            status, body = await view(
                limit=config.page_max, **({"cursor": cursor} if cursor else {})
            )
            assert status == 200, body
            assert len(body["users"]) <= config.page_max
            subs += [u["sub"] for u in body["users"]]
            everyone += body["users"]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert subs == sorted(set(subs)) and len(subs) == total
        assert pages == -(-total // config.page_max)

        # A search, a department, a role.
        status, body = await view(q="审批员42")
        names = {u["name"] for u in body["users"]}
        assert names == {"审批员42", *(f"审批员42{k}" for k in range(10))}, names
        assert body["matched"] == 11 and body["next_cursor"] is None
        status, body = await view(q="GEN-0004", limit=3)  # not case sensitive
        assert [u["sub"] for u in body["users"]] == ["gen-00040", "gen-00041", "gen-00042"]
        assert body["matched"] == 10 and body["next_cursor"]
        status, body = await view(q="GEN-0004", limit=3, cursor=body["next_cursor"])
        assert [u["sub"] for u in body["users"]] == ["gen-00043", "gen-00044", "gen-00045"]
        status, body = await view(dept="city-tax", limit=500)
        assert {u["dept"] for u in body["users"]} == {"city-tax"}
        assert body["matched"] == sum(u["dept"] == "city-tax" for u in everyone) > 600
        status, body = await view(role="clerk")
        assert {u["role"] for u in body["users"]} == {"clerk"} and body["matched"] >= 1
        status, body = await view(q="市税务局", limit=1)  # a department's name
        assert body["users"][0]["dept"] == "city-tax"

        # Limits enforced; cursors only as given.
        for limit in ("0", str(config.page_max + 1), "x", ""):
            status, body = await view(limit=limit)
            assert (status, body["error"]["code"]) == (400, "invalid_query"), (limit, body)
        for cursor in (
            "nonsense!",
            paging.encode("ev", seq=3),
            paging.encode("du", i=7),
            "A" * 600,
        ):
            status, body = await view(cursor=cursor)
            assert (status, body["error"]["code"]) == (400, "invalid_cursor"), (cursor, body)
        status, body = await view(q="x" * 129)
        assert status == 400

        # Admins only, as before.
        r = await c.get("/api/admin/directory", headers=auth(tok.clerk()))
        assert r.status == 403
