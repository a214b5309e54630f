"""One member's bad data cannot break a room's presence on Redis (issue 10, bug 1).

A user id Redis cannot store (a lone surrogate is not UTF-8) once failed every
presence renewal of its process with ``UnicodeEncodeError``: an ERROR traceback per
renewal, and after ``presence_ttl`` the other processes announced false ``leave``
frames for every legitimate member. The verifier now refuses such a ``sub``, but the
backplane must not depend on it: these tests inject the id below the verifier (a
``Principal`` made directly, or a custom ``Verifier`` behind a real server).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis import asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from tests.support.cluster import ROOM, Client, cluster, join
from tests.support.common import serve
from tests.support.redis_server import need_redis, unique_prefix
from wschat import ConnectionManager
from wschat.asgi import chat_app
from wschat.auth import Principal
from wschat.backplane.redis import RedisBackplane
from wschat.ids import UserId

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

BAD = "\ud800"  # a lone surrogate: valid JSON, not encodable as UTF-8
TTL = 1.5  # renewed every 0.5 s; a lease not renewed is gone after 1.5 s


def presence_about(client: Client, user: str) -> list[str]:
    seen = client.sink.seen + client.sink.pending()
    client.sink.seen = seen
    return [
        event
        for f in seen
        if f["type"] == "presence"
        for event, users in (("join", f["joins"]), ("leave", f["leaves"]))
        if user in users
    ]


def wschat_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wschat" and r.levelno >= level
    ]


async def test_a_user_id_redis_cannot_store_does_not_break_the_room(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wschat")
    url, prefix = need_redis(), unique_prefix()
    backplanes = RedisBackplane(url, prefix=prefix), RedisBackplane(url, prefix=prefix)
    async with cluster(*backplanes, presence_ttl=TTL) as (tg, (a, b)):
        alice = join(tg, a, "alice")
        await alice.ready()
        bad = join(tg, a, BAD)
        await bad.ready()
        bob = join(tg, b, "bob")
        await bob.ready()
        with anyio.fail_after(5):
            while "join" not in presence_about(alice, "bob"):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        # Three lease lifetimes: a lease not renewed would be gone twice over.
        await anyio.sleep(3 * TTL)
        for watcher in (alice, bob):
            for user in ("alice", "bob"):
                assert "leave" not in presence_about(watcher, user), (user, watcher)
        assert await a.room_members(ROOM) == ["alice", "bob"]
        assert await b.room_members(ROOM) == ["alice", "bob"]
        assert sorted(b.members(ROOM)) == ["alice", "bob"]
        assert a.members(ROOM) == ["alice", BAD, "bob"]  # still served here
        # A newcomer on the other process is told the legitimate members.
        carol = join(tg, b, "carol")
        # (The room holds the newcomer when its ready frame is built.)
        assert sorted((await carol.ready())["members"]) == ["alice", "bob", "carol"]
    errors = wschat_records(caplog, logging.ERROR)
    assert errors == [], errors
    warnings = [m for m in wschat_records(caplog, logging.WARNING) if "skipped" in m]
    assert len(warnings) == 1, warnings  # one line, not one per renewal
    assert repr(str(ROOM)) in warnings[0]
    assert ascii(BAD) in warnings[0]


async def test_entries_redis_holds_are_isolated_per_user_and_per_room(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An undecodable user in a hash, a key of the wrong type: each skips itself."""
    caplog.set_level(logging.WARNING, logger="wschat")
    url, prefix = need_redis(), unique_prefix()
    watcher = aioredis.Redis.from_url(url)
    try:
        async with cluster(RedisBackplane(url, prefix=prefix)) as (_, (a,)):
            backplane = a.backplane
            assert await backplane.presence_join("good", "alice", "n1", 30) is True
            await watcher.hset(f"{prefix}p:good", b"\xff\xfe", b"n2=99999999999999")
            assert await backplane.presence_members("good") == ["alice"]
            # Another writer's key of the wrong type under the room's name.
            await watcher.set(f"{prefix}p:broken", b"not a hash")
            gone = await backplane.presence_refresh(
                "n1", {"broken": ["bob"], "good": ["alice", BAD, "carol"]}, 30
            )
            assert gone == {}
            assert await backplane.presence_members("good") == ["alice", "carol"]
            assert await backplane.presence_join("good", BAD, "n1", 30) is True
            assert await backplane.presence_leave("good", BAD, "n1") is True
            # Renewing again warns no more: each skipped entry is named once.
            await backplane.presence_refresh("n1", {"good": ["alice", BAD]}, 30)
    finally:
        await watcher.aclose()
    warnings = wschat_records(caplog, logging.WARNING)
    skipped = sorted(m for m in warnings if "skipped" in m)
    assert len(skipped) == 3, warnings
    assert "'broken': skipped the whole room" in skipped[0]
    assert "WRONGTYPE" in skipped[0]
    assert "'good': skipped entry b'\\xff\\xfe'" in skipped[1]
    assert f"'good': skipped user {BAD!a}" in skipped[2]
    assert wschat_records(caplog, logging.ERROR) == []


class NamesAsTokens:
    """A verifier for this test only: the token is the user id (``bad`` is BAD).

    It stands for any verifier, or an older wschat, that lets an odd ``sub`` through:
    the backplane must cope on its own.
    """

    def verify(self, token: str) -> Principal:
        return Principal(UserId(BAD if token == "bad" else token))


@contextlib.asynccontextmanager
async def opened(port: int, token: str) -> AsyncIterator[tuple[ClientConnection, Any]]:
    url = f"ws://127.0.0.1:{port}/ws/chat/{ROOM}?token={token}"
    async with connect(url) as ws:
        with anyio.fail_after(5):
            ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        yield ws, ready


async def frames_until_quiet(ws: ClientConnection, seconds: float) -> list[Any]:
    out: list[Any] = []
    with anyio.move_on_after(seconds):
        while True:
            out.append(json.loads(await ws.recv()))
    return out


@pytest.mark.e2e
async def test_through_real_servers_presence_survives_an_odd_user(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wschat")
    url, prefix = need_redis(), unique_prefix()
    managers = [
        ConnectionManager(
            backplane=RedisBackplane(url, prefix=prefix), presence_ttl=TTL
        )
        for _ in range(2)
    ]
    apps = [chat_app(m, NamesAsTokens()) for m in managers]
    with serve(apps[0], log_config=None) as one, serve(apps[1], log_config=None) as two:
        async with (
            opened(one.port, "alice") as (alice, _),
            opened(one.port, "bad") as _,
            opened(two.port, "bob") as (bob, _),
        ):
            seen = await frames_until_quiet(bob, 3 * TTL)
            seen += await frames_until_quiet(alice, 0.1)
            leaves = [f for f in seen if f.get("leaves")]
            assert leaves == [], leaves
            async with opened(two.port, "carol") as (_, ready):
                assert sorted(ready["members"]) == ["alice", "bob", "carol"]
    assert wschat_records(caplog, logging.ERROR) == []
    skipped = [m for m in wschat_records(caplog, logging.WARNING) if "skipped" in m]
    assert len(skipped) == 1, skipped
