"""What a join leaves for the cyclic GC: no reference cycles, and few objects.

Every object a join makes is freed by its reference count or lives on with the
connection. docs/deployment.md ("Big rooms: the collector's full passes") relies on
it: with the oldest generation collected less often, nothing of a join waits for it.
A cycle made on every join (an exception kept with its traceback, a closure holding
its own frame) would survive into that generation and wait there.

And what lives on is walked by every full collection, whose time grows with the
square of a room's fill (docs/performance.md, "The storm and the cyclic GC"): an
idle connection holds four of wschat's coroutine frames, no wrapper more.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
from collections import Counter
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import anyio
import pytest

from tests.support.common import SECRET
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.testing import mint_token

pytestmark = pytest.mark.anyio

#: Joins into one room; past ready_members (100), so ready's list is partial.
JOINS = 150


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The collector off (objects stay where they are), and on again after."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _garbage() -> list[Any]:
    """What a collection finds unreachable now (kept for inspection, then freed)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _from_wschat(obj: object) -> bool:
    """An object of wschat's, or a frame or coroutine running its code."""
    if type(obj).__module__.startswith("wschat"):
        return True
    code = getattr(obj, "f_code", None) or getattr(obj, "cr_code", None)
    return code is not None and "/wschat/" in code.co_filename


@contextlib.asynccontextmanager
async def idle_room(joins: int) -> AsyncIterator[ConnectionManager]:
    """``joins`` connections in one room through the ASGI app, every one idle
    (its join done, its presence sent, waiting for a frame); they leave after."""
    manager = ConnectionManager()
    app = chat_app(manager, TokenVerifier(SECRET, algorithms=["HS256"]))
    ready = 0
    all_ready = anyio.Event()
    leave = anyio.Event()

    async def client(user: str) -> None:
        connected = False

        async def receive() -> dict[str, Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await leave.wait()
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal ready
            if message["type"] == "websocket.send" and '"ready"' in message["text"]:
                ready += 1
                if ready == joins:
                    all_ready.set()

        scope = {
            "type": "websocket",
            "path": "/ws/chat/lobby",
            "raw_path": b"/ws/chat/lobby",
            "query_string": f"token={mint_token(SECRET, user)}".encode(),
            "headers": [(b"host", b"testserver")],
            "scheme": "ws",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
            "subprotocols": [],
            "asgi": {"version": "3.0"},
        }
        await app(scope, receive, send)

    async with anyio.create_task_group() as tg:
        for i in range(joins):
            tg.start_soon(client, f"user-{i}")
        with anyio.fail_after(10):
            await all_ready.wait()
        # Every join done, its presence sent, every connection waiting for a frame.
        await anyio.sleep(0.3)
        assert len(manager) == joins
        try:
            yield manager
        finally:
            leave.set()
    assert len(manager) == 0


async def test_joins_leave_no_cyclic_garbage(no_collector: None) -> None:
    async with idle_room(JOINS):
        found = [o for o in _garbage() if _from_wschat(o)]
    assert found == []


async def test_an_idle_connection_holds_four_of_wschats_coroutines() -> None:
    # The ASGI app's call, the endpoint's serve, the frame loop, the transport's
    # receive: one more (a wrapper around the frame loop) is one more frame per
    # connection for every full collection to walk.
    async with idle_room(JOINS):
        held = [
            o
            for o in gc.get_objects()
            if inspect.iscoroutine(o)
            and o.cr_frame is not None
            and "/wschat/" in o.cr_code.co_filename
        ]
    counts = Counter(c.cr_code.co_qualname for c in held)
    # The manager's own tasks (its token deadlines) are one each, not per connection.
    per_connection = {name: n for name, n in counts.items() if n > 1}
    assert per_connection == {
        "_ChatApp.__call__": JOINS,
        "ChatEndpoint.serve": JOINS,
        "ChatEndpoint._frames": JOINS,
        "AsgiTransport.receive": JOINS,
    }
