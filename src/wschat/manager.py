"""The ConnectionManager: connections, rooms, fan-out, and per-user operations.

Imports: anyio and the standard library (core layer).

A broadcast encodes its frame once and puts it into each member's bounded outbox
without awaiting anything, so a slow, stuck or vanished client can never delay the
others. ``connect`` and ``disconnect`` are idempotent and O(1); nothing in the fan-out
path walks all rooms or all connections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .auth import Principal
from .connection import Connection, OutboxLimits, OverflowPolicy
from .errors import Forbidden, GoingAway, TooManyConnections, WSChatError
from .ids import ChatId, ConnectionId, IdSource, UserId, new_node_id
from .protocol import JSON, encode_message, encode_presence
from .rooms import RoomRegistry

__all__ = ["ConnectionManager", "ManagerStats"]

log = logging.getLogger("wschat")


@dataclass(frozen=True, slots=True)
class ManagerStats:
    """A snapshot of the manager, safe to publish (no user ids, no tokens).

    Attributes:
        connections: Open connections in this process.
        rooms: Rooms with at least one local member.
        users: Distinct users connected to this process.
        messages: Chat messages broadcast since start.
        deliveries: Frames put into outboxes since start.
        slow_consumers: Connections closed because their outbox overflowed.
        dropped: Frames dropped by a drop policy since start.
        backplane: Name of the backplane in use.
    """

    connections: int
    rooms: int
    users: int
    messages: int
    deliveries: int
    slow_consumers: int
    dropped: int
    backplane: str


class ConnectionManager:
    """Tracks connections and rooms in this process and fans messages out.

    Example::

        manager = ConnectionManager()
        count = manager.broadcast_nowait(ChatId("lobby"), frame)
    """

    def __init__(
        self,
        *,
        outbox_max_messages: int = 1024,
        outbox_max_bytes: int = 4 * 1024 * 1024,
        overflow: OverflowPolicy = "close",
        max_connections_per_user: int | None = None,
        presence: bool = True,
        node_id: str | None = None,
    ) -> None:
        """Create a manager (in-memory; nothing to start or stop).

        Args:
            outbox_max_messages: Frames that may wait for one client.
            outbox_max_bytes: Bytes that may wait for one client.
            overflow: ``"close"`` (1013 ``slow_consumer``), ``"drop_newest"`` or
                ``"drop_oldest"`` (frames are dropped, then a ``resync`` is sent).
            max_connections_per_user: Cap on one user's open connections in this
                process; the next is refused with 4429 ``too_many_connections``.
            presence: Whether to broadcast ``presence`` join/leave frames.
            node_id: This process's id in message and connection ids.

        Raises:
            ConfigurationError: A limit is below 1 or the policy is unknown.
        """
        self.limits = OutboxLimits(outbox_max_messages, outbox_max_bytes, overflow)
        self.max_connections_per_user = max_connections_per_user
        self.presence = presence
        self.node_id = node_id or new_node_id()
        self.registry: RoomRegistry[Connection] = RoomRegistry()
        self._connections: dict[ConnectionId, Connection] = {}
        self._by_user: dict[UserId, dict[ConnectionId, Connection]] = {}
        self._conn_ids = IdSource("c" + self.node_id)
        self._msg_ids = IdSource("m" + self.node_id)
        self._messages = 0
        self._deliveries = 0
        self._slow = 0
        self._dropped = 0
        self.started_at = time.time()
        self.backplane_name = "memory"

    def __repr__(self) -> str:
        return f"<ConnectionManager node={self.node_id} connections={len(self)}>"

    def __len__(self) -> int:
        return len(self._connections)

    # -- lifecycle of one connection -------------------------------------------------

    def connect(
        self,
        principal: Principal,
        chat_id: ChatId,
        *,
        batch: bool = False,
        limits: OutboxLimits | None = None,
        first_frame: Callable[[Connection], str] | None = None,
    ) -> Connection:
        """Register a new connection and join it to its room.

        Args:
            principal: The verified identity.
            chat_id: The room, already validated.
            batch: Whether the client opted in to ``batch`` frames.
            limits: Outbox limits for this connection; default the manager's.
            first_frame: Builds the frame queued before the connection joins the
                room (the ``ready`` frame), so it arrives before any broadcast.

        Returns:
            The connection; pass it to :meth:`disconnect` when it ends.

        Raises:
            TooManyConnections: The user is at ``max_connections_per_user``.
        """
        user = principal.user_id
        held = self._by_user.get(user)
        cap = self.max_connections_per_user
        if cap is not None and held is not None and len(held) >= cap:
            raise TooManyConnections(f"at most {cap} connections per user")
        conn = Connection(
            ConnectionId(self._conn_ids.next()),
            principal,
            chat_id,
            limits or self.limits,
            batch=batch,
        )
        if first_frame is not None:
            conn.put_nowait(first_frame(conn))
        self._connections[conn.id] = conn
        if held is None:
            held = self._by_user[user] = {}
        held[conn.id] = conn
        if self.registry.join(chat_id, conn) and self.presence:
            self._announce(chat_id, "join", user)
        return conn

    def disconnect(self, conn: Connection) -> None:
        """Remove a connection from its room and from the manager. Idempotent."""
        if self._connections.pop(conn.id, None) is None:
            return
        held = self._by_user.get(conn.user_id)
        if held is not None:
            held.pop(conn.id, None)
            if not held:
                del self._by_user[conn.user_id]
        if conn.closing is not None and conn.closing.code == "slow_consumer":
            self._slow += 1
        self._dropped += conn.dropped
        if self.registry.leave(conn.chat_id, conn) and self.presence:
            self._announce(conn.chat_id, "leave", conn.user_id)

    def _announce(self, chat_id: ChatId, event: Any, user: UserId) -> None:
        frame = encode_presence(
            chat_id=chat_id,
            event=event,
            user=user,
            count=self.registry.user_count(chat_id),
        )
        self.broadcast_nowait(chat_id, frame)

    # -- fan-out ---------------------------------------------------------------------

    def broadcast_nowait(self, chat_id: ChatId, frame: str) -> int:
        """Put an encoded frame into the outbox of every member of a room.

        Never awaits a socket: a slow member only fills its own outbox.

        Args:
            chat_id: The room.
            frame: The encoded frame, sent as is to every member.

        Returns:
            How many outboxes took the frame.
        """
        room = self.registry.room(chat_id)
        if room is None:
            return 0
        delivered = 0
        for conn in room.connections.values():
            if conn.put_nowait(frame):
                delivered += 1
        self._deliveries += delivered
        return delivered

    def message_frame(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> str:
        """Encode a chat message from ``sender`` with the server-owned fields set.

        Raises:
            ValueError: ``body`` cannot be encoded as JSON.
        """
        return encode_message(
            id=self._msg_ids.next(),
            chat_id=sender.chat_id,
            user=sender.user_id,
            body=body,
            ts=int(time.time() * 1000),
            client_id=client_id,
        )

    def publish_nowait(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> int:
        """Broadcast a chat message from ``sender`` to its room, sender included.

        Returns:
            How many outboxes took it.
        """
        self._messages += 1
        return self.broadcast_nowait(
            sender.chat_id, self.message_frame(sender, body, client_id)
        )

    def send_nowait(self, connection_id: ConnectionId, frame: str) -> bool:
        """Queue a frame for one connection. False if it is gone or did not take it."""
        conn = self._connections.get(connection_id)
        return conn is not None and conn.put_nowait(frame)

    def send_to_user(self, user_id: UserId, frame: str) -> int:
        """Queue a frame for every connection of a user, in every room.

        Returns:
            How many connections took it.
        """
        held = self._by_user.get(user_id)
        if not held:
            return 0
        return sum(conn.put_nowait(frame) for conn in list(held.values()))

    def close_user(self, user_id: UserId, error: WSChatError | None = None) -> int:
        """Close every connection of a user (kick, logout everywhere).

        Args:
            user_id: The user.
            error: The close code and reason; default 4403 ``forbidden``.

        Returns:
            How many connections were closed.
        """
        held = self._by_user.get(user_id)
        if not held:
            return 0
        conns = list(held.values())
        for conn in conns:
            conn.abort(error or Forbidden("removed from the chat by the server"))
        return len(conns)

    def close_room(self, chat_id: ChatId, error: WSChatError | None = None) -> int:
        """Close every connection in a room. Returns how many were closed."""
        room = self.registry.room(chat_id)
        if room is None:
            return 0
        conns = list(room.connections.values())
        for conn in conns:
            conn.abort(error or Forbidden("this chat was closed"))
        return len(conns)

    def close_all(self, error: WSChatError | None = None) -> int:
        """Close every connection, by default with 1001 ``going_away``.

        Call it from your shutdown code so clients learn why instead of seeing 1006.
        """
        conns = list(self._connections.values())
        for conn in conns:
            conn.abort(error or GoingAway())
        return len(conns)

    # -- introspection ---------------------------------------------------------------

    def connections(self, chat_id: ChatId | None = None) -> list[Connection]:
        """Open connections, of one room or of all."""
        if chat_id is None:
            return list(self._connections.values())
        room = self.registry.room(chat_id)
        return list(room.connections.values()) if room else []

    def members(self, chat_id: ChatId) -> list[UserId]:
        """Users in a room, each once."""
        return self.registry.members(chat_id)

    def user_count(self, chat_id: ChatId) -> int:
        """Distinct users in a room."""
        return self.registry.user_count(chat_id)

    def user_connections(self, user_id: UserId) -> list[Connection]:
        """Every open connection of a user."""
        return list(self._by_user.get(user_id, {}).values())

    def backplane_health(self) -> dict[str, Any]:
        """The backplane's name and health, for ``/status``."""
        return {"name": self.backplane_name, "healthy": True}

    def stats(self) -> ManagerStats:
        """A snapshot of counters; O(1)."""
        return ManagerStats(
            connections=len(self._connections),
            rooms=len(self.registry),
            users=len(self._by_user),
            messages=self._messages,
            deliveries=self._deliveries,
            slow_consumers=self._slow,
            dropped=self._dropped,
            backplane=self.backplane_name,
        )
