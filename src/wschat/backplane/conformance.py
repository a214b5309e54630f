"""The backplane conformance suite, public as :func:`wschat.testing.check_backplane`.

Imports: anyio and the standard library (tools layer).

Any :class:`~wschat.backplane.Backplane`, ours or yours, should pass it. The factory
returns a new backplane on the same engine at each call (two calls are two
"processes"), for example ``lambda: MemoryBackplane(hub)`` or
``lambda: RedisBackplane(url, prefix="test:")``. Failures raise ``AssertionError``
saying which promise was broken.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence

import anyio

from ..suites import run_checks
from .base import Backplane, BackplaneHealth, UserSlots

__all__ = ["check_backplane"]

BackplaneFactory = Callable[[], Backplane]


class _Inbox:
    """A Receiver that records what arrives and lets a test wait for it."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.messages: list[tuple[str, bytes]] = []
        self.resynced: list[str] = []
        self._changed = anyio.Event()

    def deliver(self, channel: str, data: bytes) -> None:
        self.messages.append((channel, data))
        self._changed.set()

    def resync(self, channels: Sequence[str]) -> None:
        self.resynced.extend(channels)
        self._changed.set()

    def on(self, channel: str) -> list[bytes]:
        return [data for ch, data in self.messages if ch == channel]

    async def wait_for(self, channel: str, count: int, what: str) -> list[bytes]:
        try:
            with anyio.fail_after(self.timeout):
                while len(self.on(channel)) < count:
                    self._changed = anyio.Event()
                    await self._changed.wait()
        except TimeoutError:
            got = len(self.on(channel))
            raise AssertionError(
                f"{what}: {got} of {count} messages on {channel!r} "
                f"within {self.timeout:g} s"
            ) from None
        return self.on(channel)


@contextlib.asynccontextmanager
async def _running(
    factory: BackplaneFactory, within: float = 5.0
) -> AsyncIterator[tuple[Backplane, _Inbox]]:
    backplane = factory()
    inbox = _Inbox(within)
    async with anyio.create_task_group() as tg:
        try:
            with anyio.fail_after(10):
                await tg.start(backplane.run, inbox)
        except TimeoutError:
            raise AssertionError("run() did not call task_status.started()") from None
        yield backplane, inbox
        tg.cancel_scope.cancel()


async def _check_basics(factory: BackplaneFactory) -> None:
    backplane = factory()
    assert isinstance(backplane, Backplane), "does not implement the Backplane protocol"
    assert isinstance(backplane.name, str), "name must be a str"
    assert backplane.name, "name must not be empty"
    assert isinstance(backplane.health(), BackplaneHealth), "health() type"
    async with _running(factory) as (running, _):
        health = running.health()
        assert health.healthy, f"not healthy once started: {health.detail}"


async def _check_delivery(factory: BackplaneFactory, tag: str, within: float) -> None:
    room, other = f"r:{tag}-a", f"r:{tag}-b"
    async with (
        _running(factory, within) as (one, inbox1),
        _running(factory, within) as (two, inbox2),
    ):
        await one.subscribe(room)
        await two.subscribe(other)
        payloads = [b"m|n|hello", b"\x00\xff|binary", "é ✓".encode(), b"x" * 65536]
        for data in payloads:
            await two.publish(room, data)
        got = await inbox1.wait_for(room, len(payloads), "cross-process delivery")
        assert got == payloads, "payloads must arrive byte for byte, in order"
        await one.publish(room, b"self")
        got = await inbox1.wait_for(room, len(payloads) + 1, "delivery to the sender")
        assert got[-1] == b"self", "the publisher's own subscription must get it"
        # Ordering of one sender's burst.
        burst = [str(i).encode() for i in range(300)]
        for data in burst:
            await two.publish(other, data)
        got = await inbox2.wait_for(other, len(burst), "ordered burst")
        assert got == burst, "one publisher's messages must keep their order"
        many = getattr(two, "publish_many", None)
        if many is not None:
            batch = [(other, b"many%d" % i) for i in range(50)]
            await many(batch)
            got = await inbox2.wait_for(other, len(burst) + 50, "publish_many")
            assert got[len(burst) :] == [d for _, d in batch], "publish_many order"
        # Isolation: nothing from a channel one is not subscribed to, no globbing.
        await one.subscribe(f"r:{tag}-?")
        await two.publish(f"r:{tag}-x", b"glob")
        await two.publish(f"r:{tag}-?", b"literal")
        await inbox1.wait_for(f"r:{tag}-?", 1, "literal channel names")
        assert not inbox1.on(f"r:{tag}-x"), "channel names must not be glob patterns"
        assert not inbox1.on(other), "got a channel it never subscribed to"
        # Unsubscribe: later messages stop; a marker proves the link still works.
        await one.unsubscribe(room)
        await two.publish(room, b"after-unsubscribe")
        await two.publish(f"r:{tag}-?", b"marker")
        await inbox1.wait_for(f"r:{tag}-?", 2, "delivery after an unsubscribe")
        assert b"after-unsubscribe" not in inbox1.on(room), "unsubscribe ignored"
        # Exactly once: no duplicate anywhere.
        assert len(inbox1.on(room)) == len(payloads) + 1, "duplicate delivery"


async def _check_concurrent_subscribes(factory: BackplaneFactory, tag: str) -> None:
    channels = [f"r:{tag}-c{i}" for i in range(200)]
    async with _running(factory) as (one, inbox), _running(factory) as (two, _):
        async with anyio.create_task_group() as tg:
            for channel in channels:
                tg.start_soon(one.subscribe, channel)
        for channel in channels:
            await two.publish(channel, channel.encode())
        for channel in channels:
            got = await inbox.wait_for(channel, 1, "200 simultaneous subscribes")
            assert got == [channel.encode()], f"wrong or duplicate data on {channel}"


async def _check_presence(factory: BackplaneFactory, tag: str) -> None:
    room = f"{tag}-presence"
    async with _running(factory) as (one, _), _running(factory) as (two, _):
        assert await one.presence_members(room) == [], "a new room must be empty"
        assert await one.presence_join(room, "alice", "n1", 30) is True, "first join"
        assert await two.presence_join(room, "alice", "n2", 30) is False, (
            "a user already present in another process is not new"
        )
        assert await one.presence_join(room, "bob", "n1", 30) is True
        assert await two.presence_members(room) == ["alice", "bob"], "members"
        assert await one.presence_leave(room, "alice", "n1") is False, (
            "alice is still held by n2"
        )
        assert await two.presence_leave(room, "alice", "n2") is True, "last lease"
        assert await one.presence_members(room) == ["bob"]
        # A process that dies stops renewing: its leases expire on their own.
        assert await two.presence_join(room, "carol", "n2", 0.3) is True
        assert "carol" in await one.presence_members(room)
        await anyio.sleep(0.35)
        assert "carol" not in await one.presence_members(room), "lease must expire"
        # Refresh renews, re-creates and reports the expired.
        assert await two.presence_join(room, "dave", "n2", 0.3) is True
        await anyio.sleep(0.35)
        gone = await one.presence_refresh("n1", {room: ["bob", "erin"]}, 30)
        assert set(gone) == {room}, f"refresh must report expired users: {gone}"
        assert "dave" in gone[room], f"refresh must report expired users: {gone}"
        assert "bob" not in gone[room], "bob is held by n1 and must not be reported"
        assert await one.presence_members(room) == ["bob", "erin"], "refresh re-creates"
        await one.presence_refresh("n1", {room: ["erin"]}, 30)
        assert await one.presence_members(room) == ["erin"], "refresh drops the rest"
        # One user's bad data (here an id that is not valid UTF-8) must never fail
        # the calls, nor keep the other users' leases from being renewed.
        odd = "\ud800"
        try:
            joined = await one.presence_join(room, odd, "n1", 30)
            await one.presence_refresh("n1", {room: ["erin", odd]}, 30)
            members = await one.presence_members(room)
            left = await one.presence_leave(room, odd, "n1")
        except Exception as exc:
            raise AssertionError(
                "a user id the engine cannot store (not UTF-8) made a presence call "
                f"raise {type(exc).__name__}: skip that user, keep the others"
            ) from exc
        assert joined is True, "join of a user id the engine cannot store: True"
        assert "erin" in members, "one odd user id must not stop the others' renewal"
        assert left is True, "leave of a user id the engine cannot store: True"
        await one.presence_leave(room, "erin", "n1")


async def _check_user_slots(factory: BackplaneFactory, tag: str) -> None:
    """The per-user cap's slots (only for a backplane that implements UserSlots)."""
    user = f"{tag}-capped"
    async with _running(factory) as (one, _), _running(factory) as (two, _):
        if not isinstance(one, UserSlots) or not isinstance(two, UserSlots):
            return
        assert await one.user_slot_acquire(user, "n1/1", 2, 30) is True, "free slot"
        assert await two.user_slot_acquire(user, "n2/1", 2, 30) is True, "free slot"
        assert await two.user_slot_acquire(user, "n2/2", 2, 30) is False, (
            "a third slot over a cap of 2, across two processes, must be refused"
        )
        assert await one.user_slot_acquire(user, "n1/1", 2, 30) is True, (
            "taking a slot already held is a renewal, not a new slot"
        )
        await one.user_slots_release(user, ["n1/1", "unknown"])
        assert await two.user_slot_acquire(user, "n2/2", 2, 30) is True, (
            "a released slot is free again"
        )
        await two.user_slots_release(user, ["n2/1", "n2/2"])
        # A process that dies stops renewing: its slots expire on their own.
        assert await two.user_slot_acquire(user, "n2/3", 1, 0.3) is True
        assert await one.user_slot_acquire(user, "n1/2", 1, 30) is False
        await anyio.sleep(0.35)
        assert await one.user_slot_acquire(user, "n1/2", 1, 30) is True, (
            "a slot must expire ttl seconds after it was last renewed"
        )
        # Refresh renews (and re-creates) slots.
        await one.user_slots_refresh({user: ["n1/2"]}, 0.3)
        await anyio.sleep(0.2)
        await one.user_slots_refresh({user: ["n1/2"]}, 0.3)
        await anyio.sleep(0.2)
        assert await two.user_slot_acquire(user, "n2/4", 1, 30) is False, (
            "a refreshed slot must not expire"
        )
        await one.user_slots_release(user, ["n1/2"])
        await one.user_slots_refresh({user: ["n1/9"]}, 30)
        assert await two.user_slot_acquire(user, "n2/5", 1, 30) is False, (
            "refresh must re-create a slot the engine lost"
        )
        await one.user_slots_release(user, ["n1/9"])


async def check_backplane(factory: BackplaneFactory, *, within: float = 5.0) -> None:
    """Check that a backplane keeps every promise the manager relies on.

    Runs in about two seconds against a local engine. Call it from an async test::

        async def test_my_backplane() -> None:
            await check_backplane(lambda: MyBackplane(url))

    Args:
        factory: Returns a new backplane on the same engine at each call.
        within: Seconds any one expected message may take to arrive.

    Raises:
        AssertionError: A promise is broken; the message says which.
    """
    tag = "conf" + os.urandom(3).hex()
    await run_checks(
        [
            ("basics", lambda: _check_basics(factory)),
            ("delivery", lambda: _check_delivery(factory, tag, within)),
            (
                "concurrent_subscribes",
                lambda: _check_concurrent_subscribes(factory, tag),
            ),
            ("presence", lambda: _check_presence(factory, tag)),
            ("user_slots", lambda: _check_user_slots(factory, tag)),
        ]
    )
