"""Limits on a shared backplane, through two real uvicorn servers on one Redis:
``ready`` alone for a batch client joining during room traffic from the other
process, and each limit counted per process (docs/scaling.md)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest

from tests.support.e2e import (
    chat_server,
    client,
    closed,
    joins_with_ready_alone,
    next_frame,
    pongs,
    room_traffic,
    token,
    until,
)
from wschat import ConnectionManager

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


async def test_batch_client_gets_ready_alone_across_processes_on_redis() -> None:
    """Bob is the first member of the room on his server: his ``ready`` waits for
    the subscription, and traffic from the other server arrives right behind it.

    Whether traffic queues behind ``ready`` before his writer runs is a race, so he
    joins 40 times (before the fix this failed in 5 runs of 6; the single-process
    test in tests/e2e/test_e2e_limits.py fails every time, on his own ``presence``
    queued behind ``ready``).
    """
    from tests.support.redis_server import need_redis, unique_prefix
    from wschat.backplane.redis import RedisBackplane

    url, prefix = need_redis(), unique_prefix()
    with (
        chat_server(
            "asgi",
            ConnectionManager(backplane=RedisBackplane(url, prefix=prefix)),
            rate_limit=None,
        ) as one,
        chat_server(
            "asgi",
            ConnectionManager(backplane=RedisBackplane(url, prefix=prefix)),
            rate_limit=None,
        ) as two,
    ):
        async with room_traffic(one.url("busy", token("alice"))) as sent:
            await until(lambda: sent[0] > 100)
            bob = two.url("busy", token("bob"), batch="1")
            await joins_with_ready_alone(bob, sent, 40)


async def test_the_cap_is_shared_and_the_rate_is_per_process_on_redis() -> None:
    """docs/auth.md, "The per-user cap": on a shared backplane the connection cap
    counts a user's connections on every process; docs/scaling.md: the rate limit
    is per process, so a user spread over two processes gets its burst twice."""
    from tests.support.redis_server import need_redis, unique_prefix
    from wschat.backplane.redis import RedisBackplane

    url, prefix = need_redis(), unique_prefix()

    def manager() -> ConnectionManager:
        return ConnectionManager(
            backplane=RedisBackplane(url, prefix=prefix), max_connections_per_user=2
        )

    options: dict[str, Any] = {"rate_limit": 0.01, "rate_burst": 2}
    with (
        chat_server("asgi", manager(), **options) as one,
        chat_server("asgi", manager(), **options) as two,
    ):
        async with AsyncExitStack() as stack:
            sockets = []
            for chat in (one, two):
                ws = await stack.enter_async_context(
                    client(chat.url("room1", token("mallory")))
                )
                await next_frame(ws, "ready")
                sockets.append(ws)
            async with client(two.url("room1", token("mallory"))) as third:
                refused = await closed(third)
            assert (refused.code, refused.reason.split(":")[0]) == (
                4429,
                "too_many_connections",
            )
            # Two frames on each process: each process's bucket gives its burst.
            for ws in sockets[:2]:
                for _ in range(2):
                    await ws.send('{"type": "ping"}')
                await pongs(ws, 2)
            await sockets[1].send('{"type": "ping"}')
            result = await closed(sockets[1])
            assert (result.code, result.reason.split(":")[0]) == (4429, "rate_limited")
