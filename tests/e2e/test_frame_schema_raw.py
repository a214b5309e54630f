"""The frame-schema fixture (tests/support/frame_schema.py) checks the frames the
raw-socket test clients read too: ``RawWebSocket`` (tests/support/e2e.py) and
``RawClient`` (tests/support/server_process.py), on a chat path only.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from tests.support.common import serve
from tests.support.e2e import OP_TEXT, RawWebSocket, chat_server, token
from tests.support.frame_schema import FrameCheck, SchemaViolation
from tests.support.server_process import raw_upgrade
from wschat import ConnectionManager

pytestmark = [pytest.mark.e2e]

BAD = '{"type":"pong","id":[1]}'
MATCH = "is not of type 'string', 'integer'"


async def _bad_server(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": BAD})
        await send({"type": "websocket.close", "code": 1000, "reason": "bye"})


def test_raw_websocket_frames_are_checked(validate_server_frames: FrameCheck) -> None:
    with serve(_bad_server) as server:
        raw = RawWebSocket(server.port, "/ws/chat/lobby")
        try:
            raw.handshake()
            with pytest.raises(SchemaViolation, match=MATCH):
                raw.read_until_close(5.0)
        finally:
            raw.close()
        assert len(validate_server_frames.violations) == 1
        validate_server_frames.violations.clear()
        other = RawWebSocket(server.port, "/other")  # not a chat socket: unchecked
        try:
            other.handshake()
            assert other.read_until_close(5.0) == (1000, "bye", 1)
        finally:
            other.close()
    assert validate_server_frames.violations == []


def test_raw_client_frames_are_checked(validate_server_frames: FrameCheck) -> None:
    with serve(_bad_server) as server:
        with raw_upgrade(server.port, "/ws/chat/lobby") as raw:
            assert raw.status == 101
            with pytest.raises(SchemaViolation, match=MATCH):
                raw.close_frame(5.0)
        assert len(validate_server_frames.violations) == 1
        validate_server_frames.violations.clear()
        with raw_upgrade(server.port, "/other") as raw:
            assert raw.close_frame(5.0) == (1000, "bye")
    assert validate_server_frames.violations == []


@pytest.mark.anyio
async def test_a_raw_client_on_a_real_chat_is_checked(
    validate_server_frames: FrameCheck,
) -> None:
    with chat_server("asgi", ConnectionManager()) as chat:
        raw = RawWebSocket(chat.port, f"/ws/chat/lobby?token={token('alice')}")
        try:
            await anyio.to_thread.run_sync(raw.handshake)
            opcode, _ = await anyio.to_thread.run_sync(
                lambda: raw.read_frame(time.monotonic() + 5)
            )
            assert opcode == OP_TEXT
        finally:
            raw.close()
    assert validate_server_frames.checked >= 1
    assert validate_server_frames.violations == []
