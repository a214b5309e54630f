"""wschat.client's ``members()`` and application frames, against a real uvicorn.

``members()`` pages the room's member list (the ``members`` request of
docs/protocol.md): every member exactly once, a refused cursor raised with the
server's code, a request made while the client reconnects answered after the
reconnect, and a request whose connection drops before the answer sent again on
the next one. A frame of the application's own type (``manager.broadcast_nowait``)
arrives as an ``OtherFrame`` with the whole frame in ``data``.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from tests.support.client import (
    FakeSleep,
    HandshakeCounter,
    counted_server,
    next_event,
)
from tests.support.common import serve
from tests.support.e2e import WAIT, build_app, clients, next_frame, token
from wschat import ConnectionManager, ServiceRestart
from wschat.client import (
    Disconnected,
    Members,
    MembersError,
    Message,
    OtherFrame,
    Ready,
    Reconnected,
    connect,
)
from wschat.ids import ChatId, UserId

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


async def test_paging_lists_every_member_exactly_once() -> None:
    others = [f"user{n:02d}" for n in range(25)]
    with counted_server() as server:
        urls = [server.url("crowd", token(user)) for user in others]
        async with (
            clients(urls) as sockets,
            connect(server.url("crowd"), token=token("alice")) as chat,
        ):
            for ws in sockets:
                await next_frame(ws, "ready")
            pages: list[Members] = []
            cursor: str | None = None
            with anyio.fail_after(WAIT):
                while True:
                    page = await chat.members(cursor=cursor, limit=10)
                    pages.append(page)
                    cursor = page.cursor
                    if cursor is None:
                        break
            everyone = sorted(["alice", *others])
            listed = [user for page in pages for user in page.members]
            assert listed == everyone  # each once, in order of user id
            assert [len(page.members) for page in pages] == [10, 10, 6]
            assert {(page.type, page.chat_id, page.count) for page in pages} == {
                ("members", "crowd", 26)
            }
            # The default page holds them all.
            whole = await chat.members()
            assert (whole.members, whole.cursor) == (tuple(everyone), None)
        assert server.handshakes == 26


async def test_a_bad_cursor_raises_the_servers_code_and_the_chat_goes_on() -> None:
    with counted_server() as server:
        async with connect(server.url("lobby"), token=token("alice")) as chat:
            with pytest.raises(MembersError) as refused, anyio.fail_after(WAIT):
                await chat.members(cursor="not a cursor!")
            assert refused.value.code == "bad_cursor"
            assert "cursor" in refused.value.message
            assert str(refused.value).startswith("members request refused: bad_cursor")
            # Refused before anything is sent: the server caps a page at 1000.
            with pytest.raises(ValueError, match="at most 1000"):
                await chat.members(limit=1001)
            with pytest.raises(ValueError, match="limit"):
                await chat.members(limit=0)
            assert chat.connected
            page = await chat.members()
            assert (page.members, page.count, page.cursor) == (("alice",), 1, None)
            # The refusal was the request's answer, not an event.
            await next_event(chat, Ready)
            with anyio.move_on_after(0.3):
                async for event in chat:
                    assert event.type not in ("error", "members"), event
        assert server.handshakes == 1


async def test_members_while_reconnecting_waits_for_the_next_connection() -> None:
    gap = anyio.Event()

    async def sleep(seconds: float) -> None:
        await gap.wait()  # the reconnect waits until the test lets it

    answers: list[Members] = []
    with counted_server() as server:
        url = server.url("lobby")
        async with (
            connect(url, token=token("alice"), sleep=sleep) as chat,
            clients([server.url("lobby", token("bob"))]) as (bob,),
        ):
            await next_frame(bob, "ready")
            await next_event(chat, Ready)
            server.manager.close_user(UserId("alice"), ServiceRestart())
            assert (await next_event(chat, Disconnected)).code == 1012
            assert not chat.connected

            async def ask() -> None:
                answers.append(await chat.members())

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                await anyio.sleep(0.3)
                assert answers == []  # no connection to ask on: it waits
                gap.set()
                with anyio.fail_after(WAIT):
                    await next_event(chat, Reconnected)
            assert server.handshakes == 3  # alice twice, bob once
            (page,) = answers
            assert (page.members, page.count, page.cursor) == (
                ("alice", "bob"),
                2,
                None,
            )


async def test_an_application_frame_arrives_as_an_other_frame() -> None:
    move = {"type": "game_move", "player": "bob", "from": "e2", "to": "e4", "n": 1}
    with counted_server() as server:
        async with connect(server.url("game"), token=token("alice")) as chat:
            await next_event(chat, Ready)
            taken = server.manager.broadcast_nowait(ChatId("game"), json.dumps(move))
            assert taken == 1
            frame = await next_event(chat, OtherFrame)
            assert frame.type == "game_move"
            assert frame.data == move
            # The chat goes on after it.
            await chat.send("after")
            message = await next_event(chat, Message)
            assert (message.user, message.body) == ("alice", "after")


class DropFirstMembersRequest:
    """ASGI middleware: the first ``members`` request never reaches the app; the
    server closes the connection instead (1012), as a restart between the request
    and its answer would."""

    def __init__(self, app: Any, manager: ConnectionManager) -> None:
        self.app = app
        self.manager = manager
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def receive_dropping() -> Any:
            while True:
                message = await receive()
                text = message.get("text")
                if isinstance(text, str) and '"members"' in text:
                    self.requests.append(json.loads(text))
                    if len(self.requests) == 1:
                        self.manager.close_user(UserId("alice"), ServiceRestart())
                        continue
                return message

        await self.app(scope, receive_dropping, send)


async def test_members_asks_again_when_the_connection_drops_before_the_answer() -> None:
    manager = ConnectionManager()
    dropper = DropFirstMembersRequest(build_app("asgi", manager), manager)
    counter = HandshakeCounter(dropper)
    with serve(counter, log_config=None, timeout_graceful_shutdown=3) as server:
        url = f"{server.ws}/ws/chat/lobby"
        async with connect(url, token=token("alice"), sleep=FakeSleep()) as chat:
            with anyio.fail_after(WAIT):
                page = await chat.members(limit=5)
            assert (page.members, page.count, page.cursor) == (("alice",), 1, None)
            assert [(r["type"], r["limit"]) for r in dropper.requests] == [
                ("members", 5),
                ("members", 5),
            ]
            assert (await next_event(chat, Disconnected)).code == 1012
            assert isinstance(await next_event(chat, Reconnected), Reconnected)
        assert counter.handshakes == 2
