"""Browser end-to-end tests: a real ``jointreview serve`` process and Debian's headless
Chromium driven by Playwright (sync API), with a synthetic camera and microphone.

Every page's console is collected; a test fails on any console error or uncaught
exception (see ``people``), except those its own allow-list names: errors the test
provokes on purpose, each with the reason (``Person.allow_errors``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from bench.chromium import CHROMIUM, FLAGS
from bench.chromium import scratch_env as _scratch_env
from signaling.auth import TokenService
from signaling.config import Config
from tests.conftest import SECRET, ServerProcess

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Without --use-fake-ui-for-media-stream: permissions are what the context grants.
FLAGS_NO_FAKE_UI = [f for f in FLAGS if f != "--use-fake-ui-for-media-stream"]
VIEWPORT = {"width": 1280, "height": 720}
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("jr")
    proc = ServerProcess(
        root / "data",
        env={"JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]', "JR_LOG_LEVEL": "warning"},
    ).start()
    yield proc
    if proc.proc is not None:
        proc.stop()


@pytest.fixture(scope="module")
def tokens(server: ServerProcess) -> TokenService:
    return TokenService(Config(data_dir=server.data_dir, jwt_secret=SECRET))


@pytest.fixture(scope="module")
def playwright(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup --test (installs Debian's chromium)")
    root = tmp_path_factory.mktemp("chromium")
    saved = os.environ.get("TMPDIR")
    env = _scratch_env(root)
    os.environ["TMPDIR"] = env["TMPDIR"]  # Playwright's own profile folders go here too
    pw = sync_playwright().start()
    pw._jr_env = env  # type: ignore[attr-defined]
    try:
        yield pw
    finally:
        pw.stop()
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved
        shutil.rmtree(root, ignore_errors=True)


def launch(pw: Playwright, flags: list[str]) -> Browser:
    return pw.chromium.launch(
        executable_path=CHROMIUM,
        args=flags,
        env=pw._jr_env,  # type: ignore[attr-defined]
        headless=True,
    )


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = launch(playwright, FLAGS)
    yield b
    b.close()


class Person:
    """One participant: a browser context of their own, one page, its console watched."""

    def __init__(self, context: BrowserContext, base: str, name: str) -> None:
        self.context = context
        self.base = base
        self.name = name
        self.errors: list[str] = []
        self.allowed: list[tuple[str, str]] = []  # (fragment of the error, why expected)
        self.page: Page = context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")

    def allow_errors(self, fragment: str, why: str, count: int | None = None) -> None:
        """Console errors holding ``fragment`` are expected: the test provokes them on
        purpose (``why``). Keep it narrow; with ``count``, exactly that many were logged."""
        if count is not None:
            seen = [e for e in self.errors if fragment in e]
            assert len(seen) == count, (why, self.errors)
        self.allowed.append((fragment, why))

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(f in e for f, _ in self.allowed)]

    def open(self, path: str, token: str | None = None) -> Page:
        sep = "&" if "?" in path else "?"
        url = self.base + path + (f"{sep}token={token}" if token else "")
        self.page.goto(url)
        return self.page

    def by(self, testid: str) -> Any:
        return self.page.get_by_test_id(testid)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))

    def set_lang(self, lang: str) -> None:
        """Switch the language in place (the UI re-renders without a reload)."""
        current = self.page.evaluate("document.documentElement.lang")
        if current != lang:
            self.by("lang-switch").click()
            self.page.wait_for_function(
                f"() => document.documentElement.lang === {json.dumps(lang)}"
            )


@pytest.fixture
def people(browser: Browser, server: ServerProcess) -> Iterator[Callable[..., Person]]:
    """Make participants; after the test, assert that no page logged a console error or
    threw, beyond what each person's allow-list expects."""
    made: list[Person] = []

    def make(
        name: str, *, lang: str = "zh-CN", browser_: Browser | None = None, **kw: Any
    ) -> Person:
        options: dict[str, Any] = {"viewport": VIEWPORT, "locale": lang, **kw}
        options.setdefault("permissions", ["camera", "microphone"])
        context = (browser_ or browser).new_context(**options)
        context.add_init_script(f"localStorage.setItem('jr.lang', {json.dumps(lang)})")
        person = Person(context, server.url, name)
        made.append(person)
        return person

    yield make
    errors = {p.name: p.unexpected_errors() for p in made if p.unexpected_errors()}
    for p in made:
        p.context.close()
    assert not errors, f"console errors: {json.dumps(errors, ensure_ascii=False, indent=1)}"


# -- the HTTP API, for setting up and checking -----------------------------------------


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, token: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.load(res)


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Api:
    return Api(server.url)


def eventually(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.1) -> Any:
    """Poll a server-side condition (no browser involved) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)
