"""History through a real uvicorn and the real ``websockets`` client, on every adapter.

Offsets, recovery on reconnect while the room keeps talking, refused recovery,
``history`` paging and its cap, ``on_published``, and ``/ws/status``.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.e2e import (
    Flavor,
    chat_server,
    client,
    next_frame,
    send_message,
    token,
)
from wschat import ChatHooks, ConnectionManager
from wschat.connection import Connection
from wschat.protocol import Published

pytestmark = pytest.mark.anyio

ROOM = "lobby"
WAIT = 10.0


async def recv(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(WAIT):
        frame: dict[str, Any] = json.loads(await ws.recv())
        return frame


async def next_message(ws: ClientConnection) -> dict[str, Any]:
    return await next_frame(ws, "message", WAIT)


async def history(ws: ClientConnection, **request: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "history", **request}))
    return await next_frame(ws, "history", WAIT)


async def test_offsets_increase_by_one(flavor: Flavor) -> None:
    with chat_server(flavor, ConnectionManager(presence=False)) as chat:
        async with client(chat.url(ROOM, token("alice"))) as alice:
            ready = await recv(alice)
            assert (ready["type"], ready["offset"], ready["recovered"]) == (
                "ready",
                0,
                False,
            )
            for n in range(1, 11):
                await send_message(alice, n)
            got = [await next_message(alice) for _ in range(10)]
            assert [m["offset"] for m in got] == list(range(1, 11))
            assert [m["body"] for m in got] == list(range(1, 11))
        async with client(chat.url(ROOM, token("bob"))) as bob:
            ready = await recv(bob)
            assert ready["offset"] == 10


async def test_reconnect_with_since_recovers_what_was_missed_while_talking(
    flavor: Flavor,
) -> None:
    total = 200
    with chat_server(
        flavor, ConnectionManager(presence=False), rate_limit=None
    ) as chat:
        async with client(chat.url(ROOM, token("alice"))) as alice:
            epoch = (await recv(alice))["epoch"]
            seen: list[int] = []
            joined = anyio.Event()

            async def talk() -> None:
                await joined.wait()
                for n in range(1, total + 1):
                    await send_message(alice, n)
                    await anyio.sleep(0.002)

            async def listen() -> None:
                async with client(chat.url(ROOM, token("bob"))) as bob:
                    await recv(bob)
                    joined.set()
                    while len(seen) < 20:
                        seen.append((await next_message(bob))["offset"])
                # Gone while alice keeps talking; back with since.
                await anyio.sleep(0.1)
                url = chat.url(ROOM, token("bob"), since=str(seen[-1]), epoch=epoch)
                async with client(url) as bob:
                    ready = await recv(bob)
                    assert ready["recovered"] is True
                    assert ready["offset"] > seen[-1]
                    while seen[-1] < total:
                        frame = await recv(bob)
                        assert frame["type"] == "message", frame
                        seen.append(frame["offset"])

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(talk)
                    tg.start_soon(listen)
    # 0 lost, 0 duplicated, in order.
    assert seen == list(range(1, total + 1))


async def test_wrong_epoch_or_too_old_is_not_recovered(flavor: Flavor) -> None:
    manager = ConnectionManager(presence=False, history_max_messages=5)
    with chat_server(flavor, manager) as chat:
        async with client(chat.url(ROOM, token("alice"))) as alice:
            epoch = (await recv(alice))["epoch"]
            for n in range(1, 11):
                await send_message(alice, n)
            for _ in range(10):
                await next_message(alice)
            cases = [
                ("wrong-epoch", "7", False),
                (epoch, "4", False),  # 5..10 missed, 6..10 kept
                (epoch, "7", True),  # 8..12 missed and kept (two live ones since)
            ]
            latest = 10
            for their_epoch, since, recovered in cases:
                url = chat.url(ROOM, token("bob"), since=since, epoch=their_epoch)
                async with client(url) as bob:
                    ready = await recv(bob)
                    assert (ready["recovered"], ready["epoch"], ready["offset"]) == (
                        recovered,
                        epoch,
                        latest,
                    ), since
                    if recovered:
                        replayed = [await recv(bob) for _ in range(5)]
                        assert [m["offset"] for m in replayed] == [8, 9, 10, 11, 12]
                    # Nothing (more) replayed: the next frame is live.
                    await send_message(bob, "live")
                    live = await recv(bob)
                    latest += 1
                    assert (live["body"], live["offset"]) == ("live", latest)


async def test_history_pages_backwards_with_a_capped_limit(flavor: Flavor) -> None:
    manager = ConnectionManager(presence=False, history_max_messages=150)
    with chat_server(flavor, manager, rate_limit=None) as chat:
        async with client(chat.url(ROOM, token("alice"))) as alice:
            await recv(alice)
            for n in range(1, 121):
                await send_message(alice, n)
            for _ in range(120):
                await next_message(alice)
            page = await history(alice, limit=500)
            offsets = [m["offset"] for m in page["messages"]]
            assert offsets == list(range(21, 121))  # capped at 100
            assert (page["chat_id"], page["latest"], page["more"]) == (ROOM, 120, True)
            page = await history(alice, before=21, limit=15)
            assert [m["offset"] for m in page["messages"]] == list(range(6, 21))
            page = await history(alice, before=6)
            assert [m["offset"] for m in page["messages"]] == [1, 2, 3, 4, 5]
            assert page["more"] is False
            await alice.send(json.dumps({"type": "history", "limit": 0}))
            error = await next_frame(alice, "error", WAIT)
            assert error["code"] == "bad_frame"


class Published_(ChatHooks):
    def __init__(self) -> None:
        self.seen: list[Published] = []

    async def on_published(self, conn: Connection, message: Published) -> None:
        self.seen.append(message)


async def test_on_published_sees_the_final_frame(flavor: Flavor) -> None:
    hooks = Published_()
    with chat_server(flavor, ConnectionManager(presence=False), hooks=hooks) as chat:
        async with client(chat.url(ROOM, token("alice"))) as alice:
            await recv(alice)
            await send_message(alice, {"text": "hi"}, client_id="c-1")
            frame = await next_message(alice)
            await send_message(alice, "second")
            await next_message(alice)
            status = await chat.status()
    first = hooks.seen[0]
    assert json.loads(first.frame) == frame
    assert (first.id, first.ts, first.offset, first.client_id) == (
        frame["id"],
        frame["ts"],
        1,
        "c-1",
    )
    assert [p.offset for p in hooks.seen] == [1, 2]
    history_status = status["history"]
    assert (history_status["enabled"], history_status["name"]) == (True, "memory")
    assert history_status["entries"] == 2
    assert history_status["memory_bytes"] > 0
