"""The Redis backplane against a real Redis: conformance, naming, and faults.

The shared Redis (127.0.0.1:6379) serves the conformance and naming tests; the fault
tests start a private ``redis-server`` on a free port, kill it during traffic and
start it again on the same port.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from redis import asyncio as aioredis
from redis.asyncio.client import PubSub

from tests.support.cluster import ROOM, WAIT, Client, cluster, join
from tests.support.redis_server import RedisServer, need_redis, unique_prefix
from wschat import ConnectionManager
from wschat.backplane.redis import POOL_SIZE, RedisBackplane
from wschat.errors import ConfigurationError
from wschat.ids import ChatId
from wschat.status import status_payload
from wschat.testing import check_backplane

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def fast(url: str, prefix: str) -> RedisBackplane:
    """A backplane that notices and recovers from outages quickly."""
    return RedisBackplane(
        url, prefix=prefix, reconnect_min=0.05, reconnect_max=0.3, op_timeout=0.5
    )


async def test_conformance_redis() -> None:
    url, prefix = need_redis(), unique_prefix()
    await check_backplane(lambda: RedisBackplane(url, prefix=prefix))


async def test_a_client_of_your_own_must_not_decode_responses() -> None:
    url, prefix = need_redis(), unique_prefix()
    client = aioredis.Redis.from_url(url, decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisBackplane(client)
    await client.aclose()
    client = aioredis.Redis.from_url(url)
    try:
        await check_backplane(lambda: RedisBackplane(client, prefix=prefix))
        assert await client.ping()  # not closed by the backplane: it is yours
    finally:
        await client.aclose()


async def test_channels_are_room_ids_under_the_fixed_prefix_only() -> None:
    url, prefix = need_redis(), unique_prefix()
    watcher = aioredis.Redis.from_url(url)
    try:
        async with cluster(RedisBackplane(url, prefix=prefix)) as (tg, (a,)):
            alice = join(tg, a, "alice", ChatId("team.a:1"))
            await alice.ready()
            channels = await watcher.pubsub_channels(prefix + "*")
            assert sorted(channels) == [
                f"{prefix}r:team.a:1".encode(),
                f"{prefix}u".encode(),
            ]
            assert await watcher.pubsub_numpat() == 0, "never PSUBSCRIBE"
            keys = await watcher.keys(prefix + "*")
            assert keys == [f"{prefix}p:team.a:1".encode()]
    finally:
        await watcher.aclose()
    with pytest.raises(ConfigurationError, match="glob"):
        RedisBackplane(url, prefix="chat*")


async def test_presence_leases_carry_a_ttl_and_stop_is_clean() -> None:
    url, prefix = need_redis(), unique_prefix()
    watcher = aioredis.Redis.from_url(url)
    try:
        async with cluster(RedisBackplane(url, prefix=prefix), presence_ttl=5) as (
            tg,
            (a,),
        ):
            alice = join(tg, a, "alice")
            await alice.ready()
            await alice.sink.next_of("presence")
            ttl_ms = await watcher.pttl(f"{prefix}p:{ROOM}")
            assert 0 < ttl_ms <= 15_000
        # A clean stop gives up its leases at once.
        assert await watcher.exists(f"{prefix}p:{ROOM}") == 0
    finally:
        await watcher.aclose()


async def test_more_calls_at_once_than_the_pool_holds_wait_for_a_connection() -> None:
    """A join storm asks Redis for more connections at once than the pool keeps.

    redis-py's default pool fails the call past its size (MaxConnectionsError):
    presence and per-user slots then failed and members missed joins. The pool of
    a backplane built from a URL makes such calls wait for a connection instead.
    """
    url, prefix = need_redis(), unique_prefix()
    backplane = RedisBackplane(url, prefix=prefix)
    users = [f"u{i:03d}" for i in range(3 * POOL_SIZE)]
    async with cluster(backplane):  # runs it (and closes its client at the end)
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for user in users:
                    tg.start_soon(backplane.presence_join, "storm", user, "n1", 1)
        assert sorted(await backplane.presence_members("storm")) == users
    assert POOL_SIZE == 64


async def wait_health(manager: ConnectionManager, healthy: bool) -> dict[str, Any]:
    """Poll the health (it has no event to wait on), bounded by WAIT."""
    with anyio.fail_after(WAIT):
        while manager.backplane_health()["healthy"] is not healthy:  # noqa: ASYNC110
            await anyio.sleep(0.02)
    return manager.backplane_health()


async def test_redis_restart_during_traffic(own_redis: RedisServer) -> None:
    prefix = unique_prefix()
    backplanes = fast(own_redis.url, prefix), fast(own_redis.url, prefix)
    async with cluster(*backplanes) as (tg, (a, b)):
        alice, carol = join(tg, a, "alice"), join(tg, a, "carol")
        bob = join(tg, b, "bob")
        for client in (alice, carol, bob):
            await client.ready()
        sent: list[int] = []

        async def talk(count: int) -> None:
            for _ in range(count):
                sent.append(len(sent))
                alice.say(sent[-1])
                await anyio.sleep(0.002)

        await talk(20)
        # Before the outage nothing is lost: bob hears all of it, in order, before
        # Redis dies (a's publisher may still hold the last ones when talk returns;
        # killing Redis then would lose them, rightly reported to alice).
        assert await bodies(bob, 20) == sent
        own_redis.kill()
        health = await wait_health(a, False)
        assert "redis unreachable" in health["detail"]
        assert status_payload(a)["status"] == "degraded"
        await talk(20)
        error = await alice.sink.next_of("error")
        assert error["code"] == "delivery_degraded"
        own_redis.start()
        for client in (alice, carol, bob):
            resync = await client.sink.next_of("resync")
            assert resync["chat_id"] == ROOM
        await wait_health(a, True)
        await wait_health(b, True)
        await talk(20)
        # Local members got everything, in order; bob got a subset, in order, once.
        for client in (alice, carol):
            assert await bodies(client, len(sent)) == sent
        got = [f["body"] for f in bob.sink.seen if f["type"] == "message"]
        with anyio.fail_after(WAIT):
            while not got or got[-1] != sent[-1]:
                frame = await bob.sink.next()
                if frame["type"] == "message":
                    got.append(frame["body"])
        assert got == sorted(set(got)), "bob got duplicates or a broken order"
        assert set(range(40, 60)) <= set(got), "after the resync nothing is lost"
        assert a.backplane_health()["reconnects"] >= 1
        # Presence is rebuilt in the restarted (empty) Redis by the resync.
        with anyio.fail_after(WAIT):
            while await a.room_members(ROOM) != ["alice", "bob", "carol"]:  # noqa: ASYNC110
                await anyio.sleep(0.05)


async def bodies(client: Client, count: int) -> list[Any]:
    out = [f["body"] for f in client.sink.seen if f["type"] == "message"]
    while len(out) < count:
        out.append((await client.sink.next_of("message"))["body"])
    return out


#: How late the listener gets each PING's answer in the test below.
LATE_PONG = 0.3


class LatePongPubSub(PubSub):
    """Hands over each PING's answer a moment after it arrived.

    As a loaded machine does when the answer comes in a later TCP segment than
    the subscription confirmations Redis sent before it.
    """

    async def get_message(self, *args: Any, **kwargs: Any) -> Any:
        message = await super().get_message(*args, **kwargs)
        if message is not None and message["type"] == "pong":
            await anyio.sleep(LATE_PONG)
        return message


class LatePongRedis(aioredis.Redis):
    def pubsub(self, **kwargs: Any) -> PubSub:
        return LatePongPubSub(self.connection_pool, **kwargs)


async def test_presence_is_back_in_a_restarted_redis_at_the_resync(
    own_redis: RedisServer,
) -> None:
    """A reconnect's resync re-creates the leases at once, not at the next renewal.

    The resync comes with each room's subscription confirmation, before the answer
    to the PING that follows them; the manager re-creates its leases right then.
    Presence calls were refused until that answer was read, so in a restarted
    (empty) Redis the leases were missing until the next renewal (``ttl / 3``).
    """
    client = LatePongRedis.from_url(own_redis.url)
    backplane = RedisBackplane(
        client,
        prefix=unique_prefix(),
        reconnect_min=0.05,
        reconnect_max=0.3,
        ping_interval=60.0,  # the PING of each connection's setup only
    )
    try:
        async with cluster(backplane, presence_ttl=300) as (tg, (a,)):
            alice = join(tg, a, "alice")
            await alice.ready()
            assert await a.room_members(ROOM) == ["alice"]
            own_redis.kill()
            await wait_health(a, False)
            own_redis.start()
            assert (await alice.sink.next_of("resync"))["chat_id"] == ROOM
            await wait_health(a, True)
            with anyio.fail_after(WAIT):
                while await a.room_members(ROOM) != ["alice"]:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
    finally:
        await client.aclose()


async def test_unreachable_at_start_then_comes_up() -> None:
    server = RedisServer()  # a free port, nothing listening yet
    manager = ConnectionManager(backplane=fast(server.url, unique_prefix()))
    try:
        with anyio.fail_after(WAIT):
            async with manager:
                health = manager.backplane_health()
                assert health["healthy"] is False
                async with anyio.create_task_group() as tg:
                    alice = join(tg, manager, "alice")
                    await alice.ready()  # not blocked by the outage
                    server.start()
                    await wait_health(manager, True)
                    assert (await alice.sink.next_of("resync"))["chat_id"] == ROOM
                    tg.cancel_scope.cancel()
    finally:
        server.kill()


async def test_repeated_outages_do_not_leak_connections(
    own_redis: RedisServer,
) -> None:
    prefix = unique_prefix()
    async with cluster(fast(own_redis.url, prefix)) as (tg, (a,)):
        alice = join(tg, a, "alice")
        await alice.ready()
        for _ in range(3):
            own_redis.kill()
            await wait_health(a, False)
            alice.say("x")
            own_redis.start()
            await wait_health(a, True)
            await alice.sink.next_of("resync")
        probe = aioredis.Redis.from_url(own_redis.url)
        try:
            clients = await probe.client_list()
        finally:
            await probe.aclose()
        # The listener, at most a couple of pooled command connections, the probe.
        assert len(clients) <= 4, clients


@pytest.mark.e2e
@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
def test_the_documented_lifespan_line_runs_the_backplane(framework: str) -> None:
    import httpx
    from fastapi import FastAPI
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from tests.support.common import SECRET, serve
    from wschat import TokenVerifier
    from wschat.fastapi import chat_router
    from wschat.starlette import chat_routes

    manager = ConnectionManager(
        backplane=RedisBackplane(need_redis(), prefix=unique_prefix())
    )
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    app: Any
    if framework == "fastapi":
        app = FastAPI(lifespan=manager.lifespan)
        app.include_router(chat_router(manager, verifier), prefix="/ws")
    else:
        routes = [Mount("/ws", routes=chat_routes(manager, verifier))]
        app = Starlette(routes=routes, lifespan=manager.lifespan)
    with serve(app) as server:
        status = httpx.get(f"{server.http}/ws/status", timeout=5).json()
    assert status["status"] == "ok"
    assert status["backplane"]["name"] == "redis"
    assert status["backplane"]["healthy"] is True
    assert manager.backplane_health()["healthy"] is False  # stopped with the app
