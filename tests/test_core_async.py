"""The core on asyncio and trio: the outbox writer and the endpoint on a fake socket."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from tests.support.common import SECRET, FakeTransport, frames_of
from wschat import (
    ChatHooks,
    ChatOptions,
    Connection,
    ConnectionManager,
    TokenVerifier,
    Veto,
)
from wschat.auth import Principal
from wschat.connection import (
    MAX_BATCH_FRAMES,
    MAX_CHUNK,
    ConnectionState,
    ConnectionStateError,
    OutboxLimits,
    WriterState,
    is_gone,
)
from wschat.endpoint import ChatEndpoint
from wschat.errors import NormalClosure, SlowConsumer
from wschat.ids import ChatId, ConnectionId, UserId
from wschat.protocol import JSON, encode_batch
from wschat.sweeper import WriterSweeper
from wschat.testing import mint_token
from wschat.transport import Handshake

pytestmark = pytest.mark.anyio

ROOM = ChatId("room-1")


def make_conn(
    *,
    max_messages: int = 1024,
    max_bytes: int = 4 * 1024 * 1024,
    overflow: Any = "close",
    batch: bool = False,
    sweeper: WriterSweeper | None = None,
) -> Connection:
    return Connection(
        ConnectionId("c-1"),
        Principal(UserId("alice")),
        ROOM,
        OutboxLimits(max_messages, max_bytes, overflow),
        batch=batch,
        sweeper=sweeper,
    )


def frame(n: int, pad: int = 0) -> str:
    return json.dumps({"type": "message", "n": n, "pad": "x" * pad})


@asynccontextmanager
async def writer(conn: Connection, transport: FakeTransport) -> AsyncIterator[None]:
    """Run ``conn.run_writer`` for the duration of the block, then stop it."""
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run_writer, transport)
            yield
            conn.abort(NormalClosure())
    transport.aclose_streams()


async def stuck_on_first(conn: Connection, transport: FakeTransport) -> None:
    """Wait until the writer holds the first frame inside a blocked send."""
    with anyio.fail_after(2):
        await transport.blocked.wait()
    assert conn.queued == 0


# -- Connection.run_writer ----------------------------------------------------------


async def test_writer_drains_in_order() -> None:
    conn, transport = make_conn(), FakeTransport()
    frames = [frame(i) for i in range(50)]
    for f in frames:
        assert conn.put_nowait(f)
    assert conn.queued == 50
    async with writer(conn, transport):
        for f in frames:
            assert await transport.next_text() == f
        late = frame(99)
        assert conn.put_nowait(late)
        assert await transport.next_text() == late
    assert transport.sent == [*frames, late]
    assert conn.sent == 51
    assert conn.queued == 0
    assert conn.queued_bytes == 0


async def test_writer_ends_when_aborted_after_draining() -> None:
    conn, transport = make_conn(), FakeTransport()
    for i in range(3):
        conn.put_nowait(frame(i))
    conn.abort(NormalClosure())
    assert not conn.put_nowait(frame(9))
    with anyio.fail_after(2):
        await conn.run_writer(transport)
    transport.aclose_streams()
    assert transport.sent == [frame(0), frame(1), frame(2)]


async def test_batch_mode_joins_queued_frames() -> None:
    conn, transport = make_conn(batch=True), FakeTransport()
    frames = [frame(i) for i in range(MAX_BATCH_FRAMES + 10)]
    for f in frames:
        conn.put_nowait(f)
    async with writer(conn, transport):
        alone = await transport.next_text()
        first = await transport.next_text()
        second = await transport.next_text()
        single = frame(1000)
        conn.put_nowait(single)
        # A frame that is alone in the outbox goes out as itself, not in a batch.
        assert await transport.next_text() == single
    # The connection's first frame (``ready`` when the endpoint serves it) always
    # goes alone; what queued behind it is batched.
    assert alone == frames[0]
    assert first == encode_batch(frames[1 : MAX_BATCH_FRAMES + 1])
    assert second == encode_batch(frames[MAX_BATCH_FRAMES + 1 :])
    assert json.loads(first)["frames"] == [json.loads(f) for f in frames[1:65]]
    assert conn.sent == len(frames) + 1


async def test_without_batch_every_frame_is_sent_alone() -> None:
    conn, transport = make_conn(batch=False), FakeTransport()
    for i in range(5):
        conn.put_nowait(frame(i))
    async with writer(conn, transport):
        for i in range(5):
            assert await transport.next_text() == frame(i)


async def test_queued_frames_leave_in_chunks_in_order() -> None:
    conn, transport = make_conn(), FakeTransport()
    frames = [frame(i) for i in range(MAX_CHUNK + 6)]
    for f in frames:
        assert conn.put_nowait(f)
    async with writer(conn, transport):
        got = [await transport.next_text() for _ in frames]
    assert got == frames
    # One send_many call per MAX_CHUNK frames, then the rest in one more.
    assert transport.chunks == [MAX_CHUNK, 6]
    assert conn.sent == len(frames)
    assert conn.queued_bytes == 0


async def test_a_chunk_stuck_in_a_send_still_counts_against_the_byte_cap() -> None:
    size = len(frame(0, pad=70))
    conn, transport = make_conn(max_bytes=size * 5), FakeTransport()
    transport.gate = anyio.Event()
    for i in range(3):
        assert conn.put_nowait(frame(i, pad=70))
    async with writer(conn, transport):
        await stuck_on_first(conn, transport)
        # The three frames left the queue in one chunk but are not sent yet: they
        # still hold their bytes, so only two more fit under the cap.
        assert transport.chunks == [3]
        assert conn.queued_bytes == 3 * size
        assert conn.put_nowait(frame(3, pad=70))
        assert conn.put_nowait(frame(4, pad=70))
        assert not conn.put_nowait(frame(5, pad=70))
        assert isinstance(conn.closing, SlowConsumer)
        transport.gate.set()


async def test_overflow_close_aborts_stuck_writer_with_slow_consumer() -> None:
    conn, transport = make_conn(max_messages=4), FakeTransport()
    transport.gate = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await conn.open(transport, tg)
            assert conn.put_nowait(frame(0))
            await stuck_on_first(conn, transport)
            for i in range(1, 5):
                assert conn.put_nowait(frame(i))
            assert conn.closing is None
            assert not tg.cancel_scope.cancel_called
            assert not conn.put_nowait(frame(5))
            assert isinstance(conn.closing, SlowConsumer)
            code = (conn.closing.close_code, conn.closing.code)
            assert code == (1013, "slow_consumer")
            assert conn.closing.reason.startswith("slow_consumer: outbox full")
            # abort() cancelled the task group serving the connection (the stuck
            # writer with it).
            assert tg.cancel_scope.cancel_called
            assert not conn.put_nowait(frame(6))
            conn.abort(NormalClosure())
    transport.aclose_streams()
    # The first reason wins: the later NormalClosure did not replace it.
    assert isinstance(conn.closing, SlowConsumer)


# -- writers that exist only while frames flow ----------------------------------------


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a condition no event announces (a writer retiring), bounded."""
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def test_open_sends_from_the_caller_and_leaves_no_outbox_behind() -> None:
    conn, transport = make_conn(), FakeTransport()
    conn.put_nowait(frame(0))  # the ready frame
    conn.put_nowait(frame(1))  # and the connection's own join
    assert conn.holds_outbox
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        # Sent from this task before open() returned: no writer task for them.
        assert transport.sent == [frame(0), frame(1)]
        assert not conn.writing
        # An idle connection holds no outbox until the next frame makes one.
        assert not conn.holds_outbox
        assert conn.put_nowait(frame(2))
        assert conn.writing  # once open, a frame starts a writer
        assert await transport.next_text() == frame(0)
        assert await transport.next_text() == frame(1)
        assert await transport.next_text() == frame(2)
        conn.abort(NormalClosure())
    transport.aclose_streams()
    assert conn.sent == 3


async def test_idle_writer_retires_and_the_next_frame_starts_one() -> None:
    sweeper = WriterSweeper(interval=0.01)
    conn = make_conn(sweeper=sweeper)
    transport = FakeTransport()
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        assert not conn.writing
        assert conn.put_nowait(frame(0))
        assert conn.writing
        assert await transport.next_text() == frame(0)
        # Nothing more to send: retired within two sweeps, the outbox stream closed.
        await wait_until(lambda: not conn.writing)
        assert len(sweeper) == 0
        assert conn.queued == 0
        # The next frame starts a writer again; order and counts hold across it.
        for i in range(1, 4):
            assert conn.put_nowait(frame(i))
        assert conn.writing
        for i in range(1, 4):
            assert await transport.next_text() == frame(i)
        await wait_until(lambda: not conn.writing)
        # The sweep task itself ends once no writer is left to watch.
        await wait_until(lambda: not sweeper.running)
        assert conn.sent == 4
        assert conn.queued_bytes == 0
        conn.abort(NormalClosure())
    assert not conn.put_nowait(frame(9))
    transport.aclose_streams()


async def test_sweeper_holds_no_connection_after_it_ends() -> None:
    sweeper = WriterSweeper(interval=0.01)
    conn, transport = make_conn(sweeper=sweeper), FakeTransport()
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        tg.cancel_scope.cancel()
        # A writer started as the connection's task group is being cancelled.
        assert conn.put_nowait(frame(0))
        assert len(sweeper) == 1
    conn.release()
    assert conn.state is ConnectionState.RELEASED
    assert len(sweeper) == 0
    assert not conn.writing
    assert not conn.put_nowait(frame(1))
    assert not conn.holds_outbox
    transport.aclose_streams()


async def test_deferred_frame_waits_for_the_sweep_and_its_writer_does_not_linger() -> (
    None
):
    sweeper = WriterSweeper(interval=0.05)
    conn, transport = make_conn(sweeper=sweeper), FakeTransport()
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        # presence for an idle client: no writer now, one at the next sweep
        for i in range(3):
            assert conn.put_nowait(frame(i), defer=True)
        assert not conn.writing
        assert sweeper.running
        with anyio.fail_after(1):
            for i in range(3):
                assert await transport.next_text() == frame(i)
        # The writer the sweep started sent the three frames in one run and ended
        # without waiting a sweep interval for more.
        await wait_until(lambda: not conn.writing)
        assert conn.sent == 3
        assert conn.queued_bytes == 0
        assert not conn.holds_outbox  # and left no outbox behind
        conn.abort(NormalClosure())
    transport.aclose_streams()


async def test_urgent_frame_sends_deferred_ones_first_in_order() -> None:
    sweeper = WriterSweeper(interval=60)  # the sweep never comes in this test
    conn, transport = make_conn(sweeper=sweeper), FakeTransport()
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        assert conn.put_nowait(frame(0), defer=True)
        assert conn.put_nowait(frame(1), defer=True)
        assert not conn.writing
        assert conn.put_nowait(frame(2))  # a chat message: a writer starts now
        with anyio.fail_after(1):
            for i in range(3):
                assert await transport.next_text() == frame(i)
        # While that writer waits for more, a deferred frame waits for the sweep...
        await wait_until(lambda: conn.writer_state is WriterState.WAITING)
        assert conn.put_nowait(frame(3), defer=True)
        await anyio.sleep(0.02)
        assert transport.sent == [frame(i) for i in range(3)]
        # ...unless an urgent one comes first: both go, in order.
        assert conn.put_nowait(frame(4))
        with anyio.fail_after(1):
            assert await transport.next_text() == frame(3)
            assert await transport.next_text() == frame(4)
        conn.abort(NormalClosure())
        tg.cancel_scope.cancel()  # and the sweep, asleep for a minute
    transport.aclose_streams()


async def test_deferred_frame_to_a_waiting_writer_goes_at_the_sweep() -> None:
    sweeper = WriterSweeper(interval=0.05)
    conn, transport = make_conn(sweeper=sweeper), FakeTransport()
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        assert conn.put_nowait(frame(0))
        with anyio.fail_after(1):
            assert await transport.next_text() == frame(0)
        await wait_until(lambda: conn.writer_state is WriterState.WAITING)
        assert conn.put_nowait(frame(1), defer=True)
        with anyio.fail_after(1):
            assert await transport.next_text() == frame(1)
        conn.abort(NormalClosure())
    transport.aclose_streams()


async def test_sweep_moves_on_when_the_connection_hosting_it_ends() -> None:
    sweeper = WriterSweeper(interval=0.02)
    host, host_transport = make_conn(sweeper=sweeper), FakeTransport()
    other, other_transport = make_conn(sweeper=sweeper), FakeTransport()
    async with anyio.create_task_group() as outer:
        other_group = anyio.CancelScope()

        async def serve_other() -> None:
            with other_group:
                async with anyio.create_task_group() as tg:
                    await other.open(other_transport, tg)
                    await anyio.sleep_forever()

        outer.start_soon(serve_other)
        await wait_until(lambda: other.spawn is not None)
        async with anyio.create_task_group() as tg:
            await host.open(host_transport, tg)
            # The host's frame starts the sweep in the host's task group...
            assert host.put_nowait(frame(0), defer=True)
            assert sweeper.running
            # ...and the other connection's presence is left for that sweep.
            assert other.put_nowait(frame(1), defer=True)
            host.abort(NormalClosure())
            tg.cancel_scope.cancel()
        host.release()
        # The host ended before the sweep came: the sweep goes on in the other
        # connection's task group and still delivers its frame.
        with anyio.fail_after(1):
            assert await other_transport.next_text() == frame(1)
        other.abort(NormalClosure())
        other_group.cancel()
    host_transport.aclose_streams()
    other_transport.aclose_streams()


async def test_busy_writer_is_not_retired() -> None:
    sweeper = WriterSweeper(interval=0.005)
    conn = make_conn(sweeper=sweeper)
    transport = FakeTransport()
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        # A frame every sweep interval or faster: the writer keeps running, so
        # no frame waits for a new task.
        for i in range(40):
            assert conn.put_nowait(frame(i))
            assert await transport.next_text() == frame(i)
            assert conn.writing
            await anyio.sleep(0.001)
        conn.abort(NormalClosure())
    transport.aclose_streams()


# -- the connection's lifecycle: NEW -> OPEN -> RELEASED, nothing out of order ---------


def state_of(conn: Connection) -> ConnectionState:
    return conn.state  # read afresh: mypy would keep an earlier assert's narrowing


async def test_lifecycle_moves_forward_only() -> None:
    conn, transport = make_conn(), FakeTransport()
    assert state_of(conn) is ConnectionState.NEW
    assert conn.writer_state is WriterState.IDLE
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        assert state_of(conn) is ConnectionState.OPEN
        with pytest.raises(
            ConnectionStateError,
            match=r"connection c-1: cannot open in state OPEN; open is allowed "
            r"once, on a NEW connection",
        ):
            await conn.open(transport, tg)
        # A served connection runs its own writers: a second one is refused.
        with pytest.raises(
            ConnectionStateError, match="cannot run_writer in state OPEN"
        ):
            conn.run_writer(transport).close()
        conn.abort(NormalClosure())
    conn.release()
    assert state_of(conn) is ConnectionState.RELEASED
    with pytest.raises(ConnectionStateError, match="cannot release in state RELEASED"):
        conn.release()
    async with anyio.create_task_group() as tg:
        with pytest.raises(ConnectionStateError, match="cannot open in state RELEASED"):
            await conn.open(transport, tg)
    with pytest.raises(
        ConnectionStateError, match="cannot run_writer in state RELEASED"
    ):
        conn.run_writer(transport).close()
    transport.aclose_streams()


async def test_a_connection_never_served_can_be_released() -> None:
    conn = make_conn()
    assert conn.put_nowait(frame(0))
    conn.release()
    assert conn.state is ConnectionState.RELEASED
    assert conn.queued == 0
    assert not conn.holds_outbox
    assert not conn.put_nowait(frame(1))
    assert not conn.holds_outbox


async def test_one_writer_at_most() -> None:
    conn, transport = make_conn(), FakeTransport()
    async with anyio.create_task_group() as tg:
        tg.start_soon(conn.run_writer, transport)
        await wait_until(lambda: conn.writer_state is WriterState.WAITING)
        with pytest.raises(
            ConnectionStateError, match=r"a writer is running already .*WAITING"
        ):
            conn.run_writer(transport).close()
        with pytest.raises(ConnectionStateError, match="cannot open while a writer"):
            await conn.open(transport, tg)
        assert conn.state is ConnectionState.NEW
        assert conn.put_nowait(frame(0))
        assert await transport.next_text() == frame(0)
        conn.abort(NormalClosure())
    transport.aclose_streams()
    assert conn.writer_state is WriterState.IDLE


async def test_byte_cap_is_enforced() -> None:
    conn, transport = make_conn(max_bytes=300), FakeTransport()
    transport.gate = anyio.Event()
    async with writer(conn, transport):
        assert conn.put_nowait(frame(0, pad=70))
        await stuck_on_first(conn, transport)
        sizes = len(frame(1, pad=70))
        taken = 0
        while conn.put_nowait(frame(taken + 1, pad=70)):
            taken += 1
        assert taken == 300 // sizes
        assert conn.queued_bytes <= 300
        assert isinstance(conn.closing, SlowConsumer)
        transport.gate.set()


async def test_drop_newest_then_resync() -> None:
    conn, transport = make_conn(max_messages=3, overflow="drop_newest"), FakeTransport()
    transport.gate = anyio.Event()
    async with writer(conn, transport):
        conn.put_nowait(frame(0))
        await stuck_on_first(conn, transport)
        assert [conn.put_nowait(frame(i)) for i in range(1, 6)] == [
            True,
            True,
            True,
            False,
            False,
        ]
        assert conn.closing is None
        assert conn.dropped == 2
        transport.gate.set()
        got = [await transport.next_text() for _ in range(5)]
    assert got[:4] == [frame(i) for i in range(4)]
    resync = json.loads(got[4])
    assert resync == {
        "type": "resync",
        "chat_id": ROOM,
        "message": "2 messages were dropped",
    }
    assert conn.dropped == 0


async def test_drop_oldest_then_resync() -> None:
    conn, transport = make_conn(max_messages=3, overflow="drop_oldest"), FakeTransport()
    transport.gate = anyio.Event()
    async with writer(conn, transport):
        conn.put_nowait(frame(0))
        await stuck_on_first(conn, transport)
        assert all(conn.put_nowait(frame(i)) for i in range(1, 6))
        assert conn.queued == 3
        assert conn.dropped == 2
        transport.gate.set()
        got = [await transport.next_text() for _ in range(5)]
    assert got[:4] == [frame(0), frame(3), frame(4), frame(5)]
    assert json.loads(got[4])["type"] == "resync"
    assert "2 messages" in json.loads(got[4])["message"]


async def test_drop_oldest_byte_cap_and_oversized_frame() -> None:
    conn = make_conn(max_messages=100, max_bytes=200, overflow="drop_oldest")
    for i in range(3):
        assert conn.put_nowait(frame(i, pad=30))
    assert conn.put_nowait(frame(3, pad=100))  # evicts from the front until it fits
    assert conn.queued_bytes <= 200
    # A frame bigger than the whole cap is dropped, without emptying the outbox.
    before = conn.queued
    assert not conn.put_nowait(frame(4, pad=500))
    assert conn.queued == before
    kept = []
    while True:
        try:
            kept.append(json.loads(conn.receive_nowait())["n"])
        except anyio.WouldBlock:
            break
    assert kept[-1] == 3
    assert kept == sorted(kept)
    assert conn.queued_bytes == 0


async def test_writer_whose_transport_is_gone_ends_quietly() -> None:
    conn, transport = make_conn(), FakeTransport()
    transport.gone = True
    conn.put_nowait(frame(0))
    conn.put_nowait(frame(1))
    with anyio.fail_after(2):
        await conn.run_writer(transport)  # no exception
    transport.aclose_streams()
    assert is_gone(conn.closing)
    assert transport.sent == []
    assert not conn.put_nowait(frame(2))


# -- ChatEndpoint.serve with a fake socket -------------------------------------------


def handshake(
    token: str | None = None,
    *,
    chat_id: str = ROOM,
    origin: str | None = None,
    subprotocols: tuple[str, ...] = ("wschat.v1",),
) -> Handshake:
    headers = {"host": "chat.example"}
    if origin is not None:
        headers["origin"] = origin
    query = f"token={token}".encode() if token is not None else b""
    return Handshake(chat_id, query, headers, list(subprotocols), "ws", "1.2.3.4:5")


def token_for(user: str) -> str:
    return mint_token(SECRET, user, ttl=600)


class Client:
    """One fake socket served by the endpoint in the test's task group."""

    def __init__(self, transport: FakeTransport) -> None:
        self.t = transport

    def send(self, data: JSON) -> None:
        self.t.feed(json.dumps(data))

    async def recv(self) -> dict[str, Any]:
        return await self.t.next_frame()

    async def recv_type(self, kind: str) -> dict[str, Any]:
        """The next frame of ``kind``, skipping presence frames."""
        while True:
            data = await self.recv()
            if data["type"] != "presence" or kind == "presence":
                assert data["type"] == kind, data
                return data


@asynccontextmanager
async def chat(
    manager: ConnectionManager | None = None,
    verifier: TokenVerifier | None = None,
    **options: Any,
) -> AsyncIterator[Callable[..., Any]]:
    """Yield ``open(handshake) -> Client`` that serves each socket in a task."""
    manager = manager if manager is not None else ConnectionManager()
    verifier = (
        verifier
        if verifier is not None
        else TokenVerifier(SECRET, algorithms=["HS256"])
    )
    endpoint = ChatEndpoint(manager, verifier, ChatOptions(**options))
    transports: list[FakeTransport] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            def open_(hs: Handshake) -> Client:
                transport = FakeTransport()
                transports.append(transport)
                tg.start_soon(endpoint.serve, hs, transport)
                return Client(transport)

            yield open_
            for transport in transports:
                transport.hang_up()
    for transport in transports:
        transport.aclose_streams()
    assert len(manager) == 0, "a connection outlived its socket"
    assert len(manager.registry) == 0


async def test_idle_connections_have_no_writer_and_a_message_wakes_them() -> None:
    # The default sweep interval: docs/options.md promises writers are gone soon.
    manager = ConnectionManager()
    async with chat(manager) as open_:
        clients = [open_(handshake(token_for(f"u{i}"))) for i in range(5)]
        for client in clients:
            await client.recv_type("ready")
        await wait_until(lambda: len(manager) == 5 and not manager.stats().writers)
        # A message restarts every member's writer, and each gets it once.
        clients[0].send({"type": "message", "body": {"text": "hi"}})
        for client in clients:
            assert (await client.recv_type("message"))["body"] == {"text": "hi"}
        assert manager.stats().deliveries >= 5
        await wait_until(lambda: not manager.stats().writers)


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
        assert (join["type"], join["event"], join["user"]) == (
            "presence",
            "join",
            "alice",
        )
        bob = open_(handshake(token_for("bob")))
        ready_b = await bob.recv()
        assert ready_b["type"] == "ready"
        assert ready_b["members"] == ["alice", "bob"]
        assert (await alice.recv())["user"] == "bob"
        bob.t.hang_up()
        leave = await alice.recv()
        assert (leave["event"], leave["user"], leave["count"]) == ("leave", "bob", 1)


async def test_own_join_comes_only_to_a_users_first_connection_in_the_room() -> None:
    # docs/protocol.md: the first connection gets its own join right after ready; a
    # later one of the same user gets none and finds itself in ready.members.
    async with chat() as open_:
        first = open_(handshake(token_for("alice")))
        assert (await first.recv())["type"] == "ready"
        own = await first.recv()
        assert (own["type"], own["event"], own["user"], own["count"]) == (
            "presence",
            "join",
            "alice",
            1,
        )
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


async def test_bad_json_gives_error_frame_then_4400_after_a_burst() -> None:
    async with chat(malformed_limit=3) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        alice.t.feed("this is not json")
        err = await alice.recv_type("error")
        assert err["code"] == "bad_json"
        alice.t.feed('{"type": "shout"}')
        assert (await alice.recv_type("error"))["code"] == "unknown_type"
        alice.t.feed("[]")
        assert (await alice.recv_type("error"))["code"] == "bad_frame"
        alice.t.feed("{")
        code, reason = await alice.t.wait_closed()
        assert code == 4400
        assert reason.startswith("bad_request")


async def test_binary_frame_closes_1003() -> None:
    async with chat() as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        alice.t.feed(b'{"type": "ping"}')
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1003, "text_only")


async def test_too_big_closes_1009() -> None:
    async with chat(max_message_bytes=100) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        alice.send({"type": "message", "body": "x" * 80})  # 110 bytes
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1009, "message_too_big")
        assert "100" in reason


async def test_too_big_counts_utf8_bytes() -> None:
    async with chat(max_message_bytes=100) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        alice.t.feed('{"type":"message","body":"' + "é" * 40 + '"}')  # 107 bytes
        code, _ = await alice.t.wait_closed()
        assert code == 1009


async def test_rate_limit_closes_4429() -> None:
    async with chat(rate_limit=1, rate_burst=3) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        for _ in range(6):
            alice.send({"type": "ping"})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4429, "rate_limited")
        pongs = [json.loads(f) for f in alice.t.sent if '"pong"' in f]
        assert len(pongs) <= 3


class VetoHooks(ChatHooks):
    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        if body == "spam":
            raise Veto("no spam here", code="spam")
        return {"wrapped": body}


async def test_hook_veto_gives_error_frame_and_keeps_connection() -> None:
    async with chat(hooks=VetoHooks()) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        bob = open_(handshake(token_for("bob")))
        await bob.recv_type("ready")
        alice.send({"type": "message", "body": "spam"})
        err = await alice.recv_type("error")
        assert err == {"type": "error", "code": "spam", "message": "no spam here"}
        alice.send({"type": "message", "body": "hello"})
        assert (await alice.recv_type("message"))["body"] == {"wrapped": "hello"}
        # Bob never saw the vetoed message: the first message he gets is the second.
        assert (await bob.recv_type("message"))["body"] == {"wrapped": "hello"}
        assert alice.t.closed is None


class BrokenHooks(ChatHooks):
    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        raise RuntimeError("database password is hunter2")


async def test_hook_raising_closes_1011_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wschat")
    async with chat(hooks=BrokenHooks()) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        bob = open_(handshake(token_for("bob")))
        await bob.recv_type("ready")
        alice.send({"type": "message", "body": "hi"})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1011, "internal_error")
        assert "hunter2" not in reason
        # Bob is unaffected.
        bob.send({"type": "ping"})
        assert (await bob.recv_type("pong"))["type"] == "pong"
    logged = [
        r for r in caplog.records if r.exc_info and "hunter2" in str(r.exc_info[1])
    ]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR


async def test_authorize_false_closes_4403_after_accept() -> None:
    def only_bob(principal: Principal, chat_id: ChatId) -> bool:
        return principal.user_id == "bob"

    async with chat(authorize=only_bob) as open_:
        alice = open_(handshake(token_for("alice")))
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4403, "forbidden")
        assert alice.t.accepted == ["wschat.v1"]  # accepted so the browser can read it
        assert alice.t.sent == []
        bob = open_(handshake(token_for("bob")))
        assert (await bob.recv())["type"] == "ready"


async def test_async_authorize_is_awaited() -> None:
    async def nobody(principal: Principal, chat_id: ChatId) -> bool:
        await checkpoint()
        return False

    async with chat(authorize=nobody) as open_:
        alice = open_(handshake(token_for("alice")))
        assert (await alice.t.wait_closed())[0] == 4403


async def test_literal_test_token_closes_4401_token_malformed() -> None:
    async with chat() as open_:
        client = open_(handshake("test"))
        code, reason = await client.t.wait_closed()
        assert code == 4401
        assert reason.startswith("token_malformed: not a JWT")
        assert client.t.accepted == ["wschat.v1"]


async def test_missing_token_closes_4401_token_missing() -> None:
    async with chat() as open_:
        client = open_(handshake(None))
        code, reason = await client.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_missing")


async def test_http_denials_option() -> None:
    async with chat(http_denials=True) as open_:
        client = open_(handshake("test"))
        with anyio.fail_after(2):
            await client.t.ended.wait()
        assert client.t.denied is not None
        assert client.t.denied[0] == 401
        assert client.t.accepted == []


async def test_refused_origin_is_a_bare_403_before_accept() -> None:
    async with chat(allowed_origins=["https://app.example"]) as open_:
        client = open_(handshake(token_for("alice"), origin="https://evil.example"))
        with anyio.fail_after(2):
            await client.t.ended.wait()
        assert client.t.denied == (403, None)
        assert client.t.accepted == []
        ok = open_(handshake(token_for("alice"), origin="https://app.example"))
        assert (await ok.recv())["type"] == "ready"


async def test_invalid_chat_id_closes_4400() -> None:
    async with chat() as open_:
        client = open_(handshake(token_for("alice"), chat_id="../etc"))
        code, reason = await client.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4400, "invalid_chat_id")


async def test_first_message_auth() -> None:
    async with chat(first_message_auth=True, auth_timeout=2) as open_:
        alice = open_(handshake(None))
        alice.send({"type": "auth", "token": token_for("alice")})
        ready = await alice.recv()
        assert (ready["type"], ready["user"]) == ("ready", "alice")
        alice.send({"type": "message", "body": "x"})
        assert (await alice.recv_type("message"))["user"] == "alice"


async def test_first_message_auth_timeout_closes_4408() -> None:
    async with chat(first_message_auth=True, auth_timeout=0.1) as open_:
        alice = open_(handshake(None))
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4408, "auth_timeout")
        assert alice.t.accepted == ["wschat.v1"]


async def test_first_message_auth_wrong_first_frame() -> None:
    async with chat(first_message_auth=True, auth_timeout=2) as open_:
        alice = open_(handshake(None))
        alice.send({"type": "message", "body": "hi"})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_missing")
        bob = open_(handshake(None))
        bob.send({"type": "auth", "token": "test"})
        code, reason = await bob.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_malformed")


async def test_token_refresh_must_keep_the_same_sub() -> None:
    async with chat() as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        alice.send({"type": "auth", "token": token_for("alice")})
        ok = await alice.recv_type("auth")
        assert ok["ok"] is True
        alice.send({"type": "auth", "token": token_for("mallory")})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_invalid")


async def test_slow_consumer_is_closed_1013_and_others_unaffected() -> None:
    manager = ConnectionManager(outbox_max_messages=8)
    async with chat(manager, close_timeout=0.5) as open_:
        slow = open_(handshake(token_for("slow")))
        await slow.recv_type("ready")
        await slow.recv_type("presence")
        slow.t.gate = anyio.Event()  # stops reading
        fast = open_(handshake(token_for("fast")))
        await fast.recv_type("ready")
        for i in range(20):
            fast.send({"type": "message", "body": i})
        got = [(await fast.recv_type("message"))["body"] for _ in range(20)]
        assert got == list(range(20))
        code, reason = await slow.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1013, "slow_consumer")
        # If it does not take the close frame, the connection goes close_timeout
        # later (the transport does it; docs/close-codes.md).
        assert slow.t.drops == [0.5]
        slow.t.gate.set()
    assert manager.stats().slow_consumers == 1
    assert fast.t.drops == []  # it hung up itself: nothing to drop


async def test_every_close_by_the_server_arms_the_drop() -> None:
    async with chat(close_timeout=2.5) as open_:
        kicked = open_(handshake(token_for("a")))
        gone = open_(handshake(token_for("b")))
        for client in (kicked, gone):
            await client.recv_type("ready")
        gone.t.hang_up()
        kicked.send({"type": "message", "body": "x" * (64 * 1024)})
        assert (await kicked.t.wait_closed())[0] == 1009
    assert kicked.t.drops == [2.5]
    assert gone.t.drops == []


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


async def test_deeply_nested_body_gets_an_error_frame_not_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wschat")
    depths = [65, 300, 900, *range(950, 1000, 5), 5000]
    async with chat(rate_limit=None, malformed_limit=100) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        for depth in depths:
            alice.t.feed('{"type":"message","body":' + "[" * depth + "]" * depth + "}")
            err = await alice.recv_type("error")
            assert err["code"] == "bad_frame", depth
        alice.send({"type": "message", "body": [[["fine"]]]})
        assert (await alice.recv_type("message"))["body"] == [[["fine"]]]
        assert alice.t.closed is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_first_message_auth_frame_over_the_size_limit_closes_1009() -> None:
    async with chat(first_message_auth=True, max_message_bytes=1024) as open_:
        alice = open_(handshake(None))
        alice.send({"type": "auth", "token": token_for("alice"), "pad": "x" * 2000})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1009, "message_too_big")


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


async def test_batch_opt_in_through_the_endpoint() -> None:
    async with chat() as open_:
        alice = open_(
            handshake(token_for("alice"), subprotocols=("wschat.v1", "wschat.batch"))
        )
        # ready and the presence frame queued together, but ready is never in a
        # batch: a client that looks for it among frames must find it alone.
        first = json.loads(await alice.t.next_text())
        assert first["type"] == "ready"
        assert first["batch"] is True
        assert [f["type"] for f in frames_of(await alice.t.next_text())] == ["presence"]
        # The server selects wschat.v1, never the opt-in marker.
        assert alice.t.accepted == ["wschat.v1"]
        alice.send({"type": "message", "body": 1})
        assert frames_of(await alice.t.next_text())[0]["body"] == 1


async def test_token_in_bearer_subprotocol_through_the_endpoint() -> None:
    token = token_for("alice")
    async with chat() as open_:
        alice = open_(handshake(None, subprotocols=("wschat.v1", f"bearer.{token}")))
        assert (await alice.recv())["user"] == "alice"
        assert alice.t.accepted == ["wschat.v1"]
        # Given twice (query and subprotocol): refused, and the token is not echoed.
        both = open_(handshake(token, subprotocols=("wschat.v1", f"bearer.{token}")))
        code, reason = await both.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_malformed")
        assert both.t.accepted == ["wschat.v1"]
        assert token not in reason


class ExpiredVerifier:
    """A custom verifier whose principal expired while connected."""

    def verify(self, token: str) -> Principal:
        return Principal(UserId("alice"), expires_at=int(time.time()) - 60)


async def test_message_after_token_expiry_closes_4401_token_expired() -> None:
    verifier: Any = ExpiredVerifier()
    async with chat(verifier=verifier) as open_:
        alice = open_(handshake("anything"))
        await alice.recv_type("ready")
        alice.send({"type": "ping"})
        assert (await alice.recv_type("pong"))["type"] == "pong"
        alice.send({"type": "message", "body": "late"})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_expired")
        assert not any('"late"' in f for f in alice.t.sent)


async def test_authorize_raising_closes_1011_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(principal: Principal, chat_id: ChatId) -> bool:
        raise KeyError("secret-db-row")

    caplog.set_level(logging.WARNING, logger="wschat")
    async with chat(authorize=broken) as open_:
        alice = open_(handshake(token_for("alice")))
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1011, "internal_error")
        assert "secret-db-row" not in reason
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1


class JoinFails(ChatHooks):
    async def on_join(self, conn: Connection) -> None:
        raise RuntimeError("boom")


async def test_on_join_raising_closes_1011() -> None:
    manager = ConnectionManager()
    async with chat(manager, hooks=JoinFails()) as open_:
        alice = open_(handshake(token_for("alice")))
        code, _ = await alice.t.wait_closed()
        assert code == 1011


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


async def test_first_message_auth_client_leaves_before_auth() -> None:
    async with chat(first_message_auth=True, auth_timeout=2) as open_:
        alice = open_(handshake(None))
        alice.t.hang_up()
        # Returns quietly; chat() checks that nothing was registered or leaked.
    assert alice.t.closed is None
    assert alice.t.sent == []


async def test_open_after_abort_stops_at_once() -> None:
    conn, transport = make_conn(), FakeTransport()
    conn.abort(SlowConsumer())
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            await conn.open(transport, tg)
            await anyio.sleep_forever()  # cancelled by open(): the client is leaving
    transport.aclose_streams()
    assert tg.cancel_scope.cancel_called
    assert isinstance(conn.closing, SlowConsumer)


async def test_tokens_never_reach_the_log_or_the_close_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    now = int(time.time())
    tokens = [
        mint_token(SECRET, "alice", ttl=-3600, now=now),  # expired
        mint_token("another-secret-" + "q" * 40, "alice"),  # wrong key
        mint_token(SECRET, "alice") + "tampered",
        mint_token(SECRET, "bob"),  # accepted
    ]
    async with chat(authorize=lambda p, c: p.user_id == "bob") as open_:
        clients = [open_(handshake(t)) for t in tokens[:3]]
        for client in clients:
            code, _ = await client.t.wait_closed()
            assert code == 4401
        bob = open_(handshake(tokens[3]))
        await bob.recv_type("ready")
        bob.send({"type": "auth", "token": tokens[0]})  # refresh with an expired one
        code, _ = await bob.t.wait_closed()
        assert code == 4401
    texts = [r.getMessage() for r in caplog.records]
    texts += [logging.Formatter().format(r) for r in caplog.records]
    texts += [c for client in [*clients, bob] for c in client.t.sent]
    texts += [str(client.t.closed) for client in [*clients, bob]]
    assert len(caplog.records) >= 3
    for token in tokens:
        for part in (token, token.split(".")[2]):
            assert not any(part in text for text in texts), part
