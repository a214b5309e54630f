"""The in-memory backplane: the zero-config default, and a hub for tests.

Imports: anyio and the standard library (core layer).

``MemoryBackplane()`` with no hub serves one process: the manager sees that it has
no peers and keeps everything local, with nothing to start. Several backplanes built
on one :class:`MemoryHub` behave like processes sharing a Redis, inside one process:
the conformance suite and the manager's multi-node tests use that, and
:meth:`MemoryHub.set_down` simulates an outage (publishes fail, presence is wiped,
and every running backplane reports a reconnect with ``resync`` when it comes back).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

import anyio
from anyio.abc import TaskStatus

from .base import BackplaneHealth, BackplaneUnavailable, Receiver

__all__ = ["MemoryBackplane", "MemoryHub"]

_DOWN: Final = "memory hub is down (simulated outage)"


class MemoryHub:
    """What several :class:`MemoryBackplane` share: channels and presence leases.

    Its methods are the engine's side of :class:`MemoryBackplane` (each presence
    method is the backplane method of the same name); tests that simulate faults in
    a backplane subclass may call them too.

    Args:
        clock: Seconds, monotonic; tests pass a fake one to expire leases.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.down = False
        # channel -> the backplanes subscribed to it, in subscription order
        self._subscribers: dict[str, dict[object, None]] = {}
        # room -> user -> node -> expiry
        self._leases: dict[str, dict[str, dict[str, float]]] = {}
        # user -> slot -> expiry (the per-user connection cap)
        self._slots: dict[str, dict[str, float]] = {}
        # running backplane -> its receiver, and what to call when the hub is back
        self._running: dict[object, tuple[Receiver, Callable[[], None]]] = {}

    def set_down(self, down: bool) -> None:
        """Simulate the engine going away (True) or coming back (False).

        Going down wipes presence, like a Redis restarted without persistence.
        Coming back makes every running backplane report a reconnect and ``resync``
        its channels.
        """
        if down == self.down:
            return
        self.down = down
        if down:
            self._leases.clear()
            self._slots.clear()
            return
        for _, reconnected in list(self._running.values()):
            reconnected()

    def check(self) -> None:
        """Raise :class:`BackplaneUnavailable` while the hub is down."""
        if self.down:
            raise BackplaneUnavailable(_DOWN)

    def listen(
        self, key: object, receiver: Receiver, reconnected: Callable[[], None]
    ) -> None:
        """A backplane runs: deliver its channels' messages to ``receiver``.

        Args:
            key: The backplane (what it subscribes with).
            receiver: Gets the messages of the channels ``key`` subscribed.
            reconnected: Called when the hub comes back after :meth:`set_down`.
        """
        self._running[key] = (receiver, reconnected)

    def unlisten(self, key: object) -> None:
        """The backplane stopped running: its messages are no longer delivered."""
        self._running.pop(key, None)

    def subscribe(self, channel: str, key: object) -> None:
        """Deliver ``channel``'s messages to ``key`` (while it runs)."""
        self._subscribers.setdefault(channel, {})[key] = None

    def unsubscribe(self, channel: str, key: object) -> None:
        """Stop delivering ``channel``'s messages to ``key``."""
        subscribers = self._subscribers.get(channel)
        if subscribers is not None:
            subscribers.pop(key, None)
            if not subscribers:
                del self._subscribers[channel]

    def publish(self, channel: str, data: bytes) -> None:
        """Deliver ``data`` to every running backplane subscribed to ``channel``.

        Raises:
            BackplaneUnavailable: The hub is down.
        """
        self.check()
        for key in list(self._subscribers.get(channel, ())):
            entry = self._running.get(key)
            if entry is not None:
                entry[0].deliver(channel, data)

    def _live(self, room: str, user: str) -> dict[str, float]:
        """The user's unexpired leases in a room, pruning expired ones."""
        users = self._leases.get(room)
        if users is None:
            return {}
        nodes = users.get(user)
        if nodes is None:
            return {}
        now = self.clock()
        for node in [n for n, expiry in nodes.items() if expiry <= now]:
            del nodes[node]
        if not nodes:
            del users[user]
            if not users:
                del self._leases[room]
            return {}
        return nodes

    def presence_join(self, room: str, user: str, node: str, ttl: float) -> bool:
        """Lease ``(room, user, node)``; True if ``user`` had no live lease there."""
        self.check()
        present = bool(self._live(room, user))
        users = self._leases.setdefault(room, {})
        users.setdefault(user, {})[node] = self.clock() + ttl
        return not present

    def presence_leave(self, room: str, user: str, node: str) -> bool:
        """Drop the lease; True if ``user`` has no live lease left in ``room``."""
        self.check()
        nodes = self._live(room, user)
        nodes.pop(node, None)
        return not self._live(room, user)

    def presence_members(self, room: str) -> list[str]:
        """Users with a live lease in ``room``, sorted."""
        self.check()
        users = self._leases.get(room, {})
        return sorted(u for u in list(users) if self._live(room, u))

    def presence_refresh(
        self, node: str, rooms: Mapping[str, Collection[str]], ttl: float
    ) -> dict[str, list[str]]:
        """Renew ``node``'s leases; per room, the users whose last lease went."""
        self.check()
        expiry = self.clock() + ttl
        gone: dict[str, list[str]] = {}
        for room, held in rooms.items():
            mine = set(held)
            users = self._leases.setdefault(room, {})
            for user in list(users):
                if user in mine:
                    continue
                users[user].pop(node, None)
                if not self._live(room, user):
                    gone.setdefault(room, []).append(user)
            users = self._leases.setdefault(room, {})
            for user in mine:
                users.setdefault(user, {})[node] = expiry
            if not users:
                del self._leases[room]
        return gone

    def _live_slots(self, user: str) -> dict[str, float]:
        slots = self._slots.get(user)
        if slots is None:
            return {}
        now = self.clock()
        for slot in [s for s, expiry in slots.items() if expiry <= now]:
            del slots[slot]
        if not slots:
            del self._slots[user]
        return slots

    def user_slot_acquire(self, user: str, slot: str, cap: int, ttl: float) -> bool:
        """Take ``slot`` for ``user`` unless ``cap`` live slots are taken."""
        self.check()
        live = self._live_slots(user)
        if slot not in live and len(live) >= cap:
            return False
        self._slots.setdefault(user, {})[slot] = self.clock() + ttl
        return True

    def user_slots_release(self, user: str, slots: Collection[str]) -> None:
        """Free ``slots`` of ``user``."""
        self.check()
        live = self._live_slots(user)
        for slot in slots:
            live.pop(slot, None)
        if not live:
            self._slots.pop(user, None)

    def user_slots_refresh(
        self, slots: Mapping[str, Collection[str]], ttl: float
    ) -> None:
        """Renew (or re-create) these slots."""
        self.check()
        expiry = self.clock() + ttl
        for user, held in slots.items():
            if held:
                mine = self._slots.setdefault(user, {})
                for slot in held:
                    mine[slot] = expiry

    def user_slot_count(self, user: str) -> int:
        """Live slots of ``user`` (for tests)."""
        return len(self._live_slots(user))


class MemoryBackplane:
    """A backplane in this process's memory.

    Args:
        hub: Share one :class:`MemoryHub` between managers to make them talk as if
            they were processes on one Redis. Without one, the backplane has no
            peers and the manager stays purely local (the zero-config default).
    """

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.local_only = hub is None
        self.hub = hub if hub is not None else MemoryHub()
        self._channels: set[str] = set()
        self._receiver: Receiver | None = None
        self._reconnects = 0

    def __repr__(self) -> str:
        return f"<MemoryBackplane channels={len(self._channels)}>"

    @property
    def name(self) -> str:
        return "memory"

    def health(self) -> BackplaneHealth:
        return BackplaneHealth(
            name="memory",
            healthy=not self.hub.down,
            detail=_DOWN if self.hub.down else "",
            channels=len(self._channels),
            reconnects=self._reconnects,
        )

    async def run(self, receiver: Receiver, *, task_status: TaskStatus[None]) -> None:
        self._receiver = receiver
        self.hub.listen(self, receiver, self._reconnected)
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            self.hub.unlisten(self)
            self._receiver = None

    def _reconnected(self) -> None:
        self._reconnects += 1
        if self._receiver is not None and self._channels:
            self._receiver.resync(sorted(self._channels))

    async def publish(self, channel: str, data: bytes) -> None:
        self.hub.publish(channel, data)

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.hub.check()
        for channel, data in items:
            self.hub.publish(channel, data)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        self.hub.subscribe(channel, self)
        self.hub.check()

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self.hub.unsubscribe(channel, self)

    async def presence_join(self, room: str, user: str, node: str, ttl: float) -> bool:
        return self.hub.presence_join(room, user, node, ttl)

    async def presence_leave(self, room: str, user: str, node: str) -> bool:
        return self.hub.presence_leave(room, user, node)

    async def presence_members(self, room: str) -> list[str]:
        return self.hub.presence_members(room)

    async def presence_refresh(
        self, node: str, rooms: Mapping[str, Collection[str]], ttl: float
    ) -> dict[str, list[str]]:
        return self.hub.presence_refresh(node, rooms, ttl)

    async def user_slot_acquire(
        self, user: str, slot: str, cap: int, ttl: float
    ) -> bool:
        return self.hub.user_slot_acquire(user, slot, cap, ttl)

    async def user_slots_release(self, user: str, slots: Collection[str]) -> None:
        self.hub.user_slots_release(user, slots)

    async def user_slots_refresh(
        self, slots: Mapping[str, Collection[str]], ttl: float
    ) -> None:
        self.hub.user_slots_refresh(slots, ttl)
