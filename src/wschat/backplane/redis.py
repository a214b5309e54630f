"""The Redis backplane: rooms shared by processes and machines over Redis pub/sub.

Imports: redis-py (``redis.asyncio``; ``pip install wschat[redis]``), anyio, and
asyncio only to refuse to start on another event loop. The only module of wschat
that imports ``redis``.

Each room is one channel, ``<prefix>r:<chat_id>``, subscribed while this process has
members in it; chat ids match a strict pattern and are only ever used under that
fixed prefix, with ``SUBSCRIBE`` and ``PUBLISH``, never as glob patterns. Presence is
one hash per room, ``<prefix>p:<chat_id>``, mapping each user to the processes that
hold them and when each lease expires (Redis server time, so machines' clocks do not
matter); Lua scripts keep every change atomic.

One listener connection reads every channel. When it breaks, the backplane reports
itself unhealthy at once (publishes fail fast, so senders learn it), reconnects with
capped exponential backoff and jitter, subscribes every wanted channel again, and
asks the manager to ``resync`` each one once Redis confirms it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus

from ..errors import ConfigurationError
from ._lua import JOIN as _JOIN
from ._lua import LEAVE as _LEAVE
from ._lua import MEMBERS as _MEMBERS
from ._lua import REFRESH as _REFRESH
from .base import BackplaneHealth, BackplaneUnavailable, Receiver

try:
    from redis import asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wschat.backplane.redis needs redis-py: pip install 'wschat[redis]'"
    ) from exc

__all__ = ["RedisBackplane"]

log = logging.getLogger("wschat")

_PREFIX_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_NODE_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_FAILURES: Final = (RedisError, OSError)


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


class RedisBackplane:
    """A :class:`~wschat.backplane.Backplane` on Redis pub/sub (asyncio only).

    Example::

        manager = ConnectionManager(backplane=RedisBackplane("redis://localhost"))
        app = FastAPI(lifespan=manager.lifespan)

    Args:
        url_or_client: A ``redis://`` URL, or a ``redis.asyncio.Redis`` you own (it
            is not closed here).
        prefix: Fixed prefix of every channel and key.
        op_timeout: Seconds a publish or presence call may take before it counts as
            failed.
        subscribe_timeout: Seconds to wait for Redis to confirm a subscription.
        reconnect_min: First delay before reconnecting, in seconds.
        reconnect_max: Cap of the exponential backoff, in seconds.
        ping_interval: Seconds of silence after which the listener pings Redis; no
            answer within three intervals counts as a lost connection.

    Raises:
        ConfigurationError: The prefix or a timing is invalid.
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        prefix: str = "wschat:",
        op_timeout: float = 1.0,
        subscribe_timeout: float = 5.0,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
        ping_interval: float = 5.0,
    ) -> None:
        if _PREFIX_PATTERN.fullmatch(prefix) is None:
            raise ConfigurationError(
                "prefix must be 1-64 letters, digits or _ . : - (no glob characters)"
            )
        if min(op_timeout, subscribe_timeout, reconnect_min, ping_interval) <= 0:
            raise ConfigurationError("timeouts and delays must be positive")
        if isinstance(url_or_client, str):
            self._client = aioredis.Redis.from_url(url_or_client)
            self._owns_client = True
        else:
            kwargs = url_or_client.connection_pool.connection_kwargs
            if kwargs.get("decode_responses"):
                raise ConfigurationError(
                    "RedisBackplane carries bytes: pass a client made with "
                    "decode_responses=False (the default), or a URL"
                )
            self._client = url_or_client
            self._owns_client = False
        self.prefix = prefix
        self._raw_prefix = prefix.encode()
        self.op_timeout = op_timeout
        self.subscribe_timeout = subscribe_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = max(reconnect_max, reconnect_min)
        self.ping_interval = ping_interval
        self._join = self._client.register_script(_JOIN)
        self._leave = self._client.register_script(_LEAVE)
        self._members = self._client.register_script(_MEMBERS)
        self._refresh = self._client.register_script(_REFRESH)
        self._wanted: set[str] = set()
        self._confirmed: set[str] = set()
        self._waiters: dict[str, anyio.Event] = {}
        self._resync: set[str] = set()
        self._pubsub: Any = None
        self._pool_retry: Any = None
        self._lock = anyio.Lock()
        self._healthy = False
        self._detail = "not started"
        self._reconnects = 0

    def __repr__(self) -> str:
        return f"<RedisBackplane prefix={self.prefix!r} healthy={self._healthy}>"

    @property
    def name(self) -> str:
        return "redis"

    def health(self) -> BackplaneHealth:
        return BackplaneHealth(
            name="redis",
            healthy=self._healthy,
            detail="" if self._healthy else self._detail,
            channels=len(self._wanted),
            reconnects=self._reconnects,
        )

    # -- listener ------------------------------------------------------------------

    async def run(self, receiver: Receiver, *, task_status: TaskStatus[None]) -> None:
        """Listen until cancelled; reconnect with backoff and jitter when Redis fails.

        Raises:
            ConfigurationError: Not running on asyncio.
        """
        _require_asyncio()
        failures = 0
        started = False
        try:
            while True:
                pubsub: Any = self._client.pubsub()
                try:
                    # After any failure, wanted rooms may have missed messages.
                    await self._connect(pubsub, resync=failures > 0)
                    if failures:
                        self._reconnects += 1
                        log.warning("wschat redis backplane reconnected")
                    failures = 0
                    if not started:
                        started = True
                        task_status.started()
                    await self._listen(pubsub, receiver)
                except _FAILURES as exc:
                    self._lost(f"redis unreachable ({type(exc).__name__})", failures)
                except Exception as exc:
                    # Never let the listener die: that would silently split rooms.
                    log.exception("wschat redis listener failed; reconnecting")
                    self._lost(f"listener error ({type(exc).__name__})", failures)
                finally:
                    self._pubsub = None
                    with anyio.move_on_after(1.0, shield=True):
                        if pubsub.connection is not None and self._pool_retry:
                            pubsub.connection.retry = self._pool_retry
                        await pubsub.aclose()
                if not started:
                    started = True
                    task_status.started()
                failures += 1
                await anyio.sleep(self._backoff(failures))
        finally:
            self._healthy = False
            self._detail = "stopped"
            self._confirmed.clear()
            if self._owns_client:
                with anyio.move_on_after(1.0, shield=True):
                    await self._client.aclose()

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with jitter, so processes do not stampede."""
        exponent = min(failures - 1, 30)
        delay = min(self.reconnect_max, self.reconnect_min * 2.0**exponent)
        return delay / 2 + random.uniform(0, delay / 2)

    def _lost(self, detail: str, failures: int) -> None:
        if self._healthy or not failures:
            log.warning("wschat redis backplane degraded: %s; reconnecting", detail)
        self._healthy = False
        self._detail = detail
        self._confirmed.clear()

    async def _connect(self, pubsub: Any, *, resync: bool) -> None:
        async with self._lock:
            with anyio.fail_after(self.subscribe_timeout):
                if resync:
                    # Pooled connections to the lost server are dead: drop them so
                    # the first publish after a restart does not fail on one.
                    await self._client.connection_pool.disconnect()
                await pubsub.connect()
            # This loop owns reconnects; redis-py must not silently retry them.
            # (The pool's own retry policy is put back before the connection returns
            # to the pool, so commands keep retrying as configured.)
            self._pool_retry = pubsub.connection.retry
            pubsub.connection.retry = Retry(NoBackoff(), 0)
            wanted = sorted(self._wanted)
            if resync:
                self._resync.update(wanted)
            if wanted:
                await pubsub.subscribe(*(self.prefix + c for c in wanted))
            else:
                await pubsub.ping()
            self._pubsub = pubsub
            self._healthy = True
            self._detail = ""

    async def _listen(self, pubsub: Any, receiver: Receiver) -> None:
        raw = self._raw_prefix
        cut = len(raw)
        silent = 0
        while True:
            message = await pubsub.get_message(timeout=self.ping_interval)
            if message is None:
                silent += 1
                if silent >= 3:
                    raise ConnectionError("no answer to PING from Redis")
                await pubsub.ping()
                continue
            silent = 0
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
            elif kind == "subscribe":
                name = _text(message["channel"])[len(self.prefix) :]
                if name in self._wanted:
                    self._confirmed.add(name)
                waiter = self._waiters.pop(name, None)
                if waiter is not None:
                    waiter.set()
                if name in self._resync:
                    self._resync.discard(name)
                    receiver.resync([name])

    # -- commands ------------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> None:
        """Publish to ``<prefix><channel>``.

        Raises:
            BackplaneUnavailable: Redis is unreachable or too slow.
        """
        if not self._healthy:
            raise BackplaneUnavailable(self._detail)
        try:
            with anyio.fail_after(self.op_timeout):
                await self._client.publish(self.prefix + channel, data)
        except (*_FAILURES, TimeoutError) as exc:
            raise BackplaneUnavailable(
                f"publish failed ({type(exc).__name__})"
            ) from exc

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish several messages in one round trip (a pipeline), in order.

        Raises:
            BackplaneUnavailable: Redis is unreachable or too slow; some of the
                messages may have been published.
        """
        if not self._healthy:
            raise BackplaneUnavailable(self._detail)
        try:
            with anyio.fail_after(self.op_timeout):
                pipe = self._client.pipeline(transaction=False)
                for channel, data in items:
                    pipe.publish(self.prefix + channel, data)
                await pipe.execute()
        except (*_FAILURES, TimeoutError) as exc:
            detail = f"publish failed ({type(exc).__name__})"
            raise BackplaneUnavailable(detail) from exc

    async def subscribe(self, channel: str) -> None:
        """Subscribe, and wait for Redis to confirm it.

        Raises:
            BackplaneUnavailable: Not confirmed in time; it will be after a reconnect.
        """
        self._wanted.add(channel)
        if channel in self._confirmed:
            return
        pubsub = self._pubsub
        if pubsub is None or not self._healthy:
            # Fail fast; the listener subscribes it when Redis is back.
            raise BackplaneUnavailable(self._detail)
        waiter = self._waiters.get(channel)
        if waiter is None:
            waiter = self._waiters[channel] = anyio.Event()
            try:
                async with self._lock:
                    await pubsub.subscribe(self.prefix + channel)
            except _FAILURES as exc:
                raise BackplaneUnavailable(
                    f"subscribe failed ({type(exc).__name__})"
                ) from exc
        try:
            with anyio.fail_after(self.subscribe_timeout):
                await waiter.wait()
        except TimeoutError:
            raise BackplaneUnavailable("subscription not confirmed in time") from None

    async def unsubscribe(self, channel: str) -> None:
        """Unsubscribe (best effort: a lost connection drops it anyway)."""
        self._wanted.discard(channel)
        self._confirmed.discard(channel)
        self._resync.discard(channel)
        self._waiters.pop(channel, None)
        pubsub = self._pubsub
        if pubsub is None or not self._healthy:
            return
        try:
            async with self._lock:
                await pubsub.unsubscribe(self.prefix + channel)
        except _FAILURES as exc:
            log.debug("wschat redis unsubscribe failed: %r", exc)

    async def _script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if not self._healthy:
            raise BackplaneUnavailable(self._detail)
        try:
            with anyio.fail_after(self.op_timeout):
                try:
                    return await script(keys=keys, args=args)
                except RedisConnectionError:
                    # Presence scripts are idempotent: one retry on a fresh
                    # connection (unlike PUBLISH, which could then duplicate).
                    return await script(keys=keys, args=args)
        except (*_FAILURES, TimeoutError) as exc:
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

    async def presence_join(self, room: str, user: str, node: str, ttl: float) -> bool:
        self._check_node(node)
        ttl_ms = max(1, int(ttl * 1000))
        result = await self._script(self._join, [self._key(room)], [user, node, ttl_ms])
        return bool(result)

    async def presence_leave(self, room: str, user: str, node: str) -> bool:
        self._check_node(node)
        result = await self._script(self._leave, [self._key(room)], [user, node])
        return bool(result)

    async def presence_members(self, room: str) -> list[str]:
        users = await self._script(self._members, [self._key(room)], [])
        return sorted(_text(u) for u in users)

    async def presence_refresh(
        self, node: str, rooms: Mapping[str, Collection[str]], ttl: float
    ) -> dict[str, list[str]]:
        self._check_node(node)
        ttl_ms = max(1, int(ttl * 1000))
        gone: dict[str, list[str]] = {}
        for room, users in rooms.items():
            args: list[Any] = [node, ttl_ms, *users]
            lost = await self._script(self._refresh, [self._key(room)], args)
            if lost:
                gone[room] = [_text(u) for u in lost]
        return gone
