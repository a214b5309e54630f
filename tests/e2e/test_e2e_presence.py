"""Coalesced presence, bounded ``ready`` member lists and the ``members`` request,
end to end: each adapter behind a real uvicorn, the real ``websockets`` client
(docs/protocol.md, ``presence``, ``ready``, ``members``)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.e2e import (
    WAIT,
    Flavor,
    chat_server,
    client,
    next_frame,
    send_message,
    token,
)
from wschat import ConnectionManager

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

STORM = 300


async def presence_until(
    ws: ClientConnection, done: Any, seconds: float = 3 * WAIT
) -> list[dict[str, Any]]:
    """Every ``presence`` frame until one for which ``done(frame)`` holds."""
    seen: list[dict[str, Any]] = []
    with anyio.fail_after(seconds):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] != "presence":
                continue
            seen.append(frame)
            if done(frame):
                return seen


async def quiet(ws: ClientConnection, seconds: float = 0.4) -> list[dict[str, Any]]:
    """What arrives within ``seconds`` (several sweep intervals)."""
    got: list[dict[str, Any]] = []
    with anyio.move_on_after(seconds):
        while True:
            got.append(json.loads(await ws.recv()))
    return got


async def test_a_storm_of_joins_reaches_an_idle_member_in_a_few_frames(
    flavor: Flavor,
) -> None:
    manager = ConnectionManager(presence_count_only_above=1000)
    with chat_server(flavor, manager, rate_limit=None) as chat:
        async with client(chat.url("storm", token("watcher"))) as watcher:
            assert (await next_frame(watcher, "ready"))["count"] == 1
            own = await next_frame(watcher, "presence")
            assert (own["joins"], own["count"]) == (["watcher"], 1)
            users = [f"u{i:03d}" for i in range(STORM)]
            async with contextlib.AsyncExitStack() as stack:

                async def join(user: str) -> None:
                    ws = await stack.enter_async_context(
                        client(chat.url("storm", token(user)))
                    )
                    await next_frame(ws, "ready")

                async with anyio.create_task_group() as tg:
                    for user in users:
                        tg.start_soon(join, user)
                # The watcher sent nothing and read nothing meanwhile.
                seen = await presence_until(watcher, lambda f: f["count"] == STORM + 1)
                joined = [u for f in seen for u in f["joins"]]
                assert sorted(joined) == users  # each once, nobody twice
                assert all(f["leaves"] == [] for f in seen)
                assert all(f["count_only"] is False for f in seen)
                # Coalesced: one frame per sweep interval, not one per join.
                assert len(seen) <= STORM // 10, len(seen)
                assert [f for f in await quiet(watcher) if f["joins"]] == []


async def test_two_tabs_of_one_user_count_once(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        async with client(chat.url("tabs", token("watcher"))) as watcher:
            await next_frame(watcher, "presence")  # own join
            async with client(chat.url("tabs", token("alice"))) as tab1:
                ready1 = await next_frame(tab1, "ready")
                assert (ready1["count"], ready1["members"]) == (2, ["watcher", "alice"])
                joined = await next_frame(watcher, "presence")
                assert (joined["joins"], joined["count"]) == (["alice"], 2)
                async with client(chat.url("tabs", token("alice"))) as tab2:
                    ready2 = await next_frame(tab2, "ready")
                    assert ready2["count"] == 2
                    assert ready2["members"] == ["watcher", "alice"]
                    assert ready2["members_partial"] is False
                # One tab left: alice is still here, nobody is told anything.
                assert [
                    f for f in await quiet(watcher) if f["type"] == "presence"
                ] == []
            left = await next_frame(watcher, "presence")
            assert (left["joins"], left["leaves"], left["count"]) == ([], ["alice"], 1)


async def test_the_size_threshold_switches_to_count_only_and_back(
    flavor: Flavor,
) -> None:
    manager = ConnectionManager(presence_count_only_above=3)
    with chat_server(flavor, manager) as chat:
        async with contextlib.AsyncExitStack() as stack:
            watcher = await stack.enter_async_context(
                client(chat.url("big", token("watcher")))
            )
            await next_frame(watcher, "presence")
            for n, user in enumerate(["u1", "u2"], start=2):
                await stack.enter_async_context(client(chat.url("big", token(user))))
                named = await next_frame(watcher, "presence")
                assert (named["joins"], named["count"], named["count_only"]) == (
                    [user],
                    n,
                    False,
                )
            # 4 users: over the threshold of 3, names are left out.
            async with client(chat.url("big", token("u3"))) as u3:
                ready = await next_frame(u3, "ready")
                assert ready["count"] == 4
                counted = await next_frame(watcher, "presence")
                assert counted == {
                    "type": "presence",
                    "chat_id": "big",
                    "joins": [],
                    "leaves": [],
                    "count": 4,
                    "count_only": True,
                }
            # Back to 3: names again.
            back = await next_frame(watcher, "presence")
            assert (back["leaves"], back["count"], back["count_only"]) == (
                ["u3"],
                3,
                False,
            )


async def test_ready_is_bounded_and_members_pages_through_everyone(
    flavor: Flavor,
) -> None:
    manager = ConnectionManager(ready_members=5)
    users = [f"m{i:02d}" for i in range(12)]
    with chat_server(flavor, manager) as chat:
        async with contextlib.AsyncExitStack() as stack:
            for user in users:
                ws = await stack.enter_async_context(
                    client(chat.url("paged", token(user)))
                )
                await next_frame(ws, "ready")
            async with client(chat.url("paged", token("zed"))) as zed:
                ready = await next_frame(zed, "ready")
                assert (ready["count"], ready["members_partial"]) == (13, True)
                assert len(ready["members"]) == 5
                assert "zed" in ready["members"]  # you are always listed
                got: list[str] = []
                cursor = None
                pages = 0
                while True:
                    request: dict[str, Any] = {"type": "members", "limit": 5}
                    if cursor is not None:
                        request["cursor"] = cursor
                    request["id"] = pages
                    await zed.send(json.dumps(request))
                    page = await next_frame(zed, "members")
                    assert (page["id"], page["count"]) == (pages, 13)
                    assert len(page["members"]) <= 5
                    got += page["members"]
                    pages += 1
                    cursor = page["cursor"]
                    if cursor is None:
                        break
                assert got == sorted([*users, "zed"])
                assert pages == 3


async def test_bad_members_requests_get_error_frames(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        async with client(chat.url("bad", token("alice"))) as alice:
            await next_frame(alice, "ready")
            bad: list[tuple[dict[str, Any], str]] = [
                ({"cursor": "%%%"}, "bad_cursor"),
                ({"cursor": ""}, "bad_cursor"),
                ({"cursor": 7}, "bad_cursor"),
                ({"cursor": "x" * 1025}, "bad_cursor"),
                ({"limit": 0}, "bad_frame"),
                ({"limit": 1001}, "bad_frame"),
                ({"limit": "10"}, "bad_frame"),
                ({"limit": True}, "bad_frame"),
                ({"id": [1]}, "bad_frame"),
            ]
            for fields, code in bad:
                await alice.send(json.dumps({"type": "members", **fields}))
                error = await next_frame(alice, "error")
                assert error["code"] == code, fields
            # The connection is fine; the boundaries are accepted.
            await alice.send('{"type": "members", "limit": 1000}')
            page = await next_frame(alice, "members")
            assert (page["members"], page["cursor"], page["count"]) == (
                ["alice"],
                None,
                1,
            )
            await alice.send('{"type": "members", "limit": 1}')
            assert (await next_frame(alice, "members"))["cursor"] is None
            assert "id" not in page


async def test_presence_before_a_message_arrives_before_it(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        async with client(chat.url("order", token("alice"))) as alice:
            await next_frame(alice, "presence")
            async with contextlib.AsyncExitStack() as stack:
                # Several joins, then at once a message: the joins come first.
                last = None
                for user in ("b1", "b2", "b3"):
                    last = await stack.enter_async_context(
                        client(chat.url("order", token(user)))
                    )
                    await next_frame(last, "ready")
                assert last is not None
                await send_message(last, "hi")
                joined: list[str] = []
                with anyio.fail_after(WAIT):
                    while True:
                        frame = json.loads(await alice.recv())
                        if frame["type"] == "message":
                            break
                        joined += frame["joins"]
                assert joined == ["b1", "b2", "b3"]


async def test_events_format_keeps_the_old_shape(flavor: Flavor) -> None:
    manager = ConnectionManager(presence_format="events")
    with chat_server(flavor, manager) as chat:
        async with client(chat.url("old", token("alice"))) as alice:
            own = await next_frame(alice, "presence")
            assert own == {
                "type": "presence",
                "chat_id": "old",
                "event": "join",
                "user": "alice",
                "count": 1,
            }
            async with client(chat.url("old", token("bob"))) as bob:
                await next_frame(bob, "ready")
                joined = await next_frame(alice, "presence")
                assert (joined["event"], joined["user"], joined["count"]) == (
                    "join",
                    "bob",
                    2,
                )
