"""JWKS keys through a real uvicorn, on the raw ASGI, Starlette and FastAPI adapters.

The endpoint awaits the verifier's ``prepare`` (the fetch) before it decides, for a
token in the URL, in a first ``auth`` frame, and in a refresh. The JWKS endpoint is a
real HTTP server in this process; the verifier's cache runs on a fake clock the test
moves.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.common import serve
from tests.support.e2e import (
    Chat,
    Flavor,
    LogRecorder,
    client,
    closed,
    messages,
    next_frame,
    send_message,
)
from tests.support.jwks import FakeClock, JwksServer, jwk_of, rsa_key, sign
from wschat import ConnectionManager
from wschat.jwks import JwksVerifier

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def build(
    flavor: Flavor, manager: ConnectionManager, verifier: JwksVerifier, **options: Any
) -> Any:
    """The chat endpoint under ``/ws`` as a user of ``flavor`` mounts it."""
    if flavor == "asgi":
        from wschat.asgi import chat_app

        return chat_app(manager, verifier, **options)
    if flavor == "starlette":
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from wschat.starlette import chat_routes

        routes = chat_routes(manager, verifier, **options)
        return Starlette(routes=[Mount("/ws", routes=routes)])
    from fastapi import FastAPI

    from wschat.fastapi import chat_router

    app = FastAPI()
    app.include_router(chat_router(manager, verifier, **options), prefix="/ws")
    return app


@contextlib.contextmanager
def jwks_chat(
    flavor: Flavor, jwks: JwksServer, clock: FakeClock, **options: Any
) -> Iterator[tuple[Chat, JwksVerifier]]:
    verifier = JwksVerifier(jwks.url, algorithms=["RS256"], clock=clock)
    manager = ConnectionManager()
    app = build(flavor, manager, verifier, **options)
    with serve(app, log_config=None, timeout_graceful_shutdown=3) as server:
        yield Chat(server, manager), verifier


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with JwksServer([jwk_of(rsa_key("one"), "k1")]) as server:
        yield server


async def test_a_rotated_key_is_used_after_one_fetch_without_a_restart(
    flavor: Flavor, jwks: JwksServer
) -> None:
    clock = FakeClock()
    with jwks_chat(flavor, jwks, clock) as (chat, _):
        old = sign(rsa_key("one"), "k1", sub="alice")
        async with client(chat.url("team", old)) as alice:
            assert (await next_frame(alice, "ready"))["user"] == "alice"
            jwks.keys.append(jwk_of(rsa_key("two"), "k2"))
            clock.advance(30)
            new = sign(rsa_key("two"), "k2", sub="bob")
            async with client(chat.url("team", new)) as bob:
                assert (await next_frame(bob, "ready"))["user"] == "bob"
                await send_message(bob, "signed with the new key")
                (got,) = await messages(alice, 1)
                assert (got["user"], got["body"]) == ("bob", "signed with the new key")
        assert jwks.requests == 2


async def test_an_outage_keeps_old_keys_and_tells_new_ones_to_retry(
    flavor: Flavor, jwks: JwksServer
) -> None:
    clock = FakeClock()
    with LogRecorder() as logs, jwks_chat(flavor, jwks, clock) as (chat, verifier):
        async with client(chat.url("team", sign(rsa_key("one"), "k1"))) as ws:
            await next_frame(ws, "ready")
        jwks.stop()
        clock.advance(3600)  # the set is long stale, and every refetch fails
        async with client(chat.url("team", sign(rsa_key("one"), "k1"))) as ws:
            await next_frame(ws, "ready")
        new = sign(rsa_key("two"), "k2")
        async with client(chat.url("team", new)) as ws:
            result = await closed(ws)
        # Not a verdict on the token: the client keeps it and comes back later.
        assert result.code == 1013
        assert result.reason == (
            "try_again_later: signing keys could not be refreshed; reconnect later"
        )
        assert verifier.health()["status"] == "stale"
    outage = [r for r in logs.records if "JWKS fetch from" in r.getMessage()]
    assert len(outage) == 1
    assert new not in logs.text()


async def test_a_token_never_chooses_where_keys_come_from(
    flavor: Flavor, jwks: JwksServer
) -> None:
    clock = FakeClock()
    evil = rsa_key("attacker")
    with (
        JwksServer([jwk_of(evil, "evil")]) as attacker,
        jwks_chat(flavor, jwks, clock) as (chat, _),
    ):
        async with client(chat.url("team", sign(rsa_key("one"), "k1"))) as ws:
            await next_frame(ws, "ready")
        clock.advance(30)
        forged = sign(
            evil,
            "evil",
            sub="admin",
            headers={
                "jku": attacker.url,
                "x5u": attacker.url,
                "jwk": jwk_of(evil, "evil"),
            },
        )
        async with client(chat.url("team", forged)) as ws:
            result = await closed(ws)
        assert (result.code, result.reason) == (
            4401,
            "token_invalid: unknown key id (kid)",
        )
        assert attacker.requests == 0
        assert jwks.requests == 2


async def test_the_subprotocol_token_is_prepared_too(jwks: JwksServer) -> None:
    clock = FakeClock()
    with jwks_chat("asgi", jwks, clock) as (chat, _):
        tok = sign(rsa_key("one"), "k1", sub="carol")
        async with client(
            chat.url("team"), subprotocols=["wschat.v1", f"bearer.{tok}"]
        ) as ws:
            ready = json.loads(await ws.recv())
            assert (ready["type"], ready["user"]) == ("ready", "carol")
        assert jwks.requests == 1


async def test_a_first_auth_frame_signed_with_a_new_key_is_prepared(
    flavor: Flavor, jwks: JwksServer
) -> None:
    clock = FakeClock()
    with jwks_chat(flavor, jwks, clock, first_message_auth=True) as (chat, _):
        async with client(chat.url("team", sign(rsa_key("one"), "k1"))) as ws:
            await next_frame(ws, "ready")
        jwks.keys.append(jwk_of(rsa_key("two"), "k2"))
        clock.advance(30)
        async with client(chat.url("team")) as ws:
            token = sign(rsa_key("two"), "k2", sub="dora")
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert (await next_frame(ws, "ready"))["user"] == "dora"
        assert jwks.requests == 2


async def test_a_refresh_signed_with_a_new_key_is_prepared(jwks: JwksServer) -> None:
    clock = FakeClock()
    with jwks_chat("asgi", jwks, clock) as (chat, _):
        async with client(chat.url("team", sign(rsa_key("one"), "k1"))) as ws:
            await next_frame(ws, "ready")
            jwks.keys.append(jwk_of(rsa_key("two"), "k2"))
            clock.advance(30)
            fresh = sign(rsa_key("two"), "k2", sub="alice")
            await ws.send(json.dumps({"type": "auth", "token": fresh}))
            assert (await next_frame(ws, "auth"))["ok"] is True
        assert jwks.requests == 2
