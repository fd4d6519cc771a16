"""Demo sign-in on the pages (issue #10, finding 3): explicitly enabled beyond loopback,
the sign-in page warns in red in both languages; off, no page links to a sign-in page
that does not exist, and each says where to sign in instead."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import expect

from tests.conftest import ServerProcess

from .conftest import Person


@pytest.fixture(scope="module", params=["exposed", "off"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {"JR_HOST": "0.0.0.0", "JR_LOG_LEVEL": "warning", "JR_MEDIA_ENABLED": "false"}
    if request.param == "exposed":
        env["JR_DEMO_ENABLED"] = "true"
    proc = ServerProcess(tmp_path_factory.mktemp("jr") / "data", env=env).start()
    proc.mode = request.param  # type: ignore[attr-defined]
    yield proc
    if proc.proc is not None:
        proc.stop()


def test_the_sign_in_page_and_home_follow_the_demo_setting(
    people: Callable[..., Person], server: ServerProcess
) -> None:
    person = people("visitor")
    if server.mode == "exposed":  # type: ignore[attr-defined]
        person.open("/login")
        banner = person.by("demo-exposed")
        expect(banner).to_contain_text("警告")
        expect(person.by("login-clerk-01")).to_be_visible()
        person.shot("login-exposed-zh")
        person.set_lang("en")
        expect(banner).to_contain_text("any user, administrators included")
        person.shot("login-exposed-en")
    else:
        person.open("/")
        notice = person.by("page-error")
        expect(notice).to_have_attribute("data-code", "not_signed_in")
        expect(person.by("open-portal")).to_contain_text("审批系统")
        expect(person.by("go-login")).to_have_count(0)
        person.shot("home-no-demo-zh")
