"""Presence announced per room, coalesced: one frame per room per sweep interval.

Imports: the standard library (core layer).

Part of local delivery. Each ``join`` and ``leave`` that presence decides on (a
user's first connection in a room, their last one gone, in any process) is merged
into the room's pending diff. Once per sweep interval (:mod:`wschat.sweeper`) each
room with a pending diff gets ONE ``presence`` frame, encoded once, put into every
member's outbox: a storm of J joins costs each member O(1) frames per interval, not
J. A chat message to the room sends the room's pending diff first, so presence is
never reordered with messages.

A diff is net: a user who joins and leaves within one interval is in neither list.
Above a room size (``count_only_above``) the lists are left empty and only the count
is news (``count_only``): at most one small frame per member per
:data:`COUNT_ONLY_INTERVAL`, instead of names that grow with the room, and for a room
of more than :data:`COUNT_ONLY_FRAMES_PER_SECOND` members less often (see
:func:`count_interval`: what a room's count costs the process stays bounded however
large it is), plus at most one per interval sent ahead of it: at the first sweep
:data:`STILL_AFTER` (20 ms) after the room's last change, so that a storm's last count
is not a second late. While a count waits the sweep looks again every 10 ms, and the
20 ms count only from the last sweep that ran late (more than 10 ms after it was
asked for: the event loop was busy, with a GC pass or a burst of handshakes): joins
held back by a busy loop are not handled yet, and a pause they make is no pause.

``presence_format="events"`` keeps wschat 0.1's single-event frames instead, one per
join or leave (for clients not yet updated; a storm then costs each member a frame
per join).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final, Literal, TypeAlias

from .connection import Connection
from .ids import ChatId, UserId
from .protocol import encode_presence, encode_presence_diff
from .rooms import RoomRegistry
from .sweeper import SWEEP_INTERVAL

__all__ = [
    "COUNT_ONLY_FRAMES_PER_SECOND",
    "COUNT_ONLY_INTERVAL",
    "COUNT_ONLY_MAX_INTERVAL",
    "DEFAULT_COUNT_ONLY_ABOVE",
    "DEFAULT_READY_MEMBERS",
    "STILL_AFTER",
    "PresenceAnnouncer",
    "PresenceEvent",
    "PresenceFormat",
    "count_interval",
]

#: ``"diff"``: coalesced ``joins``/``leaves`` frames (the default); ``"events"``:
#: wschat 0.1's one frame per join or leave.
PresenceFormat: TypeAlias = Literal["diff", "events"]
PresenceEvent: TypeAlias = Literal["join", "leave"]
_FORMATS: Final = ("diff", "events")

#: Rooms with more distinct users than this get count-only presence by default
#: (docs/options.md says why).
DEFAULT_COUNT_ONLY_ABOVE: Final = 250
#: At most this many members are listed in ``ready`` by default.
DEFAULT_READY_MEMBERS: Final = 100
#: Seconds between two count-only frames of one room (up to 1,000 members): a room
#: above the threshold that changes at every sweep (a room filling up) sends each
#: member one small frame per second, not one per sweep (0.1 s). One more may go
#: ahead of it when the room pauses (STILL_AFTER).
COUNT_ONLY_INTERVAL: Final = 1.0
#: A churning count-only room sends its members about this many count frames a
#: second in all, at most twice as many with the ones sent ahead of the interval: a
#: room of more members gets its count less often than every
#: :data:`COUNT_ONLY_INTERVAL` (each frame is a send per member: about 20 us of the
#: event loop's core on the benchmark machine, so 2% of a core per churning room;
#: a room of 5,000 gets its count every 5 s, as live-stream viewer counts go).
COUNT_ONLY_FRAMES_PER_SECOND: Final = 1000
#: ... but at least this often (seconds), however large the room.
COUNT_ONLY_MAX_INTERVAL: Final = 10.0
#: A count-only room whose last change is this many seconds old at a sweep sends its
#: waiting count at that sweep, ahead of its interval, once per interval (a storm's
#: last count then goes about 20 ms after its last join, not up to an interval).
STILL_AFTER: Final = SWEEP_INTERVAL / 5
#: A sweep that runs more than this many seconds after the flush left for it was
#: due ran late: a room's pause counts only from then on.
_LATE_BY: Final = STILL_AFTER / 2
#: A flush left for a sweep that has not run after this many seconds is left
#: again (the event loop hosting it may have ended).
_STALE: Final = 2.0


def count_interval(members: int) -> float:
    """Seconds between two count-only frames of a room with ``members`` local
    members while it keeps changing: :data:`COUNT_ONLY_INTERVAL` (1 s) up to
    :data:`COUNT_ONLY_FRAMES_PER_SECOND` (1,000) members, then ``members / 1,000``
    (5 s for 5,000), at most :data:`COUNT_ONLY_MAX_INTERVAL` (10 s)."""
    return min(
        max(COUNT_ONLY_INTERVAL, members / COUNT_ONLY_FRAMES_PER_SECOND),
        COUNT_ONLY_MAX_INTERVAL,
    )


class _Diff:
    """One room's joins and leaves since its last ``presence`` frame, net."""

    __slots__ = ("joins", "leaves")

    def __init__(self) -> None:
        # Dicts as ordered sets: the order users joined or left in.
        self.joins: dict[UserId, None] = {}
        self.leaves: dict[UserId, None] = {}

    def add(self, event: PresenceEvent, user: UserId) -> None:
        if event == "join":
            if self.leaves.pop(user, 0) is None:
                return  # left and came back within the interval: no change
            self.joins[user] = None
        else:
            if self.joins.pop(user, 0) is None:
                return  # came and went within the interval: no change
            self.leaves[user] = None


class PresenceAnnouncer:
    """Coalesces a manager's presence per room and sends it once per interval.

    Args:
        registry: Room membership in this process (who gets the frames, and which
            connection's event loop runs the sweep that sends them).
        deliver: Puts an encoded frame into every local member's outbox, deferred
            (``broadcast_local(chat_id, frame, defer=True)``).
        count: Distinct users in a room now, in every process as far as known.
        format: ``"diff"`` or ``"events"`` (see the module docstring).
        count_only_above: Rooms with more users than this get count-only frames
            (at most one per :func:`count_interval` while it changes); None for
            names at any size.
        clock: Seconds, monotonic (tests pass their own).
    """

    __slots__ = (
        "_calm_since",
        "_changed_at",
        "_clock",
        "_count",
        "_count_sent",
        "_deliver",
        "_early_sent",
        "_hostless",
        "_lock",
        "_registry",
        "_scheduled",
        "_within",
        "count_only_above",
        "format",
        "pending",
    )

    def __init__(
        self,
        registry: RoomRegistry[Connection],
        deliver: Callable[[ChatId, str], object],
        count: Callable[[ChatId], int],
        *,
        format: PresenceFormat = "diff",
        count_only_above: int | None = DEFAULT_COUNT_ONLY_ABOVE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if format not in _FORMATS:
            raise ValueError(f"presence_format must be diff or events; got {format!r}")
        self._registry = registry
        self._deliver = deliver
        self._count = count
        self.format = format
        self.count_only_above = count_only_above
        self._clock = clock
        # When each room above the threshold last sent its count-only frame.
        self._count_sent: dict[ChatId, float] = {}
        # ... when it last sent one ahead of its interval (STILL_AFTER).
        self._early_sent: dict[ChatId, float] = {}
        # When each room last had a join or leave.
        self._changed_at: dict[ChatId, float] = {}
        # Rooms in which no member could host a sweep, and their size then.
        self._hostless: dict[ChatId, int] = {}
        #: Rooms with joins or leaves not announced yet (read it; do not change it).
        self.pending: dict[ChatId, _Diff] = {}
        # When a flush was left for a sweep that has not run yet, else None, and
        # how soon it was asked for (a whole sweep interval, or STILL_AFTER).
        self._scheduled: float | None = None
        self._within = SWEEP_INTERVAL
        # Since when the sweeps have run on time (a room's pause counts from then).
        self._calm_since = 0.0
        # A manager may be used from several threads (a TestClient without `with`).
        self._lock = threading.Lock()

    def changed(self, chat_id: ChatId, event: PresenceEvent, user: UserId) -> None:
        """Presence decided that ``user`` joined or left the room: announce it.

        Never blocks. When the rooms have been quiet, the frame is queued at once
        (an isolated join reaches a new member with its ``ready``); from then on,
        until an interval passes with no join or leave, each room's changes are
        gathered and sent once per sweep (or before the room's next message).
        """
        if self.format == "events":
            frame = encode_presence(
                chat_id=chat_id, event=event, user=user, count=self._count(chat_id)
            )
            self._deliver(chat_id, frame)
            return
        if self._registry.room(chat_id) is None:
            # Nobody here to tell (the last local member left).
            with self._lock:
                self.pending.pop(chat_id, None)
                self._forget(chat_id)
                self._hostless.pop(chat_id, None)
            return
        with self._lock:
            diff = self.pending.get(chat_id)
            if diff is None:
                diff = self.pending[chat_id] = _Diff()
            diff.add(event, user)
            now = self._clock()
            self._changed_at[chat_id] = now
            scheduled = self._scheduled
            if scheduled is not None and now - scheduled < _STALE:
                return  # gathering: the next sweep sends it
            self._scheduled = now
            self._within = SWEEP_INTERVAL
            self._calm_since = now
        # Quiet until now: send at once, and gather what follows until the sweep.
        self._flush_pending()
        if not self._leave_for_sweep(chat_id):
            # Nothing here runs a sweep (no member is served by an event loop, as
            # in synchronous use): every change is sent at once.
            with self._lock:
                self._scheduled = None

    def _leave_for_sweep(self, chat_id: ChatId, within: float | None = None) -> bool:
        """Leave :meth:`flush` for the next sweep of a member's event loop (or
        ``within`` seconds of the sweep running now, see ``call_at_sweep``).

        No member may host it when all of them are closing (a server shutting
        down closes every connection at once). The room is then remembered as
        hostless at its size, and while it only shrinks no member is asked again:
        its leaves cost O(1) each, not a look at every member (O(members^2) for a
        room emptying). A room that grows is asked again.
        """
        room = self._registry.room(chat_id)
        if room is None:
            return False
        members = room.connections
        size = len(members)
        hostless = self._hostless.get(chat_id)
        if hostless is not None and size < hostless:
            self._hostless[chat_id] = size
            return False
        for conn in members.values():
            if conn.call_at_sweep(self.flush, within):
                self._hostless.pop(chat_id, None)
                return True
        self._hostless[chat_id] = size
        return False

    def flush(self) -> None:
        """Send every room's pending diff (the sweep calls it): a frame per room.

        While there was something to send, the next sweep is asked to look again
        (every ``STILL_AFTER / 2``, 10 ms, while a count waits, to send it once the
        room pauses); after a quiet interval, the next change is sent at once.
        """
        now = self._clock()
        scheduled = self._scheduled
        if scheduled is not None and now - scheduled > self._within + _LATE_BY:
            self._calm_since = now
        sent = self._flush_pending(calm_since=self._calm_since)
        within = STILL_AFTER / 2 if self.pending else None
        with self._lock:
            self._scheduled = self._clock() if sent else None
            self._within = SWEEP_INTERVAL if within is None else within
        for chat_id in sent:
            if self._leave_for_sweep(chat_id, within):
                return
        with self._lock:
            self._scheduled = None

    def _flush_pending(self, *, calm_since: float | None = None) -> list[ChatId]:
        """Send the pending diffs; a room's pause counts from its last change or
        from ``calm_since`` (the last sweep that ran late), whichever is later
        (None: no pause counts)."""
        with self._lock:
            if not self.pending:
                return []
            pending, self.pending = self.pending, {}
        now = self._clock()
        for chat_id, diff in pending.items():
            quiet_for = (
                0.0
                if calm_since is None
                else now - max(self._changed_at.get(chat_id, now), calm_since)
            )
            if not self._send(chat_id, diff, quiet_for=quiet_for):
                with self._lock:  # a count-only frame waits for its interval
                    self.pending.setdefault(chat_id, diff)
        return list(pending)

    def flush_room(self, chat_id: ChatId) -> None:
        """Send the room's pending diff now (a message to the room comes next)."""
        with self._lock:
            diff = self.pending.pop(chat_id, None)
        if diff is not None and not self._send(chat_id, diff):
            with self._lock:  # only a count is news: it waits for its interval
                self.pending.setdefault(chat_id, diff)

    def _forget(self, chat_id: ChatId) -> None:
        self._count_sent.pop(chat_id, None)
        self._early_sent.pop(chat_id, None)
        self._changed_at.pop(chat_id, None)

    def _send(self, chat_id: ChatId, diff: _Diff, *, quiet_for: float = 0.0) -> bool:
        """Send a room's diff; False when it must wait: a count-only frame of the
        room went out less than :func:`count_interval` ago, and either the room's
        last change is less than :data:`STILL_AFTER` old (``quiet_for``) or the room
        sent ahead of its interval less than an interval ago."""
        if not diff.joins and not diff.leaves:
            return True  # every change cancelled out within the interval
        room = self._registry.room(chat_id)
        if room is None:
            self._forget(chat_id)
            return True  # nobody here to tell
        count = self._count(chat_id)
        above = self.count_only_above
        if above is not None and count > above:
            now = self._clock()
            last = self._count_sent.get(chat_id)
            interval = count_interval(len(room.connections))
            if last is not None and now - last < interval:
                early = self._early_sent.get(chat_id)
                if quiet_for < STILL_AFTER or (
                    early is not None and now - early < interval
                ):
                    return False
                self._early_sent[chat_id] = now
            self._count_sent[chat_id] = now
            frame = encode_presence_diff(
                chat_id=chat_id, joins=(), leaves=(), count=count, count_only=True
            )
        else:
            self._count_sent.pop(chat_id, None)
            self._early_sent.pop(chat_id, None)
            frame = encode_presence_diff(
                chat_id=chat_id,
                joins=list(diff.joins),
                leaves=list(diff.leaves),
                count=count,
            )
        self._deliver(chat_id, frame)
        return True
