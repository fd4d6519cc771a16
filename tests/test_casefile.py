"""Opinions and document stills: filed under the case, pushed to the session, guarded."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app

from .conftest import Tokens, auth, make_config
from .images import tiny
from .test_signaling_flow import connect, invite, start_session

Client = TestClient[Any, Any]
JPEG = tiny("JPEG")


async def test_an_opinion_is_filed_pushed_and_kept(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    inv = await invite(client, tok, sid, dept="city-amr")
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    res = await client.post(
        f"/api/invitations/{inv['invitation_id']}/accept", headers=auth(tok.reviewer())
    )
    assert res.status == 200
    body = {
        "decision": "materials_missing",
        "missing": ["营业场所证明", " ", "法人身份证复印件"],
        "note": "其余材料齐全",
    }
    res = await client.post(
        f"/api/sessions/{sid}/opinions", json=body, headers=auth(tok.reviewer())
    )
    assert res.status == 201, await res.text()
    opinion = await res.json()
    assert opinion["missing"] == ["营业场所证明", "法人身份证复印件"]
    assert opinion["author"]["dept"] == "city-amr"
    pushed = await clerk.wait("opinion.filed")
    assert pushed["opinion"]["opinion_id"] == opinion["opinion_id"]
    case = await (
        await client.get("/api/cases/GZ-2026-0001", headers=auth(tok.supervisor()))
    ).json()
    assert [o["opinion_id"] for o in case["opinions"]] == [opinion["opinion_id"]]
    filed = [e for e in case["events"] if e["type"] == "opinion.filed"]
    assert filed[0]["actor"]["sub"] == "rev-city-amr-1"
    assert filed[0]["data"]["missing"] == ["营业场所证明", "法人身份证复印件"]
    await clerk.close()


async def test_opinions_are_validated(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    inv = await invite(client, tok, sid, dept="city-amr")
    await client.post(
        f"/api/invitations/{inv['invitation_id']}/accept", headers=auth(tok.reviewer())
    )
    cases = [
        ({"decision": "materials_missing"}, "invalid_body", "missing"),
        ({"decision": "refer"}, "invalid_body", "refer_to"),
        ({"decision": "note"}, "invalid_body", "note"),
        ({"decision": "maybe"}, "invalid_body", "decision"),
        ({"decision": "refer", "refer_to": "nowhere"}, "unknown_department", "nowhere"),
    ]
    for body, code, word in cases:
        res = await client.post(
            f"/api/sessions/{sid}/opinions", json=body, headers=auth(tok.reviewer())
        )
        err = (await res.json())["error"]
        assert (res.status, err["code"]) == (400, code), body
        assert word in err["message"], err
    # The other department was never invited: no opinion from it.
    res = await client.post(
        f"/api/sessions/{sid}/opinions",
        json={"decision": "approve"},
        headers=auth(tok.other_reviewer()),
    )
    assert res.status == 404  # a session it may not read is as one that does not exist


async def test_a_still_is_shared_stored_and_guarded(
    client: Client, tok: Tokens, config: Any
) -> None:
    sid = await start_session(client, tok)
    await invite(client, tok, sid, dept="city-amr")
    reviewer = await connect(client, tok.reviewer())
    await reviewer.request("join", "joined", session_id=sid)
    res = await client.post(
        f"/api/sessions/{sid}/snapshots",
        data=JPEG,
        headers={**auth(tok.clerk()), "Content-Type": "image/jpeg"},
    )
    assert res.status == 201, await res.text()
    snap = await res.json()
    pushed = await reviewer.wait("snapshot")
    assert pushed["snapshot"]["url"] == snap["url"]
    got = await client.get(snap["url"], headers=auth(tok.reviewer()))
    assert got.status == 200 and await got.read() == JPEG
    assert got.headers["X-Content-SHA256"] == hashlib.sha256(JPEG).hexdigest()
    on_disk = list((config.data_dir / "archive").rglob("*.jpg"))
    assert len(on_disk) == 1 and on_disk[0].read_bytes() == JPEG
    assert on_disk[0].parts[-4:-2] == ("GZ-2026-0001", sid)
    denied = await client.get(snap["url"], headers=auth(tok.other_reviewer()))
    assert denied.status == 404  # as an unknown still
    for bad in ("/api/snapshots/..%2F..%2Fjwt_secret", "/api/snapshots/%2e%2e"):
        res = await client.get(bad, headers=auth(tok.clerk()))
        assert res.status == 404
    await reviewer.close()


async def test_bad_stills_are_refused(client: Client, tok: Tokens) -> None:
    sid = await start_session(client, tok)
    url = f"/api/sessions/{sid}/snapshots"
    res = await client.post(
        url,
        data=b"not an image at all",
        headers={**auth(tok.clerk()), "Content-Type": "image/jpeg"},
    )
    assert (await res.json())["error"]["code"] == "invalid_image"
    res = await client.post(
        url, data=JPEG, headers={**auth(tok.clerk()), "Content-Type": "application/pdf"}
    )
    assert (await res.json())["error"]["code"] == "unsupported_media_type"
    res = await client.post(
        url, data=JPEG, headers={**auth(tok.reviewer()), "Content-Type": "image/jpeg"}
    )
    assert res.status == 403


async def test_an_oversized_still_is_refused_whole(tmp_path: Path, tok: Tokens) -> None:
    config = make_config(tmp_path, snapshot_max_bytes=64 * 1024)
    async with TestClient(TestServer(create_app(config))) as client:
        sid = await start_session(client, tok)
        big = JPEG + b"\x00" * (70 * 1024)
        res = await client.post(
            f"/api/sessions/{sid}/snapshots",
            data=big,
            headers={**auth(tok.clerk()), "Content-Type": "image/jpeg"},
        )
        assert res.status == 413
        assert (await res.json())["error"]["code"] == "payload_too_large"
        assert not list((tmp_path / "data" / "archive").rglob("*.jpg"))
