"""Every page works under the Content-Security-Policy the server sends (no inline script,
no eval, no foreign origin), and no token shows up where a browser logs URLs: the
socket's URL, the console, a Referer.

Each page's ``securitypolicyviolation`` events are collected by an init script; the
``people`` fixture fails the test on any console error as well.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Page, Request, WebSocket, expect

from signaling.auth import TokenService

from .conftest import Api, Person
from .helpers import axe_check, start_session, wait_joined

COLLECT_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI} at ${where}`);
});
"""
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+")


class Watch:
    """Everything a page logs or requests: console lines (all levels), socket URLs,
    requests with their Referer."""

    def __init__(self, person: Person) -> None:
        self.person = person
        self.console: list[str] = []
        self.sockets: list[str] = []
        self.requests: list[tuple[str, str | None]] = []
        person.context.add_init_script(COLLECT_VIOLATIONS)
        page = person.page
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("websocket", self._socket)
        page.on("request", self._request)

    def _socket(self, ws: WebSocket) -> None:
        self.sockets.append(ws.url)

    def _request(self, request: Request) -> None:
        self.requests.append((request.url, request.all_headers().get("referer")))

    def violations(self) -> list[str]:
        return list(self.person.page.evaluate("() => window.__csp || []"))

    def assert_clean_page(self, what: str) -> None:
        assert self.violations() == [], (what, self.violations())
        policy_noise = [
            line
            for line in self.console
            if "Content Security Policy" in line or "Permissions-Policy" in line
        ]
        assert policy_noise == [], (what, policy_noise)


def open_page(person: Person, watch: Watch, path: str, token: str | None) -> Page:
    response = person.page.goto(
        person.base + path + (f"{'&' if '?' in path else '?'}token={token}" if token else "")
    )
    assert response is not None and response.ok, path
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, (path, csp)
    assert response.headers.get("referrer-policy") == "no-referrer", path
    return person.page


def test_every_page_runs_under_the_policy(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    clerk_token = tokens.issue(sub="clerk-01", role="clerk", name="陈晓")
    reviewer = tokens.issue(
        sub="rev-city-amr-1", role="reviewer", name="王建国", dept="city-amr", level="city"
    )
    staff: list[tuple[str, str | None, str]] = [
        ("/login", None, "[data-testid=login-clerk-01]"),
        ("/", clerk_token, "[data-testid=start-review]"),  # home sends a clerk to /counter
        ("/counter", clerk_token, "[data-testid=start-review]"),
        ("/inbox", reviewer, "[data-testid=inbox-empty]"),
        ("/case", clerk_token, "[data-testid=track-form]"),
        (
            "/supervise",
            tokens.issue(sub="sup-01", role="supervisor"),
            "[data-testid=session-search]",
        ),
    ]
    visitor = people("visitor")
    watch = Watch(visitor)
    for path, token, selector in staff:
        open_page(visitor, watch, path, token)
        expect(visitor.page.locator(selector).first).to_be_visible()
        watch.assert_clean_page(path)
        axe_check(visitor.page, path)

    # The session page: camera, the socket, the applicant's QR code, a document still.
    sid = start_session(http, clerk_token, "GZ-CSP-0001")
    clerk = people("clerk")
    clerk_watch = Watch(clerk)
    page = open_page(clerk, clerk_watch, f"/session/{sid}", clerk_token)
    wait_joined(page)
    clerk.by("applicant-link").click()
    expect(clerk.by("applicant-qr").locator("svg")).to_be_visible()
    source = clerk.by("document-source")
    source.select_option(label=source.locator("option", has_text="fake_device_2").inner_text())
    clerk.by("snapshot").click()
    clerk.by("tab-docs").click()
    expect(clerk.by("snapshot-item")).to_have_count(1)
    clerk.by("snapshot-item").click()
    expect(clerk.by("viewer-image")).to_be_visible()
    clerk.page.wait_for_function(
        "() => document.querySelector('[data-testid=viewer-image]').naturalWidth > 0"
    )
    clerk.by("viewer-close").click()
    clerk_watch.assert_clean_page("session")
    axe_check(page, "the clerk's session")

    # The applicant by the link: in, and the token gone from the address bar.
    url = clerk.by("applicant-url").input_value()
    applicant = people("applicant")
    applicant_watch = Watch(applicant)
    response = applicant.page.goto(url)
    assert response is not None and "content-security-policy" in response.headers
    expect(applicant.page).to_have_url(re.compile(rf"/session/{sid}$"))
    wait_joined(applicant.page)
    applicant_watch.assert_clean_page("applicant session")
    axe_check(applicant.page, "the applicant's session")

    # And the policy really is enforced: inline script does not run.
    ran = page.evaluate(
        """() => { const s = document.createElement("script");
                   s.textContent = "window.__inline = 1"; document.body.append(s);
                   return window.__inline === 1; }"""
    )
    assert ran is False
    page.wait_for_function("() => window.__csp.some((v) => v.startsWith('script-src'))")
    # Provoked: the inline script the test injected, refused and logged by Chromium.
    clerk.allow_errors("Content Security Policy", "the injected inline script", count=1)


def test_no_token_in_logged_urls_across_a_restart(
    people: Callable[..., Person], tokens: TokenService, http: Api, server: Any
) -> None:
    clerk_token = tokens.issue(sub="clerk-01", role="clerk", name="陈晓")
    sid = start_session(http, clerk_token, "GZ-CSP-0002")
    link = http.call("POST", f"/api/sessions/{sid}/applicant-link", clerk_token, {})["url"]
    applicant = people("applicant")
    watch = Watch(applicant)
    applicant.page.goto(link)
    expect(applicant.page).to_have_url(re.compile(rf"/session/{sid}$"))
    wait_joined(applicant.page)
    applicant_token = link.split("token=", 1)[1]

    # The node restarts: the page's reconnects fail (Chromium logs each socket URL in the
    # console), then it comes back and the page resumes.
    server.stop()
    expect(applicant.by("connection-state")).to_have_attribute("data-state", "reconnecting")
    deadline = time.monotonic() + 10
    while not any("WebSocket connection" in line for line in watch.console):
        assert time.monotonic() < deadline, watch.console
        applicant.page.wait_for_timeout(200)
    server.start()
    expect(applicant.by("connection-state")).to_have_attribute("data-state", "open")
    # A reload, too: the token comes from the tab's storage, not from the URL.
    applicant.page.reload()
    wait_joined(applicant.page)

    assert len(watch.sockets) >= 3, watch.sockets
    for url in watch.sockets:
        assert "token" not in url and not JWT.search(url), url
    logged = "\n".join(watch.console)
    assert "WebSocket connection" in logged  # the failures were logged ...
    assert applicant_token not in logged and "token=" not in logged  # ... without the token
    assert not JWT.search(logged), logged
    # Only the first navigation carried the token; no request sent it on as a Referer.
    carrying = [u for u, _ in watch.requests if "token=" in u]
    assert carrying == [link], carrying
    referers = [r for _, r in watch.requests if r]
    assert referers == [], referers
    # Provoked: the server was stopped; Chromium logs the failed reconnects.
    applicant.allow_errors("WebSocket connection", "reconnects while the server is down")
