"""RedisHistoryStore when its Redis restarts, dies or hangs.

Each test runs its own ``redis-server`` (no persistence) on a free loopback port,
never the shared one: a restart loses every key, so the epoch must change; a dead
Redis gives a clear error at once; a hung one (SIGSTOP) gives an error within
``op_timeout``, never a hang, and an append it received is settled once it runs.
"""

from __future__ import annotations

import time

import anyio
import pytest

from tests.support.redis_server import RedisServer
from wschat.errors import BackplaneUnavailable, PublishInDoubt
from wschat.history import HistoryStoreUnavailable
from wschat.history.redis import RedisHistoryStore
from wschat.history.template import FrameTemplate, encode_message_template

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

OP_TIMEOUT = 0.3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def template(n: int) -> FrameTemplate:
    return encode_message_template(
        id=f"m{n}", chat_id="lobby", user="u", body=n, ts=0, client_id=None
    )


async def test_a_restart_of_redis_starts_a_new_epoch(own_redis: RedisServer) -> None:
    async with RedisHistoryStore(own_redis.url, op_timeout=OP_TIMEOUT) as store:
        for n in range(1, 4):
            before = await store.append("lobby", template(n))
        assert before.offset == 3
        # Another process (a second store) sees the same epoch: it lives in Redis.
        async with RedisHistoryStore(own_redis.url) as other:
            assert await other.position("lobby") == (before.epoch, 3)
        own_redis.kill()
        own_redis.start()
        # The first call may meet the dead pooled connection; it says so clearly.
        try:
            position = await store.position("lobby")
        except HistoryStoreUnavailable:
            position = await store.position("lobby")
        assert position.epoch != before.epoch, "Redis lost the room: a new epoch"
        assert position.offset == 0
        page = await store.read_after("lobby", 3, 10)
        assert not page.complete_after(3), "a client at offset 3 must reload"
        stored = await store.append("lobby", template(4))
        assert (stored.offset, stored.epoch) == (1, position.epoch)
        assert store.health().healthy


async def test_a_dead_redis_is_a_clear_error_and_health_says_so(
    own_redis: RedisServer,
) -> None:
    async with RedisHistoryStore(own_redis.url, op_timeout=OP_TIMEOUT) as store:
        await store.append("lobby", template(1))
        own_redis.kill()
        start = time.monotonic()
        with pytest.raises(
            HistoryStoreUnavailable, match="redis unreachable"
        ) as caught:
            await store.append("lobby", template(2))
        assert isinstance(caught.value, BackplaneUnavailable), "delivery_degraded"
        assert caught.value.code == "delivery_degraded"
        with pytest.raises(HistoryStoreUnavailable, match="redis unreachable"):
            await store.read_after("lobby", 0, 10)
        with pytest.raises(HistoryStoreUnavailable):
            await store.retain(["lobby"])
        assert time.monotonic() - start < 5 * OP_TIMEOUT
        health = store.health()
        assert not health.healthy
        assert "redis unreachable" in health.detail
        assert "127.0.0.1" not in health.detail, "never a URL"
        own_redis.start()
        assert (await store.append("lobby", template(3))).offset == 1
        assert store.health() == store.health().__class__("redis", True)


async def test_a_hung_redis_is_an_error_within_op_timeout_never_a_hang(
    own_redis: RedisServer,
) -> None:
    async with RedisHistoryStore(own_redis.url, op_timeout=OP_TIMEOUT) as store:
        first = await store.append_and_publish("lobby", template(1))
        own_redis.pause()
        try:
            start = time.monotonic()
            with pytest.raises(PublishInDoubt, match="did not answer") as doubt:
                await store.append_and_publish("lobby", template(2))
            assert time.monotonic() - start < OP_TIMEOUT + 1.0
            assert doubt.value.code == "delivery_degraded"
            # Nothing overtakes the unanswered append: the next fails at once.
            start = time.monotonic()
            with pytest.raises(HistoryStoreUnavailable, match="still unanswered"):
                await store.append("lobby", template(3))
            assert time.monotonic() - start < 0.1
            with pytest.raises(HistoryStoreUnavailable, match="did not answer a read"):
                await store.read_after("lobby", 0, 10)
            assert time.monotonic() - start < OP_TIMEOUT + 1.0
            health = store.health()
            assert not health.healthy
            assert "did not answer" in health.detail
        finally:
            own_redis.resume()
        # Redis runs what it received: the append was stored (and published).
        with anyio.fail_after(10):
            assert await doubt.value.outcome() is True
        page = await store.read_after("lobby", 0, 10)
        assert [e.offset for e in page.messages] == [1, 2]
        assert page.epoch == first.epoch
        assert store.health().healthy
        assert (await store.append("lobby", template(4))).offset == 3


async def test_an_append_in_flight_when_redis_dies_is_settled_and_the_store_recovers(
    own_redis: RedisServer,
) -> None:
    async with RedisHistoryStore(own_redis.url, op_timeout=OP_TIMEOUT) as store:
        await store.append("lobby", template(1))
        own_redis.pause()
        with pytest.raises(PublishInDoubt) as doubt:
            await store.append("lobby", template(2))
        # kill() resumes the server for an instant first, so it may run the
        # append or not: either way the caller is told, within a bound.
        own_redis.kill()
        with anyio.fail_after(10):
            assert await doubt.value.outcome() in (True, False)
        assert "still unanswered" not in store.health().detail
        own_redis.start()
        with anyio.fail_after(10):
            while True:
                try:
                    position = await store.position("lobby")
                    break
                except HistoryStoreUnavailable:
                    await anyio.sleep(0.05)
        assert position.offset == 0, "a restarted Redis: a new, empty epoch"
        assert (await store.append("lobby", template(3))).offset == 1
        assert store.health().healthy
