"""End to end: chatting through each adapter, a real uvicorn and the real client.

Two users chat, rooms stay apart, the subprotocol carries the token, the frame rules
(``ping``, text only, size limit) hold, hooks transform, veto and fail safely, and
``/ws/status`` tells an operator what runs without naming anyone.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.e2e import (
    Flavor,
    LogRecorder,
    chat_server,
    client,
    closed,
    messages,
    next_frame,
    send_message,
    token,
)
from wschat import ChatHooks, Connection, Veto
from wschat.protocol import JSON

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ALICE = token("alice")
BOB = token("bob")


async def test_two_clients_chat(flavor: Flavor) -> None:
    per_sender = 20
    with chat_server(flavor) as chat:
        async with (
            client(chat.url("room1", ALICE)) as alice,
            client(chat.url("room1", BOB)) as bob,
        ):
            ready = await next_frame(alice, "ready")
            assert (ready["user"], ready["chat_id"]) == ("alice", "room1")
            assert (await next_frame(bob, "ready"))["members"] == ["alice", "bob"]
            started = time.time() * 1000

            async def talk(ws: ClientConnection, name: str) -> None:
                for n in range(per_sender):
                    # Server-owned fields in the payload must be ignored.
                    await send_message(
                        ws,
                        {"n": n, "from": name},
                        client_id=f"{name}-{n}",
                        user="mallory",
                        id="forged",
                        ts=1,
                        chat_id="elsewhere",
                    )

            got: dict[str, list[dict[str, Any]]] = {}

            async def listen(ws: ClientConnection, name: str) -> None:
                got[name] = await messages(ws, 2 * per_sender)

            async with anyio.create_task_group() as tg:
                tg.start_soon(listen, alice, "alice")
                tg.start_soon(listen, bob, "bob")
                tg.start_soon(talk, alice, "alice")
                tg.start_soon(talk, bob, "bob")

    ids: set[str] = set()
    for name in ("alice", "bob"):
        frames = got[name]
        assert len(frames) == 2 * per_sender
        for frame in frames:
            sender = frame["body"]["from"]
            # Identity and room come from the connection, never from the payload.
            assert frame["user"] == sender
            assert frame["chat_id"] == "room1"
            assert frame["id"] != "forged"
            assert frame["ts"] >= started - 1000
            assert frame["client_id"] == f"{sender}-{frame['body']['n']}"
        for sender in ("alice", "bob"):
            order = [f["body"]["n"] for f in frames if f["body"]["from"] == sender]
            assert order == list(range(per_sender)), (name, sender, order)
        ids.update(f["id"] for f in frames)
    # Both receivers saw the same 40 server-assigned ids.
    assert len(ids) == 2 * per_sender


async def test_rooms_are_isolated(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        async with (
            client(chat.url("room-a", ALICE)) as alice,
            client(chat.url("room-b", BOB)) as bob,
        ):
            await next_frame(alice, "ready")
            await next_frame(bob, "ready")
            await send_message(alice, "for room A only")
            # Once alice has her own echo, the broadcast has reached every outbox.
            assert (await messages(alice, 1))[0]["body"] == "for room A only"
            await send_message(bob, "marker")
            seen: list[dict[str, Any]] = []
            with anyio.fail_after(5):
                while not seen or seen[-1].get("body") != "marker":
                    seen.append(json.loads(await bob.recv()))
    assert all(f.get("chat_id", "room-b") == "room-b" for f in seen), seen
    assert not any(f.get("body") == "for room A only" for f in seen), seen
    assert not any(f.get("user") == "alice" for f in seen), seen


async def test_token_in_subprotocol_is_never_echoed(flavor: Flavor) -> None:
    with LogRecorder() as logs, chat_server(flavor) as chat:
        async with client(
            chat.url("room1"), subprotocols=["wschat.v1", f"bearer.{ALICE}"]
        ) as ws:
            assert ws.subprotocol == "wschat.v1"
            assert ws.response is not None
            assert ws.response.headers.get_all("Sec-WebSocket-Protocol") == [
                "wschat.v1"
            ]
            assert ALICE not in str(ws.response.headers)
            ready = await next_frame(ws, "ready")
            assert ready["user"] == "alice"
            await send_message(ws, "hi")
            assert (await messages(ws, 1))[0]["user"] == "alice"
    assert ALICE not in logs.text()


async def test_ping_pong(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        async with client(chat.url("room1", ALICE)) as ws:
            await next_frame(ws, "ready")
            await ws.send(json.dumps({"type": "ping", "id": 7}))
            assert await next_frame(ws, "pong") == {"type": "pong", "id": 7}
            await ws.send(json.dumps({"type": "ping"}))
            assert await next_frame(ws, "pong") == {"type": "pong"}


async def test_binary_frame_closes_with_1003(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        async with client(chat.url("room1", ALICE)) as ws:
            await next_frame(ws, "ready")
            await ws.send(b'{"type": "ping"}')
            result = await closed(ws)
    assert result.code == 1003
    assert result.reason.startswith("text_only")


async def test_frame_over_64_kib_closes_with_1009(flavor: Flavor) -> None:
    # wschat's own check, behind a server whose limit is larger.
    with chat_server(flavor, ws_max_size=1 << 20) as chat:
        async with client(chat.url("room1", ALICE)) as ws:
            await next_frame(ws, "ready")
            # Just under the limit passes...
            await send_message(ws, "x" * (60 * 1024))
            assert len((await messages(ws, 1))[0]["body"]) == 60 * 1024
            # ...one byte over closes.
            frame = json.dumps({"type": "message", "body": ""})
            await send_message(ws, "x" * (64 * 1024 + 1 - len(frame)))
            result = await closed(ws)
    assert result.code == 1009
    assert result.reason.startswith("message_too_big")


class ShoutingHooks(ChatHooks):
    """Upper-cases text, vetoes one word, and has a bug on another."""

    def __init__(self) -> None:
        self.joined: list[str] = []
        self.left: list[str] = []

    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        if body == "darn":
            raise Veto("mind your language", code="vetoed_word")
        if body == "boom":
            raise RuntimeError("hook bug with a secret detail")
        return body.upper() if isinstance(body, str) else body

    async def on_join(self, conn: Connection) -> None:
        self.joined.append(conn.user_id)

    async def on_leave(self, conn: Connection) -> None:
        self.left.append(conn.user_id)


async def test_hooks_transform_veto_and_fail_safely(flavor: Flavor) -> None:
    hooks = ShoutingHooks()
    with LogRecorder() as logs, chat_server(flavor, hooks=hooks) as chat:
        async with (
            client(chat.url("room1", ALICE)) as alice,
            client(chat.url("room1", BOB)) as bob,
        ):
            await next_frame(alice, "ready")
            await next_frame(bob, "ready")

            await send_message(alice, "hello")
            assert (await messages(alice, 1))[0]["body"] == "HELLO"
            assert (await messages(bob, 1))[0]["body"] == "HELLO"

            await send_message(alice, "darn")
            error = await next_frame(alice, "error")
            assert error["code"] == "vetoed_word"
            assert error["message"] == "mind your language"
            # Alice stays connected; bob never saw the vetoed message.
            await send_message(alice, "sorry")
            assert (await messages(alice, 1))[0]["body"] == "SORRY"
            assert (await messages(bob, 1))[0]["body"] == "SORRY"

            await send_message(bob, "boom")
            result = await closed(bob)
            assert result.code == 1011
            assert result.reason.startswith("internal_error")
            assert "secret" not in result.reason
            assert not any(f.get("body") == "BOOM" for f in result.frames)

            # Alice is untouched: she learns bob left, and can still chat.
            leave = await next_frame(alice, "presence")
            assert (leave["joins"], leave["leaves"]) == ([], ["bob"])
            await send_message(alice, "still here")
            assert (await messages(alice, 1))[0]["body"] == "STILL HERE"
            await chat.wait_connections(1)
        await chat.wait_connections(0)

    errors = logs.at_least(logging.ERROR)
    assert len(errors) == 1, logs.text()
    assert errors[0].name == "wschat"
    assert errors[0].exc_info is not None
    assert "hook" in errors[0].getMessage()
    assert sorted(hooks.joined) == ["alice", "bob"]
    assert sorted(hooks.left) == ["alice", "bob"]


async def test_status_counts_without_naming_anyone(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        empty = await chat.status()
        assert empty["status"] == "ok"
        assert (empty["connections"], empty["rooms"]) == (0, 0)
        async with (
            client(chat.url("room1", ALICE)) as a1,
            client(chat.url("room1", ALICE)) as a2,
            client(chat.url("room2", BOB)) as b,
        ):
            for ws in (a1, a2, b):
                await next_frame(ws, "ready")
            await send_message(b, "hi")
            await messages(b, 1)
            status = await chat.status()
        await chat.wait_connections(0)
    assert status["status"] == "ok"
    assert status["connections"] == 3
    assert status["rooms"] == 2
    assert status["messages"] == 1
    assert status["backplane"]["name"] == "memory"
    assert status["backplane"]["healthy"] is True
    text = json.dumps(status)
    for secret in ("alice", "bob", ALICE, BOB, "room1", "room2"):
        assert secret not in text


async def test_flood_closes_with_4429(flavor: Flavor) -> None:
    with chat_server(flavor, rate_limit=5, rate_burst=5) as chat:
        async with client(chat.url("room1", ALICE)) as ws:
            await next_frame(ws, "ready")
            for _ in range(20):
                await ws.send('{"type": "ping"}')
            result = await closed(ws)
    assert result.code == 4429, result
    assert result.reason.startswith("rate_limited"), result
    # The burst was served before the limit applied, and the flood was cut short
    # (a slow host may refill a token between frames, hence no exact count).
    assert 5 <= sum(f["type"] == "pong" for f in result.frames) < 20, result


async def test_malformed_frames_get_errors_then_4400(flavor: Flavor) -> None:
    with chat_server(flavor, malformed_limit=3) as chat:
        async with client(chat.url("room1", ALICE)) as ws:
            await next_frame(ws, "ready")
            await ws.send("not json")
            assert (await next_frame(ws, "error"))["code"] == "bad_json"
            await ws.send('{"type": "shout"}')
            assert (await next_frame(ws, "error"))["code"] == "unknown_type"
            # The connection survived both.
            await send_message(ws, "fine")
            assert (await messages(ws, 1))[0]["body"] == "fine"
            for _ in range(3):
                await ws.send("[")
            result = await closed(ws)
    assert result.code == 4400
    assert result.reason.startswith("bad_request")


async def next_any(ws: ClientConnection) -> dict[str, Any]:
    """The very next frame, whatever its type."""
    with anyio.fail_after(5):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def test_presence_arrives_in_order_with_messages(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        async with client(chat.url("room1", ALICE)) as alice:
            assert (await next_any(alice))["type"] == "ready"
            own = await next_any(alice)  # your own join, right after ready
            assert (own["type"], own["joins"]) == ("presence", ["alice"])
            async with client(chat.url("room1", BOB)) as bob:
                assert (await next_any(bob))["type"] == "ready"
                assert "bob" in (await next_any(bob))["joins"]
                # Alice is idle: bob's join waits for the sweep, unless a message
                # comes first; either way it comes before bob's message.
                await send_message(bob, "hi")
                joined = await next_any(alice)
                assert (joined["type"], joined["joins"]) == ("presence", ["bob"])
                said = await next_any(alice)
                assert (said["type"], said["body"]) == ("message", "hi")
            # With nothing else to send, the leave still comes, at the next sweep.
            left = await next_any(alice)
            assert (left["type"], left["leaves"], left["count"]) == (
                "presence",
                ["bob"],
                1,
            )
