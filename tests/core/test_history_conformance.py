"""The history conformance suite passes the memory store and catches broken stores.

Each broken store below breaks one promise; the suite must fail it with a message
naming that promise. A suite that passes them all would be a suite that cannot fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from wschat.history import FrameTemplate, MemoryHistoryStore, Page, Stored
from wschat.testing import check_history_store

pytestmark = pytest.mark.anyio


class RacyOffsets(MemoryHistoryStore):
    """Reads the counter, awaits, then writes it: concurrent appends collide."""

    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        latest = (await self.position(chat_id)).offset
        await anyio.lowlevel.checkpoint()
        stored = self.append_nowait(chat_id, template)
        if stored.offset != latest + 1:  # pretend the counter was not bumped
            return Stored(latest + 1, stored.epoch, template.render(latest + 1))
        return stored


class DropsTheTail(MemoryHistoryStore):
    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        return self.append_nowait(chat_id, FrameTemplate(template.head, ""))


class OffByOneAfter(MemoryHistoryStore):
    async def read_after(self, chat_id: str, after: int, limit: int) -> Page:
        return self.read_after_nowait(chat_id, max(after - 1, 0), limit)


class IgnoresLimit(MemoryHistoryStore):
    async def read_after(self, chat_id: str, after: int, limit: int) -> Page:
        return self.read_after_nowait(chat_id, after, 10_000)


class NewestFirst(MemoryHistoryStore):
    async def read_before(self, chat_id: str, before: int | None, limit: int) -> Page:
        page = self.read_before_nowait(chat_id, before, limit)
        return Page(page.epoch, page.latest, page.first, page.messages[::-1])


class OldestPageBefore(MemoryHistoryStore):
    """Pages from the oldest kept message instead of the newest below ``before``."""

    async def read_before(self, chat_id: str, before: int | None, limit: int) -> Page:
        page = self.read_before_nowait(chat_id, before, 10_000)
        return Page(page.epoch, page.latest, page.first, page.messages[:limit])


class LazyEpoch(MemoryHistoryStore):
    """Reports a provisional epoch for a room without messages."""

    def position_nowait(self, chat_id: str) -> Any:
        position = super().position_nowait(chat_id)
        return (
            position._replace(epoch="provisional") if not position.offset else position
        )

    def read_after_nowait(self, chat_id: str, after: int, limit: int) -> Page:
        page = super().read_after_nowait(chat_id, after, limit)
        if page.latest:
            return page
        return Page("provisional", page.latest, page.first, page.messages)

    def read_before_nowait(self, chat_id: str, before: int | None, limit: int) -> Page:
        page = super().read_before_nowait(chat_id, before, limit)
        if page.latest:
            return page
        return Page("provisional", page.latest, page.first, page.messages)


class NoValidation(MemoryHistoryStore):
    async def read_after(self, chat_id: str, after: int, limit: int) -> Page:
        return self.read_after_nowait(chat_id, max(after, 0), max(limit, 1))


class SharedRooms(MemoryHistoryStore):
    """Maps rooms to keys carelessly: ``x:1`` and ``x1`` are one room."""

    def _key(self, chat_id: str) -> str:
        return chat_id.replace(":", "")

    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        return self.append_nowait(self._key(chat_id), template)

    async def read_after(self, chat_id: str, after: int, limit: int) -> Page:
        return self.read_after_nowait(self._key(chat_id), after, limit)


class EpochPerTrim(MemoryHistoryStore):
    """Reports another epoch once messages were trimmed."""

    def read_after_nowait(self, chat_id: str, after: int, limit: int) -> Page:
        page = super().read_after_nowait(chat_id, after, limit)
        if page.first == 1:
            return page
        return Page(page.epoch + "-trimmed", page.latest, page.first, page.messages)


class KeepsForever(MemoryHistoryStore):
    def __init__(self, **kwargs: Any) -> None:
        kwargs["ttl"] = 1e9
        super().__init__(**kwargs)


class ForgetsButKeepsTheEpoch(MemoryHistoryStore):
    """Restarts offsets of an idle room without a new epoch: the silent loss."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epochs: dict[str, str] = {}

    def _fixed(self, chat_id: str, epoch: str) -> str:
        return self.epochs.setdefault(chat_id, epoch)

    def append_nowait(self, chat_id: str, template: FrameTemplate) -> Stored:
        stored = super().append_nowait(chat_id, template)
        return stored._replace(epoch=self._fixed(chat_id, stored.epoch))

    async def position(self, chat_id: str) -> Any:
        position = self.position_nowait(chat_id)
        return position._replace(epoch=self._fixed(chat_id, position.epoch))


class IgnoresRetain(MemoryHistoryStore):
    async def retain(self, chat_ids: Iterable[str]) -> None:
        return None


class NoCountTrim(MemoryHistoryStore):
    def __init__(self, **kwargs: Any) -> None:
        kwargs["max_messages"] = 1000
        super().__init__(**kwargs)


async def test_the_memory_store_passes() -> None:
    ran = await check_history_store(MemoryHistoryStore, trimmed=MemoryHistoryStore)
    assert "trimming" in ran
    assert "concurrency" in ran


async def test_without_a_trimmed_factory_the_trimming_checks_do_not_run() -> None:
    ran = await check_history_store(MemoryHistoryStore)
    assert "trimming" not in ran
    assert len(ran) == 7


BROKEN: list[tuple[type[MemoryHistoryStore], str]] = [
    (RacyOffsets, "an offset names one message per epoch"),
    (DropsTheTail, r"the frame is template.head \+ str\(offset\) \+ template.tail"),
    (OffByOneAfter, "read_after.* starts at the first kept offset"),
    (IgnoresLimit, "read_after returned over limit=5"),
    (NewestFirst, "a page holds consecutive offsets"),
    (OldestPageBefore, "read_before.* ends at the newest kept offset below it"),
    (LazyEpoch, "the epoch reported for an empty room is the one its first"),
    (NoValidation, r"read_after\(after=-1\) must raise ValueError"),
    (SharedRooms, "rooms number their messages apart"),
    (EpochPerTrim, "trimming by count does not change the epoch"),
    (KeepsForever, "gone once ttl has passed"),
    (ForgetsButKeepsTheEpoch, "offsets never go back within an epoch"),
    (IgnoresRetain, "a retained room keeps its epoch and offset"),
    (NoCountTrim, "max_messages=5 keeps the newest 5"),
]


@pytest.mark.parametrize(("broken", "promise"), BROKEN, ids=lambda x: str(x)[:30])
async def test_the_suite_catches_a_broken_store(
    broken: Callable[..., MemoryHistoryStore], promise: str
) -> None:
    with pytest.raises(AssertionError, match=promise):
        await check_history_store(broken, trimmed=broken)
