"""RedisHistoryStore sends the appends queued meanwhile in one pipeline.

Appends made while a batch is out go to Redis together, as one pipeline of
``EVALSHA`` calls on one connection, in the order they were made: Redis runs them in
that order, so a room's offsets follow the order of the calls. One deadline covers
the batch: if Redis does not answer it in time, every message in it is in doubt and
each one settles from the batch's late answer; appends queued behind it are not sent
(none overtakes it). A batch that meets a Redis which does not know the script
(restarted, ``SCRIPT FLUSH``) loads it and runs those appends once.

Each test runs its own ``redis-server`` (paused, flushed, counted), never the
shared one.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import anyio
import pytest
from redis import asyncio as aioredis

from tests.support.redis_server import RedisServer
from wschat.errors import PublishInDoubt
from wschat.history import AppendInDoubt, HistoryStoreUnavailable, Stored
from wschat.history.redis import RedisHistoryStore
from wschat.history.template import FrameTemplate, encode_message_template

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

OP_TIMEOUT = 0.3
WAIT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def raw(own_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


def template(room: str, sender: str, n: int) -> FrameTemplate:
    return encode_message_template(
        id=f"{sender}-{n}",
        chat_id=room,
        user=sender,
        body={"s": sender, "n": n},
        ts=0,
        client_id=None,
    )


def body(frame: str) -> Any:
    return json.loads(frame)["body"]


async def connections_received(raw: aioredis.Redis) -> int:
    stats: Any = await raw.info("stats")
    return int(stats["total_connections_received"])


async def all_at_once(calls: list[Awaitable[Stored]]) -> list[Stored | BaseException]:
    """Start every call in the same round of the event loop; their outcomes."""
    outcomes: list[Stored | BaseException] = [RuntimeError("not run")] * len(calls)

    async def one(index: int, call: Awaitable[Stored]) -> None:
        try:
            outcomes[index] = await call
        except Exception as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(one, index, call)
    return outcomes


async def test_concurrent_appends_share_one_connection_and_keep_the_call_order(
    own_redis: RedisServer, raw: aioredis.Redis
) -> None:
    rooms, senders, rounds = ["a", "b", "c"], ["s1", "s2", "s3", "s4"], 25
    async with RedisHistoryStore(own_redis.url, op_timeout=WAIT) as store:
        await store.append("a", template("a", "warm", 0))  # the script is loaded
        before = await connections_received(raw)
        calls: list[tuple[str, str, int]] = []
        got: list[Stored | BaseException] = []
        for n in range(rounds):
            # One message per sender and room, all made at once, then the next.
            round_calls = [(r, s, n) for r in rooms for s in senders]
            calls += round_calls
            got += await all_at_once(
                [
                    store.append_and_publish(r, template(r, s, n))
                    for r, s, n in round_calls
                ]
            )
        opened = await connections_received(raw) - before
        assert opened <= 1, (
            f"{len(calls)} appends, {len(rooms) * len(senders)} at a time, opened "
            f"{opened} connections: batches share one"
        )
        for room in rooms:
            stored = [
                (call, outcome)
                for call, outcome in zip(calls, got, strict=True)
                if call[0] == room
            ]
            offsets = [outcome.offset for _, outcome in stored]  # type: ignore[union-attr]
            assert offsets == list(
                range(2 if room == "a" else 1, len(stored) + (2 if room == "a" else 1))
            ), "consecutive offsets, in the order of the calls"
            for (_, sender, n), outcome in stored:
                assert isinstance(outcome, Stored)
                assert body(outcome.frame) == {"s": sender, "n": n}
            page = await store.read_after(room, 0, 1000)
            kept = [(e.offset, body(e.frame)) for e in page.messages]
            assert kept[-len(stored) :] == [
                (o.offset, {"s": s, "n": n})  # type: ignore[union-attr]
                for (_, s, n), o in stored
            ], "each message kept once, at the offset its caller was given"


async def test_a_late_batch_puts_every_message_in_doubt_and_each_settles(
    own_redis: RedisServer,
) -> None:
    async with RedisHistoryStore(own_redis.url, op_timeout=OP_TIMEOUT) as store:
        for room in ("a", "b"):
            await store.append(room, template(room, "warm", 0))
        own_redis.pause()
        try:
            batch = [("a", "s1", 1), ("b", "s1", 1), ("a", "s2", 1), ("a", "s3", 1)]
            got = await all_at_once(
                [store.append_and_publish(r, template(r, s, n)) for r, s, n in batch]
            )
            assert all(isinstance(outcome, AppendInDoubt) for outcome in got), got
            assert not store.health().healthy
        finally:
            own_redis.resume()
        with anyio.fail_after(WAIT):
            settled = [await doubt.stored() for doubt in got]  # type: ignore[union-attr]
            outcomes = [await doubt.outcome() for doubt in got]  # type: ignore[union-attr]
        assert outcomes == [True] * len(batch)
        assert [(s.offset, body(s.frame)) for s in settled if s is not None] == [
            (2, {"s": "s1", "n": 1}),
            (2, {"s": "s1", "n": 1}),
            (3, {"s": "s2", "n": 1}),
            (4, {"s": "s3", "n": 1}),
        ], "each message settles with its own offset and frame, in call order"
        page = await store.read_after("a", 1, 10)
        assert [(e.offset, body(e.frame)) for e in page.messages] == [
            (2, {"s": "s1", "n": 1}),
            (3, {"s": "s2", "n": 1}),
            (4, {"s": "s3", "n": 1}),
        ]
        assert store.health().healthy
        assert (await store.append("b", template("b", "s1", 2))).offset == 3


async def test_appends_queued_behind_a_late_batch_are_not_sent(
    own_redis: RedisServer,
) -> None:
    async with RedisHistoryStore(own_redis.url, op_timeout=OP_TIMEOUT) as store:
        await store.append("a", template("a", "warm", 0))
        own_redis.pause()
        outcomes: dict[str, Stored | BaseException] = {}

        async def append(name: str) -> None:
            try:
                outcomes[name] = await store.append("a", template("a", name, 1))
            except Exception as exc:
                outcomes[name] = exc

        start = time.monotonic()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(append, "first")
                # Made while the first is out: queued for the next batch.
                await anyio.sleep(OP_TIMEOUT / 3)
                tg.start_soon(append, "second")
        finally:
            own_redis.resume()
        assert time.monotonic() - start < OP_TIMEOUT + 1.0, "told at the deadline"
        assert isinstance(outcomes["first"], AppendInDoubt)
        second = outcomes["second"]
        assert isinstance(second, HistoryStoreUnavailable)
        assert not isinstance(second, PublishInDoubt), "never sent: not in doubt"
        assert "still unanswered" in second.detail
        with anyio.fail_after(WAIT):
            assert await outcomes["first"].outcome() is True
        page = await store.read_after("a", 0, 10)
        assert [body(e.frame)["s"] for e in page.messages] == ["warm", "first"]


async def test_a_batch_redis_has_no_script_for_is_loaded_and_run_once(
    own_redis: RedisServer, raw: aioredis.Redis
) -> None:
    async with RedisHistoryStore(own_redis.url, op_timeout=WAIT) as store:
        await store.append("a", template("a", "warm", 0))
        await raw.script_flush()  # as after a restart: Redis forgot the script
        batch = [("a", "s1", 1), ("b", "s1", 1), ("a", "s2", 1), ("a", "s1", 2)]
        got = await all_at_once(
            [store.append_and_publish(r, template(r, s, n)) for r, s, n in batch]
        )
        assert [(s.offset, body(s.frame)) for s in got] == [  # type: ignore[union-attr]
            (2, {"s": "s1", "n": 1}),
            (1, {"s": "s1", "n": 1}),
            (3, {"s": "s2", "n": 1}),
            (4, {"s": "s1", "n": 2}),
        ]
        page = await store.read_after("a", 0, 10)
        assert [e.offset for e in page.messages] == [1, 2, 3, 4], "each stored once"
        assert store.health().healthy


async def test_a_cancelled_caller_leaves_the_others_of_its_batch_answered(
    own_redis: RedisServer,
) -> None:
    async with RedisHistoryStore(own_redis.url, op_timeout=WAIT) as store:
        await store.append("a", template("a", "warm", 0))
        own_redis.pause()
        got: dict[str, Stored] = {}

        async def append(name: str) -> None:
            got[name] = await store.append("a", template("a", name, 1))

        try:
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as leaving:
                    tg.start_soon(append, "stays")
                    async with anyio.create_task_group() as inner:
                        inner.start_soon(append, "leaves")
                        await anyio.sleep(0.1)  # both sent, in one batch
                        leaving.cancel()  # the app stops one caller
                own_redis.resume()
        finally:
            own_redis.resume()
        assert list(got) == ["stays"]
        assert got["stays"].offset in (2, 3), "answered, whatever the other did"
        # Nobody waits for a batch any more: cancelled, and the store goes on.
        own_redis.pause()
        try:
            with anyio.move_on_after(0.1):
                await store.append("a", template("a", "alone", 1))
        finally:
            own_redis.resume()
        with anyio.fail_after(WAIT):
            after = await store.append("a", template("a", "after", 1))
        page = await store.read_after("a", 0, 10)
        assert page.latest == after.offset
        assert store.health().healthy


async def test_submitted_appends_keep_the_order_of_the_submits(
    own_redis: RedisServer,
) -> None:
    # submit_and_publish queues at the call: offsets follow the submits, whatever
    # order the answers are awaited in; a cancelled one not sent yet is never sent.
    async with RedisHistoryStore(own_redis.url, op_timeout=WAIT) as store:
        await store.append("a", template("a", "warm", 0))
        own_redis.pause()
        try:
            first = [
                store.submit_and_publish("a", template("a", "s", n)) for n in range(3)
            ]
            await anyio.sleep(0.1)  # the first batch is out, unanswered
            behind = [
                store.submit_and_publish("a", template("a", "s", n))
                for n in range(3, 6)
            ]
            behind[1].cancel()  # nobody will read it: not sent
        finally:
            own_redis.resume()
        with anyio.fail_after(WAIT):
            got = [await p.result() for p in reversed(first + behind[::2])]
        got.reverse()
        assert [s.offset for s in got] == [2, 3, 4, 5, 6]
        assert [body(s.frame)["n"] for s in got] == [0, 1, 2, 3, 5]
        page = await store.read_after("a", 1, 10)
        assert [body(e.frame)["n"] for e in page.messages] == [0, 1, 2, 3, 5]
