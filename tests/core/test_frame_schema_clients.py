"""The frame-schema fixture (tests/support/frame_schema.py) checks the frames the
in-process clients receive too: wschat's ChatTestClient and Starlette's TestClient.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.common import SECRET
from tests.support.frame_schema import FrameCheck, SchemaViolation
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app as asgi_chat_app
from wschat.testclient import ChatTestClient

BAD = '{"type":"pong","id":[1]}'  # the test client reads it; the schema does not


async def _bad_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": BAD})
        await receive()


def chat_app() -> Any:
    return asgi_chat_app(
        ConnectionManager(), TokenVerifier(SECRET, algorithms=["HS256"])
    )


@pytest.mark.anyio
async def test_the_fixture_fails_a_bad_frame_the_test_client_receives(
    validate_server_frames: FrameCheck,
) -> None:
    with pytest.raises(SchemaViolation, match="is not of type 'string', 'integer'"):
        async with ChatTestClient(_bad_app) as client, client.connect("lobby") as chat:
            await chat.receive()
    assert len(validate_server_frames.violations) == 1
    validate_server_frames.violations.clear()


@pytest.mark.anyio
async def test_the_fixture_checks_the_test_clients_frames(
    validate_server_frames: FrameCheck,
) -> None:
    async with (
        ChatTestClient(chat_app(), secret=SECRET) as client,
        client.connect("lobby", user="alice") as alice,
    ):
        await alice.receive_until("ready")
        await alice.ping(1)
        await alice.receive_until("pong")
    assert validate_server_frames.checked >= 2
    assert validate_server_frames.violations == []


def test_the_fixture_fails_a_bad_frame_starlettes_client_receives(
    validate_server_frames: FrameCheck,
) -> None:
    client = TestClient(_bad_app)  # not entered: the app has no lifespan
    with (
        client.websocket_connect("/ws/chat/lobby") as ws,
        pytest.raises(SchemaViolation, match="is not of type 'string', 'integer'"),
    ):
        ws.receive_text()
    assert len(validate_server_frames.violations) == 1
    validate_server_frames.violations.clear()
    # Off a chat path nothing is checked: an application's own socket.
    with client.websocket_connect("/other") as ws:
        assert ws.receive_text() == BAD
    assert validate_server_frames.violations == []
