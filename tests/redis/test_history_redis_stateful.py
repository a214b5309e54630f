"""The history state machine of test_history_stateful.py, on RedisHistoryStore.

The same rules and model as for the memory store (appends, reads after and before,
positions, retain, time moving by hand), with what differs for Redis:

- no memory bound (Redis's own ``maxmemory`` bounds it), so no evictions, and no
  room or entry counts in ``health()``;
- rooms are forgotten by Redis key expiry in real time, never within one short
  example, so the model keeps them (the conformance suite and
  tests/redis/test_history_redis.py check forgetting);
- time steps are multiples of 0.25 s, so the model's float sums and the store's
  milliseconds agree exactly at the ttl boundary.

Each example runs on its own key prefix and its own event loop, and deletes its keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis import asyncio as aioredis

from tests.core.test_history_stateful import TTL, HistoryMachine, Model
from tests.support.redis_server import need_redis, unique_prefix
from wschat.history import HistoryHealth, Page, Position, Stored
from wschat.history.redis import RedisHistoryStore
from wschat.history.template import FrameTemplate

pytestmark = pytest.mark.redis

T = TypeVar("T")


class KeepsRooms(Model):
    """The model, without forgetting rooms (Redis expires them in real time)."""

    def expire(self, now: float) -> None:
        self.kept = [k for k in self.kept if k.at + TTL > now]


class SyncStore:
    """A RedisHistoryStore seen through the memory store's ``_nowait`` methods."""

    def __init__(
        self, url: str, prefix: str, max_messages: int, machine: RedisHistoryMachine
    ) -> None:
        self.runner = asyncio.Runner()
        self.prefix = prefix
        self.url = url
        self.store = RedisHistoryStore(
            url,
            prefix=prefix,
            max_messages=max_messages + machine.broken_extra,
            ttl=TTL + machine.broken_ttl,
            clock=lambda: machine.now,
        )

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(call)

    def append_nowait(self, chat_id: str, template: FrameTemplate) -> Stored:
        return self.run(self.store.append(chat_id, template))

    def read_after_nowait(self, chat_id: str, after: int, limit: int) -> Page:
        return self.run(self.store.read_after(chat_id, after, limit))

    def read_before_nowait(self, chat_id: str, before: int | None, limit: int) -> Page:
        return self.run(self.store.read_before(chat_id, before, limit))

    def position_nowait(self, chat_id: str) -> Position:
        return self.run(self.store.position(chat_id))

    def retain_nowait(self, chat_ids: Iterable[str]) -> None:
        self.run(self.store.retain(list(chat_ids)))

    def sweep(self) -> None:
        """Nothing to do: every call trims what has expired first."""

    def health(self) -> HistoryHealth:
        return self.store.health()

    def close(self) -> None:
        async def clean() -> None:
            await self.store.aclose()
            client = aioredis.Redis.from_url(self.url)
            keys = [key async for key in client.scan_iter(match=self.prefix + "*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

        try:
            self.run(clean())
        finally:
            self.runner.close()


class RedisHistoryMachine(HistoryMachine):
    # Breakage for the test that the machine can fail: messages kept per room
    # beyond max_messages, and seconds messages are kept beyond the ttl.
    broken_extra = 0
    broken_ttl = 0.0

    @initialize(max_messages=st.integers(min_value=1, max_value=6))
    def start(self, max_messages: int) -> None:
        self.now = 100.0
        self.sync = SyncStore(need_redis(), unique_prefix(), max_messages, self)
        self.store = self.sync  # type: ignore[assignment]
        self.model = KeepsRooms(max_messages, 2**62)
        self.epochs_seen: set[str] = set()
        self.n = 0

    def teardown(self) -> None:
        sync = getattr(self, "sync", None)
        if sync is not None:
            sync.close()

    @rule(seconds=st.sampled_from([0.25, 2.5, TTL - 0.25, TTL, 2 * TTL]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: bool(self.model.kept))
    @rule()
    def advance_to_the_next_expiry(self) -> None:
        # Exactly to the moment the oldest message goes (rooms are kept here).
        self.now = max(self.now, min(k.at for k in self.model.kept) + TTL)

    @invariant()
    def sizes_match(self) -> None:
        health = self.store.health()
        assert health.healthy, health.detail
        assert (health.rooms, health.entries, health.memory_bytes) == (None, None, 0)


TestRedisHistoryMachine = RedisHistoryMachine.TestCase
TestRedisHistoryMachine.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)


@pytest.mark.parametrize(
    "broken",
    [{"broken_extra": 1}, {"broken_ttl": 0.001}],
    ids=["keeps_one_more", "expires_one_ms_late"],
)
def test_the_machine_catches_a_broken_redis_store(broken: dict[str, Any]) -> None:
    machine = type("Broken", (RedisHistoryMachine,), broken)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=200,
                stateful_step_count=40,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            ),
        )
