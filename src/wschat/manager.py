"""The ConnectionManager: connections, rooms, fan-out, and per-user operations.

Imports: anyio and the standard library (core layer).

A broadcast encodes its frame once and puts it into each member's bounded outbox
without awaiting anything, so a slow, stuck or vanished client can never delay the
others. ``connect`` and ``disconnect`` are idempotent and O(1); nothing in the fan-out
path walks all rooms or all connections.

With a shared backplane (``RedisBackplane``), the manager is also an async context
manager: while it runs, a :class:`~wschat.backplane.bridge.Bridge` carries broadcasts,
presence and per-user operations to the other processes. It imports the backplane
interface, never ``redis``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Final

from .auth import Principal
from .backplane.base import Backplane, BackplaneUnavailable
from .backplane.bridge import Bridge
from .backplane.memory import MemoryBackplane
from .backplane.runner import BridgeRunner
from .connection import Connection, OutboxLimits, OverflowPolicy
from .errors import (
    ConfigurationError,
    Forbidden,
    GoingAway,
    SlowConsumer,
    TooManyConnections,
    WSChatError,
    check_number,
)
from .ids import ChatId, ConnectionId, IdSource, UserId, new_node_id
from .protocol import JSON, encode_message, encode_presence
from .rooms import RoomRegistry
from .status import ManagerStats
from .sweeper import WriterSweeper

__all__ = ["DEFAULT_MAX_CONNECTIONS_PER_USER", "ConnectionManager", "ManagerStats"]

log = logging.getLogger("wschat")

#: One user's open connections per process, by default (docs/options.md says why).
DEFAULT_MAX_CONNECTIONS_PER_USER: Final = 16


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
        max_connections_per_user: int | None = DEFAULT_MAX_CONNECTIONS_PER_USER,
        presence: bool = True,
        node_id: str | None = None,
        backplane: Backplane | None = None,
        presence_ttl: float = 30.0,
        publish_queue: int = 10_000,
    ) -> None:
        """Create a manager (in-memory by default; nothing to start or stop).

        With a shared backplane (``RedisBackplane``), run the manager while the app
        serves: ``async with manager:``, or ``lifespan=manager.lifespan`` for FastAPI
        and Starlette (``chat_app`` does it itself).

        Args:
            outbox_max_messages: Frames that may wait for one client.
            outbox_max_bytes: Bytes that may wait for one client.
            overflow: ``"close"`` (1013 ``slow_consumer``), ``"drop_newest"`` or
                ``"drop_oldest"`` (frames are dropped, then a ``resync`` is sent).
            max_connections_per_user: Cap on one user's open connections in this
                process (default 16); the next is refused with 4429
                ``too_many_connections``. None for no cap.
            presence: Whether to broadcast ``presence`` join/leave frames.
            node_id: This process's id in message and connection ids.
            backplane: How processes share rooms; default an in-memory one for
                this process alone.
            presence_ttl: Seconds after which the presence of a process that died
                expires; it renews its leases every third of that.
            publish_queue: Frames that may wait to be published to the backplane;
                past that, senders get ``delivery_degraded``.

        Raises:
            ConfigurationError: A limit is not a finite number in range (counts are
                integers of at least 1), or the policy is unknown.
        """
        check_number(
            "presence_ttl", presence_ttl, minimum=0, above=True, unit="seconds"
        )
        for name, count in (
            ("outbox_max_messages", outbox_max_messages),
            ("outbox_max_bytes", outbox_max_bytes),
            ("publish_queue", publish_queue),
        ):
            check_number(name, count, minimum=1, integer=True)
        check_number(
            "max_connections_per_user",
            max_connections_per_user,
            minimum=1,
            integer=True,
            none="for no cap",
        )
        if node_id is not None and "|" in node_id:
            raise ConfigurationError("node_id must not contain '|'")
        self.limits = OutboxLimits(outbox_max_messages, outbox_max_bytes, overflow)
        cap = max_connections_per_user
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int)):
            raise ConfigurationError(
                f"max_connections_per_user must be an int or None; got {cap!r}"
            )
        if cap is not None and cap < 1:
            raise ConfigurationError(
                "max_connections_per_user must be at least 1, or None for no cap"
            )
        self.max_connections_per_user = cap
        self.presence = presence
        self.node_id = node_id or new_node_id()
        self.registry: RoomRegistry[Connection] = RoomRegistry()
        self._connections: dict[ConnectionId, Connection] = {}
        self._by_user: dict[UserId, dict[ConnectionId, Connection]] = {}
        self._sweeper = WriterSweeper()
        self._conn_ids = IdSource("c" + self.node_id)
        self._msg_ids = IdSource("m" + self.node_id)
        self._messages = 0
        self._deliveries = 0
        self._slow = 0
        self._dropped = 0
        self._pending_auth = 0
        self.started_at = time.time()
        self.backplane: Backplane = (
            MemoryBackplane() if backplane is None else backplane
        )
        self.backplane_name = self.backplane.name
        self.presence_ttl = presence_ttl
        self.publish_queue = publish_queue
        self._bridge: Bridge | None = None
        self._runner = BridgeRunner(self)

    def __repr__(self) -> str:
        return f"<ConnectionManager node={self.node_id} connections={len(self)}>"

    def __len__(self) -> int:
        return len(self._connections)

    def __bool__(self) -> bool:
        # An empty manager is still a manager: `manager or default` must not drop it.
        return True

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
            sweeper=self._sweeper,
        )
        bridge = self._bridge
        if bridge is not None and not bridge.room_ready(chat_id):
            # First local joiner of a room: attached once the backplane confirms
            # the subscription, so nothing published after ``ready`` is missed.
            self._connections[conn.id] = conn
            if held is None:
                held = self._by_user[user] = {}
            held[conn.id] = conn
            bridge.join_later(conn, first_frame)
            return conn
        if first_frame is not None:
            conn.put_nowait(first_frame(conn))
        self._connections[conn.id] = conn
        if held is None:
            held = self._by_user[user] = {}
        held[conn.id] = conn
        if self.registry.join(chat_id, conn):
            if bridge is not None:
                bridge.user_joined(chat_id, user)
            elif self.presence:
                self._announce(chat_id, "join", user)
        return conn

    def _attach(
        self, conn: Connection, first_frame: Callable[[Connection], str] | None
    ) -> None:
        """Join a connection that waited for its room's subscription (backplane)."""
        if first_frame is not None:
            conn.put_nowait(first_frame(conn))
        if self.registry.join(conn.chat_id, conn):
            if self._bridge is not None:
                self._bridge.user_joined(conn.chat_id, conn.user_id)
            elif self.presence:
                self._announce(conn.chat_id, "join", conn.user_id)

    def disconnect(self, conn: Connection) -> None:
        """Remove a connection from its room and from the manager. Idempotent."""
        if self._connections.pop(conn.id, None) is None:
            return
        held = self._by_user.get(conn.user_id)
        if held is not None:
            held.pop(conn.id, None)
            if not held:
                del self._by_user[conn.user_id]
        if isinstance(conn.closing, SlowConsumer):
            self._slow += 1
        self._dropped += conn.dropped + conn.resynced
        bridge = self._bridge
        if self.registry.leave(conn.chat_id, conn):
            if bridge is not None:
                bridge.user_left(conn.chat_id, conn.user_id)
            elif self.presence:
                self._announce(conn.chat_id, "leave", conn.user_id)
        if bridge is not None and self.registry.room(conn.chat_id) is None:
            bridge.room_emptied(conn.chat_id)

    def _announce(self, chat_id: ChatId, event: Any, user: UserId) -> None:
        frame = encode_presence(
            chat_id=chat_id,
            event=event,
            user=user,
            count=self.registry.user_count(chat_id),
        )
        self._fanout(chat_id, frame, defer=True)

    # -- fan-out ---------------------------------------------------------------------

    def broadcast_nowait(self, chat_id: ChatId, frame: str) -> int:
        """Put an encoded frame into the outbox of every member of a room.

        Never awaits a socket: a slow member only fills its own outbox. With a
        shared backplane, the frame is also published to the other processes.

        Args:
            chat_id: The room.
            frame: The encoded frame, sent as is to every member.

        Returns:
            How many outboxes in this process took the frame.
        """
        self._sweeper.note_caller()
        if self._bridge is not None:
            self._bridge.forward_room(chat_id, frame)
        return self._fanout(chat_id, frame)

    def _fanout(self, chat_id: ChatId, frame: str, *, defer: bool = False) -> int:
        room = self.registry.room(chat_id)
        if room is None:
            return 0
        delivered = 0
        conns: Iterable[Connection] = room.connections.values()
        if self._sweeper.several:
            # Used from several threads (a TestClient without `with`): connections
            # of other loops join and leave meanwhile, from theirs. Iterate a copy.
            conns = list(conns)
        # Two loops rather than one passing defer=defer: this is the broadcast hot
        # path, and a keyword argument per recipient is not free.
        if defer:
            for conn in conns:
                if conn.put_nowait(frame, defer=True):
                    delivered += 1
        else:
            for conn in conns:
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

        The members in this process get it at once; with a shared backplane it is
        then published, in order, to the other processes. If that fails, the sender
        gets an ``error`` frame coded ``delivery_degraded``.

        Returns:
            How many outboxes in this process took it.
        """
        self._messages += 1
        frame = self.message_frame(sender, body, client_id)
        delivered = self._fanout(sender.chat_id, frame)
        if self._bridge is not None:
            self._bridge.forward_room(sender.chat_id, frame, sender)
        return delivered

    def send_nowait(self, connection_id: ConnectionId, frame: str) -> bool:
        """Queue a frame for one connection. False if it is gone or did not take it."""
        self._sweeper.note_caller()
        conn = self._connections.get(connection_id)
        return conn is not None and conn.put_nowait(frame)

    def send_to_user(self, user_id: UserId, frame: str) -> int:
        """Queue a frame for every connection of a user, in every room and process.

        Returns:
            How many connections in this process took it.
        """
        self._sweeper.note_caller()
        if self._bridge is not None:
            self._bridge.forward_user(user_id, frame)
        return self._send_user_local(user_id, frame)

    def _send_user_local(self, user_id: UserId, frame: str) -> int:
        held = self._by_user.get(user_id)
        if not held:
            return 0
        return sum(conn.put_nowait(frame) for conn in list(held.values()))

    def close_user(self, user_id: UserId, error: WSChatError | None = None) -> int:
        """Close every connection of a user in every process (kick, logout everywhere).

        Args:
            user_id: The user.
            error: The close code and reason; default 4403 ``forbidden``.

        Returns:
            How many connections in this process were closed.
        """
        self._sweeper.note_caller()
        error = error or Forbidden("removed from the chat by the server")
        if self._bridge is not None:
            self._bridge.forward_close(user_id, error)
        return self._close_user_local(user_id, error)

    def _close_user_local(self, user_id: UserId, error: WSChatError) -> int:
        held = self._by_user.get(user_id)
        if not held:
            return 0
        conns = list(held.values())
        for conn in conns:
            conn.abort(error)
        return len(conns)

    def close_room(self, chat_id: ChatId, error: WSChatError | None = None) -> int:
        """Close every connection in a room, in every process.

        Returns:
            How many connections in this process were closed.
        """
        self._sweeper.note_caller()
        error = error or Forbidden("this chat was closed")
        if self._bridge is not None:
            self._bridge.forward_close_room(chat_id, error)
        return self._close_room_local(chat_id, error)

    def _close_room_local(self, chat_id: ChatId, error: WSChatError) -> int:
        room = self.registry.room(chat_id)
        if room is None:
            return 0
        conns = list(room.connections.values())
        for conn in conns:
            conn.abort(error)
        return len(conns)

    def close_all(self, error: WSChatError | None = None) -> int:
        """Close every connection, by default with 1001 ``going_away``.

        uvicorn closes every socket with 1012 itself before the app's lifespan
        shutdown runs; call this earlier (on a deploy hook) to send 1001 with a reason.
        """
        self._sweeper.note_caller()
        conns = list(self._connections.values())
        for conn in conns:
            conn.abort(error or GoingAway())
        return len(conns)

    def begin_auth(self, cap: int | None) -> bool:
        """Count a socket that waits for its first-message ``auth`` frame.

        Args:
            cap: How many may wait at once; None for no cap.

        Returns:
            False (and nothing counted) if ``cap`` sockets already wait; otherwise
            True, and the caller must call :meth:`end_auth` when the wait ends.
        """
        if cap is not None and self._pending_auth >= cap:
            return False
        self._pending_auth += 1
        return True

    def end_auth(self) -> None:
        """A socket counted by :meth:`begin_auth` stopped waiting (in or out)."""
        self._pending_auth -= 1

    def connections(self, chat_id: ChatId | None = None) -> list[Connection]:
        """Open connections, of one room or of all."""
        self._sweeper.note_caller()  # the caller may send to them or abort them
        if chat_id is None:
            return list(self._connections.values())
        room = self.registry.room(chat_id)
        return list(room.connections.values()) if room else []

    def members(self, chat_id: ChatId) -> list[UserId]:
        """Users in a room, each once.

        With a shared backplane, users in other processes too, as this process last
        heard (rooms with local members only); :meth:`room_members` asks the
        backplane.
        """
        if self._bridge is not None:
            return self._bridge.members(chat_id)
        return self.registry.members(chat_id)

    def user_count(self, chat_id: ChatId) -> int:
        """Distinct users in a room (see :meth:`members`)."""
        if self._bridge is not None:
            return self._bridge.user_count(chat_id)
        return self.registry.user_count(chat_id)

    async def room_members(self, chat_id: ChatId) -> list[UserId]:
        """Users in a room across every process, asked of the backplane.

        Falls back to :meth:`members` when the backplane cannot be reached or the
        manager is not running.
        """
        if self._bridge is not None:
            with contextlib.suppress(BackplaneUnavailable):
                users = await self.backplane.presence_members(chat_id)
                return [UserId(u) for u in users]
        return sorted(self.members(chat_id))

    async def room_user_count(self, chat_id: ChatId) -> int:
        """Distinct users in a room across every process (see :meth:`room_members`)."""
        return len(await self.room_members(chat_id))

    def user_connections(self, user_id: UserId) -> list[Connection]:
        """Every open connection of a user."""
        self._sweeper.note_caller()  # as in connections()
        return list(self._by_user.get(user_id, {}).values())

    def backplane_health(self) -> dict[str, Any]:
        """The backplane's name and health, for ``/status``.

        ``healthy`` is False while messages cannot reach the other processes, or
        when a shared backplane is configured but the manager is not running.
        """
        return self._runner.health()

    # -- running with a shared backplane ---------------------------------------------

    async def __aenter__(self) -> ConnectionManager:
        """Run the backplane (listener, publisher, presence heartbeats).

        Nothing to do for the default in-memory backplane. Entering again while
        running is a no-op, so ``chat_app`` and your own lifespan may both do it.

        Raises:
            ConfigurationError: The backplane cannot run here (e.g. Redis on trio).
        """
        await self._runner.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._runner.exit()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run the manager for the app's lifetime.

        ``FastAPI(lifespan=manager.lifespan)`` or ``Starlette(lifespan=...)``.

        Args:
            app: The application (ignored; Starlette passes it).
        """
        async with self:
            yield

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
            writers=len(self._sweeper),
            pending_auth=self._pending_auth,
        )
