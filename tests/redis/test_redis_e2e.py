"""Real processes on one Redis: two uvicorn servers, and ``uvicorn --workers 2``.

Clients are real ``websockets`` clients spread over the processes. Every client gets
every message exactly once and in each sender's order; a kick on one process closes
the user's sockets on both; presence is announced once per user; ``kill -9`` of one
process leaves the other serving while its presence entries expire.
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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.common import free_port
from tests.support.redis_server import RedisServer, need_redis, unique_prefix
from wschat.testing import mint_token

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.e2e]

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


@pytest.fixture
def servers(request: pytest.FixtureRequest) -> Iterator[list[Server]]:
    """Start servers on one Redis with one prefix: ``[(workers, ttl), ...]`` param."""
    url = need_redis()
    env = {
        "WSCHAT_REDIS_URL": url,
        "WSCHAT_PREFIX": unique_prefix(),
        "WSCHAT_SECRET": SECRET,
        "WSCHAT_PRESENCE_TTL": str(getattr(request, "param", {}).get("ttl", 30)),
    }
    workers = getattr(request, "param", {}).get("workers", [1, 1])
    started = [Server(env, workers=w) for w in workers]
    try:
        for server in started:
            server.start()
        yield started
    finally:
        for server in started:
            server.stop()


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
                    frame.get(k) == v for k, v in match.items()
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


async def test_two_processes_share_rooms_exactly_once(servers: list[Server]) -> None:
    a, b = servers
    room, users, per_sender = "lobby", [f"u{i}" for i in range(20)], 10
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(opened((a, b)[i % 2], user, room))
            for i, user in enumerate(users)
        ]
        assert len({c.node for c in clients}) == 2
        for n in range(per_sender):
            for user, client in zip(users, clients, strict=True):
                await client.say({"from": user, "n": n})
        for client in clients:
            bodies = await client.messages(len(users) * per_sender)
            assert_exactly_once_in_order(bodies, users, per_sender)
        # Presence and counts are global: both processes list all 20 users.
        await wait_until(lambda: a.members(room) == sorted(users), "members on a")
        assert b.members(room) == sorted(users)
        for client in clients:
            extra = [f for f in client.frames if f["type"] == "message"]
            assert len(extra) == len(users) * per_sender
        assert a.status()["backplane"]["healthy"] is True


async def test_presence_once_per_user_and_kick_everywhere(
    servers: list[Server],
) -> None:
    a, b = servers
    room = "presence"
    async with opened(b, "watcher", room) as watcher:
        # Its own join is announced once its presence lease is in Redis.
        await watcher.until("presence", event="join", user="watcher")
        async with opened(a, "multi", room) as tab1:
            await watcher.until("presence", event="join", user="multi")
            async with opened(b, "multi", room) as tab2:
                assert "multi" in tab2.ready["members"]
                assert "watcher" in tab2.ready["members"]
        await watcher.until("presence", event="leave", user="multi")
        about = [f for f in watcher.frames if f.get("user") == "multi"]
        assert [f["event"] for f in about] == ["join", "leave"], about
        assert sorted(tab1.ready["members"]) == ["multi", "watcher"]
        # Kick: one admin call on a closes the user's sockets on both processes.
        async with opened(a, "victim", room) as v1, opened(b, "victim", room) as v2:
            assert v1.node != v2.node
            a.kick("victim")
            for tab in (v1, v2):
                assert await close_code(tab) == 4403
        left = await watcher.until("presence", event="leave", user="victim")
        assert left["count"] == 1


@pytest.mark.parametrize("servers", [{"ttl": 1.5}], indirect=True)
async def test_kill_9_leaves_the_other_serving_and_presence_expires(
    servers: list[Server],
) -> None:
    a, b = servers
    room = "survive"
    async with opened(a, "alice", room) as alice:
        async with opened(b, "bob", room) as bob:
            await alice.until("presence", event="join", user="bob")
            await wait_until(lambda: a.members(room) == ["alice", "bob"], "both")
            b.kill(signal.SIGKILL)
            with contextlib.suppress(ConnectionClosed):
                await bob.ws.close()
        await alice.say({"from": "alice", "n": 0})
        assert (await alice.until("message"))["body"] == {"from": "alice", "n": 0}
        left = await alice.until("presence", event="leave", user="bob")
        assert left["count"] == 1
        assert a.members(room) == ["alice"]
        assert a.status()["status"] == "ok"


@pytest.mark.parametrize("servers", [{"workers": [2]}], indirect=True)
async def test_uvicorn_workers_2_share_rooms(servers: list[Server]) -> None:
    (server,) = servers
    room = "workers"
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []
        for i in range(60):
            clients.append(
                await stack.enter_async_context(opened(server, f"w{i}", room))
            )
            if i >= 9 and len({c.node for c in clients}) == 2:
                break
        nodes = {c.node for c in clients}
        assert len(nodes) == 2, "the kernel gave every connection to one worker"
        users = [str(c.ready["user"]) for c in clients]
        for n in range(5):
            for user, client in zip(users, clients, strict=True):
                await client.say({"from": user, "n": n})
        for client in clients:
            bodies = await client.messages(len(users) * 5)
            assert_exactly_once_in_order(bodies, users, 5)


async def test_redis_restart_under_real_processes(own_redis: RedisServer) -> None:
    env = {
        "WSCHAT_REDIS_URL": own_redis.url,
        "WSCHAT_PREFIX": unique_prefix(),
        "WSCHAT_SECRET": SECRET,
    }
    a, b = Server(env), Server(env)
    room = "outage"
    try:
        a.start()
        b.start()
        async with (
            opened(a, "alice", room) as alice,
            opened(a, "carol", room) as carol,
            opened(b, "bob", room) as bob,
        ):
            await alice.until("presence", event="join", user="bob")
            own_redis.kill()
            await wait_until(lambda: a.status()["status"] == "degraded", "degraded")
            status = a.status()["backplane"]
            assert status["healthy"] is False
            assert "redis" in status["detail"]
            await alice.say({"from": "alice", "n": 0})
            assert (await carol.until("message"))["body"]["n"] == 0
            assert (await alice.until("error"))["code"] == "delivery_degraded"
            own_redis.start()
            for client in (alice, carol, bob):
                assert (await client.until("resync"))["chat_id"] == room
            await wait_until(lambda: b.status()["status"] == "ok", "b recovered")
            await alice.say({"from": "alice", "n": 1})
            assert (await bob.until("message"))["body"]["n"] == 1
            missed = {"from": "alice", "n": 0}
            assert not [f for f in bob.frames if f.get("body") == missed]
            expected = ["alice", "bob", "carol"]
            await wait_until(lambda: a.members(room) == expected, "presence rebuilt")
            assert a.status()["backplane"]["reconnects"] >= 1
    finally:
        a.stop()
        b.stop()


async def test_two_hundred_simultaneous_joins_of_a_new_room(
    servers: list[Server],
) -> None:
    """encode/broadcaster 0.3.1 loses every subscriber of a process in this case."""
    a, b = servers
    room = "stampede"
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []

        async def join_one(i: int) -> None:
            clients.append(await stack.enter_async_context(opened(a, f"s{i}", room)))

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(join_one, i)
        async with opened(b, "sender", room) as sender:
            await sender.say({"from": "sender", "n": 0})
            for client in clients:
                frame = await client.until("message")
                assert frame["body"] == {"from": "sender", "n": 0}
