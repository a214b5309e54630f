"""The history store conformance suite: :func:`wschat.testing.check_history_store`.

Imports: anyio and the standard library (core layer).

Any :class:`~wschat.history.HistoryStore`, ours or yours, should pass it. The
factory returns a store at each call; stores from several calls may share their
engine (a database) or not (memory): the suite uses rooms of its own in each check
and assumes nothing across calls. A store that trims by count and age, and takes a
clock, also gets the trimming checks. Failures raise ``AssertionError`` saying which
promise was broken.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
import anyio.lowlevel

from ..suites import Check, run_checks
from .base import Entry, HistoryHealth, HistoryStore, Page, Position, Stored
from .template import FrameTemplate, encode_message_template

__all__ = ["check_history_store"]

HistoryStoreFactory = Callable[[], HistoryStore]


class TrimmedStoreFactory(Protocol):
    """Makes a store that keeps ``max_messages`` per room for ``ttl`` seconds."""

    def __call__(
        self, *, max_messages: int, ttl: float, clock: Callable[[], float]
    ) -> HistoryStore: ...


class _Clock:
    """A clock the suite moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _template(room: str, n: int, body: object = None) -> FrameTemplate:
    return encode_message_template(
        id=f"m{n}",
        chat_id=room,
        user="conformance",
        body={"n": n} if body is None else body,
        ts=1_700_000_000_000 + n,
        client_id=f"c{n}",
    )


class _Ledger:
    """Everything the store said, to catch an offset naming two messages."""

    def __init__(self) -> None:
        self.frames: dict[tuple[str, str, int], str] = {}
        self.latest: dict[str, tuple[str, int]] = {}

    def saw(self, room: str, epoch: str, offset: int, frame: str) -> None:
        key = (room, epoch, offset)
        known = self.frames.setdefault(key, frame)
        assert known == frame, (
            f"an offset names one message per epoch: {room!r} offset {offset} in "
            f"epoch {epoch!r} was {known[:80]!r}, now {frame[:80]!r}"
        )

    def position(
        self, room: str, epoch: str, latest: int, *, ordered: bool = True
    ) -> None:
        """Record a room's position; ``ordered``: no concurrent call since."""
        assert isinstance(epoch, str), "the epoch must be a str"
        assert epoch, "the epoch must not be empty"
        assert type(latest) is int, "offsets are integers"
        assert latest >= 0, f"the latest offset is 0 or more, got {latest}"
        if not ordered:
            return
        before = self.latest.get(room)
        if before is not None and before[0] == epoch:
            assert latest >= before[1], (
                "offsets never go back within an epoch: the epoch changes when "
                f"they restart ({room!r}: {before[1]}, then {latest} in {epoch!r})"
            )
        self.latest[room] = (epoch, latest)

    def stored(
        self,
        room: str,
        stored: Stored,
        template: FrameTemplate,
        *,
        ordered: bool = True,
    ) -> None:
        assert isinstance(stored, Stored), "append() returns a Stored"
        assert stored.frame == template.render(stored.offset), (
            "the frame is template.head + str(offset) + template.tail: "
            f"got {stored.frame[:120]!r}"
        )
        assert stored.offset >= 1, f"offsets start at 1, got {stored.offset}"
        self.position(room, stored.epoch, stored.offset, ordered=ordered)
        self.saw(room, stored.epoch, stored.offset, stored.frame)

    def page(self, room: str, page: Page, *, ordered: bool = True) -> None:
        assert isinstance(page, Page), "reads return a Page"
        self.position(room, page.epoch, page.latest, ordered=ordered)
        offsets = [e.offset for e in page.messages]
        assert all(isinstance(e, Entry) for e in page.messages), "messages are Entry"
        if offsets:
            expected = list(range(offsets[0], offsets[0] + len(offsets)))
            assert offsets == expected, f"a page holds consecutive offsets: {offsets}"
        assert 1 <= page.first <= page.latest + 1, (
            f"first is between 1 and latest + 1: first {page.first}, "
            f"latest {page.latest}"
        )
        if offsets:
            kept = range(page.first, page.latest + 1)
            assert offsets[0] in kept, (
                f"a page holds kept messages only: {offsets[0]}..{offsets[-1]} "
                f"with first {page.first} and latest {page.latest}"
            )
            assert offsets[-1] in kept, (
                f"a page holds kept messages only: {offsets[0]}..{offsets[-1]} "
                f"with first {page.first} and latest {page.latest}"
            )
        for entry in page.messages:
            self.saw(room, page.epoch, entry.offset, entry.frame)


async def _append(
    ledger: _Ledger, store: HistoryStore, room: str, n: int, body: object = None
) -> Stored:
    template = _template(room, n, body)
    stored = await store.append(room, template)
    ledger.stored(room, stored, template)
    return stored


async def _position(ledger: _Ledger, store: HistoryStore, room: str) -> Position:
    position = await store.position(room)
    assert isinstance(position, Position), "position() returns a Position"
    ledger.position(room, position.epoch, position.offset)
    return position


async def _after(
    ledger: _Ledger, store: HistoryStore, room: str, after: int, limit: int = 1000
) -> Page:
    page = await store.read_after(room, after, limit)
    ledger.page(room, page)
    assert len(page.messages) <= limit, f"read_after returned over limit={limit}"
    if page.messages:
        assert page.messages[0].offset == max(after + 1, page.first), (
            f"read_after({after}) starts at the first kept offset above {after}: "
            f"got {page.messages[0].offset} with first {page.first}"
        )
    return page


async def _before(
    ledger: _Ledger, store: HistoryStore, room: str, before: int | None, limit: int
) -> Page:
    page = await store.read_before(room, before, limit)
    ledger.page(room, page)
    assert len(page.messages) <= limit, f"read_before returned over limit={limit}"
    end = page.latest if before is None else min(before - 1, page.latest)
    if page.messages:
        assert page.messages[-1].offset == end, (
            f"read_before({before}) ends at the newest kept offset below it ({end}): "
            f"got {page.messages[-1].offset}"
        )
    return page


def _offsets(page: Page) -> list[int]:
    return [entry.offset for entry in page.messages]


async def _check_basics(store: HistoryStore) -> None:
    assert isinstance(store, HistoryStore), "does not implement HistoryStore"
    assert isinstance(store.name, str), "name must be a str"
    assert store.name, "name must not be empty"
    health = store.health()
    assert isinstance(health, HistoryHealth), "health() returns a HistoryHealth"
    assert health.healthy, f"not healthy: {health.detail}"
    json.dumps(health.as_dict())
    await store.retain([])
    await store.retain(iter(["never-seen-room", "another"]))


async def _check_empty_room(store: HistoryStore, ledger: _Ledger, tag: str) -> None:
    room = f"{tag}-empty"
    position = await _position(ledger, store, room)
    assert position.offset == 0, f"a new room's offset is 0, got {position.offset}"
    again = await _position(ledger, store, room)
    assert again == position, "asking twice about an empty room gives one epoch"
    page = await _after(ledger, store, room, 0, 10)
    assert page.messages == (), "a new room has no messages"
    assert (page.epoch, page.latest, page.first) == (position.epoch, 0, 1), (
        f"a new room's page: epoch as position(), latest 0, first 1; got {page}"
    )
    assert page.complete_after(0), "nothing after 0 in an empty room: complete"
    page = await _before(ledger, store, room, None, 10)
    assert page.messages == (), "a new room has no messages to page back"
    stored = await _append(ledger, store, room, 1)
    assert stored.offset == 1, f"a room's first offset is 1, got {stored.offset}"
    assert stored.epoch == position.epoch, (
        "the epoch reported for an empty room is the one its first message gets "
        f"(a client that joined it must recover): {position.epoch!r} then "
        f"{stored.epoch!r}"
    )


async def _check_append_and_read(
    store: HistoryStore, ledger: _Ledger, tag: str
) -> None:
    room = f"{tag}-read"
    bodies: list[object] = [
        "hello",
        {"text": "é ✓ 😀 \u2028", "list": [1, 2.5, None, True]},
        "x" * 65536,
        "",
        {"nested": {"deep": [[[]]]}},
    ]
    stored = []
    for n in range(1, 13):
        body = bodies[n - 1] if n <= len(bodies) else None
        stored.append(await _append(ledger, store, room, n, body))
    offsets = [s.offset for s in stored]
    assert offsets == list(range(1, 13)), f"offsets are 1, 2, 3, ...: got {offsets}"
    epochs = {s.epoch for s in stored}
    assert len(epochs) == 1, f"one epoch while the store keeps the room: {epochs}"
    (epoch,) = epochs
    for s in stored:
        assert json.loads(s.frame)["offset"] == s.offset, "the offset is in the frame"
    position = await _position(ledger, store, room)
    assert position == (epoch, 12), f"position after 12 appends: {position}"
    frames = [s.frame for s in stored]
    for after in range(13):
        page = await _after(ledger, store, room, after)
        assert [e.frame for e in page.messages] == frames[after:], (
            f"read_after({after}) returns exactly the later messages, in order, "
            "byte for byte"
        )
        assert (page.epoch, page.latest, page.first) == (epoch, 12, 1)
        assert page.complete_after(after), f"read_after({after}) is complete"
    page = await _after(ledger, store, room, 20)
    assert page.messages == (), "nothing after an offset beyond the latest"
    assert not page.complete_after(20), "an offset the room never reached: incomplete"
    page = await _after(ledger, store, room, 2**70)
    assert page.messages == (), "an offset past any integer type: no messages"
    assert not page.complete_after(2**70), "an offset past any integer: incomplete"
    page = await _after(ledger, store, room, 0, 2**70)
    assert [e.frame for e in page.messages] == frames, "a huge limit: all of them"
    page = await _after(ledger, store, room, 0, 5)
    assert _offsets(page) == [1, 2, 3, 4, 5], f"limit caps read_after: {page}"
    assert not page.complete_after(0), "a page cut by the limit is not complete"
    page = await _after(ledger, store, room, 5, 5)
    assert _offsets(page) == [6, 7, 8, 9, 10], "read_after(5, limit=5)"
    page = await _after(ledger, store, room, 10, 5)
    assert _offsets(page) == [11, 12], "read_after(10, limit=5)"
    assert page.complete_after(10)


async def _check_paging(store: HistoryStore, ledger: _Ledger, tag: str) -> None:
    room = f"{tag}-page"
    frames = [(await _append(ledger, store, room, n)).frame for n in range(1, 13)]
    page = await _before(ledger, store, room, None, 5)
    assert _offsets(page) == [8, 9, 10, 11, 12], f"the latest page: {_offsets(page)}"
    assert page.more_before, "older messages are kept"
    page = await _before(ledger, store, room, 8, 5)
    assert _offsets(page) == [3, 4, 5, 6, 7], f"the page before 8: {_offsets(page)}"
    page = await _before(ledger, store, room, 3, 5)
    assert _offsets(page) == [1, 2], f"the page before 3: {_offsets(page)}"
    assert not page.more_before, "nothing older than offset 1"
    page = await _before(ledger, store, room, 1, 5)
    assert page.messages == (), "nothing before offset 1"
    page = await _before(ledger, store, room, 100, 3)
    assert _offsets(page) == [10, 11, 12], "before beyond the latest: the latest page"
    page = await _before(ledger, store, room, 2**70, 2**70)
    assert [e.frame for e in page.messages] == frames, "huge before and limit: all"
    page = await _before(ledger, store, room, 13, 100)
    assert [e.frame for e in page.messages] == frames, "one page of everything"
    # Paging backwards visits every message once, in order.
    seen: list[Entry] = []
    before: int | None = None
    for _ in range(20):
        page = await _before(ledger, store, room, before, 4)
        if not page.messages:
            break
        seen[:0] = page.messages
        before = page.messages[0].offset
    assert [e.frame for e in seen] == frames, "paging backwards covers all, once"


async def _check_rooms_apart(store: HistoryStore, ledger: _Ledger, tag: str) -> None:
    # Names that a careless key mapping would mix up.
    rooms = [f"{tag}-x", f"{tag}-x:1", f"{tag}-x1", f"{tag}-x.1", f"{tag}-X"]
    for n in range(1, 4):
        for i, room in enumerate(rooms):
            stored = await _append(ledger, store, room, n, {"room": i, "n": n})
            assert stored.offset == n, (
                f"rooms number their messages apart: {room!r} got {stored.offset}, "
                f"expected {n}"
            )
    for i, room in enumerate(rooms):
        page = await _after(ledger, store, room, 0)
        bodies = [json.loads(e.frame)["body"] for e in page.messages]
        assert bodies == [{"room": i, "n": n} for n in range(1, 4)], (
            f"a room's reads hold its own messages only: {room!r} has {bodies}"
        )


async def _check_bad_arguments(store: HistoryStore, tag: str) -> None:
    room = f"{tag}-bad"
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("read_after(after=-1)", lambda: store.read_after(room, -1, 10)),
        ("read_after(limit=0)", lambda: store.read_after(room, 0, 0)),
        ("read_after(limit=-5)", lambda: store.read_after(room, 0, -5)),
        ("read_before(before=0)", lambda: store.read_before(room, 0, 10)),
        ("read_before(limit=0)", lambda: store.read_before(room, None, 0)),
    ]
    for what, call in calls:
        try:
            await call()
        except ValueError:
            continue
        raise AssertionError(f"{what} must raise ValueError saying what is wrong")


async def _check_concurrency(
    store: HistoryStore, ledger: _Ledger, tag: str, within: float
) -> None:
    room, other = f"{tag}-busy", f"{tag}-busy2"
    tasks, each = 20, 25
    got: dict[int, list[Stored]] = {t: [] for t in range(tasks)}
    pages: list[Page] = []
    done = anyio.Event()

    async def writer(task: int, target: str) -> None:
        for i in range(each):
            template = _template(target, task * 1000 + i)
            stored = await store.append(target, template)
            ledger.stored(target, stored, template, ordered=False)
            if target == room:
                got[task].append(stored)

    async def reader() -> None:
        while not done.is_set():
            page = await store.read_after(room, 0, tasks * each)
            ledger.page(room, page, ordered=False)
            pages.append(page)
            await anyio.lowlevel.checkpoint()

    try:
        with anyio.fail_after(within):
            async with anyio.create_task_group() as readers:
                readers.start_soon(reader)
                async with anyio.create_task_group() as tg:
                    for task in range(tasks):
                        tg.start_soon(writer, task, room)
                    for task in range(5):
                        tg.start_soon(writer, task, other)
                done.set()
    except TimeoutError:
        raise AssertionError(
            f"{tasks} tasks appending {each} messages each did not finish within "
            f"{within:g} s"
        ) from None
    total = tasks * each
    offsets = sorted(s.offset for stored in got.values() for s in stored)
    assert offsets == list(range(1, total + 1)), (
        "concurrent appends get unique, consecutive offsets: "
        f"{len(set(offsets))} distinct of {len(offsets)}, "
        f"from {offsets[0]} to {offsets[-1]}"
    )
    assert len({s.epoch for stored in got.values() for s in stored}) == 1, (
        "concurrent appends to one room share its epoch"
    )
    for stored in got.values():
        mine = [s.offset for s in stored]
        assert mine == sorted(mine), f"one task's appends get rising offsets: {mine}"
    by_offset = {s.offset: s.frame for stored in got.values() for s in stored}
    page = await _after(ledger, store, room, 0, total)
    assert page.latest == total, f"latest after {total} appends: {page.latest}"
    assert page.messages, "the newest messages are kept"
    assert page.messages[-1].offset == total, "the newest message is kept"
    for entry in page.messages:
        assert entry.frame == by_offset[entry.offset], "a read frame is the appended"
        assert json.loads(entry.frame)["offset"] == entry.offset
    other_page = await _after(ledger, store, other, 0, total)
    assert other_page.latest == 5 * each, "the other room counts its own"
    latest = 0
    for seen in pages:
        assert seen.latest >= latest, "a reader never sees the latest offset go back"
        latest = seen.latest
        if seen.messages:
            assert seen.messages[-1].offset == seen.latest, (
                "a read during appends is one consistent step: its messages run "
                f"up to its latest ({seen.messages[-1].offset} for {seen.latest})"
            )


async def _check_trimming(
    trimmed: TrimmedStoreFactory, ledger: _Ledger, tag: str
) -> None:
    clock = _Clock()
    ttl = 100.0
    store = trimmed(max_messages=5, ttl=ttl, clock=clock)
    # By count: the oldest go first, offsets and epoch go on.
    room = f"{tag}-count"
    epoch = (await _append(ledger, store, room, 1)).epoch
    for n in range(2, 9):
        await _append(ledger, store, room, n)
    page = await _after(ledger, store, room, 0)
    assert _offsets(page) == [4, 5, 6, 7, 8], (
        f"max_messages=5 keeps the newest 5: {_offsets(page)}"
    )
    assert page.first == 4, f"first is the oldest kept offset: {page.first}"
    assert page.epoch == epoch, "trimming by count does not change the epoch"
    assert not page.complete_after(2), "since older than what is kept: incomplete"
    assert page.complete_after(3), "since just before the oldest kept: complete"
    assert _offsets(await _before(ledger, store, room, None, 10)) == [4, 5, 6, 7, 8]
    assert not (await _before(ledger, store, room, None, 10)).more_before
    assert (await _append(ledger, store, room, 9)).offset == 9, "offsets go on"

    # By age: a message is kept for ttl seconds, no longer.
    room = f"{tag}-age"
    epoch = (await _append(ledger, store, room, 1)).epoch
    clock.now += ttl / 2
    await _append(ledger, store, room, 2)
    clock.now += ttl / 2 - ttl / 100
    page = await _after(ledger, store, room, 0)
    assert _offsets(page) == [1, 2], f"kept until ttl: {_offsets(page)}"
    clock.now += ttl / 100
    page = await _after(ledger, store, room, 0)
    assert _offsets(page) == [2], f"gone once ttl has passed: {_offsets(page)}"
    assert page.epoch == epoch, "trimming by age does not change the epoch"
    clock.now += ttl / 2
    page = await _after(ledger, store, room, 1)
    assert page.messages == (), f"all messages expired: {_offsets(page)}"
    assert (page.latest, page.first) == (2, 3), (
        f"with none kept, latest stays and first is latest + 1: {page}"
    )
    assert page.epoch == epoch, "expiry of every message does not change the epoch"
    assert page.complete_after(2), "a client that saw offset 2 missed nothing"
    assert not page.complete_after(1), "a client that saw offset 1 missed offset 2"
    assert (await _append(ledger, store, room, 3)).offset == 3, "offsets go on"

    # Retained rooms keep their numbering however long nothing is said.
    room = f"{tag}-kept"
    epoch = (await _append(ledger, store, room, 1)).epoch
    for _ in range(5):
        clock.now += ttl * 0.75
        await store.retain([room, f"{tag}-never-seen"])
    position = await _position(ledger, store, room)
    assert position == (epoch, 1), (
        f"a retained room keeps its epoch and offset: {epoch!r} 1, got {position}"
    )
    assert (await _append(ledger, store, room, 2)).offset == 2, "offsets go on"

    # An unused room may be forgotten, but then under a new epoch.
    room = f"{tag}-idle"
    first = await _append(ledger, store, room, 1)
    clock.now += ttl * 3
    await store.position(f"{tag}-other")
    position = await _position(ledger, store, room)
    if position.epoch == first.epoch:
        assert position.offset == 1, "the same epoch: offsets must go on"
        expected = 2
    else:
        assert position.offset == 0, "a forgotten room starts again from 0"
        expected = 1
    assert (await _append(ledger, store, room, 2)).offset == expected, (
        "after an idle room: offsets go on in its epoch or restart in a new one"
    )
    assert store.health().healthy, "healthy after trimming"


async def check_history_store(
    factory: HistoryStoreFactory,
    *,
    trimmed: TrimmedStoreFactory | None = None,
    within: float = 30.0,
) -> list[str]:
    """Check that a history store keeps every promise recovery and paging rely on.

    Runs in well under a second against the in-memory store. Call it from an
    async test::

        async def test_my_store() -> None:
            await check_history_store(lambda: MyStore(pool))

    Args:
        factory: Returns a store at each call.
        trimmed: For a store that trims by count and age with a clock it is given:
            called as ``trimmed(max_messages=5, ttl=100.0, clock=clock)``, where
            ``clock()`` returns seconds the suite moves forward by hand. A class
            whose constructor takes those keywords will do.
        within: Seconds the concurrent appends may take.

    Returns:
        The names of the checks that ran (``trimming`` only with ``trimmed``).

    Raises:
        AssertionError: A promise is broken; the message says which.
    """
    tag = "hist" + os.urandom(3).hex()
    ledger = _Ledger()
    checks: list[Check] = [
        ("basics", lambda: _check_basics(factory())),
        ("empty_room", lambda: _check_empty_room(factory(), ledger, tag)),
        ("append_and_read", lambda: _check_append_and_read(factory(), ledger, tag)),
        ("paging", lambda: _check_paging(factory(), ledger, tag)),
        ("rooms_apart", lambda: _check_rooms_apart(factory(), ledger, tag)),
        ("bad_arguments", lambda: _check_bad_arguments(factory(), tag)),
        ("concurrency", lambda: _check_concurrency(factory(), ledger, tag, within)),
    ]
    if trimmed is not None:
        checks.append(("trimming", lambda: _check_trimming(trimmed, ledger, tag)))
    return await run_checks(checks)
