"""ConnectionManager.publish with a store that received a message but did not answer.

In process, on asyncio and trio, with a fake awaited store whose append raises
``AppendInDoubt`` (or a plain ``PublishInDoubt``) and answers when the test says. The
rule (docs/history.md, "A store that does not answer"): wait at most
``IN_DOUBT_WAIT`` seconds; stored -> published as usual; not stored -> ``NotSent``;
no answer -> ``DeliveryInDoubt`` naming the message, and a message stored later by a
store that does not publish it gets the room's members here a ``resync``.
"""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import TaskGroup

from tests.support.cluster import ROOM, Sink, ready_frame
from tests.support.history import AwaitedMemoryStore
from wschat import ConnectionManager
from wschat.auth import Principal
from wschat.connection import Connection
from wschat.errors import DeliveryInDoubt, NotSent, PublishInDoubt
from wschat.history import (
    AppendInDoubt,
    Stored,
)
from wschat.history.template import FrameTemplate
from wschat.ids import UserId
from wschat.scrollback import IN_DOUBT_WAIT

pytestmark = pytest.mark.anyio

WAIT = 5.0


def test_the_wait_is_5_seconds() -> None:
    assert IN_DOUBT_WAIT == 5.0


class DoubtfulStore(AwaitedMemoryStore):
    """An awaited store; with ``doubt`` set, the next append is left in doubt
    until :meth:`answer` says whether it was stored."""

    def __init__(self, plain: bool = False) -> None:
        super().__init__("doubtful")
        self.doubt = False
        self.plain = plain  # raise a plain PublishInDoubt (no stored message)
        self._answered = anyio.Event()
        self._stored: Stored | None = None
        self._template: tuple[str, FrameTemplate] | None = None

    def answer(self, stored: bool) -> None:
        if stored:
            assert self._template is not None
            self._stored = self.inner.append_nowait(*self._template)
        self._answered.set()

    async def _settled(self) -> Stored | None:
        await self._answered.wait()
        return self._stored

    async def _outcome(self) -> bool:
        return await self._settled() is not None

    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        await anyio.lowlevel.checkpoint()
        if not self.doubt:
            return self.inner.append_nowait(chat_id, template)
        self.doubt = False
        self._template = (chat_id, template)
        if self.plain:
            raise PublishInDoubt("no answer", self._outcome)
        raise AppendInDoubt("no answer", self._settled)


class Member:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sink = Sink()


async def member(tg: TaskGroup, manager: ConnectionManager, user: str) -> Member:
    conn = manager.connect(
        Principal(UserId(user)), ROOM, first_frame=ready_frame(manager)
    )
    joined = Member(conn)
    tg.start_soon(conn.run_writer, joined.sink)
    await manager.recover(conn)
    assert (await joined.sink.next())["type"] == "ready"
    return joined


async def test_stored_within_the_wait_is_published_as_usual() -> None:
    store = DoubtfulStore()
    manager = ConnectionManager(history=store, presence=False)
    async with manager, anyio.create_task_group() as tg:
        alice, bob = (
            await member(tg, manager, "alice"),
            await member(tg, manager, "bob"),
        )
        store.doubt = True
        tg.start_soon(_answer_soon, store, True)
        with anyio.fail_after(WAIT):
            published = await manager.publish(alice.conn, "hi")
        assert published.offset == 1
        for who in (alice, bob):
            frame = await who.sink.next()
            assert (frame["type"], frame["offset"]) == ("message", 1)
        assert manager.history_health()["errors"] == 1
        assert manager.history_health()["healthy"] is True
        tg.cancel_scope.cancel()


async def test_not_stored_within_the_wait_is_not_sent() -> None:
    store = DoubtfulStore()
    manager = ConnectionManager(history=store, presence=False)
    async with manager, anyio.create_task_group() as tg:
        alice, bob = (
            await member(tg, manager, "alice"),
            await member(tg, manager, "bob"),
        )
        store.doubt = True
        tg.start_soon(_answer_soon, store, False)
        with anyio.fail_after(WAIT), pytest.raises(NotSent):
            await manager.publish(alice.conn, "hi")
        await anyio.sleep(0.05)
        assert bob.sink.pending() == []
        tg.cancel_scope.cancel()


async def test_no_answer_within_the_wait_is_delivery_in_doubt_then_a_resync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("wschat.scrollback.IN_DOUBT_WAIT", 0.2)
    store = DoubtfulStore()
    manager = ConnectionManager(history=store, presence=False)
    async with manager, anyio.create_task_group() as tg:
        alice, bob = (
            await member(tg, manager, "alice"),
            await member(tg, manager, "bob"),
        )
        store.doubt = True
        with anyio.fail_after(WAIT), pytest.raises(DeliveryInDoubt) as doubt:
            await manager.publish(alice.conn, "hi", "c1")
        assert doubt.value.code == "delivery_degraded"
        assert doubt.value.message_id.startswith("m")
        assert bob.sink.pending() == []
        store.answer(True)  # stored after all, but delivered to nobody
        with anyio.fail_after(WAIT):
            resync = await bob.sink.next()
        assert resync["type"] == "resync"
        assert "load history" in resync["message"]
        page = await store.read_after(ROOM, 0, 10)
        assert [entry.offset for entry in page.messages] == [1]
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("stored", [True, False])
async def test_a_plain_publish_in_doubt_is_in_doubt_or_not_sent(stored: bool) -> None:
    # Without the stored message the manager cannot deliver a frame whose offset
    # it does not know: "stored" is still delivery_degraded.
    store = DoubtfulStore(plain=True)
    manager = ConnectionManager(history=store, presence=False)
    async with manager, anyio.create_task_group() as tg:
        alice = await member(tg, manager, "alice")
        store.doubt = True
        tg.start_soon(_answer_soon, store, stored)
        expected = DeliveryInDoubt if stored else NotSent
        with anyio.fail_after(WAIT), pytest.raises(expected):
            await manager.publish(alice.conn, "hi")
        tg.cancel_scope.cancel()


async def _answer_soon(store: DoubtfulStore, stored: bool) -> None:
    await anyio.sleep(0.05)
    store.answer(stored)
