"""A manager's message history: offsets on publish, recovery on join, pages on request.

Imports: anyio and the standard library (core layer).

:class:`Scrollback` wraps the :class:`~wschat.history.HistoryStore` a
:class:`~wschat.ConnectionManager` uses, and is the only place the manager talks to
it. It does three things:

- **numbering**: every chat message is appended before it is delivered, and the
  store's final frame (with its ``offset``) is what every member gets;
- **recovery**: a client that joins with ``since`` and ``epoch`` gets, right after
  ``ready``, the messages it missed (:meth:`Scrollback.join_nowait` or
  :meth:`Scrollback.join`), or ``recovered: false`` when they are not all kept;
- **keeping rooms**: the rooms with members here are retained (``retain``) more
  often than the store's time to live, so their numbering never restarts under
  live members.

A store that never awaits (it has ``append_nowait``, ``position_nowait``,
``read_after_nowait``, ``read_before_nowait``: the in-memory one) is used
synchronously, so a message is numbered and delivered in one step and a joiner reads
the history and joins the room in one step: no message can fall between. Any other
store is awaited; then the manager holds a joiner's live frames while the store
answers (:class:`Hold`) and drops those the replay already covered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple

import anyio
import anyio.abc

from .errors import DeliveryInDoubt, HistoryUnavailable, NotSent, PublishInDoubt
from .history.base import AppendInDoubt, HistoryStore, Page, PendingAppend, Stored
from .history.template import FrameTemplate
from .protocol import Since, encode_history

__all__ = [
    "DEFAULT_RETAIN_INTERVAL",
    "HOLD_FILTER_SECONDS",
    "IN_DOUBT_WAIT",
    "RECOVERY_LIMIT",
    "Hold",
    "Joined",
    "Scrollback",
    "offset_of",
]

log = logging.getLogger("wschat")

#: Messages replayed at most on a reconnect; a client that missed more reloads.
RECOVERY_LIMIT: Final = 500
#: Seconds between two ``retain`` calls for a store that states no ``ttl``.
DEFAULT_RETAIN_INTERVAL: Final = 60.0
#: Seconds a recovered joiner of an awaited store keeps dropping live messages the
#: replay covered (messages numbered before its read and delivered after it).
HOLD_FILTER_SECONDS: Final = 10.0
#: Seconds a sender's publish waits for a store that received the message but did
#: not answer within its own deadline (``PublishInDoubt``), before answering
#: ``delivery_degraded``.
IN_DOUBT_WAIT: Final = 5.0

_SYNC: Final = (
    "append_nowait",
    "position_nowait",
    "read_after_nowait",
    "read_before_nowait",
    "retain_nowait",
)
_MESSAGE: Final = '{"type":"message"'
_OFFSET: Final = '"offset":'


def offset_of(frame: str) -> int | None:
    """The offset of an encoded ``message`` frame, or None for any other frame."""
    if not frame.startswith(_MESSAGE):
        return None
    at = frame.rfind(_OFFSET)
    if at < 0:
        return None
    try:
        return int(frame[at + len(_OFFSET) : -1])
    except ValueError:
        return None


async def _answer(doubt: PublishInDoubt) -> Stored | bool:
    """The store's answer: the message as stored, False if not, True if stored
    but the store does not say how (a ``PublishInDoubt`` that is no
    ``AppendInDoubt``)."""
    if isinstance(doubt, AppendInDoubt):
        stored = await doubt.stored()
        return False if stored is None else stored
    return await doubt.outcome()


async def _later(doubt: PublishInDoubt, late: Callable[[Stored], None]) -> None:
    answer = await _answer(doubt)
    if isinstance(answer, Stored):
        late(answer)


class Joined(NamedTuple):
    """What a joiner is told about the room's history, and what it gets replayed.

    Attributes:
        epoch: The room's epoch (None if the store did not answer).
        offset: The room's latest offset as read (None if the store did not answer).
        recovered: Whether ``frames`` are exactly what the client missed.
        frames: The missed ``message`` frames, ascending; empty unless recovered.
    """

    epoch: str | None
    offset: int | None
    recovered: bool
    frames: tuple[str, ...] = ()


class Hold:
    """A joiner of an awaited store: its live frames wait until its ``ready``.

    Attributes:
        since: What it asked to recover.
        attached: Set once it joined its room (its frames are held from then).
        frames: Live frames held meanwhile; None once released.
        floor: After release, live messages up to this offset are dropped.
        until: When the floor stops applying (monotonic seconds).
    """

    __slots__ = ("attached", "first_frame", "floor", "frames", "since", "until")

    def __init__(self, since: Since | None) -> None:
        self.since = since
        #: Builds the joiner's ``ready`` (the manager's ``first_frame``).
        self.first_frame: Callable[[Any], str] | None = None
        self.attached = anyio.Event()
        self.frames: list[str] | None = []
        self.floor = 0
        self.until = 0.0


class Scrollback:
    """The manager's side of a history store.

    Args:
        store: The store.
        rooms: The rooms with members in this process, for ``retain``.
        clock: Monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self,
        store: HistoryStore,
        rooms: Callable[[], Iterable[str]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        # The same store, for its optional members (the *_nowait methods,
        # append_and_publish), which the HistoryStore protocol does not name.
        self._extra: Any = store
        self.name = store.name
        #: Whether the store never awaits (the in-memory one).
        self.sync = all(callable(getattr(store, name, None)) for name in _SYNC)
        #: Whether it numbers rooms for this process only (cannot serve a cluster).
        self.local_only = getattr(store, "local_only", False) is True
        #: Whether it appends and publishes in one step (``append_and_publish``).
        self.publishes = callable(getattr(store, "append_and_publish", None))
        #: Whether it queues an append at call time (``submit_and_publish``).
        self.submits = self.publishes and callable(
            getattr(store, "submit_and_publish", None)
        )
        ttl = getattr(store, "ttl", None)
        self.retain_every = (
            ttl / 3
            if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > 0
            else DEFAULT_RETAIN_INTERVAL
        )
        self._rooms = rooms
        self._clock = clock
        self._retain_due = clock() + self.retain_every
        self.recovered = 0
        self.not_recovered = 0
        self.errors = 0
        self.error = ""
        #: Seconds :meth:`settle` waits (:data:`IN_DOUBT_WAIT`; tests shorten it).
        self.in_doubt_wait = IN_DOUBT_WAIT
        if self.sync:
            self._append_nowait = store.append_nowait  # type: ignore[attr-defined]

    # -- keeping rooms ----------------------------------------------------------------

    def retain_due(self) -> bool:
        """Whether the rooms with members should be retained now."""
        return self._clock() >= self._retain_due

    def retain_nowait(self) -> None:
        """Retain the rooms with members (a store that never awaits)."""
        self._retain_due = self._clock() + self.retain_every
        self._extra.retain_nowait(list(self._rooms()))

    async def retain(self) -> None:
        """Retain the rooms with members; a failure is counted, not raised."""
        self._retain_due = self._clock() + self.retain_every
        try:
            await self.store.retain(list(self._rooms()))
        except Exception as exc:
            self.failed("retain", exc)

    def failed(self, what: str, exc: BaseException) -> None:
        """Count and log (once per kind of failure in a row) a store failure."""
        self.errors += 1
        error = f"{what}: {type(exc).__name__}"
        if error != self.error:
            log.warning("wschat history store %s failed: %r", self.name, exc)
        self.error = error

    # -- numbering --------------------------------------------------------------------

    def append_nowait(self, chat_id: str, template: FrameTemplate) -> Stored:
        """Number and keep a message (a store that never awaits)."""
        if self._clock() >= self._retain_due:
            self.retain_nowait()
        stored: Stored = self._append_nowait(chat_id, template)
        return stored

    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        """Number and keep a message. Raises what the store raises."""
        if self.retain_due():
            await self.retain()
        stored = await self.store.append(chat_id, template)
        self.error = ""
        return stored

    async def append_and_publish(
        self, chat_id: str, template: FrameTemplate, channel: str, prefix: bytes
    ) -> Stored:
        """Number, keep and publish a message in the store's one atomic step."""
        if self.retain_due():
            await self.retain()
        stored: Stored = await self._extra.append_and_publish(
            chat_id, template, channel, prefix
        )
        self.error = ""
        return stored

    def submit_and_publish(
        self, chat_id: str, template: FrameTemplate, channel: str, prefix: bytes
    ) -> PendingAppend:
        """Queue :meth:`append_and_publish` now; its answer is awaited later.

        Retaining is left to the manager's periodic task (always running in a
        cluster, the only user of this).
        """
        pending: PendingAppend = self._extra.submit_and_publish(
            chat_id, template, channel, prefix
        )
        return pending

    async def settle(
        self,
        doubt: PublishInDoubt,
        message_id: str,
        late: Callable[[Stored], None] | None = None,
        tg: anyio.abc.TaskGroup | None = None,
    ) -> Stored:
        """Wait (at most :attr:`in_doubt_wait` seconds) for an append in doubt.

        The store received the message but did not answer in time: it may store
        (and, with ``append_and_publish``, publish) it later, or never.

        Returns:
            The message as stored: it went out (the store answered in time).

        Raises:
            NotSent: The store answered that it did not store it: nobody got it.
            DeliveryInDoubt: No answer within the wait (or a store that says only
                that it stored the message, not how): it may or may not go out.
                If it is stored later, ``late`` is called with it (from a task of
                ``tg``, when given).
        """
        self.failed("append", doubt)
        answer = None
        with anyio.move_on_after(self.in_doubt_wait):
            answer = await _answer(doubt)
        if answer is False:
            raise NotSent()
        if isinstance(answer, Stored):
            self.error = ""
            return answer
        if answer is None and late is not None and tg is not None:
            tg.start_soon(_later, doubt, late)
        raise DeliveryInDoubt(message_id=message_id)

    # -- recovery ---------------------------------------------------------------------

    def _joined(self, since: Since, page: Page, max_bytes: int) -> Joined:
        if page.epoch == since.epoch and page.complete_after(since.offset):
            frames = tuple(entry.frame for entry in page.messages)
            if sum(len(f) for f in frames) <= max_bytes:
                self.recovered += 1
                return Joined(page.epoch, page.latest, True, frames)
        self.not_recovered += 1
        return Joined(page.epoch, page.latest, False)

    def join_nowait(self, chat_id: str, since: Since | None, max_bytes: int) -> Joined:
        """The room's position, and the missed messages if ``since`` asks for them.

        Args:
            chat_id: The room.
            since: What the client saw last, or None.
            max_bytes: Replay at most this many bytes (else not recovered).
        """
        store = self._extra
        if self._clock() >= self._retain_due:
            self.retain_nowait()
        if since is None:
            epoch, offset = store.position_nowait(chat_id)
            return Joined(epoch, offset, False)
        page = store.read_after_nowait(chat_id, since.offset, RECOVERY_LIMIT)
        return self._joined(since, page, max_bytes)

    async def join(self, chat_id: str, since: Since | None, max_bytes: int) -> Joined:
        """:meth:`join_nowait` for an awaited store; a failure tells nothing.

        When the store fails, the joiner is told ``epoch`` and ``offset`` null
        and ``recovered`` false: it reloads through ``history`` later.
        """
        if self.retain_due():
            await self.retain()
        try:
            if since is None:
                epoch, offset = await self.store.position(chat_id)
                return Joined(epoch, offset, False)
            page = await self.store.read_after(chat_id, since.offset, RECOVERY_LIMIT)
        except Exception as exc:
            self.failed("read", exc)
            self.not_recovered += since is not None
            return Joined(None, None, False)
        self.error = ""
        return self._joined(since, page, max_bytes)

    # -- paging -----------------------------------------------------------------------

    async def page(self, chat_id: str, before: int | None, limit: int) -> str:
        """The encoded answer to a ``history`` request.

        Raises:
            HistoryUnavailable: The store failed.
        """
        try:
            if self.sync:
                page: Page = self._extra.read_before_nowait(chat_id, before, limit)
            else:
                page = await self.store.read_before(chat_id, before, limit)
        except Exception as exc:
            self.failed("read", exc)
            raise HistoryUnavailable(
                "the history store did not answer; try again later"
            ) from None
        return encode_history(
            chat_id=chat_id,
            epoch=page.epoch,
            latest=page.latest,
            frames=[entry.frame for entry in page.messages],
            more=page.more_before,
        )

    # -- status -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The store's health and size, and recovery counters, for ``/status``."""
        sweep = getattr(self.store, "sweep", None)
        if callable(sweep):
            sweep()  # sizes as of now, and memory back while nobody calls
        health = self.store.health().as_dict()
        if self.error:
            health["healthy"] = False
            health["detail"] = health["detail"] or f"last {self.error}"
        health["recovered"] = self.recovered
        health["not_recovered"] = self.not_recovered
        health["errors"] = self.errors
        return health
