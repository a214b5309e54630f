"""The ConnectionManager: connections, rooms, fan-out, and per-user operations.

Imports: anyio and the standard library (core layer).

A broadcast encodes its frame once and puts it into each member's bounded outbox
without awaiting anything, so a slow, stuck or vanished client can never delay the
others. ``connect`` and ``disconnect`` are idempotent and O(1); nothing in the fan-out
path walks all rooms or all connections.

The manager owns this process's connections and the local operations on them (the
``*_local`` methods and :meth:`ConnectionManager.attach`: the
:class:`~wschat.delivery.LocalRooms` surface). Whether an operation also reaches other
processes is up to its delivery (:mod:`wschat.delivery`), chosen when the manager
starts and stops, never per call: in this process alone by default; with a shared
backplane (``RedisBackplane``), while the manager runs (``async with manager``), a
:class:`~wschat.cluster.Cluster` carries broadcasts, presence and per-user operations
to the other processes. It imports the backplane interface, never ``redis``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias

import anyio
import anyio.abc

from .announcer import (
    DEFAULT_COUNT_ONLY_ABOVE,
    DEFAULT_READY_MEMBERS,
    PresenceAnnouncer,
    PresenceFormat,
)
from .auth import Principal
from .backplane.base import Backplane
from .backplane.memory import MemoryBackplane
from .cluster import Cluster
from .connection import Connection, OutboxLimits, OverflowPolicy
from .deadlines import Deadlines
from .delivery import Delivery, LocalDelivery
from .errors import (
    ConfigurationError,
    Forbidden,
    GoingAway,
    HistoryUnavailable,
    SlowConsumer,
    TokenRevoked,
    TooManyConnections,
    WSChatError,
)
from .history.base import HistoryStore
from .history.memory import (
    DEFAULT_MAX_MEMORY_BYTES,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_TTL,
    MemoryHistoryStore,
)
from .ids import ChatId, ConnectionId, IdSource, UserId, new_node_id
from .messages import MessagePath, Submitted
from .protocol import (
    JSON,
    Published,
    Since,
    with_history_fields,
)
from .recovery import Holds
from .rooms import RoomRegistry
from .scrollback import Scrollback
from .status import ManagerStats
from .sweeper import WriterSweeper
from .validation import check_number

__all__ = [
    "DEFAULT_COUNT_ONLY_ABOVE",
    "DEFAULT_MAX_CONNECTIONS_PER_USER",
    "DEFAULT_READY_MEMBERS",
    "ConnectionManager",
    "ManagerStats",
    "Submitted",
]

#: Why history is off while a manager with a shared backplane runs on a store that
#: numbers rooms for one process only.
LOCAL_STORE_CLUSTERED: Final = (
    "history is off while the manager runs with a shared backplane: the in-memory "
    "store numbers rooms in one process only; pass history=RedisHistoryStore(...) "
    "(or another shared store), or history=False to silence this"
)

log = logging.getLogger("wschat")

#: One user's open connections per process, by default (docs/options.md says why).
DEFAULT_MAX_CONNECTIONS_PER_USER: Final = 16

#: Builds a connection's first frame (``ready``) once it joins its room.
FirstFrame: TypeAlias = Callable[[Connection], str]


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
        history: bool | HistoryStore = True,
        history_max_messages: int | None = None,
        history_ttl: float | None = None,
        history_max_memory_bytes: int | None = None,
        presence_format: PresenceFormat = "diff",
        presence_count_only_above: int | None = DEFAULT_COUNT_ONLY_ABOVE,
        ready_members: int = DEFAULT_READY_MEMBERS,
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
            presence: Whether to send ``presence`` frames (joins and leaves).
            node_id: This process's id in message and connection ids.
            backplane: How processes share rooms; default an in-memory one for
                this process alone.
            presence_ttl: Seconds after which the presence of a process that died
                expires; it renews its leases every third of that.
            publish_queue: Frames that may wait to be published to the backplane;
                past that, senders get ``delivery_degraded``.
            history: True (the default): number and keep recent messages in this
                process's memory (a ``MemoryHistoryStore`` sized by the three
                options below); a :class:`~wschat.history.HistoryStore` to use
                that one; False: no offsets, no recovery, no ``history`` frames.
                With a shared backplane, a store for one process only is off
                while the manager runs (docs/history.md).
            history_max_messages: Messages kept per room (default 100); only with
                ``history=True``.
            history_ttl: Seconds a message is kept (default 300); only with
                ``history=True``.
            history_max_memory_bytes: Bound on the memory holding messages, all
                rooms together (default 64 MiB); only with ``history=True``.
            presence_format: ``"diff"`` (default): the joins and leaves of a sweep
                interval in one ``presence`` frame per room; ``"events"``: wschat
                0.1's frame per join or leave, for clients not yet updated.
            presence_count_only_above: Rooms with more distinct users than this
                (default 250) get count-only ``presence`` frames; None for names
                at any size.
            ready_members: At most this many members listed in ``ready`` (default
                100); the ``members`` request pages through the rest.

        Raises:
            ConfigurationError: A limit is not a finite number in range (counts are
                integers of at least 1), the policy is unknown, or a history size
                is given with other than ``history=True``.
        """
        check_number(
            "presence_ttl", presence_ttl, minimum=0, above=True, unit="seconds"
        )
        for name, count in (
            ("outbox_max_messages", outbox_max_messages),
            ("outbox_max_bytes", outbox_max_bytes),
            ("publish_queue", publish_queue),
            ("ready_members", ready_members),
        ):
            check_number(name, count, minimum=1, integer=True)
        check_number(
            "max_connections_per_user",
            max_connections_per_user,
            minimum=1,
            integer=True,
            none="for no cap",
        )
        check_number(
            "presence_count_only_above",
            presence_count_only_above,
            minimum=0,
            integer=True,
            none="for names at any room size",
        )
        if presence_format not in ("diff", "events"):
            raise ConfigurationError(
                f'presence_format must be "diff" or "events"; got {presence_format!r}'
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
        self.ready_members = ready_members
        self.announcer = PresenceAnnouncer(
            self.registry,
            self._deliver_presence,
            self.user_count,
            format=presence_format,
            count_only_above=presence_count_only_above,
        )
        # Connections that joined their room, in all and by user.
        self._connections: dict[ConnectionId, Connection] = {}
        self._by_user: dict[UserId, dict[ConnectionId, Connection]] = {}
        # Connections made but not joined yet (with a shared backplane, while their
        # room's subscription is confirmed), with what builds their first frame.
        self._waiting: dict[
            ConnectionId, tuple[Connection, FirstFrame | None, Since | None]
        ] = {}
        # The slot of the per-user cap each connection holds on a shared backplane.
        self._slots: dict[ConnectionId, tuple[UserId, str]] = {}
        self._sweeper = WriterSweeper()
        #: The token deadlines of this manager's connections (one heap, one task):
        #: the endpoint sets them; :meth:`disconnect` forgets them.
        self.deadlines: Deadlines[Connection] = Deadlines(self._joined)
        self._conn_ids = IdSource("c" + self.node_id)
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
        #: The history store configured (None: history off).
        self.history_store = _history_store(
            history, history_max_messages, history_ttl, history_max_memory_bytes
        )
        self._scrollback = (
            None
            if self.history_store is None
            else Scrollback(self.history_store, lambda: self.registry)
        )
        # The scrollback in use now: None while off (or clustered on a local store).
        self._history = self._scrollback
        # Joiners of an awaited store whose frames wait for their ready.
        self._holds = Holds()
        self._history_stack: contextlib.AsyncExitStack | None = None
        self._local = LocalDelivery(self, self.backplane)
        # Local delivery until a shared backplane runs (``async with manager``).
        self._delivery: Delivery = self._local
        self._cluster: Cluster | None = None
        # A message's path: numbered, kept, delivered (told of the changes above).
        self._path = MessagePath(
            self.node_id, self._delivery, self._history, self.broadcast_local
        )
        self._entered = 0

    def __repr__(self) -> str:
        return f"<ConnectionManager node={self.node_id} connections={len(self)}>"

    def __len__(self) -> int:
        return len(self._connections) + len(self._waiting)

    def __bool__(self) -> bool:
        # An empty manager is still a manager: `manager or default` must not drop it.
        return True

    # -- lifecycle of one connection -------------------------------------------------

    async def reserve(self, user_id: UserId) -> str | None:
        """Check the user's ``max_connections_per_user`` before :meth:`connect`.

        In this process first; then, with a shared backplane that keeps connection
        slots (``RedisBackplane``) while the manager runs, across every process:
        a slot is taken atomically, renewed every third of ``presence_ttl``, freed
        when the connection ends, and expires ``presence_ttl`` seconds after a
        process died. While the backplane cannot be reached the cap is counted in
        this process only (docs/auth.md, "The per-user cap").

        Args:
            user_id: The user about to connect.

        Returns:
            The slot taken, to pass to :meth:`connect` (which frees it on
            :meth:`disconnect`); None when only this process counts.

        Raises:
            TooManyConnections: The user is at the cap, here or in all.
        """
        cap = self.max_connections_per_user
        if cap is None:
            return None
        if self._held(user_id) >= cap:
            raise TooManyConnections(f"at most {cap} connections per user")
        return await self._delivery.reserve(user_id, cap)

    def release(self, user_id: UserId, slot: str | None) -> None:
        """Free a slot :meth:`reserve` took for a connection that was not made."""
        if slot is not None:
            self._delivery.release(user_id, slot)

    def connect(
        self,
        principal: Principal,
        chat_id: ChatId,
        *,
        batch: bool = False,
        limits: OutboxLimits | None = None,
        first_frame: FirstFrame | None = None,
        slot: str | None = None,
        since: Since | None = None,
    ) -> Connection:
        """Register a new connection and join it to its room.

        With a shared backplane, the first local joiner of a room joins once the
        backplane confirms the room's subscription (so nothing published after its
        ``ready`` is missed); until then nothing is sent to it, and only
        :meth:`close_user` and :meth:`close_all` reach it.

        Args:
            principal: The verified identity.
            chat_id: The room, already validated.
            batch: Whether the client opted in to ``batch`` frames.
            limits: Outbox limits for this connection; default the manager's.
            first_frame: Builds the frame queued as the connection joins the room
                (the ``ready`` frame), so it arrives before any other. With history
                on, the manager adds ``epoch``, ``offset`` and ``recovered`` to it
                (it must encode a JSON object), and queues the recovered messages
                right after it.
            since: What the client saw last (``?since=&epoch=``): the messages
                after it follow the first frame if the store still keeps them all.
                With a store that awaits (not the in-memory one), the first frame
                and the recovered messages are queued by :meth:`recover`, which
                the caller must then await (the endpoint does).
            slot: What :meth:`reserve` returned: freed when the connection ends.

        Returns:
            The connection; pass it to :meth:`disconnect` when it ends.

        Raises:
            TooManyConnections: The user is at ``max_connections_per_user``.
        """
        user = principal.user_id
        cap = self.max_connections_per_user
        if cap is not None and self._held(user) >= cap:
            raise TooManyConnections(f"at most {cap} connections per user")
        conn = Connection(
            ConnectionId(self._conn_ids.next()),
            principal,
            chat_id,
            limits or self.limits,
            batch=batch,
            sweeper=self._sweeper,
        )
        if slot is not None:
            self._slots[conn.id] = (user, slot)
        self._waiting[conn.id] = (conn, first_frame, since)
        history = self._history
        if history is not None and not history.sync:
            self._holds.hold(conn, since)
        self._delivery.join(conn)
        return conn

    def _held(self, user: UserId) -> int:
        """How many connections the user holds here, joined or waiting to join."""
        held = self._by_user.get(user)
        count = len(held) if held is not None else 0
        if self._waiting:
            count += sum(1 for c, _, _ in self._waiting_now() if c.user_id == user)
        return count

    def _waiting_now(
        self,
    ) -> list[tuple[Connection, FirstFrame | None, Since | None]]:
        # A copy made in one step: another thread's connect() may change the dict.
        return list(self._waiting.values())

    def attach(self, conn: Connection) -> bool:
        """Join a connection made by :meth:`connect` that waits for its room.

        Queues its first frame (``ready``), registers it for its user and joins it
        to the room (announcing the user's first connection there). The delivery
        calls it (at once in one process; with a shared backplane, once the room's
        subscription is confirmed); an application never needs to.

        Returns:
            False if the connection does not wait (it ended meanwhile, or joined).
        """
        entry = self._waiting.pop(conn.id, None)
        if entry is None:
            return False
        _, first_frame, since = entry
        # In the room before its first frame is built, so that ``ready`` counts it;
        # nothing reaches the connection in between (all of this is synchronous).
        first = self.registry.join(conn.chat_id, conn)
        if first:
            self._delivery.user_joining(conn.chat_id, conn.user_id)
        # An awaited store: joined now, so that nothing published from here on is
        # missed, but its frames wait until recover() queued ready and the replay.
        holding = bool(self._holds) and self._holds.attach(conn, first_frame)
        if not holding and first_frame is not None:
            ready = first_frame(conn)
            history = self._history
            if history is None:
                conn.put_nowait(ready)
            else:
                # Read and join in one step: nothing published falls between.
                joined = history.join_nowait(
                    conn.chat_id, since, conn.limits.max_bytes // 2
                )
                conn.put_nowait(
                    with_history_fields(
                        ready, joined.epoch, joined.offset, joined.recovered
                    )
                )
                for frame in joined.frames:
                    conn.put_nowait(frame)
        self._connections[conn.id] = conn
        user = conn.user_id
        held = self._by_user.get(user)
        if held is None:
            held = self._by_user[user] = {}
        held[conn.id] = conn
        if first:
            self._delivery.user_joined(conn.chat_id, user)
        return True

    def _joined(self, conn: Connection) -> bool:
        return conn.id in self._connections

    def disconnect(self, conn: Connection) -> None:
        """Remove a connection from its room and from the manager. Idempotent."""
        if self._slots:
            slot = self._slots.pop(conn.id, None)
            if slot is not None:
                self._delivery.release(*slot)
        if conn.cutoff is not None:
            self.deadlines.discard(conn)
        if self._holds:
            self._holds.drop(conn)
        if self._waiting.pop(conn.id, None) is not None:
            self._ended(conn)  # it never joined its room: nothing to leave
            return
        if self._connections.pop(conn.id, None) is None:
            return
        held = self._by_user.get(conn.user_id)
        if held is not None:
            held.pop(conn.id, None)
            if not held:
                del self._by_user[conn.user_id]
        self._ended(conn)
        if self.registry.leave(conn.chat_id, conn):
            self._delivery.user_left(conn.chat_id, conn.user_id)

    def _ended(self, conn: Connection) -> None:
        if isinstance(conn.closing, SlowConsumer):
            self._slow += 1
        self._dropped += conn.dropped + conn.resynced

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
        return self._delivery.broadcast(chat_id, frame)

    def broadcast_local(
        self, chat_id: ChatId, frame: str, *, defer: bool = False
    ) -> int:
        """Put a frame into the outbox of every member of a room in this process.

        The local half of :meth:`broadcast_nowait`, for the delivery; call it from
        the event loop serving the manager.

        Args:
            chat_id: The room.
            frame: The encoded frame.
            defer: Not urgent (``presence``): see ``Connection.put_nowait``.

        Returns:
            How many outboxes took the frame.
        """
        room = self.registry.room(chat_id)
        if room is None:
            return 0
        if not defer and self.announcer.pending and chat_id in self.announcer.pending:
            # Presence is never reordered with what follows it: send the room's
            # pending joins and leaves first.
            self.announcer.flush_room(chat_id)
        held = self._holds.by_room
        if held and chat_id in held:
            delivered = self._holds.broadcast(chat_id, room.connections, frame, defer)
            self._deliveries += delivered
            return delivered
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

    async def recover(self, conn: Connection) -> None:
        """Queue ``ready`` and the recovered messages of a joiner of an awaited store.

        The endpoint calls it once the connection is open. With a store that never
        awaits (the in-memory one) or with history off, :meth:`attach` did it all
        already and this returns at once. Otherwise it waits until the connection
        joined its room (its live frames are held from then), reads the store, and
        in one step queues ``ready``, the replay, and the held frames the replay
        did not cover; live messages the replay covered are dropped for
        :data:`~wschat.scrollback.HOLD_FILTER_SECONDS` more
        (:class:`~wschat.recovery.Holds`).
        """
        if self._holds:
            await self._holds.recover(conn, self._scrollback)

    def _deliver_presence(self, chat_id: ChatId, frame: str) -> None:
        self.broadcast_local(chat_id, frame, defer=True)

    def announce_presence(
        self, chat_id: ChatId, event: Literal["join", "leave"], user: UserId
    ) -> None:
        """Tell the room's members here, soon, that ``user`` joined or left it.

        For the delivery, once presence decided on it (a user's first connection
        in the room, or their last one gone, in every process): the joins and
        leaves of a sweep interval reach each member in one frame.
        """
        self.announcer.changed(chat_id, event, user)

    def message_frame(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> str:
        """Encode a chat message from ``sender`` with the server-owned fields set.

        Raises:
            ValueError: ``body`` cannot be encoded as JSON.
        """
        return self._path.message_frame(sender, body, client_id)

    def publish_nowait(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> int:
        """Broadcast a chat message from ``sender`` to its room, sender included.

        The members in this process get it at once; with a shared backplane it is
        then published, in order, to the other processes. If that fails, the sender
        gets an ``error`` frame coded ``delivery_degraded``. With history on, the
        message is numbered and kept first (its frame has an ``offset``).

        Returns:
            How many outboxes in this process took it.

        Raises:
            ConfigurationError: The history store awaits (not the in-memory one):
                use ``await manager.publish(...)``.
        """
        return self._path.publish_nowait(sender, body, client_id)

    def publish_message_nowait(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> Published:
        """:meth:`publish_nowait`, returning the message as it was sent.

        Returns:
            The server's fields (``id``, ``ts``, ``offset``, ``epoch``) and the
            final frame.

        Raises:
            ConfigurationError: The history store awaits: use :meth:`publish`.
            ValueError: ``body`` cannot be encoded as JSON.
        """
        return self._path.publish_message_nowait(sender, body, client_id)

    async def publish(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> Published:
        """Number, keep and broadcast a chat message from ``sender``, with any store.

        With history off or the in-memory store this is
        :meth:`publish_message_nowait`. With a store that awaits, the store numbers
        the message first, then this process's members get it. With a shared
        backplane and a store that has ``append_and_publish``, the store also
        publishes it, in the same atomic step and with no origin
        (:data:`~wschat.messages.NO_ORIGIN`), and every process, this one included,
        delivers it from its subscription: every member gets the room's messages in
        offset order.

        Returns:
            The message as it was sent.

        A store that received the message but did not answer in time
        (``PublishInDoubt``, a paused Redis) is waited for, at most
        :data:`~wschat.scrollback.IN_DOUBT_WAIT` seconds: if it then stored the
        message, this is as if it had answered at once; if it did not,
        :class:`~wschat.errors.NotSent`; without an answer,
        :class:`~wschat.errors.DeliveryInDoubt` (docs/history.md, "A store that
        does not answer").

        Raises:
            NotSent: The store did not store the message: nobody got it.
            DeliveryInDoubt: The store did not say in time whether it stored it.
            ValueError: ``body`` cannot be encoded as JSON.
        """
        return await self._path.publish(sender, body, client_id)

    @property
    def history_pipelined(self) -> bool:
        """Whether :meth:`submit` can be used: a shared backplane, and a store that
        queues an append at call time and publishes it (``submit_and_publish``)."""
        return self._path.pipelined

    def submit(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> Submitted:
        """:meth:`publish` in two steps: queued in the store now, answered later.

        The message is numbered, kept and published by the store, in the order of
        the calls: a sender's next message may be submitted before the previous one
        is answered (see :data:`~wschat.inflight.MAX_IN_FLIGHT`), and the offsets
        still follow the order of its messages. Every process delivers it from its
        subscription, as with :meth:`publish`.

        Returns:
            The submitted message: ``await submitted.result()`` gives what
            :meth:`publish` returns, or raises what it raises.

        Raises:
            ConfigurationError: Not :attr:`history_pipelined`.
            ValueError: ``body`` cannot be encoded as JSON.
        """
        return self._path.submit(sender, body, client_id)

    async def history_page(
        self, chat_id: ChatId, before: int | None, limit: int
    ) -> str:
        """The encoded answer to a ``history`` request for a room.

        Args:
            chat_id: The room.
            before: Messages below this offset; None for the latest.
            limit: How many at most (the caller caps it).

        Raises:
            HistoryUnavailable: History is off, or the store failed.
        """
        history = self._history
        if history is None:
            raise HistoryUnavailable(
                "history is off on this server"
                if self._scrollback is None
                else "history is off while this server runs in a cluster"
            )
        if history.sync and history.retain_due():
            history.retain_nowait()
        return await history.page(chat_id, before, limit)

    @property
    def history_sync(self) -> bool:
        """Whether messages are published without awaiting (history off or memory)."""
        history = self._history
        return history is None or history.sync

    def history_health(self) -> dict[str, Any]:
        """The history store's name, health and size, for ``/status``.

        ``enabled`` is False when history is off, or off while clustered on a
        store for one process (``detail`` says why).
        """
        scrollback = self._scrollback
        if scrollback is None:
            return {"enabled": False}
        health = scrollback.health()
        if self._history is None:
            health["detail"] = LOCAL_STORE_CLUSTERED
        health["enabled"] = self._history is not None
        return health

    def send_nowait(self, connection_id: ConnectionId, frame: str) -> bool:
        """Queue a frame for one connection. False if it is gone or did not take it.

        A connection that has not joined its room yet (see :meth:`connect`) does
        not take it either: its ``ready`` frame comes first.
        """
        self._sweeper.note_caller()
        conn = self._connections.get(connection_id)
        if conn is None or (self._holds and self._holds.is_held(conn)):
            return False
        return conn.put_nowait(frame)

    def send_to_user(self, user_id: UserId, frame: str) -> int:
        """Queue a frame for every connection of a user, in every room and process.

        Returns:
            How many connections in this process took it.
        """
        self._sweeper.note_caller()
        return self._delivery.send_to_user(user_id, frame)

    def send_to_user_local(self, user_id: UserId, frame: str) -> int:
        """Queue a frame for every joined connection of a user in this process.

        The local half of :meth:`send_to_user`, for the delivery. A connection that
        has not joined its room yet does not get it (its ``ready`` comes first).

        Returns:
            How many connections took it.
        """
        held = self._by_user.get(user_id)
        if not held:
            return 0
        conns = list(held.values())
        if self._holds:
            conns = [conn for conn in conns if not self._holds.is_held(conn)]
        return sum(conn.put_nowait(frame) for conn in conns)

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
        return self._delivery.close_user(user_id, error)

    def revoke_user(self, user_id: UserId, detail: str | None = None) -> int:
        """End every session of a user, in every process, with 4401 ``token_revoked``.

        For a logout everywhere or a revoked account: the client is told to sign in
        again, not merely that it was removed (that is :meth:`close_user`'s 4403).
        Frames queued for those connections are dropped, not sent. Refuse the
        user's next tokens with the endpoint's ``is_revoked`` hook.

        Args:
            user_id: The user.
            detail: Plain words for the close reason; default says to sign in again.

        Returns:
            How many connections in this process were closed.
        """
        return self.close_user(user_id, TokenRevoked(detail))

    def close_user_local(self, user_id: UserId, error: WSChatError) -> int:
        """Close every connection of a user in this process, waiting ones too.

        The local half of :meth:`close_user`, for the delivery.

        Returns:
            How many connections were closed.
        """
        held = self._by_user.get(user_id)
        conns = list(held.values()) if held else []
        if self._waiting:
            conns += [c for c, _, _ in self._waiting_now() if c.user_id == user_id]
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
        return self._delivery.close_room(chat_id, error)

    def close_room_local(self, chat_id: ChatId, error: WSChatError) -> int:
        """Close every connection in a room in this process.

        The local half of :meth:`close_room`, for the delivery.

        Returns:
            How many connections were closed.
        """
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
        conns += [conn for conn, _, _ in self._waiting_now()]
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
        """Open connections that have joined their room, of one room or of all."""
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
        return self._delivery.members(chat_id)

    def user_count(self, chat_id: ChatId) -> int:
        """Distinct users in a room (see :meth:`members`)."""
        return self._delivery.user_count(chat_id)

    def sample_members(self, chat_id: ChatId, limit: int) -> list[UserId]:
        """At most ``limit`` users of a room (see :meth:`members`); O(limit).

        Users connected to this process come first, in the order they joined.
        """
        return self._delivery.sample_members(chat_id, limit)

    async def room_members(self, chat_id: ChatId) -> list[UserId]:
        """Users in a room across every process, asked of the backplane.

        Falls back to :meth:`members` when the backplane cannot be reached or the
        manager is not running.
        """
        return await self._delivery.room_members(chat_id)

    async def room_user_count(self, chat_id: ChatId) -> int:
        """Distinct users in a room across every process (see :meth:`room_members`)."""
        return len(await self.room_members(chat_id))

    def user_connections(self, user_id: UserId) -> list[Connection]:
        """Every open connection of a user that has joined its room."""
        self._sweeper.note_caller()  # as in connections()
        return list(self._by_user.get(user_id, {}).values())

    @property
    def clustered(self) -> bool:
        """Whether operations reach other processes now (a shared backplane runs)."""
        return self._cluster is not None

    def backplane_health(self) -> dict[str, Any]:
        """The backplane's name and health, for ``/status``.

        ``healthy`` is False while messages cannot reach the other processes, or
        when a shared backplane is configured but the manager is not running.
        """
        return self._delivery.health()

    # -- running with a shared backplane ---------------------------------------------

    async def __aenter__(self) -> ConnectionManager:
        """Run the backplane (listener, publisher, presence heartbeats).

        Also retains the rooms with members in the history store every third of
        its time to live. Nothing else to do for the default in-memory backplane.
        Entering again while running is a no-op, so ``chat_app`` and your own
        lifespan may both do it.

        Raises:
            ConfigurationError: The backplane cannot run here (e.g. Redis on trio).
        """
        self._entered += 1
        if self._entered > 1:
            return self
        try:
            await self._start_retaining()
            if not getattr(self.backplane, "local_only", False):
                cluster = Cluster(
                    self,
                    self.backplane,
                    presence_ttl=self.presence_ttl,
                    publish_queue=self.publish_queue,
                )
                await cluster.start()
                self._cluster = self._delivery = cluster
                self._history = self._active_history()
                self._path.use(cluster, self._history, clustered=True)
        except BaseException:
            self._entered -= 1
            await self._stop_retaining()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered -= 1
        if self._entered:
            return
        cluster = self._cluster
        if cluster is not None:
            # Back to local delivery first: connections still waiting for a
            # subscription join at once, and nothing reaches the cluster any more.
            self._cluster = None
            self._delivery = self._local
            self._history = self._active_history()
            self._path.use(self._local, self._history, clustered=False)
            for conn, _, _ in self._waiting_now():
                self._local.join(conn)
            await cluster.stop()
        # Entered before the cluster's task group: left after it.
        await self._stop_retaining()

    def _active_history(self) -> Scrollback | None:
        """The scrollback to use now: off while clustered on a one-process store."""
        scrollback = self._scrollback
        if scrollback is not None and scrollback.local_only and self._cluster:
            log.info("wschat: %s", LOCAL_STORE_CLUSTERED)
            return None
        return scrollback

    async def _start_retaining(self) -> None:
        scrollback = self._scrollback
        if scrollback is None:
            return
        stack = contextlib.AsyncExitStack()
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        tg.start_soon(self._retain_loop, scrollback)
        self._history_stack = stack
        self._path.run_tasks(tg)

    async def _stop_retaining(self) -> None:
        stack, self._history_stack = self._history_stack, None
        self._path.run_tasks(None)
        if stack is not None:
            await stack.aclose()

    async def _retain_loop(self, scrollback: Scrollback) -> None:
        """Keep the rooms with members numbered, and give expired memory back."""
        while True:
            await anyio.sleep(scrollback.retain_every)
            if self._history is scrollback:
                await scrollback.retain()

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
            connections=len(self),
            rooms=len(self.registry),
            users=len(self._by_user),
            messages=self._path.count,
            deliveries=self._deliveries,
            slow_consumers=self._slow,
            dropped=self._dropped,
            backplane=self.backplane_name,
            writers=len(self._sweeper),
            pending_auth=self._pending_auth,
        )


def _history_store(
    history: bool | HistoryStore,
    max_messages: int | None,
    ttl: float | None,
    max_memory_bytes: int | None,
) -> HistoryStore | None:
    """The store ``ConnectionManager(history=...)`` asks for, or None (off)."""
    sizes = {
        "history_max_messages": max_messages,
        "history_ttl": ttl,
        "history_max_memory_bytes": max_memory_bytes,
    }
    given = sorted(name for name, value in sizes.items() if value is not None)
    if history is True:
        return MemoryHistoryStore(
            max_messages=DEFAULT_MAX_MESSAGES if max_messages is None else max_messages,
            ttl=DEFAULT_TTL if ttl is None else ttl,
            max_memory_bytes=(
                DEFAULT_MAX_MEMORY_BYTES
                if max_memory_bytes is None
                else max_memory_bytes
            ),
        )
    if given:
        raise ConfigurationError(
            f"{', '.join(given)} size the built-in memory store: use them with "
            "history=True, or size your own store when you make it"
        )
    if history is False:
        return None
    if isinstance(history, bool) or not isinstance(history, HistoryStore):
        raise ConfigurationError(
            "history must be True, False or a HistoryStore (append, position, "
            f"read_after, read_before, retain, health, name); got {history!r}"
        )
    return history
