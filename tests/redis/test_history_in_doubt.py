"""A clustered manager whose RedisHistoryStore does not answer an append in time.

Two managers ("processes") share a RedisBackplane and a RedisHistoryStore on a
``redis-server`` of the test's own, which the test pauses (SIGSTOP) so that an append
Redis received is not answered within ``op_timeout``. The store then raises
``AppendInDoubt`` (a ``PublishInDoubt``); the manager waits at most
``IN_DOUBT_WAIT`` seconds for the answer:

- stored in time: published as if Redis had answered at once (every member gets it
  once, the sender no error, ``on_published`` sees its offset);
- not stored (Redis died with it): ``NotSent``, nobody got it;
- no answer in time: ``DeliveryInDoubt`` (``delivery_degraded`` with the id); if
  Redis stores it later, it also publishes it, and every member (both processes)
  gets it from the subscription, in offset order.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from anyio.abc import TaskGroup

from tests.support.cluster import ROOM, Sink, ready_frame
from tests.support.redis_server import RedisServer, unique_prefix
from wschat import ConnectionManager
from wschat.auth import Principal
from wschat.backplane.redis import RedisBackplane
from wschat.connection import Connection
from wschat.errors import DeliveryInDoubt, NotSent
from wschat.history.redis import RedisHistoryStore
from wschat.ids import UserId

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

OP_TIMEOUT = 0.3
WAIT = 10.0


class Member:
    def __init__(self, manager: ConnectionManager, conn: Connection) -> None:
        self.manager = manager
        self.conn = conn
        self.sink = Sink()

    async def offsets(self, count: int) -> list[int]:
        """The offsets of the next ``count`` message frames (skipping others)."""
        got: list[int] = []
        with anyio.fail_after(WAIT):
            while len(got) < count:
                frame = await self.sink.next()
                if frame["type"] == "message":
                    got.append(frame["offset"])
        return got


async def member(tg: TaskGroup, manager: ConnectionManager, user: str) -> Member:
    conn = manager.connect(
        Principal(UserId(user)), ROOM, first_frame=ready_frame(manager)
    )
    joined = Member(manager, conn)
    tg.start_soon(conn.run_writer, joined.sink)
    await manager.recover(conn)
    with anyio.fail_after(WAIT):
        ready = await joined.sink.next()
    assert ready["type"] == "ready", ready
    return joined


@asynccontextmanager
async def two_processes(
    redis: RedisServer,
) -> AsyncIterator[tuple[TaskGroup, Member, Member]]:
    prefix = unique_prefix()
    async with AsyncExitStack() as stack:
        managers = []
        for _ in range(2):
            store = RedisHistoryStore(redis.url, prefix=prefix, op_timeout=OP_TIMEOUT)
            await stack.enter_async_context(store)
            manager = ConnectionManager(
                backplane=RedisBackplane(redis.url, prefix=prefix), history=store
            )
            await stack.enter_async_context(manager)
            managers.append(manager)
        tg = await stack.enter_async_context(anyio.create_task_group())
        a = await member(tg, managers[0], "alice")
        b = await member(tg, managers[1], "bob")
        # Both subscribed: a first message reaches both, offset 1.
        await a.manager.publish(a.conn, "first")
        assert await a.offsets(1) == [1]
        assert await b.offsets(1) == [1]
        yield tg, a, b
        tg.cancel_scope.cancel()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_append_answered_within_the_wait_is_published_as_usual(
    own_redis: RedisServer,
) -> None:
    async with two_processes(own_redis) as (tg, a, b):
        own_redis.pause()

        async def resume_later() -> None:
            await anyio.sleep(1.5)  # > op_timeout, < IN_DOUBT_WAIT (5 s)
            own_redis.resume()

        tg.start_soon(resume_later)
        with anyio.fail_after(WAIT):
            published = await a.manager.publish(a.conn, "in doubt")
        assert published.offset == 2
        assert await a.offsets(1) == [2], "the sender's process delivers it once"
        assert await b.offsets(1) == [2], "the store published it to the other"
        errors = [f for f in a.sink.seen if f["type"] == "error"]
        assert errors == [], "no not_sent: it was sent"
        # And the numbering goes on.
        await b.manager.publish(b.conn, "after")
        assert await a.offsets(1) == [3]
        assert await b.offsets(1) == [3]


async def test_an_append_redis_died_with_is_not_sent(own_redis: RedisServer) -> None:
    async with two_processes(own_redis) as (tg, a, b):
        own_redis.pause()

        async def die_later() -> None:
            await anyio.sleep(1.0)
            assert own_redis.proc is not None
            own_redis.proc.send_signal(signal.SIGKILL)  # stopped: never runs it

        tg.start_soon(die_later)
        with anyio.fail_after(WAIT), pytest.raises(NotSent):
            await a.manager.publish(a.conn, "lost")
        await anyio.sleep(0.5)
        assert not [f for f in a.sink.pending() if f["type"] == "message"]
        assert not [f for f in b.sink.pending() if f["type"] == "message"]


async def test_no_answer_within_the_wait_is_delivery_in_doubt(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wschat.scrollback.IN_DOUBT_WAIT", 1.0)
    async with two_processes(own_redis) as (_tg, a, b):
        own_redis.pause()
        try:
            with anyio.fail_after(WAIT), pytest.raises(DeliveryInDoubt) as doubt:
                await a.manager.publish(a.conn, "maybe")
            assert doubt.value.code == "delivery_degraded"
            assert doubt.value.message_id.startswith("m")
        finally:
            own_redis.resume()
        # Redis ran the script once resumed: stored and published with no origin,
        # so both processes deliver it from their subscription, in offset order.
        assert await b.offsets(1) == [2]
        assert await a.offsets(1) == [2]
        await b.manager.publish(b.conn, "after")
        assert await a.offsets(1) == [3]
        assert await b.offsets(1) == [3]


async def test_a_store_that_does_not_publish_stored_late_resyncs_the_members(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One process, no shared backplane: the manager appends and delivers itself,
    # so a message stored after the wait reached nobody live.
    monkeypatch.setattr("wschat.scrollback.IN_DOUBT_WAIT", 1.0)
    store = RedisHistoryStore(own_redis.url, prefix=unique_prefix(), op_timeout=0.3)
    manager = ConnectionManager(history=store)
    async with store, manager, anyio.create_task_group() as tg:
        a = await member(tg, manager, "alice")
        b = await member(tg, manager, "bob")
        await manager.publish(a.conn, "first")
        assert await b.offsets(1) == [1]
        own_redis.pause()
        try:
            with anyio.fail_after(WAIT), pytest.raises(DeliveryInDoubt):
                await manager.publish(a.conn, "maybe")
        finally:
            own_redis.resume()
        with anyio.fail_after(WAIT):
            resync = await b.sink.next_of("resync")
        assert resync["chat_id"] == ROOM
        assert "load history" in resync["message"]
        page = await store.read_after(ROOM, 1, 10)
        assert [entry.offset for entry in page.messages] == [2], "it was stored"
        assert not [f for f in b.sink.pending() if f["type"] == "message"]
        tg.cancel_scope.cancel()
