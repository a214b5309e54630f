"""History across real processes: two uvicorn servers share a RedisBackplane and a
RedisHistoryStore (``benchmarks/redis_app.py`` with ``WSCHAT_HISTORY=redis``).

- offsets are the same on both processes and go up by one, whoever sends;
- a client moves from process A to process B and recovers with ``since``/``epoch``
  exactly what it missed (0 lost, 0 duplicated, in order) while another keeps
  sending;
- a restart of Redis (a private ``redis-server`` without persistence) gives a new
  epoch, and a client reconnecting with the old one gets ``recovered: false``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.redis_processes import (
    SECRET,
    WAIT,
    Client,
    Server,
    assert_exactly_once_in_order,
    wait_until,
)
from tests.support.redis_server import RedisServer, unique_prefix
from wschat.testing import mint_token

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

HISTORY = {"history": "redis"}
ROOM = "lobby"


@contextlib.asynccontextmanager
async def joined(
    server: Server, user: str, since: int | None = None, epoch: str | None = None
) -> AsyncIterator[Client]:
    url = f"ws://127.0.0.1:{server.port}/ws/chat/{ROOM}?token="
    url += mint_token(SECRET, user)
    if since is not None:
        url += f"&since={since}&epoch={epoch}"
    async with connect(url, max_queue=None) as ws:
        with anyio.fail_after(WAIT):
            ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        yield Client(ws, ready)


async def messages(client: Client, count: int) -> list[dict[str, Any]]:
    """The client's message frames until it has ``count`` of them."""
    with anyio.fail_after(WAIT):
        while sum(f["type"] == "message" for f in client.frames) < count:
            await client.next()
    return [f for f in client.frames if f["type"] == "message"]


def consecutive(frames: list[dict[str, Any]], after: int) -> list[int]:
    offsets = [f["offset"] for f in frames]
    assert offsets == list(range(after + 1, after + 1 + len(offsets))), offsets
    return offsets


@pytest.mark.parametrize("servers", [HISTORY], indirect=True)
async def test_offsets_are_the_same_on_both_processes_and_go_up_by_one(
    servers: list[Server],
) -> None:
    a_server, b_server = servers
    n = 40
    async with joined(a_server, "alice") as alice, joined(b_server, "bob") as bob:
        assert alice.node != bob.node, "two processes"
        assert alice.ready["epoch"] == bob.ready["epoch"]
        start = alice.ready["offset"]
        assert start == bob.ready["offset"] == 0

        async def talk(client: Client, name: str) -> None:
            for i in range(n):
                await client.say({"from": name, "n": i})
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(talk, alice, "alice")
            tg.start_soon(talk, bob, "bob")
        got_a = await messages(alice, 2 * n)
        got_b = await messages(bob, 2 * n)
        consecutive(got_a, start)
        consecutive(got_b, start)
        # The same message under the same offset on both processes.
        assert [(f["offset"], f["id"]) for f in got_a] == [
            (f["offset"], f["id"]) for f in got_b
        ]
        assert {f["epoch"] for f in [alice.ready, bob.ready]} == {alice.ready["epoch"]}
        for got in (got_a, got_b):
            assert_exactly_once_in_order([f["body"] for f in got], ["alice", "bob"], n)
        # A history page asked of either process is the same.
        for client in (alice, bob):
            await client.ws.send(json.dumps({"type": "history", "limit": 5}))
        pages = [await client.until("history") for client in (alice, bob)]
        assert pages[0]["messages"] == pages[1]["messages"]
        assert [m["offset"] for m in pages[0]["messages"]] == list(
            range(2 * n - 4, 2 * n + 1)
        )
        assert pages[0]["latest"] == 2 * n


@pytest.mark.parametrize("servers", [HISTORY], indirect=True)
async def test_a_client_moving_from_a_to_b_recovers_what_it_missed(
    servers: list[Server],
) -> None:
    a_server, b_server = servers
    n = 120
    async with joined(a_server, "sender") as sender:
        sent = anyio.Event()
        halfway = anyio.Event()

        async def keep_sending() -> None:
            for i in range(n):
                await sender.say({"from": "sender", "n": i})
                if i == 20:
                    halfway.set()
                await anyio.sleep(0.01)
            sent.set()

        bodies: list[dict[str, Any]] = []
        offsets: list[int] = []
        async with anyio.create_task_group() as tg:
            async with joined(a_server, "mover") as mover:
                epoch = mover.ready["epoch"]
                last = mover.ready["offset"]
                tg.start_soon(keep_sending)
                with anyio.fail_after(WAIT):
                    await halfway.wait()
                    while len(offsets) < 10:
                        frame = await mover.next()
                        if frame["type"] == "message":
                            bodies.append(frame["body"])
                            offsets.append(frame["offset"])
            # Gone from A while the sender keeps sending; back on B.
            await anyio.sleep(0.2)
            async with joined(b_server, "mover", offsets[-1], epoch) as moved:
                assert moved.node != mover.node, "another process"
                assert moved.ready["recovered"] is True, moved.ready
                assert moved.ready["epoch"] == epoch
                with anyio.fail_after(WAIT):
                    await sent.wait()
                got = await messages(moved, n - len(bodies))
        bodies += [f["body"] for f in got]
        offsets += [f["offset"] for f in got]
        assert offsets == list(range(last + 1, last + 1 + n)), "no gap, no dupe"
        assert_exactly_once_in_order(bodies, ["sender"], n)
        # The replay came right after ready, before anything live.
        first = [f["type"] for f in moved.frames[:1]]
        assert first == ["message"]


@pytest.fixture
def own_servers(own_redis: RedisServer) -> Iterator[list[Server]]:
    """Two servers with Redis history on a private redis-server."""
    env = {
        "WSCHAT_REDIS_URL": own_redis.url,
        "WSCHAT_PREFIX": unique_prefix(),
        "WSCHAT_SECRET": SECRET,
        "WSCHAT_HISTORY": "redis",
    }
    started = [Server(env), Server(env)]
    try:
        for server in started:
            server.start()
        yield started
    finally:
        for server in started:
            server.stop()


async def test_a_redis_restart_gives_a_new_epoch_and_recovered_false(
    own_redis: RedisServer, own_servers: list[Server]
) -> None:
    a_server, b_server = own_servers
    async with joined(a_server, "alice") as alice:
        for i in range(3):
            await alice.say({"from": "alice", "n": i})
        got = await messages(alice, 3)
        epoch, last = alice.ready["epoch"], got[-1]["offset"]
        assert [f["offset"] for f in got] == [1, 2, 3]
    own_redis.kill()
    own_redis.start()  # same port, no persistence: every key is gone
    # The servers reconnect on their own; until the store answers again a
    # joiner is told nothing (epoch null): try again.
    ready: dict[str, Any] = {}
    with anyio.fail_after(3 * WAIT):
        while ready.get("epoch") is None:
            with contextlib.suppress(ConnectionClosed, OSError, AssertionError):
                async with joined(b_server, "alice", last, epoch) as back:
                    ready = back.ready
            if ready.get("epoch") is None:
                await anyio.sleep(0.2)
    assert ready["recovered"] is False
    assert ready["epoch"] != epoch, "Redis lost the room: a new epoch"
    assert ready["offset"] == 0
    # A's listener reconnects on its own (ping_interval + op_timeout); a joiner
    # before that is served degraded and told to resync.
    await wait_until(
        lambda: (
            a_server.status()["backplane"]["reconnects"] >= 1
            and a_server.status()["backplane"]["healthy"]
        ),
        "process A's backplane reconnected",
    )
    async with joined(a_server, "alice", last, epoch) as again:
        assert again.ready["recovered"] is False
        assert again.ready["epoch"] == ready["epoch"]
        with anyio.fail_after(WAIT):
            while True:
                # A first append may meet a dead pooled connection: not_sent
                # (nobody got it), so sending again cannot duplicate it.
                await again.say({"from": "alice", "n": 3})
                frame = await again.next()
                while frame["type"] not in ("message", "error", "resync"):
                    frame = await again.next()
                if frame["type"] == "error":
                    assert frame["code"] == "not_sent", frame
                    continue
                if frame["type"] == "resync":
                    # Published while A resubscribed: it is in the history.
                    await again.ws.send(json.dumps({"type": "history"}))
                    page = await again.until("history")
                    frame = page["messages"][-1]
                break
        assert frame["offset"] == 1, "offsets restart at 1 in the new epoch"
        assert frame["body"] == {"from": "alice", "n": 3}


async def until_error_or_message(client: Client) -> dict[str, Any]:
    with anyio.fail_after(3 * WAIT):
        while True:
            frame = await client.next()
            if frame["type"] in ("message", "error"):
                return frame


async def gets_offset(client: Client, offset: int) -> dict[str, Any]:
    """The message at ``offset``: live, or, if the client got a ``resync`` (its
    server's subscription dropped while Redis was paused, and the message was
    published meanwhile), from the ``history`` the resync says to load."""
    with anyio.fail_after(3 * WAIT):
        while True:
            frame = await client.next()
            assert frame["type"] != "error", frame
            if frame["type"] == "message":
                assert frame["offset"] == offset, frame
                return frame
            if frame["type"] == "resync":
                await client.ws.send(json.dumps({"type": "history", "limit": 5}))
                page = await client.until("history")
                kept: dict[int, dict[str, Any]] = {
                    m["offset"]: m for m in page["messages"]
                }
                assert page["latest"] == offset, page
                return kept[offset]


async def test_a_paused_redis_gives_the_sender_an_answer_that_tells_the_truth(
    own_redis: RedisServer, own_servers: list[Server]
) -> None:
    """Redis got the append but did not answer within op_timeout (1 s)."""
    a_server, b_server = own_servers
    async with joined(a_server, "alice") as alice, joined(b_server, "bob") as bob:
        await alice.ws.send(json.dumps({"type": "message", "body": 0}))
        assert (await until_error_or_message(bob))["offset"] == 1
        assert (await until_error_or_message(alice))["offset"] == 1
        # Answered within IN_DOUBT_WAIT (5 s): sent, no error to the sender.
        own_redis.pause()
        await alice.ws.send(
            json.dumps({"type": "message", "body": 1, "client_id": "c1"})
        )
        await anyio.sleep(2.5)
        own_redis.resume()
        sent = [await gets_offset(client, 2) for client in (alice, bob)]
        assert sent[0]["client_id"] == sent[1]["client_id"] == "c1"
        # Not answered within IN_DOUBT_WAIT: delivery_degraded naming the message
        # (never not_sent: Redis stored it), which every member gets once Redis
        # runs again.
        own_redis.pause()
        await alice.ws.send(
            json.dumps({"type": "message", "body": 2, "client_id": "c2"})
        )
        error = await until_error_or_message(alice)
        own_redis.resume()
        assert error["code"] == "delivery_degraded", error
        assert error["client_id"] == "c2"
        assert "may or may not" in error["message"]
        for client in (alice, bob):
            frame = await gets_offset(client, 3)
            assert frame["id"] == error["id"]
