"""How a manager's rooms reach their members: one process, or several.

Imports: anyio and the standard library (core layer).

A :class:`~wschat.ConnectionManager` owns the connections of this process and the
local operations on them (:class:`LocalRooms`: fan a frame out to a room, send to a
user, close a user or a room, attach a joined connection, read membership). What
crosses processes is the job of its :class:`Delivery`, chosen once when the manager
starts or stops, never per call:

- :class:`LocalDelivery`: one process (the in-memory default, or a shared backplane
  while the manager is not running). Everything is delivered here and now.
- :class:`~wschat.cluster.Cluster`: a shared backplane while the manager runs. It
  uses the :class:`LocalRooms` surface, and nothing else of the manager.
"""

from __future__ import annotations

from typing import Any, Final, Literal, Protocol

from .backplane.base import Backplane
from .connection import Connection
from .errors import WSChatError
from .ids import ChatId, UserId
from .rooms import RoomRegistry

__all__ = ["NOT_RUNNING", "Delivery", "LocalDelivery", "LocalRooms"]

#: Why a shared backplane reports unhealthy before the manager runs.
NOT_RUNNING: Final = (
    "the manager is not running: add lifespan=manager.lifespan "
    "(FastAPI, Starlette) or run it with `async with manager:`"
)


class LocalRooms(Protocol):
    """The manager's local-delivery surface: this process's connections only.

    Each call is synchronous and never blocks (it only touches outboxes). A
    :class:`Delivery` uses these and nothing else of the manager.
    """

    @property
    def node_id(self) -> str:
        """This process's id, in message ids and on the backplane."""
        ...

    @property
    def presence(self) -> bool:
        """Whether ``presence`` frames are sent."""
        ...

    @property
    def registry(self) -> RoomRegistry[Connection]:
        """Room membership in this process (read it; the manager changes it)."""
        ...

    def broadcast_local(
        self, chat_id: ChatId, frame: str, *, defer: bool = False
    ) -> int:
        """Put ``frame`` into the outbox of every member of the room here."""
        ...

    def send_to_user_local(self, user_id: UserId, frame: str) -> int:
        """Put ``frame`` into the outbox of every joined connection of the user here."""
        ...

    def close_user_local(self, user_id: UserId, error: WSChatError) -> int:
        """Close every connection of the user here, those waiting for a room too."""
        ...

    def close_room_local(self, chat_id: ChatId, error: WSChatError) -> int:
        """Close every connection in the room here."""
        ...

    def attach(self, conn: Connection) -> bool:
        """Join a connection that waits for its room; False if it is gone."""
        ...

    def announce_presence(
        self, chat_id: ChatId, event: Literal["join", "leave"], user: UserId
    ) -> None:
        """Tell the room's members here, soon, that ``user`` joined or left it.

        Coalesced with the room's other joins and leaves of the sweep interval
        (:mod:`wschat.announcer`). Call it only when ``presence`` is on.
        """
        ...


class Delivery(Protocol):
    """What the manager leaves to its delivery: the part that may cross processes.

    The manager calls these from its own public methods; each is synchronous and
    never blocks.
    """

    def join(self, conn: Connection) -> None:
        """A new connection waits: attach it (``LocalRooms.attach``) now or later."""
        ...

    def user_joining(self, chat_id: ChatId, user: UserId) -> None:
        """The user's first connection here is joining the room.

        Called before its ``ready`` frame is built (so that the room's count holds
        the user), then :meth:`user_joined` once it is queued.
        """
        ...

    def user_joined(self, chat_id: ChatId, user: UserId) -> None:
        """The user's first connection here joined the room."""
        ...

    def user_left(self, chat_id: ChatId, user: UserId) -> None:
        """The user's last connection here left the room (maybe emptying it)."""
        ...

    def broadcast(self, chat_id: ChatId, frame: str) -> int:
        """Deliver a frame to every member of the room; how many here took it."""
        ...

    def publish(self, sender: Connection, frame: str) -> int:
        """Deliver a chat message from ``sender`` to its room; how many here took it."""
        ...

    def send_to_user(self, user_id: UserId, frame: str) -> int:
        """Deliver a frame to every connection of a user; how many here took it."""
        ...

    def close_user(self, user_id: UserId, error: WSChatError) -> int:
        """Close every connection of a user; how many here were closed."""
        ...

    def close_room(self, chat_id: ChatId, error: WSChatError) -> int:
        """Close every connection in a room; how many here were closed."""
        ...

    def members(self, chat_id: ChatId) -> list[UserId]:
        """Users in the room, each once, as far as known without I/O."""
        ...

    def user_count(self, chat_id: ChatId) -> int:
        """Distinct users in the room, as far as known without I/O."""
        ...

    def sample_members(self, chat_id: ChatId, limit: int) -> list[UserId]:
        """At most ``limit`` users in the room (those here first), without I/O."""
        ...

    async def room_members(self, chat_id: ChatId) -> list[UserId]:
        """Users in the room, sorted, asked of the backplane where there is one."""
        ...

    def health(self) -> dict[str, Any]:
        """The backplane's name and health, for ``/status``."""
        ...

    async def reserve(self, user_id: UserId, cap: int) -> str | None:
        """Take one of the user's ``cap`` connection slots in every process.

        Returns:
            The slot to :meth:`release` when the connection ends, or None when the
            cap is only counted in this process (one process; a backplane without
            shared slots; or one that cannot be reached now).

        Raises:
            TooManyConnections: The user holds ``cap`` connections in all.
        """
        ...

    def release(self, user_id: UserId, slot: str) -> None:
        """Free a slot :meth:`reserve` took. Never blocks."""
        ...


class LocalDelivery:
    """Delivery in this process alone: every operation is local, at once.

    Args:
        local: The manager's local surface.
        backplane: The manager's backplane; a shared one (not running now) only
            makes :meth:`health` report that the manager is not running.
    """

    __slots__ = ("_backplane", "_local")

    def __init__(self, local: LocalRooms, backplane: Backplane) -> None:
        self._local = local
        self._backplane = backplane

    def join(self, conn: Connection) -> None:
        self._local.attach(conn)

    def user_joining(self, chat_id: ChatId, user: UserId) -> None:
        pass  # the registry counts the user already

    def user_joined(self, chat_id: ChatId, user: UserId) -> None:
        self._announce(chat_id, "join", user)

    def user_left(self, chat_id: ChatId, user: UserId) -> None:
        self._announce(chat_id, "leave", user)

    def _announce(self, chat_id: ChatId, event: Any, user: UserId) -> None:
        local = self._local
        if local.presence:
            local.announce_presence(chat_id, event, user)

    def broadcast(self, chat_id: ChatId, frame: str) -> int:
        return self._local.broadcast_local(chat_id, frame)

    def publish(self, sender: Connection, frame: str) -> int:
        return self._local.broadcast_local(sender.chat_id, frame)

    def send_to_user(self, user_id: UserId, frame: str) -> int:
        return self._local.send_to_user_local(user_id, frame)

    def close_user(self, user_id: UserId, error: WSChatError) -> int:
        return self._local.close_user_local(user_id, error)

    def close_room(self, chat_id: ChatId, error: WSChatError) -> int:
        return self._local.close_room_local(chat_id, error)

    def members(self, chat_id: ChatId) -> list[UserId]:
        return self._local.registry.members(chat_id)

    def user_count(self, chat_id: ChatId) -> int:
        return self._local.registry.user_count(chat_id)

    def sample_members(self, chat_id: ChatId, limit: int) -> list[UserId]:
        return self._local.registry.sample(chat_id, limit)

    async def room_members(self, chat_id: ChatId) -> list[UserId]:
        return sorted(self.members(chat_id))

    async def reserve(self, user_id: UserId, cap: int) -> str | None:
        return None  # the manager counts this process's connections itself

    def release(self, user_id: UserId, slot: str) -> None:
        return None

    def health(self) -> dict[str, Any]:
        backplane = self._backplane
        if getattr(backplane, "local_only", False):
            return {"name": backplane.name, "healthy": True}
        health = backplane.health().as_dict()
        health["healthy"] = False
        health["detail"] = NOT_RUNNING
        return health
