"""The history store interface: where a room's recent messages are kept, with offsets.

Imports: the standard library only (core layer).

A history store numbers each room's messages and keeps some of them, so that a client
that reconnects can get what it missed, and a client that joins can scroll back.
It knows nothing about connections or delivery; :func:`wschat.testing.
check_history_store` checks any store, ours or yours.

Offsets and epochs
------------------
Each message gets an *offset*: 1 for a room's first message in an *epoch*, and one
more for each next one. The epoch is a string naming the current numbering of the
room. It changes exactly when the numbering restarts, that is when the store lost
the room's offset counter (an in-memory store restarted, a Redis that lost its keys,
a room forgotten after it stood unused). It does **not** change when messages are
trimmed (by count, age or a memory bound): offsets go on from the counter, and a
client asking for messages after an offset older than what is kept learns that from
:meth:`Page.complete_after` and reloads instead. So within one (room, epoch) an
offset names one message forever, and a client holding ``(epoch, offset)`` can never
be told "nothing missed" about messages it did not see.

Why ``append`` takes a template
-------------------------------
The offset is inside the encoded frame, and the frame must be stored and delivered
in offset order. A store receives the frame as a :class:`~wschat.history.template.
FrameTemplate` (the text before and after the offset's digits) and builds
``head + str(offset) + tail`` itself, in the same atomic step that assigns the
offset: a Redis store does the counter increment, the ``XADD`` and the ``PUBLISH`` in
one Lua script (which cannot call back into Python to encode), an SQL store does it in
one statement. The body is encoded once, before the store is called.

Kept rooms
----------
A store may forget a room it has not been asked about for a while, which restarts
its offsets under a new epoch. Live members would then see offsets go back to 1
without being told, so the owner calls :meth:`HistoryStore.retain` periodically for
the rooms that have members, and a store keeps the counter and epoch of a retained
room (not necessarily its messages) for its time to live after each call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..errors import PublishInDoubt
from .template import FrameTemplate

__all__ = [
    "AppendInDoubt",
    "Entry",
    "HistoryHealth",
    "HistoryStore",
    "Page",
    "PendingAppend",
    "Position",
    "Stored",
]


class Stored(NamedTuple):
    """A message as :meth:`HistoryStore.append` stored it.

    Attributes:
        offset: Its offset in the room, from 1.
        epoch: The room's epoch the offset belongs to.
        frame: The final frame text, offset included: deliver exactly this.
    """

    offset: int
    epoch: str
    frame: str


class AppendInDoubt(PublishInDoubt):
    """An append the store's engine received but did not answer in time.

    Like :class:`~wschat.errors.PublishInDoubt` (it is one: ``outcome()`` says
    whether the message was stored, and published if the call publishes), and
    :meth:`stored` gives the message as stored once the engine answers, so the
    caller can deliver it with its offset.

    Args:
        detail: Plain words on what happened.
        stored: Waits for the engine's answer; the message as stored, or None if
            it was not stored.
    """

    def __init__(
        self,
        detail: str | None = None,
        stored: Callable[[], Awaitable[Stored | None]] | None = None,
    ) -> None:
        super().__init__(detail, self._was_stored)
        self._stored = stored

    async def stored(self) -> Stored | None:
        """Wait for the engine's answer: the message as stored, or None if not.

        Without ``stored``, the fate is unknown and counts as not stored.
        """
        if self._stored is None:
            return None
        return await self._stored()

    async def _was_stored(self) -> bool:
        return await self.stored() is not None


class Entry(NamedTuple):
    """One stored message in a :class:`Page`.

    Attributes:
        offset: Its offset in the room.
        frame: The frame text, as :meth:`HistoryStore.append` returned it.
    """

    offset: int
    frame: str


class Position(NamedTuple):
    """Where a room's history stands.

    Attributes:
        epoch: The room's current epoch.
        offset: The room's latest offset, 0 when it has no message in this epoch.
    """

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Page:
    """Messages of one room, read in one consistent step with the room's position.

    Attributes:
        epoch: The room's current epoch.
        latest: The room's latest offset (0 when it has no message in this epoch).
        first: The offset of the oldest message kept, or ``latest + 1`` when none
            is kept. The kept messages are always the run ``first..latest``.
        messages: Entries in ascending offset order, consecutive.
    """

    epoch: str
    latest: int
    first: int
    messages: tuple[Entry, ...]

    def complete_after(self, after: int) -> bool:
        """Whether ``messages`` are exactly every message after ``after``.

        True when nothing after ``after`` was trimmed and no limit cut the page
        short: a client that saw everything up to ``after`` in this epoch has seen
        everything once it gets these. False if ``after`` is beyond ``latest``
        (an offset this epoch never reached).
        """
        return 0 <= after <= self.latest and len(self.messages) == self.latest - after

    @property
    def more_before(self) -> bool:
        """Whether older messages are kept than the first of this page."""
        if not self.messages:
            return False
        return self.messages[0].offset > self.first


@dataclass(frozen=True, slots=True)
class HistoryHealth:
    """What ``/ws/status`` shows about the history store. Never holds a URL.

    Attributes:
        name: Short name of the store (``memory``, ``postgres``).
        healthy: Whether the last operations succeeded.
        detail: Plain words on why it is not healthy, or ``""``.
        rooms: Rooms the store holds state for in this process (None when the
            store cannot tell without I/O).
        entries: Messages kept in this process (None: cannot tell without I/O).
        memory_bytes: Bytes of this process's memory holding messages (0 for a
            store that keeps them elsewhere).
        max_memory_bytes: The bound on ``memory_bytes``, or None.
        evicted: Messages dropped early because of the memory bound, since start.
    """

    name: str
    healthy: bool
    detail: str = ""
    rooms: int | None = None
    entries: int | None = None
    memory_bytes: int = 0
    max_memory_bytes: int | None = None
    evicted: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The health as a JSON-ready dict."""
        return {
            "name": self.name,
            "healthy": self.healthy,
            "detail": self.detail,
            "rooms": self.rooms,
            "entries": self.entries,
            "memory_bytes": self.memory_bytes,
            "max_memory_bytes": self.max_memory_bytes,
            "evicted": self.evicted,
        }


class PendingAppend(Protocol):
    """An append a store queued at once and answers later (``submit_and_publish``)."""

    async def result(self) -> Stored:
        """Wait for the store's answer: what ``append_and_publish`` returns, or
        raises."""
        ...

    def cancel(self) -> None:
        """Nobody will await :meth:`result`: if not sent yet, it never is."""
        ...


@runtime_checkable
class HistoryStore(Protocol):
    """Numbers each room's messages and keeps some of them, for recovery and paging.

    Every method may be called concurrently from many tasks. Rooms are the chat ids
    as given (a store maps them under its own prefix and never treats them as
    patterns); a room the store has no state for behaves as an empty room in a
    new epoch, and asking about it fixes that epoch (the next :meth:`append` uses
    it), so a client that joined an empty room can recover its first messages.

    Promises (checked by :func:`wschat.testing.check_history_store`):

    - Offsets are 1, 2, 3, ... per room and epoch, each given once, also under
      concurrent appends; the frame returned and later read is
      ``template.head + str(offset) + template.tail``.
    - The messages kept for a room are the consecutive run ``first..latest``;
      trimming removes the oldest first.
    - The epoch changes only when the offsets restart (from 1 again), and a room's
      latest offset never goes back within an epoch.
    - A retained room keeps its epoch and counter for the store's time to live.

    A store may also define ``append_nowait(chat_id, template) -> Stored`` (and
    ``position_nowait``, ``read_after_nowait``, ``read_before_nowait``) that never
    block: the in-memory store does, so the manager can store and deliver a message
    in one synchronous step.

    A store that needs opening (a connection pool) is opened by its owner before it
    is used, for example as an async context manager around the app's lifespan.

    Optional members the :class:`~wschat.ConnectionManager` looks for:

    - ``ttl`` (seconds): the manager calls :meth:`retain` every third of it (every
      60 s for a store without one).
    - ``local_only = True``: the store numbers rooms for one process only (the
      in-memory one). A manager running with a shared backplane then turns
      history off, since offsets must be the same on every process.
    - ``append_and_publish(chat_id, template, channel, prefix) -> Stored``: with
      a shared backplane, the manager calls it instead of :meth:`append` and does
      not publish the message itself. The store numbers and keeps the message and,
      in the same atomic step, publishes ``prefix + frame`` (bytes; ``prefix`` is
      the cluster's envelope head: the manager passes ``b"m||"``, a room message
      with no origin) on the backplane's ``channel`` (the logical name
      ``Backplane.publish`` takes, ``r:<chat_id>``; a Redis store maps it under
      the backplane's key prefix). Then the offset order is the delivery order on
      every process: every process, the sender's included, delivers the frame
      from its subscription.
    - ``submit_and_publish(chat_id, template, channel, prefix) ->
      PendingAppend``: ``append_and_publish`` split in two. The call queues the
      append, so appends reach the store in the order of the calls; ``await
      pending.result()`` gives its answer. With it, a manager with a shared
      backplane lets a connection have several messages in the store at once
      (at most :data:`wschat.inflight.MAX_IN_FLIGHT`), in order.
    """

    @property
    def name(self) -> str:
        """Short name for ``/ws/status`` and logs."""
        ...

    def health(self) -> HistoryHealth:
        """Current health and size; cheap, no I/O."""
        ...

    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        """Give the message the room's next offset, build its frame, and keep it.

        Args:
            chat_id: The room.
            template: The frame without its offset; the stored frame is
                ``template.head + str(offset) + template.tail``.

        Returns:
            The offset, the epoch it belongs to and the final frame.
        """
        ...

    async def position(self, chat_id: str) -> Position:
        """The room's epoch and latest offset (0 when it has no message)."""
        ...

    async def read_after(self, chat_id: str, after: int, limit: int) -> Page:
        """The oldest ``limit`` kept messages with an offset above ``after``.

        Recovery uses it: if :meth:`Page.complete_after` is true for ``after``,
        the page holds exactly what a client that saw ``after`` missed.

        Raises:
            ValueError: ``after`` is negative or ``limit`` is below 1.
        """
        ...

    async def read_before(self, chat_id: str, before: int | None, limit: int) -> Page:
        """The newest ``limit`` kept messages with an offset below ``before``.

        Without ``before``, the newest messages of the room. Messages are in
        ascending order; page backwards with ``before=page.messages[0].offset``.

        Raises:
            ValueError: ``before`` is below 1 or ``limit`` is below 1.
        """
        ...

    async def retain(self, chat_ids: Iterable[str]) -> None:
        """These rooms have members: keep their epoch and offset counter.

        Called periodically by the owner, more often than the store's time to
        live. Rooms the store has no state for are left alone.
        """
        ...
