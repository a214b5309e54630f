"""wschat.client on each close code the issue names, sent by a real server.

The retried codes (1001, 1011, 1013, and 4429 ``rate_limited``) reconnect after a
delay within the code's backoff ceiling; the stop codes (4400, 1003, 1009, next to
the 4403, 4401 and 4429 ``too_many_connections`` of tests/e2e/test_client.py) raise
``ChatStopped`` with the code, the server's reason and the fix, after exactly one
handshake. The server ends the session with the error its own code path would raise
(``close_user``); 4400 ``invalid_chat_id`` comes from a real bad room id.
"""

from __future__ import annotations

import pytest

from tests.support.client import CountedChat, FakeSleep, counted_server, next_event
from tests.support.e2e import WAIT, token
from wschat.client import (
    Backoff,
    ChatStopped,
    Disconnected,
    Message,
    Ready,
    Reconnected,
    connect,
    policy_for,
)
from wschat.client.policy import client_fix
from wschat.errors import (
    GoingAway,
    MessageTooBig,
    RateLimited,
    SlowConsumer,
    TextOnly,
    TryAgainLater,
    WSChatError,
)
from wschat.ids import UserId

from .test_client import no_more_handshakes

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

RETRIED = [
    GoingAway(),
    WSChatError(),  # what the endpoint sends when a hook raised: 1011
    SlowConsumer(),
    TryAgainLater(),
    RateLimited(),
]
STOPPED = [TextOnly(), MessageTooBig()]


@pytest.mark.parametrize("error", RETRIED, ids=lambda e: f"{e.close_code}-{e.code}")
async def test_a_retried_code_reconnects_within_its_backoff(error: WSChatError) -> None:
    sleep = FakeSleep()
    with counted_server() as server:
        async with connect(
            server.url("retry"), token=token("alice"), sleep=sleep
        ) as chat:
            await next_event(chat, Ready)
            server.manager.close_user(UserId("alice"), error)
            gone = await next_event(chat, Disconnected)
            assert (gone.code, gone.reason) == (error.close_code, error.reason)
            assert gone.attempt == 0
            ceiling = Backoff.ceiling(policy_for(gone.code, gone.reason), 0)
            assert 0 <= gone.delay <= ceiling
            back = await next_event(chat, Reconnected)
            assert back.ready.user == "alice"
            assert sleep.delays == [gone.delay]
            await chat.send("back")
            assert (await next_event(chat, Message)).body == "back"
        assert server.handshakes == 2


async def closed_with(
    server: CountedChat, error: WSChatError, sleep: FakeSleep
) -> None:
    """Connect as alice, have the server end her session with ``error``, read on."""
    async with connect(server.url("stop"), token=token("alice"), sleep=sleep) as chat:
        await next_event(chat, Ready)
        server.manager.close_user(UserId("alice"), error)
        await next_event(chat, Disconnected, WAIT)
        pytest.fail("a stop code is not a disconnect")


@pytest.mark.parametrize("error", STOPPED, ids=lambda e: f"{e.close_code}-{e.code}")
async def test_a_stop_code_raises_with_the_fix_after_one_handshake(
    error: WSChatError,
) -> None:
    sleep = FakeSleep()
    with counted_server() as server:
        with pytest.raises(ChatStopped) as stopped:
            await closed_with(server, error, sleep)
        assert (stopped.value.code, stopped.value.reason) == (
            error.close_code,
            error.reason,
        )
        policy = policy_for(error.close_code, error.reason)
        assert policy.action == "stop"
        assert stopped.value.fix == client_fix(policy, has_provider=False)
        assert stopped.value.fix in str(stopped.value)
        assert sleep.delays == []
        await no_more_handshakes(server, 1)


async def test_an_invalid_chat_id_stops_with_4400_after_one_handshake() -> None:
    with counted_server() as server:
        with pytest.raises(ChatStopped) as stopped:
            async with connect(server.url("-not-a-room"), token=token("alice")):
                pytest.fail("a refused client must not enter")
        assert stopped.value.code == 4400
        assert stopped.value.reason.startswith("invalid_chat_id")
        assert stopped.value.fix == policy_for(4400, "invalid_chat_id").fix
        await no_more_handshakes(server, 1)
