"""RoomRegistry: membership counted per user, empty rooms removed at once."""

from __future__ import annotations

from dataclasses import dataclass

from wschat.ids import ChatId, ConnectionId, UserId
from wschat.rooms import RoomRegistry


@dataclass(frozen=True)
class Member:
    id: ConnectionId
    user_id: UserId


def member(conn: str, user: str) -> Member:
    return Member(ConnectionId(conn), UserId(user))


LOBBY = ChatId("lobby")


def test_a_room_knows_its_id_and_members_in_join_order() -> None:
    registry: RoomRegistry[Member] = RoomRegistry()
    a1, b1, a2 = member("c-1", "alice"), member("c-2", "bob"), member("c-3", "alice")
    assert registry.join(LOBBY, a1) is True
    assert registry.join(LOBBY, b1) is True
    assert registry.join(LOBBY, a2) is False  # alice is already there
    assert registry.join(LOBBY, a2) is False  # twice is a no-op
    room = registry.room(LOBBY)
    assert room is not None
    assert room.chat_id == "lobby"
    assert list(room.connections) == ["c-1", "c-2", "c-3"]
    assert room.users == {"alice": 2, "bob": 1}
    assert registry.members(LOBBY) == ["alice", "bob"]
    assert (registry.user_count(LOBBY), registry.connection_count(LOBBY)) == (2, 3)
    assert (len(registry), list(registry), LOBBY in registry) == (1, ["lobby"], True)


def test_leave_announces_the_last_connection_and_drops_empty_rooms() -> None:
    registry: RoomRegistry[Member] = RoomRegistry()
    a1, a2 = member("c-1", "alice"), member("c-2", "alice")
    registry.join(LOBBY, a1)
    registry.join(LOBBY, a2)
    assert registry.leave(LOBBY, a1) is False
    assert registry.leave(LOBBY, a1) is False  # twice is a no-op
    assert registry.leave(ChatId("elsewhere"), a2) is False
    assert registry.leave(LOBBY, a2) is True
    assert registry.room(LOBBY) is None
    assert (registry.members(LOBBY), registry.user_count(LOBBY)) == ([], 0)
    assert registry.connection_count(LOBBY) == 0
    assert (len(registry), LOBBY in registry) == (0, False)
