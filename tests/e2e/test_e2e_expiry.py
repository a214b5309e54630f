"""End to end: token expiry on live connections, refresh, re-authorization, revocation.

Real uvicorn, the real ``websockets`` client, the three adapters. Tokens live 2-3 s
and the verifier's leeway is 0, so that each test runs in a few seconds; the default
leeway (5 s) and notice (60 s) are pinned in tests/core/test_deadlines.py.
"""

from __future__ import annotations

import json
import time

import anyio
import jwt
import pytest

from tests.support.common import SECRET
from tests.support.e2e import (
    Flavor,
    chat_server,
    client,
    closed,
    next_frame,
    send_message,
    token,
)
from wschat import ChatId, Principal, TokenVerifier, UserId

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def strict() -> TokenVerifier:
    """A verifier with no leeway: the deadline of a connection is its token's exp."""
    return TokenVerifier(SECRET, algorithms=["HS256"], leeway=0)


def exp_of(tok: str) -> int:
    value: int = jwt.decode(tok, options={"verify_signature": False})["exp"]
    return value


async def test_an_idle_listener_is_closed_at_exp_after_a_notice(
    flavor: Flavor,
) -> None:
    listener_token = token("listener", ttl=3)
    exp = exp_of(listener_token)
    with chat_server(flavor, verifier=strict(), rate_limit=None) as chat:
        async with (
            client(chat.url("room1", listener_token)) as listener,
            client(chat.url("room1", token("speaker", ttl=600))) as speaker,
        ):
            ready = await next_frame(listener, "ready")
            assert ready["exp"] == exp
            assert (await next_frame(speaker, "ready"))["exp"] > exp

            async def talk() -> None:
                # Through the deadline and past it: the listener only listens.
                n = 0
                while time.time() < exp + 1.5:
                    await send_message(speaker, n)
                    n += 1
                    await anyio.sleep(0.02)

            async with anyio.create_task_group() as tg:
                tg.start_soon(talk)
                result = await closed(listener, seconds=8)
                closed_at = time.time()
        await chat.wait_connections(0)
    kinds = [f["type"] for f in result.frames]
    # The notice: once, half-way through a 3 s token (1.5 s before exp).
    assert kinds.count("token_expiring") == 1
    assert result.frames[kinds.index("token_expiring")] == {
        "type": "token_expiring",
        "exp": exp,
    }
    # Nothing from the room after the deadline, then 4401 token_expired.
    stamps = [f["ts"] for f in result.frames if f["type"] == "message"]
    assert stamps
    assert max(stamps) < exp * 1000
    assert (result.code, result.reason.split(":")[0]) == (4401, "token_expired")
    assert exp <= closed_at < exp + 1.5


async def test_a_refresh_keeps_the_connection_and_another_sub_is_refused(
    flavor: Flavor,
) -> None:
    first = token("alice", ttl=2)
    with chat_server(flavor, verifier=strict()) as chat:
        async with client(chat.url("room1", first)) as ws:
            await next_frame(ws, "ready")
            fresh = token("alice", ttl=600)
            await ws.send(json.dumps({"type": "auth", "token": fresh}))
            answer = await next_frame(ws, "auth")
            assert (answer["ok"], answer["exp"]) == (True, exp_of(fresh))
            # Well past the first token's exp, it is open and served.
            await anyio.sleep(exp_of(first) - time.time() + 1.0)
            await ws.send(json.dumps({"type": "ping", "id": 1}))
            assert (await next_frame(ws, "pong"))["id"] == 1
            await ws.send(json.dumps({"type": "auth", "token": token("mallory")}))
            result = await closed(ws)
    assert (result.code, result.reason) == (
        4401,
        "token_invalid: a refreshed token must have the same sub",
    )


async def test_a_refresh_runs_authorize_again(flavor: Flavor) -> None:
    allowed = {"alice"}

    def authorize(principal: Principal, chat_id: ChatId) -> bool:
        return principal.user_id in allowed

    with chat_server(flavor, authorize=authorize) as chat:
        async with client(chat.url("room1", token("alice"))) as ws:
            await next_frame(ws, "ready")
            await ws.send(json.dumps({"type": "auth", "token": token("alice")}))
            assert (await next_frame(ws, "auth"))["ok"] is True
            allowed.clear()  # the app changed its mind
            await ws.send(json.dumps({"type": "auth", "token": token("alice")}))
            result = await closed(ws)
    assert (result.code, result.reason.split(":")[0]) == (4403, "forbidden")
    assert [f["type"] for f in result.frames] == []


async def test_revocation_at_connect_and_at_refresh(flavor: Flavor) -> None:
    denied: set[str] = set()
    asked: list[str] = []

    async def is_revoked(principal: Principal) -> bool:
        jti: str = principal.claims["jti"]
        asked.append(jti)
        return jti in denied

    denied.add("j-old")
    with chat_server(flavor, is_revoked=is_revoked) as chat:
        url = chat.url("room1", token("alice", claims={"jti": "j-old"}))
        async with client(url) as ws:
            refused = await closed(ws)
        assert (refused.code, refused.reason.split(":")[0]) == (4401, "token_revoked")
        assert refused.frames == []
        async with client(
            chat.url("room1", token("alice", claims={"jti": "j-1"}))
        ) as ws:
            await next_frame(ws, "ready")
            denied.add("j-2")
            revoked = token("alice", claims={"jti": "j-2"})
            await ws.send(json.dumps({"type": "auth", "token": revoked}))
            result = await closed(ws)
        assert (result.code, result.reason.split(":")[0]) == (4401, "token_revoked")
        await chat.wait_connections(0)
    assert asked == ["j-old", "j-1", "j-2"]


async def test_revoke_user_closes_every_session_with_4401(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        async with (
            client(chat.url("room1", token("alice"))) as tab1,
            client(chat.url("room2", token("alice"))) as tab2,
            client(chat.url("room1", token("bob"))) as bob,
        ):
            for ws in (tab1, tab2, bob):
                await next_frame(ws, "ready")
            # From the test's thread, as a sync route would (handed to the loop).
            assert chat.manager.revoke_user(UserId("alice")) == 2
            for ws in (tab1, tab2):
                result = await closed(ws)
                assert (result.code, result.reason) == (
                    4401,
                    "token_revoked: this token or session was revoked; sign in again",
                )
            await send_message(bob, "still here")
            assert (await next_frame(bob, "message"))["body"] == "still here"
