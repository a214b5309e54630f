"""Tests that need Redis: the shared one at 127.0.0.1:6379 (``need_redis``), or a
private ``redis-server`` a test starts, kills, pauses and resumes (``own_redis``).

``RedisBackplane`` runs on asyncio only, so these tests do too (a test asks for trio
by parametrizing ``anyio_backend``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()
