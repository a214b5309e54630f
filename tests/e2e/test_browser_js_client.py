"""The demo page on the built JS client (clients/js) in headless Chromium.

A bad token stops after exactly one handshake (the client does not loop), and after a
server restart the page reconnects by itself and shows the messages sent while it was
away (loaded with ``history`` since the restarted server's history is new). Debian's
``/usr/bin/chromium`` driven by Playwright; skips without it, fails in CI.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from websockets.sync.client import connect

from tests.support.browser import TIMEOUT_MS
from tests.support.client import HandshakeCounter
from tests.support.common import SECRET, ServerThread, free_port
from wschat.demo import LOOPBACK_HOSTS, create_app
from wschat.testing import mint_token

pytestmark = pytest.mark.browser

#: The page's reconnect after a restart: 1012, then 1006 ceilings of 1, 2, 4 s.
RECONNECT_MS = 30_000


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def demo_on(port: int) -> tuple[ServerThread, HandshakeCounter]:
    counter = HandshakeCounter(create_app(SECRET, trusted_hosts=LOOPBACK_HOSTS))
    server = ServerThread(
        counter,
        port=port,
        log_level="warning",
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=2,
    )
    server.start()
    return server, counter


def join(page: Page, name: str, room: str) -> None:
    page.fill("#name", name)
    page.fill("#room", room)
    page.click("#join")
    expect(page.locator("#state")).to_contain_text(f"Connected to {room} as {name}")


def test_the_page_loads_the_built_client(page: Page) -> None:
    server, _ = demo_on(free_port())
    try:
        script = page.request.get(server.http + "/wschat-client.js")
        assert script.ok
        assert script.headers["content-type"].startswith("text/javascript")
        built = Path(__file__).resolve().parents[2] / "src/wschat/demo/wschat-client.js"
        assert script.text() == built.read_text()
        loaded: list[str] = []
        page.on("request", lambda request: loaded.append(request.url))
        page.goto(server.http + "/")
        join(page, "alice", "built")
        assert server.http + "/wschat-client.js" in loaded
    finally:
        server.stop()


def test_a_bad_token_shows_4401_after_exactly_one_handshake(page: Page) -> None:
    server, counter = demo_on(free_port())
    try:
        page.goto(server.http + "/")
        page.click("#bad-token")
        expect(page.locator("#close-code")).to_have_text("4401")
        expect(page.locator("#close-reason-code")).to_have_text("token_malformed")
        expect(page.locator("#close-hint")).to_contain_text("get a new token")
        expect(page.locator("#state")).to_contain_text("Not connected")
        time.sleep(1.5)  # a reconnect loop would have tried again by now
        assert counter.handshakes == 1
    finally:
        server.stop()


def test_after_a_restart_the_page_reconnects_and_shows_the_gap(page: Page) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    port = free_port()
    first, _ = demo_on(port)
    try:
        page.goto(first.http + "/")
        join(page, "alice", "restart-room")
        page.fill("#message", "before")
        page.press("#message", "Enter")
        expect(page.locator("#log li.message", has_text="before")).to_have_count(1)
    finally:
        first.stop()
    expect(page.locator("#state")).to_contain_text("Reconnecting")
    # The restart's 1012, or 1006 when the stopping server's close frame did not
    # reach the page before its socket dropped (or a retry against the stopped
    # server already failed): both are retried, and the page says so.
    expect(page.locator("#close-code")).to_have_text(re.compile(r"^(1012|1006)$"))
    second, counter = demo_on(port)
    try:
        url = f"ws://127.0.0.1:{port}/ws/chat/restart-room"
        with connect(f"{url}?token={mint_token(SECRET, 'bob')}") as bob:
            assert json.loads(bob.recv(5))["type"] == "ready"
            for n in (1, 2):
                bob.send(json.dumps({"type": "message", "body": f"gap {n}"}))
            expect(page.locator("#state")).to_contain_text(
                "Connected to restart-room as alice", timeout=RECONNECT_MS
            )
            for n in (1, 2):
                line = page.locator("#log li.message", has_text=f"gap {n}")
                expect(line).to_have_count(1)
            page.fill("#message", "after")
            page.press("#message", "Enter")
            expect(page.locator("#log li.message", has_text="after")).to_have_count(1)
        assert counter.handshakes == 2  # bob's and the page's one reconnect here
        assert errors == []
    finally:
        second.stop()
