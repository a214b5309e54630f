"""The core on fake sockets: a Connection and its writer, and the endpoint serving
:class:`~tests.support.common.FakeTransport` sockets in the test's task group.

No server, no threads: what ``tests/core`` runs on asyncio and trio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from tests.support.common import SECRET, FakeTransport
from wschat import ChatOptions, Connection, ConnectionManager, TokenVerifier
from wschat.auth import Principal
from wschat.connection import OutboxLimits
from wschat.endpoint import ChatEndpoint
from wschat.errors import NormalClosure
from wschat.ids import ChatId, ConnectionId, UserId
from wschat.protocol import JSON
from wschat.sweeper import WriterSweeper
from wschat.testing import mint_token
from wschat.transport import Handshake

ROOM = ChatId("room-1")


def make_conn(
    *,
    max_messages: int = 1024,
    max_bytes: int = 4 * 1024 * 1024,
    overflow: Any = "close",
    batch: bool = False,
    sweeper: WriterSweeper | None = None,
) -> Connection:
    return Connection(
        ConnectionId("c-1"),
        Principal(UserId("alice")),
        ROOM,
        OutboxLimits(max_messages, max_bytes, overflow),
        batch=batch,
        sweeper=sweeper,
    )


def frame(n: int, pad: int = 0) -> str:
    return json.dumps({"type": "message", "n": n, "pad": "x" * pad})


@asynccontextmanager
async def writer(conn: Connection, transport: FakeTransport) -> AsyncIterator[None]:
    """Run ``conn.run_writer`` for the duration of the block, then stop it."""
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run_writer, transport)
            yield
            conn.abort(NormalClosure())
    transport.aclose_streams()


async def stuck_on_first(conn: Connection, transport: FakeTransport) -> None:
    """Wait until the writer holds the first frame inside a blocked send."""
    with anyio.fail_after(2):
        await transport.blocked.wait()
    assert conn.queued == 0


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a condition no event announces (a writer retiring), bounded."""
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


def handshake(
    token: str | None = None,
    *,
    chat_id: str = ROOM,
    origin: str | None = None,
    subprotocols: tuple[str, ...] = ("wschat.v1",),
) -> Handshake:
    headers = {"host": "chat.example"}
    if origin is not None:
        headers["origin"] = origin
    query = f"token={token}".encode() if token is not None else b""
    return Handshake(chat_id, query, headers, list(subprotocols), "ws", "1.2.3.4:5")


def token_for(user: str) -> str:
    return mint_token(SECRET, user, ttl=600)


class Client:
    """One fake socket served by the endpoint in the test's task group."""

    def __init__(self, transport: FakeTransport) -> None:
        self.t = transport

    def send(self, data: JSON) -> None:
        self.t.feed(json.dumps(data))

    async def recv(self) -> dict[str, Any]:
        return await self.t.next_frame()

    async def recv_type(self, kind: str) -> dict[str, Any]:
        """The next frame of ``kind``, skipping presence frames."""
        while True:
            data = await self.recv()
            if data["type"] != "presence" or kind == "presence":
                assert data["type"] == kind, data
                return data


@asynccontextmanager
async def chat(
    manager: ConnectionManager | None = None,
    verifier: TokenVerifier | None = None,
    **options: Any,
) -> AsyncIterator[Callable[..., Any]]:
    """Yield ``open(handshake) -> Client`` that serves each socket in a task."""
    manager = manager if manager is not None else ConnectionManager()
    verifier = (
        verifier
        if verifier is not None
        else TokenVerifier(SECRET, algorithms=["HS256"])
    )
    endpoint = ChatEndpoint(manager, verifier, ChatOptions(**options))
    transports: list[FakeTransport] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            def open_(hs: Handshake) -> Client:
                transport = FakeTransport()
                transports.append(transport)
                tg.start_soon(endpoint.serve, hs, transport)
                return Client(transport)

            yield open_
            for transport in transports:
                transport.hang_up()
    for transport in transports:
        transport.aclose_streams()
    assert len(manager) == 0, "a connection outlived its socket"
    assert len(manager.registry) == 0


async def sending_to_alice(
    manager: ConnectionManager,
    open_: Callable[[Handshake], Client],
    frames: list[str],
    others: Sequence[str] = (),
) -> tuple[Client, Connection, list[Client]]:
    """Alice joins (then ``others``), and the server broadcasts ``frames`` to the
    room while her side takes nothing: returns once her writer is inside a send."""
    alice = open_(handshake(token_for("alice")))
    await alice.recv_type("ready")
    (conn,) = manager.connections()
    joined = []
    for user in others:
        joined.append(open_(handshake(token_for(user))))
        await joined[-1].recv_type("ready")
    alice.t.gate = anyio.Event()  # every send waits until the test lets it
    for text in frames:
        manager.broadcast_nowait(conn.chat_id, text)
    with anyio.fail_after(2):
        await alice.t.blocked.wait()
    return alice, conn, joined
