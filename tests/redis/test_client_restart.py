"""wschat.client through a real server restart, recovering what it missed.

The in-memory history goes with the process that held it (tests/e2e/test_client.py
shows ``recovered=False`` after a restart there), so a restart that keeps history
needs a store outside the process: here ``benchmarks/redis_app.py`` on a
``RedisBackplane`` and a ``RedisHistoryStore`` (``WSCHAT_HISTORY=redis``), stopped
with SIGTERM (uvicorn's graceful shutdown) and started again on the same port with
the same Redis and prefix. The room's epoch and offsets live in Redis, so the client
resumes with ``since``/``epoch`` from the new process and gets every message sent
while it was away, in order, before anything live. docs/clients.md ("Resume and
history") promises both halves: recovered on Redis, a new epoch in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio
import pytest

from tests.support.client import next_event
from tests.support.common import free_port
from tests.support.redis_processes import SECRET, WAIT, Server, opened
from tests.support.redis_server import need_redis, unique_prefix
from wschat.client import Disconnected, Message, Ready, Reconnected, connect
from wschat.testing import mint_token

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.e2e]

ROOM = "restart"


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def env() -> dict[str, str]:
    return {
        "WSCHAT_REDIS_URL": need_redis(),
        "WSCHAT_PREFIX": unique_prefix(),
        "WSCHAT_SECRET": SECRET,
        "WSCHAT_HISTORY": "redis",
    }


async def test_a_restart_on_redis_history_recovers_the_missed_messages(
    env: dict[str, str],
) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws/chat/{ROOM}"
    gap = anyio.Event()

    async def sleep(seconds: float) -> None:
        await gap.wait()  # no reconnect until the room has talked without us

    with running(Server(env, port=port)) as first:
        chat = connect(url, token=mint_token(SECRET, "alice"), sleep=sleep)
        async with chat:
            ready = await next_event(chat, Ready, WAIT)
            assert isinstance(ready.epoch, str)
            assert ready.offset == 0
            await chat.send("before")
            assert (await next_event(chat, Message, WAIT)).offset == 1
            await anyio.to_thread.run_sync(first.stop)
            gone = await next_event(chat, Disconnected, WAIT)
            assert gone.code in (1012, 1006)  # uvicorn's shutdown close, or none
            assert not chat.connected
            with running(Server(env, port=port)) as second:
                async with opened(second, "bob", ROOM) as bob:
                    assert bob.ready["epoch"] == ready.epoch, "the epoch is Redis's"
                    for n in range(3):
                        await bob.say(f"missed {n}")
                    assert await bob.messages(3) == [f"missed {n}" for n in range(3)]
                    gap.set()
                    back = await next_event(chat, Reconnected, WAIT)
                    assert back.recovered is True
                    assert back.ready.epoch == ready.epoch
                    replayed = [await next_event(chat, Message, WAIT) for _ in range(3)]
                    assert [(m.body, m.offset) for m in replayed] == [
                        ("missed 0", 2),
                        ("missed 1", 3),
                        ("missed 2", 4),
                    ]
                    await bob.say("live")
                    live = await next_event(chat, Message, WAIT)
                    assert (live.body, live.offset) == ("live", 5)
                    assert chat.position == (ready.epoch, 5)


async def test_without_the_redis_store_the_same_restart_is_not_recovered(
    env: dict[str, str],
) -> None:
    """The control: the same restart on the in-memory store says ``recovered=False``
    (a new epoch), so the test above does not pass by accident."""
    env = {**env, "WSCHAT_BACKPLANE": "memory"}
    del env["WSCHAT_HISTORY"]
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws/chat/{ROOM}"
    gap = anyio.Event()

    async def sleep(seconds: float) -> None:
        await gap.wait()

    with running(Server(env, port=port)) as first:
        chat = connect(url, token=mint_token(SECRET, "alice"), sleep=sleep)
        async with chat:
            ready = await next_event(chat, Ready, WAIT)
            await chat.send("before")
            await next_event(chat, Message, WAIT)
            await anyio.to_thread.run_sync(first.stop)
            await next_event(chat, Disconnected, WAIT)
            with running(Server(env, port=port)):
                gap.set()
                back = await next_event(chat, Reconnected, WAIT)
                assert back.recovered is False
                assert back.ready.epoch != ready.epoch
                assert chat.position == (back.ready.epoch, 0)
