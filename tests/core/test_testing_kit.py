"""The public test kit: ``wschat.testing.ChatTestClient`` on every adapter.

Each test runs on asyncio and trio, on ``chat_app``, a Starlette app, a FastAPI app
and a bare ``ChatEndpoint``: no sockets, no server, no threads. The two-user chat,
the 4403 and the ``token_expired`` tests are the ones a user writes first; their
durations are in ``pytest --durations``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute
from starlette.websockets import WebSocket

from tests.support.common import SECRET, SERVER_CLOSE_CODES, server_close, source_env
from tests.support.core import wait_until
from wschat import (
    ChatId,
    ChatOptions,
    ConnectionManager,
    Principal,
    TokenVerifier,
)
from wschat.asgi import chat_app
from wschat.backplane.memory import MemoryBackplane, MemoryHub
from wschat.endpoint import ChatEndpoint
from wschat.fastapi import chat_router
from wschat.starlette import chat_routes
from wschat.testing import (
    DEFAULT_TIMEOUT,
    AuthOk,
    ChatClosed,
    ChatDenied,
    ChatTestClient,
    ChatTestSession,
    Error,
    Message,
    OtherFrame,
    Pong,
    Presence,
    ProtocolViolation,
    Ready,
    Resync,
    mint_token,
    parse_server_frame,
)

pytestmark = pytest.mark.anyio

ADAPTERS = ["asgi", "starlette", "fastapi", "endpoint"]
verifier = TokenVerifier(SECRET, algorithms=["HS256"])


def only_members(principal: Principal, chat_id: ChatId) -> bool:
    """The lobby is open; other rooms need the room in the token's ``rooms``."""
    return chat_id == "lobby" or chat_id in principal.claims.get("rooms", [])


def build(kind: str, manager: ConnectionManager | None = None, **options: Any) -> Any:
    """The same chat, served by one of the adapters (or the bare endpoint)."""
    manager = manager or ConnectionManager()
    options.setdefault("authorize", only_members)
    if kind == "asgi":
        return chat_app(manager, verifier, **options)
    if kind == "starlette":
        routes = chat_routes(manager, verifier, **options)
        return Starlette(routes=[Mount("/ws", routes=routes)])
    if kind == "fastapi":
        app = FastAPI()
        app.include_router(chat_router(manager, verifier, **options), prefix="/ws")
        return app
    return ChatEndpoint(manager, verifier, ChatOptions(**options))


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the three tests a user writes first -----------------------------------------------


async def test_two_users_chat(adapter: str) -> None:
    async with (
        ChatTestClient(build(adapter), secret=SECRET) as client,
        client.connect("lobby", user="alice") as alice,
    ):
        ready = await alice.receive()
        assert isinstance(ready, Ready)
        assert (ready.user, ready.chat_id, ready.members) == (
            "alice",
            "lobby",
            ("alice",),
        )
        async with client.connect("lobby", user="bob") as bob:
            assert (await bob.receive_until(Ready)).members == ("alice", "bob")
            await alice.send({"text": "hi bob"}, client_id="a-1")
            for session in (alice, bob):
                message = await session.receive_until(Message)
                assert (message.user, message.body, message.client_id) == (
                    "alice",
                    {"text": "hi bob"},
                    "a-1",
                )


async def test_a_room_the_user_may_not_enter_closes_with_4403(adapter: str) -> None:
    async with (
        ChatTestClient(build(adapter), secret=SECRET) as client,
        client.connect("board-room", user="mallory") as mallory,
    ):
        with pytest.raises(ChatClosed) as closed:
            await mallory.receive()
        assert (closed.value.code, closed.value.by) == (4403, "server")
        assert closed.value.reason.startswith("forbidden:")
        assert (mallory.close_code, mallory.close_reason) == (4403, closed.value.reason)


async def test_an_expired_token_closes_with_4401_token_expired(adapter: str) -> None:
    async with (
        ChatTestClient(build(adapter), secret=SECRET) as client,
        client.connect("lobby", user="alice", ttl=-120) as alice,
    ):
        code, reason = await alice.wait_closed()
        assert code == 4401
        assert reason.startswith("token_expired:")


# -- frames ----------------------------------------------------------------------------


async def test_every_server_frame_comes_back_typed(adapter: str) -> None:
    manager = ConnectionManager(overflow="drop_newest", outbox_max_messages=2)
    async with (
        ChatTestClient(build(adapter, manager), secret=SECRET) as client,
        client.connect("lobby", user="alice") as alice,
    ):
        ready = await alice.receive()
        assert isinstance(ready, Ready)
        assert ready.protocol == 1
        assert ready.limits["outbox_max_messages"] == 2
        assert ready.batch is False
        assert ready.data["type"] == "ready"
        assert await alice.receive() == Presence("lobby", 1, joins=("alice",))
        await alice.ping(7)
        assert await alice.receive() == Pong(7)
        await alice.ping()
        assert await alice.receive() == Pong(None)
        await alice.send_text("not json")
        error = await alice.receive()
        assert isinstance(error, Error)
        assert error.code == "bad_json"
        await alice.authenticate(mint_token(SECRET, "alice", ttl=600))
        refreshed = await alice.receive()
        assert isinstance(refreshed, AuthOk)
        assert refreshed.ok
        assert refreshed.exp is not None
        # Frames the application sends come back as OtherFrame; an outbox of two
        # frames drops the third and says so once the client caught up.
        for n in range(3):
            manager.broadcast_nowait(
                ChatId("lobby"), json.dumps({"type": "tick", "n": n})
            )
        ticks = [await alice.receive() for _ in range(2)]
        assert ticks == [OtherFrame("tick"), OtherFrame("tick")]
        assert [tick.data["n"] for tick in ticks] == [0, 1]
        resync = await alice.receive()
        assert isinstance(resync, Resync)
        assert resync.message == "1 messages were dropped"


async def test_batch_frames_are_unpacked(adapter: str) -> None:
    manager = ConnectionManager()
    async with (
        ChatTestClient(build(adapter, manager), secret=SECRET) as client,
        client.connect("lobby", user="alice", batch=True) as alice,
    ):
        assert (await alice.receive_until(Ready)).batch is True
        await alice.receive_until(Presence)
        # Queued in one go: the writer sends them in one batch frame.
        for n in range(5):
            manager.broadcast_nowait(
                ChatId("lobby"), json.dumps({"type": "tick", "n": n})
            )
        got = [(await alice.receive()).data["n"] for _ in range(5)]
        assert got == [0, 1, 2, 3, 4]


def test_parse_server_frame() -> None:
    batch = '{"type":"batch","frames":[{"type":"pong"},{"type":"x","y":1}]}'
    assert parse_server_frame(batch) == [Pong(None), OtherFrame("x")]
    message = {
        "type": "message",
        "id": "m1",
        "chat_id": "lobby",
        "user": "alice",
        "body": [1],
        "ts": 5,
        "client_id": None,
        "offset": 9,
        "reactions": 3,  # a field a later version adds: kept in data
    }
    (parsed,) = parse_server_frame(json.dumps(message))
    assert parsed == Message("m1", "lobby", "alice", [1], 5, None, offset=9)
    assert parsed.data["reactions"] == 3
    with pytest.raises(ProtocolViolation, match="without 'count'"):
        parse_server_frame('{"type": "presence", "chat_id": "l", "event": "join"}')
    with pytest.raises(ProtocolViolation, match="not JSON"):
        parse_server_frame("nope")
    with pytest.raises(ProtocolViolation, match="without a type"):
        parse_server_frame("[1]")


# -- tokens, subprotocols, closes -----------------------------------------------------


async def test_token_in_the_subprotocol_list(adapter: str) -> None:
    async with (
        ChatTestClient(build(adapter), secret=SECRET) as client,
        client.connect("lobby", user="alice", token_via="subprotocol") as alice,
    ):
        assert alice.subprotocol == "wschat.v1"
        assert (await alice.receive_until(Ready)).user == "alice"


async def test_a_token_given_as_is_and_claims(adapter: str) -> None:
    token = mint_token(SECRET, "carol", claims={"rooms": ["board-room"]})
    async with (
        ChatTestClient(build(adapter)) as client,
        client.connect("board-room", token=token) as carol,
    ):
        assert (await carol.receive_until(Ready)).chat_id == "board-room"
    async with (
        ChatTestClient(build(adapter), secret=SECRET) as client,
        client.connect("board-room", user="dan", claims={"rooms": ["board-room"]}) as d,
    ):
        assert (await d.receive_until(Ready)).user == "dan"


async def test_no_token_closes_with_token_missing(adapter: str) -> None:
    async with (
        ChatTestClient(build(adapter)) as client,
        client.connect("lobby") as anonymous,
    ):
        code, reason = await anonymous.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_missing")


async def test_user_without_a_secret_says_what_to_pass() -> None:
    async with ChatTestClient(build("asgi")) as client:
        with pytest.raises(ValueError, match=r"pass secret=\.\.\. to ChatTestClient"):
            async with client.connect("lobby", user="alice"):
                pass


@asynccontextmanager
async def alice_in_lobby(
    adapter: str, manager: ConnectionManager
) -> AsyncIterator[ChatTestSession]:
    """Alice connected to ``lobby`` through ``adapter``, past her own join."""
    async with (
        ChatTestClient(build(adapter, manager), secret=SECRET) as client,
        client.connect("lobby", user="alice") as alice,
    ):
        await alice.receive_until(Presence)
        yield alice


async def test_the_server_closing_is_seen_and_sending_after_it_fails(
    adapter: str,
) -> None:
    manager = ConnectionManager()
    async with alice_in_lobby(adapter, manager) as alice:
        assert manager.close_room(ChatId("lobby")) == 1
        code, reason = await alice.wait_closed()
        assert (code, reason) == (4403, "forbidden: this chat was closed")
        assert alice.closed
        assert alice.closed_by == "server"
        with pytest.raises(ChatClosed):
            await alice.send("too late")
        with pytest.raises(ChatClosed, match="4403"):
            await alice.receive()


async def frames_until_closed(session: ChatTestSession) -> list[Any]:
    """Every frame the session receives until the server closes it."""
    frames = []
    try:
        while True:
            frames.append(await session.receive())
    except ChatClosed:
        return frames


@pytest.mark.parametrize("close", ["room", "user", "all"])
async def test_a_broadcast_just_before_a_close_reaches_the_client_first(
    adapter: str, close: str
) -> None:
    # "The room is closing" and then close_room: the close cancelled the writer at
    # once and the notice was lost without a word.
    manager = ConnectionManager()
    async with alice_in_lobby(adapter, manager) as alice:
        (conn,) = manager.connections()
        with anyio.fail_after(5):  # ready and her join, sent and counted
            await wait_until(lambda: conn.sent == 2)
        notices = [json.dumps({"type": "notice", "n": n}) for n in range(3)]
        for notice in notices:
            assert manager.broadcast_nowait(ChatId("lobby"), notice) == 1
        assert server_close(manager, conn, close) == 1
        got = await frames_until_closed(alice)
        code, _ = await alice.wait_closed()
        assert code == SERVER_CLOSE_CODES[close]
        assert [(f.type, f.data) for f in got] == [
            ("notice", json.loads(n)) for n in notices
        ]


async def test_frames_sent_before_the_close_are_received_first() -> None:
    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text('{"type": "last-words"}')
        await websocket.close(4000, "bye for now")

    routes = [WebSocketRoute("/ws/chat/{chat_id}", app)]
    async with (
        ChatTestClient(Starlette(routes=routes)) as client,
        client.connect("lobby") as session,
    ):
        assert await session.wait_closed() == (4000, "bye for now")
        assert await session.receive() == OtherFrame("last-words")
        with pytest.raises(ChatClosed, match="4000 bye for now"):
            await session.receive()


async def test_query_and_headers_reach_the_handshake(adapter: str) -> None:
    app = build(adapter, allowed_origins=["https://app.example.com"])
    async with ChatTestClient(app, secret=SECRET) as client:
        async with client.connect("lobby", user="alice", query={"batch": "1"}) as a:
            assert (await a.receive_until(Ready)).batch is True
        with pytest.raises(ChatDenied):
            async with client.connect(
                "lobby", user="alice", headers={"Origin": "https://evil.example"}
            ):
                pass


async def test_the_client_closing_ends_the_connection(adapter: str) -> None:
    manager = ConnectionManager()
    async with ChatTestClient(build(adapter, manager), secret=SECRET) as client:
        async with client.connect("lobby", user="alice") as alice:
            await alice.receive_until(Ready)
            await alice.close(4000, "done here")
            assert (alice.close_code, alice.close_reason) == (4000, "done here")
            with pytest.raises(ChatClosed) as closed:
                await alice.receive_until(Message)
            assert closed.value.by == "client"
        # The app returned: the manager forgot the connection.
        assert manager.stats().connections == 0


async def test_waits_are_bounded_and_say_what_came_instead(adapter: str) -> None:
    async with (
        ChatTestClient(build(adapter), secret=SECRET, timeout=0.05) as client,
        client.connect("lobby", user="alice") as alice,
    ):
        assert alice.timeout == 0.05
        # Her own join's presence frame first, on a generous bound: on a loaded
        # host it may come later than 0.05 s and land in a wait below.
        alice.timeout = 5.0
        await alice.receive_until(Presence)
        alice.timeout = 0.05
        with pytest.raises(TimeoutError, match=r"no 'message' frame within 0\.05 s"):
            await alice.receive_until(Message)
        with pytest.raises(TimeoutError, match="no frame from the server"):
            await alice.receive()
        with pytest.raises(TimeoutError, match="did not close"):
            await alice.wait_closed()
    assert DEFAULT_TIMEOUT == 2.0


async def test_receive_until_says_what_came_before_a_close(adapter: str) -> None:
    async with (
        ChatTestClient(build(adapter), secret=SECRET) as client,
        client.connect("board-room", user="mallory") as mallory,
    ):
        with pytest.raises(ChatClosed, match=r"4403 forbidden.*before it: \[\]"):
            await mallory.receive_until(Ready)


# -- refusals before accept ------------------------------------------------------------


async def test_a_refused_origin_is_a_denied_handshake(adapter: str) -> None:
    app = build(adapter, allowed_origins=["https://app.example.com"])
    async with ChatTestClient(app, secret=SECRET) as client:
        async with client.connect(
            "lobby", user="alice", origin="https://app.example.com"
        ) as alice:
            await alice.receive_until(Ready)
        with pytest.raises(ChatDenied) as denied:
            async with client.connect(
                "lobby", user="alice", origin="https://evil.example"
            ):
                pass
        assert (denied.value.status, denied.value.body) == (403, None)


async def test_http_denials_carry_the_status_and_reason(adapter: str) -> None:
    async with ChatTestClient(build(adapter, http_denials=True)) as client:
        with pytest.raises(ChatDenied) as denied:
            async with client.connect("lobby", token="test"):
                pass
    assert denied.value.status == 401
    assert denied.value.body is not None
    assert denied.value.body.startswith("token_malformed: not a JWT")


@pytest.mark.parametrize("kind", ["asgi", "starlette", "fastapi"])
async def test_a_path_with_no_chat_route_is_denied(kind: str) -> None:
    async with ChatTestClient(build(kind), secret=SECRET, prefix="/nowhere") as client:
        with pytest.raises(ChatDenied) as denied:
            async with client.connect("lobby", user="alice"):
                pass
    assert denied.value.status == 403


# -- lifespan --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["asgi", "endpoint"])
async def test_the_lifespan_runs_a_shared_backplane(kind: str) -> None:
    """Two "processes" on one hub: the lifespan runs each manager's cluster side."""
    hub = MemoryHub()
    one = ConnectionManager(backplane=MemoryBackplane(hub), node_id="one")
    two = ConnectionManager(backplane=MemoryBackplane(hub), node_id="two")
    async with (
        ChatTestClient(build(kind, one), secret=SECRET) as first,
        ChatTestClient(build(kind, two), secret=SECRET) as second,
        first.connect("lobby", user="alice") as alice,
        second.connect("lobby", user="bob") as bob,
    ):
        assert one.backplane_health()["healthy"]
        await alice.receive_until(Ready)
        await bob.receive_until(Ready)
        await alice.send("across processes")
        message = await bob.receive_until(Message)
        assert (message.user, message.body) == ("alice", "across processes")
    assert not one.backplane_health()["healthy"]  # stopped with the lifespan


async def test_lifespan_off_leaves_the_manager_stopped() -> None:
    manager = ConnectionManager(backplane=MemoryBackplane(MemoryHub()))
    async with ChatTestClient(build("asgi", manager), lifespan="off"):
        assert not manager.backplane_health()["healthy"]


async def test_lifespan_failures_are_raised() -> None:
    async def no_lifespan(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] != "lifespan", "this app has no lifespan"

    async with ChatTestClient(no_lifespan):  # "auto": an app without one is fine
        pass
    with pytest.raises(RuntimeError, match=r"did not answer lifespan\.startup"):
        async with ChatTestClient(no_lifespan, lifespan="on"):
            pass

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(RuntimeError, match="lifespan startup failed: no database"):
        async with ChatTestClient(failing):
            pass
    with pytest.raises(ValueError, match="lifespan must be"):
        ChatTestClient(failing, lifespan="yes")  # type: ignore[arg-type]


# -- other apps ------------------------------------------------------------------------


async def test_an_app_that_raises_fails_the_test_with_its_error() -> None:
    async def broken(websocket: WebSocket) -> None:
        await websocket.accept()
        raise LookupError("a bug in the app")

    app = Starlette(routes=[WebSocketRoute("/ws/chat/{chat_id}", broken)])
    async with ChatTestClient(app) as client:
        with pytest.raises(LookupError, match="a bug in the app"):
            async with client.connect("lobby") as session:
                await session.receive()


async def test_binary_frames_close_with_1003(adapter: str) -> None:
    async with (
        ChatTestClient(build(adapter), secret=SECRET) as client,
        client.connect("lobby", user="alice") as alice,
    ):
        await alice.send_bytes(b"\x00")
        code, reason = await alice.wait_closed()
        assert (code, reason.split(":")[0]) == (1003, "text_only")


@pytest.mark.parametrize("sent", [b"\x01", "not json", '{"no": "type"}'])
async def test_a_server_breaking_the_protocol_is_reported(sent: str | bytes) -> None:
    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        if isinstance(sent, bytes):
            await websocket.send_bytes(sent)
        else:
            await websocket.send_text(sent)
        await websocket.receive()  # the client's disconnect

    routes = [WebSocketRoute("/ws/chat/{chat_id}", app)]
    async with (
        ChatTestClient(Starlette(routes=routes)) as client,
        client.connect("lobby") as session,
    ):
        with pytest.raises(ProtocolViolation):
            await session.receive()
        assert session.close_code == 1006


async def test_an_app_that_never_answers_times_out() -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await anyio.sleep_forever()

    async with ChatTestClient(silent, timeout=0.05) as client:
        with pytest.raises(TimeoutError, match="did not accept or refuse"):
            async with client.connect("lobby"):
                pass


async def test_the_body_s_own_exception_is_not_wrapped() -> None:
    async def body() -> None:
        async with (
            ChatTestClient(build("asgi"), secret=SECRET) as client,
            client.connect("lobby", user="alice") as alice,
        ):
            await alice.receive_until(Ready)
            raise KeyError("from the test")

    with pytest.raises(KeyError):
        await body()


# -- imports ---------------------------------------------------------------------------


def test_importing_the_kit_loads_no_framework_redis_or_asyncio() -> None:
    code = (
        "import sys, wschat.testing\n"
        "bad = {'asyncio', 'trio', 'starlette', 'fastapi', 'redis', 'httpx'}\n"
        "print(sorted(bad & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=source_env(),
    ).stdout
    assert out.strip() == "[]"
