"""wschat.client on the server's token expiry and history: refresh and resume.

Through a real server: refresh in-band on ``token_expiring`` (and stop on 4401
``token_expired`` without a token provider), message offsets, resuming with
``?since=<offset>&epoch=<epoch>`` after a gap, and paging back with ``history``.
"""

from __future__ import annotations

import time

import anyio
import pytest

from tests.docs.test_docs_clients import snippet
from tests.support.client import counted_server, next_event
from tests.support.common import SECRET
from tests.support.e2e import WAIT, client, send_message, token
from wschat import ServiceRestart, TokenVerifier
from wschat.client import (
    AuthOk,
    ChatStopped,
    Disconnected,
    Message,
    Ready,
    Reconnected,
    TokenExpiring,
    connect,
)
from wschat.ids import UserId

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def need(ready: Ready, field: str) -> None:
    assert field in ready.data, f"the server sent no ready.{field}"


# -- refresh on token_expiring (issue 12) ----------------------------------------------


def strict_verifier() -> TokenVerifier:
    """No leeway: a token's connection ends at its ``exp``."""
    return TokenVerifier(SECRET, algorithms=["HS256"], leeway=0)


async def test_the_provider_refreshes_in_band_on_token_expiring() -> None:
    asked: list[int] = []

    def provider() -> str:
        asked.append(1)
        return token("alice", ttl=3600)

    with counted_server(verifier=strict_verifier()) as server:
        minted = time.time()
        async with connect(
            server.url("lobby"), token=token("alice", ttl=3), token_provider=provider
        ) as chat:
            need(await next_event(chat, Ready), "exp")
            notice = await next_event(chat, TokenExpiring)
            assert notice.type == "token_expiring"
            assert abs(notice.exp - (minted + 3)) <= 1
            ok = await next_event(chat, AuthOk)
            assert ok.ok is True
            assert ok.exp is not None
            assert ok.exp > minted + 3000
            # Past the first token's exp, the same connection still carries the chat.
            await anyio.sleep(max(0.0, minted + 4 - time.time()))
            await chat.send("still here")
            assert (await next_event(chat, Message)).body == "still here"
            assert chat.connected
        assert asked == [1]
        assert server.handshakes == 1


async def test_without_a_provider_the_app_is_told_and_the_expiry_stops_it() -> None:
    async def listen(url: str) -> None:
        async with connect(url, token=token("alice", ttl=2)) as chat:
            need(await next_event(chat, Ready), "exp")
            assert isinstance(await next_event(chat, TokenExpiring), TokenExpiring)
            with anyio.fail_after(WAIT):
                async for _ in chat:
                    pass

    with counted_server(verifier=strict_verifier()) as server:
        with pytest.raises(ChatStopped) as stopped:
            await listen(server.url("lobby"))
        assert stopped.value.code == 4401
        assert stopped.value.reason.startswith("token_expired")
        assert server.handshakes == 1


async def test_chat_refresh_sends_the_token_in_band() -> None:
    with counted_server(verifier=strict_verifier()) as server:
        async with connect(server.url("lobby"), token=token("alice", ttl=2)) as chat:
            need(await next_event(chat, Ready), "exp")
            await next_event(chat, TokenExpiring)
            await chat.refresh(token("alice", ttl=3600))
            assert (await next_event(chat, AuthOk)).ok is True
            await anyio.sleep(2.5)
            assert chat.connected
        assert server.handshakes == 1


# -- resume with since/epoch, offsets, history (issue 14) ------------------------------


async def test_offsets_count_from_one_and_the_position_follows_them() -> None:
    with counted_server() as server:
        async with connect(server.url("offsets"), token=token("alice")) as chat:
            ready = await next_event(chat, Ready)
            need(ready, "epoch")
            assert ready.data["offset"] == 0
            for n in range(3):
                await chat.send(n)
            got = [await next_event(chat, Message) for _ in range(3)]
            assert [m.offset for m in got] == [1, 2, 3]
            assert chat.position == (ready.data["epoch"], 3)


async def test_a_reconnect_recovers_the_messages_sent_during_the_gap() -> None:
    gap = anyio.Event()

    async def sleep(seconds: float) -> None:
        await gap.wait()  # the reconnect waits until the room has talked

    with counted_server() as server:
        url = server.url("gap")
        async with (
            connect(url, token=token("alice"), sleep=sleep) as chat,
            client(server.url("gap", token("bob"))) as bob,
        ):
            ready = await next_event(chat, Ready)
            need(ready, "epoch")
            await chat.send("before")
            assert (await next_event(chat, Message)).offset == 1
            server.manager.close_user(UserId("alice"), ServiceRestart())
            assert (await next_event(chat, Disconnected)).code == 1012
            for n in range(3):
                await send_message(bob, f"missed {n}")
            await anyio.sleep(0.3)  # let them reach the history store
            gap.set()
            back = await next_event(chat, Reconnected)
            assert back.recovered is True
            assert server.counter.queries[-1].endswith(
                f"since=1&epoch={ready.data['epoch']}"
            )
            replayed = [await next_event(chat, Message) for _ in range(3)]
            assert [(m.body, m.offset) for m in replayed] == [
                ("missed 0", 2),
                ("missed 1", 3),
                ("missed 2", 4),
            ]
            await send_message(bob, "live")
            live = await next_event(chat, Message)
            assert (live.body, live.offset) == ("live", 5)


async def test_history_pages_backwards() -> None:
    with counted_server() as server:
        async with connect(server.url("pages"), token=token("alice")) as chat:
            need(await next_event(chat, Ready), "epoch")
            for n in range(1, 6):
                await chat.send(n)
            for _ in range(5):
                await next_event(chat, Message)
            latest = await chat.history(limit=2)
            assert latest.type == "history"
            assert [m.offset for m in latest.messages] == [4, 5]
            assert [m.body for m in latest.messages] == [4, 5]
            assert latest.more is True
            older = await chat.history(before=4, limit=10)
            assert [m.offset for m in older.messages] == [1, 2, 3]
            assert older.more is False


async def test_the_docs_history_example_reloads_after_an_unrecovered_gap(
    capsys: pytest.CaptureFixture[str],
) -> None:
    on_event = snippet("on_event")["on_event"]
    with counted_server() as server:
        async with connect(server.url("docs"), token=token("alice")) as chat:
            ready = await next_event(chat, Ready)
            need(ready, "epoch")
            for body in ("one", "two"):
                await chat.send(body)
                await next_event(chat, Message)
            capsys.readouterr()
            await on_event(chat, Reconnected(recovered=True, ready=ready))
            assert capsys.readouterr().out == ""
            await on_event(chat, Reconnected(recovered=False, ready=ready))
            assert capsys.readouterr().out == "1 alice one\n2 alice two\n"
