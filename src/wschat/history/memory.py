"""The in-memory history store: recent messages of each room, in this process.

Imports: the standard library (core layer).

:class:`MemoryHistoryStore` keeps, per room, the last ``max_messages`` messages for
at most ``ttl`` seconds, within ``max_memory_bytes`` for all rooms together (the
oldest message of any room goes first when the bound is reached). It suits one
process; several processes need a shared store, or each would number its rooms on
its own.

No task runs for it. Every call first drops what has expired, oldest first, which
costs O(1) amortized: each message and each room is dropped once. :meth:`sweep` does
the same for an owner that wants memory back while no call comes.

Epochs: a store instance draws a random string at creation, and each room's state
(its offset counter) gets ``<that string>-<n>`` with ``n`` new for every room state
the instance creates. A restarted process therefore starts new epochs, and so does a
room this store forgot. Trimming never changes an epoch, even when it removes all of
a room's messages: the counter is kept, offsets go on, and a client whose offset is
older than what is kept is told by :meth:`~wschat.history.Page.complete_after`. A
room's state is forgotten only after ``ttl`` seconds without any call about it and
without :meth:`retain`; the owner retains the rooms that have members.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Final

from ..validation import check_number
from .base import Entry, HistoryHealth, Page, Position, Stored
from .template import FrameTemplate

__all__ = [
    "DEFAULT_MAX_MEMORY_BYTES",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_TTL",
    "ENTRY_OVERHEAD_BYTES",
    "MemoryHistoryStore",
    "entry_bytes",
]

#: Messages kept per room.
DEFAULT_MAX_MESSAGES: Final = 100
#: Seconds a message is kept; also how long an unused room's state is kept.
DEFAULT_TTL: Final = 300.0
#: Bound on the memory holding messages, all rooms together: 64 MiB.
DEFAULT_MAX_MEMORY_BYTES: Final = 64 * 1024 * 1024
#: What a kept message costs on top of its frame's string (measured on CPython
#: 3.11, 64-bit): its entry tuple, offset, time and sequence number, and its slots
#: in the room's deque and in the store-wide age order.
ENTRY_OVERHEAD_BYTES: Final = 240

_getsizeof: Final = sys.getsizeof


def entry_bytes(frame: str) -> int:
    """What keeping ``frame`` counts against ``max_memory_bytes``.

    The size Python gives the string (``sys.getsizeof``: its characters plus a
    header of about 50 bytes) and :data:`ENTRY_OVERHEAD_BYTES`.
    """
    return _getsizeof(frame) + ENTRY_OVERHEAD_BYTES


class _Room:
    """One room's offset counter, epoch and kept messages."""

    __slots__ = ("entries", "epoch", "latest", "used")

    def __init__(self, epoch: str, now: float) -> None:
        self.epoch = epoch
        self.latest = 0
        self.used = now
        # (offset, frame, stored at, sequence number in the store-wide order)
        self.entries: deque[tuple[int, str, float, int]] = deque()


def _check_limit(limit: int) -> None:
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be an integer of at least 1; got {limit!r}")


class MemoryHistoryStore:
    """Recent messages of each room, kept in this process's memory.

    Args:
        max_messages: Messages kept per room; the oldest goes first.
        ttl: Seconds a message is kept. A room's state (offset counter and
            epoch) is forgotten after ``ttl`` seconds without a call about it or
            a :meth:`retain`.
        max_memory_bytes: Bound on the memory holding messages, all rooms
            together, as :func:`entry_bytes` counts it. When an append goes over
            it, the oldest messages of any room are dropped until it fits again (a
            single frame larger than the bound is delivered but not kept).
        clock: Seconds, never going back; tests pass a fake one.

    Raises:
        ConfigurationError: An option is out of range; the message says which.
    """

    def __init__(
        self,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        ttl: float = DEFAULT_TTL,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_number("max_messages", max_messages, minimum=1, integer=True)
        check_number("ttl", ttl, minimum=0, above=True, unit="seconds")
        check_number("max_memory_bytes", max_memory_bytes, minimum=1, integer=True)
        self.max_messages = max_messages
        self.ttl = float(ttl)
        #: It numbers rooms for this process only: a manager running with a
        #: shared backplane turns history off rather than use it.
        self.local_only = True
        self.max_memory_bytes = max_memory_bytes
        self._clock = clock
        self._epoch_base = secrets.token_hex(8)
        self._states = 0
        # Least recently used room first.
        self._rooms: OrderedDict[str, _Room] = OrderedDict()
        # Every kept message, oldest first: sequence number -> its room.
        self._order: OrderedDict[int, _Room] = OrderedDict()
        self._seq = 0
        # Nothing expires before this time: calls skip _expire() until then.
        self._due = float("-inf")
        self._bytes = 0
        self._evicted = 0

    @property
    def name(self) -> str:
        """``memory``."""
        return "memory"

    def health(self) -> HistoryHealth:
        """Sizes and the bound, as of the last call; cheap, no I/O.

        What expired since the last call is still counted: call :meth:`sweep`
        first for the sizes as of now.
        """
        return HistoryHealth(
            name="memory",
            healthy=True,
            rooms=len(self._rooms),
            entries=len(self._order),
            memory_bytes=self._bytes,
            max_memory_bytes=self.max_memory_bytes,
            evicted=self._evicted,
        )

    # -- the store, without awaiting ------------------------------------------------

    def append_nowait(self, chat_id: str, template: FrameTemplate) -> Stored:
        """:meth:`append` without awaiting: the offset, epoch and final frame."""
        now = self._clock()
        if now >= self._due:
            self._expire(now)
        room = self._room(chat_id, now)
        offset = room.latest + 1
        room.latest = offset
        frame = f"{template[0]}{offset}{template[1]}"
        self._seq = seq = self._seq + 1
        entries = room.entries
        entries.append((offset, frame, now, seq))
        self._order[seq] = room
        self._bytes += _getsizeof(frame) + ENTRY_OVERHEAD_BYTES
        if len(entries) > self.max_messages:
            _, old, _, old_seq = entries.popleft()
            del self._order[old_seq]
            self._bytes -= _getsizeof(old) + ENTRY_OVERHEAD_BYTES
        if self._bytes > self.max_memory_bytes:
            self._evict()
        return Stored(offset, room.epoch, frame)

    def position_nowait(self, chat_id: str) -> Position:
        """:meth:`position` without awaiting."""
        now = self._clock()
        if now >= self._due:
            self._expire(now)
        room = self._room(chat_id, now)
        return Position(room.epoch, room.latest)

    def read_after_nowait(self, chat_id: str, after: int, limit: int) -> Page:
        """:meth:`read_after` without awaiting."""
        if type(after) is not int or after < 0:
            raise ValueError(f"after must be an integer of at least 0; got {after!r}")
        _check_limit(limit)
        now = self._clock()
        if now >= self._due:
            self._expire(now)
        room = self._room(chat_id, now)
        entries = room.entries
        first = entries[0][0] if entries else room.latest + 1
        # Both within the deque, so a huge after or limit cannot reach islice().
        start = min(max(after + 1 - first, 0), len(entries))
        return self._page(room, first, start, start + min(limit, len(entries)))

    def read_before_nowait(self, chat_id: str, before: int | None, limit: int) -> Page:
        """:meth:`read_before` without awaiting."""
        if before is not None and (type(before) is not int or before < 1):
            raise ValueError(
                f"before must be an integer of at least 1, or None; got {before!r}"
            )
        _check_limit(limit)
        now = self._clock()
        if now >= self._due:
            self._expire(now)
        room = self._room(chat_id, now)
        entries = room.entries
        first = entries[0][0] if entries else room.latest + 1
        end = (
            len(entries)
            if before is None
            else max(min(before - first, len(entries)), 0)
        )
        return self._page(room, first, max(end - limit, 0), end)

    def retain_nowait(self, chat_ids: Iterable[str]) -> None:
        """:meth:`retain` without awaiting."""
        now = self._clock()
        rooms = self._rooms
        for chat_id in chat_ids:
            room = rooms.get(chat_id)
            if room is not None:
                room.used = now
                rooms.move_to_end(chat_id)
        self._expire(now)

    def sweep(self) -> None:
        """Drop the messages and rooms that have expired, now rather than later."""
        self._expire(self._clock())

    # -- the HistoryStore protocol --------------------------------------------------

    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        """Give the message the room's next offset, build its frame, and keep it."""
        return self.append_nowait(chat_id, template)

    async def position(self, chat_id: str) -> Position:
        """The room's epoch and latest offset (0 when it has no message)."""
        return self.position_nowait(chat_id)

    async def read_after(self, chat_id: str, after: int, limit: int) -> Page:
        """The oldest ``limit`` kept messages with an offset above ``after``."""
        return self.read_after_nowait(chat_id, after, limit)

    async def read_before(self, chat_id: str, before: int | None, limit: int) -> Page:
        """The newest ``limit`` kept messages with an offset below ``before``."""
        return self.read_before_nowait(chat_id, before, limit)

    async def retain(self, chat_ids: Iterable[str]) -> None:
        """Keep these rooms' epoch and offset counter for ``ttl`` more seconds."""
        self.retain_nowait(chat_ids)

    # -- internals ------------------------------------------------------------------

    def _room(self, chat_id: str, now: float) -> _Room:
        room = self._rooms.get(chat_id)
        if room is None:
            self._states += 1
            room = _Room(f"{self._epoch_base}-{self._states}", now)
            self._rooms[chat_id] = room
        else:
            room.used = now
            self._rooms.move_to_end(chat_id)
        return room

    @staticmethod
    def _page(room: _Room, first: int, start: int, stop: int) -> Page:
        messages = tuple(
            [
                Entry(offset, frame)
                for offset, frame, _, _ in islice(room.entries, start, stop)
            ]
        )
        return Page(room.epoch, room.latest, first, messages)

    def _expire(self, now: float) -> None:
        """Drop messages stored ``ttl`` ago or more, then rooms unused as long."""
        ttl = self.ttl
        order = self._order
        due = now + ttl
        while order:
            room = order[next(iter(order))]
            _, frame, stored_at, _ = room.entries[0]
            if stored_at + ttl > now:
                due = stored_at + ttl
                break
            order.popitem(last=False)
            room.entries.popleft()
            self._bytes -= _getsizeof(frame) + ENTRY_OVERHEAD_BYTES
        rooms = self._rooms
        while rooms:
            chat_id = next(iter(rooms))
            room = rooms[chat_id]
            if room.used + ttl > now:
                due = min(due, room.used + ttl)
                break
            del rooms[chat_id]
            # Its messages are older than its last use, so the loop above dropped
            # them already, unless the clock went back.
            for _, frame, _, seq in room.entries:
                del order[seq]
                self._bytes -= _getsizeof(frame) + ENTRY_OVERHEAD_BYTES
        # The oldest message and the least recently used room go first, ttl after
        # their time; whatever is added later goes later. Trims and uses only push
        # that moment back, so calls before it have nothing to drop.
        self._due = due

    def _evict(self) -> None:
        """Drop the oldest messages of any room until the memory bound holds."""
        order = self._order
        while self._bytes > self.max_memory_bytes and order:
            _, room = order.popitem(last=False)
            _, frame, _, _ = room.entries.popleft()
            self._bytes -= _getsizeof(frame) + ENTRY_OVERHEAD_BYTES
            self._evicted += 1
