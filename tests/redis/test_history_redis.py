"""RedisHistoryStore against the shared Redis at 127.0.0.1:6379.

Every test uses a key prefix of its own and deletes its keys after. The store's
promises: the conformance suite; the key layout and what happens when Redis loses a
key; the publish of :meth:`RedisHistoryStore.append_and_publish` as the backplane's
subscribers read it; and the offset order equal to the publish order under
concurrent appenders in two "processes" (two stores, two clients).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import pytest
from redis import asyncio as aioredis

from tests.support.redis_server import need_redis, unique_prefix
from wschat.backplane.envelope import room_of
from wschat.backplane.redis import RedisBackplane
from wschat.errors import ConfigurationError
from wschat.history import HistoryStore, HistoryStoreUnavailable
from wschat.history.redis import DEFAULT_OP_TIMEOUT, RedisHistoryStore
from wschat.history.template import FrameTemplate, encode_message_template
from wschat.testing import check_history_store

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def anyio_backend() -> str:
    """RedisHistoryStore runs on asyncio only (redis.asyncio)."""
    return "asyncio"


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
async def raw(prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the shared Redis; deletes the test's keys after."""
    client = aioredis.Redis.from_url(need_redis())
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def make(
    raw: aioredis.Redis, prefix: str
) -> AsyncIterator[Callable[..., RedisHistoryStore]]:
    """Makes stores under the test's prefix and closes them after."""
    stores: list[RedisHistoryStore] = []

    def factory(**options: Any) -> RedisHistoryStore:
        store = RedisHistoryStore(need_redis(), prefix=prefix, **options)
        stores.append(store)
        return store

    try:
        yield factory
    finally:
        for store in stores:
            await store.aclose()


def template(room: str, n: int, body: object = None) -> FrameTemplate:
    return encode_message_template(
        id=f"m{n}",
        chat_id=room,
        user="u",
        body={"n": n} if body is None else body,
        ts=0,
        client_id=None,
    )


async def test_conformance(make: Callable[..., RedisHistoryStore]) -> None:
    ran = await check_history_store(make, trimmed=make)
    assert ran[-1] == "trimming"
    assert len(ran) == 8


async def test_defaults_are_the_memory_stores(
    make: Callable[..., RedisHistoryStore],
) -> None:
    store = make()
    assert isinstance(store, HistoryStore)
    assert (store.max_messages, store.ttl, store.op_timeout) == (100, 300.0, 1.0)
    assert DEFAULT_OP_TIMEOUT == 1.0
    assert store.name == "redis"
    assert RedisHistoryStore(need_redis()).prefix == "wschat:", "the backplane's"
    health = store.health()
    assert (health.name, health.healthy, health.detail) == ("redis", True, "")
    assert (health.rooms, health.entries, health.memory_bytes) == (None, None, 0)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"prefix": "a*b"}, "prefix must be 1-64"),
        ({"prefix": ""}, "prefix must be 1-64"),
        ({"max_messages": 0}, "max_messages"),
        ({"max_messages": 1.5}, "max_messages"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": float("nan")}, "ttl"),
        ({"op_timeout": 0.001}, "op_timeout"),
        ({"op_timeout": 61}, "op_timeout"),
    ],
)
async def test_bad_options_say_which(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        RedisHistoryStore("redis://127.0.0.1:6379/0", **options)


async def test_a_client_of_your_own_must_not_decode_responses() -> None:
    client = aioredis.Redis(decode_responses=True)
    try:
        with pytest.raises(ConfigurationError, match="decode_responses=False"):
            RedisHistoryStore(client)
    finally:
        await client.aclose()


async def test_keys_are_one_hash_and_one_stream_per_room_with_an_expiry(
    make: Callable[..., RedisHistoryStore], raw: aioredis.Redis, prefix: str
) -> None:
    store = make(ttl=60)
    stored = await store.append("lobby", template("lobby", 1))
    meta, stream = f"{prefix}h:{{lobby}}:m", f"{prefix}h:{{lobby}}:s"
    assert sorted([k async for k in raw.scan_iter(match=prefix + "*")]) == sorted(
        [meta.encode(), stream.encode()]
    )
    assert await raw.hgetall(meta) == {b"e": stored.epoch.encode(), b"n": b"1"}
    entries: Any = await raw.xrange(stream)
    assert [(i, f[b"f"].decode()) for i, f in entries] == [(b"1-0", stored.frame)]
    for key in (meta, stream):
        assert 59_000 < await raw.pttl(key) <= 60_000
    # A call about the room renews both expiries.
    await raw.pexpire(meta, 5000)
    await raw.pexpire(stream, 5000)
    await store.read_after("lobby", 0, 10)
    assert await raw.pttl(meta) > 59_000
    assert await raw.pttl(stream) > 59_000
    await raw.pexpire(meta, 5000)
    await store.retain(["lobby", "nobody"])
    assert await raw.pttl(meta) > 59_000
    assert await raw.exists(f"{prefix}h:{{nobody}}:m") == 0, "retain creates nothing"


async def test_a_room_whose_hash_is_lost_starts_a_new_epoch_from_1(
    make: Callable[..., RedisHistoryStore], raw: aioredis.Redis, prefix: str
) -> None:
    store = make()
    for n in range(1, 4):
        old = await store.append("lobby", template("lobby", n))
    await raw.delete(f"{prefix}h:{{lobby}}:m")  # evicted, expired or lost
    position = await store.position("lobby")
    assert position.epoch != old.epoch
    assert position.offset == 0
    page = await store.read_after("lobby", 0, 10)
    assert page.messages == (), "the old numbering's messages are gone with it"
    stored = await store.append("lobby", template("lobby", 9))
    assert (stored.offset, stored.epoch) == (1, position.epoch)


async def test_a_room_whose_stream_is_lost_keeps_its_numbering(
    make: Callable[..., RedisHistoryStore], raw: aioredis.Redis, prefix: str
) -> None:
    store = make()
    for n in range(1, 4):
        old = await store.append("lobby", template("lobby", n))
    await raw.delete(f"{prefix}h:{{lobby}}:s")  # like every message trimmed
    page = await store.read_after("lobby", 1, 10)
    assert (page.epoch, page.latest, page.first, page.messages) == (
        old.epoch,
        3,
        4,
        (),
    )
    assert not page.complete_after(1), "a client that saw 1 must reload"
    assert page.complete_after(3)
    assert (await store.append("lobby", template("lobby", 4))).offset == 4


async def test_approximate_trimming_keeps_a_few_more_but_shows_the_newest_n(
    make: Callable[..., RedisHistoryStore], raw: aioredis.Redis, prefix: str
) -> None:
    store = make(max_messages=5)
    for n in range(1, 301):
        await store.append("lobby", template("lobby", n))
    kept = await raw.xlen(f"{prefix}h:{{lobby}}:s")
    # MAXLEN ~ drops whole stream nodes (stream-node-max-entries, 100 by default).
    assert 5 <= kept <= 5 + 100, kept
    page = await store.read_after("lobby", 0, 1000)
    assert [e.offset for e in page.messages] == [296, 297, 298, 299, 300]
    assert page.first == 296
    page = await store.read_before("lobby", None, 1000)
    assert [e.offset for e in page.messages] == [296, 297, 298, 299, 300]
    assert not page.more_before
    page = await store.read_before("lobby", 200, 1000)
    assert page.messages == (), "nothing below the newest 5 is shown"


class Heard:
    """A backplane receiver: what arrived, in order."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self._want = 0
        self._enough = anyio.Event()

    def deliver(self, channel: str, data: bytes) -> None:
        self.got.append((channel, data))
        if len(self.got) >= self._want:
            self._enough.set()

    async def wait_for(self, count: int, within: float) -> None:
        self._want, self._enough = count, anyio.Event()
        if len(self.got) < count:
            with anyio.fail_after(within):
                await self._enough.wait()

    def resync(self, channels: Sequence[str]) -> None:
        pass


async def test_append_and_publish_speaks_the_backplanes_envelope(
    make: Callable[..., RedisHistoryStore], prefix: str
) -> None:
    store = make()
    backplane, heard = RedisBackplane(need_redis(), prefix=prefix), Heard()
    async with anyio.create_task_group() as tg:
        await tg.start(backplane.run, heard)
        await backplane.subscribe("r:lobby")
        first = await store.append_and_publish("lobby", template("lobby", 1))
        second = await store.append_and_publish(
            "lobby", template("lobby", 2), prefix=b"m|node-a.1|"
        )
        plain = await store.append("lobby", template("lobby", 3))
        await heard.wait_for(2, within=5)
        await anyio.sleep(0.05)  # would let a third (unwanted) publish arrive
        tg.cancel_scope.cancel()
    assert heard.got == [
        ("r:lobby", b"m||" + first.frame.encode()),
        ("r:lobby", b"m|node-a.1|" + second.frame.encode()),
    ], "append() alone publishes nothing"
    assert room_of(heard.got[0][0]) == "lobby"
    assert plain.offset == 3
    assert json.loads(first.frame)["offset"] == 1


async def test_a_bad_envelope_head_or_channel_is_refused(
    make: Callable[..., RedisHistoryStore],
) -> None:
    store = make()
    for head in (b"m|a|b|", b"m|" + b"x" * 65 + b"|", "m|é|".encode(), b"p|n|", b"m|n"):
        with pytest.raises(ValueError, match="prefix must be a message envelope head"):
            await store.append_and_publish("lobby", template("lobby", 1), prefix=head)
    with pytest.raises(ValueError, match="channel must be a room's"):
        await store.append_and_publish("lobby", template("lobby", 1), "u")
    assert (await store.position("lobby")).offset == 0, "nothing was stored"


async def test_offset_order_is_publish_order_under_concurrent_appenders(
    make: Callable[..., RedisHistoryStore], raw: aioredis.Redis, prefix: str
) -> None:
    # Two stores with their own clients stand for two processes.
    stores = [make(), make()]
    backplane, heard = RedisBackplane(need_redis(), prefix=prefix), Heard()
    each = 300
    returned: dict[tuple[int, int], list[int]] = {}

    async def appender(index: int, task: int) -> None:
        mine = returned[index, task] = []
        store = stores[index]
        for n in range(each):
            body = {"w": index, "n": n}
            stored = await store.append_and_publish(
                "busy", template("busy", n, body), prefix=f"m|node{index}|".encode()
            )
            mine.append(stored.offset)

    async with anyio.create_task_group() as tg:
        await tg.start(backplane.run, heard)
        await backplane.subscribe("r:busy")
        async with anyio.create_task_group() as writers:
            for index in (0, 1):
                for task in range(4):  # several tasks per process, too
                    writers.start_soon(appender, index, task)
        await heard.wait_for(8 * each, within=10)
        tg.cancel_scope.cancel()
    total = 8 * each
    published = [json.loads(data.split(b"|", 2)[2])["offset"] for _, data in heard.got]
    assert published == list(range(1, total + 1)), (
        "the subscriber hears offsets 1, 2, 3, ... in that order"
    )
    for mine in returned.values():
        assert mine == sorted(mine), "one task's appends get rising offsets"
    assert sorted(o for mine in returned.values() for o in mine) == published
    stream: Any = await raw.xrange(f"{prefix}h:{{busy}}:s")
    ids = [int(i.split(b"-")[0]) for i, _ in stream]
    assert ids == list(range(total - len(ids) + 1, total + 1)), "stream in order"
    for (_, data), (_, fields) in zip(heard.got[-len(ids) :], stream, strict=True):
        assert data.split(b"|", 2)[2] == fields[b"f"], "published = stored, bytes"


async def test_a_redis_that_refuses_a_call_is_a_clear_error(
    make: Callable[..., RedisHistoryStore], raw: aioredis.Redis, prefix: str
) -> None:
    store = make()
    await raw.set(f"{prefix}h:{{lobby}}:m", "not a hash")
    with pytest.raises(HistoryStoreUnavailable, match="Redis refused an append"):
        await store.append("lobby", template("lobby", 1))
    assert not store.health().healthy
    assert "refused" in store.health().detail
    with pytest.raises(HistoryStoreUnavailable, match="Redis refused a read"):
        await store.read_after("lobby", 0, 10)
    # Other rooms work, and health recovers with the next good call.
    assert (await store.append("dev", template("dev", 1))).offset == 1
    assert store.health().healthy


async def test_huge_numbers_are_clamped_not_sent_to_lua_as_is(
    make: Callable[..., RedisHistoryStore],
) -> None:
    store = make()
    for n in range(1, 4):
        await store.append("lobby", template("lobby", n))
    page = await store.read_after("lobby", 2**80, 2**80)
    assert page.messages == ()
    assert page.latest == 3
    page = await store.read_before("lobby", 2**80, 2**80)
    assert [e.offset for e in page.messages] == [1, 2, 3]
