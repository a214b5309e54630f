"""A state machine over ConnectionManager and its RoomRegistry, against a simple model.

It runs synchronously: ``put_nowait`` and ``receive_nowait`` on the outboxes need no
event loop, which is also how broadcasts are called from sync code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from wschat import Connection, ConnectionManager, Forbidden
from wschat.auth import Principal
from wschat.errors import TooManyConnections
from wschat.ids import ChatId, ConnectionId, UserId
from wschat.protocol import encode_presence_diff
from wschat.rooms import RoomRegistry

USERS = [UserId(u) for u in ("ann", "bob", "cyd", "dee")]
ROOMS = [ChatId(r) for r in ("lobby", "dev", "ops")]
CAP = 3  # connections per user


@dataclass
class Model:
    """What should be true, kept with plain dicts."""

    live: dict[str, Connection] = field(default_factory=dict)
    closing: dict[str, Connection] = field(default_factory=dict)
    expected: dict[str, list[str]] = field(default_factory=dict)

    def all(self) -> dict[str, Connection]:
        return {**self.live, **self.closing}

    def room_conns(self, room: ChatId) -> list[Connection]:
        return [c for c in self.all().values() if c.chat_id == room]

    def room_users(self, room: ChatId) -> set[UserId]:
        return {c.user_id for c in self.room_conns(room)}

    def deliver(self, room: ChatId, frame: str) -> None:
        for conn in self.live.values():
            if conn.chat_id == room:
                self.expected[conn.id].append(frame)


def drain(conn: Connection) -> list[str]:
    frames = []
    while True:
        try:
            frames.append(conn.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return frames


class ManagerMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.manager = ConnectionManager(
            max_connections_per_user=CAP, node_id="t", history=False
        )
        self.model = Model()
        self.counter = 0

    # -- rules -----------------------------------------------------------------------

    @rule(user=st.sampled_from(USERS), room=st.sampled_from(ROOMS))
    def connect(self, user: UserId, room: ChatId) -> None:
        held = [c for c in self.model.all().values() if c.user_id == user]
        first_in_room = user not in self.model.room_users(room)
        if len(held) >= CAP:
            with pytest.raises(TooManyConnections):
                self.manager.connect(Principal(user), room)
            return
        conn = self.manager.connect(
            Principal(user),
            room,
            first_frame=lambda c: json.dumps({"type": "ready", "id": c.id}),
        )
        assert conn.id not in self.model.all()
        assert (conn.user_id, conn.chat_id) == (user, room)
        self.model.expected[conn.id] = [json.dumps({"type": "ready", "id": conn.id})]
        self.model.live[conn.id] = conn
        if first_in_room:
            count = len(self.model.room_users(room))
            self.model.deliver(
                room,
                encode_presence_diff(
                    chat_id=room, joins=[user], leaves=[], count=count
                ),
            )

    def _leave(self, conn: Connection) -> None:
        self.model.live.pop(conn.id, None)
        self.model.closing.pop(conn.id, None)
        self.model.expected.pop(conn.id, None)
        self.manager.disconnect(conn)
        if conn.user_id not in self.model.room_users(conn.chat_id):
            count = len(self.model.room_users(conn.chat_id))
            self.model.deliver(
                conn.chat_id,
                encode_presence_diff(
                    chat_id=conn.chat_id, joins=[], leaves=[conn.user_id], count=count
                ),
            )
        # Idempotent: a second disconnect changes nothing and announces nothing.
        self.manager.disconnect(conn)

    @precondition(lambda self: self.model.all())
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        conns = sorted(self.model.all())
        self._leave(self.model.all()[data.draw(st.sampled_from(conns))])

    @precondition(lambda self: self.model.live)
    @rule(data=st.data())
    def vanish(self, data: st.DataObject) -> None:
        """The client disappears: abort(None), then the endpoint disconnects it."""
        conn = self.model.live[data.draw(st.sampled_from(sorted(self.model.live)))]
        conn.abort(None)
        assert conn.closing is not None
        assert not conn.put_nowait('{"type":"late"}')
        self._leave(conn)

    @rule(room=st.sampled_from(ROOMS))
    def broadcast(self, room: ChatId) -> None:
        self.counter += 1
        frame = json.dumps({"type": "message", "n": self.counter, "room": room})
        took = self.manager.broadcast_nowait(room, frame)
        assert took == len([c for c in self.model.live.values() if c.chat_id == room])
        self.model.deliver(room, frame)

    @precondition(lambda self: self.model.live)
    @rule(data=st.data())
    def publish(self, data: st.DataObject) -> None:
        sender = self.model.live[data.draw(st.sampled_from(sorted(self.model.live)))]
        self.counter += 1
        took = self.manager.publish_nowait(sender, {"n": self.counter}, "cid")
        room = sender.chat_id
        assert took == len([c for c in self.model.live.values() if c.chat_id == room])
        # The sender is a member too: its own copy shows the server-set fields.
        got = drain(sender)
        assert got[:-1] == self.model.expected[sender.id]
        self.model.expected[sender.id] = []
        sent = json.loads(got[-1])
        assert sent["type"] == "message"
        assert (sent["user"], sent["chat_id"]) == (sender.user_id, room)
        assert (sent["body"], sent["client_id"]) == ({"n": self.counter}, "cid")
        # Encoded once: every other member gets exactly the same text.
        for conn in self.model.live.values():
            if conn.chat_id == room and conn is not sender:
                self.model.expected[conn.id].append(got[-1])

    @rule(user=st.sampled_from(USERS))
    def send_to_user(self, user: UserId) -> None:
        self.counter += 1
        frame = json.dumps({"type": "note", "n": self.counter})
        took = self.manager.send_to_user(user, frame)
        targets = [c for c in self.model.live.values() if c.user_id == user]
        assert took == len(targets)
        for conn in targets:
            self.model.expected[conn.id].append(frame)

    @rule(user=st.sampled_from(USERS))
    def kick(self, user: UserId) -> None:
        held = [c for c in self.model.all().values() if c.user_id == user]
        assert self.manager.close_user(user) == len(held)
        for conn in held:
            assert conn.closing is not None
            if conn.id in self.model.live:
                # A kick that is the first reason wins over later ones.
                assert isinstance(conn.closing, Forbidden)
                assert conn.closing.close_code == 4403
                self.model.live.pop(conn.id)
                self.model.closing[conn.id] = conn
                self.model.expected[conn.id] = []
                drain(conn)

    @rule()
    def everybody_leaves(self) -> None:
        for conn in list(self.model.all().values()):
            self._leave(conn)
        self.check_nothing_leaks()

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def outboxes_match(self) -> None:
        if not hasattr(self, "model"):
            return
        for cid, conn in self.model.live.items():
            got = drain(conn)
            assert got == self.model.expected[cid], (cid, got)
            self.model.expected[cid] = []
            assert conn.queued == 0
            assert conn.queued_bytes == 0
        for conn in self.model.closing.values():
            drain(conn)
            assert not conn.put_nowait("{}")

    @invariant()
    def membership_matches(self) -> None:
        if not hasattr(self, "model"):
            return
        manager, model = self.manager, self.model
        assert len(manager) == len(model.all())
        assert {c.id for c in manager.connections()} == set(model.all())
        occupied = {c.chat_id for c in model.all().values()}
        assert set(manager.registry) == occupied
        assert len(manager.registry) == len(occupied)
        for room in ROOMS:
            users = model.room_users(room)
            assert set(manager.members(room)) == users
            assert len(manager.members(room)) == len(users)
            assert manager.user_count(room) == len(users)
            conns = model.room_conns(room)
            assert manager.registry.connection_count(room) == len(conns)
            assert {c.id for c in manager.connections(room)} == {c.id for c in conns}
            assert (room in manager.registry) == bool(conns)
        for user in USERS:
            held = {c.id for c in model.all().values() if c.user_id == user}
            assert {c.id for c in manager.user_connections(user)} == held
        stats = manager.stats()
        assert stats.connections == len(model.all())
        assert stats.rooms == len(occupied)
        assert stats.users == len({c.user_id for c in model.all().values()})

    def check_nothing_leaks(self) -> None:
        manager = self.manager
        assert len(manager) == 0
        assert len(manager.registry) == 0
        assert manager.connections() == []
        assert manager.stats().users == 0
        assert manager.stats().rooms == 0
        for room in ROOMS:
            assert manager.registry.room(room) is None
            assert manager.members(room) == []
        for user in USERS:
            assert manager.user_connections(user) == []

    def teardown(self) -> None:
        if not hasattr(self, "model"):
            return
        for conn in list(self.model.all().values()):
            self._leave(conn)
        self.outboxes_match()
        self.check_nothing_leaks()


ManagerMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestManagerMachine = ManagerMachine.TestCase


def test_outbox_works_without_an_event_loop() -> None:
    manager = ConnectionManager()
    a = manager.connect(Principal(UserId("ann")), ChatId("r"))
    b = manager.connect(Principal(UserId("bob")), ChatId("r"))
    assert manager.broadcast_nowait(ChatId("r"), '{"type":"x"}') == 2
    assert drain(a)[-1] == '{"type":"x"}'
    assert drain(b)[-1] == '{"type":"x"}'
    with pytest.raises(anyio.WouldBlock):
        a.receive_nowait()


def test_second_tab_does_not_reannounce() -> None:
    manager = ConnectionManager()
    room = ChatId("r")
    watcher = manager.connect(Principal(UserId("w")), room)
    drain(watcher)
    tab1 = manager.connect(Principal(UserId("ann")), room)
    tab2 = manager.connect(Principal(UserId("ann")), room)
    frames = [json.loads(f) for f in drain(watcher)]
    assert [(f["joins"], f["leaves"]) for f in frames] == [(["ann"], [])]
    manager.disconnect(tab1)
    assert drain(watcher) == []
    manager.disconnect(tab2)
    assert [json.loads(f)["leaves"] for f in drain(watcher)] == [["ann"]]


@dataclass(frozen=True)
class FakeMember:
    id: ConnectionId
    user_id: UserId


def test_registry_join_and_leave_are_idempotent() -> None:
    registry: RoomRegistry[FakeMember] = RoomRegistry()
    room = ChatId("r")
    a1 = FakeMember(ConnectionId("1"), UserId("ann"))
    a2 = FakeMember(ConnectionId("2"), UserId("ann"))
    b1 = FakeMember(ConnectionId("3"), UserId("bob"))
    assert registry.join(room, a1) is True
    assert registry.join(room, a1) is False  # twice: no-op
    assert registry.connection_count(room) == 1
    assert registry.join(room, a2) is False  # second tab: no announce
    assert registry.join(room, b1) is True
    assert registry.members(room) == ["ann", "bob"]  # first-join order
    assert (registry.user_count(room), registry.connection_count(room)) == (2, 3)
    assert registry.leave(room, a1) is False  # ann still has a tab
    assert registry.leave(room, a1) is False  # twice: no-op
    assert registry.user_count(room) == 2
    assert registry.leave(room, a2) is True
    assert registry.leave(ChatId("nowhere"), b1) is False
    assert registry.leave(room, b1) is True
    assert room not in registry
    assert len(registry) == 0
    assert registry.members(room) == []
    assert registry.room(room) is None
