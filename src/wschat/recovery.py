"""Joiners of an awaited history store: their live frames wait for their ``ready``.

Imports: anyio and the standard library (core layer).

With a store that awaits (Redis, PostgreSQL), a joiner that asks to recover joins its
room first, so that nothing published from then on is missed, and reads the store
after. Until its ``ready`` and the replay are queued, the live frames meant for it
are held (:class:`~wschat.scrollback.Hold`); then the held frames the replay did not
cover follow, and for :data:`~wschat.scrollback.HOLD_FILTER_SECONDS` more, live
messages the replay already had are dropped. :class:`Holds` keeps that bookkeeping
for a :class:`~wschat.ConnectionManager`: by connection, and by room for the
broadcast (only rooms that have a held joiner, so a broadcast elsewhere checks one
empty dict).

The in-memory store never awaits: its joiner reads and joins in one step, and
nothing here is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .connection import Connection
from .errors import SlowConsumer
from .ids import ChatId, ConnectionId
from .protocol import Since, with_history_fields
from .scrollback import HOLD_FILTER_SECONDS, Hold, Scrollback, offset_of

__all__ = ["Holds"]


class Holds:
    """The joiners of an awaited store whose frames are held, for one manager.

    Attributes:
        by_conn: Every hold, by connection (empty: nothing is held anywhere).
        by_room: The holds of each room that has one (empty rooms are removed).
    """

    __slots__ = ("_clock", "by_conn", "by_room")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.by_conn: dict[ConnectionId, Hold] = {}
        self.by_room: dict[ChatId, dict[ConnectionId, Hold]] = {}
        self._clock = clock

    def __bool__(self) -> bool:
        return bool(self.by_conn)

    def hold(self, conn: Connection, since: Since | None) -> None:
        """Hold the frames of a connection about to join (an awaited store)."""
        self.by_conn[conn.id] = Hold(since)

    def attach(
        self, conn: Connection, first_frame: Callable[[Any], str] | None
    ) -> bool:
        """The held connection joined its room: hold its frames from now on.

        Returns:
            False if the connection is not held (its first frame is the caller's).
        """
        hold = self.by_conn.get(conn.id)
        if hold is None:
            return False
        room = self.by_room.get(conn.chat_id)
        if room is None:
            room = self.by_room[conn.chat_id] = {}
        room[conn.id] = hold
        hold.first_frame = first_frame
        hold.attached.set()
        return True

    def drop(self, conn: Connection) -> None:
        """The connection ended: forget its hold."""
        if self.by_conn.pop(conn.id, None) is None:
            return
        room = self.by_room.get(conn.chat_id)
        if room is not None:
            room.pop(conn.id, None)
            if not room:
                del self.by_room[conn.chat_id]

    def is_held(self, conn: Connection) -> bool:
        """Whether the connection's ``ready`` is not queued yet."""
        hold = self.by_conn.get(conn.id)
        return hold is not None and hold.frames is not None

    def broadcast(
        self,
        chat_id: ChatId,
        members: dict[ConnectionId, Connection],
        frame: str,
        defer: bool,
    ) -> int:
        """Put a frame into the outboxes of a room that has held joiners.

        A held joiner's frame waits (a joiner holding more than its outbox's
        message cap is closed as a slow consumer); a released one's is dropped
        if the replay had it, until its filter expires.

        Returns:
            How many outboxes took the frame.
        """
        held = self.by_room[chat_id]
        offset: int | None = -1
        now = self._clock()
        delivered = 0
        for conn in list(members.values()):
            hold = held.get(conn.id)
            if hold is not None:
                if hold.frames is not None:
                    hold.frames.append(frame)
                    if len(hold.frames) > conn.limits.max_messages:
                        conn.abort(SlowConsumer())
                    continue
                if now < hold.until:
                    if offset == -1:
                        offset = offset_of(frame)
                    if offset is not None and offset <= hold.floor:
                        continue  # the replay had it already
                else:
                    del held[conn.id]
                    self.by_conn.pop(conn.id, None)
            if conn.put_nowait(frame, defer=defer):
                delivered += 1
        if not held:
            del self.by_room[chat_id]
        return delivered

    async def recover(self, conn: Connection, history: Scrollback | None) -> None:
        """Queue ``ready`` and the recovered messages of a held joiner.

        Waits until the connection joined its room, reads the store, and in one
        step queues ``ready``, the replay, and the held frames the replay did not
        cover; live messages the replay covered are dropped for
        :data:`~wschat.scrollback.HOLD_FILTER_SECONDS` more. Returns at once for
        a connection that is not held.
        """
        hold = self.by_conn.get(conn.id)
        if hold is None or history is None:
            return
        await hold.attached.wait()
        joined = await history.join(
            conn.chat_id, hold.since, conn.limits.max_bytes // 2
        )
        if self.by_conn.get(conn.id) is not hold or hold.frames is None:
            return  # it ended meanwhile
        ready, hold.first_frame = hold.first_frame, None
        if ready is not None:
            conn.put_nowait(
                with_history_fields(
                    ready(conn), joined.epoch, joined.offset, joined.recovered
                )
            )
        for frame in joined.frames:
            conn.put_nowait(frame)
        floor = joined.offset or 0
        held, hold.frames = hold.frames, None
        for frame in held:
            offset = offset_of(frame)
            if offset is None or offset > floor:
                conn.put_nowait(frame)
        hold.floor = floor
        hold.until = self._clock() + HOLD_FILTER_SECONDS
