"""Headless Chromium for the browser tests: Debian's ``/usr/bin/chromium``, driven by
Playwright with the system browser (no browser is ever downloaded).

Without the browser the tests skip, except in CI (``CI`` set), where a missing browser
is a failure, not a silent skip. ``tests/e2e/conftest.py`` makes ``browser`` a
fixture from :func:`chromium`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.support.common import IN_CI

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
]
#: Playwright's default wait in the browser tests, milliseconds.
TIMEOUT_MS = 10_000


def unavailable(why: str) -> NoReturn:
    """Skip the test, or fail it in CI, where browser tests must run."""
    if IN_CI:
        pytest.fail(f"browser tests must run in CI: {why}")
    pytest.skip(why)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """The system Chromium, headless, closed at the end."""
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
