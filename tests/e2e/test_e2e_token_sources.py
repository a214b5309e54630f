"""End to end: every token source on and off, and two tokens that disagree.

Through the real uvicorn and the real ``websockets`` client, on the raw ASGI,
Starlette and FastAPI adapters: the adapters hand the headers (``Authorization``,
``Cookie``) to the handshake, and ``token_sources`` decides which are read.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.e2e import (
    Chat,
    Flavor,
    LogRecorder,
    build_app,
    chat_server,
    client,
    next_frame,
    token,
)
from wschat import ConnectionManager
from wschat.errors import ConfigurationError
from wschat.options import TokenSourceName

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ALL: list[TokenSourceName] = ["header", "cookie", "query", "subprotocol"]


def connect_with(
    chat: Chat, where: TokenSourceName, tok: str, **extra: Any
) -> dict[str, Any]:
    """The ``client(...)`` arguments that send ``tok`` in ``where``."""
    url = chat.url("room1", tok) if where == "query" else chat.url("room1")
    kwargs: dict[str, Any] = {"origin": chat.origin, "subprotocols": ["wschat.v1"]}
    headers: list[tuple[str, str]] = []
    if where == "header":
        headers.append(("Authorization", f"Bearer {tok}"))
    elif where == "cookie":
        headers.append(("Cookie", f"theme=dark; wschat_token={tok}"))
    elif where == "subprotocol":
        kwargs["subprotocols"] = ["wschat.v1", f"bearer.{tok}"]
    if headers:
        kwargs["additional_headers"] = headers
    return {"uri": url, **kwargs, **extra}


async def answer(args: dict[str, Any]) -> tuple[int | None, str]:
    """Connect; the ready frame's user (code None), or the close code and reason."""
    args = dict(args)
    url = args.pop("uri")
    async with client(url, **args) as ws:
        try:
            frame = json.loads(await ws.recv())
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
        else:
            assert frame["type"] == "ready", frame
            return None, str(frame["user"])
    assert rcvd is not None, "no close frame"
    return rcvd.code, rcvd.reason


@pytest.mark.parametrize("where", ALL)
async def test_each_source_on_and_off(flavor: Flavor, where: TokenSourceName) -> None:
    alice = token("alice")
    with LogRecorder() as logs:
        with chat_server(flavor, token_sources=[where]) as chat:
            assert await answer(connect_with(chat, where, alice)) == (None, "alice")
        others = [s for s in ALL if s != where]
        with chat_server(flavor, token_sources=others) as chat:
            code, reason = await answer(connect_with(chat, where, alice))
    assert code == 4401
    assert reason.startswith("token_missing: this server does not read a token from")
    assert alice not in logs.text()


async def test_the_header_is_on_by_default_and_the_cookie_is_off(
    flavor: Flavor,
) -> None:
    alice = token("alice")
    with chat_server(flavor) as chat:
        assert await answer(connect_with(chat, "header", alice)) == (None, "alice")
        code, reason = await answer(connect_with(chat, "cookie", alice))
    assert (code, reason.split(":")[0]) == (4401, "token_missing")


@pytest.mark.parametrize(
    ("first", "second"),
    [("header", "query"), ("cookie", "subprotocol"), ("header", "cookie")],
)
async def test_two_different_tokens_are_ambiguous(
    flavor: Flavor, first: TokenSourceName, second: TokenSourceName
) -> None:
    alice, bob = token("alice"), token("bob")
    with (
        LogRecorder() as logs,
        chat_server(flavor, token_sources=ALL) as chat,
    ):
        args = connect_with(chat, first, alice)
        second_args = connect_with(chat, second, bob)
        # Both tokens in one handshake.
        args["uri"] = second_args["uri"] if second == "query" else args["uri"]
        args["subprotocols"] = sorted(
            set(args["subprotocols"]) | set(second_args["subprotocols"])
        )
        args["additional_headers"] = args.get("additional_headers", []) + (
            second_args.get("additional_headers", [])
        )
        code, reason = await answer(args)
        assert code == 4401
        assert reason.startswith("token_ambiguous: different tokens in ")
        # The same token in both is one token.
        same = connect_with(chat, first, alice)
        same_second = connect_with(chat, second, alice)
        same["uri"] = same_second["uri"] if second == "query" else same["uri"]
        same["subprotocols"] = sorted(
            set(same["subprotocols"]) | set(same_second["subprotocols"])
        )
        same["additional_headers"] = same.get("additional_headers", []) + (
            same_second.get("additional_headers", [])
        )
        assert await answer(same) == (None, "alice")
    text = logs.text()
    assert "token_ambiguous" in text
    assert alice not in text
    assert bob not in text


def test_cookie_with_any_origin_is_refused_at_startup(flavor: Flavor) -> None:
    with pytest.raises(ConfigurationError, match="cross-site WebSocket hijacking"):
        build_app(
            flavor,
            ConnectionManager(),
            token_sources=["cookie", "header"],
            allowed_origins=["*"],
        )


async def test_the_cookie_with_a_listed_origin_and_another_name(
    flavor: Flavor,
) -> None:
    alice = token("alice")
    with chat_server(
        flavor,
        token_sources=["cookie"],
        token_cookie="session",
        allowed_origins=["https://app.example"],
    ) as chat:
        ok = connect_with(chat, "query", "x")
        ok["uri"] = chat.url("room1")
        ok["origin"] = "https://app.example"
        ok["additional_headers"] = [("Cookie", f"session={alice}")]
        assert await answer(ok) == (None, "alice")
        # A page of another site never gets in, cookie or not.
        hostile = dict(ok, origin="https://evil.example")
        with pytest.raises(InvalidStatus, match="HTTP 403"):
            await answer(hostile)


async def test_auth_frame_alone_ignores_the_handshake_tokens(flavor: Flavor) -> None:
    alice, bob = token("alice"), token("bob")
    with chat_server(flavor, token_sources=["auth_frame"], auth_timeout=2.0) as chat:
        args = connect_with(chat, "query", bob)
        url = args.pop("uri")
        async with client(url, **args) as ws:
            await ws.send(json.dumps({"type": "auth", "token": alice}))
            assert (await next_frame(ws, "ready"))["user"] == "alice"
