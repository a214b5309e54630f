"""End to end: tokens sent in frames (first-message auth, and refresh before ``exp``).

A token in a frame never touches a URL, so no server or proxy can log it; these paths
run through the real uvicorn and the real client like every other.
"""

from __future__ import annotations

import json
import logging

import pytest

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

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


async def test_first_message_auth(flavor: Flavor) -> None:
    alice = token("alice")
    with (
        LogRecorder() as logs,
        chat_server(flavor, first_message_auth=True, auth_timeout=0.5) as chat,
    ):
        # The token arrives in the first frame.
        async with client(chat.url("room1")) as ws:
            await ws.send(json.dumps({"type": "auth", "token": alice}))
            assert (await next_frame(ws, "ready"))["user"] == "alice"
            await send_message(ws, "hi")
            assert (await messages(ws, 1))[0]["user"] == "alice"
        # Anything else first is refused with the reason.
        async with client(chat.url("room1")) as ws:
            await send_message(ws, "hi")
            refused = await closed(ws)
        assert (refused.code, refused.reason.split(":")[0]) == (4401, "token_missing")
        # Nothing in time: 4408.
        async with client(chat.url("room1")) as ws:
            late = await closed(ws)
        assert (late.code, late.reason.split(":")[0]) == (4408, "auth_timeout")
        # A bad token in the frame is explained like one in the URL.
        async with client(chat.url("room1")) as ws:
            await ws.send(json.dumps({"type": "auth", "token": "test"}))
            bad = await closed(ws)
        assert (bad.code, bad.reason.split(":")[0]) == (4401, "token_malformed")
        await chat.wait_connections(0)
    assert alice not in logs.text()
    assert len(logs.of("wschat", logging.WARNING)) == 3, logs.text()
    assert logs.at_least(logging.ERROR) == [], logs.text()


async def test_token_refresh(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        async with client(chat.url("room1", token("alice", ttl=60))) as ws:
            await next_frame(ws, "ready")
            fresh = token("alice", ttl=3600)
            await ws.send(json.dumps({"type": "auth", "token": fresh}))
            answer = await next_frame(ws, "auth")
            assert answer["ok"] is True
            assert answer["exp"] > 0
            # A token for someone else cannot take over the connection.
            await ws.send(json.dumps({"type": "auth", "token": token("mallory")}))
            result = await closed(ws)
    assert result.code == 4401
    assert result.reason.startswith("token_invalid")
