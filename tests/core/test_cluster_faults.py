"""The manager's side of backplane faults, on asyncio and trio (in-memory hub).

A backplane can fail a publish for sure (:class:`BackplaneUnavailable`), or leave it
in doubt (:class:`PublishInDoubt`: the engine stopped answering after it was sent).
The manager must then:

- send the sender exactly one ``delivery_degraded`` per message not published,
  naming the message (``id``, ``client_id``), and none for one published late;
- once the engine answers again, tell the other processes which rooms lost its
  traffic, so every member there gets a ``resync``, even in a room that has emptied
  here since;
- keep one room's (or one user's) presence failure from spoiling the others.

The same promises over a real, paused Redis are in ``test_redis_faults.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import anyio
import pytest

from tests.support.cluster import ROOM, WAIT, Client, cluster, join
from wschat import publisher as publisher_module
from wschat.backplane import (
    BackplaneUnavailable,
    MemoryBackplane,
    MemoryHub,
    PublishInDoubt,
)
from wschat.backplane.envelope import KIND_PRESENCE
from wschat.ids import ChatId

pytestmark = pytest.mark.anyio


class Cut(MemoryBackplane):
    """A process cut off from the engine: its publishes fail, others' go on."""

    cut = False
    doubt: anyio.Event | None = None
    published_anyway = False

    def __init__(self, hub: MemoryHub) -> None:
        super().__init__(hub)
        #: Envelopes that went out (the hub took them).
        self.sent: list[bytes] = []

    def _check(self, items: Sequence[tuple[str, bytes]]) -> None:
        if self.doubt is not None:
            doubt, self.doubt = self.doubt, None

            async def outcome() -> bool:
                await doubt.wait()
                if self.published_anyway:
                    for channel, data in items:
                        self.hub.publish(channel, data)
                return self.published_anyway

            raise PublishInDoubt("no answer", outcome)
        if self.cut:
            raise BackplaneUnavailable("cut off")

    async def publish(self, channel: str, data: bytes) -> None:
        self._check([(channel, data)])
        await super().publish(channel, data)
        self.sent.append(data)

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self._check(items)
        await super().publish_many(items)
        self.sent.extend(data for _, data in items)

    def sent_of(self, kind: bytes) -> int:
        return sum(1 for data in self.sent if data.startswith(kind + b"|"))


async def until(check: Any) -> None:
    with anyio.fail_after(WAIT):
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.01)


def frames(client: Client, kind: str) -> list[dict[str, Any]]:
    client.sink.seen.extend(client.sink.pending())
    return [f for f in client.sink.seen if f["type"] == kind]


def degraded(client: Client) -> list[dict[str, Any]]:
    return [f for f in frames(client, "error") if f["code"] == "delivery_degraded"]


async def test_a_cut_off_process_tells_the_others_to_resync_once_back() -> None:
    hub = MemoryHub()
    cut = Cut(hub)
    async with cluster(cut, MemoryBackplane(hub)) as (tg, (a, b)):
        alice, carol = join(tg, a, "alice"), join(tg, a, "carol")
        bob = join(tg, b, "bob")
        dave = join(tg, a, "dave", ChatId("gone"))
        erin = join(tg, b, "erin", ChatId("gone"))
        for client in (alice, carol, bob, dave, erin):
            await client.ready()
        # ``ready`` comes before the control worker announces a's joins (alice,
        # carol, dave); cut off before they went out, they would be lost too.
        await until(lambda: cut.sent_of(KIND_PRESENCE) == 3)
        cut.cut = True
        a.publish_nowait(alice.conn, "lost", client_id="c-1")
        dave.say("lost too")
        await until(lambda: len(degraded(alice)) == 1 and len(degraded(dave)) == 1)
        error = degraded(alice)[0]
        sent = next(f for f in frames(alice, "message") if f["body"] == "lost")
        assert (error["id"], error["client_id"]) == (sent["id"], "c-1")
        assert "members on other servers may have missed it" in error["message"]
        assert [f["body"] for f in frames(carol, "message")] == ["lost"]
        dave.leave()  # the room empties here before the engine is back
        await anyio.sleep(0.3)  # the announcer retries meanwhile, and fails
        assert not frames(bob, "resync")
        assert not frames(erin, "resync")
        cut.cut = False
        await until(
            lambda: bool(frames(bob, "resync")) and bool(frames(erin, "resync"))
        )
        for client, room in ((bob, ROOM), (erin, "gone")):
            (resync,) = frames(client, "resync")
            assert resync["chat_id"] == room
            assert "another server could not pass on messages" in resync["message"]
        # This process's own members got every message: no resync for them.
        assert not frames(alice, "resync")
        assert not frames(carol, "resync")
        assert [f["body"] for f in frames(bob, "message")] == []
        assert len(degraded(alice)) == 1
        assert a.backplane_health()["undelivered"] == 3  # two messages, a leave


async def test_a_publish_in_doubt_earns_no_error_if_it_went_out() -> None:
    hub = MemoryHub()
    cut = Cut(hub)
    async with cluster(cut, MemoryBackplane(hub)) as (tg, (a, b)):
        alice, bob = join(tg, a, "alice"), join(tg, b, "bob")
        for client in (alice, bob):
            await client.ready()
        answer = cut.doubt = anyio.Event()
        cut.published_anyway = True
        alice.say("late")
        await anyio.sleep(0.2)
        assert degraded(alice) == []  # not yet known: nothing said
        answer.set()
        await until(lambda: [f["body"] for f in frames(bob, "message")] == ["late"])
        await anyio.sleep(0.2)
        assert degraded(alice) == []
        assert frames(bob, "resync") == []


async def test_a_publish_in_doubt_that_did_not_go_out_is_reported_once() -> None:
    hub = MemoryHub()
    cut = Cut(hub)
    async with cluster(cut, MemoryBackplane(hub)) as (tg, (a, b)):
        alice, bob = join(tg, a, "alice"), join(tg, b, "bob")
        for client in (alice, bob):
            await client.ready()
        answer = cut.doubt = anyio.Event()
        alice.say("never")
        answer.set()
        await until(lambda: len(degraded(alice)) == 1)
        await until(lambda: bool(frames(bob, "resync")))
        assert degraded(alice)[0]["id"] == frames(alice, "message")[0]["id"]
        assert "client_id" not in degraded(alice)[0]  # the client sent none
        await anyio.sleep(0.2)
        assert len(degraded(alice)) == 1


async def test_past_the_cap_every_room_is_resynced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publisher_module, "MAX_LOST_ROOMS", 2)
    hub = MemoryHub()
    cut = Cut(hub)
    async with cluster(cut, MemoryBackplane(hub)) as (tg, (a, b)):
        senders = [join(tg, a, f"s{i}", ChatId(f"room{i}")) for i in range(3)]
        quiet = join(tg, b, "quiet", ChatId("untouched"))
        for client in (*senders, quiet):
            await client.ready()
        cut.cut = True
        for sender in senders:
            sender.say("lost")
        await until(lambda: all(degraded(s) for s in senders))
        cut.cut = False
        # A room b has that lost nothing here is resynced too: nobody kept a list.
        await until(lambda: bool(frames(quiet, "resync")))


async def test_a_resync_announcement_is_a_resync_frame_for_older_versions() -> None:
    """An older wschat passes an unknown kind on a room channel to its clients."""
    hub = MemoryHub()
    cut = Cut(hub)
    seen: list[bytes] = []

    class Spy:
        def deliver(self, channel: str, data: bytes) -> None:
            seen.append(data)

        def resync(self, channels: Sequence[str]) -> None:
            pass

    spy = MemoryBackplane(hub)
    async with cluster(cut) as (tg, (a,)), anyio.create_task_group() as spy_tg:
        await spy_tg.start(spy.run, Spy())
        await spy.subscribe(f"r:{ROOM}")
        alice = join(tg, a, "alice")
        await alice.ready()
        cut.cut = True
        alice.say("lost")
        await until(lambda: bool(degraded(alice)))
        cut.cut = False
        await until(lambda: any(d.startswith(b"s|") for d in seen))
        _kind, _, payload = next(d for d in seen if d.startswith(b"s|")).split(b"|", 2)
        frame = json.loads(payload)
        assert (frame["type"], frame["chat_id"]) == ("resync", str(ROOM))
        spy_tg.cancel_scope.cancel()


class Picky(MemoryBackplane):
    """A third-party backplane that raises for one room's presence."""

    async def presence_refresh(
        self, node: str, rooms: Mapping[str, Collection[str]], ttl: float
    ) -> dict[str, list[str]]:
        if "bad" in rooms:
            raise ValueError("cannot store this room")
        return await super().presence_refresh(node, rooms, ttl)

    async def presence_join(self, room: str, user: str, node: str, ttl: float) -> bool:
        if room == "bad":
            raise ValueError("cannot store this room")
        return await super().presence_join(room, user, node, ttl)


async def test_one_rooms_presence_failure_spares_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wschat")
    hub = MemoryHub()
    ttl = 1.5  # renewed every 0.5 s: a loaded machine still renews in time
    async with cluster(Picky(hub), MemoryBackplane(hub), presence_ttl=ttl) as (
        tg,
        (a, b),
    ):
        alice = join(tg, a, "alice")
        await alice.ready()
        bad = join(tg, a, "mallory", ChatId("bad"))
        await bad.ready()
        bob = join(tg, b, "bob")  # joins once a listens to the room
        await bob.ready()
        await until(lambda: any("bob" in f["joins"] for f in frames(alice, "presence")))
        await anyio.sleep(3 * ttl)
        leaves = [f for f in frames(bob, "presence") if f["leaves"]]
        assert leaves == []
        assert await b.room_members(ROOM) == ["alice", "bob"]
        assert frames(bad, "presence")[0]["joins"] == ["mallory"]  # served locally
    records = [r for r in caplog.records if r.name == "wschat"]
    assert [r for r in records if r.levelno >= logging.ERROR] == []
    warned = [
        r.getMessage() for r in records if "presence in room 'bad'" in r.getMessage()
    ]
    assert len(warned) == 1, warned  # once, not once per renewal


async def test_conformance_catches_presence_that_one_user_can_break() -> None:
    from wschat.testing import check_backplane

    class Fragile(MemoryBackplane):
        async def presence_refresh(
            self, node: str, rooms: Mapping[str, Collection[str]], ttl: float
        ) -> dict[str, list[str]]:
            for users in rooms.values():
                for user in users:
                    user.encode()  # what wschat 0.1's Redis backplane did
            return await super().presence_refresh(node, rooms, ttl)

    hub = MemoryHub()
    with pytest.raises(AssertionError, match="raise UnicodeEncodeError"):
        await check_backplane(lambda: Fragile(hub))
