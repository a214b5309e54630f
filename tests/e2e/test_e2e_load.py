"""End to end under load: a client that stops reading, and clients that vanish.

A broadcast never waits for a socket, so neither a stuck reader nor a dead peer may
delay anyone else. The stuck one is closed with 1013 ``slow_consumer``; the dead ones
disappear from ``/ws/status`` without a single error in the log.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.common import SERVER_CLOSE_CODES, serve, server_close
from tests.support.e2e import (
    Chat,
    Flavor,
    LogRecorder,
    RawWebSocket,
    build_app,
    chat_server,
    clients,
    messages,
    next_frame,
    send_message,
    token,
    wait_until,
)
from tests.support.server_process import (
    TCP_CLOSE,
    TCP_ESTABLISHED,
    WS_IMPLS,
    send_queue,
    tcp_state,
)
from wschat import ChatHooks, Connection, ConnectionManager
from wschat.asgi_server import UNSENT_LIMIT

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

FAST_CLIENTS = 10
BROADCASTS = 2000
BODY = "x" * 2048
BATCH = 200


async def test_slow_consumer_is_closed_and_delays_nobody(flavor: Flavor) -> None:
    manager = ConnectionManager(outbox_max_messages=64, outbox_max_bytes=128 * 1024)
    options: dict[str, Any] = {
        "rate_limit": None,
        # Long enough for the test to start reading before the server gives up,
        # even on a loaded CI host under coverage.
        "close_timeout": 60.0,
    }
    with LogRecorder() as logs, chat_server(flavor, manager, **options) as chat:
        slow = RawWebSocket(chat.port, f"/ws/chat/load?token={token('slow')}")
        await anyio.to_thread.run_sync(slow.handshake)
        try:
            urls = [chat.url("load", token(f"u{i}")) for i in range(FAST_CLIENTS)]
            async with (
                clients([chat.url("load", token("sender"))]) as (sender,),
                clients(urls) as fast,
            ):
                for ws in (sender, *fast):
                    await next_frame(ws, "ready")
                received: dict[int, list[int]] = {}
                total = 0

                async def send_all() -> None:
                    # At least BROADCASTS, and on until the stuck client overflowed:
                    # how much the kernel buffers for it varies from host to host.
                    nonlocal total
                    overflowed = False
                    while total < BROADCASTS or not overflowed:
                        for n in range(total, total + BATCH):
                            await send_message(sender, {"n": n, "pad": BODY})
                        # Our own echo means the server has broadcast the batch:
                        # the sender never runs far ahead of the server.
                        echoes = await messages(sender, BATCH)
                        assert echoes[-1]["body"]["n"] == total + BATCH - 1
                        total += BATCH
                        overflowed = (await chat.status())["slow_consumers"] > 0
                    await send_message(sender, {"n": total, "last": True})

                async def drain(index: int, ws: ClientConnection) -> None:
                    numbers = received[index] = []
                    with anyio.fail_after(30):
                        while True:
                            frame = json.loads(await ws.recv())
                            if frame["type"] != "message":
                                continue
                            if frame["body"].get("last"):
                                return
                            numbers.append(frame["body"]["n"])

                with anyio.fail_after(30):
                    async with anyio.create_task_group() as tg:
                        for index, ws in enumerate(fast):
                            tg.start_soon(drain, index, ws)
                        tg.start_soon(send_all)
                assert total >= BROADCASTS
                # Every reader that kept up got every message, in order.
                for numbers in received.values():
                    assert numbers == list(range(total))
                assert len(received) == FAST_CLIENTS

                # The stuck client is gone from the server's point of view...
                await chat.wait_connections(FAST_CLIENTS + 1)
                status = await chat.status()
                assert status["slow_consumers"] == 1
            # ...and, once it reads again, it learns why: 1013 slow_consumer.
            code, reason, before = await anyio.to_thread.run_sync(
                slow.read_until_close, 5.0
            )
        finally:
            slow.close()
    assert code == 1013
    assert reason.startswith("slow_consumer")
    assert before < total
    warnings = [
        r.getMessage()
        for r in logs.of("wschat", logging.WARNING)
        if "slow consumer" in r.getMessage()
    ]
    assert len(warnings) == 1, logs.text()
    assert logs.at_least(logging.ERROR) == [], logs.text()


async def test_clients_killed_mid_broadcast(flavor: Flavor) -> None:
    """Half the room dies mid-broadcast: some clients that were reading, and some
    stuck ones whose server-side writes were backed up. Nobody else notices."""
    count, body = 600, "y" * 1024
    with (
        LogRecorder() as logs,
        chat_server(flavor, rate_limit=None) as chat,
    ):
        stuck = [
            RawWebSocket(chat.port, f"/ws/chat/crowd?token={token(f'r{i}')}")
            for i in range(2)
        ]
        for raw in stuck:
            await anyio.to_thread.run_sync(raw.handshake)
        urls = [chat.url("crowd", token(f"u{i}")) for i in range(9)]
        try:
            async with clients(urls) as everyone:
                for ws in everyone:
                    await next_frame(ws, "ready")
                sender, victims, survivors = everyone[0], everyone[1:4], everyone[4:]
                await chat.wait_connections(11)
                got: dict[int, list[int]] = {}
                halfway = anyio.Event()

                async def send_all() -> None:
                    for n in range(count):
                        await send_message(sender, {"n": n, "pad": body})
                        if n == count // 3:
                            halfway.set()

                async def drain(index: int, ws: ClientConnection) -> None:
                    frames = await messages(ws, count, seconds=20)
                    got[index] = [f["body"]["n"] for f in frames]

                async def kill() -> None:
                    await halfway.wait()
                    # No close frame, no FIN handshake: the TCP connections just die.
                    for ws in victims:
                        ws.transport.abort()
                    for raw in stuck:
                        raw.abort()

                with anyio.fail_after(20):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(kill)
                        for index, ws in enumerate(survivors):
                            tg.start_soon(drain, index, ws)
                        tg.start_soon(drain, -1, sender)
                        tg.start_soon(send_all)

                assert sorted(got) == [-1, *range(len(survivors))]
                for numbers in got.values():
                    assert numbers == list(range(count))
                await chat.wait_connections(1 + len(survivors))
                status = await chat.status()
                assert status["slow_consumers"] == 0
            await chat.wait_connections(0)
        finally:
            for raw in stuck:
                raw.close()
    assert logs.at_least(logging.ERROR) == [], logs.text()


async def test_stuck_client_is_released_after_close_timeout(flavor: Flavor) -> None:
    """A client that never reads again cannot be sent a close frame; the server
    gives up after ``close_timeout`` and lets the connection go anyway."""
    hooks = LeaveRecorder()
    manager = ConnectionManager(outbox_max_messages=64, outbox_max_bytes=64 * 1024)
    options: dict[str, Any] = {
        "rate_limit": None,
        "close_timeout": 0.5,
        "hooks": hooks,
    }
    with LogRecorder() as logs, chat_server(flavor, manager, **options) as chat:
        slow = RawWebSocket(chat.port, f"/ws/chat/load?token={token('slow')}")
        await anyio.to_thread.run_sync(slow.handshake)
        try:
            async with clients([chat.url("load", token("fast"))]) as (fast,):
                await next_frame(fast, "ready")
                with anyio.fail_after(20):
                    sent = 0
                    while not chat.manager.stats().slow_consumers:
                        for _ in range(100):
                            await send_message(fast, {"n": sent, "pad": BODY})
                            sent += 1
                        await messages(fast, 100)
                await chat.wait_connections(1)

                # on_leave runs once the bounded close attempt has given up.
                async def slow_left() -> bool:
                    return "slow" in hooks.left

                await wait_until(slow_left, options["close_timeout"] + 2)
                status = await chat.status()
                assert (status["connections"], status["slow_consumers"]) == (1, 1)
            # The close frame could not reach a peer that did not read, and the
            # server reset the connection close_timeout later: once it reads
            # again, the client sees an abnormal closure.
            code = await anyio.to_thread.run_sync(slow.ending, 5.0)
            assert code == 1006
        finally:
            slow.close()
    assert hooks.left == ["slow", "fast"]
    warnings = logs.of("wschat", logging.WARNING)
    assert len(warnings) == 1, logs.text()
    assert "slow consumer" in warnings[0].getMessage()
    assert logs.at_least(logging.ERROR) == [], logs.text()


class LeaveRecorder(ChatHooks):
    """Records who left, in order (appended from the server's thread)."""

    def __init__(self) -> None:
        self.left: list[str] = []

    async def on_leave(self, conn: Connection) -> None:
        self.left.append(conn.user_id)


@pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated")
@pytest.mark.filterwarnings("ignore:remove second argument of ws_handler")
@pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated")
@pytest.mark.parametrize(
    ("ws", "loop"),
    [*((ws, "asyncio") for ws in WS_IMPLS), ("websockets-sansio", "uvloop")],
)
async def test_stalled_client_is_dropped_within_close_timeout(
    flavor: Flavor, ws: str, loop: str
) -> None:
    """A client that stops reading for good: its outbox overflows, wschat closes it
    with 1013, the close frame cannot reach it, and the TCP connection is reset
    ``close_timeout`` later instead of being held for as long as the peer's kernel
    answers. Meanwhile the server's kernel holds a bounded amount for it."""
    close_timeout = 0.5
    manager = ConnectionManager(outbox_max_bytes=256 * 1024)
    app = build_app(flavor, manager, rate_limit=None, close_timeout=close_timeout)
    with (
        LogRecorder() as logs,
        serve(
            app,
            ws=ws,
            loop=loop,
            ws_max_size=64 * 1024,
            log_config=None,
            timeout_graceful_shutdown=3,
        ) as server,
    ):
        chat = Chat(server, manager)
        slow = RawWebSocket(chat.port, f"/ws/chat/stall?token={token('slow')}")
        await anyio.to_thread.run_sync(slow.handshake)
        slow_port = slow.sock.getsockname()[1]
        try:
            async with clients([chat.url("stall", token("fast"))]) as (fast,):
                await next_frame(fast, "ready")
                with anyio.fail_after(20):
                    sent = 0
                    while not manager.stats().slow_consumers:
                        for _ in range(50):
                            await send_message(fast, {"n": sent, "pad": BODY})
                            sent += 1
                        await messages(fast, 50)
                # What the kernel holds unsent for the stalled client: about
                # UNSENT_LIMIT, where Linux would grow it to tcp_wmem's 4 MiB.
                held = send_queue(chat.port, slow_port)
                assert held is not None
                assert held <= UNSENT_LIMIT + 128 * 1024, held

                async def reset() -> bool:
                    return tcp_state(slow.sock) != TCP_ESTABLISHED

                await wait_until(reset, close_timeout + 3)
                reset_at = time.time()
                assert tcp_state(slow.sock) == TCP_CLOSE
                # The server's side of the connection is gone, with its buffers.
                assert send_queue(chat.port, slow_port) is None
                await chat.wait_connections(1)
        finally:
            slow.close()
    # Not before close_timeout: the client had that long to take its close frame.
    (closing,) = [r for r in logs.of("wschat") if "slow consumer" in r.getMessage()]
    assert reset_at - closing.created >= close_timeout * 0.9
    assert logs.at_least(logging.ERROR) == [], logs.text()


async def test_slow_client_that_reads_again_gets_1013_soon(flavor: Flavor) -> None:
    """A client stalled long enough to overflow, that reads again within
    ``close_timeout``: little stands before the close frame, so it learns why
    (1013 slow_consumer) after a bounded amount of stale data, not megabytes."""
    manager = ConnectionManager(outbox_max_bytes=256 * 1024)
    options: dict[str, Any] = {"rate_limit": None, "close_timeout": 30.0}
    with chat_server(flavor, manager, **options) as chat:
        slow = RawWebSocket(
            chat.port, f"/ws/chat/again?token={token('slow')}", rcvbuf=64 * 1024
        )
        await anyio.to_thread.run_sync(slow.handshake)
        try:
            async with clients([chat.url("again", token("fast"))]) as (fast,):
                await next_frame(fast, "ready")
                with anyio.fail_after(20):
                    sent = 0
                    while not chat.manager.stats().slow_consumers:
                        for _ in range(50):
                            await send_message(fast, {"n": sent, "pad": BODY})
                            sent += 1
                        await messages(fast, 50)
            code, reason, before = await anyio.to_thread.run_sync(
                slow.read_until_close, 10.0
            )
        finally:
            slow.close()
    assert (code, reason.split(":")[0]) == (1013, "slow_consumer")
    # Each frame carries BODY (2 KiB). Before the close frame stood what the
    # client's own buffer held (64 KiB asked, 128 KiB granted by Linux) and what the
    # server had sent it: UNSENT_LIMIT in the kernel, 64 KiB in uvicorn. Measured:
    # about 220 KB in all, against 3.8 MB when the kernel could hold 4 MiB.
    assert before * len(BODY) <= 128 * 1024 + 256 * 1024, before


@pytest.mark.parametrize("close", ["room", "user", "all"])
async def test_frames_on_their_way_when_the_server_closes_arrive_before_its_close(
    flavor: Flavor, close: str
) -> None:
    """A client that paused reading, so that the server's send to it waits, and
    then the server closes it (``close_room``, ``close_user``, shutdown): the send
    ends when the client reads again (within ``close_timeout``), and every frame
    arrives before the close frame. The close used to cancel that send, and the
    frames it had taken from the outbox were lost without a word."""
    manager = ConnectionManager()
    options: dict[str, Any] = {"rate_limit": None, "close_timeout": 30.0}
    notices = 200  # 2 KiB each: more than uvicorn and the kernel buffer
    with chat_server(flavor, manager, **options) as chat:
        slow = RawWebSocket(chat.port, f"/ws/chat/closing?token={token('slow')}")
        await anyio.to_thread.run_sync(slow.handshake)
        try:
            await chat.wait_connections(1)
            (conn,) = manager.connections()
            for n in range(notices):
                frame = json.dumps({"type": "notice", "n": n, "pad": BODY})
                assert manager.broadcast_nowait(conn.chat_id, frame) == 1

            async def sending() -> bool:  # a send waits; frames wait behind it
                return conn.writing and conn.queued > 0

            await wait_until(sending)
            await anyio.sleep(0.2)
            assert conn.writing
            assert server_close(manager, conn, close) == 1
            await anyio.sleep(0.2)
            got: list[bytes] = []
            code, _, _ = await anyio.to_thread.run_sync(
                slow.read_until_close, 10.0, got
            )
        finally:
            slow.close()
    seen = [f["n"] for f in map(json.loads, got) if f["type"] == "notice"]
    assert seen == list(range(notices))
    assert code == SERVER_CLOSE_CODES[close]
