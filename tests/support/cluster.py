"""Managers on a shared backplane in one process: each manager is one "process".

:func:`cluster` runs managers on the given backplanes (a :class:`MemoryHub` pair, or
Redis); :func:`join` connects a user whose writer drains into a :class:`Sink` the test
reads.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup

from wschat import ConnectionManager
from wschat.auth import Principal
from wschat.backplane import Backplane, MemoryBackplane, MemoryHub
from wschat.connection import Connection
from wschat.ids import ChatId, UserId
from wschat.protocol import encode_ready

ROOM = ChatId("lobby")
WAIT = 5.0


class Sink:
    """A transport that hands every frame the writer sends to the test.

    A plain deque and an event, not a memory object stream: nothing to close.
    """

    def __init__(self) -> None:
        self._texts: deque[str] = deque()
        self._arrived: anyio.Event | None = None
        self.seen: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self._texts.append(text)
        if self._arrived is not None:
            self._arrived.set()

    async def send_many(self, texts: Sequence[str]) -> None:
        self._texts.extend(texts)
        if self._arrived is not None:
            self._arrived.set()

    async def accept(self, subprotocol: str | None) -> None:
        raise NotImplementedError

    async def receive(self) -> str | bytes | None:
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    async def deny(self, status: int, body: str | None) -> None:
        raise NotImplementedError

    async def next(self) -> dict[str, Any]:
        with anyio.fail_after(WAIT):
            while not self._texts:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        frame: dict[str, Any] = json.loads(self._texts.popleft())
        self.seen.append(frame)
        return frame

    async def next_of(self, kind: str) -> dict[str, Any]:
        """The next frame of a type, skipping others (presence, for example)."""
        with anyio.fail_after(WAIT):
            while True:
                frame = await self.next()
                if frame["type"] == kind:
                    return frame

    def pending(self) -> list[dict[str, Any]]:
        out = [json.loads(text) for text in self._texts]
        self._texts.clear()
        return out


class Client:
    """A connection on a manager, with its writer draining into a :class:`Sink`."""

    def __init__(self, manager: ConnectionManager, conn: Connection) -> None:
        self.manager = manager
        self.conn = conn
        self.sink = Sink()

    async def ready(self) -> dict[str, Any]:
        frame = await self.sink.next()
        assert frame["type"] == "ready", frame
        return frame

    def say(self, body: Any) -> None:
        self.manager.publish_nowait(self.conn, body)

    def leave(self) -> None:
        self.conn.abort(None)
        self.manager.disconnect(self.conn)


def ready_frame(manager: ConnectionManager) -> Callable[[Connection], str]:
    def build(conn: Connection) -> str:
        return encode_ready(
            connection_id=conn.id,
            chat_id=conn.chat_id,
            user=conn.user_id,
            members=manager.members(conn.chat_id),
            limits={},
            batch=False,
        )

    return build


def join(
    tg: TaskGroup, manager: ConnectionManager, user: str, room: ChatId = ROOM
) -> Client:
    conn = manager.connect(
        Principal(UserId(user)), room, first_frame=ready_frame(manager)
    )
    client = Client(manager, conn)
    tg.start_soon(conn.run_writer, client.sink)
    return client


@asynccontextmanager
async def cluster(
    *backplanes: Backplane, presence_ttl: float = 30.0
) -> AsyncIterator[tuple[TaskGroup, list[ConnectionManager]]]:
    managers = [
        ConnectionManager(backplane=b, presence_ttl=presence_ttl) for b in backplanes
    ]
    async with AsyncExitStack() as stack:
        for manager in managers:
            await stack.enter_async_context(manager)
        tg = await stack.enter_async_context(anyio.create_task_group())
        yield tg, managers
        tg.cancel_scope.cancel()


def hub_pair(hub: MemoryHub | None = None) -> tuple[MemoryBackplane, MemoryBackplane]:
    hub = hub or MemoryHub()
    return MemoryBackplane(hub), MemoryBackplane(hub)
