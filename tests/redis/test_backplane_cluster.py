"""Two managers sharing a backplane: the in-memory hub (asyncio, trio) and Redis.

Every test here runs three times: on a :class:`MemoryHub` under asyncio and trio, and
on a real Redis (asyncio; RedisBackplane refuses trio). Each manager is one
"process"; the e2e tests in ``test_redis_e2e.py`` repeat the key ones with real
processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from tests.support.cluster import ROOM, WAIT, cluster, join
from tests.support.redis_server import need_redis, unique_prefix
from wschat.backplane import Backplane, MemoryBackplane, MemoryHub
from wschat.errors import Forbidden
from wschat.ids import ChatId, UserId

pytestmark = pytest.mark.anyio

Pair = Callable[[], tuple[Backplane, Backplane]]
SETUPS = [
    pytest.param(("memory", "asyncio"), id="memory-asyncio"),
    pytest.param(("memory", "trio"), id="memory-trio"),
    pytest.param(("redis", "asyncio"), id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=SETUPS)
def setup(request: pytest.FixtureRequest) -> tuple[str, str]:
    value: tuple[str, str] = request.param
    return value


@pytest.fixture
def anyio_backend(setup: tuple[str, str]) -> str:
    return setup[1]


@pytest.fixture
def pair(setup: tuple[str, str]) -> Pair:
    """Builds two backplanes on one engine (call it inside the event loop)."""
    if setup[0] == "memory":
        hub = MemoryHub()
        return lambda: (MemoryBackplane(hub), MemoryBackplane(hub))
    from wschat.backplane.redis import RedisBackplane

    url, prefix = need_redis(), unique_prefix()
    return lambda: (
        RedisBackplane(url, prefix=prefix),
        RedisBackplane(url, prefix=prefix),
    )


async def test_broadcast_crosses_nodes_once_and_in_order(pair: Pair) -> None:
    async with cluster(*pair()) as (tg, (a, b)):
        alice, carol = join(tg, a, "alice"), join(tg, a, "carol")
        bob = join(tg, b, "bob")
        for client in (alice, carol, bob):
            await client.ready()
        for n in range(100):
            alice.say(n)
        bob.say("last")
        for client in (alice, carol, bob):
            bodies: list[Any] = []
            while len(bodies) < 101:
                frame = await client.sink.next_of("message")
                bodies.append(frame["body"])
            assert [x for x in bodies if x != "last"] == list(range(100))
            assert bodies.count("last") == 1
            assert not [f for f in client.sink.pending() if f["type"] == "message"]
        assert a.stats().messages == 100
        # Server-side broadcasts cross too.
        b.broadcast_nowait(ROOM, '{"type":"message","body":"from-server"}')
        assert (await carol.sink.next_of("message"))["body"] == "from-server"


async def test_presence_is_announced_once_per_user_across_nodes(pair: Pair) -> None:
    async with cluster(*pair()) as (tg, (a, b)):
        bob = join(tg, a, "bob")
        await bob.ready()
        assert (await bob.sink.next_of("presence"))["joins"] == ["bob"]  # own join
        alice1 = join(tg, a, "alice")
        await alice1.ready()
        joined = await bob.sink.next_of("presence")
        assert (joined["joins"], joined["leaves"], joined["count"]) == (
            ["alice"],
            [],
            2,
        )
        alice2 = join(tg, b, "alice")  # second tab, other process
        ready = await alice2.ready()
        assert sorted(ready["members"]) == ["alice", "bob"]
        dave = join(tg, b, "dave")
        await dave.ready()
        joined = await bob.sink.next_of("presence")
        assert (joined["joins"], joined["count"]) == (["dave"], 3), joined
        # The second tab got no join of its own (docs/protocol.md): its first
        # presence frame is dave's, whose join was handled after its own.
        joined = await alice2.sink.next_of("presence")
        assert (joined["joins"], joined["leaves"]) == (["dave"], []), joined
        assert a.user_count(ROOM) == b.user_count(ROOM) == 3
        assert await a.room_members(ROOM) == ["alice", "bob", "dave"]
        alice1.leave()  # alice is still on node b: no leave
        dave.leave()
        left = await bob.sink.next_of("presence")
        assert (left["leaves"], left["count"]) == (["dave"], 2)
        alice2.leave()
        left = await bob.sink.next_of("presence")
        assert (left["leaves"], left["count"]) == (["alice"], 1)
        about_alice = [
            f
            for f in bob.sink.seen
            if "alice" in f.get("joins", []) + f.get("leaves", [])
        ]
        assert len(about_alice) == 2  # one join, one leave
        assert await b.room_members(ROOM) == ["bob"]


async def test_send_to_user_close_user_and_close_room_cross_nodes(pair: Pair) -> None:
    async with cluster(*pair()) as (tg, (a, b)):
        tabs = [join(tg, a, "alice"), join(tg, b, "alice", ChatId("other"))]
        bob = join(tg, b, "bob")
        for client in (*tabs, bob):
            await client.ready()
        assert a.send_to_user(UserId("alice"), '{"type":"message","body":"dm"}') == 1
        for tab in tabs:
            assert (await tab.sink.next_of("message"))["body"] == "dm"
        assert b.close_user(UserId("alice"), Forbidden("kicked")) == 1
        with anyio.fail_after(WAIT):
            while tabs[0].conn.closing is None:
                await anyio.lowlevel.checkpoint()
        for tab in tabs:
            assert tab.conn.closing is not None
            assert tab.conn.closing.reason == "forbidden: kicked"
        assert bob.conn.closing is None
        # Closing a room reaches its members in every process.
        a.close_room(ROOM)
        with anyio.fail_after(WAIT):
            while bob.conn.closing is None:
                await anyio.lowlevel.checkpoint()
        assert bob.conn.closing.reason == "forbidden: this chat was closed"


async def test_two_hundred_simultaneous_first_joins_are_all_subscribed(
    pair: Pair,
) -> None:
    async with cluster(*pair()) as (tg, (a, b)):
        room = ChatId("fresh")
        clients = [join(tg, a, f"user{i}", room) for i in range(200)]
        for client in clients:
            await client.ready()
        sender = join(tg, b, "sender", room)
        await sender.ready()
        sender.say("hello all")
        for client in clients:
            assert (await client.sink.next_of("message"))["body"] == "hello all"


async def test_last_leave_unsubscribes_and_rejoin_resubscribes(pair: Pair) -> None:
    backplanes = pair()
    async with cluster(*backplanes) as (tg, (a, b)):
        alice = join(tg, a, "alice")
        await alice.ready()
        assert backplanes[0].health().channels == 2  # the room and the users channel
        alice.leave()
        bob = join(tg, b, "bob")
        await bob.ready()
        with anyio.fail_after(WAIT):
            while backplanes[0].health().channels != 1:
                await anyio.lowlevel.checkpoint()
        again = join(tg, a, "alice")
        await again.ready()
        bob.say("back")
        assert (await again.sink.next_of("message"))["body"] == "back"
