"""End to end: hostile input from the attack review, through a real uvicorn.

A ``sub`` that is a lone surrogate is refused at the handshake; numbers no double can
hold (``1e400``) get an ``error`` frame and the connection stays open; when a
connection does end with 1011, the log line names the step that failed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.e2e import (
    WAIT,
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
from wschat import ChatHooks
from wschat.connection import Connection
from wschat.protocol import JSON

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


async def ping_pong(ws: ClientConnection, ping_id: int) -> list[dict[str, Any]]:
    """Send a ping; return every frame received before its pong."""
    await ws.send(json.dumps({"type": "ping", "id": ping_id}))
    before: list[dict[str, Any]] = []
    with anyio.fail_after(WAIT):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "pong" and frame.get("id") == ping_id:
                return before
            before.append(frame)


# -- bug 1: what a sub may contain -------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "reason"),
    [
        (
            "\ud800",
            "token_invalid: sub is not valid UTF-8: a lone surrogate "
            "(U+D800 at position 0)",
        ),
        (
            "mallory\u202eevil",
            "token_invalid: sub holds an invisible format character "
            "(U+202E at position 7)",
        ),
        (
            "eve\x00",
            "token_invalid: sub holds a control character (U+0000 at position 3)",
        ),
    ],
    ids=["lone-surrogate", "bidi-override", "nul"],
)
async def test_unsafe_sub_is_refused_at_the_handshake(
    flavor: Flavor, sub: str, reason: str
) -> None:
    bad_token = token(sub)
    with LogRecorder() as logs, chat_server(flavor) as chat:
        async with client(chat.url("room1", token("alice"))) as alice:
            await next_frame(alice, "ready")
            async with client(chat.url("room1", bad_token)) as bad:
                refused = await closed(bad)
            assert (refused.code, refused.reason) == (4401, reason)
            assert refused.frames == []  # never got a ready frame
            # The member already there never saw it join, and still chats.
            seen = await ping_pong(alice, 1)
            joins = [u for f in seen if f["type"] == "presence" for u in f["joins"]]
            assert joins == ["alice"]  # her own join only
            await send_message(alice, "still fine")
            assert (await messages(alice, 1))[0]["user"] == "alice"
            status = await chat.status()
            assert status["connections"] == 1
    assert bad_token not in logs.text()
    assert logs.at_least(logging.ERROR) == [], logs.text()
    refusals = [r.getMessage() for r in logs.of("wschat", logging.WARNING)]
    assert len(refusals) == 1
    assert reason in refusals[0]


# -- bug 4: numbers that no double can hold ----------------------------------------

HUGE_NUMBER_FRAMES = [
    '{"type": "message", "body": 1e400}',
    '{"type": "message", "body": -1e400}',
    '{"type": "message", "body": {"a": [1, {"b": 1E+400}]}}',
    '{"type": "message", "body": ' + "9" * 400 + ".5}",
    '{"type": "message", "body": "x", "client_id": 1e400}',
    '{"type": "message", "body": "x", "extra": -2.5e999}',
    '{"type": "ping", "id": 1e400}',
]


class Store(ChatHooks):
    """Stores every body it is given, as an application's database would."""

    def __init__(self) -> None:
        self.bodies: list[JSON] = []

    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        self.bodies.append(body)
        return body


async def test_huge_numbers_get_an_error_frame_and_the_connection_stays(
    flavor: Flavor,
) -> None:
    store = Store()
    with (
        LogRecorder() as logs,
        chat_server(flavor, hooks=store, rate_limit=None) as chat,
    ):
        async with (
            client(chat.url("room1", token("alice"))) as alice,
            client(chat.url("room1", token("bob"))) as bob,
        ):
            await next_frame(alice, "ready")
            await next_frame(bob, "ready")
            for number, text in enumerate(HUGE_NUMBER_FRAMES):
                await alice.send(text)
                error = await next_frame(alice, "error")
                assert error == {
                    "type": "error",
                    "code": "bad_json",
                    "message": "a number is too large: JSON numbers must be finite "
                    "(at most about 1.8e308)",
                }, text
                # Still open, and the next message goes to everyone.
                await send_message(alice, number)
                assert (await messages(alice, 1))[0]["body"] == number
                assert (await messages(bob, 1))[0]["body"] == number
        await chat.wait_connections(0)
    # The hook never saw a body that cannot be broadcast.
    assert store.bodies == list(range(len(HUGE_NUMBER_FRAMES)))
    assert logs.at_least(logging.ERROR) == [], logs.text()
    assert [r for r in logs.records if r.exc_info] == []


async def test_huge_numbers_count_as_malformed_frames(flavor: Flavor) -> None:
    with chat_server(flavor, malformed_limit=2, rate_limit=None) as chat:
        async with client(chat.url("room1", token("alice"))) as alice:
            await next_frame(alice, "ready")
            for _ in range(2):
                await alice.send('{"type": "message", "body": 1e400}')
                assert (await next_frame(alice, "error"))["code"] == "bad_json"
            await alice.send('{"type": "message", "body": 1e400}')
            result = await closed(alice)
    assert (result.code, result.reason) == (
        4400,
        "bad_request: too many malformed frames (last: bad_json)",
    )


# -- the log line names the step that failed ---------------------------------------


class ReturnsInfinity(ChatHooks):
    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        return {"score": float("inf")}


class ReturnsASet(ChatHooks):
    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        return {"tags": {"a"}}


class Raises(ChatHooks):
    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        raise RuntimeError("database is down")


class JoinRaises(ChatHooks):
    async def on_join(self, conn: Connection) -> None:
        raise RuntimeError("presence store is down")


@pytest.mark.parametrize(
    ("hooks", "step", "traceback"),
    [
        (
            ReturnsInfinity(),
            "the body the on_message hook returned cannot be encoded as JSON "
            "(ValueError: Out of range float values are not JSON compliant",
            None,
        ),
        (
            ReturnsASet(),
            "the body the on_message hook returned cannot be encoded as JSON "
            "(TypeError: Object of type set is not JSON serializable)",
            None,
        ),
        (Raises(), "the on_message hook raised", "database is down"),
        (JoinRaises(), "the on_join hook raised", "presence store is down"),
    ],
    ids=["hook-returns-inf", "hook-returns-set", "hook-raises", "on-join-raises"],
)
async def test_1011_log_line_names_the_failing_step(
    flavor: Flavor, hooks: ChatHooks, step: str, traceback: str | None
) -> None:
    with LogRecorder() as logs, chat_server(flavor, hooks=hooks) as chat:
        async with client(chat.url("room1", token("alice"))) as alice:
            if not isinstance(hooks, JoinRaises):
                await next_frame(alice, "ready")
                await send_message(alice, "hi")
            result = await closed(alice)
        await chat.wait_connections(0)
    assert (result.code, result.reason) == (
        1011,
        "internal_error: the server hit an unexpected error",
    )
    errors = logs.at_least(logging.ERROR)
    assert len(errors) == 1, logs.text()
    line = errors[0].getMessage()
    assert line.startswith(f"wschat: {step}"), line
    assert line.endswith("; closing it with 1011")
    assert "hook raised" not in line or "hook raised" in step
    if traceback is None:
        assert errors[0].exc_info is None
    else:
        assert errors[0].exc_info is not None
        assert traceback in str(errors[0].exc_info[1])
