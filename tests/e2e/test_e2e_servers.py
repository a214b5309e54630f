"""End to end on other servers and in other processes.

* uvicorn in a subprocess, stopped with SIGTERM or SIGINT: connected clients see 1012
  (or 1001), never 1006, and the server exits cleanly.
* hypercorn with trio: the core (anyio only) serves two users chatting under trio.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sniffio
import trio
from anyio.abc import Process

from tests.support.common import free_port
from tests.support.e2e import (
    WAIT,
    Flavor,
    LogRecorder,
    build_app,
    client,
    clients,
    closed,
    messages,
    next_frame,
    send_message,
    token,
    wait_until,
)
from wschat import ChatHooks, Connection, ConnectionManager

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]


# -- uvicorn in a subprocess: shutdown ------------------------------------------------


async def _wait_ready(proc: Process, port: int) -> None:
    async def answering() -> bool:
        if proc.returncode is not None:
            pytest.fail(f"uvicorn exited early with {proc.returncode}")
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                response = await http.get(f"http://127.0.0.1:{port}/ws/status")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    await wait_until(answering, seconds=20)


async def _read_all(proc: Process) -> str:
    assert proc.stdout is not None
    chunks = [chunk async for chunk in proc.stdout]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
async def test_server_shutdown_closes_with_1012_or_1001(
    flavor: Flavor, sig: signal.Signals
) -> None:
    port = free_port()
    command = [
        sys.executable,
        *("-m", "uvicorn", f"tests.support.apps:{flavor}_app"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "info"),
    ]
    proc = await anyio.open_process(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    async with proc:
        try:
            await _wait_ready(proc, port)
            url = f"ws://127.0.0.1:{port}/ws/chat/room1?token="
            urls = [url + token("alice"), url + token("bob")]
            async with clients(urls) as (a, b):
                await next_frame(a, "ready")
                await next_frame(b, "ready")
                proc.send_signal(sig)
                results = [await closed(a, seconds=10), await closed(b, seconds=10)]
            for result in results:
                assert result.code in (1001, 1012), result
            with anyio.fail_after(15):
                output = await _read_all(proc)
                returncode = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
    # uvicorn re-raises the signal it caught once it has shut down cleanly.
    assert returncode in (0, -sig), output
    assert "Finished server process" in output
    assert "Traceback" not in output
    assert "ERROR" not in output


# -- hypercorn with trio ---------------------------------------------------------------


class LibraryProbe(ChatHooks):
    """Records which async library each connection was served on."""

    def __init__(self) -> None:
        self.libraries: list[str] = []

    async def on_join(self, conn: Connection) -> None:
        self.libraries.append(sniffio.current_async_library())


class TrioHypercorn:
    """hypercorn serving an app under ``trio.run`` in a background thread."""

    def __init__(self, app: Any) -> None:
        from hypercorn.config import Config

        self.app = app
        self.port = free_port()
        self.config = Config()
        self.config.bind = [f"127.0.0.1:{self.port}"]
        # How long open connections get at shutdown before they are cancelled.
        self.config.graceful_timeout = 0.5
        self.stop: trio.Event | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.started.set()

    async def _main(self) -> None:
        from hypercorn.trio import serve

        self.stop = trio.Event()
        self.token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    serve, self.app, self.config, shutdown_trigger=self.stop.wait
                )
            )
            self.started.set()

    def __enter__(self) -> TrioHypercorn:
        self.thread.start()
        if not self.started.wait(10) or self.error is not None:
            raise RuntimeError(f"hypercorn did not start: {self.error!r}")
        return self

    def shutdown(self) -> None:
        """Stop gracefully, as on SIGTERM, and wait for the thread. Idempotent."""
        assert self.stop is not None
        if self.thread.is_alive():
            trio.from_thread.run_sync(self.stop.set, trio_token=self.token)
        self.thread.join(10)
        assert not self.thread.is_alive(), "hypercorn did not stop"
        assert self.error is None, self.error

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


async def test_hypercorn_trio_two_clients_chat(flavor: Flavor) -> None:
    probe = LibraryProbe()
    manager = ConnectionManager()
    app = build_app(flavor, manager, hooks=probe)
    with LogRecorder(("wschat",)) as logs, TrioHypercorn(app) as server:
        base = f"ws://127.0.0.1:{server.port}/ws/chat/"
        async with clients(
            [
                base + f"room1?token={token('alice')}",
                base + f"room1?token={token('bob')}",
            ]
        ) as (alice, bob):
            await next_frame(alice, "ready")
            await next_frame(bob, "ready")
            await send_message(alice, "hello from alice")
            await send_message(bob, "hello from bob")
            for ws in (alice, bob):
                got = await messages(ws, 2)
                assert sorted((m["user"], m["body"]) for m in got) == [
                    ("alice", "hello from alice"),
                    ("bob", "hello from bob"),
                ]
        # A refusal is explained on hypercorn too.
        async with client(base + "room1?token=test") as ws:
            result = await closed(ws)
        assert (result.code, result.reason.split(":")[0]) == (4401, "token_malformed")

        async def empty() -> bool:
            return len(manager) == 0

        await wait_until(empty, WAIT)
    assert probe.libraries == ["trio", "trio"]
    assert logs.at_least(logging.ERROR) == [], logs.text()


async def test_hypercorn_trio_shutdown_closes_with_1001(flavor: Flavor) -> None:
    """hypercorn cancels open connections at shutdown; clients still learn why."""
    with (
        LogRecorder(("wschat",)) as logs,
        TrioHypercorn(build_app(flavor, ConnectionManager())) as server,
    ):
        url = f"ws://127.0.0.1:{server.port}/ws/chat/room1?token={token('alice')}"
        async with client(url) as ws:
            await next_frame(ws, "ready")
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, server.shutdown)
                result = await closed(ws, seconds=10)
    assert result.code in (1001, 1012), result
    assert result.reason.startswith(("going_away", "service_restart"))
    assert logs.at_least(logging.ERROR) == [], logs.text()
