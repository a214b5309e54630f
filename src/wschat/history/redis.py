"""The Redis history store: offsets and recent messages of each room, in Redis.

Imports: redis-py (``redis.asyncio``; ``pip install wschat[redis]``), anyio, asyncio
(redis-py runs on it; an append Redis has not answered runs on after its caller moved
on), and the cluster's channel and envelope names. The only history module that
imports ``redis``.

:class:`RedisHistoryStore` keeps each room in Redis, shared by every process: a hash
holding the room's epoch and offset counter, and a stream holding its recent
messages (the layout is in :mod:`wschat.history._lua`). One Lua script takes the
room's next offset, builds the frame, adds it to the stream and, with
:meth:`RedisHistoryStore.append_and_publish`, publishes it on the room's backplane
channel, all in one atomic step: Redis runs scripts one at a time, so the offset
order is the order in which every process receives the messages.

Appends are batched: one task (the flusher) sends every append queued while the
previous batch was out as one pipeline of ``EVALSHA`` calls, in call order, one round
trip per batch; Redis runs them in that order.

Every call has a deadline, ``op_timeout`` (for appends, the batch's). A read that
misses it raises :class:`~wschat.errors.HistoryStoreUnavailable`. A batch that misses
it puts each of its appends in doubt (:class:`~wschat.errors.PublishInDoubt`): a
paused Redis still runs them when it runs again, so each caller learns from
:meth:`~wschat.errors.PublishInDoubt.outcome` whether its message was stored and
sent. Until that batch is answered (or given up, once Redis answers other calls
again), further appends fail at once with ``HistoryStoreUnavailable``, those queued
behind it too, so none overtakes it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any, Final

import anyio

from ..backplane.envelope import KIND_MESSAGE, envelope, room_channel, room_of
from ..backplane.redis import redis_client
from ..errors import ConfigurationError, HistoryStoreUnavailable
from ..validation import check_number
from ._lua import APPEND as _APPEND
from ._lua import READ as _READ
from .base import (
    AppendInDoubt,
    Entry,
    HistoryHealth,
    Page,
    PendingAppend,
    Position,
    Stored,
)
from .memory import DEFAULT_MAX_MESSAGES, DEFAULT_TTL
from .template import FrameTemplate

try:
    from redis import asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError, ResponseError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wschat.history.redis needs redis-py: pip install 'wschat[redis]'"
    ) from exc

__all__ = ["DEFAULT_OP_TIMEOUT", "RedisHistoryStore"]

log = logging.getLogger("wschat")

#: Seconds any one Redis call may take (the backplane's default too).
DEFAULT_OP_TIMEOUT: Final = 1.0
_PREFIX_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_HEAD_PATTERN: Final = re.compile(rb"m\|[A-Za-z0-9_.\-]{0,64}\|")
_FAILURES: Final = (RedisError, OSError)
#: Offsets and limits above this are clamped before they reach Lua (doubles).
_MAX_NUMBER: Final = 2**53
#: Rooms per pipeline in retain().
_RETAIN_BATCH: Final = 256
#: An append Redis has not answered this many op_timeouts after Redis answers
#: other calls again is counted as not stored, and its connection dropped.
_GIVE_UP_FACTOR: Final = 5
_WAITING: Final = "an earlier append to Redis is still unanswered"
#: At most this many appends go to Redis in one pipeline.
_MAX_BATCH: Final = 256


def _require_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(
            "RedisHistoryStore runs on asyncio only (redis.asyncio); this app runs "
            "on another event loop (trio?). Use asyncio, or another store."
        ) from None


def _check_limit(limit: int) -> None:
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be an integer of at least 1; got {limit!r}")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _noscript(reply: object) -> bool:
    return isinstance(reply, NoScriptError)


@dataclass(eq=False)
class _Append:
    """An append waiting for its answer: the script's keys and arguments, the
    message, the future its caller awaits, and whether it was sent."""

    keys: list[str]
    args: list[Any]
    template: FrameTemplate
    future: asyncio.Future[Any]
    sent: bool = False


def _fail(
    append: _Append, error: Exception, cause: BaseException | None = None
) -> None:
    """Answer the caller with ``error`` (raised from ``cause``), unless it has gone."""
    if not append.future.done():
        error.__cause__ = cause
        append.future.set_exception(error)


class _Pending:
    """An append :meth:`RedisHistoryStore.submit_and_publish` queued."""

    __slots__ = ("_abandon", "_answer", "_append")

    def __init__(
        self,
        append: _Append,
        answer: Callable[[_Append], Awaitable[Stored]],
        abandon: Callable[[_Append], None],
    ) -> None:
        self._append = append
        self._answer = answer
        self._abandon = abandon

    async def result(self) -> Stored:
        """Wait for Redis's answer: the message as stored (and published)."""
        return await self._answer(self._append)

    def cancel(self) -> None:
        """Nobody will await the answer: not sent yet, it never will be."""
        future = self._append.future
        if not future.done():
            future.cancel()
        self._abandon(self._append)


class RedisHistoryStore:
    """A :class:`~wschat.history.HistoryStore` in Redis, shared by processes.

    Example::

        store = RedisHistoryStore("redis://localhost", max_messages=100, ttl=300)
        async with store:
            stored = await store.append_and_publish("lobby", template)

    Use the same Redis and ``prefix`` as the app's
    :class:`~wschat.backplane.redis.RedisBackplane`:
    :meth:`append_and_publish` publishes on the channel that backplane's
    subscribers read, in the envelope they expect.

    Args:
        url_or_client: A ``redis://`` URL, or a ``redis.asyncio.Redis`` you own
            (not closed here; made with ``decode_responses=False``, and without
            retries: a retried append whose answer was lost would be stored twice).
        prefix: Fixed prefix of every key and channel, as the backplane's.
        max_messages: Messages shown per room (a few more may be kept, see
            ``docs/history.md``).
        ttl: Seconds a message is kept; a room's epoch and counter are forgotten
            ``ttl`` seconds after its last call or :meth:`retain`.
        op_timeout: Seconds any one Redis call may take.
        clock: Seconds for the messages' age; ``None`` (the default) uses the Redis
            server's clock, the same for every process. Tests pass a fake one.

    Raises:
        ConfigurationError: An option is out of range; the message says which.
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        prefix: str = "wschat:",
        max_messages: int = DEFAULT_MAX_MESSAGES,
        ttl: float = DEFAULT_TTL,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(prefix, str) or _PREFIX_PATTERN.fullmatch(prefix) is None:
            raise ConfigurationError(
                "prefix must be 1-64 letters, digits or _ . : - (no glob characters)"
            )
        check_number(
            "max_messages", max_messages, minimum=1, maximum=10**9, integer=True
        )
        check_number("ttl", ttl, minimum=0.001, maximum=10**9, unit="seconds")
        check_number("op_timeout", op_timeout, minimum=0.01, maximum=60, unit="seconds")
        self.prefix = prefix
        self.max_messages = max_messages
        self.ttl = float(ttl)
        self.op_timeout = float(op_timeout)
        self._ttl_ms = max(1, round(self.ttl * 1000))
        self._clock = clock
        # No retries: an append whose answer was lost must not run twice. No
        # socket timeout: op_timeout bounds every call, and an append sent to a
        # paused Redis must wait for its answer (see PublishInDoubt).
        self._client, self._owns_client = redis_client(
            url_or_client, owner="RedisHistoryStore", retry=Retry(NoBackoff(), 0)
        )
        self._append = self._client.register_script(_APPEND)
        self._read = self._client.register_script(_READ)
        # Epochs this process draws: random base, then a counter (unique per call).
        self._epoch_base = secrets.token_hex(8)
        self._epochs = 0
        self._error = ""
        self._failures = 0
        # Appends not sent yet; the task that sends them, a batch at a time (the
        # flusher), and the batch it sent last.
        self._queue: list[_Append] = []
        self._flusher: asyncio.Future[None] | None = None
        self._out: list[_Append] = []
        # The flusher while Redis has not answered its batch in time, and when
        # Redis answered other calls since.
        self._inflight: set[asyncio.Future[None]] = set()
        self._give_up_handle: asyncio.TimerHandle | None = None
        self._probe_task: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<RedisHistoryStore prefix={self.prefix!r} healthy={self.healthy}>"

    async def __aenter__(self) -> RedisHistoryStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Give up unanswered appends and close the client if the store made it."""
        for append in self._queue:
            _fail(append, HistoryStoreUnavailable("the history store was closed"))
        self._queue.clear()
        if self._flusher is not None:
            self._flusher.cancel()
        if self._probe_task is not None:
            self._probe_task.cancel()
        if self._owns_client:
            with anyio.move_on_after(1.0, shield=True):
                await self._client.aclose()

    # -- health ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """``redis``."""
        return "redis"

    @property
    def healthy(self) -> bool:
        """Whether the last call succeeded and no append is unanswered."""
        return not self._error and not self._inflight

    def health(self) -> HistoryHealth:
        """Whether the last call to Redis succeeded, and why not; no I/O.

        ``rooms`` and ``entries`` are None (counting them needs Redis) and
        ``memory_bytes`` is 0: the messages are in Redis, not in this process.
        """
        detail = self._error or (_WAITING if self._inflight else "")
        return HistoryHealth(name="redis", healthy=not detail, detail=detail)

    # -- the HistoryStore protocol ---------------------------------------------------

    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        """Give the message the room's next offset, build its frame, and keep it.

        Raises:
            HistoryStoreUnavailable: Not stored (Redis unreachable, refused it, or an
                earlier append is unanswered).
            AppendInDoubt: Redis did not answer within ``op_timeout`` (a
                :class:`~wschat.errors.PublishInDoubt`); it may
                still store it.
        """
        return await self._store(chat_id, template, "", b"")

    async def append_and_publish(
        self,
        chat_id: str,
        template: FrameTemplate,
        channel: str | None = None,
        prefix: bytes | None = None,
    ) -> Stored:
        """Append, and publish the final frame on the room's backplane channel.

        A :class:`~wschat.ConnectionManager` with a shared backplane calls it for
        every chat message instead of :meth:`append` and its own publish (the
        optional member of :class:`~wschat.history.HistoryStore`). In the same Lua
        script as the offset: Redis publishes the frames of a room in offset order,
        so every process subscribed to the room (through a
        :class:`~wschat.backplane.redis.RedisBackplane` with the same prefix)
        receives them in offset order. The message goes out as
        ``PUBLISH <prefix>r:<chat_id> "m|<origin>|<frame>"``, the envelope of a
        room message that the cluster delivers to the room's local members.

        Args:
            chat_id: The room.
            template: The frame without its offset.
            channel: The backplane's logical channel (``r:<chat_id>``, the
                default); the store puts its key prefix in front.
            prefix: The envelope head, ``b"m|<origin>|"``. With the default
                ``b"m||"`` (no process's node id), which the manager passes,
                every process, the sender's included, delivers the frame from its
                subscription, in offset order; a process skips an envelope
                naming its own node id as its own echo.

        Returns:
            The offset, the epoch and the final frame (already published).

        Raises:
            HistoryStoreUnavailable: Neither stored nor published.
            AppendInDoubt: Redis did not answer within ``op_timeout`` (a
                :class:`~wschat.errors.PublishInDoubt`); it may
                still store and publish it. ``outcome()`` tells.
            ValueError: ``prefix`` is not a message envelope head with a node id
                (1-64 letters, digits, _ . -), or ``channel`` is not a room's.
        """
        channel_key, head = self._target(chat_id, channel, prefix)
        # The script appends the frame to this head: ``m|<origin>|<frame>``.
        return await self._store(chat_id, template, channel_key, head)

    def submit_and_publish(
        self,
        chat_id: str,
        template: FrameTemplate,
        channel: str | None = None,
        prefix: bytes | None = None,
    ) -> PendingAppend:
        """:meth:`append_and_publish`, queued now: its answer is awaited later.

        The append is queued at this call, so appends submitted one after the
        other go to Redis in that order (a caller's next messages can be queued
        before the first is answered, and go out in the same batch).

        Returns:
            The pending append: ``await pending.result()`` gives what
            :meth:`append_and_publish` would have returned, or raises what it
            would have raised; ``pending.cancel()`` says nobody will await it.

        Raises:
            HistoryStoreUnavailable: An earlier append is unanswered: not queued.
            ValueError: As :meth:`append_and_publish`.
        """
        channel_key, head = self._target(chat_id, channel, prefix)
        append = self._enqueue(chat_id, template, channel_key, head)
        return _Pending(append, self._answer, self._abandon)

    def _target(
        self, chat_id: str, channel: str | None, prefix: bytes | None
    ) -> tuple[str, bytes]:
        """The Redis channel and the envelope head a publishing append uses.

        Raises:
            ValueError: ``prefix`` is not a message envelope head, or ``channel``
                is not a room's.
        """
        head = envelope(KIND_MESSAGE, b"", "") if prefix is None else prefix
        if _HEAD_PATTERN.fullmatch(head) is None:
            raise ValueError(
                f"prefix must be a message envelope head b'm|<node id>|' (a node "
                f"id is up to 64 letters, digits, _ . -); got {head[:80]!r}"
            )
        logical = room_channel(chat_id) if channel is None else channel
        if room_of(logical) is None:
            raise ValueError(f"channel must be a room's (r:<chat_id>); got {logical!r}")
        return self.prefix + logical, head

    async def position(self, chat_id: str) -> Position:
        """The room's epoch and latest offset (0 when it has no message).

        Raises:
            HistoryStoreUnavailable: Redis did not answer in time, or failed.
        """
        page = await self._page(chat_id, "p", "", 1)
        return Position(page.epoch, page.latest)

    async def read_after(self, chat_id: str, after: int, limit: int) -> Page:
        """The oldest ``limit`` kept messages with an offset above ``after``.

        Raises:
            ValueError: ``after`` is negative or ``limit`` is below 1.
            HistoryStoreUnavailable: Redis did not answer in time, or failed.
        """
        if type(after) is not int or after < 0:
            raise ValueError(f"after must be an integer of at least 0; got {after!r}")
        _check_limit(limit)
        return await self._page(chat_id, "a", str(min(after, _MAX_NUMBER)), limit)

    async def read_before(self, chat_id: str, before: int | None, limit: int) -> Page:
        """The newest ``limit`` kept messages with an offset below ``before``.

        Raises:
            ValueError: ``before`` is below 1 or ``limit`` is below 1.
            HistoryStoreUnavailable: Redis did not answer in time, or failed.
        """
        if before is not None and (type(before) is not int or before < 1):
            raise ValueError(
                f"before must be an integer of at least 1, or None; got {before!r}"
            )
        _check_limit(limit)
        bound = "" if before is None else str(min(before, _MAX_NUMBER))
        return await self._page(chat_id, "b", bound, limit)

    async def retain(self, chat_ids: Iterable[str]) -> None:
        """Keep these rooms' epoch and counter for ``ttl`` more seconds.

        Rooms Redis has no state for are left alone.

        Raises:
            HistoryStoreUnavailable: Redis did not answer in time, or failed.
        """
        ids = iter(chat_ids)
        while batch := list(islice(ids, _RETAIN_BATCH)):
            pipe = self._client.pipeline(transaction=False)
            for chat_id in batch:
                meta, stream = self._keys(chat_id)
                pipe.pexpire(meta, self._ttl_ms)
                pipe.pexpire(stream, self._ttl_ms)
            await self._call(pipe.execute, "retain")

    # -- internals -------------------------------------------------------------------

    def _keys(self, chat_id: str) -> list[str]:
        base = f"{self.prefix}h:{{{chat_id}}}"
        return [base + ":m", base + ":s"]

    def _args(self) -> list[Any]:
        """The arguments every script takes first: epoch, bounds, time."""
        self._epochs += 1
        now = "" if self._clock is None else str(round(self._clock() * 1000))
        epoch = f"{self._epoch_base}-{self._epochs}"
        return [epoch, self.max_messages, self._ttl_ms, now]

    def _failed(self, detail: str) -> None:
        if not self._error:
            log.warning("wschat redis history store degraded: %s", detail)
        self._error = detail

    def _succeeded(self) -> None:
        if self._error:
            log.warning("wschat redis history store answers again")
        self._error = ""
        if self._inflight and self._give_up_handle is None:
            # Redis answers again, so it has what it received before it stopped:
            # the unanswered append gets its answer any moment (or never, if its
            # connection was cut).
            loop = asyncio.get_running_loop()
            delay = _GIVE_UP_FACTOR * self.op_timeout
            self._give_up_handle = loop.call_later(delay, self._give_up)

    async def _call(self, call: Callable[[], Any], what: str) -> Any:
        """An idempotent call (a read, a retain) with its deadline; one retry."""
        _require_asyncio()
        try:
            with anyio.fail_after(self.op_timeout):
                try:
                    result = await call()
                except RedisConnectionError:
                    # A dead pooled connection (Redis restarted): one retry on a
                    # fresh one. Reads may run twice; appends never go through here.
                    result = await call()
        except TimeoutError:
            detail = f"Redis did not answer a {what} within {self.op_timeout:g} s"
            self._failed(detail)
            raise HistoryStoreUnavailable(detail) from None
        except ResponseError as exc:
            detail = f"Redis refused a {what}: {exc}"
            self._failed(detail)
            raise HistoryStoreUnavailable(detail) from exc
        except _FAILURES as exc:
            detail = f"{what} failed: redis unreachable ({type(exc).__name__})"
            self._failed(detail)
            raise HistoryStoreUnavailable(detail) from exc
        self._succeeded()
        return result

    async def _page(self, chat_id: str, mode: str, bound: str, limit: int) -> Page:
        args = [*self._args(), mode, bound, min(limit, _MAX_NUMBER)]
        keys = self._keys(chat_id)
        reply = await self._call(partial(self._read, keys=keys, args=args), "read")
        epoch, latest, first = _text(reply[0]), int(reply[1]), int(reply[2])
        rest = reply[3:]
        messages = tuple(
            Entry(int(rest[i]), _text(rest[i + 1])) for i in range(0, len(rest), 2)
        )
        return Page(epoch, latest, first, messages)

    async def _store(
        self, chat_id: str, template: FrameTemplate, channel: str, envelope: bytes
    ) -> Stored:
        return await self._answer(self._enqueue(chat_id, template, channel, envelope))

    def _enqueue(
        self, chat_id: str, template: FrameTemplate, channel: str, envelope: bytes
    ) -> _Append:
        """Queue an append for the flusher, now (call order is Redis's order)."""
        _require_asyncio()
        if self._inflight:
            raise HistoryStoreUnavailable(_WAITING)
        head, tail = template
        args = [*self._args(), head, tail, channel, envelope]
        future = asyncio.get_running_loop().create_future()
        append = _Append(self._keys(chat_id), args, template, future)
        self._queue.append(append)
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return append

    async def _answer(self, append: _Append) -> Stored:
        try:
            offset, epoch = await append.future
        except asyncio.CancelledError:
            self._abandon(append)  # our caller is cancelled: the app is stopping
            raise
        template = append.template
        return Stored(int(offset), _text(epoch), template.render(int(offset)))

    async def _flush(self) -> None:
        """Send what is queued, a batch at a time, until nothing is.

        Each batch is one pipeline of ``EVALSHA`` calls, one per append, in the
        order they were queued; what queues up while a batch is out goes in the
        next. Redis runs a pipeline's scripts in order, so the offsets (and the
        publishes) of a room follow the order of the calls.
        """
        try:
            while True:
                if not self._queue:
                    # Callers answered just now queue their next message in the
                    # loop's next round: wait for it rather than stop and start anew.
                    await asyncio.sleep(0)
                    if not self._queue:
                        return
                batch = [a for a in self._queue[:_MAX_BATCH] if not a.future.done()]
                del self._queue[:_MAX_BATCH]
                if batch:
                    await self._send(batch)
        finally:
            self._flusher = None
            if any(not append.future.done() for append in self._queue):
                # Cancelled while nobody waited for its batch; others wait now.
                self._flusher = asyncio.ensure_future(self._flush())

    async def _send(self, batch: list[_Append]) -> None:
        """One batch: every caller answered within ``op_timeout``, or put in doubt.

        The pipeline runs in this task (the flusher) so that its answer reaches
        the callers at once; a timer puts the batch in doubt at the deadline, and
        this task then waits on for Redis's answer, which settles it.
        """
        loop = asyncio.get_running_loop()
        for append in batch:
            append.sent = True
        self._out = batch
        flusher = self._flusher
        assert flusher is not None
        answer: asyncio.Future[list[Any]] = loop.create_future()
        timer = loop.call_later(self.op_timeout, self._overdue, batch, answer, flusher)
        try:
            replies = await self._run_batch([(a.keys, a.args) for a in batch])
        except asyncio.CancelledError:
            # Given up (or nobody waits for it any more): counted as not stored.
            timer.cancel()
            answer.cancel()
            if flusher in self._inflight:
                self._settled(flusher, answered=False)
            raise
        except Exception as error:
            timer.cancel()
            if flusher in self._inflight:
                answer.set_exception(error)
                self._settled(flusher, answered=False, error=error)
                return
            if isinstance(error, ResponseError):
                detail = f"Redis refused an append: {error}"
            else:
                detail = f"append failed: redis unreachable ({type(error).__name__})"
            self._failed(detail)
            for append in batch:
                _fail(append, HistoryStoreUnavailable(detail), error)
            return
        timer.cancel()
        if flusher in self._inflight:
            answer.set_result(replies)
            self._settled(flusher, answered=True)
            return
        for append, reply in zip(batch, replies, strict=True):
            if isinstance(reply, ResponseError):
                detail = f"Redis refused an append: {reply}"
                self._failed(detail)
                _fail(append, HistoryStoreUnavailable(detail), reply)
            else:
                self._succeeded()
                if not append.future.done():
                    append.future.set_result(reply)

    def _overdue(
        self,
        batch: list[_Append],
        answer: asyncio.Future[list[Any]],
        flusher: asyncio.Future[None],
    ) -> None:
        """Redis did not answer the batch within ``op_timeout``: all of it in doubt.

        Each caller's :class:`AppendInDoubt` settles from the batch's answer.
        Appends queued behind it are not sent: none overtakes it.
        """
        self._inflight.add(flusher)
        detail = f"Redis did not answer an append within {self.op_timeout:g} s"
        self._failed(detail)
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.ensure_future(self._probe())
        for index, append in enumerate(batch):
            settle = partial(self._stored_by, answer, index, append.template)
            _fail(append, AppendInDoubt(detail, settle))
        for append in self._queue:
            _fail(append, HistoryStoreUnavailable(_WAITING))
        self._queue.clear()

    def _abandon(self, append: _Append) -> None:
        """Its caller is cancelled. Unsent, it never will be (the flusher skips
        it); sent, its batch is cancelled once no caller waits on the flusher."""
        if append.future.done() and not append.future.cancelled():
            append.future.exception()  # answered just before: nobody will read it
        flusher = self._flusher
        if not append.sent or flusher is None or flusher in self._inflight:
            return
        if all(a.future.cancelled() for a in self._out) and all(
            a.future.done() for a in self._queue
        ):
            flusher.cancel()

    async def _probe(self) -> None:
        """While an append is unanswered, PING until Redis answers other calls.

        Appends fail fast meanwhile, so nothing else would notice that Redis runs
        again; once it does, the unanswered append is given a last
        ``_GIVE_UP_FACTOR * op_timeout`` to be answered.
        """
        while self._inflight and self._give_up_handle is None:
            try:
                await self._call(self._client.ping, "PING")
            except HistoryStoreUnavailable:
                await anyio.sleep(self.op_timeout)

    async def _run_batch(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run the appends in one pipeline: each one's reply, or its ResponseError."""
        replies = await self._evalsha(calls)
        missing = [i for i, reply in enumerate(replies) if _noscript(reply)]
        if missing:
            # Redis does not know the script (restarted, flushed): those calls did
            # not run. Load it and run them again, in their order. Only then: an
            # append whose answer was lost is never sent twice.
            await self._client.script_load(self._append.script)
            again = await self._evalsha([calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _evalsha(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        sha = self._append.sha
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    @staticmethod
    async def _stored_by(
        answer: asyncio.Future[list[Any]], index: int, template: FrameTemplate
    ) -> Stored | None:
        await asyncio.wait((answer,))
        if answer.cancelled() or answer.exception() is not None:
            return None
        reply = answer.result()[index]
        if isinstance(reply, ResponseError):
            return None
        offset, epoch = reply
        return Stored(int(offset), _text(epoch), template.render(int(offset)))

    def _settled(
        self,
        flusher: asyncio.Future[None],
        *,
        answered: bool,
        error: Exception | None = None,
    ) -> None:
        """The batch in doubt got its answer, failed (``error``), or was given up."""
        self._inflight.discard(flusher)
        if not self._inflight and self._give_up_handle is not None:
            self._give_up_handle.cancel()
            self._give_up_handle = None
        if error is not None:
            log.debug("wschat redis history append failed: %r", error)
        elif answered and self._error.startswith("Redis did not answer"):
            self._error = ""

    def _give_up(self) -> None:
        self._give_up_handle = None
        pending = [task for task in self._inflight if not task.done()]
        if pending:
            log.warning(
                "wschat redis history store: Redis answers again but not %d "
                "append(s) sent before it stopped; counting them as not stored",
                len(pending),
            )
        for task in pending:
            task.cancel()
