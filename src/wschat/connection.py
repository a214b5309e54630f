"""One accepted connection: who it is, where it is, and its bounded outbox.

Imports: anyio and the standard library (core layer).

Senders never touch a client's socket. They put an already-encoded frame into the
connection's outbox with :meth:`Connection.put_nowait`, which never blocks; the
connection's own writer task drains the outbox to the socket. When a client stops
reading, only its outbox fills; at the cap (count or bytes) the overflow policy applies:
``"close"`` ends that connection with 1013 ``slow_consumer``, ``"drop_newest"`` and
``"drop_oldest"`` discard frames and send a ``resync`` frame once the client catches up.

A connection's life is one explicit state (:class:`ConnectionState`) that only moves
forward: ``NEW`` (made by the manager; frames queue, nothing sends them yet) ->
``OPEN`` (:meth:`Connection.open`: served by a task group, which
:meth:`~Connection.abort` cancels) -> ``RELEASED`` (:meth:`Connection.release`: over,
its outbox gone). A step out of order raises :class:`ConnectionStateError` naming the
state.

An idle connection holds one task (its reader), not two: the writer and its outbox
queue exist only while frames flow. Once open, ``put_nowait`` starts a writer when a
frame arrives for a connection that has none, and a
:class:`~wschat.sweeper.WriterSweeper` retires writers that have waited a whole sweep
interval with nothing to send. Under load a writer never retires, so starting one
(the cost of a task) is paid once per quiet period, not once per frame. Where the
writer is in its own run is its :class:`WriterState`.

Frames that are not urgent (``presence``) are queued with ``defer=True``: unless a
writer is sending to that client right now, they wait for the sweeper's next round
(:mod:`wschat.sweeper`, at most 0.1 s), which sends them in one writer run that ends
once the outbox is empty. A burst of joins then costs an idle client one short writer
run, not a wake-up per join. Any urgent frame queued after them sends them first.

A connection belongs to the event loop it was made in. When its manager is used from
other threads too, ``put_nowait`` and ``abort`` called from one of them are handed
over to that loop (:mod:`wschat.sweeper` says when and how); nothing else changes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from functools import partial
from threading import get_ident
from time import time
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias, cast

import anyio

from . import sweeper as sweeping
from .auth import Principal
from .deadlines import EXPIRED
from .errors import (
    AuthenticationError,
    ConfigurationError,
    SlowConsumer,
    TokenExpired,
    TransportClosed,
    WSChatError,
)
from .errors import is_gone as is_gone
from .ids import ChatId, ConnectionId, UserId
from .protocol import encode_batch, encode_resync
from .transport import Transport
from .validation import check_number

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .sweeper import Spawn, WriterSweeper

__all__ = [
    "Connection",
    "ConnectionState",
    "ConnectionStateError",
    "OutboxLimits",
    "OverflowPolicy",
    "WriterState",
    "is_gone",
]

OverflowPolicy: TypeAlias = Literal["close", "drop_newest", "drop_oldest"]
_POLICIES: Final = ("close", "drop_newest", "drop_oldest")
#: At most this many queued frames go into one ``batch`` frame.
MAX_BATCH_FRAMES: Final = 64
#: At most this many queued frames go to the transport in one ``send_many`` call.
MAX_CHUNK: Final = 64


class _SendsAtOnce(Protocol):
    """A transport with the optional ``try_send_text`` (see Transport)."""

    def try_send_text(self, text: str) -> bool: ...


class ConnectionState(Enum):
    """Where a connection is in its life; it only moves forward.

    ``NEW -> OPEN -> RELEASED``, or ``NEW -> RELEASED`` for one never served.
    """

    #: Made by the manager: frames queue; nothing sends them unless the caller runs
    #: :meth:`Connection.run_writer` itself.
    NEW = "new"
    #: Served (:meth:`Connection.open`): ``abort`` cancels the serving task group,
    #: and a frame queued while no writer runs starts one in it.
    OPEN = "open"
    #: Over (:meth:`Connection.release`): the outbox is gone; nothing queues any more.
    RELEASED = "released"


class WriterState(Enum):
    """Where the connection's writer is (one writer at most, ever)."""

    #: No writer: an idle connection, or one whose writer retired.
    IDLE = "idle"
    #: A writer runs, or is about to: it takes whatever is queued.
    SENDING = "sending"
    #: The writer waits for the next frame; ``put_nowait`` wakes it.
    WAITING = "waiting"
    #: The sweep woke a waiting writer to end it (it goes on if a frame came).
    RETIRING = "retiring"


NEW: Final = ConnectionState.NEW
OPEN: Final = ConnectionState.OPEN
RELEASED: Final = ConnectionState.RELEASED
IDLE: Final = WriterState.IDLE
SENDING: Final = WriterState.SENDING
WAITING: Final = WriterState.WAITING
RETIRING: Final = WriterState.RETIRING


class ConnectionStateError(RuntimeError):
    """A lifecycle step of a :class:`Connection` was taken out of order (a bug)."""


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    """Caps on what may wait for one client.

    Attributes:
        max_messages: Frames that may wait in the outbox.
        max_bytes: Bytes of frames that may wait in the outbox.
        overflow: What happens when either cap would be passed.
    """

    max_messages: int = 1024
    max_bytes: int = 4 * 1024 * 1024
    overflow: OverflowPolicy = "close"

    def __post_init__(self) -> None:
        check_number("max_messages", self.max_messages, minimum=1, integer=True)
        check_number("max_bytes", self.max_bytes, minimum=1, integer=True)
        if self.overflow not in _POLICIES:
            raise ConfigurationError(
                f"overflow must be one of {', '.join(_POLICIES)}; got {self.overflow!r}"
            )


#: Seconds a close waits for a send in progress, when :meth:`Connection.open` is
#: not told (``ChatOptions.close_timeout``'s default).
DEFAULT_CLOSE_TIMEOUT: Final = 5.0


def _lets_send_end(error: WSChatError | None) -> bool:
    """Whether a close for ``error`` lets a send in progress end first: not when the
    client is gone (None), is closed for reading too slowly (what it could not take), or
    its token ended (nothing more goes to it)."""
    return error is not None and not isinstance(
        error, (TransportClosed, SlowConsumer, AuthenticationError)
    )


class Connection:
    """An accepted client: identity, room, outbox, and how to stop it.

    Attributes:
        id: Unique connection id (``<node>-<n>``), safe to log.
        principal: Who the token says this is.
        chat_id: The room this connection is in.
        batch: Whether the client opted in to ``batch`` frames.
        closing: Why the server is ending this connection, once it is.
        finish_by: When a close let a send in progress end first: the moment
            (``anyio.current_time()``) by which the close must be done, sends and
            what is still queued included (``close_timeout`` after the close).
        cutoff: The moment (Unix seconds) the token stops being good (``exp``
            plus the leeway), if it has an ``exp``: nothing is written to the
            client from then on (:mod:`wschat.deadlines` closes it then).
        dropped: Frames discarded by a drop policy since the last ``resync``.
        resynced: Frames discarded earlier and already reported in a ``resync``.
    """

    __slots__ = (
        "_at_once",
        "_close_timeout",
        "_group",
        "_idle_seen",
        "_in_send",
        "_queue",
        "_serving",
        "_state",
        "_sweeper",
        "_transport",
        "_waits",
        "_wake",
        "_writer",
        "batch",
        "chat_id",
        "closing",
        "cutoff",
        "dropped",
        "finish_by",
        "id",
        "limits",
        "principal",
        "queued_bytes",
        "resynced",
        "sent",
    )

    def __init__(
        self,
        id: ConnectionId,
        principal: Principal,
        chat_id: ChatId,
        limits: OutboxLimits,
        *,
        batch: bool = False,
        sweeper: WriterSweeper | None = None,
    ) -> None:
        self.id = id
        self.principal = principal
        self.chat_id = chat_id
        self.limits = limits
        self.batch = batch
        self.closing: WSChatError | None = None
        self.cutoff: float | None = None
        self.dropped = 0
        self.resynced = 0
        self.queued_bytes = 0
        self.sent = 0
        self._state = NEW
        self._writer = IDLE
        # The task group serving this connection (open()): abort() cancels it, and
        # put_nowait() starts a writer in it (None until then, or once it ended).
        # Kept itself rather than its bound methods: each one stored is one more
        # object per connection for the cyclic GC to walk.
        self._group: TaskGroup | None = None
        # Whether put_nowait() may start writers in it: from after the first write
        # in open() until the group is found ended.
        self._serving = False
        # The writer's semaphore while it is WAITING; put_nowait() releases it.
        # One per writer, cheaper per wake-up than a new anyio.Event for every wait
        # (1.3 us against 2.9 us on asyncio).
        self._wake: anyio.Semaphore | None = None
        self._waits = 0
        # The outbox: made by the first frame, dropped when the writer retires. A
        # plain deque, not an anyio memory stream: the caps are checked here, only
        # this connection's writer takes from it, and the stream costs 1.3 KiB and
        # about 0.5 us more per delivery (measured under benchmarks/).
        self._queue: deque[str] | None = None
        self._transport: Transport | None = None
        # Whether the transport has try_send_text (see Transport).
        self._at_once = False
        # The sweeper of the event loop serving this connection (made here, in it).
        self._sweeper = None if sweeper is None else sweeper.enter()
        # Which wait (of _waits) the sweeper last saw the writer in.
        self._idle_seen = -1
        # Whether the writer is inside a send (abort() lets that send end).
        self._in_send = False
        # How long a close waits for that send (open()'s close_timeout).
        self._close_timeout = DEFAULT_CLOSE_TIMEOUT
        self.finish_by: float | None = None

    @property
    def user_id(self) -> UserId:
        """The token's ``sub``."""
        return self.principal.user_id

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user_id!r} chat={self.chat_id!r}>"

    @property
    def state(self) -> ConnectionState:
        """Where this connection is in its life."""
        return self._state

    @property
    def writer_state(self) -> WriterState:
        """Where this connection's writer is."""
        return self._writer

    @property
    def queued(self) -> int:
        """Frames waiting in the outbox."""
        queue = self._queue
        return 0 if queue is None else len(queue)

    @property
    def holds_outbox(self) -> bool:
        """Whether an outbox is allocated now (an idle connection holds none)."""
        return self._queue is not None

    @property
    def spawn(self) -> Spawn | None:
        """Where this connection's tasks start (None unless open and served).

        A new bound method at each call: compare two with ``==``, not ``is``.
        """
        group = self._group
        return group.start_soon if self._serving and group is not None else None

    @property
    def writing(self) -> bool:
        """Whether a writer task is serving this connection now."""
        return self._writer is not IDLE

    def _refuse(self, step: str, allowed: str) -> ConnectionStateError:
        return ConnectionStateError(
            f"connection {self.id}: cannot {step} in state "
            f"{self._state.name}; {step} is allowed {allowed}"
        )

    def put_nowait(self, frame: str, *, defer: bool = False) -> bool:
        """Queue an encoded frame for this client without ever waiting.

        Args:
            frame: The encoded text frame (ASCII JSON, so ``len`` is its byte size).
            defer: Not urgent (``presence``): if no writer is sending now, the frame
                waits for the next sweep (at most ``SWEEP_INTERVAL``), so that a
                burst of joins reaches an idle client in one writer run instead of a
                writer wake-up, or a writer task, per join.

        Returns:
            False if the frame was not queued (closing, released, or dropped by the
            policy); True if it was, or if it was handed to the event loop serving
            this connection (a call from another event loop's thread).
        """
        if sweeping.cross_thread:
            # A manager was used from several threads in this process (a sync
            # route, a TestClient without `with`): only a connection's own event
            # loop may touch it, so a call from another thread is handed over.
            sweeper = self._sweeper
            if sweeper is not None and sweeper.guard not in (None, get_ident()):
                sweeper.call_soon(partial(self.put_nowait, frame, defer=defer))
                return True
        if self.closing is not None:
            return False
        size = len(frame)
        queue = self._queue
        if queue is None:
            if self._state is RELEASED:
                return False
            queue = self._queue = deque()
        limits = self.limits
        if (
            self.queued_bytes + size > limits.max_bytes
            or len(queue) >= limits.max_messages
        ):
            return self._overflow(frame)
        queue.append(frame)
        self.queued_bytes += size
        if defer:
            self._defer()
        else:
            self._kick()
        return True

    def call_at_sweep(
        self, func: Callable[[], object], within: float | None = None
    ) -> bool:
        """Call ``func()`` at the next sweep of this connection's event loop.

        The sweep runs it before it sends the frames left for it, so frames ``func``
        queues with ``defer=True`` go out in the same round. Call it from the
        connection's event loop. ``within``: at most this many seconds after the
        sweep running now, rather than a whole interval (see
        :meth:`~wschat.sweeper.WriterSweeper.call_at_sweep`).

        Returns:
            False if no sweep serves this connection (it is not open and served:
            not yet, or its writer is run by its caller, or it has ended): call
            ``func`` some other way.
        """
        sweeper = self._sweeper
        if (
            sweeper is None
            or not self._serving
            or self._state is not OPEN
            or self.closing is not None
        ):
            return False
        if sweeping.cross_thread and sweeper.guard not in (None, get_ident()):
            # See put_nowait.
            sweeper.call_soon(sweeper.call_at_sweep, func, self, within)
            return True
        sweeper.call_at_sweep(func, self, within)
        return True

    def _defer(self) -> None:
        """Leave a queued frame for the next sweep unless a writer is sending now."""
        writer = self._writer
        if writer is SENDING or writer is RETIRING:
            return  # the writer is running and takes this frame before it waits
        if self._serving and self._sweeper is not None:
            self._sweeper.defer(self)
        elif self._serving or writer is WAITING:
            # No sweeper, or a writer its caller runs (not open): as urgent.
            self._kick()
        # Not open and no writer yet: open() sends what is queued.

    def _overflow(self, frame: str) -> bool:
        policy = self.limits.overflow
        if policy == "close":
            self.abort(
                SlowConsumer(
                    f"outbox full ({self.queued} frames, {self.queued_bytes} bytes)"
                )
            )
            return False
        if policy == "drop_newest" or len(frame) > self.limits.max_bytes:
            self.dropped += 1
            return False
        # drop_oldest: make room from the front until the new frame fits (it does:
        # it is not over the byte cap on its own).
        queue = self._queue
        assert queue is not None
        while queue and (
            self.queued_bytes + len(frame) > self.limits.max_bytes
            or len(queue) >= self.limits.max_messages
        ):
            self.queued_bytes -= len(queue.popleft())
            self.dropped += 1
        queue.append(frame)
        self.queued_bytes += len(frame)
        self._kick()
        return True

    def _kick(self) -> None:
        """Wake the writer for a queued frame, or start one if none runs."""
        wake = self._wake
        if wake is not None:  # WAITING
            self._wake = None
            self._writer = SENDING
            wake.release()
        elif self._serving and self._writer is IDLE:
            self._start_writer()

    def abort(self, error: WSChatError | None) -> None:
        """Stop this connection: its writer and reader are cancelled by the endpoint.

        Allowed in every state; before :meth:`open`, ``open`` stops at once. An
        :class:`~wschat.errors.AuthenticationError` (the token expired or was
        revoked) also drops what is queued: that client gets nothing more but the
        close frame. While the writer is inside a send, a close the server decided
        on lets that send end first, within ``close_timeout`` (:attr:`finish_by`):
        its frames were taken from the outbox, and cancelling the send would lose
        them unannounced. Not when the client is gone, is closed as a slow
        consumer, or its token ended: those cancel the send at once.

        Args:
            error: Why, for the close frame; None when the client is already gone.
                The first reason given wins.
        """
        sweeper = self._sweeper
        if (
            sweeping.cross_thread
            and sweeper is not None
            and sweeper.guard not in (None, get_ident())
        ):
            sweeper.call_soon(self.abort, error)  # see put_nowait
            return
        if self.closing is None:
            self.closing = error if error is not None else TransportClosed()
            if isinstance(error, AuthenticationError):
                self._discard_queued()
        wake = self._wake
        if wake is not None:
            self._wake = None
            self._writer = SENDING
            wake.release()
        group = self._group
        if group is None:
            return
        scope = group.cancel_scope
        if (
            _lets_send_end(error)
            and _lets_send_end(self.closing)
            and not scope.cancel_called
            and (self._in_send or self.finish_by is not None)
        ):
            # A send is on its way to the client: cancelling it would lose its
            # frames unannounced (they were taken from the outbox, and may or may
            # not have gone). Let it end, within close_timeout; the writer then
            # ends the connection's tasks, and what is still queued goes before
            # the close frame (send_remaining, by the same deadline).
            if self.finish_by is None:
                self.finish_by = anyio.current_time() + self._close_timeout
                scope.deadline = self.finish_by
            return
        scope.cancel()

    def _discard_queued(self) -> None:
        """Drop every queued frame (what a writer sends now stays counted)."""
        queue = self._queue
        if queue:
            self.queued_bytes -= sum(map(len, queue))
            queue.clear()

    def call_soon(self, func: Callable[..., object], *args: object) -> None:
        """Run ``func(*args)`` in the event loop serving this connection.

        At once when called from that loop's thread (always, under a server);
        handed over to it otherwise (see :mod:`wschat.sweeper`).
        """
        sweeper = self._sweeper
        if (
            sweeping.cross_thread
            and sweeper is not None
            and sweeper.guard not in (None, get_ident())
        ):
            sweeper.call_soon(func, *args)
            return
        func(*args)

    async def open(
        self,
        transport: Transport,
        task_group: TaskGroup,
        *,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        """Serve this connection in ``task_group``: ``NEW`` -> ``OPEN``.

        From now on :meth:`abort` cancels ``task_group``: at once if the connection
        is already closing; else once a send in progress has ended, within
        ``close_timeout`` seconds, unless the client is gone, its outbox overflowed
        or its token ended. What is queued now (the ``ready`` frame, and the
        connection's own ``join``) is sent from the calling task, so that no writer
        task is started for it, and the emptied outbox is dropped; after that, a
        frame queued while no writer runs starts one in ``task_group``.

        Raises:
            ConnectionStateError: The connection is not ``NEW`` (opened twice, or
                released), or a writer its caller runs is running.
        """
        if self._state is not NEW or self._writer is not IDLE:
            if self._state is NEW:
                raise ConnectionStateError(
                    f"connection {self.id}: cannot open while a writer started by "
                    "run_writer() runs; open() runs the writers itself"
                )
            raise self._refuse("open", "once, on a NEW connection")
        self._state = OPEN
        self._group = task_group
        self._close_timeout = close_timeout
        if self.closing is not None:
            task_group.cancel_scope.cancel()
        await self._write(transport, True)
        self._transport = transport
        self._at_once = hasattr(transport, "try_send_text")
        self._serving = True
        if self.queued and self._writer is IDLE:
            self._start_writer()
        if self._sweeper is not None:
            # Work may have been left for the sweep while no connection was served.
            self._sweeper.adopt(self)

    async def send_remaining(self, transport: Transport) -> None:
        """Send what is still queued once the tasks serving this connection are over.

        A close the server decided on (``close_room``, ``close_user``, shutdown, a
        protocol error) cancels the writer at once; the frames queued before it (a
        broadcast, then ``close_room``) would be lost without a word. Call this
        before :meth:`release` and before the close frame, bounded by a timeout:
        they go out first (with the ``resync`` owed for frames dropped before).
        Nothing is sent to a client that is gone, that was closed for reading too
        slowly (its outbox is what it could not take), or whose token ended. A
        send in progress when the close came was let end first (:meth:`abort`);
        pass :attr:`finish_by` (when set) as the deadline, so that the whole close
        stays within ``close_timeout``.
        """
        closing = self.closing
        if (
            not self._queue
            or self._state is not OPEN
            or self._writer is not IDLE
            or isinstance(closing, (TransportClosed, SlowConsumer, AuthenticationError))
        ):
            return
        await self._write(transport, True)

    def _batch(self, first: str, queue: deque[str]) -> tuple[str, int]:
        """Join ``first`` and what is queued after it into one ``batch`` frame."""
        frames = [first]
        while queue and len(frames) < MAX_BATCH_FRAMES:
            more = queue.popleft()
            self.queued_bytes -= len(more)
            frames.append(more)
        return encode_batch(frames), len(frames)

    def kick_deferred(self) -> bool:
        """Send frames left for the sweep: wake the writer, or run one until empty.

        A writer started here does not wait for more: a client that only gets
        presence frames holds a task for the time of one send.

        Returns:
            Whether a writer task was started (a waiting writer woken, or frames
            sent from here, is not one).
        """
        if self._writer is not IDLE:  # running or waiting: _kick knows which
            self._kick()
            return False
        if self._queue and self._serving:
            if self._at_once and self._send_queued_now():
                return False
            self._start_writer(until_empty=True)
            return self._writer is not IDLE
        return False

    def _send_queued_now(self) -> bool:
        """Send what is queued from here, while the transport takes each frame at
        once (``try_send_text``): no writer task for an idle client's presence.

        Only the plain case; the writer does the rest (a ``batch`` client, a
        resync owed after drops, a token past its cutoff, a send that would wait).

        Returns:
            True when nothing is left to send (all sent, or the peer is gone).
        """
        queue = self._queue
        if queue is None or self.batch or self.dropped or self.closing is not None:
            return False
        cutoff = self.cutoff
        if cutoff is not None and time() >= cutoff:
            return False
        # Looked up here, not kept: see _group.
        try_send = cast(_SendsAtOnce, self._transport).try_send_text
        while queue:
            frame = queue[0]
            try:
                if not try_send(frame):
                    return False
            except TransportClosed:
                self.abort(None)
                return True
            queue.popleft()
            self.queued_bytes -= len(frame)
            self.sent += 1
        self._queue = None  # drained: an idle connection holds no outbox
        return True

    def _start_writer(self, until_empty: bool = False) -> None:
        group = self._group
        assert group is not None
        spawn = group.start_soon
        try:
            spawn(self._write, self._transport, until_empty)
        except RuntimeError:
            # The task group serving this connection has ended: so has the connection.
            self._serving = False
            return
        self._writer = SENDING
        if self._sweeper is not None:
            self._sweeper.watch(self, spawn)

    def sweep(self) -> None:
        """Retire the writer if it has waited since the previous sweep."""
        wake = self._wake
        if wake is None:  # not WAITING
            return
        if self._waits != self._idle_seen:
            self._idle_seen = self._waits
            return
        self._wake = None
        self._writer = RETIRING
        wake.release()

    def release(self) -> None:
        """End this connection's life: ``NEW``/``OPEN`` -> ``RELEASED``.

        Drops the outbox (nothing is queued after), and forgets the writer, so the
        sweeper holds no reference to a connection that has ended, whichever way its
        writer ended. Call it once the tasks serving the connection are over.

        Raises:
            ConnectionStateError: The connection was released already.
        """
        if self._state is RELEASED:
            raise self._refuse("release", "once, on a NEW or OPEN connection")
        self._state = RELEASED
        self._queue = None
        self.queued_bytes = 0
        self._writer = IDLE
        self._wake = None
        if self._sweeper is not None:
            self._sweeper.release(self)

    def receive_nowait(self) -> str:
        """Take the next queued frame without sending it (for tests and tools).

        Raises:
            anyio.WouldBlock: The outbox is empty.
        """
        if not self._queue:
            raise anyio.WouldBlock
        frame = self._queue.popleft()
        self.queued_bytes -= len(frame)
        return frame

    def run_writer(self, transport: Transport) -> Coroutine[Any, Any, None]:
        """Drain the outbox to ``transport`` from the calling task (tests and tools).

        For a connection nobody serves with :meth:`open`: ``await`` it (or start it
        as a task) and it runs until the connection is closing (after sending what
        is queued) or released. A served connection runs its writers itself. The
        checks are made when this is called; the coroutine it returns is the writer.

        Raises:
            ConnectionStateError: The connection is not ``NEW``, or a writer runs.
        """
        if self._state is not NEW:
            raise self._refuse("run_writer", "on a NEW connection only")
        if self._writer is not IDLE:
            raise ConnectionStateError(
                f"connection {self.id}: a writer is running already "
                f"(writer state {self._writer.name})"
            )
        return self._write(transport, False)

    async def _write(self, transport: Transport | None, until_empty: bool) -> None:
        """Drain the outbox to the socket until the connection ends or goes idle.

        With ``batch`` on, frames that queued up while the socket was busy leave
        together in one ``batch`` frame: one send for many deliveries. Once the
        connection is closing it sends what is queued and returns. When the sweeper
        retires it, the writer drops the empty outbox and returns; the next frame
        makes a new one and starts a new writer.

        Args:
            transport: Where the frames go.
            until_empty: Return once the outbox is empty instead of waiting for more,
                dropping the empty outbox (what :meth:`open` and a writer started
                by the sweep for deferred frames do).
        """
        assert transport is not None
        self._writer = SENDING
        signal: anyio.Semaphore | None = None
        try:
            # A writer started just before a close (a broadcast, then close_room)
            # stops here, before it takes frames from the outbox: on trio its
            # first send would be cancelled with them taken, and send_remaining()
            # could not send them before the close frame.
            await anyio.lowlevel.checkpoint_if_cancelled()
            while True:
                # Take what is queued without a checkpoint, and sleep on the
                # semaphore once the outbox is empty: a task switch per delivery
                # costs more than sending the frame.
                queue = self._queue
                if not queue:
                    if (
                        until_empty
                        or self.closing is not None
                        or self._state is RELEASED
                    ):
                        if until_empty and queue is not None and self.closing is None:
                            # Drained for now: an idle connection holds no outbox.
                            self._queue = None
                        return
                    if signal is None:
                        signal = anyio.Semaphore(0)
                    self._waits += 1
                    self._wake = signal
                    self._writer = WAITING
                    await signal.acquire()
                    if self._writer is RETIRING:
                        if not self._queue and self.closing is None:
                            self._queue = None
                            return
                        self._writer = SENDING
                    continue
                cutoff = self.cutoff
                if cutoff is not None and time() >= cutoff:
                    # The token expired while frames waited: none of them goes
                    # out, whether or not the deadline sweep has run yet.
                    self.abort(TokenExpired(EXPIRED))
                    self._discard_queued()
                    continue
                if len(queue) > 1 and not self.batch:
                    # Several frames at once, in one call: the per-frame cost of the
                    # loop is most of what the writer adds to a send. Their bytes
                    # stay counted until sent, so a stuck socket cannot hold more
                    # than the byte cap.
                    chunk = [queue.popleft() for _ in range(min(len(queue), MAX_CHUNK))]
                    self._in_send = True
                    await transport.send_many(chunk)
                    self._in_send = False
                    self.queued_bytes -= sum(map(len, chunk))
                    self.sent += len(chunk)
                else:
                    frame = queue.popleft()
                    self.queued_bytes -= len(frame)
                    count = 1
                    # The first frame (``ready``) always goes alone, never in a
                    # batch: a client must see it to know it is connected.
                    if self.batch and queue and self.sent:
                        frame, count = self._batch(frame, queue)
                    self._in_send = True
                    await transport.send_text(frame)
                    self._in_send = False
                    self.sent += count
                if self.dropped and not self.queued_bytes:
                    missed, self.dropped = self.dropped, 0
                    self.resynced += missed
                    self._in_send = True
                    await transport.send_text(
                        encode_resync(self.chat_id, f"{missed} messages were dropped")
                    )
                    self._in_send = False
        except TransportClosed:
            self.abort(None)
        finally:
            self._in_send = False
            self._writer = IDLE
            self._wake = None
            if self.finish_by is not None and self._group is not None:
                # abort() let this writer's send end: the connection's tasks end now.
                self._group.cancel_scope.cancel()
            if self._sweeper is not None:
                self._sweeper.forget(self)
