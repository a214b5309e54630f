# docs/examples/test_fastapi_testclient.py
"""Test the quickstart's FastAPI app with FastAPI's TestClient.

Run it with: pytest test_fastapi_testclient.py  (beside fastapi_app.py)
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from fastapi_app import SECRET, app
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from wschat.testing import mint_token

client = TestClient(app)  # made once, never entered: the style FastAPI's docs show


def url(user: str, room: str = "lobby") -> str:
    return f"/ws/chat/{room}?token={mint_token(SECRET, user)}"


def receive(ws: WebSocketTestSession, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind``, skipping the others (presence, ...)."""
    while True:
        frame: dict[str, Any] = ws.receive_json()
        if frame["type"] == kind:
            return frame


def test_two_users_chat() -> None:
    with (
        client.websocket_connect(url("alice")) as alice,
        client.websocket_connect(url("bob")) as bob,
    ):
        assert receive(alice, "ready")["user"] == "alice"
        assert receive(bob, "ready")["members"] == ["alice", "bob"]
        alice.send_json({"type": "message", "body": {"text": "hi bob"}})
        for ws in (alice, bob):
            message = receive(ws, "message")
            assert (message["user"], message["body"]) == ("alice", {"text": "hi bob"})


def test_a_bad_token_is_closed_with_4401() -> None:
    with (
        client.websocket_connect("/ws/chat/lobby?token=test") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    assert closed.value.code == 4401
    assert closed.value.reason.startswith("token_malformed:")


def test_inside_with_the_app_s_lifespan_runs_too() -> None:
    with TestClient(app) as entered, entered.websocket_connect(url("carol")) as carol:
        assert receive(carol, "ready")["user"] == "carol"
