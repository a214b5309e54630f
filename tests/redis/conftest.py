"""Tests that need Redis: the shared one at 127.0.0.1:6379 (``need_redis``), or a
private ``redis-server`` a test starts, kills, pauses and resumes (``own_redis``).

``RedisBackplane`` runs on asyncio only, so these tests do too (a test asks for trio
by parametrizing ``anyio_backend``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_processes import SECRET, Server
from tests.support.redis_server import RedisServer, need_redis, unique_prefix


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


@pytest.fixture
def servers(request: pytest.FixtureRequest) -> Iterator[list[Server]]:
    """Start servers on one Redis with one prefix.

    The param is a dict: ``workers`` (a list, one entry per server), ``ttl``,
    ``max_per_user``, and ``history`` (``"redis"``: a shared RedisHistoryStore).
    """
    url = need_redis()
    env = {
        "WSCHAT_REDIS_URL": url,
        "WSCHAT_PREFIX": unique_prefix(),
        "WSCHAT_SECRET": SECRET,
        "WSCHAT_PRESENCE_TTL": str(getattr(request, "param", {}).get("ttl", 30)),
        "WSCHAT_MAX_PER_USER": str(
            getattr(request, "param", {}).get("max_per_user", 16)
        ),
    }
    if getattr(request, "param", {}).get("history"):
        env["WSCHAT_HISTORY"] = request.param["history"]
    workers = getattr(request, "param", {}).get("workers", [1, 1])
    started = [Server(env, workers=w) for w in workers]
    try:
        for server in started:
            server.start()
        yield started
    finally:
        for server in started:
            server.stop()
