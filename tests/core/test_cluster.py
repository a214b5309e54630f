"""Managers sharing a backplane, on asyncio and trio, through the in-memory hub.

Two managers on one :class:`MemoryHub` behave like two processes on one Redis, so the
manager's cross-process logic (no duplicates, order, presence once per user, per-user
operations, outage and ``resync``, lease expiry) is tested here without a server; the
same behaviours over a real Redis and real processes are in ``tests/redis/``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import anyio
import pytest

from tests.support.cluster import ROOM, WAIT, cluster, hub_pair, join
from tests.support.common import SECRET
from tests.support.core import wait_until
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.auth import Principal
from wschat.backplane import BackplaneUnavailable, MemoryBackplane, MemoryHub
from wschat.cluster import remote_error
from wschat.errors import (
    ConfigurationError,
    Forbidden,
    TooManyConnections,
    WSChatError,
    wire_close,
)
from wschat.ids import ChatId, UserId
from wschat.status import status_payload
from wschat.testing import check_backplane

pytestmark = pytest.mark.anyio


async def test_conformance_memory() -> None:
    hub = MemoryHub()
    await check_backplane(lambda: MemoryBackplane(hub))


async def test_conformance_catches_a_broken_backplane() -> None:
    class Deaf(MemoryBackplane):
        async def publish(self, channel: str, data: bytes) -> None:
            return None

    hub = MemoryHub()
    with pytest.raises(AssertionError, match="cross-process delivery"):
        await check_backplane(lambda: Deaf(hub), within=0.2)


async def test_default_manager_is_local_and_needs_no_start() -> None:
    manager = ConnectionManager()
    assert manager.backplane_health() == {"name": "memory", "healthy": True}
    conn = manager.connect(Principal(UserId("alice")), ROOM)
    assert manager.members(ROOM) == ["alice"]
    async with manager:
        assert not manager.clustered
        assert manager.publish_nowait(conn, "hi") == 1
    assert await manager.room_members(ROOM) == ["alice"]


async def test_outage_degrades_then_resyncs() -> None:
    hub = MemoryHub()
    async with cluster(*hub_pair(hub)) as (tg, (a, b)):
        alice, carol = join(tg, a, "alice"), join(tg, a, "carol")
        bob = join(tg, b, "bob")
        for client in (alice, carol, bob):
            await client.ready()
        hub.set_down(True)
        health = a.backplane_health()
        assert health["healthy"] is False
        assert "down" in health["detail"]
        assert status_payload(a)["status"] == "degraded"
        alice.say("during outage")
        assert (await carol.sink.next_of("message"))["body"] == "during outage"
        assert (await alice.sink.next_of("message"))["body"] == "during outage"
        error = await alice.sink.next_of("error")
        assert error["code"] == "delivery_degraded"
        assert a.backplane_health()["undelivered"] >= 1
        hub.set_down(False)
        for client in (alice, carol, bob):
            resync = await client.sink.next_of("resync")
            assert resync["chat_id"] == ROOM
        assert a.backplane_health()["healthy"] is True
        alice.say("after")
        assert (await bob.sink.next_of("message"))["body"] == "after"
        assert not [f for f in bob.sink.seen if f.get("body") == "during outage"]


class Mortal(MemoryBackplane):
    """A backplane whose process can 'die': it stops renewing and publishing."""

    dead = False

    def _check(self) -> None:
        if self.dead:
            raise BackplaneUnavailable("process is dead")

    async def publish(self, channel: str, data: bytes) -> None:
        self._check()
        await super().publish(channel, data)

    async def presence_leave(self, room: str, user: str, node: str) -> bool:
        self._check()
        return await super().presence_leave(room, user, node)

    async def presence_refresh(
        self, node: str, rooms: Mapping[str, Collection[str]], ttl: float
    ) -> dict[str, list[str]]:
        self._check()
        return await super().presence_refresh(node, rooms, ttl)


async def test_presence_of_a_dead_process_expires() -> None:
    hub = MemoryHub()
    mortal = Mortal(hub)
    async with cluster(MemoryBackplane(hub), mortal, presence_ttl=0.6) as (tg, (a, b)):
        alice = join(tg, a, "alice")
        await alice.ready()
        assert (await alice.sink.next_of("presence"))["joins"] == ["alice"]
        bob = join(tg, b, "bob")
        await bob.ready()
        assert (await alice.sink.next_of("presence"))["joins"] == ["bob"]
        mortal.dead = True
        left = await alice.sink.next_of("presence")
        assert (left["joins"], left["leaves"], left["count"]) == ([], ["bob"], 1)
        assert await a.room_members(ROOM) == ["alice"]
        assert a.members(ROOM) == ["alice"]


async def test_not_running_shared_backplane_reports_degraded() -> None:
    manager = ConnectionManager(backplane=MemoryBackplane(MemoryHub()))
    health = manager.backplane_health()
    assert health["healthy"] is False
    assert "lifespan=manager.lifespan" in health["detail"]
    assert status_payload(manager)["status"] == "degraded"
    async with manager:
        assert manager.backplane_health()["healthy"] is True
        async with manager:  # re-entering is a no-op
            pass
        assert manager.clustered
    assert not manager.clustered


async def test_chat_app_runs_the_manager_from_lifespan() -> None:
    manager = ConnectionManager(backplane=MemoryBackplane(MemoryHub()))
    app = chat_app(manager, TokenVerifier(SECRET, algorithms=["HS256"]))
    to_app, from_test = anyio.create_memory_object_stream[dict[str, Any]](4)
    to_test, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)

    async def send(message: Any) -> None:
        await to_test.send(dict(message))

    async def serve() -> None:
        await app({"type": "lifespan"}, from_test.receive, send)

    with to_app, from_test, to_test, from_app:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await to_app.send({"type": "lifespan.startup"})
            with anyio.fail_after(WAIT):
                started = await from_app.receive()
            assert started["type"] == "lifespan.startup.complete"
            assert manager.backplane_health()["healthy"] is True
            await to_app.send({"type": "lifespan.shutdown"})
            with anyio.fail_after(WAIT):
                stopped = await from_app.receive()
            assert stopped["type"] == "lifespan.shutdown.complete"
    assert not manager.clustered


async def test_a_connection_waiting_for_its_room_gets_nothing_before_ready() -> None:
    # The first local joiner of a room waits for the room's subscription: until it
    # joins, frames for its user must not reach it, or they would arrive before
    # ``ready``.
    fresh = ChatId("fresh")
    async with cluster(*hub_pair()) as (tg, (a, _)):
        alice = join(tg, a, "alice", fresh)
        assert alice.conn.chat_id not in a.registry  # still waiting
        sent = a.send_to_user(UserId("alice"), '{"type":"notice","n":1}')
        taken = a.send_nowait(alice.conn.id, '{"type":"notice","n":2}')
        waiting = a.user_connections(UserId("alice")), a.connections()
        assert len(a) == 1  # counted, though
        assert (await alice.sink.next())["type"] == "ready"
        assert (sent, taken, waiting) == (0, False, ([], []))
        # Once joined, it gets what is sent to its user.
        assert a.user_connections(UserId("alice")) == [alice.conn]
        assert a.send_to_user(UserId("alice"), '{"type":"notice","n":4}') == 1
        notice = await alice.sink.next_of("notice")
        assert notice["n"] == 4


async def test_close_user_and_close_all_reach_a_connection_waiting_for_its_room() -> (
    None
):
    async with cluster(*hub_pair()) as (tg, (a, _)):
        kicked = join(tg, a, "mallory", ChatId("fresh"))
        assert a.close_user(UserId("mallory"), Forbidden("kicked")) == 1
        assert kicked.conn.closing is not None
        assert kicked.conn.closing.reason == "forbidden: kicked"
        left = [join(tg, a, "carol", ChatId(f"fresh-{i}")) for i in range(2)]
        assert a.close_all() == 3  # both of carol's, and mallory's (closing)
        for client in left:
            assert client.conn.closing is not None
            assert client.conn.closing.code == "going_away"
        a.disconnect(kicked.conn)
        for client in left:
            a.disconnect(client.conn)
        assert len(a) == 0


class Banned(WSChatError):
    """An application's own error, with its own close code."""

    close_code = 4010
    code = "banned"


@pytest.mark.parametrize("how", ["room", "user"])
async def test_an_application_error_closes_with_its_own_code_in_every_process(
    how: str,
) -> None:
    # It used to close the other processes' connections as 4403 forbidden.
    async with cluster(*hub_pair()) as (tg, (a, b)):
        there = join(tg, b, "mallory")
        await there.ready()  # after b subscribed to the room
        if how == "room":
            assert a.close_room(ROOM, Banned("no more")) == 0
        else:
            assert a.close_user(UserId("mallory"), Banned("no more")) == 0
        with anyio.fail_after(WAIT):
            await wait_until(lambda: there.conn.closing is not None)
        assert there.conn.closing is not None
        closing = wire_close(there.conn.closing)
        assert (closing.code, closing.reason) == (4010, "banned: no more")
        b.disconnect(there.conn)


@pytest.mark.parametrize(
    ("code", "close_code", "expected"),
    [
        ("going_away", 4010, (1001, "going_away")),  # a code wschat knows: its own
        ("banned", 4010, (4010, "banned")),
        ("banned", 4999, (4999, "banned")),
        ("banned", 3999, (4403, "forbidden")),  # not an application's close code
        ("banned", 5000, (4403, "forbidden")),
        ("banned", None, (4403, "forbidden")),  # a wschat 0.1 process said nothing
        ("banned", "4010", (4403, "forbidden")),
        ("banned", True, (4403, "forbidden")),
        ("Banned!", 4010, (4403, "forbidden")),  # not a reason code
    ],
)
def test_remote_error_rebuilds_an_application_error_from_its_codes(
    code: str, close_code: Any, expected: tuple[int, str]
) -> None:
    error = remote_error(code, "words", close_code)
    assert (int(error.close_code), error.code, error.detail) == (*expected, "words")
    assert type(remote_error(code, "", close_code)) is type(error)  # made once


async def test_the_per_user_cap_counts_connections_waiting_for_their_room() -> None:
    hub = MemoryHub()
    manager = ConnectionManager(
        backplane=MemoryBackplane(hub), max_connections_per_user=2
    )
    async with manager:
        for i in range(2):
            manager.connect(Principal(UserId("alice")), ChatId(f"fresh-{i}"))
        with pytest.raises(TooManyConnections):
            manager.connect(Principal(UserId("alice")), ChatId("fresh-2"))


async def test_node_id_with_separator_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        ConnectionManager(node_id="a|b")
    with pytest.raises(ConfigurationError):
        ConnectionManager(presence_ttl=0)
