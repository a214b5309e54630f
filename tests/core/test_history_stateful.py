"""A state machine over MemoryHistoryStore against a model kept with plain lists.

The model writes down every rule of the store independently: offsets per room, the
last ``max_messages`` per room, messages gone ``ttl`` seconds after they were
stored, rooms forgotten ``ttl`` seconds after their last use (unless retained), and
the memory bound dropping the oldest message of any room. Time is a clock the
machine moves by hand.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from wschat.history import (
    Entry,
    FrameTemplate,
    MemoryHistoryStore,
    Page,
    Stored,
    encode_message_template,
)

ROOMS = ["lobby", "dev", "ops"]
TTL = 10.0


def frame_bytes(frame: str) -> int:
    return sys.getsizeof(frame) + 240


@dataclass
class Room:
    epoch: str | None  # learnt from the store's first answer about this state
    used: float
    latest: int = 0


@dataclass
class Kept:
    seq: int
    room: str
    offset: int
    frame: str
    at: float


@dataclass
class Model:
    max_messages: int
    max_bytes: int
    rooms: dict[str, Room] = field(default_factory=dict)
    kept: list[Kept] = field(default_factory=list)  # oldest first, all rooms
    seq: int = 0
    evicted: int = 0

    def expire(self, now: float) -> None:
        self.kept = [k for k in self.kept if k.at + TTL > now]
        self.rooms = {n: r for n, r in self.rooms.items() if r.used + TTL > now}

    def use(self, name: str, now: float) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(epoch=None, used=now)
        room.used = now
        return room

    def of(self, name: str) -> list[Kept]:
        return [k for k in self.kept if k.room == name]

    def bytes(self) -> int:
        return sum(frame_bytes(k.frame) for k in self.kept)

    def append(self, name: str, frame_for: dict[int, str], now: float) -> int:
        room = self.use(name, now)
        room.latest += 1
        self.seq += 1
        self.kept.append(Kept(self.seq, name, room.latest, frame_for[room.latest], now))
        mine = self.of(name)
        if len(mine) > self.max_messages:
            self.kept.remove(mine[0])
        while self.kept and self.bytes() > self.max_bytes:
            self.kept.pop(0)
            self.evicted += 1
        return room.latest


class HistoryMachine(RuleBasedStateMachine):
    store_class: type[MemoryHistoryStore] = MemoryHistoryStore

    @initialize(
        max_messages=st.integers(min_value=1, max_value=6),
        max_bytes=st.integers(min_value=300, max_value=5000),
    )
    def start(self, max_messages: int, max_bytes: int) -> None:
        self.now = 100.0
        self.store = self.store_class(
            max_messages=max_messages,
            ttl=TTL,
            max_memory_bytes=max_bytes,
            clock=lambda: self.now,
        )
        self.model = Model(max_messages, max_bytes)
        self.epochs_seen: set[str] = set()
        self.n = 0

    def learn(self, name: str, epoch: str) -> None:
        room = self.model.rooms[name]
        if room.epoch is None:
            assert epoch not in self.epochs_seen, "a new room state needs a new epoch"
            self.epochs_seen.add(epoch)
            room.epoch = epoch
        assert epoch == room.epoch, "the epoch changed while the counter was kept"

    def check_page(self, name: str, page: Page, expected: list[Kept]) -> None:
        self.learn(name, page.epoch)
        room = self.model.rooms[name]
        mine = self.model.of(name)
        assert page.latest == room.latest
        assert page.first == (mine[0].offset if mine else room.latest + 1)
        assert page.messages == tuple(Entry(k.offset, k.frame) for k in expected)

    # -- rules -----------------------------------------------------------------------

    @rule(name=st.sampled_from(ROOMS), size=st.integers(min_value=0, max_value=900))
    def append(self, name: str, size: int) -> None:
        self.n += 1
        template = encode_message_template(
            id=f"m{self.n}",
            chat_id=name,
            user="u",
            body="x" * size,
            ts=0,
            client_id=None,
        )
        self.model.expire(self.now)
        expected = self.model.rooms[name].latest + 1 if name in self.model.rooms else 1
        stored = self.store.append_nowait(name, template)
        offset = self.model.append(
            name, {expected: template.render(expected)}, self.now
        )
        assert stored.offset == offset == expected
        assert stored.frame == template.render(offset)
        self.learn(name, stored.epoch)

    @rule(
        name=st.sampled_from(ROOMS),
        after=st.integers(min_value=0, max_value=12),
        limit=st.integers(min_value=1, max_value=8),
    )
    def read_after(self, name: str, after: int, limit: int) -> None:
        page = self.store.read_after_nowait(name, after, limit)
        self.model.expire(self.now)
        self.model.use(name, self.now)
        later = [k for k in self.model.of(name) if k.offset > after]
        self.check_page(name, page, later[:limit])
        room = self.model.rooms[name]
        lost = any(k.offset == after + 1 for k in later) or after == room.latest
        assert page.complete_after(after) == (
            after <= room.latest and len(later) <= limit and lost
        )

    @rule(
        name=st.sampled_from(ROOMS),
        before=st.none() | st.integers(min_value=1, max_value=12),
        limit=st.integers(min_value=1, max_value=8),
    )
    def read_before(self, name: str, before: int | None, limit: int) -> None:
        page = self.store.read_before_nowait(name, before, limit)
        self.model.expire(self.now)
        self.model.use(name, self.now)
        earlier = [
            k for k in self.model.of(name) if before is None or k.offset < before
        ]
        self.check_page(name, page, earlier[-limit:])

    @rule(name=st.sampled_from(ROOMS))
    def position(self, name: str) -> None:
        position = self.store.position_nowait(name)
        self.model.expire(self.now)
        room = self.model.use(name, self.now)
        self.learn(name, position.epoch)
        assert position.offset == room.latest

    @rule(names=st.lists(st.sampled_from([*ROOMS, "nobody"]), max_size=3))
    def retain(self, names: list[str]) -> None:
        self.store.retain_nowait(names)
        for name in names:
            if name in self.model.rooms:
                self.model.rooms[name].used = self.now
        self.model.expire(self.now)

    @rule()
    def sweep(self) -> None:
        self.store.sweep()
        self.model.expire(self.now)

    @rule(seconds=st.sampled_from([0.5, TTL / 3, TTL - 0.001, TTL, 2 * TTL]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: bool(self.model.rooms))
    @rule()
    def advance_to_the_next_expiry(self) -> None:
        # Exactly to the moment the oldest message or room goes.
        times = [k.at for k in self.model.kept] + [
            r.used for r in self.model.rooms.values()
        ]
        self.now = max(self.now, min(times) + TTL)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def sizes_match(self) -> None:
        health = self.store.health()
        assert health.entries == len(self.model.kept)
        assert health.rooms == len(self.model.rooms)
        assert health.memory_bytes == self.model.bytes()
        assert health.memory_bytes <= self.model.max_bytes
        assert health.evicted == self.model.evicted

    @invariant()
    def kept_messages_are_a_run_ending_at_latest(self) -> None:
        for name, room in self.model.rooms.items():
            offsets = [k.offset for k in self.model.of(name)]
            assert offsets == list(
                range(room.latest - len(offsets) + 1, room.latest + 1)
            )


TestHistoryMachine = HistoryMachine.TestCase
TestHistoryMachine.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)


class LateExpiry(MemoryHistoryStore):
    """Keeps a message until just after ttl (the boundary taken the wrong way)."""

    def _expire(self, now: float) -> None:
        super()._expire(now - 1e-6)


class TrimsOneLate(MemoryHistoryStore):
    """Keeps max_messages + 1 messages per room."""

    def append_nowait(self, chat_id: str, template: FrameTemplate) -> Stored:
        self.max_messages += 1
        try:
            return super().append_nowait(chat_id, template)
        finally:
            self.max_messages -= 1


class EvictsTheNewestRoom(MemoryHistoryStore):
    """Makes room by dropping from the room just written, not the oldest message."""

    def append_nowait(self, chat_id: str, template: FrameTemplate) -> Stored:
        bound, self.max_memory_bytes = self.max_memory_bytes, 2**62
        stored = super().append_nowait(chat_id, template)
        self.max_memory_bytes = bound
        room = self._rooms[chat_id]
        while self._bytes > bound and room.entries:
            _, frame, _, seq = room.entries.popleft()
            del self._order[seq]
            self._bytes -= sys.getsizeof(frame) + 240
            self._evicted += 1
        return stored


@pytest.mark.parametrize("broken", [LateExpiry, TrimsOneLate, EvictsTheNewestRoom])
def test_the_machine_catches_a_broken_store(broken: type[MemoryHistoryStore]) -> None:
    machine = type("Broken", (HistoryMachine,), {"store_class": broken})
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=300,
                stateful_step_count=50,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            ),
        )
