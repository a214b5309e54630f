"""ConnectionManager on asyncio and trio, through the endpoint on fake sockets: ready
and presence, fan-out with server-set fields and in order, per-user operations
(close_user, close_all, the per-user cap), and the stats."""

from __future__ import annotations

import json
import time

import anyio
import pytest

from tests.support.common import FakeTransport
from tests.support.core import (
    ROOM,
    chat,
    frame,
    handshake,
    stuck_on_first,
    token_for,
    writer,
)
from wschat import ConnectionManager
from wschat.auth import Principal
from wschat.ids import UserId

pytestmark = pytest.mark.anyio


async def test_ready_first_then_presence() -> None:
    manager = ConnectionManager()
    async with chat(manager) as open_:
        alice = open_(handshake(token_for("alice")))
        ready = await alice.recv()
        assert ready["type"] == "ready"
        assert (ready["user"], ready["chat_id"]) == ("alice", ROOM)
        assert ready["members"] == ["alice"]
        assert ready["protocol"] == 1
        assert ready["connection_id"].startswith("c")
        assert ready["limits"]["max_message_bytes"] == 64 * 1024
        assert ready["batch"] is False
        assert alice.t.accepted == ["wschat.v1"]
        join = await alice.recv()
        assert (join["type"], join["joins"], join["leaves"]) == (
            "presence",
            ["alice"],
            [],
        )
        bob = open_(handshake(token_for("bob")))
        ready_b = await bob.recv()
        assert ready_b["type"] == "ready"
        assert ready_b["members"] == ["alice", "bob"]
        assert (ready_b["count"], ready_b["members_partial"]) == (2, False)
        assert (await alice.recv())["joins"] == ["bob"]
        bob.t.hang_up()
        leave = await alice.recv()
        assert (leave["joins"], leave["leaves"], leave["count"]) == ([], ["bob"], 1)


async def test_own_join_comes_only_to_a_users_first_connection_in_the_room() -> None:
    # docs/protocol.md: the first connection gets its own join right after ready; a
    # later one of the same user gets none and finds itself in ready.members.
    async with chat() as open_:
        first = open_(handshake(token_for("alice")))
        assert (await first.recv())["type"] == "ready"
        own = await first.recv()
        assert (own["type"], own["joins"], own["count"]) == ("presence", ["alice"], 1)
        second = open_(handshake(token_for("alice")))
        ready = await second.recv()
        assert (ready["type"], ready["members"]) == ("ready", ["alice"])
        # An urgent frame sends whatever was queued before it: a pong next means
        # no join was queued for the second tab, nor for the first about it.
        for tab in (second, first):
            tab.send({"type": "ping", "id": 1})
            assert (await tab.recv())["type"] == "pong"


async def test_message_broadcast_with_server_set_fields() -> None:
    async with chat() as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        bob = open_(handshake(token_for("bob")))
        await bob.recv_type("ready")
        before = int(time.time() * 1000)
        alice.send(
            {
                "type": "message",
                "body": {"text": "hi"},
                "client_id": "c-42",
                "user": "mallory",
                "id": "forged",
                "ts": 1,
                "chat_id": "elsewhere",
            }
        )
        for client in (alice, bob):
            msg = await client.recv_type("message")
            assert msg["body"] == {"text": "hi"}
            assert msg["user"] == "alice"
            assert msg["chat_id"] == ROOM
            assert msg["id"] != "forged"
            assert before <= msg["ts"] <= int(time.time() * 1000)
            assert msg["client_id"] == "c-42"
        alice.send({"type": "ping", "id": 7})
        assert await alice.recv_type("pong") == {"type": "pong", "id": 7}


async def test_messages_from_one_sender_arrive_in_order() -> None:
    async with chat() as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        bob = open_(handshake(token_for("bob")))
        await bob.recv_type("ready")
        for i in range(30):
            alice.send({"type": "message", "body": i})
        got = [(await bob.recv_type("message"))["body"] for _ in range(30)]
        assert got == list(range(30))


async def test_kick_closes_every_tab_with_4403() -> None:
    manager = ConnectionManager()
    async with chat(manager) as open_:
        tabs = [open_(handshake(token_for("alice"))) for _ in range(2)]
        for tab in tabs:
            await tab.recv_type("ready")
        assert manager.close_user(UserId("alice")) == 2
        for tab in tabs:
            code, _ = await tab.t.wait_closed()
            assert code == 4403


async def test_per_user_cap_closes_4429() -> None:
    manager = ConnectionManager(max_connections_per_user=1)
    async with chat(manager) as open_:
        first = open_(handshake(token_for("alice")))
        await first.recv_type("ready")
        second = open_(handshake(token_for("alice")))
        code, reason = await second.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4429, "too_many_connections")
        assert first.t.closed is None


async def test_close_all_sends_going_away() -> None:
    manager = ConnectionManager()
    async with chat(manager) as open_:
        clients = [open_(handshake(token_for(u))) for u in ("a", "b")]
        for client in clients:
            await client.recv_type("ready")
        assert manager.close_all() == 2
        for client in clients:
            code, reason = await client.t.wait_closed()
            assert (code, reason.split(":")[0]) == (1001, "going_away")


async def test_dropped_frames_are_counted_in_stats_after_a_resync() -> None:
    manager = ConnectionManager(outbox_max_messages=2, overflow="drop_newest")
    conn = manager.connect(Principal(UserId("alice")), ROOM)  # queues its presence
    transport = FakeTransport()
    transport.gate = anyio.Event()
    async with writer(conn, transport):
        await stuck_on_first(conn, transport)
        took = [manager.broadcast_nowait(ROOM, frame(i)) for i in range(5)]
        assert took == [1, 1, 0, 0, 0]
        transport.gate.set()
        got = [json.loads(await transport.next_text()) for _ in range(4)]
        assert got[-1] == {
            "type": "resync",
            "chat_id": ROOM,
            "message": "3 messages were dropped",
        }
    manager.disconnect(conn)
    assert manager.stats().dropped == 3
