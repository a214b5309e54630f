"""The in-memory history store: defaults, trimming by count, age and memory, epochs.

Time is a frozen clock moved by hand; sizes are pinned with literal values.
"""

from __future__ import annotations

import gc
import math
import re
import sys
import tracemalloc
from typing import Any

import pytest

from wschat.errors import ConfigurationError
from wschat.history import (
    Entry,
    FrameTemplate,
    HistoryHealth,
    HistoryStore,
    MemoryHistoryStore,
    Page,
    Position,
    Stored,
    encode_message_template,
)
from wschat.history.memory import (
    DEFAULT_MAX_MEMORY_BYTES,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_TTL,
    ENTRY_OVERHEAD_BYTES,
    entry_bytes,
)
from wschat.testing import check_history_store

EPOCH = re.compile(r"[0-9a-f]{16}-[1-9][0-9]*")


class Clock:
    def __init__(self, now: float = 5000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def template(n: int, body: Any = None, room: str = "lobby") -> FrameTemplate:
    return encode_message_template(
        id=f"m{n}",
        chat_id=room,
        user="alice",
        body=f"message {n}" if body is None else body,
        ts=0,
        client_id=None,
    )


def offsets(page: Page) -> list[int]:
    return [entry.offset for entry in page.messages]


def store(**kwargs: Any) -> tuple[MemoryHistoryStore, Clock]:
    clock = Clock()
    return MemoryHistoryStore(clock=clock, **kwargs), clock


# -- defaults and options -------------------------------------------------------------


def test_defaults() -> None:
    assert DEFAULT_MAX_MESSAGES == 100
    assert DEFAULT_TTL == 300.0
    assert DEFAULT_MAX_MEMORY_BYTES == 64 * 1024 * 1024 == 67_108_864
    assert ENTRY_OVERHEAD_BYTES == 240
    history = MemoryHistoryStore()
    assert (history.max_messages, history.ttl, history.max_memory_bytes) == (
        100,
        300.0,
        67_108_864,
    )
    assert isinstance(history, HistoryStore)
    assert history.name == "memory"
    assert history.health() == HistoryHealth(
        name="memory",
        healthy=True,
        rooms=0,
        entries=0,
        memory_bytes=0,
        max_memory_bytes=67_108_864,
    )


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("max_messages", 0, "max_messages must be an integer of at least 1; got 0"),
        ("max_messages", True, "max_messages must be an integer"),
        ("max_messages", 2.0, "max_messages must be an integer"),
        ("ttl", 0, "ttl must be a number of seconds above 0; got 0"),
        ("ttl", -1.5, "ttl must be a number of seconds above 0"),
        ("ttl", math.nan, "ttl must be a number"),
        ("ttl", math.inf, "ttl must be a number"),
        ("ttl", "300", "ttl must be a number"),
        ("max_memory_bytes", 0, "max_memory_bytes must be an integer of at least 1"),
        ("max_memory_bytes", 1e9, "max_memory_bytes must be an integer"),
    ],
)
def test_options_out_of_range_say_what_to_change(
    option: str, value: Any, says: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        MemoryHistoryStore(**{option: value})


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda s: s.read_after_nowait("r", -1, 5), "after must be an integer of at"),
        (lambda s: s.read_after_nowait("r", True, 5), "after must be an integer"),
        (lambda s: s.read_after_nowait("r", 1.0, 5), "after must be an integer"),
        (lambda s: s.read_after_nowait("r", 0, 0), "limit must be an integer of at"),
        (lambda s: s.read_after_nowait("r", 0, False), "limit must be an integer"),
        (lambda s: s.read_before_nowait("r", 0, 5), "before must be an integer of"),
        (lambda s: s.read_before_nowait("r", "5", 5), "before must be an integer"),
        (lambda s: s.read_before_nowait("r", None, -1), "limit must be an integer"),
    ],
)
def test_bad_read_arguments_raise_value_error(call: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        call(MemoryHistoryStore())


# -- offsets, reads -------------------------------------------------------------------


def test_append_numbers_from_one_and_builds_the_frame() -> None:
    history, _ = store()
    first = history.append_nowait("lobby", template(1))
    assert first == Stored(1, first.epoch, template(1).render(1))
    assert first.frame.endswith(',"offset":1}')
    second = history.append_nowait("lobby", template(2))
    assert (second.offset, second.epoch) == (2, first.epoch)
    assert history.position_nowait("lobby") == Position(first.epoch, 2)
    # Another room counts on its own.
    assert history.append_nowait("dev", template(1, room="dev")).offset == 1


def test_reads_return_entries_and_position_in_one_page() -> None:
    history, _ = store()
    frames = [history.append_nowait("lobby", template(n)).frame for n in range(1, 6)]
    epoch = history.position_nowait("lobby").epoch
    page = history.read_after_nowait("lobby", 2, 10)
    assert page == Page(
        epoch, 5, 1, (Entry(3, frames[2]), Entry(4, frames[3]), Entry(5, frames[4]))
    )
    assert page.complete_after(2)
    assert not page.complete_after(1)
    assert not page.complete_after(6)
    assert not page.complete_after(-1)
    assert history.read_before_nowait("lobby", 3, 10) == Page(
        epoch, 5, 1, (Entry(1, frames[0]), Entry(2, frames[1]))
    )
    assert history.read_before_nowait("lobby", None, 2).messages == (
        Entry(4, frames[3]),
        Entry(5, frames[4]),
    )
    assert history.read_before_nowait("lobby", None, 2).more_before
    assert not history.read_before_nowait("lobby", None, 5).more_before
    assert not history.read_before_nowait("lobby", 1, 5).more_before


# -- trimming by count and age --------------------------------------------------------


def test_keeps_the_last_100_messages_of_a_room_by_default() -> None:
    history, _ = store()
    for n in range(1, 101):
        history.append_nowait("lobby", template(n))
    assert history.read_after_nowait("lobby", 0, 1000).first == 1
    history.append_nowait("lobby", template(101))
    page = history.read_after_nowait("lobby", 0, 1000)
    assert (page.first, page.latest, len(page.messages)) == (2, 101, 100)
    assert page.complete_after(1)
    assert not page.complete_after(0)
    assert history.health().entries == 100


def test_a_message_is_kept_for_300_seconds_by_default() -> None:
    history, clock = store()
    history.append_nowait("lobby", template(1))
    clock.now += 299.999
    assert offsets(history.read_after_nowait("lobby", 0, 10)) == [1]
    clock.now += 0.001  # exactly 300 s after it was stored
    page = history.read_after_nowait("lobby", 0, 10)
    assert page.messages == ()
    assert (page.latest, page.first) == (1, 2)
    assert page.complete_after(1)
    assert not page.complete_after(0)


def test_expiry_drops_messages_of_rooms_nobody_asks_about() -> None:
    history, clock = store(ttl=10)
    for n in range(1, 4):
        history.append_nowait("quiet", template(n, room="quiet"))
    clock.now += 10
    # Any call on the store drops what expired, in any room.
    history.append_nowait("busy", template(1, room="busy"))
    health = history.health()
    assert (health.entries, health.rooms) == (1, 1)
    assert health.memory_bytes == entry_bytes(template(1, room="busy").render(1))


def test_sweep_drops_expired_messages_and_rooms_without_another_call() -> None:
    history, clock = store(ttl=10)
    history.append_nowait("a", template(1, room="a"))
    clock.now += 5
    history.append_nowait("b", template(1, room="b"))
    clock.now += 5
    assert history.health().entries == 2  # health() changes nothing
    history.sweep()
    assert (history.health().entries, history.health().rooms) == (1, 1)
    clock.now += 5
    history.sweep()
    assert history.health() == HistoryHealth(
        "memory", True, rooms=0, entries=0, memory_bytes=0, max_memory_bytes=2**26
    )


# -- epochs ---------------------------------------------------------------------------


def test_each_store_and_each_room_state_gets_its_own_epoch() -> None:
    one, two = MemoryHistoryStore(), MemoryHistoryStore()
    a = one.position_nowait("lobby").epoch
    b = one.position_nowait("dev").epoch
    c = two.position_nowait("lobby").epoch
    for epoch in (a, b, c):
        assert EPOCH.fullmatch(epoch), epoch
    assert len({a, b, c}) == 3
    assert a.split("-")[0] == b.split("-")[0] != c.split("-")[0]


def test_an_empty_room_keeps_the_epoch_it_reported_for_its_first_message() -> None:
    history, clock = store(ttl=10)
    epoch = history.position_nowait("lobby").epoch
    clock.now += 9.999
    assert history.append_nowait("lobby", template(1)) == Stored(
        1, epoch, template(1).render(1)
    )


def test_trimming_never_changes_the_epoch_even_when_nothing_is_left() -> None:
    frame = template(1).render(1)
    history, clock = store(ttl=10, max_memory_bytes=entry_bytes(frame))
    epoch = history.append_nowait("lobby", template(1)).epoch
    history.append_nowait("lobby", template(2))  # evicts offset 1
    history.append_nowait("other", template(1, room="other"))  # evicts offset 2
    page = history.read_after_nowait("lobby", 0, 10)
    assert (page.epoch, page.latest, page.first, page.messages) == (epoch, 2, 3, ())
    assert not page.complete_after(1)
    assert page.complete_after(2)
    clock.now += 9  # used 9 s ago at most: the room's state is kept
    assert history.append_nowait("lobby", template(3)) == Stored(
        3, epoch, template(3).render(3)
    )


def test_a_room_unused_for_ttl_is_forgotten_and_restarts_in_a_new_epoch() -> None:
    history, clock = store(ttl=10)
    old = history.append_nowait("lobby", template(1)).epoch
    clock.now += 9.999
    history.sweep()
    assert history.health().rooms == 1
    clock.now += 0.001
    history.sweep()
    assert history.health().rooms == 0
    position = history.position_nowait("lobby")
    assert position.offset == 0
    assert position.epoch != old
    assert history.append_nowait("lobby", template(1)).offset == 1


def test_reads_keep_a_room_in_use() -> None:
    history, clock = store(ttl=10)
    epoch = history.append_nowait("lobby", template(1)).epoch
    for _ in range(5):
        clock.now += 6
        history.read_before_nowait("other", None, 1)  # other rooms do not count
        assert history.read_after_nowait("lobby", 1, 10).epoch == epoch


def test_retain_keeps_a_rooms_epoch_and_counter_but_not_its_messages() -> None:
    history, clock = store(ttl=10)
    epoch = history.append_nowait("lobby", template(1)).epoch
    for _ in range(10):
        clock.now += 9.9
        history.retain_nowait(["lobby", "never-seen"])
    assert history.health().rooms == 1  # retain() creates no room
    page = history.read_after_nowait("lobby", 0, 10)
    assert (page.epoch, page.latest, page.messages) == (epoch, 1, ())
    clock.now += 10
    history.sweep()
    assert history.health().rooms == 0


# -- the memory bound -----------------------------------------------------------------


def test_entry_bytes_is_the_string_size_plus_240() -> None:
    frame = template(1).render(1)
    assert entry_bytes(frame) == sys.getsizeof(frame) + 240
    assert entry_bytes("x" * 1000) == 49 + 1000 + 240  # an ASCII str on CPython
    history, _ = store()
    history.append_nowait("lobby", template(1))
    history.append_nowait("dev", template(1, body="x" * 5000, room="dev"))
    assert history.health().memory_bytes == (
        entry_bytes(frame) + entry_bytes(template(1, "x" * 5000, "dev").render(1))
    )


def test_the_memory_bound_evicts_the_oldest_message_of_any_room() -> None:
    size = entry_bytes(template(1, room="a").render(1))  # every frame here
    history, _ = store(max_memory_bytes=3 * size)
    history.append_nowait("a", template(1, room="a"))
    history.append_nowait("b", template(1, room="b"))
    history.append_nowait("a", template(2, room="a"))
    assert history.health().evicted == 0
    history.append_nowait("b", template(2, room="b"))
    assert offsets(history.read_after_nowait("a", 0, 10)) == [2]
    assert offsets(history.read_after_nowait("b", 0, 10)) == [1, 2]
    history.append_nowait("a", template(3, room="a"))
    assert offsets(history.read_after_nowait("a", 0, 10)) == [2, 3]
    assert offsets(history.read_after_nowait("b", 0, 10)) == [2]
    health = history.health()
    assert (health.entries, health.memory_bytes, health.evicted) == (3, 3 * size, 2)
    assert health.memory_bytes <= health.max_memory_bytes  # type: ignore[operator]


def test_a_frame_larger_than_the_bound_is_numbered_but_not_kept() -> None:
    history, _ = store(max_memory_bytes=1000)
    stored = history.append_nowait("lobby", template(1, body="x" * 2000))
    assert stored.offset == 1
    assert '"offset":1}' in stored.frame
    page = history.read_after_nowait("lobby", 0, 10)
    assert (page.latest, page.messages) == (1, ())
    assert history.health().memory_bytes == 0
    assert history.append_nowait("lobby", template(2)).offset == 2


def test_memory_bytes_tracks_what_python_really_allocates() -> None:
    rooms, per_room = 50, 100
    history = MemoryHistoryStore(max_messages=per_room, ttl=1e6)
    templates = [
        template(n, body={"text": "y" * (n % 300)}, room=f"r{n % rooms}")
        for n in range(rooms * per_room)
    ]
    for room in range(rooms):
        history.position_nowait(f"r{room}")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, t in enumerate(templates):
            history.append_nowait(f"r{n % rooms}", t)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    reported = history.health().memory_bytes
    assert 0.75 * used <= reported <= 1.25 * used, (reported, used)


# -- conformance ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_memory_store_passes_the_conformance_suite() -> None:
    ran = await check_history_store(MemoryHistoryStore, trimmed=MemoryHistoryStore)
    assert ran == [
        "basics",
        "empty_room",
        "append_and_read",
        "paging",
        "rooms_apart",
        "bad_arguments",
        "concurrency",
        "trimming",
    ]
