"""What one user can push through a default wschat in a burst, over real sockets.

Two attacks from the hardening review, against ``chat_app`` with default options on a
real uvicorn (in a thread of this process):

``reconnect``: one user connects, sends ``--frames`` messages as fast as it can, and
reconnects when it is closed, ``--reconnects`` times. A per-socket rate bucket starts
full on every connection; a per-user one does not.

``sockets``: one user opens ``--sockets`` connections at once and sends ``--frames``
messages on each. Without a per-user connection cap every socket gets in.

``pending_auth``: 1,000 sockets that open with first-message auth and never send their
``auth`` frame (the default ``max_pending_auth``): the server's RSS per waiting socket,
and what the next one gets.

The server's own ``messages`` counter says how many were accepted. Run
``python -m benchmarks.user_limits``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import socket
import threading
import time
from typing import Any

import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from benchmarks.common import (
    ALGORITHM,
    HOST,
    SECRET,
    free_port,
    make_token,
    rss_bytes,
)
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app

MESSAGE = json.dumps({"type": "message", "body": {"text": "x"}})


class _Server:
    def __init__(self, **options: Any) -> None:
        self.manager = ConnectionManager()
        verifier = TokenVerifier(SECRET, algorithms=[ALGORITHM])
        app = chat_app(self.manager, verifier, **options)
        self.port = free_port()
        config = uvicorn.Config(app, host=HOST, port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def url(self, room: str, user: str) -> str:
        return f"ws://{HOST}:{self.port}/ws/chat/{room}?token={make_token(user)}"


async def _flood(url: str, frames: int) -> tuple[bool, str]:
    """Connect, send ``frames`` messages, read to the end; (admitted, close)."""
    admitted = False
    try:
        async with connect(url, proxy=None, max_queue=None) as ws:
            ready = json.loads(await ws.recv())
            admitted = ready.get("type") == "ready"
            for _ in range(frames):
                await ws.send(MESSAGE)
            # Read until the server has handled every frame sent (or closed).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    async for _ in ws:
                        pass
            if ws.close_code is None:
                return admitted, "open"
            return admitted, f"{ws.close_code} {ws.close_reason}"
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        return admitted, f"{rcvd.code} {rcvd.reason}" if rcvd else "1006"
    except InvalidStatus as exc:
        return False, f"HTTP {exc.response.status_code}"


async def _reconnect(server: _Server, reconnects: int, frames: int) -> dict[str, Any]:
    before = server.manager.stats().messages
    closes = []
    t0 = time.perf_counter()
    for _ in range(reconnects):
        closes.append((await _flood(server.url("r", "mallory"), frames))[1])
    elapsed = time.perf_counter() - t0
    return {
        "reconnects": reconnects,
        "frames_per_connection": frames,
        "accepted": server.manager.stats().messages - before,
        "seconds": round(elapsed, 3),
        "closes": closes,
    }


async def _sockets(server: _Server, sockets: int, frames: int) -> dict[str, Any]:
    before = server.manager.stats().messages
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(_flood(server.url("s", "mallory"), frames) for _ in range(sockets))
    )
    elapsed = time.perf_counter() - t0
    closes: dict[str, int] = {}
    for _, close in results:
        key = close.split(":")[0]
        closes[key] = closes.get(key, 0) + 1
    return {
        "sockets": sockets,
        "frames_per_socket": frames,
        "admitted": sum(admitted for admitted, _ in results),
        "accepted": server.manager.stats().messages - before,
        "seconds": round(elapsed, 3),
        "closes": closes,
    }


def _open_pending(port: int) -> tuple[socket.socket, bytes]:
    """A socket that completes the handshake and never sends its auth frame."""
    sock = socket.create_connection((HOST, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/chat/p HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:40]
    return sock, head.partition(b"\r\n\r\n")[2]


def _pending(count: int) -> dict[str, Any]:
    """RSS per socket waiting for first-message auth, and the cap refusing one more."""
    with _Server(first_message_auth=True, auth_timeout=60.0) as server:
        # Warm up (first handshake, first auth wait), then measure the growth.
        warm = [_open_pending(server.port)[0] for _ in range(20)]
        time.sleep(0.5)
        gc.collect()
        before = rss_bytes(os.getpid())
        held = [_open_pending(server.port)[0] for _ in range(count - len(warm))]
        deadline = time.monotonic() + 10
        while server.manager.stats().pending_auth < count:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        gc.collect()
        after = rss_bytes(os.getpid())
        waiting = server.manager.stats().pending_auth
        extra, refusal = _open_pending(server.port)
        extra.settimeout(5)
        while len(refusal) < 4:
            refusal += extra.recv(256)
        for sock in [*warm, *held, extra]:
            sock.close()
    return {
        "pending": waiting,
        "kib_per_pending_socket": round((after - before) / len(held) / 1024, 1),
        "next_refused_with": [
            int.from_bytes(refusal[2:4], "big"),
            refusal[4:].decode(errors="replace"),
        ],
    }


def run(reconnects: int = 5, sockets: int = 60, frames: int = 300) -> dict[str, Any]:
    """Both attacks, each against a fresh server with default options."""
    with _Server() as server:
        reconnect = asyncio.run(_reconnect(server, reconnects, frames))
    with _Server() as server:
        many = asyncio.run(_sockets(server, sockets, frames // 2))
    return {"reconnect": reconnect, "sockets": many, "pending_auth": _pending(1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reconnects", type=int, default=5)
    parser.add_argument("--sockets", type=int, default=60)
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    print(json.dumps(run(args.reconnects, args.sockets, args.frames), indent=1))


if __name__ == "__main__":
    main()
