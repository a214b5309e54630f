"""The backplane interface: how processes running wschat share rooms.

Imports: anyio and the standard library (core layer).

A backplane moves opaque bytes between processes on named channels, and keeps a shared
presence table with per-process leases. It knows nothing about frames, connections or
reference counts: the :class:`~wschat.ConnectionManager` subscribes a room's channel
when the first local member joins and unsubscribes when the last one leaves, and it
skips its own echo. That keeps a backplane small enough to write in an afternoon and
to check with :func:`wschat.testing.check_backplane`.

Delivery is at most once: a message published while the engine is unreachable, or
while a process is reconnecting, is lost for the processes that did not get it. The
backplane says so: :meth:`Backplane.publish` raises :class:`BackplaneUnavailable` for
a message it did not publish, or :class:`PublishInDoubt` for one whose fate the engine
has not told yet (it stopped answering after the message was sent); after a reconnect
:meth:`Receiver.resync` names the channels that may have missed messages. The manager
turns these into a ``delivery_degraded`` error for each sender whose message was not
published, and a ``resync`` frame for every member of the rooms concerned, in every
process.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from anyio.abc import TaskStatus

from ..errors import BackplaneUnavailable as BackplaneUnavailable
from ..errors import PublishInDoubt as PublishInDoubt

__all__ = [
    "Backplane",
    "BackplaneHealth",
    "BackplaneUnavailable",
    "PublishInDoubt",
    "Receiver",
    "UserSlots",
]


@dataclass(frozen=True, slots=True)
class BackplaneHealth:
    """What ``/status`` shows about the backplane. Never holds a URL or password.

    Attributes:
        name: Short name of the backplane (``memory``, ``redis``).
        healthy: Whether messages currently reach the other processes.
        detail: Plain words on why it is not healthy, or ``""``.
        channels: Channels this process wants subscribed.
        reconnects: Successful reconnects since start.
    """

    name: str
    healthy: bool
    detail: str = ""
    channels: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The health as a JSON-ready dict."""
        return {
            "name": self.name,
            "healthy": self.healthy,
            "detail": self.detail,
            "channels": self.channels,
            "reconnects": self.reconnects,
        }


class Receiver(Protocol):
    """What a backplane calls while it runs (a :class:`~wschat.cluster.Cluster`).

    Both methods are synchronous and never block: they only put frames into bounded
    outboxes.
    """

    def deliver(self, channel: str, data: bytes) -> None:
        """A message arrived on a subscribed channel (this process's own included)."""

    def resync(self, channels: Sequence[str]) -> None:
        """Messages on these channels may have been missed (after a reconnect).

        Called once per channel when a reconnect has subscribed it again (the users
        channel included), so the manager also learns that the engine answers again.
        """


@runtime_checkable
class Backplane(Protocol):
    """Moves bytes between processes, and keeps presence with per-process leases.

    Channel names are logical (``r:lobby``); a backplane maps them to its engine under
    a fixed prefix and never treats them as patterns. Subscriptions are not counted:
    the manager calls :meth:`subscribe` once per channel and :meth:`unsubscribe` once
    when it is no longer needed.

    A backplane may also define ``async def publish_many(items)``, taking a sequence
    of ``(channel, data)`` and publishing them in order in one round trip (raising
    :class:`BackplaneUnavailable` or :class:`PublishInDoubt` for the whole batch, like
    :meth:`publish`); the manager then batches what queued up while the previous
    publish was in flight.

    Presence entries are ``(room, user, node)`` leases that expire ``ttl`` seconds
    after the last :meth:`presence_join` or :meth:`presence_refresh`, so the entries of
    a process that died go away on their own.

    A backplane may also implement :class:`UserSlots`, which makes the per-user
    connection cap hold across processes.
    """

    @property
    def name(self) -> str:
        """Short name for ``/status`` and logs."""
        ...

    def health(self) -> BackplaneHealth:
        """Current health; cheap, no I/O."""
        ...

    async def run(self, receiver: Receiver, *, task_status: TaskStatus[None]) -> None:
        """Listen until cancelled, calling ``receiver`` for each message.

        Call ``task_status.started()`` once ready to accept :meth:`subscribe` calls
        (even if the engine is unreachable: then keep retrying with backoff). After
        a reconnect, re-subscribe every wanted channel, then call
        :meth:`Receiver.resync` with them.

        Raises:
            ConfigurationError: The backplane cannot run on this event loop.
        """
        ...

    async def publish(self, channel: str, data: bytes) -> None:
        """Send ``data`` to every process subscribed to ``channel`` (this one too).

        Raises:
            PublishInDoubt: The engine did not answer in time; it may still be
                published (ask :meth:`PublishInDoubt.outcome`).
            BackplaneUnavailable: It was not published.
        """
        ...

    async def subscribe(self, channel: str) -> None:
        """Want ``channel``; return once messages published from now on will arrive.

        The wish is kept even when this raises, and fulfilled after a reconnect.

        Raises:
            BackplaneUnavailable: The subscription is not confirmed yet.
        """
        ...

    async def unsubscribe(self, channel: str) -> None:
        """Stop wanting ``channel``. Never raises for a lost connection."""
        ...

    async def presence_join(self, room: str, user: str, node: str, ttl: float) -> bool:
        """Lease ``(room, user, node)``; True if ``user`` was in no process before.

        A user id the engine cannot store (for Redis, one that is not valid UTF-8)
        is left out of the shared presence, with a warning: join and leave return
        True (as far as the engine can tell, the user is in this process alone),
        refresh skips it, and it never fails the call for the other users.

        Raises:
            BackplaneUnavailable: The engine cannot be reached.
        """
        ...

    async def presence_leave(self, room: str, user: str, node: str) -> bool:
        """Drop the lease; True if ``user`` is now in no process.

        Raises:
            BackplaneUnavailable: The engine cannot be reached.
        """
        ...

    async def presence_members(self, room: str) -> list[str]:
        """Users with a live lease in ``room``, each once, sorted.

        Raises:
            BackplaneUnavailable: The engine cannot be reached.
        """
        ...

    async def presence_refresh(
        self, node: str, rooms: Mapping[str, Collection[str]], ttl: float
    ) -> dict[str, list[str]]:
        """Renew (or re-create, after the engine lost them) ``node``'s leases.

        ``rooms`` maps each room to the users ``node`` holds there. Leases of ``node``
        in those rooms for other users, and expired leases of every node, are removed.

        Returns:
            Per room, the users whose last lease expired (announce them as gone).

        Raises:
            BackplaneUnavailable: The engine cannot be reached.
        """
        ...


@runtime_checkable
class UserSlots(Protocol):
    """Optional: a per-user count of connections shared by every process.

    A backplane that also implements these makes ``max_connections_per_user`` hold
    across processes (without them it holds per process). A slot is one
    connection, named by the process that holds it; it lives ``ttl`` seconds after
    the last :meth:`user_slot_acquire` or :meth:`user_slots_refresh` that named it,
    so the slots of a process that died are freed on their own. Acquiring must be
    atomic: two processes never both take the last free slot.
    """

    async def user_slot_acquire(
        self, user: str, slot: str, cap: int, ttl: float
    ) -> bool:
        """Take ``slot`` for ``user`` if fewer than ``cap`` live slots are taken.

        Returns:
            True if taken (or ``slot`` was taken already), False at the cap.

        Raises:
            BackplaneUnavailable: The engine cannot be reached.
        """
        ...

    async def user_slots_release(self, user: str, slots: Collection[str]) -> None:
        """Free ``slots`` of ``user``; unknown ones are ignored.

        Raises:
            BackplaneUnavailable: The engine cannot be reached.
        """
        ...

    async def user_slots_refresh(
        self, slots: Mapping[str, Collection[str]], ttl: float
    ) -> None:
        """Renew (or re-create, after the engine lost them) these slots, per user.

        Raises:
            BackplaneUnavailable: The engine cannot be reached.
        """
        ...
