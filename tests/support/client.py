"""Test kit for wschat.client: real servers that count the handshakes they get.

- :func:`counted_server`: a chat app (any adapter) on a real uvicorn in a thread,
  wrapped in an ASGI middleware that counts WebSocket handshakes, so a test can say
  "one handshake, not a reconnect loop".
- :func:`uvicorn_on`: ``python -m uvicorn tests.apps:asgi_app`` in a subprocess on
  a given port, to stop and start again on the same port (a server restart).
- :class:`FakeSleep`: records the backoff's delays on a virtual clock.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from tests.support.common import serve
from tests.support.e2e import WAIT, Chat, Flavor, build_app
from tests.support.frame_schema import SchemaViolation, check_received
from tests.support.server_process import ServerProcess
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app


class HandshakeCounter:
    """ASGI middleware: counts the WebSocket handshakes that reach the app, and
    checks each text frame the app sends on a chat socket against the wire's schema
    (``check_received``: a frame the schema refuses fails the running test at its
    end, and still goes out). So the frames a client the test fixture cannot wrap
    reads (a browser's) are validated too.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.handshakes = 0
        #: The query string of each handshake, in order.
        self.queries: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            self.handshakes += 1
            self.queries.append(scope.get("query_string", b"").decode("latin-1"))
            send = _checking(send, str(scope.get("path", "")))
        await self.app(scope, receive, send)


def _checking(send: Any, path: str) -> Any:
    """``send``, with each text frame checked against the schema on the way."""

    async def checked(message: Any) -> None:
        text = message.get("text")
        if message["type"] == "websocket.send" and isinstance(text, str):
            # Recorded for the fixture, which fails the test; the app goes on.
            with contextlib.suppress(SchemaViolation):
                check_received(text, path=path)
        await send(message)

    return checked


@dataclass
class CountedChat(Chat):
    """A :class:`~tests.e2e_support.Chat` whose handshakes are counted."""

    counter: HandshakeCounter = field(default_factory=lambda: HandshakeCounter(None))

    @property
    def handshakes(self) -> int:
        return self.counter.handshakes


@contextlib.contextmanager
def counted_server(
    flavor: Flavor = "asgi",
    manager: ConnectionManager | None = None,
    *,
    verifier: TokenVerifier | None = None,
    **options: Any,
) -> Iterator[CountedChat]:
    """Serve the chat endpoint of ``flavor`` behind a handshake counter.

    ``verifier`` replaces the test verifier (raw ASGI adapter only).
    """
    manager = manager or ConnectionManager()
    if verifier is not None:
        assert flavor == "asgi", "a custom verifier is served by chat_app only"
        app = chat_app(manager, verifier, **options)
    else:
        app = build_app(flavor, manager, **options)
    counter = HandshakeCounter(app)
    with serve(counter, log_config=None, timeout_graceful_shutdown=3) as server:
        yield CountedChat(server, manager, counter)


def uvicorn_on(port: int, app: str = "tests.support.apps:asgi_app") -> ServerProcess:
    """uvicorn serving ``app`` on ``port`` in a subprocess (enter it to start)."""
    command = [sys.executable, "-m", "uvicorn", app]
    return ServerProcess([*command, "--host", "127.0.0.1", "--port", str(port)], port)


class FakeSleep:
    """A ``sleep`` for the client that records each delay on a virtual clock.

    It yields to the event loop once (so cancellation still reaches the client)
    but waits no real time.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.now = 0.0

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


async def next_event(chat: Any, kind: type[Any], seconds: float = WAIT) -> Any:
    """A client's events until one of class ``kind``; return it."""
    with anyio.fail_after(seconds):
        async for event in chat:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"the events ended before a {kind.__name__}")
