"""End-to-end test kit: the three adapters behind a real uvicorn, and client helpers.

Every e2e test talks to a real server over loopback TCP with the real ``websockets``
client (or, for a client that must misbehave, a hand-written one over a raw socket).
The fixtures (``flavor``, and ``anyio_backend`` on asyncio only) are in
``tests/e2e/conftest.py``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias
from urllib.parse import urlencode

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from tests.support.common import SECRET, ServerThread, serve
from tests.support.frame_schema import check_received
from wschat import ConnectionManager, TokenVerifier
from wschat.testing import mint_token

Flavor: TypeAlias = Literal["asgi", "starlette", "fastapi"]
FLAVORS: tuple[Flavor, ...] = ("asgi", "starlette", "fastapi")
LOGGERS = ("wschat", "uvicorn.error", "asyncio")
#: Seconds any single wait in an e2e test may take before the test fails.
WAIT = 5.0


def token(user: str, **kwargs: Any) -> str:
    """A valid token for ``user`` signed with the test :data:`SECRET`."""
    return mint_token(SECRET, user, **kwargs)


def build_app(
    flavor: Flavor,
    manager: ConnectionManager,
    verifier: TokenVerifier | None = None,
    **options: Any,
) -> Any:
    """Mount the chat endpoint under ``/ws`` the way a user of ``flavor`` would."""
    verifier = verifier or TokenVerifier(SECRET, algorithms=["HS256"])
    if flavor == "asgi":
        from wschat.asgi import chat_app

        return chat_app(manager, verifier, **options)
    if flavor == "starlette":
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from wschat.starlette import chat_routes

        routes = chat_routes(manager, verifier, **options)
        return Starlette(routes=[Mount("/ws", routes=routes)])
    from fastapi import FastAPI

    from wschat.fastapi import chat_router

    app = FastAPI()
    app.include_router(chat_router(manager, verifier, **options), prefix="/ws")
    return app


@dataclass
class Chat:
    """A running chat server and the manager behind it."""

    server: ServerThread
    manager: ConnectionManager

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def origin(self) -> str:
        """The server's own origin, as a browser page served from it would send."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, chat_id: str, tok: str | None = None, **query: str) -> str:
        """The socket URL of a room, with ``?token=`` if given."""
        params = dict(query)
        if tok is not None:
            params["token"] = tok
        suffix = "?" + urlencode(params) if params else ""
        return f"{self.server.ws}/ws/chat/{chat_id}{suffix}"

    async def status(self) -> dict[str, Any]:
        """``GET /ws/status`` as a user would call it."""
        async with httpx.AsyncClient(timeout=WAIT) as client:
            response = await client.get(f"{self.server.http}/ws/status")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        payload: dict[str, Any] = response.json()
        return payload

    async def wait_connections(self, count: int, seconds: float = WAIT) -> None:
        """Poll ``/ws/status`` until it reports ``count`` connections."""
        last: dict[str, Any] = {}

        async def settled() -> bool:
            nonlocal last
            last = await self.status()
            return bool(last["connections"] == count)

        await wait_until(settled, seconds, lambda: f"last /ws/status: {last}")


@contextlib.contextmanager
def chat_server(
    flavor: Flavor,
    manager: ConnectionManager | None = None,
    *,
    ws_max_size: int | None = None,
    verifier: TokenVerifier | None = None,
    **options: Any,
) -> Iterator[Chat]:
    """Serve the chat endpoint of ``flavor`` on a real uvicorn in a thread.

    uvicorn's own logging config is left out, so its records reach handlers that
    tests attach to ``uvicorn.error`` (see :class:`LogRecorder`). The server's
    message limit matches ``max_message_bytes``, as docs/deployment.md says to set
    it; pass ``ws_max_size`` to give the server another one.
    """
    manager = manager or ConnectionManager()
    app = build_app(flavor, manager, verifier, **options)
    if ws_max_size is None:
        ws_max_size = options.get("max_message_bytes", 64 * 1024)
    with serve(
        app, log_config=None, timeout_graceful_shutdown=3, ws_max_size=ws_max_size
    ) as server:
        yield Chat(server, manager)


async def wait_until(
    predicate: Callable[[], Awaitable[bool]],
    seconds: float = WAIT,
    explain: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``predicate`` until it is true; fail after ``seconds``."""
    try:
        with anyio.fail_after(seconds):
            while True:
                if await predicate():
                    return
                await anyio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"condition not met within {seconds:g} s. {explain()}")


@contextlib.asynccontextmanager
async def client(
    url: str,
    *,
    origin: str | None = None,
    subprotocols: list[str] | None = None,
    close_timeout: float = 2,
    **kwargs: Any,
) -> AsyncIterator[ClientConnection]:
    """A ``websockets`` client with bounded open and close timeouts."""
    async with connect(
        url,
        origin=Origin(origin) if origin is not None else None,
        subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
        open_timeout=WAIT,
        close_timeout=close_timeout,
        **kwargs,
    ) as ws:
        yield ws


@contextlib.asynccontextmanager
async def clients(urls: list[str]) -> AsyncIterator[list[ClientConnection]]:
    """Several clients at once, closed together."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(client(url)) for url in urls]


async def next_frame(
    ws: ClientConnection, kind: str, seconds: float = WAIT
) -> dict[str, Any]:
    """Receive frames until one of type ``kind`` arrives; return it."""
    with anyio.fail_after(seconds):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame["type"] == kind:
                return frame


async def messages(
    ws: ClientConnection, count: int, seconds: float = WAIT
) -> list[dict[str, Any]]:
    """Receive frames until ``count`` chat messages arrived; return those."""
    got: list[dict[str, Any]] = []
    with anyio.fail_after(seconds):
        while len(got) < count:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame["type"] == "message":
                got.append(frame)
    return got


@dataclass(frozen=True)
class Closed:
    """How the server ended a connection, as the client saw it."""

    code: int
    reason: str
    frames: list[dict[str, Any]]


async def closed(ws: ClientConnection, seconds: float = WAIT) -> Closed:
    """Read until the server closes; return the close frame and what came before."""
    frames: list[dict[str, Any]] = []
    ended: ConnectionClosed | None = None
    with anyio.fail_after(seconds):
        while ended is None:
            try:
                frames.append(json.loads(await ws.recv()))
            except ConnectionClosed as exc:
                ended = exc
    assert ended.rcvd is not None, f"no close frame received ({ended!r})"
    return Closed(ended.rcvd.code, ended.rcvd.reason, frames)


async def send_message(ws: ClientConnection, body: Any, **extra: Any) -> None:
    """Send a chat ``message`` frame."""
    await ws.send(json.dumps({"type": "message", "body": body, **extra}))


class LogRecorder(logging.Handler):
    """Records what the given loggers emit, from any thread, at INFO and above."""

    def __init__(self, names: tuple[str, ...] = LOGGERS) -> None:
        super().__init__(logging.INFO)
        self.names = names
        self.records: list[logging.LogRecord] = []
        self._levels: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> LogRecorder:
        for name in self.names:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.INFO)
            logger.addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name in self.names:
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.setLevel(self._levels[name])

    def of(self, name: str, level: int | None = None) -> list[logging.LogRecord]:
        """Records of logger ``name`` (exactly), at ``level`` if given."""
        return [
            r
            for r in self.records
            if r.name == name and (level is None or r.levelno == level)
        ]

    def at_least(self, level: int) -> list[logging.LogRecord]:
        """Records at ``level`` or above, from any recorded logger."""
        return [r for r in self.records if r.levelno >= level]

    def text(self) -> str:
        """Every record as it would be printed, with tracebacks, one per line."""
        fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "\n".join(fmt.format(r) for r in self.records)


# -- a WebSocket client written by hand, that reads only when told to ---------------

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_BINARY, OP_CLOSE = 0x1, 0x2, 0x8


class RawWebSocket:
    """A minimal RFC 6455 client over a blocking TCP socket.

    It completes the handshake and then reads nothing until told to, so it plays a
    client that stopped reading. Its receive buffer is kept small so that the server's
    writes back up quickly. Call its methods through ``anyio.to_thread.run_sync``.
    """

    def __init__(self, port: int, path: str, *, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so the advertised TCP window stays small.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(WAIT)
        self.port = port
        self.path = path
        self.buffer = b""

    def handshake(self) -> None:
        """Connect and upgrade; raise unless the server answers 101 correctly."""
        self.sock.connect(("127.0.0.1", self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("server closed during the handshake")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines[0]
        digest = hashlib.sha1((key + _GUID).encode(), usedforsecurity=False).digest()
        accept = base64.b64encode(digest).decode()
        headers = {
            k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)
        }
        assert headers.get("sec-websocket-accept") == accept

    def _read(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("connection closed without a close frame")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_frame(self, deadline: float) -> tuple[int, bytes]:
        """Read one (unfragmented, unmasked) server frame: ``(opcode, payload)``."""
        first, second = self._read(2, deadline)
        assert first & 0x80, "the server does not fragment frames"
        assert not second & 0x80, "server frames are never masked"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2, deadline))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8, deadline))
        opcode, payload = first & 0x0F, self._read(length, deadline)
        if opcode == OP_TEXT:
            check_received(payload.decode("utf-8"), path=self.path)
        return opcode, payload

    def read_until_close(
        self, timeout: float, frames: list[bytes] | None = None
    ) -> tuple[int, str, int]:
        """Read frames until a close frame; return ``(code, reason, frames before)``.

        ``frames``, when given, gets the payload of each frame before the close.

        Raises:
            EOFError: The TCP connection ended without a close frame (code 1006).
            TimeoutError: No close frame within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        count = 0
        while True:
            opcode, payload = self.read_frame(deadline)
            if opcode == OP_CLOSE:
                (code,) = struct.unpack("!H", payload[:2])
                return code, payload[2:].decode("utf-8"), count
            if frames is not None:
                frames.append(payload)
            count += 1

    def ending(self, timeout: float) -> int:
        """Read to the end of the stream; the close code, or 1006 if none came
        (the stream ended, or the server reset the connection)."""
        try:
            return self.read_until_close(timeout)[0]
        except (EOFError, ConnectionResetError):
            return 1006

    def abort(self) -> None:
        """Drop the TCP connection with a reset: no close frame, no FIN handshake."""
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for a condition of the test's own tasks, bounded."""

    async def check() -> bool:
        return predicate()

    await wait_until(check)


async def pongs(ws: ClientConnection, count: int) -> None:
    for _ in range(count):
        await next_frame(ws, "pong")


@contextlib.asynccontextmanager
async def room_traffic(url: str) -> AsyncIterator[list[int]]:
    """A member that keeps sending messages while the block runs; yields the count."""
    sent = [0]
    async with client(url) as ws, anyio.create_task_group() as tg:
        await next_frame(ws, "ready")

        async def talk() -> None:
            while True:
                await send_message(ws, {"n": sent[0]})
                sent[0] += 1
                if sent[0] % 100 == 0:
                    await anyio.sleep(0.001)

        async def drain() -> None:
            async for _ in ws:
                pass

        tg.start_soon(talk)
        tg.start_soon(drain)
        yield sent
        tg.cancel_scope.cancel()


async def joins_with_ready_alone(url: str, sent: list[int], times: int) -> None:
    """A batch client joins ``times`` times; its first frame must be ``ready``.

    Each one leaves without reading the rest: the room's traffic fills its unread
    queue, so the server's close frame waits behind it and a close handshake would
    take the whole close timeout (2 s a join). Not waiting for it tests the same.
    """
    for _ in range(times):
        before = sent[0]
        async with client(url, close_timeout=0.05) as ws:
            first = json.loads(await ws.recv())
            assert first["type"] == "ready", f"first frame was {first['type']!r}"
            assert first["batch"] is True
            # Room traffic was flowing and reaches this client, in batches or not.
            with anyio.fail_after(WAIT):
                while True:
                    frame = json.loads(await ws.recv())
                    inner = frame["frames"] if frame["type"] == "batch" else [frame]
                    if any(f["type"] == "message" for f in inner):
                        break
        assert sent[0] > before, "no traffic was flowing"
