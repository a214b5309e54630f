"""The demo page in a real browser: two tabs chat, and a bad token shows why.

Headless Chromium is Debian's ``/usr/bin/chromium``, driven by Playwright; no browser
is ever downloaded. Without it these tests skip, except in CI (``CI`` set), where a
missing browser is a failure, not a silent skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Request,
    expect,
)

from tests.support.browser import TIMEOUT_MS
from tests.support.client import HandshakeCounter
from tests.support.common import ServerThread, serve
from wschat.demo import LOOPBACK_HOSTS, create_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo() -> Iterator[ServerThread]:
    # The counter checks every frame the page gets against the schema.
    app = HandshakeCounter(create_app(trusted_hosts=LOOPBACK_HOSTS))
    with serve(app, log_level="warning", ws_per_message_deflate=False) as server:
        yield server


class Tab:
    """One page of the demo, recording what would show that it broke."""

    def __init__(self, context: BrowserContext, origin: str) -> None:
        self.origin = origin
        self.page = context.new_page()
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("request", self._request)
        self.page.goto(origin + "/")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _request(self, request: Request) -> None:
        url = request.url
        if not url.startswith((self.origin + "/", "data:")):
            self.foreign.append(url)

    def join(self, name: str, room: str) -> None:
        self.page.fill("#name", name)
        self.page.fill("#room", room)
        self.page.click("#join")
        expect(self.page.locator("#state")).to_contain_text(
            f"Connected to {room} as {name}"
        )

    def say(self, text: str) -> None:
        self.page.fill("#message", text)
        self.page.press("#message", "Enter")


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


def test_two_tabs_chat(context: BrowserContext, demo: ServerThread) -> None:
    alice = Tab(context, demo.http)
    bob = Tab(context, demo.http)
    alice.join("alice", "browser-room")
    bob.join("bob", "browser-room")
    expect(alice.page.locator("#members")).to_contain_text("bob")

    alice.say("hello from alice")
    for tab in (alice, bob):
        line = tab.page.locator("#log li.message", has_text="hello from alice")
        expect(line).to_have_count(1)
        expect(line.locator(".user")).to_have_text("alice")

    bob.say("hi alice <b>not bold</b>")
    line = alice.page.locator("#log li.message", has_text="hi alice")
    expect(line.locator(".body")).to_have_text("hi alice <b>not bold</b>")
    expect(line.locator("b")).to_have_count(0)

    # Leaving is a normal close, shown like any other.
    bob.page.click("#leave")
    expect(bob.page.locator("#close-code")).to_have_text("1000")
    expect(alice.page.locator("#log li.presence").last).to_contain_text("bob left")

    for tab in (alice, bob):
        assert tab.errors == []
        assert tab.foreign == [], "the page must load nothing from elsewhere"


def test_bad_token_shows_4401_token_malformed(
    context: BrowserContext, demo: ServerThread
) -> None:
    tab = Tab(context, demo.http)
    tab.page.click("#bad-token")
    expect(tab.page.locator("#close-code")).to_have_text("4401")
    expect(tab.page.locator("#close-reason-code")).to_have_text("token_malformed")
    expect(tab.page.locator("#close-words")).to_contain_text("not a JWT")
    expect(tab.page.locator("#close-hint")).to_contain_text("get a new token")
    expect(tab.page.locator("#state")).to_contain_text("Not connected")
    assert tab.foreign == []
