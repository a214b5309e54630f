"""The Redis backplane: rooms shared by processes and machines over Redis pub/sub.

Imports: redis-py (``redis.asyncio``; ``pip install wschat[redis]``), anyio, and
asyncio (to refuse another event loop, and to let a publish that Redis has not
answered run on after its caller moved on). With :mod:`wschat.history.redis`, the
only modules of wschat that import ``redis``: engines beside the core, which stays on
anyio alone.

Each room is one channel, ``<prefix>r:<chat_id>``, subscribed while this process has
members in it; chat ids match a strict pattern and are only ever used under that
fixed prefix, with ``SUBSCRIBE`` and ``PUBLISH``, never as glob patterns. Presence is
one hash per room, ``<prefix>p:<chat_id>``, mapping each user to the processes that
hold them and when each lease expires (Redis server time, so machines' clocks do not
matter); Lua scripts keep every change atomic.

Every call to Redis has a deadline, ``op_timeout``: publishes, presence scripts,
subscribes, unsubscribes, the listener's connection setup and its ``PING`` (sent
every ``ping_interval``). The first call that misses it marks the backplane degraded
at once (publishes then fail fast, so senders learn it), and the listener drops its
connection, reconnects with capped exponential backoff and jitter, subscribes every
wanted channel again, and asks the manager to ``resync`` each one once Redis confirms
it. A publish that Redis has not answered is not abandoned: a paused Redis executes
it when it runs again, so its caller gets :class:`~wschat.backplane.PublishInDoubt`
and the answer decides later whether it went out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import Collection, Mapping, Sequence
from functools import partial
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus

from ..errors import ConfigurationError
from ._lua import JOIN as _JOIN
from ._lua import LEAVE as _LEAVE
from ._lua import MEMBERS as _MEMBERS
from ._lua import REFRESH as _REFRESH
from ._lua import SLOT_ACQUIRE as _SLOT_ACQUIRE
from ._lua import SLOT_REFRESH as _SLOT_REFRESH
from .base import BackplaneHealth, BackplaneUnavailable, PublishInDoubt, Receiver

try:
    from redis import asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError, ResponseError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wschat.backplane.redis needs redis-py: pip install 'wschat[redis]'"
    ) from exc

__all__ = ["POOL_SIZE", "RedisBackplane", "redis_client"]

log = logging.getLogger("wschat")

#: Connections to Redis a backplane built from a URL opens at most; more calls at
#: once wait for one (each within ``op_timeout``) rather than fail.
POOL_SIZE: Final = 64
_PREFIX_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_NODE_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_FAILURES: Final = (RedisError, OSError)
#: Seconds options: (lowest, highest) accepted value.
_RANGES: Final = {
    "op_timeout": (0.01, 60.0),
    "subscribe_timeout": (0.01, 300.0),
    "reconnect_min": (0.001, 60.0),
    "reconnect_max": (0.001, 3600.0),
    "ping_interval": (0.01, 300.0),
}
#: Distinct skipped presence entries remembered, so each is warned about once.
_WARNED_MAX: Final = 1024
#: A publish Redis has not answered this many op_timeouts after it answers again
#: (on the listener) is counted as not published and its connection dropped.
_GIVE_UP_FACTOR: Final = 5
_WAITING: Final = (
    "Redis answers again; waiting for it to answer a publish sent before it stopped"
)


def _require_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(
            "RedisBackplane runs on asyncio only (redis.asyncio); this app runs on "
            "another event loop (trio?). Use asyncio, or a backplane written for it."
        ) from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _seconds(name: str, value: object, default: float) -> float:
    """Check a seconds option: a real number, finite, within its range."""
    low, high = _RANGES[name]
    hint = f"; the default is {default:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{name} must be a number of seconds, not {type(value).__name__}{hint}"
        )
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigurationError(
            f"{name} must be between {low:g} and {high:g} seconds (got {value!r}){hint}"
        )
    return float(value)


class _EntryFailed(BackplaneUnavailable):
    """Redis answered, but refused one room's presence call (its data, not a hang)."""


def redis_client(
    url_or_client: str | aioredis.Redis, *, owner: str, **pool_options: Any
) -> tuple[aioredis.Redis, bool]:
    """The Redis client a wschat engine uses, and whether it owns (closes) it.

    From a URL: a blocking pool of at most :data:`POOL_SIZE` connections with no
    socket timeout (the engine bounds each call with its ``op_timeout``); past
    that size a call waits for a connection instead of failing with redis-py's
    ``MaxConnectionsError``, as a join storm made the default pool do.
    ``pool_options`` go to the pool (``retry=...``). A client of the app's is
    used as it is, once checked to carry bytes.

    Raises:
        ConfigurationError: The client decodes responses to ``str``.
    """
    if isinstance(url_or_client, str):
        pool = aioredis.BlockingConnectionPool.from_url(
            url_or_client,
            socket_timeout=None,
            max_connections=POOL_SIZE,
            timeout=None,
            **pool_options,
        )
        return aioredis.Redis.from_pool(pool), True
    kwargs = url_or_client.connection_pool.connection_kwargs
    if kwargs.get("decode_responses"):
        raise ConfigurationError(
            f"{owner} carries bytes: pass a client made with "
            "decode_responses=False (the default), or a URL"
        )
    return url_or_client, False


class RedisBackplane:
    """A :class:`~wschat.backplane.Backplane` on Redis pub/sub (asyncio only).

    Example::

        manager = ConnectionManager(backplane=RedisBackplane("redis://localhost"))
        app = FastAPI(lifespan=manager.lifespan)

    A Redis that stops answering (paused, overloaded, cut off) is noticed within
    ``op_timeout`` of the first call it does not answer, and within
    ``ping_interval + op_timeout`` when nothing is being sent.

    Args:
        url_or_client: A ``redis://`` URL, or a ``redis.asyncio.Redis`` you own (it
            is not closed here).
        prefix: Fixed prefix of every channel and key.
        op_timeout: Seconds any one Redis call (publish, presence, subscribe,
            unsubscribe, ping, connection setup) may take; the first that takes
            longer marks the backplane degraded and makes it reconnect.
        subscribe_timeout: Seconds a joiner may wait for Redis to confirm the
            subscription of its room.
        reconnect_min: First delay before reconnecting, in seconds.
        reconnect_max: Cap of the exponential backoff, in seconds; default 5, or
            ``reconnect_min`` if that is larger.
        ping_interval: Seconds between the listener's pings; an unanswered one is a
            hang.

    Raises:
        ConfigurationError: The prefix or a timing is invalid (the message says
            which, and the accepted range).
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        prefix: str = "wschat:",
        op_timeout: float = 1.0,
        subscribe_timeout: float = 5.0,
        reconnect_min: float = 0.05,
        reconnect_max: float | None = None,
        ping_interval: float = 1.0,
    ) -> None:
        if not isinstance(prefix, str) or _PREFIX_PATTERN.fullmatch(prefix) is None:
            raise ConfigurationError(
                "prefix must be 1-64 letters, digits or _ . : - (no glob characters)"
            )
        self.op_timeout = _seconds("op_timeout", op_timeout, 1.0)
        self.subscribe_timeout = _seconds("subscribe_timeout", subscribe_timeout, 5.0)
        self.reconnect_min = _seconds("reconnect_min", reconnect_min, 0.05)
        if reconnect_max is None:
            self.reconnect_max = max(5.0, self.reconnect_min)
        else:
            self.reconnect_max = _seconds("reconnect_max", reconnect_max, 5.0)
            if self.reconnect_max < self.reconnect_min:
                raise ConfigurationError(
                    f"reconnect_max ({reconnect_max!r}) must be at least "
                    f"reconnect_min ({reconnect_min!r})"
                )
        self.ping_interval = _seconds("ping_interval", ping_interval, 1.0)
        # No socket timeout of redis-py's own: op_timeout bounds every call, and a
        # publish sent to a Redis that stopped answering must wait for its answer
        # (a socket timeout would drop the connection, and a paused Redis would
        # then run the publish unseen).
        self._client, self._owns_client = redis_client(
            url_or_client, owner="RedisBackplane"
        )
        self.prefix = prefix
        self._raw_prefix = prefix.encode()
        self._join = self._client.register_script(_JOIN)
        self._leave = self._client.register_script(_LEAVE)
        self._members = self._client.register_script(_MEMBERS)
        self._refresh = self._client.register_script(_REFRESH)
        self._slot_acquire = self._client.register_script(_SLOT_ACQUIRE)
        self._slot_refresh = self._client.register_script(_SLOT_REFRESH)
        self._wanted: set[str] = set()
        self._confirmed: set[str] = set()
        self._waiters: dict[str, anyio.Event] = {}
        self._resync: set[str] = set()
        self._pubsub: Any = None
        self._pool_retry: Any = None
        self._lock = anyio.Lock()
        # Healthy = the listener heard Redis answer, and no publish is unanswered.
        self._listening = False
        self._detail = "not started"
        self._reconnects = 0
        self._failures = 0
        self._task_status: TaskStatus[None] | None = None
        self._listen_scope: anyio.CancelScope | None = None
        # Answers owed on the listener's connection (pongs and confirmations): each
        # command written adds to _owed; each answer read adds to _answers. A timer
        # per command checks at its deadline. _generation tells connections apart.
        self._generation = 0
        self._owed = 0
        self._answers = 0
        self._heard_at = 0.0
        # Publishes Redis has not answered in time (the publisher's, the announcer's).
        self._inflight: set[asyncio.Future[None]] = set()
        self._give_up_handle: asyncio.TimerHandle | None = None
        self._warned: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"<RedisBackplane prefix={self.prefix!r} healthy={self._healthy}>"

    @property
    def name(self) -> str:
        return "redis"

    @property
    def _healthy(self) -> bool:
        return self._listening and not self._inflight

    def health(self) -> BackplaneHealth:
        if self._healthy:
            detail = ""
        elif not self._listening:
            detail = self._detail
        else:
            detail = _WAITING
        return BackplaneHealth(
            name="redis",
            healthy=self._healthy,
            detail=detail,
            channels=len(self._wanted),
            reconnects=self._reconnects,
        )

    # -- listener ------------------------------------------------------------------

    async def run(self, receiver: Receiver, *, task_status: TaskStatus[None]) -> None:
        """Listen until cancelled; reconnect with backoff and jitter when Redis fails.

        Reports started once Redis first answers, or after the first failed
        attempt (the app then starts degraded and connects when Redis comes up).

        Raises:
            ConfigurationError: Not running on asyncio.
        """
        _require_asyncio()
        self._task_status = task_status
        self._failures = 0
        try:
            while True:
                pubsub: Any = self._client.pubsub()
                try:
                    # After any failure, wanted rooms may have missed messages.
                    await self._connect(pubsub, resync=self._failures > 0)
                    with anyio.CancelScope() as scope:
                        self._listen_scope = scope
                        await self._listen(pubsub, receiver)
                    # Cancelled by _hung(): another call found Redis not answering.
                except TimeoutError:
                    self._lost(
                        f"Redis did not answer within {self.op_timeout:g} s "
                        "(connecting, or taking a PING)"
                    )
                except _FAILURES as exc:
                    self._lost(f"redis unreachable ({type(exc).__name__})")
                except Exception as exc:
                    # Never let the listener die: that would silently split rooms.
                    log.exception("wschat redis listener failed; reconnecting")
                    self._lost(f"listener error ({type(exc).__name__})")
                finally:
                    self._listen_scope = None
                    self._pubsub = None
                    self._listening = False
                    self._confirmed.clear()
                    self._wake_waiters()
                    with anyio.move_on_after(self.op_timeout, shield=True):
                        if pubsub.connection is not None and self._pool_retry:
                            pubsub.connection.retry = self._pool_retry
                        await pubsub.aclose()
                self._started()
                self._failures += 1
                await anyio.sleep(self._backoff(self._failures))
        finally:
            self._listening = False
            self._detail = "stopped"
            self._confirmed.clear()
            self._task_status = None
            for task in list(self._inflight):
                task.cancel()
            if self._owns_client:
                with anyio.move_on_after(1.0, shield=True):
                    await self._client.aclose()

    def _started(self) -> None:
        status, self._task_status = self._task_status, None
        if status is not None:
            status.started()

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with jitter, so processes do not stampede."""
        exponent = min(failures - 1, 30)
        delay = min(self.reconnect_max, self.reconnect_min * 2.0**exponent)
        return delay / 2 + random.uniform(0, delay / 2)

    def _lost(self, detail: str) -> None:
        if self._listening or not self._failures:
            log.warning("wschat redis backplane degraded: %s; reconnecting", detail)
        self._listening = False
        self._detail = detail

    def _hung(self, detail: str) -> None:
        """A call got no answer in time: degraded now, and the listener reconnects."""
        if self._listening:
            log.warning("wschat redis backplane degraded: %s; reconnecting", detail)
            self._detail = detail
        self._listening = False
        scope = self._listen_scope
        if scope is not None:
            scope.cancel()

    def _wake_waiters(self) -> None:
        """Subscribers waiting for a confirmation learn at once that none comes."""
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.set()

    async def _connect(self, pubsub: Any, *, resync: bool) -> None:
        if resync:
            # Idle pooled connections to a restarted server are dead: drop them so
            # the first publish after it does not fail on one. (Best effort; a
            # publish still waiting for its answer keeps its connection.)
            with anyio.move_on_after(self.op_timeout):
                await self._client.connection_pool.disconnect(inuse_connections=False)
        with anyio.fail_after(self.op_timeout):
            async with self._lock:
                await pubsub.connect()
                self._generation += 1
                self._owed = self._answers = 0
                self._heard_at = asyncio.get_running_loop().time()
                # This loop owns reconnects; redis-py must not silently retry them.
                # (The pool's own retry policy is put back before the connection
                # returns to the pool, so commands keep retrying as configured.)
                self._pool_retry = pubsub.connection.retry
                pubsub.connection.retry = Retry(NoBackoff(), 0)
                wanted = sorted(self._wanted)
                if resync:
                    self._resync.update(wanted)
                if wanted:
                    self._expect(len(wanted), "SUBSCRIBE")
                    await pubsub.subscribe(*(self.prefix + c for c in wanted))
                # Healthy once Redis answers this (after every confirmation).
                self._expect(1, "PING")
                await pubsub.ping()
                self._pubsub = pubsub

    def _expect(self, answers: int, what: str) -> None:
        """A command is about to be written on the listener's connection."""
        self._owed += answers
        loop = asyncio.get_running_loop()
        loop.call_later(
            self.op_timeout, self._check, self._generation, self._owed, what
        )

    def _check(self, generation: int, owed: int, what: str) -> None:
        """A command's deadline: answered, still draining, or a hang."""
        if generation != self._generation or self._answers >= owed:
            return
        # A loop callback, not a task: asyncio's clock (anyio's needs a task).
        loop = asyncio.get_running_loop()
        if loop.time() - self._heard_at < self.op_timeout:
            # Messages still arrive ahead of the answer: Redis runs. Look again.
            loop.call_later(self.op_timeout, self._check, generation, owed, what)
            return
        self._hung(f"Redis did not answer a {what} within {self.op_timeout:g} s")

    async def _listen(self, pubsub: Any, receiver: Receiver) -> None:
        raw = self._raw_prefix
        cut = len(raw)
        clock = asyncio.get_running_loop().time
        next_ping = clock() + self.ping_interval  # _connect sent the first PING
        while True:
            wait = next_ping - clock()
            if wait <= 0:
                with anyio.fail_after(self.op_timeout):
                    self._expect(1, "PING")
                    await pubsub.ping()
                next_ping = clock() + self.ping_interval
                continue
            message = await pubsub.get_message(timeout=wait)
            if message is None:
                continue
            self._heard_at = clock()
            kind = message["type"]
            if kind == "message":
                channel = message["channel"]
                if isinstance(channel, str):
                    channel = channel.encode()
                if channel.startswith(raw):
                    name = channel[cut:].decode()
                    if name not in self._wanted:
                        # Unsubscribed, and Redis has not processed it yet: the
                        # caller was told nothing more arrives.
                        continue
                    data = message["data"]
                    if isinstance(data, str):
                        data = data.encode()
                    try:
                        receiver.deliver(name, data)
                    except Exception:
                        log.exception("wschat could not deliver a backplane message")
            elif kind == "pong":
                self._answers += 1
                if not self._listening:
                    self._answered()
            elif kind == "unsubscribe":
                self._answers += 1
            elif kind == "subscribe":
                self._answers += 1
                name = _text(message["channel"])[len(self.prefix) :]
                if name in self._wanted:
                    self._confirmed.add(name)
                waiter = self._waiters.pop(name, None)
                if waiter is not None:
                    waiter.set()
                if name in self._resync:
                    self._resync.discard(name)
                    receiver.resync([name])

    def _answered(self) -> None:
        """The listener heard Redis answer its first PING on a new connection."""
        self._listening = True
        self._detail = ""
        if self._failures:
            self._reconnects += 1
            log.warning("wschat redis backplane reconnected")
        self._failures = 0
        if self._inflight and self._give_up_handle is None:
            # Redis answers again, so it has what it received before it stopped:
            # the unanswered publishes get their answers any moment (or never, if
            # their connection was cut).
            loop = asyncio.get_running_loop()
            delay = _GIVE_UP_FACTOR * self.op_timeout
            self._give_up_handle = loop.call_later(delay, self._give_up)
        self._started()

    # -- publishing ----------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> None:
        """Publish to ``<prefix><channel>``.

        Raises:
            PublishInDoubt: Redis did not answer within ``op_timeout``; it may still
                publish it (a paused Redis does when it runs again).
            BackplaneUnavailable: It was not published.
        """
        await self.publish_many(((channel, data),))

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish several messages in one round trip (a pipeline), in order.

        While Redis is not answering, or an earlier publish is still unanswered,
        this fails at once without sending anything, so nothing can overtake that
        earlier publish.

        Raises:
            PublishInDoubt: Redis did not answer within ``op_timeout``.
            BackplaneUnavailable: Not published (Redis unreachable, or it refused).
        """
        if not self._listening:
            raise BackplaneUnavailable(self._detail)
        if self._inflight:
            raise BackplaneUnavailable(_WAITING)
        task = asyncio.ensure_future(self._send(items))
        try:
            done, _ = await asyncio.wait((task,), timeout=self.op_timeout)
        except BaseException:
            task.cancel()  # our caller is cancelled: the app is stopping
            raise
        if done:
            error = task.exception()
            if error is None:
                return
            detail = f"publish failed ({type(error).__name__})"
            raise BackplaneUnavailable(detail) from error
        self._inflight.add(task)
        task.add_done_callback(self._settled)
        detail = f"Redis did not answer a publish within {self.op_timeout:g} s"
        self._hung(detail)
        raise PublishInDoubt(detail, partial(self._outcome, task))

    async def _send(self, items: Sequence[tuple[str, bytes]]) -> None:
        if len(items) == 1:
            channel, data = items[0]
            await self._client.publish(self.prefix + channel, data)
            return
        pipe = self._client.pipeline(transaction=False)
        for channel, data in items:
            pipe.publish(self.prefix + channel, data)
        await pipe.execute()

    @staticmethod
    async def _outcome(task: asyncio.Future[None]) -> bool:
        await asyncio.wait((task,))
        return not task.cancelled() and task.exception() is None

    def _settled(self, task: asyncio.Future[None]) -> None:
        """The unanswered publish got its answer, failed, or was given up."""
        self._inflight.discard(task)
        if not self._inflight and self._give_up_handle is not None:
            self._give_up_handle.cancel()
            self._give_up_handle = None
        if not task.cancelled() and task.exception() is not None:
            log.debug("wschat redis publish failed: %r", task.exception())

    def _give_up(self) -> None:
        self._give_up_handle = None
        pending = [task for task in self._inflight if not task.done()]
        if pending:
            log.warning(
                "wschat redis backplane: Redis answers again but not %d publish(es) "
                "sent before it stopped; counting them as not published",
                len(pending),
            )
        for task in pending:
            task.cancel()

    # -- subscriptions -------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Subscribe, and wait for Redis to confirm it.

        Raises:
            BackplaneUnavailable: Not confirmed in time; it will be after a reconnect.
        """
        self._wanted.add(channel)
        if channel in self._confirmed:
            return
        pubsub = self._pubsub
        if pubsub is None:
            # Fail fast; the listener subscribes it when Redis is back.
            raise BackplaneUnavailable(self._detail)
        waiter = self._waiters.get(channel)
        if waiter is None:
            waiter = self._waiters[channel] = anyio.Event()
            try:
                with anyio.fail_after(self.op_timeout):
                    async with self._lock:
                        if self._pubsub is not pubsub:
                            raise BackplaneUnavailable(self._detail)
                        self._expect(1, "SUBSCRIBE")
                        await pubsub.subscribe(self.prefix + channel)
            except TimeoutError:
                detail = f"Redis did not take a SUBSCRIBE within {self.op_timeout:g} s"
                self._hung(detail)
                raise BackplaneUnavailable(detail) from None
            except _FAILURES as exc:
                raise BackplaneUnavailable(
                    f"subscribe failed ({type(exc).__name__})"
                ) from exc
        try:
            # A hang is caught at op_timeout (the listener's connection is then
            # dropped, which wakes this); this only caps a slow confirmation.
            with anyio.fail_after(self.subscribe_timeout):
                await waiter.wait()
        except TimeoutError:
            raise BackplaneUnavailable("subscription not confirmed in time") from None
        if channel not in self._confirmed:
            # Woken by a lost connection; subscribed again after the reconnect.
            raise BackplaneUnavailable(self._detail)

    async def unsubscribe(self, channel: str) -> None:
        """Unsubscribe (best effort: a lost connection drops it anyway)."""
        self._wanted.discard(channel)
        self._confirmed.discard(channel)
        self._resync.discard(channel)
        self._waiters.pop(channel, None)
        pubsub = self._pubsub
        if pubsub is None or not self._listening:
            return
        try:
            with anyio.fail_after(self.op_timeout):
                async with self._lock:
                    if self._pubsub is not pubsub:
                        return
                    self._expect(1, "UNSUBSCRIBE")
                    await pubsub.unsubscribe(self.prefix + channel)
        except TimeoutError:
            self._hung(f"Redis did not take UNSUBSCRIBE within {self.op_timeout:g} s")
        except _FAILURES as exc:
            log.debug("wschat redis unsubscribe failed: %r", exc)

    # -- presence ------------------------------------------------------------------

    async def _script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if not self._listening:
            raise BackplaneUnavailable(self._detail)
        try:
            with anyio.fail_after(self.op_timeout):
                try:
                    return await script(keys=keys, args=args)
                except RedisConnectionError:
                    # Presence scripts are idempotent: one retry on a fresh
                    # connection (unlike PUBLISH, which could then duplicate).
                    return await script(keys=keys, args=args)
        except TimeoutError:
            detail = f"Redis did not answer presence within {self.op_timeout:g} s"
            self._hung(detail)
            raise BackplaneUnavailable(detail) from None
        except ResponseError as exc:
            raise _EntryFailed(f"Redis refused a presence call: {exc}") from exc
        except _FAILURES as exc:
            raise BackplaneUnavailable(
                f"presence call failed ({type(exc).__name__})"
            ) from exc

    def _key(self, room: str) -> str:
        return f"{self.prefix}p:{room}"

    @staticmethod
    def _check_node(node: str) -> None:
        if _NODE_PATTERN.fullmatch(node) is None:
            raise ConfigurationError(
                "node ids must be 1-64 letters, digits or _ . - for RedisBackplane"
            )

    def _skipped(self, room: str, what: str, why: str) -> None:
        """One WARNING per skipped presence entry (room and user), not per renewal."""
        key = (room, what)
        if key in self._warned:
            return
        if len(self._warned) >= _WARNED_MAX:
            self._warned.clear()
        self._warned.add(key)
        log.warning(
            "wschat redis presence of room %r: skipped %s (%s); the room's other "
            "members are not affected",
            room,
            what,
            why,
        )

    def _user_arg(self, room: str, user: str) -> bytes | None:
        """The user id as Redis stores it, or None (warned) if it cannot be."""
        try:
            return user.encode()
        except UnicodeEncodeError:
            self._skipped(
                room,
                f"user {ascii(user)[:80]}",
                "not valid UTF-8; kept out of the shared presence",
            )
            return None

    def _user_of(self, room: str, raw: bytes | str) -> str | None:
        """A user id read from Redis, or None (warned) if it is not UTF-8."""
        try:
            return _text(raw)
        except UnicodeDecodeError:
            self._skipped(room, f"entry {raw[:80]!r}", "not valid UTF-8; ignored")
            return None

    async def presence_join(self, room: str, user: str, node: str, ttl: float) -> bool:
        self._check_node(node)
        arg = self._user_arg(room, user)
        if arg is None:
            return True
        ttl_ms = max(1, int(ttl * 1000))
        result = await self._script(self._join, [self._key(room)], [arg, node, ttl_ms])
        return bool(result)

    async def presence_leave(self, room: str, user: str, node: str) -> bool:
        self._check_node(node)
        arg = self._user_arg(room, user)
        if arg is None:
            return True
        result = await self._script(self._leave, [self._key(room)], [arg, node])
        return bool(result)

    async def presence_members(self, room: str) -> list[str]:
        users = await self._script(self._members, [self._key(room)], [])
        named = (self._user_of(room, u) for u in users)
        return sorted(u for u in named if u is not None)

    async def presence_refresh(
        self, node: str, rooms: Mapping[str, Collection[str]], ttl: float
    ) -> dict[str, list[str]]:
        """Renew ``node``'s leases room by room.

        One room's bad data (a user id that is not UTF-8, a key Redis refuses to
        run the script on) skips that entry or that room with a warning; the other
        entries and rooms are renewed.
        """
        self._check_node(node)
        ttl_ms = max(1, int(ttl * 1000))
        gone: dict[str, list[str]] = {}
        for room, users in rooms.items():
            args: list[Any] = [node, ttl_ms]
            for user in users:
                arg = self._user_arg(room, user)
                if arg is not None:
                    args.append(arg)
            try:
                lost = await self._script(self._refresh, [self._key(room)], args)
            except _EntryFailed as exc:
                self._skipped(room, "the whole room", exc.detail)
                continue
            named = [u for u in (self._user_of(room, x) for x in lost) if u is not None]
            if named:
                gone[room] = named
        return gone

    # -- the per-user connection cap (UserSlots) -----------------------------------

    def _slots_key(self, user: str) -> str | None:
        try:
            user.encode()
        except UnicodeEncodeError:
            return None  # never stored: such a user is capped per process only
        return f"{self.prefix}s:{user}"

    async def user_slot_acquire(
        self, user: str, slot: str, cap: int, ttl: float
    ) -> bool:
        key = self._slots_key(user)
        if key is None:
            return True
        ttl_ms = max(1, int(ttl * 1000))
        result = await self._script(self._slot_acquire, [key], [slot, cap, ttl_ms])
        return bool(result)

    async def user_slots_release(self, user: str, slots: Collection[str]) -> None:
        key = self._slots_key(user)
        if key is None or not slots:
            return

        async def zrem(keys: list[str], args: list[Any]) -> Any:
            return await self._client.zrem(keys[0], *args)

        await self._script(zrem, [key], list(slots))

    async def user_slots_refresh(
        self, slots: Mapping[str, Collection[str]], ttl: float
    ) -> None:
        """Renew every slot in one pipelined round trip per 500 users."""
        ttl_ms = max(1, int(ttl * 1000))
        entries = [
            (key, list(held))
            for key, held in ((self._slots_key(u), h) for u, h in slots.items())
            if key is not None and held
        ]
        for start in range(0, len(entries), 500):
            chunk = entries[start : start + 500]

            async def renew(
                keys: list[str], args: list[Any], chunk: list[Any] = chunk
            ) -> Any:
                pipe = self._client.pipeline(transaction=False)
                for key, held in chunk:
                    await self._slot_refresh(
                        keys=[key], args=[ttl_ms, *held], client=pipe
                    )
                return await pipe.execute()

            await self._script(renew, [], [])
