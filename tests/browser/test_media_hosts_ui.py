"""The admin's view of media placement on the counter page (GET /api/admin/media): each
media worker of the node with its load and whether the node drains; hidden for clerks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import expect

from signaling.auth import TokenService
from tests.conftest import ServerProcess

from .conftest import Api, Person


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]', "JR_MEDIA_WORKERS": "2"}
    proc = ServerProcess(tmp_path_factory.mktemp("jr") / "data", env=env).start()
    yield proc
    if proc.proc is not None:
        proc.stop()


def test_admins_see_the_media_hosts_and_the_drain(
    people: Callable[..., Person], server: ServerProcess, tokens: TokenService, http: Api
) -> None:
    admin = tokens.issue(sub="admin", role="admin", name="管理员")
    person = people("admin")
    person.open("/counter", admin)
    card = person.by("media-hosts")
    expect(card).to_be_visible()
    hosts = person.by("media-host")
    expect(hosts).to_have_count(2)
    expect(hosts.first).to_contain_text("/0")
    expect(card).to_contain_text("接收新会办")
    http.call("POST", "/api/admin/drain", admin, {"draining": True})
    person.page.reload()
    expect(person.by("media-hosts")).to_contain_text("排空中")
    person.set_lang("en")
    expect(person.by("media-hosts")).to_contain_text("draining")
    person.shot("counter-media-hosts-en")
    http.call("POST", "/api/admin/drain", admin, {"draining": False})

    clerk = people("clerk")
    clerk.open("/counter", tokens.issue(sub="clerk-01", role="clerk", name="陈晓"))
    expect(clerk.by("active-sessions")).to_be_visible()
    expect(clerk.by("media-hosts")).to_be_hidden()
