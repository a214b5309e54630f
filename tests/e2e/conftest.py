"""Tests through real servers: each runs on the raw ASGI, Starlette and FastAPI
adapters (``flavor``), and on asyncio only (the ``websockets`` client's loop; the
servers run in their own thread or process, trio where hypercorn serves it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import chromium
from tests.support.e2e import FLAVORS, Flavor


@pytest.fixture
def anyio_backend() -> str:
    """The ``websockets`` client runs on asyncio only (the servers run elsewhere)."""
    return "asyncio"


@pytest.fixture(params=FLAVORS)
def flavor(request: pytest.FixtureRequest) -> Flavor:
    """Each e2e test runs against the raw ASGI, Starlette and FastAPI adapters."""
    value: Flavor = request.param
    return value


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (``tests/support/browser.py``), one per test module."""
    with chromium() as launched:
        yield launched
