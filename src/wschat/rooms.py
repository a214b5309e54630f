"""Room membership and presence: who is in which room, counted per user.

Imports: the standard library only (core layer).

A user with two tabs open holds two connections but is one member: presence is
announced when a user's first connection joins and when the last one leaves. Empty
rooms are removed at once. Join and leave are O(1); nothing here walks all rooms.

:func:`page_members` cuts a member list into pages in a stable order (by user id),
so a client paging with a cursor sees every member present throughout exactly once,
however many come and go meanwhile.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, Protocol, TypeVar

from .ids import ChatId, ConnectionId, UserId

__all__ = ["Member", "Room", "RoomRegistry", "page_members"]


class Member(Protocol):
    """Anything the registry can hold: it knows its id and its user."""

    @property
    def id(self) -> ConnectionId: ...

    @property
    def user_id(self) -> UserId: ...


M = TypeVar("M", bound=Member)


@dataclass(slots=True)
class Room(Generic[M]):
    """One room's members, by connection and by user.

    Attributes:
        chat_id: The room's id.
        connections: Every local connection in the room, in join order.
        users: How many connections each user holds in the room.
    """

    chat_id: ChatId
    connections: dict[ConnectionId, M] = field(default_factory=dict)
    users: dict[UserId, int] = field(default_factory=dict)


class RoomRegistry(Generic[M]):
    """Membership of rooms, with presence counted once per user."""

    __slots__ = ("_rooms",)

    def __init__(self) -> None:
        self._rooms: dict[ChatId, Room[M]] = {}

    def join(self, chat_id: ChatId, member: M) -> bool:
        """Add a connection to a room. Joining twice is a no-op.

        Args:
            chat_id: The room.
            member: The connection.

        Returns:
            True if this is the user's first connection in the room (announce a join).
        """
        room = self._rooms.get(chat_id)
        if room is None:
            room = self._rooms[chat_id] = Room(chat_id)
        if member.id in room.connections:
            return False
        room.connections[member.id] = member
        held = room.users.get(member.user_id, 0)
        room.users[member.user_id] = held + 1
        return held == 0

    def leave(self, chat_id: ChatId, member: M) -> bool:
        """Remove a connection from a room. Leaving twice is a no-op.

        Args:
            chat_id: The room.
            member: The connection.

        Returns:
            True if that was the user's last connection in the room (announce a leave).
        """
        room = self._rooms.get(chat_id)
        if room is None or room.connections.pop(member.id, None) is None:
            return False
        held = room.users[member.user_id] - 1
        if held:
            room.users[member.user_id] = held
            return False
        del room.users[member.user_id]
        if not room.connections:
            del self._rooms[chat_id]
        return True

    def room(self, chat_id: ChatId) -> Room[M] | None:
        """The room, or None if nobody is in it."""
        return self._rooms.get(chat_id)

    def members(self, chat_id: ChatId) -> list[UserId]:
        """The users in a room, each once, in the order they first joined."""
        room = self._rooms.get(chat_id)
        return list(room.users) if room else []

    def sample(self, chat_id: ChatId, limit: int) -> list[UserId]:
        """At most ``limit`` users of a room, in the order they joined; O(limit)."""
        room = self._rooms.get(chat_id)
        if room is None:
            return []
        users = room.users
        if len(users) <= limit:
            return list(users)
        return list(islice(users, limit))

    def user_count(self, chat_id: ChatId) -> int:
        """How many distinct users are in a room."""
        room = self._rooms.get(chat_id)
        return len(room.users) if room else 0

    def connection_count(self, chat_id: ChatId) -> int:
        """How many connections are in a room."""
        room = self._rooms.get(chat_id)
        return len(room.connections) if room else 0

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[ChatId]:
        return iter(self._rooms)

    def __contains__(self, chat_id: object) -> bool:
        return chat_id in self._rooms


def page_members(
    users: Iterable[str], after: str | None, limit: int
) -> tuple[list[str], bool]:
    """One page of a member list, ordered by user id (code point order).

    A client that pages from ``after=None``, passing the last user of each page as
    the next ``after``, gets every user present throughout exactly once, and no user
    twice, whoever joins or leaves meanwhile. O(members) per page.

    Args:
        users: The room's users, each once, in any order.
        after: The last user of the previous page, or None for the first page.
        limit: At most this many users in the page (at least 1).

    Returns:
        The page, and whether users come after it.
    """
    rest = users if after is None else (u for u in users if u > after)
    page = heapq.nsmallest(limit + 1, rest)
    more = len(page) > limit
    return page[:limit], more
