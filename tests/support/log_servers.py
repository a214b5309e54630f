"""Real servers whose logs a test reads: uvicorn (each WebSocket implementation) and
hypercorn, in a thread, with every line they log recorded; and both in a subprocess,
with their own logging config, for the levels a thread cannot isolate (debug).

hypercorn logs requests only when given an access log: here it gets one whose format
names every field a deployment could log (the query, the full request line, the
``Authorization``, ``Cookie`` and ``Sec-WebSocket-Protocol`` headers), so that a token
in any of them would show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeAlias

from tests.support.common import free_port, serve
from tests.support.e2e import LogRecorder

Server: TypeAlias = Literal[
    "uvicorn-websockets", "uvicorn-sansio", "uvicorn-wsproto", "hypercorn"
]
SERVERS: tuple[Server, ...] = (
    "uvicorn-websockets",
    "uvicorn-sansio",
    "uvicorn-wsproto",
    "hypercorn",
)
UVICORN_WS = {
    "uvicorn-websockets": "websockets",
    "uvicorn-sansio": "websockets-sansio",
    "uvicorn-wsproto": "wsproto",
}
#: Every hypercorn access-log atom that can hold a token.
HYPERCORN_ACCESS_FORMAT = (
    '%(h)s "%(R)s" %(s)s q=%(q)s Uq=%(Uq)s auth=%({authorization}i)s '
    "cookie=%({cookie}i)s proto=%({sec-websocket-protocol}i)s "
    "xauth=%({x-auth-token}i)s"
)
LOGGERS = (
    "wschat",
    "uvicorn.error",
    "uvicorn.access",
    "hypercorn.access",
    "hypercorn.error",
    "asyncio",
)
ROOT = Path(__file__).resolve().parents[2]


class Running:
    """A running server: its base URLs."""

    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class HypercornThread:
    """hypercorn on asyncio in a background thread, logging to the test's loggers."""

    def __init__(self, app: Any) -> None:
        from hypercorn.config import Config

        self.app = app
        self.port = free_port()
        self.config = Config()
        self.config.bind = [f"127.0.0.1:{self.port}"]
        self.config.accesslog = logging.getLogger("hypercorn.access")
        self.config.errorlog = logging.getLogger("hypercorn.error")
        self.config.access_log_format = HYPERCORN_ACCESS_FORMAT
        self.config.graceful_timeout = 0.5
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self.error = exc

    async def _main(self) -> None:
        from hypercorn.asyncio import serve as hypercorn_serve

        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        await hypercorn_serve(
            self.app, self.config, shutdown_trigger=self.stop.wait, mode="asgi"
        )

    def __enter__(self) -> Running:
        self.thread.start()
        try:
            wait_port(self.port, self.thread.is_alive, seconds=10)
        except RuntimeError:
            raise RuntimeError(f"hypercorn did not start: {self.error!r}") from None
        return Running(self.port)

    def __exit__(self, *exc_info: object) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        assert not self.thread.is_alive(), "hypercorn did not stop"


@contextlib.contextmanager
def running(server: Server, app: Any) -> Iterator[Running]:
    """Serve ``app`` on ``server`` in a thread, logging at INFO to the test loggers."""
    if server == "hypercorn":
        with HypercornThread(app) as run:
            yield run
        return
    with serve(
        app, log_config=None, ws=UVICORN_WS[server], timeout_graceful_shutdown=2
    ) as thread:
        yield Running(thread.port)


def recorder() -> LogRecorder:
    """Records every logger a server or wschat writes requests to, at INFO."""
    return LogRecorder(LOGGERS)


def wait_port(port: int, alive: Any, seconds: float = 20) -> None:
    """Wait until something listens on ``port``; fail early if ``alive()`` is false."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if not alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)


class Subprocess:
    """A server command run from the repository root; ``output`` once it stopped.

    The output goes to a temporary file, not a pipe: a server at debug level can
    write more than a pipe holds, and would block on it until the test read it.
    """

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv = argv
        self.port = port
        self.output = ""

    def __enter__(self) -> Subprocess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")]
        )
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_port(self.port, lambda: self.proc.poll() is None)
        except RuntimeError:
            self.__exit__()
            raise RuntimeError(f"{self.argv} did not start:\n{self.output}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.seek(0)
        self.output = self.log.read().decode(errors="replace")
        self.log.close()
