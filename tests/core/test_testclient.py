"""A manager used from several threads: Starlette's and FastAPI's ``TestClient``
with and without ``with``, sync routes, and plain test code.

FastAPI's docs make the client at module level and never enter it. Each
``websocket_connect`` of such a client runs the app in an event loop of its own, in a
thread of its own: two users in one room are then served by two event loops sharing
one manager. Before the fix, closing them hung with a CPU spinning in anyio's
cancellation code (a writer task was started from the other user's loop). A sync
(``def``) route runs in a worker thread even under a real server, and a frame it sent
to an idle connection was lost, and so was every later one to that connection.

Each test runs its body in a thread and fails if the thread is not done in time: a
hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, Literal

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect
from websockets.sync.client import connect

from tests.support.common import SECRET, serve, source_env
from wschat import (
    ChatId,
    Connection,
    ConnectionId,
    ConnectionManager,
    Principal,
    TokenVerifier,
    UserId,
)
from wschat.asgi import chat_app
from wschat.connection import OutboxLimits
from wschat.fastapi import chat_router
from wschat.starlette import chat_routes
from wschat.sweeper import WriterSweeper
from wschat.testing import ChatTestClient, Message, Presence, Ready, mint_token

verifier = TokenVerifier(SECRET, algorithms=["HS256"])

# As FastAPI's docs show it: app and client at module level, the client never entered.
fastapi_manager = ConnectionManager()
fastapi_app = FastAPI()
fastapi_app.include_router(chat_router(fastapi_manager, verifier), prefix="/ws")


@fastapi_app.post("/announce/{chat_id}")
def announce(chat_id: str) -> dict[str, int]:
    """A sync route: FastAPI runs it in a worker thread, not in the event loop."""
    frame = json.dumps({"type": "announce", "text": "maintenance at noon"})
    return {"queued": fastapi_manager.broadcast_nowait(ChatId(chat_id), frame)}


@fastapi_app.post("/kick/{user}")
async def kick(user: str) -> dict[str, int]:
    return {"closed": fastapi_manager.close_user(UserId(user))}


starlette_manager = ConnectionManager()
starlette_app = Starlette(
    routes=[Mount("/ws", routes=chat_routes(starlette_manager, verifier))]
)

MANAGERS = {"fastapi": fastapi_manager, "starlette": starlette_manager}
MODULE_CLIENTS = {
    ("fastapi", "asyncio"): TestClient(fastapi_app),
    ("fastapi", "trio"): TestClient(fastapi_app, backend="trio"),
    ("starlette", "asyncio"): TestClient(starlette_app),
    ("starlette", "trio"): TestClient(starlette_app, backend="trio"),
}
Backend = Literal["asyncio", "trio"]
#: Seconds a test body may take; each takes well under one.
BOUND = 15.0


def bounded(body: Callable[[], None], timeout: float = BOUND) -> None:
    """Run ``body`` in a thread; fail if it raises or is not done in ``timeout``."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"hung: not done after {timeout:g} s")
    if errors:
        raise errors[0]


def receive(ws: WebSocketTestSession, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind``, skipping others."""
    while True:
        frame: dict[str, Any] = ws.receive_json()
        if frame["type"] == kind:
            return frame


def new_room() -> str:
    return f"room-{uuid.uuid4().hex[:12]}"


def url(room: str, user: str) -> str:
    return f"/ws/chat/{room}?token={mint_token(SECRET, user)}"


def two_users_chat(client: TestClient, manager: ConnectionManager) -> None:
    room = new_room()
    with client.websocket_connect(url(room, "alice")) as alice:
        assert receive(alice, "ready")["members"] == ["alice"]
        with client.websocket_connect(url(room, "bob")) as bob:
            assert receive(bob, "ready")["members"] == ["alice", "bob"]
            alice.send_json({"type": "message", "body": "hi bob"})
            bob.send_json({"type": "message", "body": "hi alice"})
            for ws in (alice, bob):
                got = {receive(ws, "message")["body"] for _ in range(2)}
                assert got == {"hi bob", "hi alice"}
        # bob's socket is closed and his app returned: alice hears him leave.
        leave = receive(alice, "presence")
        assert (leave["leaves"], leave["count"]) == (["bob"], 1)
        alice.send_json({"type": "message", "body": "still here"})
        assert receive(alice, "message")["body"] == "still here"
    assert not manager.connections(ChatId(room))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
def test_module_level_client_without_with(framework: str, backend: str) -> None:
    client = MODULE_CLIENTS[framework, backend]
    bounded(lambda: two_users_chat(client, MANAGERS[framework]))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
def test_client_inside_with(framework: str, backend: Backend) -> None:
    app = fastapi_app if framework == "fastapi" else starlette_app

    def body() -> None:
        with TestClient(app, backend=backend) as client:
            two_users_chat(client, MANAGERS[framework])

    bounded(body)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_concurrent_senders_in_two_event_loops(backend: str) -> None:
    """Both users send at once, each from its own loop: nothing lost or reordered."""
    client = MODULE_CLIENTS["fastapi", backend]
    # Within the per-user burst (200 frames): the rate limit is per user, and the
    # users are fresh ones so that other tests' frames do not count against it.
    count = 200

    def body() -> None:
        room = new_room()
        suffix = room[-6:]
        with (
            client.websocket_connect(url(room, f"alice-{suffix}")) as alice,
            client.websocket_connect(url(room, f"bob-{suffix}")) as bob,
        ):
            receive(alice, "ready")
            receive(bob, "ready")

            def send(ws: WebSocketTestSession, who: str) -> None:
                for i in range(count):
                    ws.send_json({"type": "message", "body": [who, i]})

            senders = [
                threading.Thread(target=send, args=(alice, "alice")),
                threading.Thread(target=send, args=(bob, "bob")),
            ]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(BOUND)
            for ws in (alice, bob):
                got: dict[str, list[int]] = {"alice": [], "bob": []}
                for _ in range(2 * count):
                    who, i = receive(ws, "message")["body"]
                    got[who].append(i)
                assert got == {"alice": list(range(count)), "bob": list(range(count))}

    bounded(body)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("entered", [False, True], ids=["module-level", "with"])
def test_routes_reach_sockets_of_another_thread(
    backend: Backend, entered: bool
) -> None:
    """A sync route (a worker thread) broadcasts; an async route kicks."""

    def run(client: TestClient) -> None:
        room = new_room()
        with client.websocket_connect(url(room, "carol")) as carol:
            receive(carol, "presence")  # after ready: carol's own join
            for _ in range(2):  # the second frame proves the first did not wedge it
                assert client.post(f"/announce/{room}").json() == {"queued": 1}
                assert receive(carol, "announce")["text"] == "maintenance at noon"
            assert client.post("/kick/carol").json() == {"closed": 1}
            with pytest.raises(WebSocketDisconnect) as closed:
                receive(carol, "never")
            assert closed.value.code == 4403

    def body() -> None:
        if entered:
            with TestClient(fastapi_app, backend=backend) as client:
                run(client)
        else:
            run(MODULE_CLIENTS["fastapi", backend])

    bounded(body)


def test_test_code_may_call_the_manager_directly() -> None:
    """Plain test code (a thread with no event loop) broadcasts and kicks."""

    def body() -> None:
        room = new_room()
        with (
            TestClient(fastapi_app) as client,
            client.websocket_connect(url(room, "dave")) as dave,
        ):
            receive(dave, "presence")
            frame = '{"type": "notice"}'
            assert fastapi_manager.broadcast_nowait(ChatId(room), frame) == 1
            assert receive(dave, "notice") == {"type": "notice"}
            assert fastapi_manager.close_user(UserId("dave")) == 1
            with pytest.raises(WebSocketDisconnect) as closed:
                receive(dave, "never")
            assert closed.value.code == 4403

    bounded(body)


def test_sync_route_reaches_an_idle_socket_on_a_real_server() -> None:
    """Under uvicorn too: a sync route runs in a worker thread, not in the loop."""
    room = new_room()
    with (
        serve(fastapi_app, log_level="warning") as server,
        connect(f"{server.ws}{url(room, 'erin')}") as ws,
    ):
        while json.loads(ws.recv(timeout=5))["type"] != "presence":
            pass
        # Idle long enough for the writer to retire: the frame must start one.
        time.sleep(0.3)
        for _ in range(2):
            request = urllib.request.Request(
                f"{server.http}/announce/{room}", method="POST"
            )
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert json.load(answer) == {"queued": 1}
            assert json.loads(ws.recv(timeout=5))["type"] == "announce"


def test_one_manager_served_by_an_asyncio_and_a_trio_loop() -> None:
    """The core alone: two event loops of two libraries, in two threads, one room."""
    app_manager = ConnectionManager()
    app = chat_app(app_manager, verifier)
    room = new_room()
    alice_in = threading.Event()
    bob_in = threading.Event()
    alice_said = threading.Event()
    done = threading.Event()
    results: dict[str, Any] = {}

    # Without the lifespan: its shutdown closes every connection of the manager,
    # and the two clients share it.
    async def alice() -> None:
        async with (
            ChatTestClient(app, secret=SECRET, timeout=5, lifespan="off") as client,
            client.connect(room, user="alice") as ws,
        ):
            await ws.receive_until(Ready)
            alice_in.set()
            await anyio.to_thread.run_sync(bob_in.wait, BOUND)
            await ws.send("from asyncio")
            alice_said.set()
            results["alice"] = (await ws.receive_until(Message)).body
            # Stay until bob has his copy: then his leave reaches this loop.
            await anyio.to_thread.run_sync(done.wait, BOUND)
            results["leave"] = await ws.receive_until(Presence)

    async def bob() -> None:
        await anyio.to_thread.run_sync(alice_in.wait, BOUND)
        async with (
            ChatTestClient(app, secret=SECRET, timeout=5, lifespan="off") as client,
            client.connect(room, user="bob") as ws,
        ):
            results["members"] = (await ws.receive_until(Ready)).members
            bob_in.set()
            await anyio.to_thread.run_sync(alice_said.wait, BOUND)
            results["bob"] = (await ws.receive_until(Message)).body
        done.set()

    errors: list[BaseException] = []

    def run(func: Callable[[], Any], backend: str) -> None:
        try:
            anyio.run(func, backend=backend)
        except BaseException as exc:
            errors.append(exc)
            alice_in.set()
            bob_in.set()
            alice_said.set()
            done.set()

    threads = [
        threading.Thread(target=run, args=(alice, "asyncio"), daemon=True),
        threading.Thread(target=run, args=(bob, "trio"), daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
        assert not thread.is_alive(), "hung"
    if errors:
        raise errors[0]
    assert results["members"] == ("alice", "bob")
    assert results["alice"] == results["bob"] == "from asyncio"
    leave = results["leave"]
    assert (leave.leaves, leave.count) == (("bob",), 1)
    assert not app_manager.connections()


# -- the bookkeeping under it: one sweeper per event loop, the guard ------------------


def test_one_loop_never_turns_the_thread_guard_on() -> None:
    """Under a server (one loop, one thread) put_nowait never checks threads."""
    code = """
import anyio, json, sys
import wschat.sweeper
from wschat import ChatId, ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.testing import ChatTestClient, Message

SECRET = "s" * 40
manager = ConnectionManager()
app = chat_app(manager, TokenVerifier(SECRET, algorithms=["HS256"]))

async def main():
    async with ChatTestClient(app, secret=SECRET) as client:
        async with client.connect("lobby", user="a") as a, \\
                client.connect("lobby", user="b") as b:
            await a.send("hi")
            await b.receive_until(Message)
            manager.broadcast_nowait(ChatId("lobby"), json.dumps({"type": "x"}))
            manager.close_user("a")
            await a.wait_closed()

for backend in ("asyncio", "trio"):
    anyio.run(main, backend=backend)
print(wschat.sweeper.cross_thread, manager.stats().connections)
"""
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=source_env(),
    )
    assert run.stdout.split() == ["False", "0"], run.stderr


def test_each_event_loop_gets_a_sweeper_and_the_guard_follows() -> None:
    root = WriterSweeper()
    first_in, second_in, second_out = (threading.Event() for _ in range(3))
    seen: dict[str, Any] = {}

    def conn(name: str) -> Connection:
        return Connection(
            ConnectionId(name),
            Principal(UserId(name)),
            ChatId("lobby"),
            OutboxLimits(),
            sweeper=root,
        )

    async def first() -> None:
        one = conn("one")
        seen["alone"] = (root.several, root.guard, root.thread)
        first_in.set()
        await anyio.to_thread.run_sync(second_in.wait, BOUND)
        seen["both"] = (root.several, root.guard)
        await anyio.to_thread.run_sync(second_out.wait, BOUND)
        seen["after"] = (root.several, root.guard, len(root))
        one.release()
        seen["none"] = (root.several, root.thread)

    async def second() -> None:
        await anyio.to_thread.run_sync(first_in.wait, BOUND)
        two = conn("two")
        second_in.set()
        await anyio.sleep(0.05)
        two.release()
        second_out.set()

    threads = [
        threading.Thread(target=anyio.run, args=(first,), daemon=True),
        threading.Thread(
            target=anyio.run, args=(second,), kwargs={"backend": "trio"}, daemon=True
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
        assert not thread.is_alive()
    loop_thread = threads[0].ident
    assert seen["alone"] == (False, None, loop_thread)
    assert seen["both"] == (True, loop_thread)  # guarded while two loops serve
    assert seen["after"] == (False, None, 0)  # the other loop's sweeper is gone
    assert seen["none"] == (False, None)  # and the first loop's, once it is empty


def test_a_call_from_another_thread_turns_the_guard_on() -> None:
    manager = ConnectionManager()
    seen: dict[str, Any] = {}

    async def serve() -> None:
        conn = manager.connect(Principal(UserId("a")), ChatId("lobby"))
        seen["before"] = manager._sweeper.several
        # A thread with no event loop asks: from now on calls are handed over.
        await anyio.to_thread.run_sync(manager.connections)
        seen["after"] = (manager._sweeper.several, manager._sweeper.guard)
        manager.disconnect(conn)
        conn.release()

    anyio.run(serve)
    assert seen["before"] is False
    assert seen["after"] == (True, threading.get_ident())
