"""A lean WebSocket load generator: asyncio protocols with a minimal client codec.

Why not ``websockets`` clients: at 1,000 receivers a full client library spends more
CPU per frame than the server does, and the benchmark would measure the generator.
Here a receiver parses only frame headers (server frames are not masked) and counts
chat messages with one ``bytes.count`` per read, so a read of hundreds of frames costs
a few microseconds of Python. Client frames are masked with a zero key (legal, and it
leaves the payload as is). Pings are answered; close frames are recorded.

Run by :mod:`benchmarks.run` pinned to core 1; prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import time
import urllib.parse
import zlib
from collections.abc import Callable, Coroutine
from typing import Any

from benchmarks.common import HOST, cpu_seconds, cpu_split, make_token, rss_bytes

PAT_MSG = b'"type":"message"'
PAT_READY = b'"type":"ready"'
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
now = time.perf_counter


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame with a zero mask key (the payload stays as is)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0xFF)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def message_payload(body: str) -> bytes:
    """A client ``message`` frame's JSON with a string body (no escaping needed)."""
    return b'{"type":"message","body":"' + body.encode() + b'"}'


class Counter:
    """Hooks a workload sets to see messages as clients count them."""

    total = 0

    def on_messages(self, client: Client, first: int, count: int) -> None:
        self.total += count


class Client(asyncio.Protocol):
    """One WebSocket client that counts chat messages (inside ``batch`` frames too)."""

    def __init__(
        self,
        counter: Counter,
        index: int,
        request: bytes,
        *,
        tag: bytes | None = None,
        inflate: bool = False,
    ) -> None:
        self.counter = counter
        self.index = index
        self.request = request
        self.tag = tag
        self.inflater = zlib.decompressobj(-15) if inflate else None
        self.buf = b""
        self.open = False
        self.rx = 0
        self.seen = 0
        self.own = 0
        self.acked = 0
        self.close_code: int | None = None
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[float] = loop.create_future()
        self.lost: asyncio.Future[float] = loop.create_future()
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(now())
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.error or "closed early"))

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(payload))

    def close(self, code: int = 1000) -> None:
        """Send a close frame (the server answers and closes the socket)."""
        assert self.transport is not None
        self.transport.write(client_frame(code.to_bytes(2, "big"), 8))

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.error = data.split(b"\r\n", 1)[0].decode("latin-1")
                assert self.transport is not None
                self.transport.close()
                return
            self.open = True
            data = data[end + 4 :]
        n = len(data)
        i = 0
        inflated: list[bytes] = []
        while n - i >= 2:
            b0 = data[i]
            size = data[i + 1] & 0x7F
            if size < 126:
                head = 2
            elif size == 126:
                if n - i < 4:
                    break
                size = (data[i + 2] << 8) | data[i + 3]
                head = 4
            else:
                if n - i < 10:
                    break
                size = int.from_bytes(data[i + 2 : i + 10], "big")
                head = 10
            end = i + head + size
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode >= 8:
                self._control(opcode, data[i + head : end])
            elif b0 & 0x40 and self.inflater is not None:
                inflated.append(
                    self.inflater.decompress(data[i + head : end] + b"\0\0\xff\xff")
                )
            i = end
        if i < n:
            self.buf = data[i:]
        if self.inflater is not None and inflated:
            data = b"".join(inflated)
            i = len(data)
        if not self.ready.done() and data.count(PAT_READY, 0, i):
            self.ready.set_result(now())
        if self.tag is not None:
            self.own += data.count(self.tag, 0, i)
        count = data.count(PAT_MSG, 0, i)
        if count:
            first = self.seen
            self.seen = first + count
            self.counter.on_messages(self, first, count)

    def _control(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 9:
            self.transport.write(client_frame(payload, 10))
        elif opcode == 8:
            self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
            if not self.transport.is_closing():
                self.transport.write(client_frame(payload[:2], 8))
                self.transport.close()


def request(port: int, room: str, user: str, *, batch: bool, deflate: bool) -> bytes:
    """The HTTP upgrade request of one client (token in the query)."""
    query = {"token": make_token(user)}
    if batch:
        query["batch"] = "1"
    lines = [
        f"GET /ws/chat/{room}?{urllib.parse.urlencode(query)} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def connect(
    counter: Counter,
    port: int,
    index: int,
    room: str,
    *,
    batch: bool = False,
    deflate: bool = False,
    tag: bytes | None = None,
    rcvbuf: int | None = None,
    timeout: float = 30.0,
) -> Client:
    """Open one client and wait for its ``ready`` frame."""
    loop = asyncio.get_running_loop()
    req = request(port, room, f"u{index}", batch=batch, deflate=deflate)

    def factory() -> Client:
        return Client(counter, index, req, tag=tag, inflate=deflate)

    if rcvbuf is None:
        _, client = await loop.create_connection(factory, HOST, port)
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, (HOST, port))
        _, client = await loop.create_connection(factory, sock=sock)
    await asyncio.wait_for(asyncio.shield(client.ready), timeout)
    return client


async def connect_many(
    counter: Counter,
    port: int,
    n: int,
    room_of: Callable[[int], str],
    *,
    parallel: int = 100,
    **kwargs: Any,
) -> list[Client]:
    """Open ``n`` clients, ``parallel`` handshakes at a time."""
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> Client:
        async with gate:
            return await connect(counter, port, i, room_of(i), **kwargs)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def pct(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


#: A server below this share of a core is idle: no frames queued, only timers.
SERVER_IDLE_SHARE = 0.2


async def settle(
    clients: list[Client],
    quiet: float = 0.3,
    limit: float = 20,
    pid: int | None = None,
) -> bool:
    """Wait until no client has received anything for ``quiet`` seconds (True), or
    ``limit`` seconds (False). With ``pid``, the server must also have been idle
    meanwhile (below :data:`SERVER_IDLE_SHARE` of a core): a server stalled in a long
    GC pass can send nothing for a while and still have frames queued."""
    deadline = now() + limit
    while now() < deadline:
        before = sum(c.rx for c in clients)
        cpu = 0.0 if pid is None else cpu_seconds(pid)
        await asyncio.sleep(quiet)
        busy = 0.0 if pid is None else (cpu_seconds(pid) - cpu) / quiet
        if sum(c.rx for c in clients) == before and busy < SERVER_IDLE_SHARE:
            return True
    return False


def close_all(clients: list[Client]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.abort()


# -- W1 fan-out, closed loop ---------------------------------------------------------


class FanOut(Counter):
    """Closed loop: the sender keeps ``window`` messages in flight; a message is done
    once every member (the sender included) has received it."""

    def __init__(self, members: int, window: int, body: str) -> None:
        self.members = members
        self.window = window
        self.arrivals: list[int] = []
        self.sent_at: list[float] = []
        self.latencies: list[float] = []
        self.measuring = False
        self.sending = False
        self.completed = 0
        self.sender: Client | None = None
        self.payload = message_payload(body)
        self.done = asyncio.Event()

    def send_one(self) -> None:
        assert self.sender is not None
        self.arrivals.append(0)
        self.sent_at.append(now())
        self.sender.send(self.payload)

    def on_messages(self, client: Client, first: int, count: int) -> None:
        self.total += count
        arrivals = self.arrivals
        members = self.members
        stop = first + count
        for k in range(first, stop):
            arrivals[k] += 1
            if arrivals[k] == members:
                self.completed += 1
                if self.sending:
                    self.send_one()
                elif self.completed == len(arrivals):
                    self.done.set()
        if self.measuring:
            t = now()
            sent = self.sent_at
            self.latencies.extend([t - sent[k] for k in range(first, stop)])


async def w1(args: argparse.Namespace) -> dict[str, Any]:
    """Fan-out to one room of ``n`` members from one closed-loop sender."""
    fan = FanOut(args.n, args.window, "x" * args.body)
    started = now()
    clients = await connect_many(
        fan,
        args.port,
        args.n,
        lambda i: "bench",
        batch=args.batch,
        deflate=args.deflate,
    )
    filled = now()
    fan.sender = clients[0]
    # A big room's joins may keep the server busy with presence long after the last
    # ``ready``: wait up to ``--settle-limit`` s for quiet, and say whether it came.
    settled = await settle(clients, limit=args.settle_limit, pid=args.pid)
    quiet_at = now()
    fan.total = 0
    fan.sending = True
    for _ in range(args.window):
        fan.send_one()
    await asyncio.sleep(args.warmup)
    fan.measuring = True
    s0 = cpu_split(args.pid)
    d0, c0, g0, t0 = fan.total, cpu_seconds(args.pid), own_cpu(), now()
    await asyncio.sleep(args.duration)
    d1, c1, g1, t1 = fan.total, cpu_seconds(args.pid), own_cpu(), now()
    s1 = cpu_split(args.pid)
    fan.measuring = False
    fan.sending = False
    lost = 0
    try:
        await asyncio.wait_for(fan.done.wait(), 20)
    except asyncio.TimeoutError:
        lost = len(fan.arrivals) * args.n - fan.total
    elapsed = t1 - t0
    deliveries = d1 - d0
    result = {
        "n": args.n,
        "messages_sent": len(fan.arrivals),
        "deliveries_total": fan.total,
        "deliveries_expected": len(fan.arrivals) * args.n,
        "lost": lost,
        "deliveries_per_s": round(deliveries / elapsed, 1),
        "p50_ms": ms(pct(fan.latencies, 0.5)),
        "p99_ms": ms(pct(fan.latencies, 0.99)),
        "server_cpu_pct": round(100 * (c1 - c0) / elapsed, 1),
        "server_us_per_delivery": round(1e6 * (c1 - c0) / max(deliveries, 1), 3),
        "server_user_us_per_delivery": round(
            1e6 * (s1[0] - s0[0]) / max(deliveries, 1), 3
        ),
        "server_sys_us_per_delivery": round(
            1e6 * (s1[1] - s0[1]) / max(deliveries, 1), 3
        ),
        "loadgen_cpu_pct": round(100 * (g1 - g0) / elapsed, 1),
        "server_rss_mb": round(rss_bytes(args.pid) / 2**20, 1),
        "closed_early": sum(c.lost.done() for c in clients),
        "fill_s": round(filled - started, 3),
        "settle_s": round(quiet_at - filled, 3),
        "settled": settled,
    }
    close_all(clients)
    return result


# -- W2 slow consumer ----------------------------------------------------------------


class OpenLoop(Counter):
    """Timestamps every delivery to the healthy clients of an open-loop sender."""

    def __init__(self, slow: int | None) -> None:
        self.sent_at: list[float] = []
        self.slow = slow
        self.events: list[tuple[float, float]] = []  # (arrival, latency)

    def on_messages(self, client: Client, first: int, count: int) -> None:
        self.total += count
        if client.index == self.slow:
            return
        t = now()
        sent = self.sent_at
        self.events.extend([(t, t - sent[k]) for k in range(first, first + count)])


async def status_slow_consumers(port: int) -> int | None:
    """``slow_consumers`` from wschat's ``/ws/status``; None if there is none."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET /ws/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            return None
        return int(json.loads(body)["slow_consumers"])
    except (OSError, ValueError, KeyError, asyncio.TimeoutError):
        return None


async def w2(args: argparse.Namespace) -> dict[str, Any]:
    """One room of ``n``; 50 msg/s of 8 KiB; one client stops reading at 2 s."""
    slow_index = args.n - 1
    loop_ = OpenLoop(slow_index)
    clients = await connect_many(
        loop_, args.port, args.n - 1, lambda i: "slow", batch=args.batch
    )
    slow = await connect(
        loop_, args.port, slow_index, "slow", batch=args.batch, rcvbuf=65536
    )
    await settle([*clients, slow])
    sender = clients[0]
    payload = message_payload("x" * args.body)
    rss: list[tuple[float, float]] = []
    closed_at: float | None = None
    watch_status = await status_slow_consumers(args.port) is not None
    t0 = now()
    paused_at = t0 + args.pause_at
    end = t0 + args.duration
    interval = 1.0 / args.rate
    next_send = t0
    next_sample = t0
    paused = False
    while True:
        t = now()
        if t >= end:
            break
        if not paused and t >= paused_at:
            assert slow.transport is not None
            slow.transport.pause_reading()
            paused = True
        while next_send <= t:
            loop_.sent_at.append(now())
            sender.send(payload)
            next_send += interval
        if t >= next_sample:
            rss.append((round(t - t0, 2), round(rss_bytes(args.pid) / 2**20, 1)))
            next_sample += 0.5
            if watch_status and closed_at is None and paused:
                count = await status_slow_consumers(args.port)
                if count:
                    closed_at = now()
                    # Come back a moment later: is the close code waiting for it?
                    assert slow.transport is not None
                    asyncio.get_running_loop().call_later(
                        0.5, slow.transport.resume_reading
                    )
        await asyncio.sleep(min(next_send, next_sample) - now())
    sent = len(loop_.sent_at)
    await asyncio.sleep(1.0)
    healthy = [c for c in clients if not c.lost.done()]
    # Let the slow client read again: what did the server tell it, if anything?
    assert slow.transport is not None
    slow.transport.resume_reading()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(slow.lost), 5)

    def window(a: float, b: float) -> tuple[float, float | None]:
        # Throughput by arrival time; latency by send time, so that messages held
        # up by a frozen room count with their full delay when they finally arrive.
        rate = sum(1 for t, _ in loop_.events if a <= t - t0 < b) / (b - a)
        lats = [lat for t, lat in loop_.events if a <= t - lat - t0 < b]
        return rate, pct(lats, 0.99)

    before_rate, before_p99 = window(0.5, args.pause_at)
    after_rate, after_p99 = window(args.pause_at, args.duration)
    tail_rate, tail_p99 = window(args.duration / 2, args.duration)
    expected = sent * (args.n - 1)
    got = sum(c.seen for c in clients)
    rss_values = [v for _, v in rss]
    result = {
        "n": args.n,
        "healthy_rate_before": round(before_rate, 1),
        "healthy_rate_after": round(after_rate, 1),
        "healthy_rate_last_half": round(tail_rate, 1),
        "throughput_ratio": round(after_rate / before_rate, 3) if before_rate else None,
        "p99_before_ms": ms(before_p99),
        "p99_after_ms": ms(after_p99),
        "p99_last_half_ms": ms(tail_p99),
        "p99_ratio": (
            round(after_p99 / before_p99, 3) if before_p99 and after_p99 else None
        ),
        "healthy_undelivered": expected - got,
        "healthy_closed": len(clients) - len(healthy),
        "slow_closed_after_pause_s": (
            round(closed_at - paused_at, 2) if closed_at else None
        ),
        "slow_close_code": slow.close_code,
        "rss_mb_start": rss_values[0] if rss_values else None,
        "rss_mb_max": max(rss_values) if rss_values else None,
        "rss_mb_end": rss_values[-1] if rss_values else None,
        "rss_mb": rss,
    }
    close_all([*clients, slow])
    return result


# -- W3 many rooms -------------------------------------------------------------------


class Rooms(Counter):
    """Every client keeps one message in flight, acknowledged by its own echo."""

    def __init__(self) -> None:
        self.running = True
        self.payloads: dict[int, bytes] = {}

    def on_messages(self, client: Client, first: int, count: int) -> None:
        self.total += count
        while self.running and client.own > client.acked:
            client.acked += 1
            client.send(self.payloads[client.index])


async def w3(args: argparse.Namespace) -> dict[str, Any]:
    """``rooms`` rooms of ``size`` members; everyone sends, closed loop."""
    rooms = Rooms()
    n = args.rooms * args.size
    clients = await connect_many(
        rooms,
        args.port,
        n,
        lambda i: f"r{i // args.size}",
        tag=None,
        batch=args.batch,
    )
    for c in clients:
        tag = f"~c{c.index}~"
        c.tag = tag.encode()
        rooms.payloads[c.index] = message_payload(tag + "x" * args.body)
    await settle(clients)
    for c in clients:
        for _ in range(args.window):
            c.send(rooms.payloads[c.index])
    await asyncio.sleep(args.warmup)
    d0, c0, g0, t0 = rooms.total, cpu_seconds(args.pid), own_cpu(), now()
    await asyncio.sleep(args.duration)
    d1, c1, g1, t1 = rooms.total, cpu_seconds(args.pid), own_cpu(), now()
    rooms.running = False
    elapsed = t1 - t0
    result = {
        "clients": n,
        "deliveries_per_s": round((d1 - d0) / elapsed, 1),
        "server_cpu_pct": round(100 * (c1 - c0) / elapsed, 1),
        "server_us_per_delivery": round(1e6 * (c1 - c0) / max(d1 - d0, 1), 3),
        "loadgen_cpu_pct": round(100 * (g1 - g0) / elapsed, 1),
        "closed_early": sum(c.lost.done() for c in clients),
    }
    close_all(clients)
    return result


# -- W4 idle memory ------------------------------------------------------------------


async def w4(args: argparse.Namespace) -> dict[str, Any]:
    """RSS per authenticated idle connection (rooms of ``size``)."""
    counter = Counter()
    warm = await connect_many(
        counter, args.port, 50, lambda i: f"w{i // args.size}", parallel=50
    )
    await settle(warm)
    await asyncio.sleep(0.5)
    rss0 = rss_bytes(args.pid)
    clients = await connect_many(
        counter,
        args.port,
        args.n,
        lambda i: f"r{i // args.size}",
        parallel=200,
    )
    await settle(clients, quiet=0.5)
    await asyncio.sleep(1.0)
    rss1 = rss_bytes(args.pid)
    result = {
        "n": args.n,
        "rss_mb_before": round(rss0 / 2**20, 1),
        "rss_mb_after": round(rss1 / 2**20, 1),
        "kib_per_connection": round((rss1 - rss0) / args.n / 1024, 2),
        "closed_early": sum(c.lost.done() for c in clients),
    }
    close_all([*warm, *clients])
    return result


# -- W5 connect storm ----------------------------------------------------------------


async def w5(args: argparse.Namespace) -> dict[str, Any]:
    """``n`` clients connect at once with valid tokens; time until all are ready."""
    counter = Counter()
    loop = asyncio.get_running_loop()
    requests = [
        request(args.port, f"r{i // args.size}", f"u{i}", batch=False, deflate=False)
        for i in range(args.n)
    ]
    clients: list[Client] = []
    failures: list[str] = []

    async def one(i: int) -> None:
        try:
            _, client = await loop.create_connection(
                lambda: Client(counter, i, requests[i]), HOST, args.port
            )
            clients.append(client)
            await asyncio.wait_for(asyncio.shield(client.ready), args.timeout)
        except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
            failures.append(type(exc).__name__)

    c0, g0, t0 = cpu_seconds(args.pid), own_cpu(), now()
    await asyncio.gather(*(one(i) for i in range(args.n)))
    ready = [
        c.ready.result() for c in clients if c.ready.done() and not c.ready.exception()
    ]
    t1 = max(ready) if ready else now()
    c1, g1 = cpu_seconds(args.pid), own_cpu()
    result = {
        "n": args.n,
        "all_ready_s": round(t1 - t0, 3),
        "p50_ready_s": round(statistics.median(r - t0 for r in ready), 3)
        if ready
        else None,
        "ready": len(ready),
        "failures": len(failures) + (args.n - len(ready) - len(failures)),
        "failure_kinds": sorted(set(failures)),
        "server_cpu_s": round(c1 - c0, 3),
        "loadgen_cpu_s": round(g1 - g0, 3),
        # perf_counter is CLOCK_MONOTONIC, the server's clock too: benchmarks.run
        # counts the server's GC collections inside this window.
        "window": [t0, t1],
    }
    close_all(clients)
    return result


# -- churn ---------------------------------------------------------------------------


async def churn(args: argparse.Namespace) -> dict[str, Any]:
    """``n`` members, 50 msg/s; at 2 s ``die`` clients vanish (half without a close)."""
    counter = OpenLoop(None)
    clients = await connect_many(counter, args.port, args.n, lambda i: "churn")
    await settle(clients)
    sender = clients[0]
    doomed = clients[args.n - args.die :]
    survivors = clients[: args.n - args.die]
    payload = message_payload("x" * args.body)
    t0 = now()
    interval = 1.0 / args.rate
    k = 0
    killed = False
    while now() - t0 < args.duration:
        if not killed and now() - t0 >= args.pause_at:
            for j, c in enumerate(doomed):
                if j % 2:
                    c.close(1001)
                else:
                    assert c.transport is not None
                    c.transport.abort()
            killed = True
        counter.sent_at.append(now())
        sender.send(payload)
        k += 1
        await asyncio.sleep(max(0.0, t0 + k * interval - now()))
    sent = len(counter.sent_at)
    deadline = now() + 10
    while now() < deadline and any(  # noqa: ASYNC110 (bounded poll of counters)
        c.seen < sent for c in survivors if not c.lost.done()
    ):
        await asyncio.sleep(0.1)
    result = {
        "n": args.n,
        "died": args.die,
        "sent": sent,
        "survivors_closed": sum(c.lost.done() for c in survivors),
        "sender_closed": sender.lost.done(),
        "lost": sum(sent - c.seen for c in survivors),
    }
    close_all(survivors)
    return result


# -- refusal flood ---------------------------------------------------------------------


def junk_request(port: int, n: int, kind: str) -> bytes:
    """An upgrade request whose token the server refuses (``kind``: how it is bad)."""
    if kind == "jwt":
        # Well formed, signed with another key: the server checks the signature.
        good = make_token(f"u{n}")
        tok = good[: good.rindex(".") + 1] + "A" * 43
    else:
        tok = f"junk-{n}"
    lines = [
        f"GET /ws/chat/calm?token={tok} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Junk(asyncio.Protocol):
    """One junk handshake: done when the server refused it (403, or 101 then a close
    frame), or gave up on it. Answers a close frame the way a client library would."""

    def __init__(self, request: bytes, done: Callable[[Junk, str], None]) -> None:
        self.request = request
        self.done = done
        self.started = now()
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.outcome: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.outcome is not None:
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        assert self.transport is not None
        if not self.buf.startswith(b"HTTP/1.1 101"):
            self._finish("denied")
            self.transport.close()
            return
        rest = self.buf[end + 4 :]
        if len(rest) >= 4 and rest[0] == 0x88:
            code = int.from_bytes(rest[2:4], "big")
            self.transport.write(client_frame(rest[2:4], 8))
            self.transport.close()
            self._finish(f"closed-{code}")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.outcome is None:
            self._finish("lost")

    def _finish(self, outcome: str) -> None:
        self.outcome = outcome
        self.done(self, outcome)


async def flood(args: argparse.Namespace) -> dict[str, Any]:
    """Junk-token handshakes against a room of ``n`` established clients.

    One member sends ``rate`` messages per second (open loop) to the room the whole
    time; the deliveries' latency is measured ``duration`` seconds before the flood
    and ``duration`` seconds during it. The flood offers ``flood_rate`` handshakes
    per second (at most ``flood_concurrency`` in flight), or with ``flood_rate`` 0
    keeps ``flood_concurrency`` in flight as fast as the server answers.
    """
    loop = asyncio.get_running_loop()
    counter = OpenLoop(None)
    clients = await connect_many(counter, args.port, args.n, lambda i: "calm")
    await settle(clients)
    sender = clients[0]
    payload = message_payload("x" * args.body)
    outcomes: dict[str, int] = {}
    refusal_times: list[float] = []
    in_flight = 0
    flooding = False
    skipped = 0
    serial = 0
    requests = [junk_request(args.port, i, args.junk) for i in range(256)]
    opening: set[asyncio.Task[None]] = set()

    def finished(junk: Junk, outcome: str) -> None:
        nonlocal in_flight
        in_flight -= 1
        if flooding:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome != "lost":
                refusal_times.append(now() - junk.started)
        if flooding and args.flood_rate <= 0:
            launch()

    def launch() -> None:
        nonlocal in_flight, serial
        in_flight += 1
        serial += 1
        request = requests[serial % len(requests)]

        async def open_one() -> None:
            try:
                await loop.create_connection(
                    lambda: Junk(request, finished), HOST, args.port
                )
            except OSError:
                finished(Junk(request, finished), "connect-failed")

        task = loop.create_task(open_one())
        opening.add(task)
        task.add_done_callback(opening.discard)

    async def send_for(seconds: float) -> tuple[float, float]:
        nonlocal skipped
        t0 = now()
        interval = 1.0 / args.rate
        k = 0
        flood_interval = 1.0 / args.flood_rate if args.flood_rate > 0 else 0.0
        next_junk = t0
        tick = min(interval, 0.005)
        while now() - t0 < seconds:
            t = now()
            while t0 + k * interval <= t:
                counter.sent_at.append(now())
                sender.send(payload)
                k += 1
            if flooding and flood_interval:
                while next_junk <= t:
                    if in_flight < args.flood_concurrency:
                        launch()
                    else:
                        skipped += 1
                    next_junk += flood_interval
            await asyncio.sleep(tick)
        return t0, now()

    b0, b1 = await send_for(args.duration)
    flooding = True
    if args.flood_rate <= 0:
        for _ in range(args.flood_concurrency):
            launch()
    c0, g0 = cpu_seconds(args.pid), own_cpu()
    f0, f1 = await send_for(args.duration)
    c1, g1 = cpu_seconds(args.pid), own_cpu()
    flooding = False
    refused = sum(v for k, v in outcomes.items() if k not in ("lost", "connect-failed"))
    # Let the last messages arrive before reading latencies.
    await asyncio.sleep(0.5)

    def p(a: float, b: float, q: float) -> float | None:
        return pct([lat for t, lat in counter.events if a <= t - lat < b], q)

    sent = len(counter.sent_at)
    expected = sent * args.n
    result = {
        "n": args.n,
        "junk": args.junk,
        "flood_rate_offered": args.flood_rate,
        "refusals_per_s": round(refused / (f1 - f0), 1),
        "refusal_outcomes": outcomes,
        "flood_skipped_at_cap": skipped,
        "refusal_p50_ms": ms(pct(refusal_times, 0.5)),
        "refusal_p99_ms": ms(pct(refusal_times, 0.99)),
        "p50_before_ms": ms(p(b0, b1, 0.5)),
        "p99_before_ms": ms(p(b0, b1, 0.99)),
        "p50_during_ms": ms(p(f0, f1, 0.5)),
        "p99_during_ms": ms(p(f0, f1, 0.99)),
        "server_cpu_pct_during": round(100 * (c1 - c0) / (f1 - f0), 1),
        "server_us_per_refusal": round(1e6 * (c1 - c0) / max(refused, 1), 1),
        "loadgen_cpu_pct_during": round(100 * (g1 - g0) / (f1 - f0), 1),
        "undelivered": expected - sum(c.seen for c in clients),
        "clients_closed": sum(c.lost.done() for c in clients),
    }
    close_all(clients)
    return result


def run(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run a workload on uvloop when it is installed (a third of asyncio's cost per
    read), else on asyncio; the result records which."""
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main)
        result["loadgen_loop"] = "asyncio"
        return result
    result = uvloop.run(main)
    result["loadgen_loop"] = "uvloop"
    return result


WORKLOADS = {
    "w1": w1,
    "w2": w2,
    "w3": w3,
    "w4": w4,
    "w5": w5,
    "churn": churn,
    "flood": flood,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="server process id")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--body", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--pause-at", type=float, default=2.0)
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--size", type=int, default=4)
    parser.add_argument("--die", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--settle-limit",
        type=float,
        default=20.0,
        help="W1: how long to wait for the filled room to go quiet",
    )
    parser.add_argument("--flood-rate", type=float, default=1000.0)
    parser.add_argument("--flood-concurrency", type=int, default=200)
    parser.add_argument("--junk", choices=("malformed", "jwt"), default="malformed")
    parser.add_argument("--batch", action="store_true")
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = run(WORKLOADS[args.workload](args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
