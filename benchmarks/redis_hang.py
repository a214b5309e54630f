"""How fast a hung Redis is noticed, and what the clients see (issue 10, bug 2).

Two uvicorn processes run ``benchmarks/redis_app.py`` on a private ``redis-server``
(a free loopback port; never the shared one). A sender on process A sends one
message every ``--interval`` seconds; a receiver on A and one on B record every frame.
``/ws/status`` of both processes is polled every 20 ms. Redis is paused with SIGSTOP
for ``--hang`` seconds during the traffic, then resumed with SIGCONT.

Printed per run (seconds are measured from the SIGSTOP):

- ``degraded_a`` / ``degraded_b``: first ``/ws/status`` saying ``degraded``.
- ``first_delivery_degraded``: the sender's first ``delivery_degraded`` error frame.
- ``sent``, ``delivery_degraded``: messages sent, error frames the sender got.
- ``not_published``: messages Redis never published (a plain subscriber of the room's
  channel, with no timeouts, records what Redis published: the ground truth);
  ``degraded_mismatch``: messages named by a ``delivery_degraded`` frame that were
  published, plus unpublished ones no frame named (0 is right; needs frames that
  carry the message ``id``, else ``null``).
- ``lost_b``: messages the receiver on B never got; ``silent_b``: of those, the ones
  after which B got no ``resync`` (a silent loss).
- ``resync_a`` / ``resync_b``: ``resync`` frames the receivers got.
- ``healthy_after_cont``: seconds from SIGCONT until both processes say ``ok``.

Run::

    python -m benchmarks.redis_hang --hang 5 --hang 12 --hang 31
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
from redis import asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.common import checkout_env

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hang-benchmark-secret-" + "z" * 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, SECRET, "HS256")


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("no redis-server on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not answers(port):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def uvicorn(env: dict[str, str]) -> Iterator[int]:
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"wschat-hang-{port}.log"
    cmd = [
        sys.executable,
        *("-m", "uvicorn", "--app-dir", str(ROOT / "benchmarks"), "redis_app:app"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=checkout_env(**env), stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 20
        while status(port) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if os.environ.get("WSCHAT_HANG_KEEP_LOGS"):
            print(f"log: {log}", file=sys.stderr)
        else:
            log.unlink()


def status(port: int) -> str | None:
    url = f"http://127.0.0.1:{port}/ws/status"
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return str(json.loads(response.read())["status"])
    except OSError:
        return None


class Recorder:
    """Reads every frame of one client, with the time it arrived."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[float, dict[str, Any]]] = []

    async def run(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                frame = json.loads(raw)
                inner = frame["frames"] if frame.get("type") == "batch" else [frame]
                now = time.monotonic()
                self.frames.extend((now, f) for f in inner)

    def of(self, kind: str, code: str | None = None) -> list[tuple[float, Any]]:
        return [
            (t, f)
            for t, f in self.frames
            if f["type"] == kind and (code is None or f.get("code") == code)
        ]


async def open_client(port: int, user: str, room: str) -> Recorder:
    url = f"ws://127.0.0.1:{port}/ws/chat/{room}?token={token(user)}"
    ws = await connect(url, max_queue=None)
    first = json.loads(await ws.recv())
    assert first["type"] == "ready", first
    return Recorder(ws)


async def poll_status(port: int, until: float, out: list[tuple[float, str]]) -> None:
    while time.monotonic() < until:
        value = await asyncio.to_thread(status, port)
        out.append((time.monotonic(), value or "down"))
        await asyncio.sleep(0.02)


async def watch(url: str, channel: str, published: list[Any]) -> None:
    """Record every chat message Redis publishes on ``channel`` (no timeouts)."""
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    try:
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            kind, _, payload = message["data"].split(b"|", 2)
            if kind == b"m":
                published.append(json.loads(payload)["body"])
    finally:
        await pubsub.aclose()
        await client.aclose()


async def one_run(hang: float, interval: float, after: float) -> dict[str, Any]:
    with redis_server() as (redis, redis_port), contextlib.ExitStack() as stack:
        published: list[Any] = []
        watcher = asyncio.create_task(
            watch(f"redis://127.0.0.1:{redis_port}/0", "hang:r:hang", published)
        )
        env = {
            "WSCHAT_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "WSCHAT_PREFIX": "hang:",
            "WSCHAT_SECRET": SECRET,
        }
        port_a = stack.enter_context(uvicorn(env))
        port_b = stack.enter_context(uvicorn(env))
        room = "hang"
        sender = await open_client(port_a, "sender", room)
        recv_a = await open_client(port_a, "receiver-a", room)
        recv_b = await open_client(port_b, "receiver-b", room)
        readers = [asyncio.create_task(c.run()) for c in (sender, recv_a, recv_b)]
        warmup = 2.0
        start = time.monotonic()
        end = start + warmup + hang + after
        statuses: dict[str, list[tuple[float, str]]] = {"a": [], "b": []}
        pollers = [
            asyncio.create_task(poll_status(p, end + 2, statuses[k]))
            for k, p in (("a", port_a), ("b", port_b))
        ]
        sent: list[tuple[float, int]] = []

        async def send() -> None:
            n = 0
            while time.monotonic() < end:
                await sender.ws.send(json.dumps({"type": "message", "body": n}))
                sent.append((time.monotonic(), n))
                n += 1
                await asyncio.sleep(interval)

        sending = asyncio.create_task(send())
        await asyncio.sleep(warmup)
        stopped = time.monotonic()
        redis.send_signal(signal.SIGSTOP)
        await asyncio.sleep(hang)
        redis.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        await sending
        await asyncio.sleep(3.0)  # drain
        for task in (*readers, *pollers, watcher):
            task.cancel()
        for client in (sender, recv_a, recv_b):
            await client.ws.close()

    def first(points: list[tuple[float, Any]], since: float, pred: Any) -> float | None:
        for t, value in points:
            if t >= since and pred(value):
                return round(t - since, 2)
        return None

    got_b = {f["body"] for _, f in recv_b.of("message")}
    resync_b = [t for t, _ in recv_b.of("resync")]
    lost = [(t, n) for t, n in sent if n not in got_b]
    silent = [n for t, n in lost if not any(r > t for r in resync_b)]
    errors = [f for _, f in sender.of("error", "delivery_degraded")]
    by_id = {f["id"]: f["body"] for _, f in sender.of("message")}
    not_published = {n for _, n in sent} - set(published)
    mismatch = None
    if errors and all("id" in f for f in errors):
        named = [by_id.get(f["id"]) for f in errors]
        mismatch = len(set(named) ^ not_published) + len(named) - len(set(named))
        if mismatch and os.environ.get("WSCHAT_HANG_KEEP_LOGS"):
            times = {n: round(t - stopped, 2) for t, n in sent}
            odd = sorted(set(named) ^ not_published, key=lambda n: times.get(n, 0))
            print("mismatch:", [(n, times.get(n)) for n in odd], file=sys.stderr)
    healthy_at = [first(statuses[k], resumed, lambda s: s == "ok") for k in ("a", "b")]
    return {
        "hang_s": hang,
        "degraded_a": first(statuses["a"], stopped, lambda s: s != "ok"),
        "degraded_b": first(statuses["b"], stopped, lambda s: s != "ok"),
        "first_delivery_degraded": first(
            sender.of("error", "delivery_degraded"), stopped, lambda f: True
        ),
        "sent": len(sent),
        "delivery_degraded": len(errors),
        "not_published": len(not_published),
        "degraded_mismatch": mismatch,
        "lost_b": len(lost),
        "silent_b": len(silent),
        "resync_a": len(recv_a.of("resync")),
        "resync_b": len(resync_b),
        "healthy_after_cont": (
            None if None in healthy_at else max(h for h in healthy_at if h is not None)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hang", type=float, action="append", default=[])
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--after", type=float, default=10.0)
    args = parser.parse_args()
    for hang in args.hang or [5.0]:
        result = asyncio.run(one_run(hang, args.interval, args.after))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
