"""Every close goes through :func:`wschat.errors.wire_close`: seen from a client.

Through the public test kit (each adapter, and the bare endpoint) and the core's
fake transport: the code and reason the client gets, and the line the server logs,
for the close sites that the unit tests of :mod:`wschat.errors` pin one by one. And
on the source: no close code is written as a number, and no ``error`` frame code as
a string, outside :mod:`wschat.errors`.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.support.common import SECRET, FakeTransport
from wschat import (
    ChatHooks,
    ChatId,
    ChatOptions,
    Connection,
    ConnectionManager,
    Principal,
    TokenVerifier,
    UserId,
    Veto,
)
from wschat.asgi import chat_app
from wschat.endpoint import ChatEndpoint
from wschat.fastapi import chat_router
from wschat.starlette import chat_routes
from wschat.testing import ChatDenied, ChatTestClient, Ready, mint_token
from wschat.transport import Handshake, TransportClosed

pytestmark = pytest.mark.anyio

SRC = Path(__file__).resolve().parents[2] / "src" / "wschat"
verifier = TokenVerifier(SECRET, algorithms=["HS256"])


def build(kind: str, manager: ConnectionManager | None = None, **options: Any) -> Any:
    manager = manager or ConnectionManager()
    if kind == "asgi":
        return chat_app(manager, verifier, **options)
    if kind == "starlette":
        return Starlette(routes=[Mount("/ws", routes=chat_routes(manager, verifier))])
    if kind == "fastapi":
        app = FastAPI()
        app.include_router(chat_router(manager, verifier, **options), prefix="/ws")
        return app
    return ChatEndpoint(manager, verifier, ChatOptions(**options))


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wschat" and r.levelno == level
    ]


@pytest.mark.parametrize("kind", ["asgi", "fastapi", "endpoint"])
async def test_a_refused_origin_closes_1008_before_accept(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = build(kind, allowed_origins=["https://app.example.com"])
    async with ChatTestClient(app, secret=SECRET) as client:
        with pytest.raises(ChatDenied) as denied:
            async with client.connect(
                "lobby", user="alice", origin="https://evil.example"
            ):
                pass
    # The ASGI app closes before accept; the server answers a bare HTTP 403.
    assert (denied.value.status, denied.value.body, denied.value.code) == (
        403,
        None,
        1008,
    )
    (warning,) = lines(caplog, logging.WARNING)
    assert warning.startswith(
        "wschat refused origin 'https://evil.example' for chat 'lobby' (client "
    )


@pytest.mark.parametrize("kind", ["asgi", "starlette", "fastapi"])
async def test_a_path_nothing_serves_closes_1008_before_accept(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # With a token in the query: chat_app answers every path, and the routes'
    # TokenFallbackRoute answers under their prefix (the token is redacted first).
    async with ChatTestClient(build(kind), secret=SECRET, prefix="/ws/x") as client:
        with pytest.raises(ChatDenied) as denied:
            async with client.connect("lobby", user="alice"):
                pass
    assert (denied.value.status, denied.value.code) == (403, 1008)
    assert lines(caplog, logging.WARNING) == []


class VetoingVerifier:
    """A verifier that raises what only a hook may raise."""

    def verify(self, token: str) -> Principal:
        raise Veto("not here")


async def test_a_veto_from_a_verifier_is_an_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = ChatEndpoint(ConnectionManager(), VetoingVerifier(), ChatOptions())
    async with (
        ChatTestClient(endpoint) as client,
        client.connect("lobby", token=mint_token(SECRET, "alice")) as alice,
    ):
        code, reason = await alice.wait_closed()
    assert (code, reason) == (
        1011,
        "internal_error: the server hit an unexpected error",
    )
    assert lines(caplog, logging.ERROR) == [
        "wschat: Veto (vetoed) was raised where no error frame can answer it "
        "(chat 'lobby'); closing with 1011"
    ]


class VetoOnJoin(ChatHooks):
    async def on_join(self, conn: Connection) -> None:
        raise Veto("no joining")


async def test_a_veto_from_on_join_is_the_hook_failing_as_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        ChatTestClient(build("endpoint", hooks=VetoOnJoin()), secret=SECRET) as client,
        client.connect("lobby", user="alice") as alice,
    ):
        await alice.receive_until(Ready)
        code, reason = await alice.wait_closed()
    assert (code, reason) == (
        1011,
        "internal_error: the server hit an unexpected error",
    )
    (error,) = lines(caplog, logging.ERROR)
    assert error.startswith("wschat: the on_join hook raised on connection ")
    assert error.endswith("(chat 'lobby'); closing it with 1011")


async def test_an_error_reply_passed_to_close_user_is_an_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = ConnectionManager()
    async with (
        ChatTestClient(build("asgi", manager), secret=SECRET) as client,
        client.connect("lobby", user="alice") as alice,
    ):
        await alice.receive_until(Ready)
        assert manager.close_user(UserId("alice"), Veto("bye")) == 1
        closed = await alice.wait_closed()
    assert closed == (1011, "internal_error: the server hit an unexpected error")
    (error,) = lines(caplog, logging.ERROR)
    assert error.startswith(
        "wschat: Veto (vetoed) was raised where no error frame can answer it "
        "(chat 'lobby', connection "
    )


class VanishingTransport(FakeTransport):
    """A transport whose ``receive`` raises when the peer is gone (allowed)."""

    async def receive(self) -> str | bytes | None:
        data = await super().receive()
        if data is None:
            raise TransportClosed()
        return data


async def test_a_transport_that_raises_when_the_peer_left_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = build("endpoint")
    transport = VanishingTransport()
    hs = Handshake(
        "lobby",
        f"token={mint_token(SECRET, 'alice')}".encode(),
        {"host": "chat.example"},
        ["wschat.v1"],
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(endpoint.serve, hs, transport)
            assert (await transport.next_frame())["type"] == "ready"
            transport.hang_up()
    # Gone: no close frame to send, and nothing worth a line.
    assert transport.closed is None
    assert lines(caplog, logging.ERROR) == []
    assert lines(caplog, logging.WARNING) == []
    transport.aclose_streams()


async def test_a_slow_consumer_is_closed_1013_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = ConnectionManager(outbox_max_messages=4)
    endpoint = ChatEndpoint(manager, verifier, ChatOptions(close_timeout=0.5))
    slow = FakeTransport()
    hs = Handshake(
        "lobby",
        f"token={mint_token(SECRET, 'slow')}".encode(),
        {"host": "chat.example"},
        ["wschat.v1"],
    )
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(endpoint.serve, hs, slow)
            assert (await slow.next_frame())["type"] == "ready"
            slow.gate = anyio.Event()  # stops reading
            for i in range(10):
                manager.broadcast_nowait(ChatId("lobby"), f'{{"n":{i}}}')
            code, reason = await slow.wait_closed()
            slow.gate.set()
            slow.hang_up()
    assert (code, reason.split(":")[0]) == (1013, "slow_consumer")
    (warning,) = lines(caplog, logging.WARNING)
    assert warning.startswith("wschat closed slow consumer ")
    assert warning.endswith(f"(chat lobby): {reason.split(': ', 1)[1]}")
    slow.aclose_streams()


# -- on the source: close codes and error-frame codes live in wschat.errors ------------


def _modules() -> list[Path]:
    return [p for p in sorted(SRC.rglob("*.py")) if p.name != "errors.py"]


def _literal(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _dict(node: ast.Dict) -> dict[object, ast.expr]:
    return {_literal(k): v for k, v in zip(node.keys, node.values, strict=True)}


def test_no_close_code_is_a_number_outside_errors() -> None:
    found: list[str] = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                fields = _dict(node)
                if _literal(fields.get("type")) == "websocket.close" and isinstance(
                    _literal(fields.get("code")), int
                ):
                    found.append(f"{path.name}:{node.lineno}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                first: Sequence[ast.expr] = node.args[:1]
                if node.func.attr == "close" and any(
                    isinstance(_literal(a), int) for a in first
                ):
                    found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_no_error_frame_code_is_a_string_outside_errors() -> None:
    found: list[str] = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == (
                "encode_error"
            ):
                if isinstance(_literal(node.args[0]), str):
                    found.append(f"{path.name}:{node.lineno}")
            elif isinstance(node, ast.Dict):
                fields = _dict(node)
                if _literal(fields.get("type")) == "error" and isinstance(
                    _literal(fields.get("code")), str
                ):
                    found.append(f"{path.name}:{node.lineno}")
    assert found == []
