"""The adapter of docs/adapters.md, run for real: wschat on the ``websockets`` server.

The example file (docs/examples/websockets_adapter.py, shown verbatim on the page)
serves the endpoint without ASGI. Real ``websockets`` clients connect through it,
chat, and see each kind of refusal: a close code after accept, an HTTP status before
it (the Origin check, ``http_denials``, a path nothing serves).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from tests.support.common import SECRET, FakeTransport, free_port, source_env
from tests.support.log_servers import wait_port
from wschat import (
    ChatId,
    ChatOptions,
    ConnectionManager,
    GoingAway,
    Principal,
    TokenVerifier,
    UserId,
)
from wschat.endpoint import ChatEndpoint
from wschat.testing import mint_token
from wschat.transport import Handshake, TransportClosed

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples"
V1 = Subprotocol("wschat.v1")


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "docs_example_websockets_adapter", EXAMPLE / "websockets_adapter.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load()


@contextlib.contextmanager
def running(**options: Any) -> Iterator[tuple[str, ConnectionManager]]:
    """The example's ``chat_server`` on a free port, in a thread with its own loop."""
    manager = ConnectionManager()
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    port = free_port()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"] = asyncio.get_running_loop()
        state["stop"] = stop = asyncio.Event()
        server = example.chat_server(
            manager, verifier, ChatOptions(**options), port=port
        )
        async with manager, server:
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the test
            state["failed"] = exc
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the server did not start"
    assert "failed" not in state, state
    try:
        yield f"ws://127.0.0.1:{port}", manager
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)
        assert not thread.is_alive()
        assert "failed" not in state, state


def receive(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=5))
        if frame["type"] == kind:
            return frame


def read_until_closed(ws: ClientConnection) -> None:
    while True:
        ws.recv(timeout=5)


def close_of(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        read_until_closed(ws)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_two_users_chat_through_the_adapter() -> None:
    with running() as (url, manager):
        chat = f"{url}/ws/chat/lobby"
        alice = mint_token(SECRET, "alice")
        bob = mint_token(SECRET, "bob")
        with contextlib.ExitStack() as stack:
            ws_a = stack.enter_context(
                connect(f"{chat}?token={alice}", subprotocols=[V1])
            )
            assert receive(ws_a, "ready")["user"] == "alice"
            ws_b = stack.enter_context(
                connect(chat, subprotocols=[V1, Subprotocol(f"bearer.{bob}")])
            )
            assert ws_a.subprotocol == ws_b.subprotocol == "wschat.v1"
            assert receive(ws_b, "ready")["members"] == ["alice", "bob"]
            ws_a.send(json.dumps({"type": "message", "body": "hi", "client_id": "c1"}))
            for ws in (ws_a, ws_b):
                got = receive(ws, "message")
                assert (got["user"], got["body"], got["client_id"]) == (
                    "alice",
                    "hi",
                    "c1",
                )
            ws_b.send(json.dumps({"type": "ping", "id": 7}))
            assert receive(ws_b, "pong") == {"type": "pong", "id": 7}
            assert len(manager) == 2
        # The clients left: the endpoint let go of both connections.
        for _ in range(100):
            if len(manager) == 0:
                break
            threading.Event().wait(0.05)
        assert len(manager) == 0


def test_a_refused_token_is_a_close_code_the_client_reads() -> None:
    with running() as (url, _), connect(f"{url}/ws/chat/lobby?token=test") as ws:
        code, reason = close_of(ws)
    assert code == 4401
    assert reason.startswith("token_malformed: not a JWT")


def only_lobby(principal: Principal, chat_id: ChatId) -> bool:
    return chat_id == "lobby"


def test_a_room_refused_by_authorize_is_4403() -> None:
    token = mint_token(SECRET, "mallory")
    with (
        running(authorize=only_lobby) as (url, _),
        connect(f"{url}/ws/chat/board?token={token}") as ws,
    ):
        code, reason = close_of(ws)
    assert (code, reason.split(":")[0]) == (4403, "forbidden")


def test_a_refused_origin_is_a_bare_http_403() -> None:
    token = mint_token(SECRET, "alice")
    with running(allowed_origins=["https://app.example.com"]) as (url, _):
        with pytest.raises(InvalidStatus) as refused:
            connect(
                f"{url}/ws/chat/lobby?token={token}",
                origin=Origin("https://evil.example"),
                open_timeout=5,
            )
        assert refused.value.response.status_code == 403
        assert refused.value.response.body == b""
        with connect(
            f"{url}/ws/chat/lobby?token={token}",
            origin=Origin("https://app.example.com"),
        ) as ws:
            assert receive(ws, "ready")["user"] == "alice"


def test_http_denials_answer_the_handshake_with_the_status() -> None:
    with (
        running(http_denials=True) as (url, _),
        pytest.raises(InvalidStatus) as refused,
    ):
        connect(f"{url}/ws/chat/lobby?token=test", open_timeout=5)
    assert refused.value.response.status_code == 401
    assert refused.value.response.body.startswith(b"token_malformed: not a JWT")


def test_a_path_nothing_serves_is_404() -> None:
    with running() as (url, _), pytest.raises(InvalidStatus) as refused:
        connect(f"{url}/elsewhere", open_timeout=5)
    assert refused.value.response.status_code == 404


def test_a_frame_over_the_limit_is_closed_1009_by_the_server() -> None:
    token = mint_token(SECRET, "alice")
    with running() as (url, _), connect(f"{url}/ws/chat/lobby?token={token}") as ws:
        receive(ws, "ready")
        ws.send("x" * (64 * 1024 + 1))
        code, _ = close_of(ws)
    assert code == 1009


def test_the_script_serves_a_chat() -> None:
    port = free_port()
    env = {**source_env(), "WSCHAT_SECRET": SECRET, "WSCHAT_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "websockets_adapter.py"],
        cwd=EXAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, lambda: proc.poll() is None)
        token = mint_token(SECRET, "alice")
        with connect(f"ws://127.0.0.1:{port}/ws/chat/lobby?token={token}") as ws:
            assert receive(ws, "ready")["user"] == "alice"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert b"Traceback" not in out, out


# -- the Transport contract the page states, on the core's fake transport ------------


def hs_for(user: str) -> Handshake:
    query = f"token={mint_token(SECRET, user)}".encode()
    return Handshake("lobby", query, {"host": "chat.example"}, ["wschat.v1"])


def wschat_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wschat" and r.levelno == level
    ]


def endpoint_for(manager: ConnectionManager) -> ChatEndpoint:
    return ChatEndpoint(
        manager, TokenVerifier(SECRET, algorithms=["HS256"]), ChatOptions()
    )


class BrokenTransport(FakeTransport):
    """An adapter bug: its sends raise something other than TransportClosed."""

    async def send_text(self, text: str) -> None:
        raise RuntimeError("adapter bug")

    async def send_many(self, texts: Sequence[str]) -> None:
        raise RuntimeError("adapter bug")


@pytest.mark.anyio
async def test_another_exception_is_one_error_and_serve_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = ConnectionManager()
    transport = BrokenTransport()
    with anyio.fail_after(5):
        await endpoint_for(manager).serve(hs_for("alice"), transport)
    (error,) = wschat_lines(caplog, logging.ERROR)
    assert error == "wschat: unexpected error serving client=-"
    assert len(manager) == 0
    transport.aclose_streams()


class LeavingTransport(FakeTransport):
    """The client leaves during the handshake."""

    async def accept(self, subprotocol: str | None) -> None:
        raise TransportClosed()


@pytest.mark.anyio
async def test_accept_raising_transport_closed_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = ConnectionManager()
    transport = LeavingTransport()
    with anyio.fail_after(5):
        await endpoint_for(manager).serve(hs_for("alice"), transport)
    assert (transport.closed, transport.sent) == (None, [])
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len(manager) == 0
    transport.aclose_streams()


@pytest.mark.anyio
async def test_close_is_not_called_when_the_client_ended_it() -> None:
    manager = ConnectionManager()
    transport = FakeTransport()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(endpoint_for(manager).serve, hs_for("alice"), transport)
            assert (await transport.next_frame())["type"] == "ready"
            transport.hang_up()
    assert transport.closed is None
    transport.aclose_streams()


class CountingTransport(FakeTransport):
    """Records whether ``close`` ever ran while a send was in progress."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = 0
        self.overlapped = False

    async def send_text(self, text: str) -> None:
        self.sending += 1
        try:
            await super().send_text(text)
        finally:
            self.sending -= 1

    async def close(self, code: int, reason: str) -> None:
        self.overlapped = self.overlapped or self.sending > 0
        await super().close(code, reason)


@pytest.mark.anyio
async def test_close_never_runs_while_a_send_is_in_progress() -> None:
    manager = ConnectionManager()
    transport = CountingTransport()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(endpoint_for(manager).serve, hs_for("alice"), transport)
            assert (await transport.next_frame())["type"] == "ready"
            transport.gate = anyio.Event()  # the next send blocks
            manager.broadcast_nowait(ChatId("lobby"), '{"type":"x"}')
            await transport.blocked.wait()
            assert transport.sending == 1
            manager.close_user(UserId("alice"), GoingAway())
            # The close lets the send end first (within close_timeout)...
            await anyio.sleep(0.1)
            assert transport.closed is None
            transport.gate.set()
            # ...then closes, after it.
            code, _ = await transport.wait_closed()
    assert code == 1001
    assert transport.overlapped is False
    assert '{"type":"x"}' in transport.sent
    transport.aclose_streams()
