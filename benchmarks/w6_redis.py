"""W6: cross-process fan-out on Redis, next to one process on the in-memory backplane.

Two uvicorn processes run ``benchmarks/redis_app.py`` on one Redis; the clients of
one room are split evenly over them. Every sender's messages must reach every client
exactly once and in order: the run counts deliveries per second, losses, duplicates
and order breaks. The same run on one process with the in-memory backplane is the
baseline. With ``--history both`` (the default) each repeat runs the two processes
twice, interleaved: history off (``history=False``) and history on as a clustered
deployment has it (``RedisHistoryStore`` on the same Redis, which numbers, keeps and
publishes every message in one Lua script: docs/history.md); the one-process baseline
keeps the manager's default (history in memory).

Clients are lean asyncio protocols (a minimal client codec, like ``loadgen.py``) that
opt in to ``batch`` frames (``--no-batch``: one frame per delivery) and find
``(sender, n)`` in each delivery with one regex per frame. Sending is closed-loop:
a round (one message per sender) goes out only while probe clients on every process
are at most ``--window`` rounds behind.

Run::

    python -m benchmarks.w6_redis                 # 200 clients, 20 senders x 100
    python -m benchmarks.w6_redis --json out.json --repeat 3
    python -m benchmarks.w6_redis --no-batch     # one WebSocket frame per delivery
    python -m benchmarks.w6_redis --quick        # what benchmarks.run --quick runs
    python -m benchmarks.w6_redis --history off  # two processes without history only

The last line printed is a JSON summary (``benchmarks.run`` reads it).

Needs a Redis at ``--redis`` (default redis://127.0.0.1:6379/0; ``.ci/run`` starts
one).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import jwt

from benchmarks.common import checkout_env

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SECRET = "benchmark-secret-not-for-production-0123456789"
KEY = base64.b64encode(os.urandom(16))
DELIVERY = re.compile(rb'"body":\{"s":(\d+),"n":(\d+)\}')
READY = b'"type":"ready"'
OFFSET = b'"offset":'


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, SECRET, "HS256")


def client_frame(payload: bytes) -> bytes:
    """A masked text frame with a zero mask key (the payload stays as is)."""
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE)) + n.to_bytes(2)
    return head + b"\0\0\0\0" + payload


class Client(asyncio.Protocol):
    """One WebSocket client that checks every delivery it gets."""

    def __init__(
        self, port: int, user: str, room: str, senders: int, batch: bool
    ) -> None:
        query = urllib.parse.urlencode({"token": token(user)})
        protocols = "wschat.v1, wschat.batch" if batch else "wschat.v1"
        self.request = (
            f"GET /ws/chat/{room}?{query} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocols}\r\n\r\n"
        ).encode()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.last = [-1] * senders
        self.received = 0
        # Deliveries in frames that carry an ``offset`` (history on numbers them).
        self.numbered = 0
        self.duplicates = 0
        self.gaps = 0
        self.last_at = 0.0
        self.closed_with: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(payload))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(bytes(buf[:100]).decode()))
                return
            del buf[: end + 4]
            self.upgraded = True
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            opcode = buf[pos] & 0x0F
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4])
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10])
                start = pos + 10
            if size < start + length:
                break
            payload = bytes(buf[start : start + length])
            pos = start + length
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 8:
                self.closed_with = int.from_bytes(payload[:2]) if payload else 1005
            elif opcode == 9 and self.transport is not None:
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0" * 4)
        del buf[:pos]

    def on_text(self, payload: bytes) -> None:
        if not self.ready.done():
            if READY in payload:
                self.ready.set_result(None)
            return
        found = DELIVERY.findall(payload)
        if not found:
            return
        if OFFSET in payload:
            self.numbered += len(found)
        last = self.last
        for s, n in found:
            sender, seq = int(s), int(n)
            before = last[sender]
            if seq <= before:
                self.duplicates += 1
                continue
            if seq > before + 1:
                self.gaps += seq - before - 1
            last[sender] = seq
            self.received += 1
        self.last_at = time.perf_counter()


@contextmanager
def uvicorn_server(env: dict[str, str], log: Path) -> Iterator[tuple[int, int]]:
    """``redis_app:app`` under uvicorn in its own process; yields ``(pid, port)``."""
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = int(sock.getsockname()[1])
    argv = [
        sys.executable,
        *("-m", "uvicorn", "--app-dir", str(ROOT / "benchmarks"), "redis_app:app"),
        *("--host", HOST, "--port", str(port), "--log-level", "warning"),
        *("--loop", "asyncio", "--ws", "websockets-sansio", "--backlog", "4096"),
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=checkout_env(**env), stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"server did not start; see {log}") from None
                time.sleep(0.05)
        yield proc.pid, port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fan_out(
    servers: list[tuple[int, int]], args: argparse.Namespace, room: str
) -> dict[str, Any]:
    """Connect the clients round-robin over the servers, send, check deliveries."""
    ports = [port for _, port in servers]
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    for i in range(args.clients):
        port = ports[i % len(ports)]
        client = Client(port, f"u{i}", room, args.senders, not args.no_batch)
        await loop.create_connection(lambda c=client: c, HOST, port)  # type: ignore[misc]
        clients.append(client)
    await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), 60)
    # Let presence frames of the joins drain before measuring.
    await asyncio.sleep(0.5)
    senders = clients[: args.senders]
    probes = clients[-2 * len(ports) :]
    expected = args.senders * args.messages
    # Server CPU counts from here: connecting and presence are not deliveries.
    cpu0 = [cpu_seconds(pid) for pid, _ in servers]
    t0 = time.perf_counter()
    for n in range(args.messages):
        deadline = time.monotonic() + 30
        while min(p.received for p in probes) < (n - args.window) * args.senders:
            if time.monotonic() > deadline:
                raise RuntimeError("deliveries stalled")
            await asyncio.sleep(0.0005)
        for s, client in enumerate(senders):
            client.send(b'{"type":"message","body":{"s":%d,"n":%d}}' % (s, n))
    quiet_deadline = time.monotonic() + 30
    while any(c.received < expected for c in clients):
        if time.monotonic() > quiet_deadline:
            break
        await asyncio.sleep(0.005)
    t_end = max(c.last_at for c in clients)
    cpu = [cpu_seconds(pid) - c for (pid, _), c in zip(servers, cpu0, strict=True)]
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    received = sum(c.received for c in clients)
    lost = sum(
        c.gaps + sum(args.messages - 1 - last for last in c.last) for c in clients
    )
    return {
        "clients": args.clients,
        "processes": len(ports),
        "senders": args.senders,
        "batch": not args.no_batch,
        "messages_per_sender": args.messages,
        "expected_deliveries": expected * args.clients,
        "deliveries": received,
        "numbered_deliveries": sum(c.numbered for c in clients),
        "lost": lost,
        "duplicates": sum(c.duplicates for c in clients),
        "closed": sum(c.closed_with is not None for c in clients),
        "seconds": round(t_end - t0, 3),
        "deliveries_per_s": round(received / (t_end - t0)),
        "server_cpu_s": [round(c, 2) for c in cpu],
        # Server CPU per delivery does not depend on what else the machine runs.
        "server_cpu_us_per_delivery": round(sum(cpu) * 1e6 / max(1, received), 2),
    }


#: The cases of one repeat: (label, backplane, processes, ``WSCHAT_HISTORY``).
CASES = {
    "memory": ("memory", "memory", 1, ""),
    "redis": ("redis", "redis", 2, "off"),
    "redis_history": ("redis_history", "redis", 2, "redis"),
}


def run_once(
    args: argparse.Namespace, backplane: str, processes: int, history: str = "off"
) -> dict[str, Any]:
    prefix = f"w6{os.urandom(3).hex()}:"
    env = {
        "WSCHAT_BACKPLANE": backplane,
        "WSCHAT_REDIS_URL": args.redis,
        "WSCHAT_PREFIX": prefix,
        "WSCHAT_SECRET": SECRET,
        "WSCHAT_HISTORY": history,
    }
    log = Path(tempfile.gettempdir()) / "wschat-w6-redis.log"
    with ExitStack() as stack:
        servers = [
            stack.enter_context(uvicorn_server(env, log)) for _ in range(processes)
        ]
        result = asyncio.run(fan_out(servers, args, "w6"))
    result["backplane"] = backplane
    result["history"] = {"": "memory", "off": "off", "redis": "redis"}[history]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument(
        "--no-batch", action="store_true", help="one WebSocket frame per delivery"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--history",
        choices=("both", "off", "redis"),
        default="both",
        help="the two-process runs: history off, on (RedisHistoryStore), or both "
        "interleaved (default)",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--quick", action="store_true", help="a short run (benchmarks.run --quick)"
    )
    args = parser.parse_args()
    if args.quick:
        args.messages, args.repeat = min(args.messages, 30), 1
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    labels = ["memory"]
    labels += {"both": ["redis", "redis_history"], "off": ["redis"]}.get(
        args.history, ["redis_history"]
    )
    runs = []
    for _ in range(args.repeat):
        for label in labels:
            _, backplane, processes, history = CASES[label]
            result = run_once(args, backplane, processes, history)
            result["case"] = label
            print(json.dumps(result), flush=True)
            runs.append(result)
    summary: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
    }
    for label in labels:
        rates = sorted(r["deliveries_per_s"] for r in runs if r["case"] == label)
        summary[f"{label}_median_deliveries_per_s"] = rates[len(rates) // 2]
        summary[f"{label}_deliveries_per_s"] = rates
        costs = sorted(
            r["server_cpu_us_per_delivery"] for r in runs if r["case"] == label
        )
        summary[f"{label}_median_cpu_us_per_delivery"] = costs[len(costs) // 2]
    if args.history == "both":
        # History on against off, repeat by repeat (the two ran one after the other).
        on = [r["deliveries_per_s"] for r in runs if r["case"] == "redis_history"]
        off = [r["deliveries_per_s"] for r in runs if r["case"] == "redis"]
        per_repeat = sorted(a / b for a, b in zip(on, off, strict=True))
        summary["history_on_off_ratios"] = [round(x, 3) for x in per_repeat]
        summary["history_on_off_ratio"] = round(per_repeat[len(per_repeat) // 2], 3)
    # What the table must show besides speed: every delivery arrived exactly once.
    for key in ("lost", "duplicates", "closed"):
        summary[key] = sum(r[key] for r in runs)
    summary["deliveries"] = sum(r["deliveries"] for r in runs)
    summary["expected_deliveries"] = sum(r["expected_deliveries"] for r in runs)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
