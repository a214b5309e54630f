"""A history store for tests: a ``MemoryHistoryStore`` behind awaits, as a networked
store answers. The conformance suite's reads and ``retain`` delegate to the memory
store; a subclass decides what ``append`` (or ``append_and_publish``) does."""

from __future__ import annotations

from collections.abc import Iterable

import anyio

from wschat.history import HistoryHealth, MemoryHistoryStore, Page, Position


class AwaitedMemoryStore:
    """The reads of an awaited store, each after :meth:`_wait` (a checkpoint)."""

    def __init__(self, name: str) -> None:
        self.inner = MemoryHistoryStore()
        self.name = name

    async def _wait(self) -> None:
        await anyio.lowlevel.checkpoint()

    def health(self) -> HistoryHealth:
        return HistoryHealth(self.name, healthy=True)

    async def position(self, chat_id: str) -> Position:
        await self._wait()
        return self.inner.position_nowait(chat_id)

    async def read_after(self, chat_id: str, after: int, limit: int) -> Page:
        await self._wait()
        return self.inner.read_after_nowait(chat_id, after, limit)

    async def read_before(self, chat_id: str, before: int | None, limit: int) -> Page:
        await self._wait()
        return self.inner.read_before_nowait(chat_id, before, limit)

    async def retain(self, chat_ids: Iterable[str]) -> None:
        self.inner.retain_nowait(chat_ids)
