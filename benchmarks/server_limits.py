"""What the ASGI server holds for wschat: ``python -m benchmarks.server_limits``.

Two measurements behind docs/deployment.md, each against ``uvicorn
tests.support.apps:asgi_app`` in a subprocess (the wschat on ``PYTHONPATH``: run it
once on an old checkout and once on this one to compare):

* ``memory``: 20 connections each send the first frame of a 15 MiB message that never
  ends (a deflate bomb, or plain), with uvicorn's default flags and with the
  checklist's; uvicorn's RSS before, with the attackers, and after they left.
* ``stall``: a client that stops reading in a busy room (``stall_app``: no rate
  limit, ``close_timeout`` 1 s). When wschat closes it as a slow consumer: what the
  server's kernel holds unsent for it, and how long until its TCP connection is gone
  ("-" if not within 20 s).

Linux only (``/proc``). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from websockets.sync.client import connect

from tests.support.common import SECRET
from tests.support.server_process import (
    DEFLATE_OFFER,
    TCP_ESTABLISHED,
    WS_IMPLS,
    RawClient,
    Uvicorn,
    checklist_flags,
    raw_upgrade,
    rss_mib,
    send_queue,
    tcp_state,
    unfinished_message,
    upgrade_request,
)
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.testing import mint_token

ATTACKERS = 20

#: The app of the stall measurement: no rate limit (the sender floods), and a short
#: close_timeout.
stall_app = chat_app(
    ConnectionManager(),
    TokenVerifier(SECRET, algorithms=["HS256"]),
    rate_limit=None,
    close_timeout=1.0,
)


def memory(flags: list[str], compressed: bool) -> tuple[float, float, float]:
    frame = unfinished_message(compressed=compressed)
    with Uvicorn(flags=[*flags, "--log-level", "warning"]) as server:
        time.sleep(0.5)
        before = rss_mib(server.pid)
        with contextlib.ExitStack() as stack:
            attackers = [
                stack.enter_context(
                    raw_upgrade(
                        server.port,
                        f"/ws/chat/r?token={mint_token(SECRET, f'm{i}')}",
                        extensions=DEFLATE_OFFER if compressed else None,
                    )
                )
                for i in range(ATTACKERS)
            ]

            def send(raw: RawClient) -> None:
                raw.sock.settimeout(2)
                with contextlib.suppress(OSError):
                    raw.sock.sendall(frame)

            with ThreadPoolExecutor(ATTACKERS) as pool:
                list(pool.map(send, attackers))
            deadline = time.monotonic() + 10
            during = rss_mib(server.pid)
            while time.monotonic() < deadline:  # until it stops growing
                time.sleep(0.5)
                now = rss_mib(server.pid)
                if now - during < 1:
                    break
                during = now
        time.sleep(1.5)
        return before, during, rss_mib(server.pid)


def stall(ws: str) -> tuple[int | None, float | None]:
    flags = ["--ws", ws, "--ws-max-size", "65536", "--log-level", "warning"]
    with Uvicorn("benchmarks.server_limits:stall_app", flags) as server:
        slow = socket.create_connection(("127.0.0.1", server.port))
        path = f"/ws/chat/r?token={mint_token(SECRET, 'slow')}"
        slow.sendall(upgrade_request(server.port, path))
        local = slow.getsockname()[1]
        url = f"ws://127.0.0.1:{server.port}/ws/chat/r?token="
        with connect(url + mint_token(SECRET, "fast"), max_size=None) as fast:
            body = json.dumps({"type": "message", "body": "x" * 8000})
            while True:
                for _ in range(50):
                    fast.send(body)
                while True:  # drain our own echoes
                    try:
                        fast.recv(timeout=0.05)
                    except TimeoutError:
                        break
                stats = httpx.get(server.url("/ws/status")).json()
                if stats["slow_consumers"]:
                    break
            held = send_queue(server.port, local)
            closed_at = time.monotonic()
            freed = None
            while time.monotonic() - closed_at < 20:
                if tcp_state(slow) != TCP_ESTABLISHED:
                    freed = time.monotonic() - closed_at
                    break
                time.sleep(0.05)
        slow.close()
    return held, freed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["memory", "stall"])
    args = parser.parse_args()
    if args.only in (None, "memory"):
        print("| flags | --ws | attack | RSS MiB before -> during -> after |")
        print("|---|---|---|---|")
        for name, flags in (("default", []), ("checklist", checklist_flags())):
            for ws in WS_IMPLS:
                for compressed in (True, False):
                    before, during, after = memory([*flags, "--ws", ws], compressed)
                    kind = "deflate bomb" if compressed else "plain"
                    print(
                        f"| {name} | {ws} | {kind} | "
                        f"{before:.0f} -> {during:.0f} -> {after:.0f} |",
                        flush=True,
                    )
    if args.only in (None, "stall"):
        print("\n| --ws | kernel send queue at the close | connection gone after s |")
        print("|---|---|---|")
        for ws in WS_IMPLS:
            held, freed = stall(ws)
            shown = "-" if freed is None else f"{freed:.2f}"
            print(f"| {ws} | {held} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
