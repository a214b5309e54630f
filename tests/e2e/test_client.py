"""wschat.client against real servers: the round trip, every stop, the refresh, the
reconnect after a restart, backoff bounds, cancellation and the send queue.

Every test runs the real client against a real uvicorn serving a wschat app (in a
thread, behind a handshake counter, or in a subprocess that is stopped and started
again on the same port). asyncio only: the client is built on ``websockets``' asyncio
API (a trio test checks it says so).
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import anyio
import pytest

from tests.support.client import (
    CountedChat,
    FakeSleep,
    counted_server,
    next_event,
    uvicorn_on,
)
from tests.support.common import free_port
from tests.support.e2e import WAIT, client, messages, token, wait_until
from wschat import ChatHooks, Connection, ConnectionManager, NormalClosure, Veto
from wschat.client import (
    Backoff,
    ChatStopped,
    ClientError,
    Disconnected,
    Error,
    Event,
    Message,
    Presence,
    Ready,
    Reconnected,
    Resync,
    SendQueueFull,
    connect,
    policy_for,
)
from wschat.client.chat import DEFAULT_MAX_EVENTS, DEFAULT_MAX_QUEUE
from wschat.ids import UserId
from wschat.protocol import JSON

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


async def no_more_handshakes(chat: CountedChat, count: int) -> None:
    """``count`` handshakes came, and no other within half a second."""
    assert chat.handshakes == count
    await anyio.sleep(0.5)
    assert chat.handshakes == count


def tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def no_task_leaks(before: set[asyncio.Task[Any]]) -> None:
    """Every task started since ``before`` has ended (the client's included)."""
    with anyio.fail_after(WAIT):
        while tasks() - before:  # noqa: ASYNC110 (no event says "a task ended")
            await anyio.sleep(0.01)


# -- the round trip --------------------------------------------------------------------


async def test_a_chat_round_trip_with_typed_events() -> None:
    with counted_server() as server:
        url = server.url("lobby")
        async with (
            connect(url, token=token("alice")) as alice,
            connect(url, token=token("bob")) as bob,
        ):
            assert alice.connected
            ready = await next_event(alice, Ready)
            assert (ready.type, ready.user, ready.chat_id) == (
                "ready",
                "alice",
                "lobby",
            )
            joined = await next_event(alice, Presence)
            if "bob" not in joined.joins:  # her own join may come first
                joined = await next_event(alice, Presence)
            assert (joined.type, joined.joins, joined.count) == (
                "presence",
                ("bob",),
                2,
            )
            await alice.send({"text": "hi"}, client_id="c1")
            for chat in (alice, bob):
                got = await next_event(chat, Message)
                assert (got.type, got.user, got.body, got.client_id) == (
                    "message",
                    "alice",
                    {"text": "hi"},
                    "c1",
                )
        assert server.handshakes == 2
        await server.wait_connections(0)


async def test_the_token_travels_in_the_subprotocol_not_the_url() -> None:
    with counted_server() as server, pytest.raises(ValueError, match="token="):
        connect(server.url("lobby", token("alice")), token=token("alice"))
    with pytest.raises(ValueError, match="ws:// or wss://"):
        connect("http://127.0.0.1:1/ws/chat/lobby", token="t")
    with pytest.raises(ValueError, match="token_provider"):
        connect("ws://127.0.0.1:1/ws/chat/lobby")
    with pytest.raises(ValueError, match="max_queue"):
        connect("ws://127.0.0.1:1/ws/chat/lobby", token="t", max_queue=-1)


async def test_a_message_over_the_servers_limit_is_refused_before_sending() -> None:
    with counted_server() as server:
        async with connect(server.url("lobby"), token=token("alice")) as chat:
            with pytest.raises(ValueError, match="max_message_bytes \\(65536\\)"):
                await chat.send("x" * 65536)
            await chat.send("small")
            assert (await next_event(chat, Message)).body == "small"


class Picky(ChatHooks):
    """Vetoes one word."""

    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        if body == "darn":
            raise Veto("mind your language", code="vetoed_word")
        return body


async def test_a_refused_frame_is_an_error_event_and_the_chat_goes_on() -> None:
    with counted_server(hooks=Picky()) as server:
        async with connect(server.url("lobby"), token=token("alice")) as chat:
            await next_event(chat, Ready)
            await chat.send("darn")
            error = await next_event(chat, Error)
            assert (error.type, error.code, error.message) == (
                "error",
                "vetoed_word",
                "mind your language",
            )
            assert chat.connected
            await chat.send("fine")
            assert (await next_event(chat, Message)).body == "fine"
        assert server.handshakes == 1


async def test_frames_dropped_for_a_slow_reader_end_in_a_resync_event() -> None:
    """A client that does not read its events: the server's outbox overflows, the
    ``drop_newest`` policy drops frames, and the client gets a ``Resync`` once it
    has caught up, on the same connection."""
    manager = ConnectionManager(outbox_max_messages=4, overflow="drop_newest")
    sent, body = 400, "x" * 60_000  # ~24 MB: more than loopback's socket buffers
    with counted_server(manager=manager, rate_limit=None) as server:
        async with connect(
            server.url("slow"), token=token("alice"), max_events=1
        ) as chat:
            await next_event(chat, Ready)
            async with client(server.url("slow", token("bob")), max_size=None) as bob:
                for n in range(sent):
                    await bob.send(json.dumps({"type": "message", "body": [n, body]}))
                received: list[int] = []
                resync: Resync | None = None
                with anyio.fail_after(30):
                    async for event in chat:
                        if isinstance(event, Message):
                            received.append(event.body[0])
                        elif isinstance(event, Resync):
                            resync = event
                            break
            assert resync is not None
            assert resync.chat_id == "slow"
            assert "dropped" in resync.message
            assert 0 < len(received) < sent
            assert received == sorted(received)  # dropped, never reordered
            assert chat.connected
        assert server.handshakes == 2


# -- stops: one handshake, an error that says what to do -------------------------------


async def test_4403_stops_after_one_handshake_with_the_fix() -> None:
    with counted_server(authorize=lambda principal, chat_id: False) as server:
        with pytest.raises(ChatStopped) as stopped:
            async with connect(server.url("lobby"), token=token("alice")):
                pytest.fail("a refused client must not enter")
        assert stopped.value.code == 4403
        assert stopped.value.reason.startswith("forbidden")
        assert stopped.value.fix == policy_for(4403, "forbidden").fix
        assert "authorize" in str(stopped.value)
        await no_more_handshakes(server, 1)


async def test_a_malformed_token_stops_after_one_handshake() -> None:
    with counted_server() as server:
        with pytest.raises(ChatStopped) as stopped:
            async with connect(server.url("lobby"), token="test"):
                pytest.fail("a refused client must not enter")
        assert stopped.value.code == 4401
        assert stopped.value.reason.startswith("token_malformed")
        assert "token_provider" in stopped.value.fix
        assert "test" not in str(stopped.value).replace("token_", "")
        await no_more_handshakes(server, 1)


async def test_too_many_connections_stops_at_once() -> None:
    manager = ConnectionManager(max_connections_per_user=1)
    with counted_server(manager=manager) as server:
        async with client(server.url("lobby", token("alice"))):
            await server.wait_connections(1)
            with pytest.raises(ChatStopped) as stopped:
                async with connect(server.url("lobby"), token=token("alice")):
                    pytest.fail("a refused client must not enter")
        assert (stopped.value.code, stopped.value.reason.split(":")[0]) == (
            4429,
            "too_many_connections",
        )
        assert "other sockets" in stopped.value.fix
        await no_more_handshakes(server, 2)


async def test_a_normal_closure_ends_the_events_without_an_error() -> None:
    with counted_server() as server:
        async with connect(server.url("lobby"), token=token("alice")) as chat:
            await next_event(chat, Ready)
            server.manager.close_user(UserId("alice"), NormalClosure("logged out"))
            with anyio.fail_after(WAIT):
                rest = [event async for event in chat]
            assert not any(isinstance(e, Disconnected) for e in rest)
            with pytest.raises(ChatStopped) as stopped:
                await chat.send("anyone?")
            assert stopped.value.code == 1000
        await no_more_handshakes(server, 1)


# -- 4401 and the token provider -------------------------------------------------------


async def test_4401_asks_the_provider_once_and_connects() -> None:
    asked: list[str] = []

    async def provider() -> str:
        asked.append("fresh")
        return token("alice")

    with counted_server() as server:
        async with connect(
            server.url("lobby"), token=token("alice", ttl=-60), token_provider=provider
        ) as chat:
            assert (await next_event(chat, Ready)).user == "alice"
        assert asked == ["fresh"]
        assert server.handshakes == 2


async def test_a_provider_whose_token_is_refused_too_stops_after_two_handshakes() -> (
    None
):
    asked: list[str] = []

    def provider() -> str:
        asked.append("fresh")
        return "still-not-a-jwt"

    with counted_server() as server:
        with pytest.raises(ChatStopped) as stopped:
            async with connect(
                server.url("lobby"), token="test", token_provider=provider
            ):
                pytest.fail("a refused client must not enter")
        assert stopped.value.code == 4401
        assert "after a fresh token" in str(stopped.value)
        assert asked == ["fresh"]
        await no_more_handshakes(server, 2)


async def test_the_first_token_comes_from_the_provider() -> None:
    with counted_server() as server:
        async with connect(
            server.url("lobby"), token_provider=lambda: token("carol")
        ) as chat:
            assert (await next_event(chat, Ready)).user == "carol"
        assert server.handshakes == 1


async def test_a_provider_that_raises_stops_with_its_error_as_the_cause() -> None:
    def provider() -> str:
        raise LookupError("login service down")

    with counted_server() as server:
        with pytest.raises(ChatStopped) as stopped:
            async with connect(
                server.url("lobby"), token="test", token_provider=provider
            ):
                pytest.fail("a refused client must not enter")
        assert "the token provider raised LookupError" in str(stopped.value)
        assert isinstance(stopped.value.__cause__, LookupError)
        await no_more_handshakes(server, 1)


# -- reconnect after a server restart, the send queue ----------------------------------


async def test_reconnects_after_a_server_restart_and_sends_the_queue() -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws/chat/lobby"
    sleep = FakeSleep()

    async def short_sleep(seconds: float) -> None:
        await sleep(seconds)
        await anyio.sleep(min(seconds, 0.2))

    with uvicorn_on(port) as server:
        chat = connect(url, token=token("alice"), max_queue=3, sleep=short_sleep)
        async with chat:
            await next_event(chat, Ready)
            await anyio.to_thread.run_sync(server.stop)
            gone = await next_event(chat, Disconnected)
            assert gone.code == 1012  # uvicorn's own close on shutdown
            assert not chat.connected
            for n in range(3):
                await chat.send(f"queued {n}")
            with pytest.raises(SendQueueFull, match="max_queue=3"):
                await chat.send("one too many")
            assert chat.queued == 3
            with uvicorn_on(port):
                back = await next_event(chat, Reconnected, seconds=30)
                assert back.type == "reconnected"
                assert back.recovered is False  # the in-memory history went with it
                assert back.ready.user == "alice"
                assert chat.connected
                assert chat.queued == 0
                got = await next_event(chat, Message)
                assert got.body == "queued 0"
                async with client(f"{url}?token={token('bob')}") as bob:
                    await chat.send("after")
                    assert [m["body"] for m in await messages(bob, 1)] == ["after"]
    assert sleep.delays, "the client waited before reconnecting"
    assert all(0 <= d <= 30 for d in sleep.delays)


# -- backoff: full jitter within bounds, on a fake clock -------------------------------


def test_the_backoff_ceilings_per_close_code() -> None:
    restart, abnormal, busy = policy_for(1012), policy_for(1006), policy_for(1013)
    assert [Backoff.ceiling(restart, n) for n in range(7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
        10.0,
    ]
    assert [Backoff.ceiling(abnormal, n) for n in (0, 1, 4, 5, 60)] == [
        1.0,
        2.0,
        16.0,
        30.0,
        30.0,
    ]
    assert Backoff.ceiling(busy, 0) == 15.0
    assert Backoff.ceiling(busy, 9) == 120.0
    for code in (1001, 1006, 1011, 1012, 1013):
        assert policy_for(code).action == "retry"
    for code, reason in [
        (4400, "bad_request"),
        (4403, "forbidden"),
        (1003, ""),
        (1009, ""),
        (4429, "too_many_connections: at most 16"),
    ]:
        assert policy_for(code, reason).action == "stop", code
    assert policy_for(4401, "token_expired: at 12:00").action == "refresh_token"
    assert policy_for(4429, "rate_limited").action == "retry"
    assert policy_for(4999).action == "stop"


def test_full_jitter_draws_uniformly_below_the_ceiling() -> None:
    backoff = Backoff(random.Random(7))
    policy = policy_for(1006)
    draws = [backoff.delay(policy, 3) for _ in range(2000)]
    assert all(0 <= d <= 8.0 for d in draws)
    # Full jitter, not "half plus jitter": draws below a quarter of the ceiling.
    assert min(draws) < 0.1
    assert max(draws) > 7.9
    assert 3.7 < sum(draws) / len(draws) < 4.3


async def test_backoff_delays_within_bounds_on_a_fake_clock() -> None:
    port = free_port()  # nothing listens: every attempt is refused (1006)
    sleep = FakeSleep()
    with pytest.raises(ChatStopped) as stopped:
        async with connect(
            f"ws://127.0.0.1:{port}/ws/chat/lobby",
            token=token("alice"),
            rng=random.Random(42),
            sleep=sleep,
            max_attempts=8,
        ):
            pytest.fail("nothing listens")
    assert stopped.value.code == 1006
    assert "gave up after 8 tries" in str(stopped.value)
    assert "wschat doctor" in stopped.value.fix
    expected = Backoff(random.Random(42))
    policy = policy_for(1006)
    assert sleep.delays == [expected.delay(policy, n) for n in range(8)]
    for n, delay in enumerate(sleep.delays):
        assert 0 <= delay <= min(30.0, 2.0**n)
    assert sleep.now == pytest.approx(sum(sleep.delays))


# -- closing at any time: cancellation safe, no task leaks -----------------------------


async def test_cancelled_while_reconnecting_leaves_no_task() -> None:
    before = tasks()
    port = free_port()
    with anyio.move_on_after(0.5) as scope:
        async with connect(
            f"ws://127.0.0.1:{port}/ws/chat/lobby", token=token("alice")
        ):
            pytest.fail("nothing listens")
    assert scope.cancelled_caught
    await no_task_leaks(before)


async def test_cancelled_while_reading_events_closes_the_socket() -> None:
    before = tasks()
    with counted_server() as server:
        with anyio.move_on_after(0.5) as scope:
            async with connect(server.url("lobby"), token=token("alice")) as chat:
                async for _ in chat:
                    pass
        assert scope.cancelled_caught
        await server.wait_connections(0)
        await no_task_leaks(before)
        await no_more_handshakes(server, 1)


async def test_aclose_from_another_task_ends_the_iteration() -> None:
    before = tasks()
    with counted_server() as server:
        async with connect(server.url("lobby"), token=token("alice")) as chat:
            seen: list[Event] = []

            async def read() -> None:
                async for event in chat:
                    seen.append(event)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await wait_until(lambda: _true_when(bool(seen)))
                await chat.aclose()
            with pytest.raises(ClientError, match="closed"):
                await chat.send("late")
        await server.wait_connections(0)
        await no_task_leaks(before)


async def _true_when(value: bool) -> bool:
    return value


async def test_an_exception_in_the_body_closes_cleanly() -> None:
    before = tasks()
    with counted_server() as server:
        with pytest.raises(KeyError):
            async with connect(server.url("lobby"), token=token("alice")):
                raise KeyError("app bug")
        await server.wait_connections(0)
        await no_task_leaks(before)


# -- limits and the trio answer --------------------------------------------------------


def test_the_limits_are_pinned() -> None:
    assert DEFAULT_MAX_QUEUE == 100
    assert DEFAULT_MAX_EVENTS == 1000


async def test_sends_while_connected_are_not_queued() -> None:
    with counted_server() as server:
        async with connect(server.url("lobby"), token=token("a"), max_queue=0) as chat:
            for n in range(5):
                await chat.send(n)
            assert chat.queued == 0
            got = [(await next_event(chat, Message)).body for _ in range(5)]
            assert got == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_it_says_asyncio_only() -> None:
    with pytest.raises(ClientError, match="asyncio only"):
        async with connect("ws://127.0.0.1:1/ws/chat/lobby", token="t"):
            pass
