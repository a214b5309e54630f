"""Two real processes on the shared Redis: a storm of joins split over both reaches
each member as a few coalesced ``presence`` frames, and both processes agree on the
count and the members (docs/scaling.md, presence across processes)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import anyio
import pytest

from tests.support.redis_processes import WAIT, Client, Server, opened

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

STORM = 200  # under the default count-only threshold (250): names are sent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def presence_until(
    watcher: Client, count: int, users: list[str]
) -> list[dict[str, Any]]:
    """Presence frames until every user's join came and the count is ``count``.

    (A count may run ahead of the joins: it counts a user from the moment this
    process knows of them; the join comes with the next frame.)
    """
    seen: list[dict[str, Any]] = []
    joined: set[str] = set()
    with anyio.fail_after(4 * WAIT):
        while not seen or seen[-1]["count"] != count or not joined >= set(users):
            frame = json.loads(await watcher.ws.recv())
            if frame["type"] == "presence":
                seen.append(frame)
                joined.update(frame["joins"])
    return seen


async def test_a_storm_split_over_two_processes_agrees_on_counts(
    servers: list[Server],
) -> None:
    a, b = servers
    room = "storm"
    users = [f"s{i:03d}" for i in range(STORM)]
    async with (
        opened(a, "wa", room) as wa,
        opened(b, "wb", room) as wb,
        contextlib.AsyncExitStack() as stack,
    ):
        await presence_until(wa, 2, ["wa", "wb"])
        await presence_until(wb, 2, ["wb"])  # wa was in its ready

        async def join(i: int, user: str) -> None:
            await stack.enter_async_context(opened((a, b)[i % 2], user, room))

        async with anyio.create_task_group() as tg:
            for i, user in enumerate(users):
                tg.start_soon(join, i, user)
        total = STORM + 2
        for watcher in (wa, wb):
            seen = await presence_until(watcher, total, users)
            joined = [u for f in seen for u in f["joins"]]
            assert sorted(set(joined)) == users
            assert len(joined) == len(set(joined))  # each join once
            assert len(seen) <= STORM // 5, len(seen)  # coalesced, not per join
        everyone = sorted([*users, "wa", "wb"])
        assert sorted(a.members(room)) == sorted(b.members(room)) == everyone
        # A newcomer on either process is counted in its own ready (the other
        # newcomer may or may not be known there yet: they join at once).
        async with opened(a, "late-a", room) as la, opened(b, "late-b", room) as lb:
            for late in (la, lb):
                assert late.ready["count"] in (total + 1, total + 2)
                assert late.ready["members_partial"] is True
                assert len(late.ready["members"]) == 100
