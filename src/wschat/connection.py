"""One accepted connection: who it is, where it is, and its bounded outbox.

Imports: anyio and the standard library (core layer).

Senders never touch a client's socket. They put an already-encoded frame into the
connection's outbox with :meth:`Connection.put_nowait`, which never blocks; the
connection's own writer task drains the outbox to the socket. When a client stops
reading, only its outbox fills; at the cap (count or bytes) the overflow policy applies:
``"close"`` ends that connection with 1013 ``slow_consumer``, ``"drop_newest"`` and
``"drop_oldest"`` discard frames and send a ``resync`` frame once the client catches up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .auth import Principal
from .errors import ConfigurationError, SlowConsumer, WSChatError
from .ids import ChatId, ConnectionId, UserId
from .protocol import encode_batch, encode_resync
from .transport import Transport, TransportClosed

__all__ = ["Connection", "OutboxLimits", "OverflowPolicy", "is_gone"]

OverflowPolicy: TypeAlias = Literal["close", "drop_newest", "drop_oldest"]
_POLICIES: Final = ("close", "drop_newest", "drop_oldest")
#: At most this many queued frames go into one ``batch`` frame.
MAX_BATCH_FRAMES: Final = 64


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
        if self.max_messages < 1 or self.max_bytes < 1:
            raise ConfigurationError("outbox limits must be at least 1")
        if self.overflow not in _POLICIES:
            raise ConfigurationError(
                f"overflow must be one of {', '.join(_POLICIES)}; got {self.overflow!r}"
            )


class Connection:
    """An accepted client: identity, room, outbox, and how to stop it.

    Attributes:
        id: Unique connection id (``<node>-<n>``), safe to log.
        principal: Who the token says this is.
        chat_id: The room this connection is in.
        batch: Whether the client opted in to ``batch`` frames.
        closing: Why the server is ending this connection, once it is.
        dropped: Frames discarded by a drop policy since the last ``resync``.
        resynced: Frames discarded earlier and already reported in a ``resync``.
    """

    __slots__ = (
        "_on_abort",
        "_receive",
        "_send",
        "_wake",
        "batch",
        "chat_id",
        "closing",
        "dropped",
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
    ) -> None:
        self.id = id
        self.principal = principal
        self.chat_id = chat_id
        self.limits = limits
        self.batch = batch
        self.closing: WSChatError | None = None
        self.dropped = 0
        self.resynced = 0
        self.queued_bytes = 0
        self.sent = 0
        self._on_abort: Callable[[], None] | None = None
        # Set while the writer waits for a frame; put_nowait() wakes it.
        self._wake: anyio.Event | None = None
        # The byte cap is the real bound; the count cap is anyio's buffer size.
        send, receive = anyio.create_memory_object_stream[str](limits.max_messages)
        self._send: MemoryObjectSendStream[str] = send
        self._receive: MemoryObjectReceiveStream[str] = receive

    @property
    def user_id(self) -> UserId:
        """The token's ``sub``."""
        return self.principal.user_id

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user_id!r} chat={self.chat_id!r}>"

    @property
    def queued(self) -> int:
        """Frames waiting in the outbox."""
        return self._send.statistics().current_buffer_used

    def put_nowait(self, frame: str) -> bool:
        """Queue an encoded frame for this client without ever waiting.

        Args:
            frame: The encoded text frame (ASCII JSON, so ``len`` is its byte size).

        Returns:
            False if the frame was not queued (closing, or dropped by the policy).
        """
        if self.closing is not None:
            return False
        size = len(frame)
        if self.queued_bytes + size > self.limits.max_bytes:
            return self._overflow(frame)
        try:
            self._send.send_nowait(frame)
        except anyio.WouldBlock:
            return self._overflow(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        self.queued_bytes += size
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()
        return True

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
        # drop_oldest: make room from the front until the new frame fits.
        while self.queued_bytes + len(frame) > self.limits.max_bytes or (
            self.queued >= self.limits.max_messages
        ):
            try:
                old = self._receive.receive_nowait()
            except anyio.WouldBlock:
                break
            self.queued_bytes -= len(old)
            self.dropped += 1
        try:
            self._send.send_nowait(frame)
        except anyio.WouldBlock:
            self.dropped += 1
            return False
        self.queued_bytes += len(frame)
        return True

    def abort(self, error: WSChatError | None) -> None:
        """Stop this connection: its writer and reader are cancelled by the endpoint.

        Args:
            error: Why, for the close frame; None when the client is already gone.
                The first reason given wins.
        """
        if self.closing is None:
            self.closing = error if error is not None else _Gone()
        self._send.close()
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()
        if self._on_abort is not None:
            self._on_abort()

    def bind(self, on_abort: Callable[[], None]) -> None:
        """Set what :meth:`abort` calls to stop the tasks serving this connection."""
        self._on_abort = on_abort
        if self.closing is not None:
            on_abort()

    def release(self) -> None:
        """Close both ends of the outbox once the connection is over. Idempotent."""
        self._send.close()
        self._receive.close()

    def receive_nowait(self) -> str:
        """Take the next queued frame without sending it (for tests and tools).

        Raises:
            anyio.WouldBlock: The outbox is empty.
        """
        frame = self._receive.receive_nowait()
        self.queued_bytes -= len(frame)
        return frame

    async def run_writer(self, transport: Transport) -> None:
        """Drain the outbox to the socket until the connection ends.

        With ``batch`` on, frames that queued up while the socket was busy leave
        together in one ``batch`` frame: one send for many deliveries.
        """
        receive = self._receive
        try:
            while True:
                # Take what is queued without a checkpoint, and sleep on a plain
                # event once the outbox is empty: ``receive()`` yields to the loop
                # and builds a waiter for every item, a task switch per delivery,
                # which costs more than sending the frame.
                try:
                    frame = receive.receive_nowait()
                except anyio.WouldBlock:
                    frame = None
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
                if frame is None:
                    # Outside the except block: an idle writer must not keep the
                    # exception and its traceback alive (memory per connection).
                    wake = self._wake = anyio.Event()
                    await wake.wait()
                    continue
                self.queued_bytes -= len(frame)
                count = 1
                if self.batch and self.queued_bytes:
                    frames = [frame]
                    while count < MAX_BATCH_FRAMES:
                        try:
                            more = receive.receive_nowait()
                        except anyio.WouldBlock:
                            break
                        self.queued_bytes -= len(more)
                        frames.append(more)
                        count += 1
                    if count > 1:
                        frame = encode_batch(frames)
                await transport.send_text(frame)
                self.sent += count
                if self.dropped and not self.queued_bytes:
                    missed, self.dropped = self.dropped, 0
                    self.resynced += missed
                    await transport.send_text(
                        encode_resync(self.chat_id, f"{missed} messages were dropped")
                    )
        except TransportClosed:
            self.abort(None)


class _Gone(WSChatError):
    """The client vanished; there is nobody to send a close frame to."""

    close_code = 1006
    code = "gone"
    default_detail = "client disconnected"


def is_gone(error: WSChatError | None) -> bool:
    """Whether ``error`` means the client is already gone (no close frame to send)."""
    return isinstance(error, _Gone)
