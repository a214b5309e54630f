"""Several messages of one sender in a pipelined history store at once.

In process, on asyncio and trio: managers on a shared in-memory backplane and a fake
store with ``submit_and_publish`` (as ``RedisHistoryStore``) that answers only when
the test says. The endpoint hands a connection's next messages to the store before
the previous one is answered (at most ``MAX_IN_FLIGHT``), and reports each outcome
as it does for one message at a time: offsets follow each sender's order, errors
name the right message, ``on_published`` gets every published message in order, and
a connection that closes with messages in the store has each of them answered.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from tests.support.common import SECRET
from tests.support.core import chat, sending_to_alice, wait_until
from tests.support.history import AwaitedMemoryStore
from wschat import ChatHooks, ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.backplane.memory import MemoryBackplane, MemoryHub
from wschat.connection import Connection, ConnectionState
from wschat.endpoint import MAX_IN_FLIGHT
from wschat.errors import HistoryStoreUnavailable, PublishInDoubt
from wschat.frames import Error, History, Message, Pong
from wschat.history import (
    HistoryStore,
    Stored,
)
from wschat.history.template import FrameTemplate
from wschat.inflight import InFlight
from wschat.protocol import Published
from wschat.testing import ChatTestClient, ChatTestSession, Ready

pytestmark = pytest.mark.anyio

ROOM = "lobby"
WAIT = 5.0


class _Pending:
    """One queued append: answered (or failed) when the store flushes it."""

    def __init__(self, chat_id: str, template: FrameTemplate, channel: str) -> None:
        self.chat_id = chat_id
        self.template = template
        self.channel = channel
        self.body = template.head  # for the test's bookkeeping only
        self.answered = anyio.Event()
        self.stored: Stored | None = None
        self.error: Exception | None = None
        self.cancelled = False

    async def result(self) -> Stored:
        await self.answered.wait()
        if self.error is not None:
            raise self.error
        assert self.stored is not None
        return self.stored

    def cancel(self) -> None:
        self.cancelled = True


class QueueingStore(AwaitedMemoryStore):
    """An awaited, publishing store that queues appends at call time (in call
    order) and answers them when :meth:`flush` is called, as Redis answers a batch.
    ``fail`` maps the n-th append (from 1) to what it raises instead."""

    def __init__(self, backplane: MemoryBackplane) -> None:
        super().__init__("queueing")
        self.backplane = backplane
        self.local_only = False
        self.queue: list[_Pending] = []
        self.submitted = 0
        self.fail: dict[int, Exception] = {}
        self._numbers: dict[int, int] = {}
        self.changed = anyio.Event()

    def submit_and_publish(
        self, chat_id: str, template: FrameTemplate, channel: str, prefix: bytes
    ) -> _Pending:
        assert prefix == b"m||"
        pending = _Pending(chat_id, template, channel)
        self.submitted += 1
        self._numbers[id(pending)] = self.submitted
        self.queue.append(pending)
        self.changed.set()
        self.changed = anyio.Event()
        return pending

    async def append_and_publish(
        self, chat_id: str, template: FrameTemplate, channel: str, prefix: bytes
    ) -> Stored:
        # One at a time, also answered by flush(): the path without pipelining.
        pending = self.submit_and_publish(chat_id, template, channel, prefix)
        return await pending.result()

    async def wait_queued(self, count: int) -> None:
        """Until ``count`` appends are queued, unanswered."""
        while len(self.queue) < count:
            await self.changed.wait()

    async def flush(self, count: int | None = None) -> None:
        """Answer the oldest ``count`` queued appends (all by default), in order."""
        batch = self.queue[:count] if count is not None else list(self.queue)
        del self.queue[: len(batch)]
        for pending in batch:
            if pending.cancelled:
                continue
            error = self.fail.get(self._numbers[id(pending)])
            if error is not None:
                pending.error = error
            else:
                stored = self.inner.append_nowait(pending.chat_id, pending.template)
                await self.backplane.publish(
                    pending.channel, b"m||" + stored.frame.encode()
                )
                pending.stored = stored
        for pending in batch:
            pending.answered.set()

    async def run(self) -> None:
        """Answer whatever is queued, a batch at a time, until cancelled."""
        while True:
            await self.wait_queued(1)
            await anyio.lowlevel.checkpoint()
            await self.flush()

    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        raise AssertionError("a publishing store is called with append_and_publish")


class Recorder(ChatHooks):
    """Records what ``on_published`` receives."""

    def __init__(self) -> None:
        self.published: list[Published] = []
        self.more = anyio.Event()

    async def on_published(self, conn: Connection, message: Published) -> None:
        self.published.append(message)
        self.more.set()
        self.more = anyio.Event()

    async def wait(self, count: int) -> list[Published]:
        while len(self.published) < count:
            await self.more.wait()
        return self.published


def test_eight_messages_per_connection_as_the_docs_say() -> None:
    assert MAX_IN_FLIGHT == 8


def test_the_test_store_is_a_history_store() -> None:
    assert isinstance(QueueingStore(MemoryBackplane(MemoryHub())), HistoryStore)


@asynccontextmanager
async def cluster(
    processes: int = 1, hooks: ChatHooks | None = None, **options: Any
) -> AsyncIterator[tuple[QueueingStore, list[ConnectionManager], list[ChatTestClient]]]:
    """Managers ("processes") on one hub sharing one queueing store."""
    hub = MemoryHub()
    backs = [MemoryBackplane(hub) for _ in range(processes)]
    store = QueueingStore(backs[0])
    managers = [
        ConnectionManager(backplane=back, history=store, presence=False)
        for back in backs
    ]
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    async with anyio.create_task_group() as tg:
        clients = []
        async with AsyncExitStack() as stack:
            for manager in managers:
                app = chat_app(manager, verifier, hooks=hooks, **options)
                client = ChatTestClient(app, secret=SECRET)
                clients.append(await stack.enter_async_context(client))
            yield store, managers, clients
        tg.cancel_scope.cancel()


async def in_store(session: ChatTestSession, store: QueueingStore, count: int) -> None:
    """Past ``ready``, send messages 0 to ``count - 1``; until the store holds them
    all, unanswered."""
    await session.receive_until(Ready)
    for n in range(count):
        await session.send(n)
    with anyio.fail_after(WAIT):
        await store.wait_queued(count)


async def messages(session: ChatTestSession, count: int) -> list[Message]:
    return [await session.receive_until(Message) for _ in range(count)]


async def test_a_senders_next_messages_reach_the_store_before_one_is_answered() -> None:
    async with cluster() as (store, managers, (client,)):
        assert managers[0].history_pipelined
        async with client.connect(ROOM, user="alice") as alice:
            # Without pipelining, only the first would be in the store until answered.
            await in_store(alice, store, 3)
            assert [p.stored for p in store.queue] == [None, None, None]
            await store.flush()
            with anyio.fail_after(WAIT):
                got = await messages(alice, 3)
            assert [(m.body, m.offset) for m in got] == [(0, 1), (1, 2), (2, 3)]


async def test_at_most_max_in_flight_per_connection_then_the_reader_waits() -> None:
    async with (
        cluster() as (store, _, (client,)),
        client.connect(ROOM, user="alice") as alice,
    ):
        await alice.receive_until(Ready)
        for n in range(MAX_IN_FLIGHT + 3):
            await alice.send(n)
        with anyio.fail_after(WAIT):
            await store.wait_queued(MAX_IN_FLIGHT)
        await anyio.wait_all_tasks_blocked()
        assert store.submitted == MAX_IN_FLIGHT
        # One answered: one more goes in.
        await store.flush(1)
        with anyio.fail_after(WAIT):
            while store.submitted < MAX_IN_FLIGHT + 1:
                await store.changed.wait()
        await anyio.wait_all_tasks_blocked()
        assert store.submitted == MAX_IN_FLIGHT + 1
        await store.flush()
        with anyio.fail_after(WAIT):
            while store.submitted < MAX_IN_FLIGHT + 3:
                await store.wait_queued(1)
                await store.flush()
            got = await messages(alice, MAX_IN_FLIGHT + 3)
        assert [m.body for m in got] == list(range(MAX_IN_FLIGHT + 3))
        assert [m.offset for m in got] == list(range(1, MAX_IN_FLIGHT + 4))


async def test_order_under_many_messages_in_flight_from_several_senders() -> None:
    per_sender = 40
    users = ["alice", "bob", "carol", "dave"]
    hooks = Recorder()
    async with cluster(processes=2, hooks=hooks) as (store, _, clients):
        sessions = []
        async with AsyncExitStack() as stack:
            for i, user in enumerate(users):
                session = await stack.enter_async_context(
                    clients[i % 2].connect(ROOM, user=user)
                )
                await session.receive_until(Ready)
                sessions.append(session)
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.run)

                async def send_all(session: ChatTestSession, user: str) -> None:
                    for n in range(per_sender):
                        await session.send({"u": user, "n": n})

                async with anyio.create_task_group() as senders:
                    for session, user in zip(sessions, users, strict=True):
                        senders.start_soon(send_all, session, user)
                total = per_sender * len(users)
                with anyio.fail_after(WAIT * 2):
                    seen = [await messages(s, total) for s in sessions]
                    published = await hooks.wait(total)
                tg.cancel_scope.cancel()
    # Every member saw the same sequence, offsets 1..total with no gap.
    assert all([m.offset for m in got] == list(range(1, total + 1)) for got in seen)
    assert all([m.data for m in got] == [m.data for m in seen[0]] for got in seen)
    for user in users:
        mine = [m.body["n"] for m in seen[0] if m.body["u"] == user]
        assert mine == list(range(per_sender))
        hooked = [p.body["n"] for p in published if p.user == user]
        assert hooked == list(range(per_sender))
    assert sorted(p.offset or 0 for p in published) == list(range(1, total + 1))
    # The batches held several messages of one sender.
    assert store.submitted == total


async def test_errors_mid_stream_are_reported_for_the_right_message() -> None:
    hooks = Recorder()
    async with cluster(hooks=hooks) as (store, _, (client,)):
        store.fail = {
            2: HistoryStoreUnavailable("refused"),
            # Stored, says the store, but not how: the sender is told it may be.
            4: PublishInDoubt("no answer", _stored),
        }
        async with client.connect(ROOM, user="alice") as alice:
            await alice.receive_until(Ready)
            for n in range(1, 6):
                await alice.send(n, client_id=f"c{n}")
            with anyio.fail_after(WAIT):
                await store.wait_queued(5)
                await store.flush()
                frames = [await alice.receive() for _ in range(5)]
                published = await hooks.wait(3)
            errors = [f for f in frames if isinstance(f, Error)]
            assert [(e.code, e.data.get("client_id")) for e in errors] == [
                ("not_sent", "c2"),
                ("delivery_degraded", "c4"),
            ]
            assert "id" not in errors[0].data
            assert errors[1].data["id"]  # the message's server id
            got = [f for f in frames if isinstance(f, Message)]
            assert [(m.body, m.offset) for m in got] == [(1, 1), (3, 2), (5, 3)]
            assert [p.body for p in published] == [1, 3, 5]
            assert [json.loads(p.frame) for p in published] == [
                dict(m.data) for m in got
            ]


async def _stored() -> bool:
    return True


async def test_a_connection_closing_with_messages_in_flight_has_each_answered() -> None:
    hooks = Recorder()
    async with (
        cluster(hooks=hooks) as (store, _, (client,)),
        client.connect(ROOM, user="bob") as bob,
    ):
        await bob.receive_until(Ready)
        async with client.connect(ROOM, user="alice") as alice:
            await in_store(alice, store, 5)
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(alice.close)
                    # The app saw the close; alice's messages are in the store,
                    # unanswered.
                    await anyio.wait_all_tasks_blocked()
                    assert hooks.published == []
                    await store.flush()
        with anyio.fail_after(WAIT):
            got = await messages(bob, 5)
            published = await hooks.wait(5)
        assert [m.body for m in got] == list(range(5))
        assert [p.body for p in published] == list(range(5))
        assert [p.offset for p in published] == [1, 2, 3, 4, 5]


async def test_a_closing_connection_waits_for_the_store_at_most_close_timeout() -> None:
    # A store that never answers: the messages in it are given up (cancelled) once
    # close_timeout has passed, and the connection ends.
    async with cluster(close_timeout=0.3) as (store, (manager,), (client,)):
        async with client.connect(ROOM, user="alice") as alice:
            await in_store(alice, store, 3)
            async with anyio.create_task_group() as tg:
                tg.start_soon(alice.close)
                started = time.monotonic()
                with anyio.fail_after(WAIT):
                    await wait_until(lambda: not manager.connections())
                waited = time.monotonic() - started
        assert 0.3 <= waited < 1.5, waited
        assert [p.cancelled for p in store.queue] == [True, True, True]


async def test_a_close_that_lets_a_send_end_gives_the_store_no_longer() -> None:
    # A server close while alice's writer is inside a send lets the send end first,
    # within close_timeout of the close (Connection.finish_by). Her messages in a
    # store that does not answer used to get close_timeout of their own from when
    # that ran out: a client that took nothing was let go after twice
    # close_timeout. The whole close now ends within close_timeout.
    back = MemoryBackplane(MemoryHub())
    store = QueueingStore(back)
    manager = ConnectionManager(backplane=back, history=store, presence=False)
    async with manager, chat(manager, close_timeout=1.0) as open_:
        assert manager.history_pipelined
        notice = json.dumps({"type": "x"})
        alice, conn, _ = await sending_to_alice(manager, open_, [notice])
        for n in range(3):
            alice.send({"type": "message", "body": n})
        with anyio.fail_after(WAIT):
            await store.wait_queued(3)
        started = time.monotonic()
        assert manager.close_room(conn.chat_id) == 1
        await wait_until(lambda: conn.state is ConnectionState.RELEASED)
        waited = time.monotonic() - started
        assert 1.0 <= waited < 1.5, waited
        assert [p.cancelled for p in store.queue] == [True, True, True]
        alice.t.gate.set()


async def test_the_store_is_given_the_sooner_of_its_deadline_and_the_closes() -> None:
    async def answer(submitted: object) -> None:
        raise AssertionError("nothing is submitted")

    finish_by: list[float | None] = [None]
    flight = InFlight(answer, lambda exc: None, 1.0, lambda: finish_by[0])
    now = anyio.current_time()
    own = flight.closing()  # close_timeout from the first call
    assert now + 1.0 <= own < now + 1.5
    finish_by[0] = own + 5.0  # the close's deadline is later: its own stays
    assert flight.closing() == own
    finish_by[0] = own - 0.5  # sooner: the close's
    assert flight.closing() == own - 0.5
    finish_by[0] = None
    assert flight.closing() == own - 0.5


async def test_other_frames_are_answered_after_the_messages_before_them() -> None:
    async with (
        cluster() as (store, _, (client,)),
        client.connect(ROOM, user="alice") as alice,
    ):
        await alice.receive_until(Ready)
        for n in range(3):
            await alice.send(n)
        await alice.send_json({"type": "history"})
        with anyio.fail_after(WAIT):
            await store.wait_queued(3)
        await anyio.wait_all_tasks_blocked()
        await store.flush()
        with anyio.fail_after(WAIT):
            page = await alice.receive_until(History)
        # The history request saw the three messages stored.
        assert [m["body"] for m in page.data["messages"]] == [0, 1, 2]
        await alice.ping(7)
        with anyio.fail_after(WAIT):
            assert (await alice.receive_until(Pong)).id == 7


async def test_a_hook_that_raises_closes_with_1011_and_later_messages_not_sent() -> (
    None
):
    class Raises(ChatHooks):
        async def on_published(self, conn: Connection, message: Published) -> None:
            if message.body == 1:
                raise RuntimeError("app bug")

    async with (
        cluster(hooks=Raises()) as (store, _, (client,)),
        client.connect(ROOM, user="alice") as alice,
    ):
        await alice.receive_until(Ready)
        for n in range(MAX_IN_FLIGHT):
            await alice.send(n)
        with anyio.fail_after(WAIT):
            await store.wait_queued(MAX_IN_FLIGHT)
        await store.flush(2)
        with anyio.fail_after(WAIT):
            code, reason = await alice.wait_closed()
        assert code == 1011
        assert reason.startswith("internal_error")
        # The ones not answered yet were given up (not sent).
        assert all(p.cancelled for p in store.queue)
