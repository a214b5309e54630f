"""wschat.frames: the ready frame's token and history fields, and token_expiring, are
typed attributes (issue 12); the test kit exports every frame class."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import wschat.frames
import wschat.testing
from tests.support.common import SECRET
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.frames import Ready, TokenExpiring, parse_server_frame
from wschat.testing import ChatTestClient, mint_token

READY: dict[str, Any] = {
    "type": "ready",
    "protocol": 1,
    "connection_id": "c1",
    "chat_id": "lobby",
    "user": "alice",
    "members": ["alice"],
    "limits": {"max_message_bytes": 65536, "outbox_max_messages": 1000},
    "batch": False,
}


def test_ready_with_history_and_exp() -> None:
    extra = {"epoch": "e1", "offset": 7, "recovered": True, "exp": 1764103600}
    (ready,) = parse_server_frame(json.dumps(READY | extra))
    assert isinstance(ready, Ready)
    assert (ready.epoch, ready.offset, ready.recovered, ready.exp) == (
        "e1",
        7,
        True,
        1764103600,
    )


def test_ready_without_them_has_the_defaults() -> None:
    (ready,) = parse_server_frame(json.dumps(READY))
    assert isinstance(ready, Ready)
    assert (ready.epoch, ready.offset, ready.recovered, ready.exp) == (
        None,
        None,
        False,
        None,
    )


def test_token_expiring_is_typed() -> None:
    (notice,) = parse_server_frame('{"type": "token_expiring", "exp": 1764103600}')
    assert notice == TokenExpiring(exp=1764103600)


def test_the_kit_exports_every_frame_class() -> None:
    for name in ("TokenExpiring", "History", "Members", "Ready", "AuthOk"):
        assert name in wschat.testing.__all__
        assert getattr(wschat.testing, name) is getattr(wschat.frames, name)


@pytest.mark.anyio
async def test_the_kits_ready_carries_the_tokens_exp() -> None:
    now = int(time.time())
    token = mint_token(SECRET, "alice", ttl=600, now=now)
    app = chat_app(ConnectionManager(), TokenVerifier(SECRET, algorithms=["HS256"]))
    async with (
        ChatTestClient(app) as client,
        client.connect("lobby", token=token) as alice,
    ):
        ready = await alice.receive_until(Ready)
    assert ready.exp == now + 600
    assert ready.recovered is False
