"""Test support: a real uvicorn server in a thread, and protocol helpers."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

SECRET = "test-secret-" + "x" * 40
#: Under CI a test that cannot find what it needs (Redis, a browser) fails, not skips.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def source_env() -> dict[str, str]:
    """The environment for a Python subprocess that must import this tree's wschat."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    paths = [src, *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """A real uvicorn server on a free port (or ``port``), in a background thread."""

    def __init__(self, app: Any, *, port: int | None = None, **config: Any) -> None:
        self.port = port if port is not None else free_port()
        config.setdefault("log_level", "info")
        config.setdefault("lifespan", "auto")
        # As docs/deployment.md says to run it: the server's message limit is
        # wschat's (max_message_bytes' default), so wschat has nothing to warn about.
        config.setdefault("ws_max_size", 64 * 1024)
        self.config = uvicorn.Config(app, host="127.0.0.1", port=self.port, **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def serve(app: Any, **config: Any) -> Iterator[ServerThread]:
    server = ServerThread(app, **config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


#: The close code of each of the manager's closes, with their default errors.
SERVER_CLOSE_CODES = {"room": 4403, "user": 4403, "all": 1001}


def server_close(manager: Any, conn: Any, how: str) -> int:
    """Close ``conn`` as the server does: ``"room"`` (``close_room`` of its room),
    ``"user"`` (``close_user`` of its user) or ``"all"`` (``close_all``), each with
    its default error (:data:`SERVER_CLOSE_CODES`). Returns how many were closed."""
    if how == "room":
        return int(manager.close_room(conn.chat_id))
    if how == "user":
        return int(manager.close_user(conn.user_id))
    assert how == "all", how
    return int(manager.close_all())


def frames_of(raw: str | bytes) -> list[dict[str, Any]]:
    """Decode one server frame; a ``batch`` frame yields its inner frames."""
    data = json.loads(raw)
    if data.get("type") == "batch":
        return list(data["frames"])
    return [data]


class FakeTransport:
    """An in-memory :class:`wschat.transport.Transport` that records what is sent.

    A test double of the socket for the core's unit tests (the e2e tests use real
    sockets). Create it inside the event loop. ``feed`` queues a client frame,
    ``hang_up`` makes ``receive`` return None, ``gate`` (an ``anyio.Event``) holds
    every ``send_text`` until set (``blocked`` is set once a send waits on it), and
    ``gone`` makes sends raise ``TransportClosed``. ``chunks`` records the size of
    each ``send_many`` call, ``drops`` the delay of each ``drop_after`` call.
    """

    def __init__(self) -> None:
        import anyio

        self._anyio = anyio
        self._in_send, self._in_recv = anyio.create_memory_object_stream["str | bytes"](
            256
        )
        self._out_send, self._out_recv = anyio.create_memory_object_stream[str](4096)
        self.sent: list[str] = []
        # The size of each send_many call, in frames.
        self.chunks: list[int] = []
        self.accepted: list[str | None] = []
        self.closed: tuple[int, str] | None = None
        self.denied: tuple[int, str | None] | None = None
        self.gate: Any = None
        self.blocked = anyio.Event()
        self.gone = False
        self.ended = anyio.Event()
        # The delays of each drop_after() call.
        self.drops: list[float] = []

    async def accept(self, subprotocol: str | None) -> None:
        self.accepted.append(subprotocol)

    async def receive(self) -> str | bytes | None:
        try:
            return await self._in_recv.receive()
        except (self._anyio.EndOfStream, self._anyio.ClosedResourceError):
            return None

    async def send_text(self, text: str) -> None:
        from wschat.transport import TransportClosed

        if self.gate is not None:
            self.blocked.set()
            await self.gate.wait()
        if self.gone:
            raise TransportClosed()
        self.sent.append(text)
        self._out_send.send_nowait(text)

    async def send_many(self, texts: Sequence[str]) -> None:
        self.chunks.append(len(texts))
        for text in texts:
            await self.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        from wschat.transport import TransportClosed

        if self.gone:
            raise TransportClosed()
        self.closed = (code, reason)
        self._in_send.close()
        self.ended.set()

    def drop_after(self, seconds: float) -> None:
        self.drops.append(seconds)

    async def deny(self, status: int, body: str | None) -> None:
        self.denied = (status, body)
        self._in_send.close()
        self.ended.set()

    # -- the test's side ---------------------------------------------------------

    def feed(self, data: str | bytes) -> None:
        self._in_send.send_nowait(data)

    def hang_up(self) -> None:
        self._in_send.close()

    async def next_text(self, timeout: float = 2.0) -> str:
        with self._anyio.fail_after(timeout):
            return await self._out_recv.receive()

    async def next_frame(self, timeout: float = 2.0) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(await self.next_text(timeout))
        return data

    async def wait_closed(self, timeout: float = 2.0) -> tuple[int, str]:
        with self._anyio.fail_after(timeout):
            await self.ended.wait()
        assert self.closed is not None, f"denied instead: {self.denied}"
        return self.closed

    def aclose_streams(self) -> None:
        for stream in (self._in_send, self._in_recv, self._out_send, self._out_recv):
            stream.close()
