"""Real wschat processes on one Redis: ``uvicorn benchmarks/redis_app.py`` servers
and real ``websockets`` clients for them (the ``servers`` fixture of
``tests/redis/conftest.py`` starts them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.common import free_port
from wschat.testing import mint_token

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-redis-secret-" + "y" * 40
WAIT = 10.0


class Server:
    """``uvicorn redis_app:app`` in a subprocess of its own session."""

    def __init__(self, env: dict[str, str], workers: int = 1, port: int = 0) -> None:
        self.port = port or free_port()
        self.env = env
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.gettempdir()) / f"wschat-e2e-redis-{self.port}.log"

    def start(self) -> None:
        cmd = [
            sys.executable,
            *("-m", "uvicorn", "--app-dir", str(ROOT / "benchmarks"), "redis_app:app"),
            *(
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ),
        ]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.http}/ws/status", timeout=0.5).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not answer /ws/status in 20 s")
            time.sleep(0.05)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.http}/ws/status", timeout=5).json()
        return data

    def members(self, room: str) -> list[str]:
        data = httpx.get(f"{self.http}/admin/members/{room}", timeout=5).json()
        return list(data["members"])

    def kick(self, user: str) -> None:
        httpx.post(f"{self.http}/admin/kick/{user}", timeout=5).raise_for_status()

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        self.kill()
        with contextlib.suppress(OSError):
            self.log.unlink()


class Client:
    def __init__(self, ws: ClientConnection, ready: dict[str, Any]) -> None:
        self.ws = ws
        self.ready = ready
        self.frames: list[dict[str, Any]] = []

    @property
    def node(self) -> str:
        return str(self.ready["connection_id"])[1:].split("-")[0]

    async def say(self, body: Any) -> None:
        await self.ws.send(json.dumps({"type": "message", "body": body}))

    async def next(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await self.ws.recv())
        self.frames.append(frame)
        return frame

    async def until(self, kind: str, **match: Any) -> dict[str, Any]:
        with anyio.fail_after(WAIT):
            while True:
                frame = await self.next()
                if frame["type"] == kind and all(
                    _matches(frame.get(k), v) for k, v in match.items()
                ):
                    return frame

    async def messages(self, count: int) -> list[Any]:
        bodies = [f["body"] for f in self.frames if f["type"] == "message"]
        with anyio.fail_after(WAIT):
            while len(bodies) < count:
                frame = await self.next()
                if frame["type"] == "message":
                    bodies.append(frame["body"])
        return bodies


def _matches(got: Any, want: Any) -> bool:
    """A field matches: equal, or a list (presence joins) holding every wanted item."""
    if isinstance(want, list) and isinstance(got, list):
        return all(item in got for item in want)
    return bool(got == want)


@contextlib.asynccontextmanager
async def opened(server: Server, user: str, room: str) -> AsyncIterator[Client]:
    url = f"ws://127.0.0.1:{server.port}/ws/chat/{room}?token="
    url += mint_token(SECRET, user)
    async with connect(url, max_queue=None) as ws:
        with anyio.fail_after(WAIT):
            ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        yield Client(ws, ready)


async def wait_until(check: Any, what: str) -> None:
    """Poll a blocking check (an HTTP call) until it holds, bounded."""
    deadline = time.monotonic() + WAIT
    while not await anyio.to_thread.run_sync(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT:g} s: {what}")
        await anyio.sleep(0.05)


async def close_code(client: Client) -> int | None:
    """Read until the server closes the socket; its close code."""
    with anyio.fail_after(WAIT):
        try:
            while True:
                await client.next()
        except ConnectionClosed:
            return client.ws.close_code


def assert_exactly_once_in_order(bodies: list[Any], senders: list[str], n: int) -> None:
    seen = Counter((b["from"], b["n"]) for b in bodies)
    dupes = [k for k, c in seen.items() if c > 1]
    assert not dupes, f"duplicates: {dupes[:5]}"
    missing = [(s, i) for s in senders for i in range(n) if (s, i) not in seen]
    assert not missing, f"lost: {missing[:5]}"
    for sender in senders:
        order = [b["n"] for b in bodies if b["from"] == sender]
        assert order == list(range(n)), f"{sender}'s order broken: {order[:20]}"
