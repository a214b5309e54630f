# docs/examples/test_chat_kit.py
"""Test the hooks app with wschat's test kit: no server, no threads.

Run it with: pytest test_chat_kit.py  (beside hooks_app.py)
"""

from __future__ import annotations

import pytest
from hooks_app import SECRET, app

from wschat.testing import ChatTestClient, Error, Message, Ready

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # or "trio": the kit runs on both


async def test_two_users_chat() -> None:
    async with (
        ChatTestClient(app, secret=SECRET) as client,
        client.connect("lobby", user="alice") as alice,
        client.connect("lobby", user="bob") as bob,
    ):
        await alice.receive_until(Ready)
        assert (await bob.receive_until(Ready)).members == ("alice", "bob")
        await alice.send({"text": "  hi bob  "})
        for session in (alice, bob):
            message = await session.receive_until(Message)
            assert (message.user, message.body) == ("alice", {"text": "hi bob"})


async def test_the_hook_vetoes_a_body_without_text() -> None:
    async with (
        ChatTestClient(app, secret=SECRET) as client,
        client.connect("lobby", user="alice") as alice,
    ):
        await alice.send("just a string")
        error = await alice.receive_until(Error)
        assert error.code == "vetoed"


async def test_a_room_missing_from_the_token_closes_with_4403() -> None:
    async with (
        ChatTestClient(app, secret=SECRET) as client,
        client.connect("team-1", user="mallory") as mallory,
    ):
        code, reason = await mallory.wait_closed()
    assert code == 4403
    assert reason.startswith("forbidden:")


async def test_a_room_in_the_token_lets_the_user_in() -> None:
    async with (
        ChatTestClient(app, secret=SECRET) as client,
        client.connect("team-1", user="alice", claims={"rooms": ["team-1"]}) as alice,
    ):
        assert (await alice.receive_until(Ready)).chat_id == "team-1"


async def test_an_expired_token_closes_with_4401() -> None:
    async with (
        ChatTestClient(app, secret=SECRET) as client,
        client.connect("lobby", user="alice", ttl=-60) as alice,
    ):
        code, reason = await alice.wait_closed()
    assert (code, reason.split(":")[0]) == (4401, "token_expired")
