"""Connection on asyncio and trio: the outbox writer, writers that exist only while
frames flow (the sweeper), the lifecycle, the outbox caps and overflow policies, and a
slow consumer closed with 1013 while the others go on."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from tests.support.common import FakeTransport
from tests.support.core import (
    ROOM,
    chat,
    frame,
    handshake,
    make_conn,
    stuck_on_first,
    token_for,
    wait_until,
    writer,
)
from wschat import Connection, ConnectionManager
from wschat.connection import (
    MAX_BATCH_FRAMES,
    MAX_CHUNK,
    ConnectionState,
    ConnectionStateError,
    WriterState,
    is_gone,
)
from wschat.errors import NormalClosure, SlowConsumer, TokenExpired, TransportClosed
from wschat.protocol import encode_batch
from wschat.sweeper import KICKS_PER_STEP, WriterSweeper

pytestmark = pytest.mark.anyio


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


async def test_a_call_asked_within_runs_early_and_sends_deferred_frames() -> None:
    sweeper = WriterSweeper(interval=60)  # no whole sweep comes in this test
    conn, transport = make_conn(sweeper=sweeper), FakeTransport()
    calls: list[str] = []
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        # A writer that sent its frame and waits: only a whole sweep retires it.
        assert conn.put_nowait(frame(0))
        assert await transport.next_text() == frame(0)
        await wait_until(lambda: conn.writer_state is WriterState.WAITING)
        assert conn.call_at_sweep(lambda: calls.append("late"))
        await anyio.sleep(0.05)
        assert calls == []  # without within: at the next whole sweep

        def early() -> None:
            calls.append("early")
            conn.put_nowait(frame(1), defer=True)

        assert conn.call_at_sweep(early, within=0.01)
        with anyio.fail_after(1):
            await wait_until(lambda: "early" in calls)
            assert await transport.next_text() == frame(1)
        assert calls == ["late", "early"]  # every call left runs at the early wake
        assert conn.writer_state is WriterState.WAITING  # not retired early
        conn.abort(NormalClosure())
    transport.aclose_streams()


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        (NormalClosure(), 3),  # a close the server decided on: sent first
        (SlowConsumer("outbox full"), 0),  # what it could not take: not again
        (TransportClosed(), 0),  # gone
        (TokenExpired("expired"), 0),  # nothing more after the token ends
    ],
)
async def test_send_remaining_sends_what_a_close_left_unless_there_is_no_point(
    error: Any, sent: int
) -> None:
    sweeper = WriterSweeper(interval=60)
    conn, transport = make_conn(sweeper=sweeper), FakeTransport()
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        for i in range(3):
            assert conn.put_nowait(frame(i))
        conn.abort(error)  # cancels the writer before it ran
    await conn.send_remaining(transport)
    assert conn.sent == sent
    assert [await transport.next_text() for _ in range(sent)] == [
        frame(i) for i in range(sent)
    ]
    conn.release()
    await conn.send_remaining(transport)  # released: nothing, no error
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


class Kicked:
    """A connection to the sweeper (``Swept``) that logs each kick."""

    closing = None

    def __init__(self, log: list[str], spawn: Any, starts: bool = True) -> None:
        self.log = log
        self.spawn = spawn
        self.starts = starts

    def kick_deferred(self) -> bool:
        self.log.append("kick")
        return self.starts

    def sweep(self) -> None:
        pass


async def kick_runs(n: int, *, starts: bool) -> list[str]:
    """Defer ``n`` Kicked members to a sweep while a ticker task runs beside it:
    the runs of kicks with no tick between them (what one sweep step kicked)."""
    log: list[str] = []
    sweeper = WriterSweeper(interval=0.01)
    async with anyio.create_task_group() as tg:
        members = [Kicked(log, tg.start_soon, starts) for _ in range(n)]
        for member in members:
            sweeper.defer(member)
        done = anyio.Event()

        async def ticker() -> None:
            while not done.is_set():
                log.append("tick")
                await anyio.lowlevel.checkpoint()

        tg.start_soon(ticker)
        await wait_until(lambda: log.count("kick") == len(members))
        done.set()
    runs = "".join("k" if entry == "kick" else " " for entry in log).split()
    return runs


async def test_a_sweep_lets_its_writers_run_every_64_kicks(anyio_backend: str) -> None:
    # A count-only presence frame to every member of a big room: the writers the
    # sweep starts must get to run (send, end) between steps, not all be alive at
    # once (the GC would carry them into its oldest generation: docs in sweeper.py).
    assert KICKS_PER_STEP == 64
    runs = await kick_runs(3 * 64 + 2, starts=True)
    if anyio_backend == "asyncio":
        assert [len(run) for run in runs] == [64, 64, 64, 2]
    else:
        # trio runs the tasks of a round in random order: the ticker may run just
        # before the sweep in one round and just after it in the next.
        assert sum(map(len, runs)) == 3 * 64 + 2
        assert max(map(len, runs)) <= 2 * 64


class AtOnceTransport(FakeTransport):
    """A transport with ``try_send_text``: takes ``takes`` frames at once (None:
    every one), then says it would wait (False: nothing sent)."""

    def __init__(self, takes: int | None = None) -> None:
        super().__init__()
        self.takes = takes
        self.at_once: list[str] = []

    def try_send_text(self, text: str) -> bool:
        from wschat.transport import TransportClosed

        if self.gone:
            raise TransportClosed()
        if self.takes is not None and len(self.at_once) >= self.takes:
            return False
        self.at_once.append(text)
        self.sent.append(text)
        self._out_send.send_nowait(text)
        return True


async def open_idle(conn: Connection, transport: FakeTransport, tg: Any) -> None:
    """Open ``conn`` and let its ``ready`` go, so that its writer is idle."""
    assert conn.put_nowait(frame(0))
    await conn.open(transport, tg)
    assert await transport.next_text() == frame(0)
    await wait_until(lambda: not conn.writing)


async def test_presence_to_an_idle_client_goes_from_the_sweep_without_a_writer() -> (
    None
):
    sweeper = WriterSweeper(interval=0.02)
    conn, transport = make_conn(sweeper=sweeper), AtOnceTransport()
    async with anyio.create_task_group() as tg:
        await open_idle(conn, transport, tg)
        started = len(sweeper)
        for i in range(1, 4):
            assert conn.put_nowait(frame(i), defer=True)
        with anyio.fail_after(1):
            for i in range(1, 4):
                assert await transport.next_text() == frame(i)
        # Sent by the sweep itself: no writer task was started for them.
        assert transport.at_once == [frame(i) for i in range(1, 4)]
        assert not conn.writing
        assert len(sweeper) == started == 0
        assert (conn.sent, conn.queued, conn.queued_bytes) == (4, 0, 0)
        assert not conn.holds_outbox
        conn.abort(NormalClosure())
    transport.aclose_streams()


async def test_a_send_that_would_wait_leaves_the_rest_to_a_writer_in_order() -> None:
    sweeper = WriterSweeper(interval=0.02)
    conn, transport = make_conn(sweeper=sweeper), AtOnceTransport(takes=2)
    async with anyio.create_task_group() as tg:
        await open_idle(conn, transport, tg)
        for i in range(1, 6):
            assert conn.put_nowait(frame(i), defer=True)
        with anyio.fail_after(1):
            for i in range(1, 6):
                assert await transport.next_text() == frame(i)
        assert transport.at_once == [frame(1), frame(2)]
        assert transport.sent == [frame(i) for i in range(6)]  # each frame once
        await wait_until(lambda: not conn.writing)
        assert (conn.sent, conn.queued_bytes) == (6, 0)
        conn.abort(NormalClosure())
    transport.aclose_streams()


async def test_a_peer_gone_during_a_send_at_once_ends_the_connection() -> None:
    sweeper = WriterSweeper(interval=0.02)
    conn, transport = make_conn(sweeper=sweeper), AtOnceTransport()
    async with anyio.create_task_group() as tg:
        await open_idle(conn, transport, tg)
        transport.gone = True
        assert conn.put_nowait(frame(1), defer=True)
        await wait_until(lambda: conn.closing is not None)
        assert is_gone(conn.closing)
        assert not conn.writing
    transport.aclose_streams()


async def test_a_batch_client_gets_its_presence_from_a_writer() -> None:
    # Frames queued together go as one batch frame: the writer's job, not the sweep's.
    sweeper = WriterSweeper(interval=0.02)
    conn = make_conn(sweeper=sweeper, batch=True)
    transport = AtOnceTransport()
    async with anyio.create_task_group() as tg:
        await open_idle(conn, transport, tg)
        for i in range(1, 4):
            assert conn.put_nowait(frame(i), defer=True)
        with anyio.fail_after(1):
            assert await transport.next_text() == encode_batch(
                [frame(i) for i in range(1, 4)]
            )
        assert transport.at_once == []
        conn.abort(NormalClosure())
    transport.aclose_streams()


async def test_kicks_that_start_no_writer_go_in_one_step() -> None:
    # Frames sent from the sweep itself (try_send_text) leave no task behind: no
    # checkpoint between them, which in a busy loop would make the room's count
    # wait behind every ready callback.
    runs = await kick_runs(3 * 64, starts=False)
    assert [len(run) for run in runs] == [3 * 64]


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
