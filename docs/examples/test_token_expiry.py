# docs/examples/test_token_expiry.py
"""Test what a client sees when its token runs out, in milliseconds: no real wait.

The server accepts a token up to the verifier's ``leeway`` seconds past its ``exp``
and closes the connection at ``exp + leeway``. A token that expired a few seconds
ago, checked with a leeway that ends 30 ms from now, lives 30 ms: it gets its
``token_expiring`` notice at once, then 4401 ``token_expired``.

Run it with: pytest test_token_expiry.py
"""

from __future__ import annotations

import time

import anyio
import pytest

from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.testing import (
    AuthOk,
    ChatTestClient,
    Pong,
    Ready,
    TokenExpiring,
    generate_secret,
    mint_token,
)

pytestmark = pytest.mark.anyio

SECRET = generate_secret()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # or "trio": the kit runs on both


def short_lived(user: str, lives: float = 0.03) -> tuple[str, TokenVerifier]:
    """A token that ends ``lives`` seconds from now, and the verifier to check it."""
    now = time.time()
    exp = int(now) - 3  # whole seconds, 3 to 4 s ago
    token = mint_token(SECRET, user, ttl=60, now=exp - 60)
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], leeway=now + lives - exp)
    return token, verifier


async def test_an_expiring_token_is_warned_then_closed_with_4401() -> None:
    token, verifier = short_lived("alice")
    app = chat_app(ConnectionManager(), verifier)
    async with (
        ChatTestClient(app) as client,
        client.connect("lobby", token=token) as alice,
    ):
        ready = await alice.receive_until(Ready)
        notice = await alice.receive_until(TokenExpiring)
        assert notice.exp == ready.exp  # the token's exp, in Unix seconds
        code, reason = await alice.wait_closed()
    assert (code, reason.split(":")[0]) == (4401, "token_expired")


async def test_a_refresh_on_the_notice_keeps_the_connection() -> None:
    token, verifier = short_lived("alice")
    app = chat_app(ConnectionManager(), verifier)
    async with (
        ChatTestClient(app) as client,
        client.connect("lobby", token=token) as alice,
    ):
        await alice.receive_until(TokenExpiring)
        await alice.authenticate(mint_token(SECRET, "alice", ttl=600))
        assert (await alice.receive_until(AuthOk)).ok
        await anyio.sleep(0.05)  # past the old token's end
        await alice.ping("still here")
        assert (await alice.receive_until(Pong)).id == "still here"
