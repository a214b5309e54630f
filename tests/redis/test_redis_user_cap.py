"""The per-user connection cap across two real processes on one Redis.

Two ``uvicorn benchmarks/redis_app`` servers share the shared Redis (a unique key
prefix each test); a user's ``max_connections_per_user`` counts the sockets on both.
``kill -9`` of one process frees its slots ``presence_ttl`` seconds later.
"""

from __future__ import annotations

import contextlib
import signal
import time

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.redis_processes import SECRET, WAIT, Server, opened
from wschat.testing import mint_token

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.e2e]


async def refused(server: Server, user: str) -> tuple[int, str] | None:
    """Connect; the close code and reason if refused, None if a ready frame came."""
    url = f"ws://127.0.0.1:{server.port}/ws/chat/cap?token={mint_token(SECRET, user)}"
    async with connect(url) as ws:
        with anyio.fail_after(WAIT):
            try:
                await ws.recv()
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
            else:
                return None
    assert rcvd is not None
    return rcvd.code, rcvd.reason


@pytest.mark.parametrize("servers", [{"max_per_user": 3}], indirect=True)
async def test_the_cap_holds_across_two_processes(servers: list[Server]) -> None:
    a, b = servers
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(opened(a, "alice", "cap"))
        await stack.enter_async_context(opened(a, "alice", "cap"))
        await stack.enter_async_context(opened(b, "alice", "cap"))
        # The fourth, on either process, is over the cap of 3.
        for server in (b, a):
            assert await refused(server, "alice") == (
                4429,
                "too_many_connections: at most 3 connections per user, "
                "across all servers",
            )
        # Another user is not affected.
        assert await refused(b, "bob") is None
        # One socket closes on a: b takes a new one (once a freed the slot).
        await first.ws.close()
        deadline = time.monotonic() + WAIT
        while (answer := await refused(b, "alice")) is not None:
            assert time.monotonic() < deadline, answer
            await anyio.sleep(0.05)


@pytest.mark.parametrize("servers", [{"max_per_user": 2, "ttl": 1.5}], indirect=True)
async def test_a_killed_processs_slots_are_freed_after_the_ttl(
    servers: list[Server],
) -> None:
    a, b = servers
    async with opened(b, "alice", "cap") as one, opened(b, "alice", "cap") as two:
        assert await refused(a, "alice") is not None
        b.kill(signal.SIGKILL)
        killed = time.monotonic()
        for tab in (one, two):
            with contextlib.suppress(ConnectionClosed):
                await tab.ws.close()
    # Refused until the dead process's slots expire (1.5 s), then let in.
    while (answer := await refused(a, "alice")) is not None:
        assert answer[0] == 4429
        assert time.monotonic() - killed < 1.5 + WAIT, "slots never expired"
        await anyio.sleep(0.1)
    assert time.monotonic() - killed >= 1.0, "freed before the ttl"
