"""Test support: a real uvicorn server in a thread, and protocol helpers."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

SECRET = "test-secret-" + "x" * 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """A real uvicorn server on a free port, in a background thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.port = free_port()
        config.setdefault("log_level", "info")
        config.setdefault("lifespan", "auto")
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


def frames_of(raw: str | bytes) -> list[dict[str, Any]]:
    """Decode one server frame; a ``batch`` frame yields its inner frames."""
    data = json.loads(raw)
    if data.get("type") == "batch":
        return list(data["frames"])
    return [data]
