"""A connect storm during a key rotation, with a slow JWKS endpoint: does the loop lag?

``python -m benchmarks.jwks_storm`` (about a minute). The wschat server runs in a
subprocess (uvicorn, ``chat_app``), pinned to core 0; the
JWKS endpoint (stdlib HTTP server, answering in ``--delay`` seconds, 200 ms by
default) and the clients run in this process, on core 1.

1. ``--open`` clients (50) connect with tokens of the old key and keep pinging.
2. The provider rotates: the JWKS now holds a new key, and ``--storm`` clients
   (1,000) connect at once with tokens of the new key.
3. A ticker task on the server's event loop sleeps 1 ms at a time and records how
   late it wakes up, corrected for coordinated omission (a stall of 200 ms also
   counts the 199 ticks it swallowed), from the storm's start until every client
   has its ``ready`` frame. The open clients record their ping round trips.

Verifiers compared, each in a fresh server:

* ``jwks``: :class:`wschat.jwks.JwksVerifier`; keys fetched in a worker thread, one
  fetch for the whole storm.
* ``cached``: the same, but the new key was fetched before the storm: what the
  storm itself costs the loop, with no fetch at all.
* ``blocking``: PyJWT's ``PyJWKClient`` called from ``verify``, what one writes
  without wschat's: the fetch runs on the event loop.

Prints one JSON object per verifier, then a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from typing import Any

import httpx
import jwt
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.common import (
    HOST,
    LOADGEN_CORE,
    ROOT,
    SERVER_CORE,
    checkout_env,
    free_port,
    pinned,
)
from tests.support.jwks import JwksServer, jwk_of, rsa_key, sign
from wschat import ConnectionManager, Principal, TokenVerifier
from wschat.asgi import chat_app
from wschat.auth import Verifier
from wschat.errors import TokenInvalid
from wschat.jwks import JwksVerifier

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: How often the ticker wakes, in seconds.
TICK = 0.001


# -- the server side ------------------------------------------------------------------


class BlockingJwks:
    """PyJWT's ``PyJWKClient`` in ``verify``: the fetch blocks the event loop."""

    def __init__(self, url: str) -> None:
        # Its cooldown as short as the JwksVerifier's in this benchmark.
        self.client = jwt.PyJWKClient(
            url, cache_keys=True, lifespan=300, cooldown_duration=1
        )
        self.keys: dict[str, TokenVerifier] = {}

    def verify(self, token: str) -> Principal:
        kid = str(jwt.get_unverified_header(token).get("kid"))
        if kid not in self.keys:
            try:
                key = self.client.get_signing_key(kid)
            except jwt.PyJWKClientError:
                raise TokenInvalid("unknown key id (kid)") from None
            self.keys[kid] = TokenVerifier(key.key, algorithms=["RS256"])
        return self.keys[kid].verify(token)


class Ticker:
    """Wakes every 1 ms on the server's loop and records each wake-up.

    A tick is ``(time, wall, on_cpu)``: when it woke (``time.perf_counter``, the
    CLOCK_MONOTONIC every process on the machine shares), how late (``wall``, the
    lag a client sees), and how late less the time the OS kept the loop's thread
    waiting for a CPU (``on_cpu``, from ``run_delay`` in
    ``/proc/self/task/<tid>/schedstat``). On a shared machine other processes
    inflate ``wall``; ``on_cpu`` is the lag the server's own work, or a blocking
    call in it, causes.
    """

    def __init__(self) -> None:
        self.ticks: list[tuple[float, float, float]] = []

    async def run(self) -> None:
        path = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        fd = os.open(path, os.O_RDONLY)

        def waited() -> float:
            return int(os.pread(fd, 128, 0).split()[1]) / 1e9

        while True:
            start, queued = time.perf_counter(), waited()
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            lag = now - start - TICK
            self.ticks.append((now, lag, lag - (waited() - queued)))


def lag_summary(ticks: Sequence[Sequence[float]], column: int) -> dict[str, Any]:
    """Percentiles of one lag column, corrected for coordinated omission.

    A stall of 200 ms is one late tick, but it also swallowed the 199 ticks that
    would have run during it, each of which would have waited a little less: those
    are counted too, so that p99 says what a message arriving at a random moment
    waits.
    """
    samples: list[float] = []
    for tick in ticks:
        lag = max(0.0, tick[column])
        samples.append(lag)
        missed = lag - TICK
        while missed > 0:
            samples.append(missed)
            missed -= TICK
    ordered = sorted(samples) or [0.0]

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)

    return {
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": round(1000 * ordered[-1], 2),
    }


def in_window(
    ticks: Sequence[Sequence[float]], start: float, end: float
) -> dict[str, Any]:
    """The loop during ``[start, end]`` (the JWKS fetch): ticks, longest gap, p99.

    A fetch made on the event loop stops it for the whole window: no tick inside,
    and one gap at least as long as the window.
    """
    times = [t[0] for t in ticks]
    inside = [t for t in times if start <= t <= end]
    spans = [
        (a, b) for a, b in itertools.pairwise(ticks) if b[0] >= start and a[0] <= end
    ]
    during = [t for t in ticks if start <= t[0] <= end]
    return {
        "window_ms": round(1000 * (end - start), 2),
        "ticks": len(inside),
        "longest_gap_ms": round(
            1000 * max((b[0] - a[0] for a, b in spans), default=end - start), 2
        ),
        # The same, less the time the OS kept the loop waiting for a CPU.
        "longest_on_cpu_ms": round(
            1000 * max((b[2] + TICK for _, b in spans), default=end - start), 2
        ),
        "lag_p99_ms": lag_summary(during, 1)["p99_ms"] if during else None,
        "lag_on_cpu_p99_ms": lag_summary(during, 2)["p99_ms"] if during else None,
    }


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The server's own cost: accept, send ``ready``, answer pings; no wschat."""
    if scope["type"] != "websocket":
        await chat_app(ConnectionManager(), _NO_VERIFIER)(scope, receive, send)
        return
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": '{"type": "ready"}'})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": '{"type": "pong"}'})


_NO_VERIFIER = TokenVerifier("x" * 64, algorithms=["HS256"])


def build_app() -> App:
    """The server (``uvicorn benchmarks.jwks_storm:build_app --factory``).

    ``WSCHAT_JWKS_URL`` is the JWKS; ``WSCHAT_JWKS_MODE`` is ``jwks``,
    ``blocking`` or ``raw`` (no wschat: the ASGI server's own cost). ``POST /lag``
    starts the ticker (or starts it over); ``GET /lag`` returns its ticks.
    The refetch cooldown is 1 s (not 30), so that the rotation need not wait.
    """
    url = os.environ["WSCHAT_JWKS_URL"]
    verifier: Verifier
    if os.environ.get("WSCHAT_JWKS_MODE", "jwks") == "blocking":
        verifier = BlockingJwks(url)
    else:
        verifier = JwksVerifier(url, algorithms=["RS256"], refetch_cooldown=1)
    chat = chat_app(ConnectionManager(), verifier, rate_limit=None)
    if os.environ.get("WSCHAT_JWKS_MODE") == "raw":
        chat = raw_app
    ticker = Ticker()
    tasks: set[asyncio.Task[None]] = set()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/lag":
            if not tasks:
                tasks.add(asyncio.get_running_loop().create_task(ticker.run()))
            if scope["method"] == "POST":
                ticker.ticks.clear()
                body = b"{}"
            else:
                body = json.dumps(ticker.ticks).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await chat(scope, receive, send)

    return app


# -- the client side ------------------------------------------------------------------


@contextlib.contextmanager
def server(jwks_url: str, mode: str, *, pin: bool = True) -> Iterator[int]:
    """The wschat server in a subprocess (pinned to core 0); yields its port."""
    port = free_port()
    argv = [
        sys.executable,
        *("-m", "uvicorn", "benchmarks.jwks_storm:build_app", "--factory"),
        *("--host", HOST, "--port", str(port), "--log-level", "warning"),
        *("--ws-max-size", str(64 * 1024), "--backlog", "4096"),
    ]
    env = checkout_env(WSCHAT_JWKS_URL=jwks_url, WSCHAT_JWKS_MODE=mode)
    proc = subprocess.Popen(
        pinned(SERVER_CORE, argv) if pin else argv, cwd=ROOT, env=env
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://{HOST}:{port}/ws/status", timeout=1).is_success:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the storm server did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _ready(ws: ClientConnection) -> None:
    while json.loads(await ws.recv())["type"] != "ready":
        pass


async def storm(
    port: int,
    jwks: JwksServer,
    *,
    connections: int,
    open_clients: int,
    delay: float,
    rate: float,
    warm: bool,
) -> dict[str, Any]:
    """Rotate the key, then open ``connections``; measure the server's loop lag.

    Args:
        port: The server's port.
        jwks: The JWKS endpoint the server uses.
        connections: How many clients connect with the new key.
        open_clients: How many clients are connected (old key) before and during.
        delay: Seconds the JWKS endpoint takes to answer during the storm.
        rate: Connections started per second; 0 starts them all at once.
        warm: Fetch the new key before the storm (one client, outside the window).

    Returns:
        ``admitted``, ``refused``, ``jwks_requests`` (during the storm), ``seconds``
        (until every client had ``ready``), ``lag`` and ``lag_on_cpu`` (the
        ticker's percentiles over the storm) and ``fetch`` (the loop during the
        storm's JWKS fetch, if there was one: see :func:`in_window`).
    """
    base = f"ws://{HOST}:{port}/ws/chat"
    old, new = rsa_key("storm-old"), rsa_key("storm-new")
    old_tokens = [sign(old, "old", sub=f"open-{i}") for i in range(open_clients)]
    new_tokens = [sign(new, "new", sub=f"user-{i}") for i in range(connections)]
    async with contextlib.AsyncExitStack() as stack:
        for tok in old_tokens:
            ws = await stack.enter_async_context(
                connect(f"{base}/lobby?token={tok}", open_timeout=30, max_queue=None)
            )
            await _ready(ws)
        jwks.keys = [jwk_of(old, "old"), jwk_of(new, "new")]
        await asyncio.sleep(1.1)  # past the refetch cooldown (1 s) of the last fetch
        if warm:
            # A first new-key client before the window: the fetch is done already.
            async with connect(f"{base}/warm?token={new_tokens[0]}") as ws:
                await _ready(ws)
        jwks.delay = delay
        before = jwks.requests
        served = len(jwks.served)
        async with httpx.AsyncClient() as http:
            await http.post(f"http://{HOST}:{port}/lag")
            await asyncio.sleep(0.2)  # the window starts with a quiet loop
            started = time.perf_counter()

            async def one(i: int) -> bool:
                if rate:
                    await asyncio.sleep(started + i / rate - time.perf_counter())
                try:
                    ws = await stack.enter_async_context(
                        connect(
                            f"{base}/room-{i % 20}?token={new_tokens[i]}",
                            open_timeout=60,
                            max_queue=None,
                        )
                    )
                    await asyncio.wait_for(_ready(ws), 60)
                    return True
                except Exception:
                    return False

            results = await asyncio.gather(*(one(i) for i in range(connections)))
            seconds = time.perf_counter() - started
            ended = time.perf_counter()
            ticks = (await http.get(f"http://{HOST}:{port}/lag")).json()
    ticks = [t for t in ticks if started <= t[0] <= ended]
    fetches = jwks.served[served:]
    return {
        "admitted": sum(results),
        "refused": connections - sum(results),
        "jwks_requests": jwks.requests - before,
        "seconds": round(seconds, 3),
        "lag": lag_summary(ticks, 1),
        "lag_on_cpu": lag_summary(ticks, 2),
        "fetch": in_window(ticks, *fetches[0]) if fetches else None,
        # The handshakes that waited for the fetch all go on when it ends.
        "after_fetch": (
            in_window(ticks, fetches[0][1], fetches[0][1] + 0.3) if fetches else None
        ),
    }


def run(
    mode: str,
    *,
    connections: int,
    open_clients: int,
    delay: float,
    rate: float,
    pin: bool = True,
) -> dict[str, Any]:
    """One measurement in a fresh server: ``jwks``, ``cached`` or ``blocking``."""
    with JwksServer([jwk_of(rsa_key("storm-old"), "old")]) as jwks:
        server_mode = "jwks" if mode == "cached" else mode
        with server(jwks.url, server_mode, pin=pin) as port:
            result = asyncio.run(
                storm(
                    port,
                    jwks,
                    connections=connections,
                    open_clients=open_clients,
                    delay=delay,
                    rate=rate,
                    warm=mode == "cached",
                )
            )
    return {
        "verifier": mode,
        "connections": connections,
        "rate": rate,
        "delay_s": delay,
        **result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storm", type=int, default=1000)
    parser.add_argument("--open", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        help="connections started per second (0: all at once); repeat for several",
    )
    parser.add_argument(
        "--only", choices=["jwks", "cached", "blocking", "raw"], action="append"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="let the OS place server and clients"
    )
    args = parser.parse_args()
    if not args.no_pin:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, {LOADGEN_CORE})
    rows = []
    for rate in args.rate or [0.0, 200.0]:
        for mode in args.only or ["jwks", "cached", "blocking", "raw"]:
            result = run(
                mode,
                connections=args.storm,
                open_clients=args.open,
                delay=args.delay,
                rate=rate,
                pin=not args.no_pin,
            )
            print(json.dumps(result), flush=True)
            rows.append(result)
    print()
    print(
        "| arrivals | verifier | admitted | JWKS requests | storm s "
        "| loop lag p50 / p99 / max ms | on CPU: p50 / p99 / max ms "
        "| during the fetch: ticks, longest gap, lag p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        wall, cpu, fetch = r["lag"], r["lag_on_cpu"], r["fetch"]
        arrivals = f"{r['rate']:g}/s" if r["rate"] else "all at once"
        during = (
            "-"
            if fetch is None
            else (
                f"{fetch['ticks']} in {fetch['window_ms']:.0f} ms, "
                f"{fetch['longest_gap_ms']}"
            )
        )
        print(
            f"| {arrivals} | {r['verifier']} | {r['admitted']}/{r['connections']} "
            f"| {r['jwks_requests']} | {r['seconds']} "
            f"| {wall['p50_ms']} / {wall['p99_ms']} / {wall['max_ms']} "
            f"| {cpu['p50_ms']} / {cpu['p99_ms']} / {cpu['max_ms']} | {during} |"
        )


if __name__ == "__main__":
    main()
