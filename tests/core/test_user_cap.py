"""The per-user connection cap across processes, on the in-memory hub.

Two managers on one :class:`MemoryHub` behave like two processes on one Redis: a
user's ``max_connections_per_user`` counts connections in both. Runs on asyncio and
trio. The same through real processes on Redis: tests/redis/test_redis_user_cap.py.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
import pytest

from wschat import ConnectionManager
from wschat.auth import Principal
from wschat.backplane import MemoryBackplane, MemoryHub
from wschat.errors import TooManyConnections
from wschat.ids import ChatId, UserId

pytestmark = pytest.mark.anyio

ALICE = Principal(UserId("alice"))
ROOM = ChatId("lobby")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def two(
    hub: MemoryHub, cap: int = 2, ttl: float = 30.0
) -> AsyncIterator[tuple[ConnectionManager, ConnectionManager]]:
    one = ConnectionManager(
        backplane=MemoryBackplane(hub), max_connections_per_user=cap, presence_ttl=ttl
    )
    other = ConnectionManager(
        backplane=MemoryBackplane(hub), max_connections_per_user=cap, presence_ttl=ttl
    )
    async with one, other:
        yield one, other


async def open_one(manager: ConnectionManager) -> object:
    slot = await manager.reserve(ALICE.user_id)
    return manager.connect(ALICE, ROOM, slot=slot)


async def settle(hub: MemoryHub, user: str, count: int) -> None:
    with anyio.fail_after(5):
        while hub.user_slot_count(user) != count:  # noqa: ASYNC110 (polls the hub)
            await anyio.sleep(0.01)


async def test_the_cap_counts_connections_in_every_process() -> None:
    hub = MemoryHub()
    async with two(hub, cap=2) as (one, other):
        first = await open_one(one)
        await open_one(other)
        assert hub.user_slot_count("alice") == 2
        with pytest.raises(TooManyConnections) as refused:
            await other.reserve(ALICE.user_id)
        assert refused.value.reason == (
            "too_many_connections: at most 2 connections per user, across all servers"
        )
        with pytest.raises(TooManyConnections):
            await one.reserve(ALICE.user_id)
        # A connection that ends frees its slot everywhere.
        one.disconnect(first)  # type: ignore[arg-type]
        await settle(hub, "alice", 1)
        await open_one(other)
        assert len(other.user_connections(ALICE.user_id)) == 2


async def test_a_stopped_process_frees_its_slots() -> None:
    hub = MemoryHub()
    async with two(hub, cap=1) as (one, other):
        async with ConnectionManager(
            backplane=MemoryBackplane(hub), max_connections_per_user=1
        ) as third:
            await open_one(third)
            with pytest.raises(TooManyConnections):
                await one.reserve(ALICE.user_id)
        assert hub.user_slot_count("alice") == 0
        await open_one(other)


async def test_a_dead_processs_slots_expire_after_the_ttl() -> None:
    clock = Clock()
    hub = MemoryHub(clock)
    async with two(hub, cap=1, ttl=30.0) as (one, _):
        dead = MemoryBackplane(hub)
        # A process that took a slot and died: nothing renews it.
        assert await dead.user_slot_acquire("alice", "dead/1", 1, 30.0)
        with pytest.raises(TooManyConnections):
            await one.reserve(ALICE.user_id)
        clock.now += 29.9
        with pytest.raises(TooManyConnections):
            await one.reserve(ALICE.user_id)
        clock.now += 0.2
        assert await one.reserve(ALICE.user_id) is not None


async def test_live_slots_are_renewed_by_the_heartbeat() -> None:
    clock = Clock()
    hub = MemoryHub(clock)
    async with two(hub, cap=1, ttl=0.3) as (one, other):
        await open_one(one)
        for _ in range(5):
            clock.now += 0.2  # past the ttl twice over, but renewed every 0.1 s
            await anyio.sleep(0.15)
            with pytest.raises(TooManyConnections):
                await other.reserve(ALICE.user_id)


async def test_the_cap_is_per_process_while_the_backplane_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = MemoryHub()
    async with two(hub, cap=1) as (one, other):
        hub.set_down(True)
        with caplog.at_level(logging.WARNING, "wschat"):
            assert await one.reserve(ALICE.user_id) is None
            one.connect(ALICE, ROOM)
            assert await other.reserve(ALICE.user_id) is None
            assert await other.reserve(ALICE.user_id) is None
        # One warning per process and outage, not one per connection.
        warned = [r for r in caplog.records if "counted per process" in r.message]
        assert len(warned) == 2
        # Still the cap in this one process.
        with pytest.raises(
            TooManyConnections, match=r"at most 1 connections per user$"
        ):
            await one.reserve(ALICE.user_id)
        hub.set_down(False)


async def test_one_process_and_no_cap_take_no_slot() -> None:
    alone = ConnectionManager(max_connections_per_user=1)
    assert await alone.reserve(ALICE.user_id) is None
    alone.connect(ALICE, ROOM)
    with pytest.raises(TooManyConnections):
        await alone.reserve(ALICE.user_id)
    hub = MemoryHub()
    async with ConnectionManager(
        backplane=MemoryBackplane(hub), max_connections_per_user=None
    ) as free:
        assert await free.reserve(ALICE.user_id) is None
    assert hub.user_slot_count("alice") == 0
