"""Real processes on one Redis: two uvicorn servers, and ``uvicorn --workers 2``.

Clients are real ``websockets`` clients spread over the processes. Every client gets
every message exactly once and in each sender's order; a kick on one process closes
the user's sockets on both; presence is announced once per user; ``kill -9`` of one
process leaves the other serving while its presence entries expire.
"""

from __future__ import annotations

import contextlib
import signal

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.redis_processes import (
    SECRET,
    Client,
    Server,
    assert_exactly_once_in_order,
    close_code,
    opened,
    wait_until,
)
from tests.support.redis_server import RedisServer, unique_prefix

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.e2e]


async def test_two_processes_share_rooms_exactly_once(servers: list[Server]) -> None:
    a, b = servers
    room, users, per_sender = "lobby", [f"u{i}" for i in range(20)], 10
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(opened((a, b)[i % 2], user, room))
            for i, user in enumerate(users)
        ]
        assert len({c.node for c in clients}) == 2
        for n in range(per_sender):
            for user, client in zip(users, clients, strict=True):
                await client.say({"from": user, "n": n})
        for client in clients:
            bodies = await client.messages(len(users) * per_sender)
            assert_exactly_once_in_order(bodies, users, per_sender)
        # Presence and counts are global: both processes list all 20 users.
        await wait_until(lambda: a.members(room) == sorted(users), "members on a")
        assert b.members(room) == sorted(users)
        for client in clients:
            extra = [f for f in client.frames if f["type"] == "message"]
            assert len(extra) == len(users) * per_sender
        assert a.status()["backplane"]["healthy"] is True


async def test_presence_once_per_user_and_kick_everywhere(
    servers: list[Server],
) -> None:
    a, b = servers
    room = "presence"
    async with opened(b, "watcher", room) as watcher:
        # Its own join is announced once its presence lease is in Redis.
        await watcher.until("presence", joins=["watcher"])
        async with opened(a, "multi", room) as tab1:
            await watcher.until("presence", joins=["multi"])
            async with opened(b, "multi", room) as tab2:
                assert "multi" in tab2.ready["members"]
                assert "watcher" in tab2.ready["members"]
        await watcher.until("presence", leaves=["multi"])
        about = [
            ("join" if "multi" in f["joins"] else "leave")
            for f in watcher.frames
            if f["type"] == "presence" and "multi" in f["joins"] + f["leaves"]
        ]
        assert about == ["join", "leave"], watcher.frames
        assert sorted(tab1.ready["members"]) == ["multi", "watcher"]
        # Kick: one admin call on a closes the user's sockets on both processes.
        async with opened(a, "victim", room) as v1, opened(b, "victim", room) as v2:
            assert v1.node != v2.node
            a.kick("victim")
            for tab in (v1, v2):
                assert await close_code(tab) == 4403
        left = await watcher.until("presence", leaves=["victim"])
        assert left["count"] == 1


@pytest.mark.parametrize("servers", [{"ttl": 1.5}], indirect=True)
async def test_kill_9_leaves_the_other_serving_and_presence_expires(
    servers: list[Server],
) -> None:
    a, b = servers
    room = "survive"
    async with opened(a, "alice", room) as alice:
        async with opened(b, "bob", room) as bob:
            await alice.until("presence", joins=["bob"])
            await wait_until(lambda: a.members(room) == ["alice", "bob"], "both")
            b.kill(signal.SIGKILL)
            with contextlib.suppress(ConnectionClosed):
                await bob.ws.close()
        await alice.say({"from": "alice", "n": 0})
        assert (await alice.until("message"))["body"] == {"from": "alice", "n": 0}
        left = await alice.until("presence", leaves=["bob"])
        assert left["count"] == 1
        assert a.members(room) == ["alice"]
        assert a.status()["status"] == "ok"


@pytest.mark.parametrize("servers", [{"workers": [2]}], indirect=True)
async def test_uvicorn_workers_2_share_rooms(servers: list[Server]) -> None:
    (server,) = servers
    room = "workers"
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []
        for i in range(60):
            clients.append(
                await stack.enter_async_context(opened(server, f"w{i}", room))
            )
            if i >= 9 and len({c.node for c in clients}) == 2:
                break
        nodes = {c.node for c in clients}
        assert len(nodes) == 2, "the kernel gave every connection to one worker"
        users = [str(c.ready["user"]) for c in clients]
        for n in range(5):
            for user, client in zip(users, clients, strict=True):
                await client.say({"from": user, "n": n})
        for client in clients:
            bodies = await client.messages(len(users) * 5)
            assert_exactly_once_in_order(bodies, users, 5)


async def test_redis_restart_under_real_processes(own_redis: RedisServer) -> None:
    env = {
        "WSCHAT_REDIS_URL": own_redis.url,
        "WSCHAT_PREFIX": unique_prefix(),
        "WSCHAT_SECRET": SECRET,
    }
    a, b = Server(env), Server(env)
    room = "outage"
    try:
        a.start()
        b.start()
        async with (
            opened(a, "alice", room) as alice,
            opened(a, "carol", room) as carol,
            opened(b, "bob", room) as bob,
        ):
            await alice.until("presence", joins=["bob"])
            own_redis.kill()
            await wait_until(lambda: a.status()["status"] == "degraded", "degraded")
            status = a.status()["backplane"]
            assert status["healthy"] is False
            assert "redis" in status["detail"]
            await alice.say({"from": "alice", "n": 0})
            assert (await carol.until("message"))["body"]["n"] == 0
            assert (await alice.until("error"))["code"] == "delivery_degraded"
            own_redis.start()
            for client in (alice, carol, bob):
                assert (await client.until("resync"))["chat_id"] == room
            await wait_until(lambda: b.status()["status"] == "ok", "b recovered")
            await alice.say({"from": "alice", "n": 1})
            assert (await bob.until("message"))["body"]["n"] == 1
            missed = {"from": "alice", "n": 0}
            assert not [f for f in bob.frames if f.get("body") == missed]
            expected = ["alice", "bob", "carol"]
            await wait_until(lambda: a.members(room) == expected, "presence rebuilt")
            assert a.status()["backplane"]["reconnects"] >= 1
    finally:
        a.stop()
        b.stop()


async def test_two_hundred_simultaneous_joins_of_a_new_room(
    servers: list[Server],
) -> None:
    """encode/broadcaster 0.3.1 loses every subscriber of a process in this case."""
    a, b = servers
    room = "stampede"
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []

        async def join_one(i: int) -> None:
            clients.append(await stack.enter_async_context(opened(a, f"s{i}", room)))

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(join_one, i)
        async with opened(b, "sender", room) as sender:
            await sender.say({"from": "sender", "n": 0})
            for client in clients:
                frame = await client.until("message")
                assert frame["body"] == {"from": "sender", "n": 0}
