# docs/examples/test_starlette_testclient.py
"""Test the quickstart's Starlette app with Starlette's TestClient.

Run it with: pytest test_starlette_testclient.py  (beside starlette_app.py)
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect
from starlette_app import SECRET, app, manager

from wschat import ChatId
from wschat.testing import mint_token


@pytest.fixture
def client() -> TestClient:
    return TestClient(app)


def url(user: str, room: str = "lobby") -> str:
    return f"/ws/chat/{room}?token={mint_token(SECRET, user)}"


def receive(ws: WebSocketTestSession, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind``, skipping the others (presence, ...)."""
    while True:
        frame: dict[str, Any] = ws.receive_json()
        if frame["type"] == kind:
            return frame


def test_two_users_chat(client: TestClient) -> None:
    with (
        client.websocket_connect(url("alice")) as alice,
        client.websocket_connect(url("bob")) as bob,
    ):
        receive(alice, "ready")
        receive(bob, "ready")
        bob.send_json({"type": "message", "body": "hi alice", "client_id": "b-1"})
        for ws in (alice, bob):
            message = receive(ws, "message")
            assert (message["user"], message["client_id"]) == ("bob", "b-1")


def test_the_server_closes_a_room(client: TestClient) -> None:
    with client.websocket_connect(url("alice", room="town-hall")) as alice:
        receive(alice, "ready")
        # Test code may call the manager directly, from its own thread.
        assert manager.close_room(ChatId("town-hall")) == 1
        with pytest.raises(WebSocketDisconnect) as closed:
            receive(alice, "message")
    assert (closed.value.code, closed.value.reason) == (
        4403,
        "forbidden: this chat was closed",
    )
